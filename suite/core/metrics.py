"""The one definition of every metric: direction, unit and leaderboard view.

Records (their ``higher_is_better`` section), the stages that name metrics
(``attacks.stage``, ``fingerprints.summary``), the report writers and the
leaderboard views all look metrics up here; nothing else says whether a
metric is better high or low.

A :class:`MetricDef` names one metric exactly (``clean_acc``) or a family by a
shell-style pattern (``fp_*_auc``: what ``fingerprints.summary`` writes per
method; ``*_fooling_rate``: what ``attacks.stage`` writes per universal
attack).  Lookup: an exact name wins; else the first pattern in
:data:`METRICS` order that matches (so the ``fp_*`` fingerprint families come
before the generic ``*_rate`` / ``*_acc`` suffixes, and a fingerprint method
named ``misclassified`` stays an IP-protection metric).  A name matching
nothing is :attr:`Direction.NEUTRAL`, :attr:`Unit.NUMBER`, view
:attr:`LeaderboardView.NONE`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Iterable


class Direction(str, Enum):
    HIGHER = "higher"    # higher is better
    LOWER = "lower"      # lower is better
    NEUTRAL = "neutral"  # a fact, not ranked by default (no arrow)

    @property
    def higher_is_better(self) -> bool | None:
        return None if self is Direction.NEUTRAL else self is Direction.HIGHER


class Unit(str, Enum):
    FRACTION = "fraction"          # in [0, 1]
    COUNT = "count"                # params, MACs, queries ...
    MILLISECONDS = "ms"
    SECONDS = "s"
    TIMES = "x"                    # a speed-up factor
    NUMBER = "number"              # anything else


class LeaderboardView(str, Enum):
    COMPRESSION = "compression"
    ROBUSTNESS = "robustness"
    IP_PROTECTION = "ip_protection"
    NONE = "none"


@dataclass(frozen=True)
class MetricDef:
    """One metric (or a family of them, by pattern)."""

    pattern: str                   # an exact name, or a pattern with ``*``
    direction: Direction
    unit: Unit
    view: LeaderboardView

    @property
    def exact(self) -> bool:
        return "*" not in self.pattern and "?" not in self.pattern and "[" not in self.pattern


H, L, N = Direction.HIGHER, Direction.LOWER, Direction.NEUTRAL
FR, CT, MS, SEC, X, NUM = Unit.FRACTION, Unit.COUNT, Unit.MILLISECONDS, Unit.SECONDS, Unit.TIMES, Unit.NUMBER
COMP, ROB, IP, NONE = (LeaderboardView.COMPRESSION, LeaderboardView.ROBUSTNESS, LeaderboardView.IP_PROTECTION,
                       LeaderboardView.NONE)

# fields of a fingerprint entry (``fingerprints.summary``); each also exists per method as fp_<method>_<field>
FINGERPRINT_FIELDS: tuple[tuple[str, Direction, Unit], ...] = (
    ("auc", H, FR), ("tpr_at_1pct_fpr", H, FR), ("U", H, FR), ("R", H, FR), ("T", L, FR),
    ("false_positives", L, CT), ("queries", L, CT), ("generation_seconds", L, SEC),
)

METRICS: tuple[MetricDef, ...] = (
    # compression and deployment facts
    MetricDef("clean_acc", H, FR, COMP),
    MetricDef("acc_dense", H, FR, COMP),
    MetricDef("achieved_sparsity", H, FR, COMP),
    MetricDef("macs", L, CT, COMP),
    MetricDef("macs_ratio", L, FR, COMP),
    MetricDef("params", L, CT, COMP),
    MetricDef("latency_ms", L, MS, COMP),
    MetricDef("speedup", H, X, COMP),
    MetricDef("speedup_vs_best_dense", H, X, COMP),
    MetricDef("latency_p90_ms", L, MS, NONE),
    MetricDef("dense_latency_ms", L, MS, NONE),
    MetricDef("agreement_top1", H, FR, NONE),
    MetricDef("compile_seconds", L, SEC, NONE),
    MetricDef("total_seconds", L, SEC, NONE),
    # robustness: leaderboard columns, then the fields of an attack entry
    MetricDef("uap_fooling_rate", L, FR, ROB),
    MetricDef("pgd_robust_acc", H, FR, ROB),
    MetricDef("transfer_fooling_rate", L, FR, ROB),
    MetricDef("fooling_rate", L, FR, ROB),
    MetricDef("asr", L, FR, ROB),
    MetricDef("misclassification_rate", L, FR, ROB),
    MetricDef("robust_acc", H, FR, ROB),
    # IP protection: the fields of a fingerprint entry
    *(MetricDef(f, d, u, IP) for f, d, u in FINGERPRINT_FIELDS),
    # neutral facts (formatting only)
    *(MetricDef(n, N, CT, NONE) for n in ("n_positives", "n_negatives", "seed", "steps", "grad_queries",
                                          "test_images")),
    *(MetricDef(n, N, FR, NONE) for n in ("sparsity", "eps", "eps_standard", "eps_multiple")),
    MetricDef("seconds", N, SEC, NONE),
    MetricDef("n_runs", N, CT, NONE),
    MetricDef("queries_per_image", N, CT, NONE),
    # families: per fingerprint method (fingerprints.summary: fp_<method>_<field>) before the generic suffixes
    *(MetricDef(f"fp_*_{f}", d, u, IP) for f, d, u in FINGERPRINT_FIELDS),
    MetricDef("fp_*", N, NUM, IP),
    # per attack (attacks.stage: <attack>_fooling_rate for universal ones, <attack>_robust_acc per image,
    # <attack>_clean_acc on the test subset of attacks with n_images, <attack>_queries: mean queries per
    # image of black-box attacks, a fact under a fixed budget)
    MetricDef("*_noise_fooling_rate", N, FR, ROB),  # a baseline beside a UAP: no better or worse
    MetricDef("*_fooling_rate", L, FR, ROB),
    MetricDef("*_robust_acc", H, FR, ROB),
    MetricDef("*_clean_acc", H, FR, ROB),
    MetricDef("*_queries", N, CT, ROB),
    MetricDef("*_asr", L, FR, ROB),
    MetricDef("*_misclassification_rate", L, FR, ROB),
    # generic suffixes
    MetricDef("*_acc", H, FR, NONE),
    MetricDef("*_accuracy", H, FR, NONE),
    MetricDef("*_seconds", L, SEC, NONE),
    MetricDef("*_ms", L, MS, NONE),
    MetricDef("*_rate", N, FR, NONE),
    MetricDef("*_auc", H, FR, NONE),
    MetricDef("*_fpr", N, FR, NONE),
)

_EXACT = {m.pattern: m for m in METRICS if m.exact}
_PATTERNS = tuple(m for m in METRICS if not m.exact)


@lru_cache(maxsize=4096)
def metric_def(name: str) -> MetricDef | None:
    """The definition of ``name`` (exact name first, else the first matching pattern), or None."""
    if name in _EXACT:
        return _EXACT[name]
    return next((m for m in _PATTERNS if fnmatchcase(name, m.pattern)), None)


def direction_of(name: str) -> Direction:
    d = metric_def(name)
    return Direction.NEUTRAL if d is None else d.direction


def higher_is_better(name: str) -> bool | None:
    """True / False for a ranked metric, None for a neutral or unknown one."""
    return direction_of(name).higher_is_better


def unit_of(name: str) -> Unit:
    d = metric_def(name)
    return Unit.NUMBER if d is None else d.unit


def view_of(name: str) -> LeaderboardView:
    d = metric_def(name)
    return LeaderboardView.NONE if d is None else d.view


def record_directions(names: Iterable[str]) -> dict[str, bool]:
    """A record's ``higher_is_better`` section: name -> bool for each ranked metric of ``names``."""
    out = {}
    for name in names:
        h = higher_is_better(name)
        if h is not None:
            out[name] = h
    return out


# ------------------------------------------------------------------ values
def as_float(value: object) -> float:
    """A metric value as a float: numbers, bools and numeric text as such, NaN for anything else."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return math.nan


def is_missing(value: object) -> bool:
    """No value: None or a float NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def is_number(value: object) -> bool:
    """Whether ``value`` reads as a number (not NaN) under :func:`as_float`."""
    return not math.isnan(as_float(value))
