"""Hyper-parameter tuning of attack baselines on a validation split, never on test images.

A baseline's settings (``uap-pgd``'s step size and schedule, ``uap-zo``'s
step and smoothing) are chosen by crafting on the craft images and scoring
the fooling rate on *validation* images of the same source (the source's
``val`` split, disjoint from train and test by construction); only the
chosen setting is then scored on the test split, by the caller.  The tuner
never receives test images, so it cannot read them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from attacks.metrics import evaluate_perturbation
from attacks.victim import Model, labels_of
from suite.core.errors import ConfigError


@dataclass
class Tuned:
    """The chosen settings and every candidate's validation fooling rate."""

    best: dict[str, Any]
    val_fooling_rate: float
    trials: list[dict[str, Any]] = field(default_factory=list)


def grid(space: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the values in ``space`` (``{"step_size": [0.1, 0.5]}`` -> 2 settings)."""
    keys = list(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]


def tune_on_validation(build: Callable[..., Any], model: Model, x_craft: torch.Tensor, x_val: torch.Tensor,
                       space: Mapping[str, Sequence[Any]], *, seeds: Sequence[int] = (0,),
                       norm: str | None = None) -> Tuned:
    """Pick the settings in ``space`` with the highest mean validation fooling rate over ``seeds``.

    build(**settings): a universal attack (``seed`` is passed too).
    x_craft: ``[N, C, H, W]`` craft images; x_val: validation images of the
    same source (never the test split).  Ties keep the first candidate.
    """
    if len(x_val) == 0:
        raise ConfigError("tuning needs validation images")
    clean = labels_of(model, x_val)
    trials = []
    for settings in grid(space):
        rates = []
        for seed in seeds:
            attack = build(**settings, seed=seed)
            v = attack.craft(model, x_craft).perturbation
            rates.append(evaluate_perturbation(model, v, x_val, clean, norm=norm or attack.norm,
                                               clean_labels=clean)["fooling_rate"])
        trials.append({**settings, "val_fooling_rate": sum(rates) / len(rates)})
    best = max(trials, key=lambda t: t["val_fooling_rate"])  # max keeps the first of equal rates
    return Tuned({k: v for k, v in best.items() if k != "val_fooling_rate"}, best["val_fooling_rate"], trials)
