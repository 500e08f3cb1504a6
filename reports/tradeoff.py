"""Compression x robustness: does a pruning scheme change robustness at the field's budget?

:func:`tradeoff_table` has one row per (model, source, compress scheme,
target sparsity), the mean over that group's runs (seeds, backends), with the
dense model's values beside each row for reference.  Every value is a
fraction in [0, 1] taken at the run's *standard* budget (the source's
standard eps for the attack's norm, ``eps_origin == "standard"``):

n_runs                      runs averaged into the row
achieved_sparsity           mean achieved sparsity (0 for dense)
clean_acc                   clean accuracy
dense_clean_acc             the dense model's clean accuracy: the mean of the
                            (model, source)'s ``none`` / ``dense`` rows, else
                            the runs' ``acc_dense``
<a>_robust_acc              each per-image attack ``a`` (``-`` -> ``_``, as
                            ``attacks.stage`` names metrics), headline entry
dense_<a>_robust_acc        the same on the dense rows
<u>_fooling_rate            each universal attack ``u`` except the noise
                            baselines (``noise*``), headline entry
<u>_noise_fooling_rate      the fooling rate of uniform +-eps noise at the
                            same budget: the sweep's ``noise_fooling_rate`` at
                            the standard budget, else the ``noise-uniform``
                            (else any ``noise*``) headline entry
dense_<u>_fooling_rate      the UAP's fooling rate on the dense rows

A run's value for one attack, first that exists: its headline entries with
``eps_origin == "standard"`` (the worst of them: lowest robust accuracy,
highest fooling rate); the point of their sweep at the standard eps (a
user-set budget's sweep may pass through it); when no
headline entry says ``eps_origin == "given"`` (older records), the record's
``<a>_robust_acc`` / ``<u>_fooling_rate`` metric, else the worst headline
entry.  A run whose user-set budget has no standard point counts as missing
(NaN), never as a value at another budget.  Rows without any attack value
are left out (a table of runs without attacks is empty).  The fixed columns are
:data:`TRADEOFF_IDENTITY` + :data:`TRADEOFF_METRICS`; attack columns follow,
per-image attacks first, each group in name order.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from reports.sweeps import at_standard
from suite.core.metrics import as_float

NOTE = ("One row per (model, source, scheme, sparsity), the mean over its runs; every robustness value at the "
        "source's standard budget (headline entries); dense_* columns: the dense model's values, "
        "*_noise_fooling_rate: uniform +-eps noise at the same budget.")
TRADEOFF_IDENTITY = ("model", "source", "compress", "sparsity")
TRADEOFF_METRICS = ("n_runs", "achieved_sparsity", "clean_acc", "dense_clean_acc")
DENSE_SCHEMES = ("none", "dense")
NOISE_PREFIX = "noise"
UNIFORM_NOISE = ("noise-uniform", "noise")  # the baseline the view shows, by preference
SUMMARY_NAMES = {"uap_fooling_rate", "transfer_fooling_rate"}  # leaderboard columns, not per-attack metrics


def slug(attack: str) -> str:
    """Attack name -> metric prefix (``uap-pgd`` -> ``uap_pgd``), as ``attacks.stage`` writes them."""
    return str(attack).replace("-", "_")


def tradeoff_table(data):
    """The table of the module docstring for ``data`` (a :class:`reports.load.RunData`)."""
    import pandas as pd

    fixed = [*TRADEOFF_IDENTITY, *TRADEOFF_METRICS]
    per_run = [run_values(run, _entries_of(data.attacks, run.get("run_id")),
                          _points_of(data.sweeps, run.get("run_id")))
               for run in data.runs.to_dict("records")]
    if not per_run:
        return pd.DataFrame(columns=fixed)
    df = pd.DataFrame(per_run)
    robust = sorted(c for c in df.columns if c.endswith("_robust_acc"))
    fooling = sorted(c for c in df.columns if c.endswith("_fooling_rate") and not c.endswith("_noise_fooling_rate"))
    values = ["achieved_sparsity", "clean_acc", *robust, *fooling, *[_noise(c) for c in fooling]]
    for c in values:
        df[c] = pd.to_numeric(df[c], errors="coerce") if c in df.columns else math.nan
    keys = list(TRADEOFF_IDENTITY)
    grouped = df.groupby(keys, dropna=False, sort=True)
    out = grouped[values].mean().reset_index()
    out.insert(len(keys), "n_runs", grouped.size().values.astype(float))
    dense = df[df["compress"].isin(DENSE_SCHEMES)].groupby(["model", "source"], dropna=False)[values].mean()
    ref = {key: row for key, row in dense.iterrows()}  # (model, source) -> the dense model's means
    rows = [ref.get((m, s)) for m, s in zip(out["model"], out["source"])]
    dense_of = lambda c: [math.nan if r is None else float(r[c]) for r in rows]  # noqa: E731
    out["dense_clean_acc"] = dense_of("clean_acc")
    out["dense_clean_acc"] = out["dense_clean_acc"].fillna(grouped["acc_dense"].mean().reset_index(drop=True))
    columns = fixed.copy()
    for c in robust:
        out[f"dense_{c}"] = dense_of(c)
        columns += [c, f"dense_{c}"]
    for c in fooling:
        out[f"dense_{c}"] = dense_of(c)
        columns += [c, _noise(c), f"dense_{c}"]
    has_value = out[[*robust, *fooling]].notna().any(axis=1) if robust or fooling \
        else pd.Series(False, index=out.index)
    return out.loc[has_value, columns].reset_index(drop=True)


def run_values(run: dict[str, Any], entries: list[dict[str, Any]], points: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's row before grouping: identity, ``clean_acc``, ``acc_dense`` and per-attack values.

    ``entries``: the run's rows of the attacks table; ``points``: its headline sweep points.
    """
    out: dict[str, Any] = {k: run.get(k) for k in TRADEOFF_IDENTITY}
    for k in ("sparsity", "clean_acc", "acc_dense", "achieved_sparsity"):
        out[k] = as_float(run.get(k))
    heads: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        if _flag(e.get("headline")):
            heads.setdefault(str(e["attack"]), []).append(e)
    noise: dict[str, float] = {}      # noise attack slug -> fooling rate at the standard budget
    uap_noise: dict[str, float] = {}  # UAP slug -> its sweep's noise point at the standard budget
    for attack, mine in sorted(heads.items()):
        ids = {e.get("id") for e in mine}
        my_points = [p for p in points if p.get("entry_id") in ids]
        universal = any(_flag(e.get("universal")) for e in mine)
        column = "fooling_rate" if universal else "robust_acc"
        value = standard_value(mine, my_points, column, run.get(f"{slug(attack)}_{column}"),
                               max if universal else min)
        if universal and attack.startswith(NOISE_PREFIX):
            noise[slug(attack)] = value
        else:
            out[f"{slug(attack)}_{column}"] = value
            if universal:
                uap_noise[slug(attack)] = at_standard(my_points, "noise_fooling_rate")
    seen = {slug(e["attack"]) for e in entries}
    for name, value in run.items():  # headline metrics of attacks the record has no entries for
        a, column = _metric_attack(name)
        if a is None or a in seen or math.isnan(as_float(value)):
            continue
        if a.startswith(NOISE_PREFIX):
            noise.setdefault(a, as_float(value))
        else:
            out.setdefault(name, as_float(value))
            if column == "fooling_rate":
                uap_noise.setdefault(a, math.nan)
    baseline = _baseline(noise)
    for a, value in uap_noise.items():
        out[f"{a}_noise_fooling_rate"] = baseline if math.isnan(value) else value
    return out


def _metric_attack(name: Any) -> tuple[str | None, str | None]:
    """``pgd_robust_acc`` -> ("pgd", "robust_acc"); (None, None) for anything not a per-attack headline."""
    if not isinstance(name, str) or name in SUMMARY_NAMES or name.startswith(("dense_", "fp_", "metric_")):
        return None, None
    for column in ("robust_acc", "fooling_rate"):
        if name.endswith(f"_{column}") and not name.endswith("_noise_fooling_rate"):
            return name[: -len(column) - 1], column
    return None, None


def _flag(value: Any) -> bool:
    """A boolean field (numpy or Python bool) is set; None / NaN is not."""
    import numpy as np

    return isinstance(value, (bool, np.bool_)) and bool(value)


def standard_value(entries: list[dict[str, Any]], points: list[dict[str, Any]], column: str, metric: Any,
                   worst: Callable[[list[float]], float]) -> float:
    """One attack's value at the standard budget (see the module docstring); NaN when there is none."""
    standard = [as_float(e.get(column)) for e in entries if e.get("eps_origin") == "standard"]
    standard = [v for v in standard if not math.isnan(v)]
    if standard:
        return float(worst(standard))
    at_one = at_standard(points, column)
    if not math.isnan(at_one):
        return at_one
    if any(e.get("eps_origin") == "given" for e in entries):
        return math.nan
    if not math.isnan(as_float(metric)):
        return as_float(metric)
    values = [as_float(e.get(column)) for e in entries]
    values = [v for v in values if not math.isnan(v)]
    return float(worst(values)) if values else math.nan


def _baseline(noise: dict[str, float]) -> float:
    """The uniform-noise fooling rate among the run's noise attacks (by slug), else any of them."""
    for name in UNIFORM_NOISE:
        if not math.isnan(as_float(noise.get(slug(name)))):
            return as_float(noise[slug(name)])
    values = [v for v in noise.values() if not math.isnan(as_float(v))]
    return values[0] if values else math.nan


def _noise(fooling_column: str) -> str:
    """``uap_pgd_fooling_rate`` -> ``uap_pgd_noise_fooling_rate``."""
    return fooling_column[: -len("_fooling_rate")] + "_noise_fooling_rate"


def _entries_of(attacks, run_id: Any) -> list[dict[str, Any]]:
    if attacks is None or len(attacks) == 0:
        return []
    return attacks[attacks["run_id"] == run_id].to_dict("records")


def _points_of(sweeps, run_id: Any) -> list[dict[str, Any]]:
    if sweeps is None or len(sweeps) == 0:
        return []
    mine = sweeps[(sweeps["run_id"] == run_id) & sweeps["headline"].astype(bool)]
    return mine.to_dict("records")
