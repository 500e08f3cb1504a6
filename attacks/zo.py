"""Derivative-free universal perturbations: ``uap-zo`` and ``uap-meta-zo``.

Both craft a UAP against any model through its forward pass only (a compiled
TVM or ONNX deployment's predictor: logits, no gradients, no surrogate).
Each step estimates the gradient of the UAP margin loss with respect to
``v`` by random-direction finite differences on a mini-batch ``B`` of craft
images (Nesterov & Spokoiny; Liu et al., ZO-signSGD):

    g = 1/q * sum_i (L(v + mu u_i) - L(v)) / mu * u_i,   u_i ~ N(0, I)

which costs ``B * (q + 1)`` queries (one image through the model is one
query; the clean labels and the final craft-set evaluation count too).
``uap-zo`` takes sign (Linf) or normalised (L2) steps along ``-g`` with a
cosine-decayed step, from zero; ``uap-meta-zo`` starts at the meta-trained
init and feeds ``g`` to the meta-trained learned optimizer (the shipped
``uap-meta`` state: its features are normalised, so the same optimizer runs
on first-order or estimated gradients).  Both spend the same query budget
with the same estimator.
"""

from __future__ import annotations

from typing import Callable

import torch

from attacks.base import Attack, AttackResult, QueryCounter, Stopwatch
from attacks.losses import margin_loss
from attacks.meta import MetaState, _meta_state, start_point
from attacks.norms import apply_perturbation, coordinate_scale, project
from attacks.uap import Tracker, _finish, _predict, cosine_fraction, gradient_step
from attacks.victim import Model, labels_of
from suite.core.errors import ConfigError
from suite.core.settings import Field


def zo_gradient(loss: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor, *, directions: int, mu: float,
                gen: torch.Generator) -> torch.Tensor:
    """Forward-difference gradient estimate of ``loss`` at ``v`` along ``directions`` Gaussian directions.

    ``loss(vs)`` takes a stack ``[M, *v.shape]`` of perturbations and returns
    their losses ``[M]`` (one batched model call).
    """
    u = torch.randn((directions, *v.shape), generator=gen)
    values = loss(torch.cat([v.unsqueeze(0), v.unsqueeze(0) + mu * u]))
    diffs = (values[1:] - values[0]) / mu
    return (diffs.view(-1, *([1] * v.dim())) * u).mean(0)


class UAPZO(Attack):
    """Zeroth-order sign-SGD on one universal perturbation (black box: logits only).

    queries: total query budget (images through the model), clean labels and
        the final craft-set evaluation included.
    directions: random directions per estimate ``q``; batch_size: craft
        images per step ``B``; smoothing: finite-difference step ``mu`` as a
        fraction of the coordinate scale (``eps`` for Linf, ``eps/sqrt(d)``
        for L2); step_size: first step, fraction of that scale, cosine-decayed.
    """

    name = "uap-zo"
    needs_gradients = False
    black_box = True
    feedback = "logits"
    sweepable = False
    SETTINGS = Attack.SETTINGS.extend(
        queries=Field(20000, int, gt=0, doc="query budget (images through the model)"),
        directions=Field(20, int, gt=0, doc="random directions per gradient estimate"),
        batch_size=Field(32, int, gt=0, doc="craft images per step"),
        smoothing=Field(0.05, float, gt=0, doc="finite-difference step, fraction of the coordinate scale"),
        step_size=Field(0.1, float, gt=0, doc="first step, fraction of the coordinate scale (Linf: of eps)"),
        kappa=Field(5.0, float, gt=0),
        track_every=Field(1, int, gt=0, doc="held-out tracking period (steps)"),
        profiles={"smoke": {"queries": 1500, "directions": 5, "batch_size": 8}})

    def start(self, shape: tuple[int, int, int], gen: torch.Generator) -> torch.Tensor:
        return torch.zeros(shape)

    def begin(self, numel: int) -> object:
        return None

    def update(self, v: torch.Tensor, g: torch.Tensor, k: int, steps: int, state: object
               ) -> tuple[torch.Tensor, object]:
        scale = coordinate_scale(self.norm, self.eps, v.numel())
        size = self.step_size * (scale if self.norm == "linf" else scale * v.numel() ** 0.5)
        return gradient_step(v, g, self.norm, self.eps, size * cosine_fraction(k / max(1, steps - 1))), state

    def steps_for(self, n_images: int) -> int:
        per_step = self.batch_size * (self.directions + 1)
        spare = self.queries - 2 * n_images  # clean labels before, craft-set evaluation after
        if spare < per_step:
            raise ConfigError(f"{self.name}: a query budget of {self.queries} leaves no step on {n_images} craft "
                              f"images (one step costs {per_step}, the labels {2 * n_images})")
        return spare // per_step

    def craft(self, model: Model, x: torch.Tensor, *, track: tuple[torch.Tensor, torch.Tensor] | None = None
              ) -> AttackResult:
        watch = Stopwatch()
        counter = QueryCounter(lambda t: _predict(model, t))
        steps = self.steps_for(len(x))
        with torch.no_grad():
            clean = labels_of(counter, x)
            if self.target is not None and len(x):
                self._check_target(int(_predict(model, x[:1]).shape[1]))
        uncounted = QueryCounter(lambda t: _predict(model, t))  # held-out tracking is not the attack's query
        tracker = Tracker(uncounted, track, self.track_every, self.target, watch)
        gen = torch.Generator().manual_seed(self.seed)
        shape = tuple(int(s) for s in x.shape[1:])
        mu = self.smoothing * coordinate_scale(self.norm, self.eps, x[0].numel())
        with torch.no_grad():
            v = self.start(shape, gen)
            state = self.begin(v.numel())
            tracker(v, 0, 0, watch(), queries=counter.queries)
            order, pos = torch.randperm(len(x), generator=gen), 0
            b = min(self.batch_size, len(x))
            for k in range(steps):
                if pos + b > len(order):
                    order, pos = torch.randperm(len(x), generator=gen), 0
                idx = order[pos:pos + b]
                pos += b
                xb, lb = x[idx], clean[idx]

                def loss(vs: torch.Tensor) -> torch.Tensor:
                    adv = apply_perturbation(xb.unsqueeze(0), vs.unsqueeze(1)).reshape(-1, *xb.shape[1:])
                    logits = counter(adv).float().view(len(vs), len(xb), -1)
                    return torch.stack([margin_loss(z, lb, self.target, self.kappa) for z in logits])

                g = zo_gradient(loss, v, directions=self.directions, mu=mu, gen=gen)
                v, state = self.update(v, g, k, steps, state)
                tracker(v, k + 1, 0, watch(), queries=counter.queries)
        result = _finish(self, uncounted, counter, x, clean, v, steps=steps, converged=True,
                         watch=watch, tracker=tracker)
        result.metrics["queries_per_image"] = result.queries / max(1, len(x))
        return result


class UAPMetaZO(UAPZO):
    """The meta-trained learned optimizer and init, fed by the same zeroth-order estimate (black box).

    meta: a ``meta``-variant :class:`~attacks.meta.MetaState` or its
        directory (a run passes the shipped one).
    """

    name = "uap-meta-zo"
    SETTINGS = UAPZO.SETTINGS.extend(
        meta=Field(None, object, optional=True, parse=_meta_state,
                   doc="a 'meta' MetaState or the directory of a saved one"))

    def validate(self) -> None:
        super().validate()
        if self.meta is None:
            raise ConfigError(f"{self.name} needs a meta-trained attacker: pass meta=DIR (see `suite meta-train`)")
        if self.meta.config.variant != "meta" or self.meta.optimizer is None:
            raise ConfigError(f"{self.name} needs a 'meta' meta-trained state, got '{self.meta.config.variant}'")
        if self.meta.config.norm != self.norm:
            raise ConfigError(f"the meta-trained state is for {self.meta.config.norm}, not {self.norm}")

    def __repr__(self) -> str:
        shown = {**self.settings, "meta": self.meta.info.get("key", "<in memory>")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def start(self, shape: tuple[int, int, int], gen: torch.Generator) -> torch.Tensor:
        return start_point(self.meta, shape, self.norm, self.eps, gen)

    def begin(self, numel: int) -> object:
        return self.meta.optimizer.init_state(numel)

    def update(self, v: torch.Tensor, g: torch.Tensor, k: int, steps: int, state: object
               ) -> tuple[torch.Tensor, object]:
        meta: MetaState = self.meta
        delta, state = meta.optimizer(g, v, state, k / max(1, steps - 1), norm=self.norm, eps=self.eps)
        return project(v + delta, self.norm, self.eps), state
