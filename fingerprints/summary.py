"""One record entry per fingerprint method, from an evaluation over the zoo.

Definitions (match rate = fraction of fingerprints a suspect labels like the owner):

* ``R``: mean match rate over the positives (derived copies, including the
  run's own compressed model / deployment as family ``this-run``);
* ``T``: mean match rate over all negatives (independent models);
* ``U = R - T``;
* ``auc``, ``tpr_at_1pct_fpr`` and ``roc``: positives against all negatives
  (threshold-free);
* ``threshold``: calibrated on the calibration half of the negatives only;
  ``false_positives``: held-out negatives at or above it;
  ``tpr_at_threshold`` / ``false_negatives``: positives at / below it;
* ``by_family``: ``R`` per value of each family key (kind, scheme, sparsity,
  finetune, compiled);
* ``T_by_origin`` / ``T_max_by_origin``: mean / highest rate of the negatives
  per origin (seed, other-arch, subset, foreign, disjoint, transfer);
* ``extraction``: extraction students (zoo role ``extraction``) against all
  negatives, never mixed into R / auc / tpr (see :func:`extraction_summary`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fingerprints.bank import Evaluation
from fingerprints.base import FingerprintSet
from fingerprints.metrics import auc, roc_curve, tpr_at_fpr
from suite.core.metrics import FINGERPRINT_FIELDS, higher_is_better, is_missing

FAMILY_KEYS = ("kind", "scheme", "sparsity", "finetune", "compiled")


def _r(v: float) -> float:
    return round(float(v), 6)


def by_family(positives: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{key: {value: mean rate}}`` over the positives' family fields."""
    out: dict[str, dict[str, float]] = {}
    for key in FAMILY_KEYS:
        groups: dict[str, list[float]] = {}
        for p in positives:
            value = p["family"].get(key)
            if value is None:
                continue
            name = f"{value:g}" if isinstance(value, float) else str(value)
            groups.setdefault(name, []).append(p["rate"])
        out[key] = {k: _r(np.mean(v)) for k, v in sorted(groups.items())}
    return out


def summarize(fps: FingerprintSet, ev: Evaluation, extra_positives: list[dict[str, Any]] | None = None,
              zoo_composition: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``fingerprints`` record entry of one method (see the module docstring)."""
    positives = [m for m in ev.members if m["role"] == "positive"] + list(extra_positives or [])
    pos = [p["rate"] for p in positives]
    neg_all = ev.rates("negative")
    neg_eval = ev.rates("negative", ev.evaluation)
    fpr, tpr, _ = roc_curve(pos, neg_all)
    R = float(np.mean(pos)) if pos else float("nan")
    T = float(np.mean(neg_all)) if neg_all else float("nan")
    entry: dict[str, Any] = {
        "id": fps.method,
        "R": _r(R), "T": _r(T), "U": _r(R - T),
        "auc": _r(auc(pos, neg_all)),
        "tpr_at_1pct_fpr": _r(tpr_at_fpr(pos, neg_all, 0.01)),
        "threshold": _r(ev.threshold),
        "false_positives": int(sum(r >= ev.threshold for r in neg_eval)),
        "false_negatives": int(sum(r < ev.threshold for r in pos)),
        "tpr_at_threshold": _r(np.mean([r >= ev.threshold for r in pos])) if pos else None,
        "n_positives": len(pos), "n_negatives": len(neg_all),
        "n_calibration_negatives": len(ev.calibration), "n_evaluation_negatives": len(neg_eval),
        "queries": int(ev.queries),
        "generation_seconds": _r(fps.generation_seconds),
        "evaluation_seconds": _r(ev.seconds),
        "R_min": _r(min(pos)) if pos else None, "T_max": _r(max(neg_all)) if neg_all else None,
        "by_family": by_family(positives),
        "roc": {"fpr": [_r(v) for v in fpr], "tpr": [_r(v) for v in tpr]},
        "access": ev.access,
        "kept": len(fps),
        "settings": fps.settings,
        "generation": {k: v for k, v in fps.meta.items() if k not in ("owner_sha256", "reference")},
    }
    negatives = [m for m in ev.members if m["role"] == "negative"]
    origins: dict[str, list[float]] = {}
    for m in negatives:
        origins.setdefault(str(m["family"].get("origin", "seed")), []).append(m["rate"])
    entry["T_by_origin"] = {k: _r(np.mean(v)) for k, v in sorted(origins.items())}
    entry["T_max_by_origin"] = {k: _r(max(v)) for k, v in sorted(origins.items())}
    entry["extraction"] = extraction_summary([m for m in ev.members if m["role"] == "extraction"], neg_all,
                                             ev.threshold)
    if zoo_composition is not None:
        entry["zoo"] = zoo_composition
    return entry


def extraction_summary(students: list[dict[str, Any]], neg_all: list[float], threshold: float) -> dict[str, Any] | None:
    """Extraction students against all negatives, apart from the copy positives (None when the zoo has none).

    R: mean rate; auc / tpr_at_1pct_fpr: students vs negatives; detected: students at or above the
    calibrated threshold; by_access: R of the label-only and the probability students.
    """
    if not students:
        return None
    rates = [s["rate"] for s in students]
    access: dict[str, list[float]] = {}
    for s in students:
        access.setdefault(str(s["family"].get("access", "?")), []).append(s["rate"])
    return {"n": len(rates), "R": _r(np.mean(rates)), "R_min": _r(min(rates)),
            "auc": _r(auc(rates, neg_all)), "tpr_at_1pct_fpr": _r(tpr_at_fpr(rates, neg_all, 0.01)),
            "detected": int(sum(r >= threshold for r in rates)),
            "by_access": {k: _r(np.mean(v)) for k, v in sorted(access.items())},
            "members": {s["id"]: _r(s["rate"]) for s in students}}


# the entry fields flattened into the record's metrics; their directions: suite.core.metrics (fp_*_<field>)
METRIC_FIELDS: tuple[str, ...] = tuple(f for f, _, _ in FINGERPRINT_FIELDS)


def flat_metrics(entries: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, bool]]:
    """``fp_<method>_<field>`` floats for the record's metrics, and their directions."""
    metrics: dict[str, float] = {}
    directions: dict[str, bool] = {}
    for e in entries:
        for field in METRIC_FIELDS:
            value = e.get(field)
            if is_missing(value):
                continue
            name = f"fp_{e['id']}_{field}"
            metrics[name] = float(value)
            directions[name] = higher_is_better(name)
    return metrics, directions
