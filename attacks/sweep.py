"""Budget sweeps: one attack at several multiples of its budget, so a record holds a curve.

Each point re-crafts the attack at ``eps = multiple * base_eps`` on the
crafting model (the run's nearest white box, or the shipped model for black
boxes) and evaluates on the shipped model, beside uniform noise at the same
budget (the baseline every attack figure needs).  Points whose Linf budget
would exceed 1 are dropped.

A point: ``{"eps", "multiple", "fooling_rate", "robust_acc", "clean_acc",
"noise_fooling_rate", "seconds"}`` (rates in [0, 1]; seconds of crafting).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from attacks.metrics import evaluate_perturbation, label_metrics
from attacks.norms import project
from attacks.uap import NoiseUniform
from attacks.victim import Model, labels_of
from suite.core.errors import ConfigError

DEFAULT_MULTIPLES = (0.25, 0.5, 0.75, 1.0, 1.5)


def parse_multiples(text: str | None) -> tuple[float, ...]:
    """``"0.5:1:2"`` -> ``(0.5, 1.0, 2.0)``; ``None`` / ``"default"`` -> the default; ``"none"``/``""`` -> ``()``."""
    if text is None:
        return DEFAULT_MULTIPLES
    text = str(text).strip().lower()
    if text == "default":
        return DEFAULT_MULTIPLES
    if text in ("", "none", "off"):
        return ()
    try:
        values = tuple(float(part) for part in text.split(":") if part)
    except ValueError:
        raise ConfigError(f"sweep must be colon-separated budget multiples such as 0.5:1:2, got {text!r}") from None
    if any(not v > 0 for v in values):
        raise ConfigError(f"sweep multiples must be > 0, got {text!r}")
    return tuple(sorted(set(values)))


def budget_sweep(build: Callable[[float], Any], crafter: Model, shipped: Model, *, norm: str, base_eps: float,
                 multiples: tuple[float, ...], x_craft: torch.Tensor, x_eval: torch.Tensor, y_eval: torch.Tensor,
                 clean_eval: torch.Tensor, seed: int,
                 base_point: dict[str, float] | None = None,
                 craft: Callable[..., Any] | None = None) -> list[dict[str, float]]:
    """The sweep of one attack (``build(eps) -> Attack``).

    ``base_point``: the attack's own figures at ``base_eps`` (``fooling_rate``,
    ``robust_acc``, ``clean_acc``, ``seconds``), already measured the same way,
    reused for multiple 1 instead of crafting again.

    Universal attacks craft on ``x_craft`` and are scored on ``(x_eval,
    y_eval)``; per-image attacks attack ``(x_eval, y_eval)`` directly.
    ``clean_eval``: the shipped model's clean labels of ``x_eval`` ``[N]``.
    ``craft(attack, model, x, y=None) -> AttackResult``: how a point is
    crafted (default: ``attack.craft``; the stage passes the crafted-attack
    cache); every point is scored afresh either way.
    """
    if craft is None:
        def craft(attack, model, x, y=None):
            return attack.craft(model, x) if y is None else attack.craft(model, x, y)

    points = []
    for multiple in multiples:
        eps = float(multiple) * float(base_eps)
        if norm == "linf" and eps > 1:
            continue
        attack = build(eps)
        if base_point is not None and multiple == 1.0:
            metrics, seconds = base_point, base_point["seconds"]
        elif attack.universal:
            result = craft(attack, crafter, x_craft)
            metrics = evaluate_perturbation(shipped, result.perturbation, x_eval, y_eval, norm=norm,
                                            target=attack.target, clean_labels=clean_eval)
            seconds = result.seconds
        else:
            result = craft(attack, crafter, x_eval, y_eval)
            metrics = label_metrics(clean_eval, labels_of(shipped, result.adversarials), y_eval, attack.target)
            seconds = result.seconds
        noise = project(NoiseUniform(norm=norm, eps=eps, seed=seed).pattern(tuple(x_eval.shape[1:])), norm, eps)
        noise_metrics = evaluate_perturbation(shipped, noise, x_eval, y_eval, norm=norm, clean_labels=clean_eval)
        points.append({"eps": round(eps, 6), "multiple": float(multiple), "fooling_rate": metrics["fooling_rate"],
                       "robust_acc": metrics["robust_acc"], "clean_acc": metrics["clean_acc"],
                       "noise_fooling_rate": noise_metrics["fooling_rate"], "seconds": round(float(seconds), 4)})
    return points
