"""Black-box per-image attacks that query a model's forward pass only: ``square``, ``rays``.

Both run on any :class:`suite.core.predictor.Predictor` -- compiled TVM / ONNX
deployments included -- or an ``nn.Module``, through :class:`BlackBoxQueries`:
a view of the model whose forward pass calls ``predict`` under
``torch.no_grad`` and returns detached logits, so no gradient can reach the
attack, and which counts every image sent.

square  score-based: torchattacks' ``Square`` (Andriushchenko et al. 2020,
        random search over square-shaped updates on the margin loss; Linf or
        L2), reading logits.
rays    decision-based: a RayS-style search (Chen & Gu 2020, "RayS: a ray
        searching method for hard-label adversarial attack"), Linf only,
        reading top-1 labels only; implemented here (see :class:`RayS`).

Query accounting: ``queries`` (a setting) is the budget *per image*; every
image the attack sends to the model counts once (the attack's own clean check
included), and no image is sent more than ``queries`` times.  The result's
``queries`` is the total over images, ``metrics["queries_per_image"]`` its
mean; ``grad_queries`` is always 0.  The final evaluation of clean and
adversarial labels (for the metrics) is outside the budget and not counted.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from attacks.base import Attack, AttackResult, QueryCounter, Stopwatch
from attacks.metrics import label_metrics
from attacks.norms import norms_of
from attacks.perimage import N_IMAGES
from attacks.victim import Model, labels_of
from suite.core.errors import ConfigError
from suite.core.settings import Field


class BlackBoxQueries(QueryCounter):
    """A model seen through its forward pass only: logits under ``no_grad``, detached, every image counted.

    ``model``: an ``nn.Module`` (run in eval mode) or a Predictor (``predict``).
    Holds an empty parameter because torchattacks reads the device from the
    module's first parameter.
    """

    def __init__(self, model: Model) -> None:
        if isinstance(model, torch.nn.Module):
            module = model.eval()
            fn = lambda x: module(x)  # noqa: E731 - a plain function: the model is not a submodule
        else:
            fn = model.predict
        super().__init__(fn)
        self._anchor = torch.nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = super().forward(x.detach())
        return out.detach().float().cpu().clone()

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """Top-1 labels ``[N]`` (counted like logits: one query per image)."""
        return self(x).argmax(dim=1)


class BlackBoxAttack(Attack):
    """Base of per-image attacks that only query forward passes (logits or labels).

    ``craft(model, x, y)`` works on white-box modules and black-box predictors
    alike (never calls backward); subclasses implement ``_attack(oracle, x, y)``
    on one batch and return the adversarial images.
    """

    universal = False
    needs_gradients = False
    black_box = True
    sweepable = False  # one point is a full query budget per image
    batch_size = 256
    SETTINGS = Attack.SETTINGS.extend(
        queries=Field(5000, int, ge=4, doc="query budget per image (every image sent to the model counts)"),
        n_images=N_IMAGES)

    def _attack(self, oracle: BlackBoxQueries, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def craft(self, model: Model, x: torch.Tensor, y: torch.Tensor | None = None, *,
              track: Any = None) -> AttackResult:
        """Attack ``x`` ``[N, C, H, W]`` with true labels ``y`` ``[N]`` (clean predictions if None)."""
        watch = Stopwatch()
        clean = labels_of(model, x)  # evaluation, outside the budget
        y = clean if y is None else y
        if self.target is not None:
            self._check_target(getattr(model, "num_classes", None) or self._classes(model, x))
        oracle = BlackBoxQueries(model).eval()
        torch.manual_seed(self.seed)
        advs = [self._attack(oracle, x[i:i + self.batch_size], y[i:i + self.batch_size]).detach()
                for i in range(0, len(x), self.batch_size)]
        adv_x = torch.cat(advs) if advs else x.clone()
        seconds = watch()
        if oracle.queries > self.queries * len(x):  # by construction; a broken budget is a bug
            raise AssertionError(f"{self.name} sent {oracle.queries} images, over its budget of "
                                 f"{self.queries} per image for {len(x)} images")
        adv = labels_of(model, adv_x)
        metrics = label_metrics(clean, adv, y, self.target)
        delta = norms_of(adv_x - x, self.norm)
        metrics["achieved_norm"] = float(delta.max()) if len(delta) else 0.0
        metrics["median_norm"] = float(delta.median()) if len(delta) else 0.0
        metrics["queries_per_image"] = oracle.queries / max(1, len(x))
        success = (adv == self.target) if self.target is not None else (adv != y)
        return AttackResult(self.name, self.norm, self.eps, adversarials=adv_x, success=success, metrics=metrics,
                            converged=True, steps=self.queries, grad_queries=0, queries=oracle.queries,
                            seconds=seconds, target=self.target)

    @staticmethod
    def _classes(model: Model, x: torch.Tensor) -> int:
        with torch.no_grad():
            out = model(x[:1]) if isinstance(model, torch.nn.Module) else model.predict(x[:1])
        return int(out.shape[1])


class Square(BlackBoxAttack):
    """Square Attack (score-based, logits only) via torchattacks, Linf or L2.

    torchattacks' ``Square`` sends each image once for its clean check, once
    for the random initialisation, at most ``n_queries`` times in its random
    search and once more for its final check; it is given
    ``n_queries = queries - 3`` so that no image is sent more than ``queries``
    times.  Images already misclassified stop after the clean check; images
    fooled stop searching.  Margin loss, ``p_init`` the initial fraction of
    pixels changed per update.  Targeted with ``target=K``.
    """

    name = "square"
    feedback = "logits"
    SETTINGS = BlackBoxAttack.SETTINGS.extend(
        p_init=Field(0.8, float, gt=0, le=1, doc="initial fraction of pixels in a square update"),
        loss=Field("margin", str, choices=("margin", "ce"), doc="score the random search minimises"),
        profiles={"smoke": {"queries": 100, "n_images": 32}})

    def _attack(self, oracle, x, y):
        import torchattacks

        atk = torchattacks.Square(oracle, norm="Linf" if self.norm == "linf" else "L2", eps=self.eps,
                                  n_queries=self.queries - 3, n_restarts=1, p_init=self.p_init, loss=self.loss,
                                  seed=self.seed, verbose=False)
        atk.set_device("cpu")
        if self.target is not None:
            atk.set_mode_targeted_by_function(lambda images, labels: torch.full_like(labels, self.target),
                                              quiet=True)
        return atk(x, y)


class RayS(BlackBoxAttack):
    """Decision-based (top-1 labels only) Linf attack: a RayS-style ray search, batched.

    Each image keeps a sign direction ``d`` (``+-1`` per coordinate; seeded
    random start) and the smallest radius ``r`` known to fool the model along
    it (``clip(x + r d)`` misclassified; ``inf`` before any).  Every iteration
    flips the signs of one block of coordinates -- blocks halve level by
    level (the whole image, halves, quarters, ... single coordinates, then
    again from the top) -- and asks one query: is the flipped direction
    adversarial at the current radius (radius 1 while none is known)?  If so
    it becomes the direction, one query checks the budget ``eps`` (success:
    the image is done), and ``search_steps`` bisection queries between
    ``eps`` and the current radius shrink ``r``.  An image stops when fooled
    within ``eps`` or when its remaining budget cannot pay a full iteration
    (``2 + search_steps`` queries).  The adversarial image is
    ``clip(x + min(r, eps) d)``; images misclassified already stay clean.
    Untargeted only.  Differences from the paper: random (seeded) initial
    signs, a fixed number of bisection steps, early stop at ``eps``.
    """

    name = "rays"
    feedback = "labels"
    SETTINGS = BlackBoxAttack.SETTINGS.extend(
        search_steps=Field(6, int, ge=0, le=30, doc="bisection queries after each accepted direction"),
        profiles={"smoke": {"queries": 100, "n_images": 32}})

    def validate(self) -> None:
        super().validate()
        if self.norm != "linf":
            raise ConfigError("rays is an Linf attack (sign directions); use square for norm=l2")
        if self.target is not None:
            raise ConfigError("rays is untargeted; drop target=")

    def _attack(self, oracle, x, y):
        n = len(x)
        shape = x.shape[1:]
        dim = int(x[0].numel())
        eps = float(self.eps)
        gen = torch.Generator().manual_seed(self.seed)
        d = torch.where(torch.rand(n, dim, generator=gen) < 0.5, -1.0, 1.0)
        dist = torch.full((n,), math.inf)
        used = torch.zeros(n, dtype=torch.long)

        def fooled(idx: torch.Tensor, radius: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
            xa = (x[idx] + radius.view(-1, 1, 1, 1) * dirs.view(-1, *shape)).clamp(0.0, 1.0)
            used[idx] += 1
            return oracle.labels(xa) != y[idx]

        everyone = torch.arange(n)
        clean_wrong = oracle.labels(x) != y
        used += 1
        dist[clean_wrong] = 0.0
        level, block, first = 0, 0, True
        cost = 2 + int(self.search_steps)
        while True:
            active = everyone[(dist > eps) & (used + cost <= self.queries)]
            if len(active) == 0:
                break
            cand = d[active].clone()
            if not first:  # the first iteration tries the initial direction itself
                size = math.ceil(dim / 2 ** level)
                cand[:, block * size:(block + 1) * size] *= -1
                block += 1
                if block * size >= dim:
                    level, block = (0 if size == 1 else level + 1), 0
            first = False
            radius = dist[active].clamp(max=1.0)
            better = fooled(active, radius, cand)
            took = active[better]
            if len(took) == 0:
                continue
            d[took] = cand[better]
            hi = radius[better]
            at_eps = fooled(took, torch.full((len(took),), eps), d[took])
            dist[took[at_eps]] = eps
            rest, hi = took[~at_eps], hi[~at_eps]
            lo = torch.full((len(rest),), eps)
            for _ in range(int(self.search_steps)):
                if len(rest) == 0:
                    break
                mid = (lo + hi) / 2
                hit = fooled(rest, mid, d[rest])
                hi, lo = torch.where(hit, mid, hi), torch.where(hit, lo, mid)
            dist[rest] = hi
        radius = dist.clamp(max=eps)
        return (x + radius.view(-1, 1, 1, 1) * d.view(-1, *shape)).clamp(0.0, 1.0)
