"""The attack contract: built from settings only, model and data passed at call time.

One configured attack runs unchanged against dense, compressed and compiled
models (foolbox's split of model and attack).  Every attack returns an
:class:`AttackResult`.

Query accounting: one *gradient query* is one image through a forward and a
backward pass of the victim; forward-only passes under ``torch.no_grad`` are
*queries* (labels or logits) and are counted separately.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from attacks.norms import NORMS, check_budget
from suite.core.errors import ConfigError
from suite.core.settings import Configurable, Field, SettingsSpec


@dataclass
class AttackResult:
    """What an attack produced on the images it was given.

    perturbation: universal attacks: the UAP ``[C, H, W]`` (inside the budget).
    adversarials: per-image attacks: ``[N, C, H, W]`` in [0, 1].
    success: bool ``[N]``: the attack's goal reached on each given image
        (label changed from the clean prediction, or the target hit).
    metrics: on the given (craft) images; held-out metrics come from
        :func:`attacks.metrics.evaluate_perturbation`.
    converged: the stopping criterion was met before the step budget ran out.
    history: checkpoints ``{"step", "grad_queries", "seconds", "fooling_rate"}``
        measured on a tracking set while crafting (empty unless asked for).
    cached: loaded from the crafted-attack cache (:mod:`attacks.craft_cache`):
        the tensors and crafting facts are the earlier craft's.
    """

    attack: str
    norm: str
    eps: float
    perturbation: torch.Tensor | None = None
    adversarials: torch.Tensor | None = None
    success: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    converged: bool = False
    steps: int = 0
    grad_queries: int = 0
    queries: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    target: int | None = None
    cached: bool = False

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts (no tensors)."""
        return {"attack": self.attack, "norm": self.norm, "eps": self.eps, "target": self.target,
                "converged": self.converged, "steps": self.steps, "grad_queries": self.grad_queries,
                "queries": self.queries, "seconds": round(self.seconds, 4), **self.metrics}


class QueryCounter(torch.nn.Module):
    """Wraps a logits function and counts images sent through it.

    Images in a forward pass with grad enabled count as gradient queries
    (every such pass in our attacks is followed by a backward pass); the rest
    as plain queries.
    """

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn
        self.grad_queries = 0
        self.queries = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.grad_queries += int(x.shape[0])
        else:
            self.queries += int(x.shape[0])
        return self.fn(x)


def canonical_norm(value: Any) -> str:
    """``inf``/``l-inf``/``l_inf`` -> ``linf``; other spellings lower-cased."""
    norm = str(value).lower()
    return "linf" if norm in ("inf", "linf", "l-inf", "l_inf") else norm


BUDGET = SettingsSpec({
    "norm": Field("linf", str, choices=NORMS, parse=canonical_norm, doc="budget norm: linf | l2"),
    "eps": Field(10 / 255, float, gt=0, doc="budget in pixel units of [0, 1] inputs (e.g. 10/255); a run "
                 "defaults it to its source's standard budget for the norm"),
    "target": Field(None, int, optional=True, ge=0, doc="target class (None: untargeted)"),
    "seed": Field(0, int, doc="random seed"),
})


class Attack(Configurable):
    """Common settings: budget ``norm``/``eps``, optional ``target`` class, ``seed``.

    Subclasses declare their own settings as ``SETTINGS = Attack.SETTINGS.extend(...)``
    (with their ``smoke`` profile); the built attack is frozen (``attack.eps``
    reads a setting, assigning one raises).

    Structure the attack stage decides by (never by name):

    universal: one perturbation for all images (else one adversarial example per image).
    needs_gradients: crafting needs input gradients (white-box subjects only).
    black_box: the attack only queries the model's forward pass through its
        predictor (logits or top-1 labels, no gradients), so the stage runs it
        against every subject, compiled deployments included.
    feedback: what a black-box attack reads from each query: ``"logits"``
        (score-based) or ``"labels"`` (decision-based); None for white-box attacks.
    sweepable: a run's budget sweep re-crafts it at each budget (False where
        one point costs a full evaluation: AutoAttack, query-budget black boxes).
    """

    name = "attack"
    universal = True
    needs_gradients = True
    black_box = False
    feedback: str | None = None
    sweepable = True
    SETTINGS = BUDGET

    def validate(self) -> None:
        check_budget(self.norm, self.eps)  # e.g. a Linf budget above 1

    def _check_target(self, num_classes: int) -> None:
        if self.target is not None and self.target >= num_classes:
            raise ConfigError(f"target class {self.target} out of range for {num_classes} classes")


def positive(name: str, value: float, *, integer: bool = False, allow_zero: bool = False) -> float:
    """Validate a numeric setting; raise ConfigError naming it."""
    if integer and int(value) != value:
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return int(value) if integer else float(value)


class Stopwatch:
    """Seconds since creation, minus the time spent inside :meth:`paused` (e.g. held-out tracking)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.excluded = 0.0

    def __call__(self) -> float:
        return time.perf_counter() - self.start - self.excluded

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - began
