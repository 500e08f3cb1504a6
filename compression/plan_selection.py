"""Checking the ``auto`` search's plan before it is accepted: rival plans priced alike, chosen by a trial.

The search (:func:`compression.mapping.search_plan`) scores accuracy with
summed one-shot sensitivities, each measured with one layer pruned alone and
no recovery.  At the sparsities a latency target asks for, those sums are far
outside the regime where they predict recovered accuracy (a VGG16 plan at a
quarter of dense latency sums to ~24 nats of validation loss), and a search
that minimises against a timed table also favours the candidates whose
latency happened to be under-measured.  So the planner proposes rival plans
that meet the same target on the same latency table, fine-tunes each briefly,
and keeps the best on validation data:

``search``
    the search's plan as it is;
``uniform-block``
    ``block`` 8x16 at one ratio ``s`` on every prunable layer it applies to;
``rule``
    the rule mapper's plan (:func:`compression.mapping.rule_plan`) at overall
    sparsity ``s``.

For the two rivals, ``s`` is the least pruning that meets the target, found
by bisection on ``(0, max_ratio]``: latency target ``T`` -- the prunable
layers' table latencies sum to at most ``T`` x their dense sum; sparsity
target -- at least that fraction of the prunable layers' weights is removed.
On a table that ``drops_unaccelerated`` (the TVM one), a layer whose mask does
not measure faster than its dense kernel is planned dense
(``dense_by_search``), as the search's own candidates are: no chosen plan
holds a layer scheme that measured slower than dense.

Trial: the plan's masks on a copy of the model, one epoch of masked
fine-tuning on the first ``images`` training images (the recovery's learning
rate and batch size, the run's seed: every rival sees the same batches), then
top-1 accuracy on the validation split.  The best validation accuracy wins;
ties go to the plan listed first (the search's).  Test data is never used.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import nn

from compression.decisions import LayerDecision
from compression.layers import LayerInfo
from compression.masks import MaskSet
from compression.plan import LayerPlan, Plan
from compression.recovery import RecoveryConfig
from compression.schemes import make_scheme
from suite.core.sources.base import ImageSource
from suite.core.training import accuracy, train_model

FAMILIES = ("search", "uniform-block", "rule")
UNIFORM_BLOCK = ("block", {"r": 8, "c": 16})
BISECTION_STEPS = 12
PROFILE_TRIAL_IMAGES = {"smoke": 128}  # trial fine-tuning images per rival in smoke runs
DEFAULT_TRIAL_IMAGES = 2048


@dataclass
class RivalPlan:
    """One plan proposed for the target, priced on the latency table and (after :func:`run_trials`) tried.

    knob: the family's ratio ``s`` (None for the search's plan);
    latency_fraction: summed table latency of the prunable layers over their
    dense sum; sparsity: fraction of the prunable layers' weights removed;
    val_acc: validation top-1 in [0, 1] after the trial (None before it).
    """

    family: str
    plan: Plan
    knob: float | None
    latency_fraction: float
    sparsity: float
    val_acc: float | None = None
    trial_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"family": self.family, "knob": None if self.knob is None else round(self.knob, 5),
                "predicted_latency_fraction": round(self.latency_fraction, 6),
                "predicted_sparsity": round(self.sparsity, 6),
                "val_acc": None if self.val_acc is None else round(self.val_acc, 6),
                "trial_seconds": round(self.trial_seconds, 3)}


class PlanPricer:
    """Prices a plan on a latency table with the real masks of ``model``'s weights.

    ``names``: the prunable layers the target is measured over (those the
    search scored); their dense latencies are the denominator of a latency
    fraction, their weights that of a sparsity.
    """

    def __init__(self, model: nn.Module, layers: list[LayerInfo], names: list[str], latencies: Any) -> None:
        self.model = model
        self.layers = {l.name: l for l in layers}
        self.names = set(names)
        self.latencies = latencies
        self.drop = bool(getattr(latencies, "drops_unaccelerated", False))
        self.dense_ms = {n: float(latencies.measure(self.layers[n], "dense", 0.0, {})) for n in names}
        self.dense_total = sum(self.dense_ms.values())
        self.weights_total = sum(self.layers[n].numel for n in names)

    def price(self, plan: Plan) -> tuple[Plan, float, float]:
        """``(plan with unaccelerated layers dense and latencies filled in, latency fraction, sparsity)``."""
        out: list[LayerPlan] = []
        total_ms, pruned = 0.0, 0
        for lp in plan.layers:
            if lp.name not in self.names:
                out.append(lp)
                continue
            dense_ms = self.dense_ms[lp.name]
            if lp.dense:
                out.append(replace(lp, latency_ms=round(dense_ms, 5), dense_latency_ms=round(dense_ms, 5)))
                total_ms += dense_ms
                continue
            weight = self.model.get_submodule(lp.name).weight.detach()
            mask = make_scheme(lp.scheme, **lp.settings).mask(weight, lp.sparsity)
            ms = float(self.latencies.measure(self.layers[lp.name], lp.scheme, lp.sparsity, lp.settings, mask=mask))
            if self.drop and ms >= dense_ms:
                out.append(LayerPlan(lp.name, "dense", reason="not faster than dense on the latency table",
                                     decision=LayerDecision.DENSE_BY_SEARCH, latency_ms=round(dense_ms, 5),
                                     dense_latency_ms=round(dense_ms, 5)))
                total_ms += dense_ms
                continue
            out.append(replace(lp, latency_ms=round(ms, 5), dense_latency_ms=round(dense_ms, 5)))
            total_ms += ms
            pruned += int((~mask).sum())
        priced = Plan(plan.method, out, target=dict(plan.target), seed=plan.seed, search=dict(plan.search))
        return priced, total_ms / max(self.dense_total, 1e-12), pruned / max(self.weights_total, 1)


def fit_rival(family: str, build: Callable[[float], Plan], pricer: PlanPricer, *, sparsity: float | None,
              latency_target: float | None, max_ratio: float = 0.95) -> RivalPlan | None:
    """The least pruning ``s`` in ``(0, max_ratio]`` whose plan meets the target (None: not even ``max_ratio``)."""
    def meets(s: float) -> tuple[bool, tuple[Plan, float, float]]:
        priced = pricer.price(build(s))
        if latency_target is not None:
            return priced[1] <= latency_target + 1e-12, priced
        return priced[2] >= float(sparsity) - 1e-9, priced

    ok, best = meets(max_ratio)
    if not ok:
        return None
    lo, hi = 0.0, max_ratio
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        ok, priced = meets(mid)
        if ok:
            hi, best = mid, priced
        else:
            lo = mid
    plan, fraction, achieved = best
    return RivalPlan(family, plan, hi, fraction, achieved)


def trial_accuracy(model: nn.Module, plan: Plan, source: ImageSource, recovery: RecoveryConfig, *, images: int,
                   seed: int, device: str = "cpu") -> float:
    """Validation top-1 of ``model`` pruned by ``plan`` after one epoch of masked fine-tuning on ``images``."""
    trial = copy.deepcopy(model).to(device)
    masks = MaskSet({lp.name: make_scheme(lp.scheme, **lp.settings).mask(
        trial.get_submodule(lp.name).weight.detach(), lp.sparsity) for lp in plan.pruned()})
    masks.apply(trial)
    masks.attach(trial)
    try:
        train_model(trial, source.train.subset(images), None, recovery.recipe(1), seed=seed, device=device,
                    quiet=True, desc="plan trial", after_step=lambda: masks.apply(trial))
    finally:
        masks.detach()
    masks.apply(trial)
    return accuracy(trial, source.val, device=device)


def run_trials(rivals: list[RivalPlan], model: nn.Module, source: ImageSource, recovery: RecoveryConfig, *,
               images: int, seed: int, device: str = "cpu") -> RivalPlan:
    """Try every rival (``val_acc``, ``trial_seconds`` set in place); the best one (ties: the earliest)."""
    torch_state = torch.get_rng_state()
    for rival in rivals:
        start = time.perf_counter()
        torch.manual_seed(seed)
        rival.val_acc = trial_accuracy(model, rival.plan, source, recovery, images=images, seed=seed, device=device)
        rival.trial_seconds = time.perf_counter() - start
    torch.set_rng_state(torch_state)
    return max(rivals, key=lambda r: (r.val_acc, -rivals.index(r)))
