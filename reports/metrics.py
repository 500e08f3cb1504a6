"""What each leaderboard column means: label, direction and number format.

Directions come from the records' ``higher_is_better`` where they give one,
else from :data:`DIRECTIONS`; a column with no known direction gets no arrow
and is never used for ranking by default.  Formatting is for reports only:
tables and CSVs keep the floats.
"""

from __future__ import annotations

import math
from typing import Any

# name -> True (higher is better) / False (lower is better)
DIRECTIONS: dict[str, bool] = {
    "clean_acc": True, "acc_dense": True, "achieved_sparsity": True, "agreement_top1": True,
    "params": False, "macs": False, "macs_ratio": False, "latency_ms": False, "latency_p90_ms": False,
    "dense_latency_ms": False, "speedup": True, "compile_seconds": False, "total_seconds": False,
    "uap_fooling_rate": False, "pgd_robust_acc": True, "transfer_fooling_rate": False,
    "fooling_rate": False, "asr": False, "misclassification_rate": False, "robust_acc": True,
    "R": True, "T": False, "U": True, "auc": True, "tpr_at_1pct_fpr": True, "false_positives": False,
    "queries": False, "generation_seconds": False,
}

LABELS: dict[str, str] = {
    "clean_acc": "clean acc", "acc_dense": "dense acc", "achieved_sparsity": "sparsity (achieved)",
    "macs_ratio": "MACs ratio", "macs": "MACs", "params": "params", "latency_ms": "latency ms",
    "speedup": "speedup", "uap_fooling_rate": "UAP fooling rate", "pgd_robust_acc": "PGD robust acc",
    "transfer_fooling_rate": "transfer fooling rate", "tpr_at_1pct_fpr": "TPR@1%FPR",
    "false_positives": "false positives", "auc": "AUC", "generation_seconds": "gen s",
}

FRACTIONS = {"clean_acc", "acc_dense", "achieved_sparsity", "agreement_top1", "uap_fooling_rate",
             "pgd_robust_acc", "transfer_fooling_rate", "fooling_rate", "asr", "misclassification_rate",
             "robust_acc", "R", "T", "U", "auc", "tpr_at_1pct_fpr", "sparsity", "macs_ratio", "eps"}
# metric names made by stages, e.g. uap_pgd_fooling_rate, pgd_robust_acc, fp_ipguard_auc
FRACTION_SUFFIXES = ("_rate", "_acc", "_auc", "_R", "_T", "_U", "_fpr")
COUNTS = {"params", "macs", "false_positives", "queries", "n_positives", "n_negatives", "seed", "steps",
          "grad_queries", "test_images"}


# columns that hold names, not numbers (left-aligned, sorted as text)
TEXT_COLUMNS = {"model", "source", "compress", "backend", "method", "id", "attack", "norm", "crafted_on",
                "evaluated_on", "run_id", "target", "job", "error", "attack_args", "fingerprint_args"}


def direction(name: str, overrides: dict[str, bool] | None = None) -> bool | None:
    """True if higher is better, False if lower is, None if unknown."""
    if overrides and name in overrides:
        return overrides[name]
    if name in DIRECTIONS:
        return DIRECTIONS[name]
    if name.endswith(("_acc", "_accuracy")):
        return True
    if name.endswith(("fooling_rate", "_asr", "_seconds", "_ms")):
        return False
    return None


def arrow(name: str, overrides: dict[str, bool] | None = None) -> str:
    d = direction(name, overrides)
    return "" if d is None else (" ↑" if d else " ↓")


def header(name: str, overrides: dict[str, bool] | None = None, *, arrows: bool = True) -> str:
    return LABELS.get(name, name) + (arrow(name, overrides) if arrows else "")


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(name: str, value: Any) -> str:
    """Format one cell for people (never used for CSV)."""
    if is_missing(value):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, (int, float)):
        return str(value)
    v = float(value)
    if name in COUNTS:
        return _si(v)
    if name == "speedup":
        return f"{v:.2f}x"
    if name in FRACTIONS or name.endswith(FRACTION_SUFFIXES):
        return f"{v:.3f}"
    if name.endswith("_ms"):
        return f"{v:.3g}"
    if name.endswith("seconds"):
        return f"{v:.1f}"
    if v.is_integer() and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.4g}"


def _si(v: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return str(int(v)) if v.is_integer() else f"{v:.3g}"


def cell(column: str, value: Any) -> str:
    """A table cell for people: ranks as integers, everything else via :func:`fmt`."""
    if column == "rank":
        return "" if is_missing(value) else str(int(value))
    return fmt(column, value)
