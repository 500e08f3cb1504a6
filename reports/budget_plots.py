"""Plots against the attack budget eps, as PNG bytes (``None`` when there is nothing to draw).

uap_vs_budget         universal attacks: fooling rate against eps
robust_acc_vs_budget  per-image attacks: robust accuracy against eps

Both draw the budget sweeps of headline entries (``reports.sweeps``): one
line per run x attack; the UAP plot draws the fooling rate of uniform +-eps
noise at each budget (the sweep's ``noise_fooling_rate``) dashed in the
line's colour, the robust-accuracy plot starts each line at eps 0 with the
clean accuracy of the attacked images.  A dotted vertical line marks each
standard budget (``eps_standard``) of the plotted entries.  Without sweeps
they fall back to the attack entries themselves: headline entries, the mean
over seeds and backends per (model, scheme, attack) at each eps the runs
used.  x: eps in the attack norm's units; y: a fraction in [0, 1].
"""

from __future__ import annotations

from typing import Any

from reports.figure import MAX_SERIES, axes, legend, png
from suite.core.metrics import is_number

MAX_STANDARD_MARKS = 3


def uap_vs_budget(attacks, sweeps=None) -> bytes | None:
    """Fooling rate of universal attacks against eps (see the module docstring)."""
    points = headline_points(sweeps, universal=True, column="fooling_rate")
    if points is not None:
        return _sweep_plot(points, "fooling_rate", baseline="noise_fooling_rate",
                           title="UAP fooling rate vs budget (sweeps; dashed: uniform noise)")
    return _entry_plot(attacks, universal=True, column="fooling_rate", title="UAP fooling rate vs budget")


def robust_acc_vs_budget(attacks, sweeps=None) -> bytes | None:
    """Robust accuracy of per-image attacks against eps (see the module docstring)."""
    points = headline_points(sweeps, universal=False, column="robust_acc")
    if points is not None:
        return _sweep_plot(points, "robust_acc", start="clean_acc",
                           title="Robust accuracy vs budget (sweeps; eps 0: clean accuracy)")
    return _entry_plot(attacks, universal=False, column="robust_acc", title="Robust accuracy vs budget")


def headline_points(sweeps, *, universal: bool, column: str):
    """Headline sweep points of universal (or per-image) entries with a number in ``column``; None if none."""
    if sweeps is None or len(sweeps) == 0:
        return None
    df = sweeps[sweeps["headline"].astype(bool) & (sweeps["universal"].astype(bool) == universal)]
    df = df[df["eps"].map(is_number) & df[column].map(is_number)]
    return df if len(df) else None


def _label(row: dict[str, Any]) -> str:
    """``model/scheme@sparsity/backend/s<seed> attack`` of a sweep point."""
    sparsity = row.get("sparsity")
    s = f"@{sparsity:g}" if is_number(sparsity) else ""
    return (f"{row.get('model')}/{row.get('compress')}{s}/{row.get('backend')}/s{row.get('seed')} "
            f"{row.get('attack')}")


def _sweep_plot(points, column: str, *, title: str, baseline: str | None = None,
                start: str | None = None) -> bytes:
    """One line per (run, attack) of ``points``; ``baseline`` dashed in the same colour; ``start`` at eps 0."""
    fig, ax = axes(8.4, 4.0)
    series = 0
    for (_, _), g in points.groupby(["run_id", "attack"], sort=True, dropna=False):
        g = g.sort_values("eps")
        xs, ys = list(g["eps"]), list(g[column])
        if start is not None:
            first = g[start].map(is_number)
            if first.any():
                xs, ys = [0.0] + xs, [float(g[start][first].iloc[0])] + ys
        (line,) = ax.plot(xs, ys, "-o", markersize=4, label=_label(g.iloc[0].to_dict()))
        if baseline is not None:
            b = g[g[baseline].map(is_number)]
            if len(b):
                ax.plot(b["eps"], b[baseline], "--", color=line.get_color(), linewidth=1, marker=".")
        series += 1
        if series >= MAX_SERIES:
            break
    if baseline is not None and points[baseline].map(is_number).any():
        ax.plot([], [], "--", color="grey", linewidth=1, label="uniform noise (dashed)")
        series += 1
    standards = sorted({float(v) for v in points["eps_standard"] if is_number(v)})[:MAX_STANDARD_MARKS]
    for i, eps in enumerate(standards):
        ax.axvline(eps, color="grey", linestyle=":", linewidth=1, label="standard budget" if i == 0 else None)
    series += bool(standards)
    _finish(ax, column, title)
    legend(ax, series)
    return png(fig)


def _entry_plot(attacks, *, universal: bool, column: str, title: str) -> bytes | None:
    """Fallback without sweeps: mean ``column`` per eps per (model, scheme, attack) of the entries."""
    if attacks is None or len(attacks) == 0:
        return None
    df = attacks[attacks["universal"].fillna(False).astype(bool) == universal]
    df = df[df["eps"].map(is_number) & df[column].map(is_number)]
    if len(df) == 0:
        return None
    if "headline" in df.columns and df["headline"].fillna(False).astype(bool).any():
        df = df[df["headline"].fillna(False).astype(bool)]
    fig, ax = axes(8.4, 4.0)
    series = 0
    for (model, scheme, attack), g in df.groupby(["model", "compress", "attack"], sort=True, dropna=False):
        mean = g.groupby("eps")[column].mean().sort_index()
        ax.plot(mean.index, mean.values, "-o", markersize=4, label=f"{model} {scheme} {attack}")
        series += 1
        if series >= MAX_SERIES:
            break
    _finish(ax, column, title)
    legend(ax, series)
    return png(fig)


def _finish(ax, column: str, title: str) -> None:
    ax.set_xlabel("budget eps")
    ax.set_ylabel(column.replace("_", " ").replace("acc", "accuracy"))
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
