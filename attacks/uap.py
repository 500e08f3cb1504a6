"""Universal adversarial perturbation baselines: ``uap-pgd``, ``uap-deepfool`` and noise.

All craft one perturbation ``v`` ``[C, H, W]`` for a whole image source at its
resolution.  ``craft(model, x)`` takes the craft images ``x`` ``[N, C, H, W]``
in [0, 1] (never modified) and returns an :class:`AttackResult`; held-out
evaluation is :func:`attacks.metrics.evaluate_perturbation`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable

import torch

from attacks.base import Attack, AttackResult, QueryCounter, Stopwatch
from attacks.losses import margin_loss
from attacks.metrics import label_metrics
from attacks.norms import apply_perturbation, coordinate_scale, norms_of, project
from attacks.victim import Model, labels_of, white_box
from suite.core.errors import ConfigError
from suite.core.settings import Field


class Tracker:
    """Measures the held-out fooling rate of ``v`` every ``every`` steps (not counted as queries).

    track: ``(x, clean_labels)`` of a tracking set; ``None`` disables tracking.
    watch: the attack's stopwatch, paused while tracking (tracking time is
        not attack time).
    """

    def __init__(self, model: Model, track: tuple[torch.Tensor, torch.Tensor] | None, every: int = 1,
                 target: int | None = None, watch: Stopwatch | None = None) -> None:
        self.model, self.track, self.every, self.target = model, track, max(1, every), target
        self.watch = watch
        self.history: list[dict[str, float]] = []

    def __call__(self, v: torch.Tensor, step: int, grad_queries: int, seconds: float, force: bool = False,
                 queries: int | None = None) -> None:
        """Record a checkpoint; ``queries``: forward-only queries so far (black-box attacks)."""
        if self.track is None or (step % self.every and not force):
            return
        if self.history and self.history[-1]["step"] == step:
            return
        x, clean = self.track
        with self.watch.paused() if self.watch is not None else contextlib.nullcontext():
            adv = labels_of(self.model, apply_perturbation(x, v))
        rate = float((adv == self.target).float().mean()) if self.target is not None else \
            float((adv != clean).float().mean())
        point = {"step": float(step), "grad_queries": float(grad_queries), "seconds": round(seconds, 4),
                 "fooling_rate": rate}
        if queries is not None:
            point["queries"] = float(queries)
        self.history.append(point)


def _finish(attack: Attack, model_fn, counter: QueryCounter, x: torch.Tensor, clean: torch.Tensor,
            v: torch.Tensor, *, steps: int, converged: bool, watch: Stopwatch, tracker: Tracker) -> AttackResult:
    """Craft-set metrics and the result object."""
    tracker(v, steps, counter.grad_queries, watch(), force=True,
            queries=counter.queries if attack.black_box else None)
    with torch.no_grad():
        adv = labels_of(model_fn, apply_perturbation(x, v))
    success = (adv == attack.target) if attack.target is not None else (adv != clean)
    metrics = label_metrics(clean, adv, clean, attack.target)
    metrics = {"craft_fooling_rate": metrics["fooling_rate"],
               "achieved_norm": float(norms_of(apply_perturbation(x, v) - x, attack.norm).max())}
    return AttackResult(attack.name, attack.norm, attack.eps, perturbation=v.detach().clone(), success=success,
                        metrics=metrics, converged=converged, steps=steps, grad_queries=counter.grad_queries,
                        queries=counter.queries + len(x), seconds=watch(), history=tracker.history,
                        target=attack.target)


@dataclass
class CraftSession:
    """Per-call state of a white-box universal attack: victim, counters, clock, RNG, clean labels."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    counter: QueryCounter
    watch: Stopwatch
    gen: torch.Generator
    clean: torch.Tensor
    tracker: Tracker

    @classmethod
    def open(cls, attack: Attack, model: Model, x: torch.Tensor,
             track: tuple[torch.Tensor, torch.Tensor] | None, every: int) -> "CraftSession":
        fn = white_box(model, attack.name)
        clean = labels_of(fn, x)
        if attack.target is not None and len(x):
            attack._check_target(int(fn(x[:1]).shape[1]))
        watch = Stopwatch()
        return cls(fn, QueryCounter(fn), watch, torch.Generator().manual_seed(attack.seed), clean,
                   Tracker(fn, track, every, attack.target, watch))

    def finish(self, attack: Attack, x: torch.Tensor, v: torch.Tensor, *, steps: int,
               converged: bool) -> AttackResult:
        return _finish(attack, self.fn, self.counter, x, self.clean, v, steps=steps, converged=converged,
                       watch=self.watch, tracker=self.tracker)


def gradient_step(v: torch.Tensor, grad: torch.Tensor, norm: str, eps: float, step_size: float) -> torch.Tensor:
    """One projected descent step on ``v``: sign step (Linf) or normalised step (L2)."""
    if norm == "linf":
        return project(v - step_size * grad.sign(), norm, eps)
    return project(v - step_size * grad / grad.norm().clamp_min(1e-12), norm, eps)


def cosine_fraction(t: float, floor: float = 0.05) -> float:
    """Cosine decay from 1 at ``t = 0`` to ``floor`` at ``t = 1`` (fraction of the initial step)."""
    t = min(max(float(t), 0.0), 1.0)
    return max(floor, 0.5 * (1 + math.cos(math.pi * t)))


def random_start(shape: tuple[int, ...], norm: str, eps: float, gen: torch.Generator,
                 fraction: float = 1.0) -> torch.Tensor:
    """A seeded random point inside the ball (uniform for Linf, Gaussian direction for L2)."""
    if norm == "linf":
        return (torch.rand(shape, generator=gen) * 2 - 1) * eps * fraction
    d = torch.randn(shape, generator=gen)
    return d / d.norm().clamp_min(1e-12) * eps * fraction * float(torch.rand(1, generator=gen))


class UAPPGD(Attack):
    """Stochastic projected gradient descent on one universal perturbation.

    Each step takes a mini-batch of craft images (seeded shuffling, epochs
    over the set), computes the gradient of the clamped margin loss w.r.t.
    ``v`` and takes a sign (Linf) or normalised (L2) step of ``step_size``
    (a fraction of ``eps``), decayed by cosine over ``steps``.  Stops early
    once the craft fooling rate of the last ``batch_size`` images reaches
    ``stop_fooling``.
    """

    name = "uap-pgd"
    SETTINGS = Attack.SETTINGS.extend(
        steps=Field(200, int, gt=0), batch_size=Field(32, int, gt=0),
        step_size=Field(0.1, float, gt=0, doc="initial step, fraction of eps"), kappa=Field(5.0, float, gt=0),
        random_init=Field(False, bool), stop_fooling=Field(1.01, float, doc="craft fooling rate that stops early"),
        track_every=Field(5, int, gt=0, doc="held-out tracking period (steps)"),
        # default profile: 20 held-out points over 200 steps (each one a pass over the test images)
        profiles={"smoke": {"steps": 10}, "default": {"track_every": 10}})

    def craft(self, model: Model, x: torch.Tensor, *, track: tuple[torch.Tensor, torch.Tensor] | None = None
              ) -> AttackResult:
        session = CraftSession.open(self, model, x, track, self.track_every)
        counter, watch, gen, clean, tracker = (session.counter, session.watch, session.gen, session.clean,
                                               session.tracker)
        shape = tuple(x.shape[1:])
        v = random_start(shape, self.norm, self.eps, gen) if self.random_init else torch.zeros(shape)
        alpha0 = self.step_size * coordinate_scale(self.norm, self.eps, 1) if self.norm == "linf" else \
            self.step_size * self.eps
        order = torch.randperm(len(x), generator=gen)
        pos, converged, step = 0, False, 0
        tracker(v, 0, 0, watch())
        for step in range(1, self.steps + 1):
            if pos + self.batch_size > len(order):
                order, pos = torch.randperm(len(x), generator=gen), 0
            idx = order[pos:pos + self.batch_size]
            pos += self.batch_size
            v_var = v.clone().requires_grad_(True)
            logits = counter(apply_perturbation(x[idx], v_var))
            loss = margin_loss(logits, clean[idx], self.target, self.kappa)
            (grad,) = torch.autograd.grad(loss, v_var)
            v = gradient_step(v, grad, self.norm, self.eps, alpha0 * cosine_fraction((step - 1) / self.steps))
            tracker(v, step, counter.grad_queries, watch())
            with torch.no_grad():
                fooled = logits.argmax(1) == self.target if self.target is not None else \
                    logits.argmax(1) != clean[idx]
            if float(fooled.float().mean()) >= self.stop_fooling:
                converged = True
                break
        return session.finish(self, x, v, steps=step, converged=converged)


class UAPDeepFool(Attack):
    """The original universal perturbation algorithm (Moosavi-Dezfooli et al., 2017).

    Passes over the craft images; for each image that ``v`` does not fool yet,
    the minimal perturbation sending ``x + v`` across the nearest decision
    boundary (foolbox's DeepFool, Linf or L2 variant, with ``overshoot``) is
    added to ``v``, which is projected back onto the budget.  Images are
    processed in chunks of ``batch_size``: DeepFool runs once per chunk, then
    the chunk's minimal perturbations are added one image at a time, skipping
    images the updated ``v`` already fools.  Stops when the craft fooling rate
    reaches ``1 - delta`` or after ``passes`` passes.  Untargeted only.
    """

    name = "uap-deepfool"
    SETTINGS = Attack.SETTINGS.extend(
        passes=Field(3, int, gt=0), delta=Field(0.2, float, ge=0, lt=1), batch_size=Field(16, int, gt=0),
        deepfool_steps=Field(50, int, gt=0), candidates=Field(10, int, gt=0), overshoot=Field(0.02, float, ge=0),
        track_every=Field(1, int, gt=0, doc="held-out tracking period (steps)"),
        profiles={"smoke": {"passes": 1, "deepfool_steps": 10}})

    def validate(self) -> None:
        super().validate()
        if self.target is not None:
            raise ConfigError("uap-deepfool is untargeted (DeepFool crosses the nearest boundary)")

    def craft(self, model: Model, x: torch.Tensor, *, track: tuple[torch.Tensor, torch.Tensor] | None = None
              ) -> AttackResult:
        import foolbox as fb

        session = CraftSession.open(self, model, x, track, self.track_every)
        counter, watch, gen, clean, tracker = (session.counter, session.watch, session.gen, session.clean,
                                               session.tracker)
        num_classes = int(session.fn(x[:1]).shape[1])
        fmodel = fb.PyTorchModel(counter.eval(), bounds=(0.0, 1.0), device="cpu")
        cls = fb.attacks.LinfDeepFoolAttack if self.norm == "linf" else fb.attacks.L2DeepFoolAttack
        deepfool = cls(steps=self.deepfool_steps, candidates=min(self.candidates, num_classes),
                       overshoot=self.overshoot, loss="logits")
        v = torch.zeros(tuple(x.shape[1:]))
        step, converged = 0, False
        tracker(v, 0, 0, watch())
        for _ in range(self.passes):
            order = torch.randperm(len(x), generator=gen)
            for start in range(0, len(x), self.batch_size):
                idx = order[start:start + self.batch_size]
                with torch.no_grad():
                    xv = apply_perturbation(x[idx], v)
                    now = counter(xv).argmax(1)
                todo = now == clean[idx]
                if not bool(todo.any()):
                    continue
                originals, xs, labels = x[idx][todo], xv[todo], clean[idx][todo]
                _, adv, _ = deepfool(fmodel, xs, labels, epsilons=None)
                deltas = (adv - xs).detach()
                for i in range(len(xs)):
                    if i:  # v changed since DeepFool ran: skip images it already fools
                        with torch.no_grad():
                            if counter(apply_perturbation(originals[i:i + 1], v)).argmax(1).item() \
                                    != labels[i].item():
                                continue
                    v = project(v + deltas[i], self.norm, self.eps)
                    step += 1
                tracker(v, step, counter.grad_queries, watch())
            with torch.no_grad():
                rate = float((labels_of(counter, apply_perturbation(x, v)) != clean).float().mean())
            if rate >= 1 - self.delta:
                converged = True
                break
        return session.finish(self, x, v, steps=step, converged=converged)


class NoiseUniform(Attack):
    """Random noise at the full budget: uniform ``+-eps`` signs (Linf) or a random direction of norm ``eps`` (L2)."""

    name = "noise-uniform"
    needs_gradients = False

    def pattern(self, shape: tuple[int, int, int]) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        if self.norm == "linf":
            return (torch.randint(0, 2, shape, generator=gen).float() * 2 - 1) * self.eps
        d = torch.randn(shape, generator=gen)
        return d / d.norm() * self.eps

    def craft(self, model: Model, x: torch.Tensor, *, track: tuple[torch.Tensor, torch.Tensor] | None = None
              ) -> AttackResult:
        watch = Stopwatch()
        counter = QueryCounter(lambda t: _predict(model, t))
        clean = labels_of(counter, x)
        tracker = Tracker(counter, track, 1, self.target, watch)
        v = project(self.pattern(tuple(x.shape[1:])), self.norm, self.eps)
        return _finish(self, counter, counter, x, clean, v, steps=0, converged=True, watch=watch, tracker=tracker)


class NoiseCheckerboard(NoiseUniform):
    """A checkerboard of ``+-eps`` squares of ``square`` pixels (structured noise baseline).

    For L2 the same pattern is scaled to norm ``eps``.  Structured noise can
    look as strong as an optimised UAP: always report it next to UAPs.
    """

    name = "noise-checkerboard"
    SETTINGS = NoiseUniform.SETTINGS.extend(square=Field(2, int, gt=0, doc="square side (pixels)"))

    def pattern(self, shape: tuple[int, int, int]) -> torch.Tensor:
        c, h, w = shape
        rows = (torch.arange(h) // self.square).view(-1, 1)
        cols = (torch.arange(w) // self.square).view(1, -1)
        board = ((rows + cols) % 2).float() * 2 - 1
        v = board.expand(c, h, w).clone()
        return v * self.eps if self.norm == "linf" else v / v.norm() * self.eps


def _predict(model: Model, x: torch.Tensor) -> torch.Tensor:
    return model(x) if isinstance(model, torch.nn.Module) else model.predict(x)
