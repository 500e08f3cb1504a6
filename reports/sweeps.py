"""Budget sweeps of attack entries -> rows of a long table (one row per budget point).

An attack entry may carry ``"sweep"``: a list of points, one per budget of a
budget sweep (usually 0.25, 0.5, 0.75, 1 and 1.5 times the attack's budget,
which is the source's standard budget unless the user set eps), each
``{"eps", "multiple", "fooling_rate", "robust_acc", "clean_acc",
"noise_fooling_rate", "seconds"}``.  Older sweeps (``attacks.perimage.eps_sweep``)
lack ``multiple``, ``fooling_rate`` and ``noise_fooling_rate``: ``multiple`` is
then ``eps`` / the entry's ``eps``, the others NaN.  Whether a point is at the
*standard* budget is read from its eps, never from ``multiple``:
``standard_multiple = eps / eps_standard`` (the entry's standard budget).  A
point without a numeric ``eps`` is dropped; nothing here raises on odd
content.

Columns (:data:`SWEEP_COLUMNS`; floats are fractions in [0, 1] except ``eps``,
in the attack norm's units, ``multiple``, a ratio, and ``seconds``):

run_id .. seed        the run's identity (``SWEEP_IDENTITY``)
entry_id, attack      the entry's id and attack name
universal, black_box  the entry's kind (bool)
headline              the entry is its run's headline pair (``reports.load``)
norm, eps_standard    the entry's norm and the source's standard budget
eps, multiple         the point's budget and budget / the entry's budget
standard_multiple     eps / eps_standard (NaN without a standard budget)
fooling_rate, robust_acc, clean_acc, noise_fooling_rate, seconds
                      the point's measurements (NaN when not given)
"""

from __future__ import annotations

import math
from typing import Any

from suite.core.metrics import as_float

SWEEP_IDENTITY = ("run_id", "model", "source", "compress", "sparsity", "backend", "seed")
POINT_FIELDS = ("eps", "multiple", "fooling_rate", "robust_acc", "clean_acc", "noise_fooling_rate", "seconds")
SWEEP_COLUMNS = (*SWEEP_IDENTITY, "entry_id", "attack", "universal", "black_box", "headline", "norm",
                 "eps_standard", *POINT_FIELDS, "standard_multiple")
STANDARD_TOLERANCE = 1e-3  # |eps / eps_standard - 1| below this: at the standard budget (eps are rounded)


def eps_multiple(eps: Any, standard: Any, given: Any = None) -> float:
    """``given`` when numeric, else ``eps / standard`` (NaN when either is missing or ``standard`` is 0)."""
    value = as_float(given)
    if not math.isnan(value):
        return value
    e, s = as_float(eps), as_float(standard)
    return e / s if not (math.isnan(e) or math.isnan(s) or s == 0) else math.nan


def sweep_rows(entry: dict[str, Any], identity: dict[str, Any], *, attack: str, headline: bool) -> list[dict]:
    """Rows of :data:`SWEEP_COLUMNS` for the points of ``entry["sweep"]`` (``[]`` without a sweep)."""
    points = entry.get("sweep")
    if not isinstance(points, list):
        return []
    standard = as_float(entry.get("eps_standard"))
    base = {**{k: identity.get(k) for k in SWEEP_IDENTITY}, "entry_id": str(entry.get("id", "?")),
            "attack": attack, "universal": entry.get("universal") is True,
            "black_box": entry.get("black_box") is True, "headline": bool(headline),
            "norm": entry.get("norm"), "eps_standard": standard}
    rows = []
    for point in points:
        if not isinstance(point, dict) or math.isnan(as_float(point.get("eps"))):
            continue
        row = {**base, **{f: as_float(point.get(f)) for f in POINT_FIELDS}}
        row["multiple"] = eps_multiple(row["eps"], entry.get("eps"), point.get("multiple"))
        row["standard_multiple"] = eps_multiple(row["eps"], standard)
        rows.append(row)
    return rows


def at_standard(points: list[dict[str, Any]], column: str) -> float:
    """``column`` of the point at the standard budget (``standard_multiple`` 1); NaN when there is none."""
    for point in points:
        multiple = as_float(point.get("standard_multiple"))
        if not math.isnan(multiple) and abs(multiple - 1.0) < STANDARD_TOLERANCE:
            return as_float(point.get(column))
    return math.nan


def empty_table():
    """A sweeps table without rows (pandas.DataFrame with :data:`SWEEP_COLUMNS`)."""
    import pandas as pd

    return pd.DataFrame(columns=list(SWEEP_COLUMNS))
