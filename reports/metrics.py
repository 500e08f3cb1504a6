"""What each leaderboard column means: label, direction and number format.

Directions come from the records' ``higher_is_better`` where they give one,
else from the metric table :mod:`suite.core.metrics` (the one definition of
directions, units and views); a neutral or unknown column gets no arrow and is
never used for ranking by default.  Number formats follow the table's unit.
Formatting is for reports only: tables and CSVs keep the floats.
"""

from __future__ import annotations

from typing import Any

from suite.core.metrics import Unit, higher_is_better, is_missing, unit_of

LABELS: dict[str, str] = {
    "clean_acc": "clean acc", "acc_dense": "dense acc", "achieved_sparsity": "sparsity (achieved)",
    "macs_ratio": "MACs ratio", "macs": "MACs", "params": "params", "latency_ms": "latency ms",
    "speedup": "speedup", "speedup_vs_best_dense": "vs best dense", "best_dense_runtime": "best dense runtime",
    "uap_fooling_rate": "UAP fooling rate", "pgd_robust_acc": "PGD robust acc",
    "transfer_fooling_rate": "transfer fooling rate", "tpr_at_1pct_fpr": "TPR@1%FPR",
    "false_positives": "false positives", "auc": "AUC", "generation_seconds": "gen s",
    "n_runs": "runs", "dense_clean_acc": "dense clean acc", "eps_standard": "standard eps",
    "eps_multiple": "eps / standard", "eps_origin": "eps origin", "black_box": "black box",
    "queries_per_image": "queries / image",
    "psnr_y": "PSNR-Y dB", "ssim_y": "SSIM-Y", "dense_psnr_y": "dense PSNR-Y", "dense_ssim_y": "dense SSIM-Y",
    "bicubic_psnr_y": "bicubic PSNR-Y", "bicubic_ssim_y": "bicubic SSIM-Y", "max_abs_diff": "max |diff|",
    "sr_uap_drop_db": "UAP PSNR-Y drop dB", "sr_uap_noise_drop_db": "noise PSNR-Y drop dB",
    "sr_fp_verdict": "fingerprint verdict", "sr_fp_heldout_false_positives": "held-out false positives",
    "sr_fp_heldout_negatives": "held-out negatives",
}


# columns that hold names, not numbers (left-aligned, sorted as text)
TEXT_COLUMNS = {"model", "source", "compress", "backend", "method", "id", "attack", "norm", "crafted_on",
                "evaluated_on", "run_id", "target", "job", "error", "attack_args", "fingerprint_args",
                "eps_origin", "feedback", "budget_reference", "headline", "black_box", "sr_fp_verdict"}


def direction(name: str, overrides: dict[str, bool] | None = None) -> bool | None:
    """True if higher is better, False if lower is, None if unknown."""
    if overrides and name in overrides:
        return overrides[name]
    return higher_is_better(name)


def arrow(name: str, overrides: dict[str, bool] | None = None) -> str:
    d = direction(name, overrides)
    return "" if d is None else (" ↑" if d else " ↓")


def header(name: str, overrides: dict[str, bool] | None = None, *, arrows: bool = True) -> str:
    return LABELS.get(name, name) + (arrow(name, overrides) if arrows else "")


def fmt(name: str, value: Any) -> str:
    """Format one cell for people (never used for CSV)."""
    if is_missing(value):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, (int, float)):
        return str(value)
    v = float(value)
    unit = unit_of(name)
    if unit is Unit.COUNT:
        return _si(v)
    if unit is Unit.TIMES:
        return f"{v:.2f}x"
    if unit is Unit.FRACTION:
        return f"{v:.3f}"
    if unit is Unit.MILLISECONDS:
        return f"{v:.3g}"
    if unit is Unit.SECONDS:
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
