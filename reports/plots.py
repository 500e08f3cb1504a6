"""The plots people look at, as PNG bytes (matplotlib, Agg backend).

Every function returns ``None`` when the data has nothing to plot, so the
page can say "no data" instead of drawing an empty frame.

accuracy_vs_sparsity   clean accuracy against achieved sparsity, one line per
                       (model, scheme); dense models at sparsity 0
speedup_vs_sparsity    measured speedup over dense against sparsity, per
                       (backend, scheme), beside the ideal 1 / (1 - s)
robustness_vs_sparsity robust accuracy of each per-image attack (left) and
                       fooling rate of each UAP with its uniform-noise
                       baseline dashed (right) at the standard budget,
                       against sparsity, one line per (model, scheme);
                       lines start at the dense model (the
                       :mod:`reports.tradeoff` table)
uap_vs_budget          UAP fooling rate against the budget eps, from the
robust_acc_vs_budget   headline entries' budget sweeps (one line per run x
                       attack) else from the entries (see
                       :mod:`reports.budget_plots`)
transfer_heatmaps      transfer matrices (crafted on -> evaluated on), mean
                       over the runs that share a matrix name and labels; the
                       four fullest (dense -> compressed -> deployed) first
roc_curves             fingerprint ROC curves, mean TPR per method on a common
                       FPR grid, with the mean AUC
"""

from __future__ import annotations

import math
from typing import Any

from reports.budget_plots import robust_acc_vs_budget, uap_vs_budget
from reports.figure import MAX_SERIES
from reports.figure import axes as _axes
from reports.figure import legend as _legend
from reports.figure import png as _png
from reports.figure import pyplot as _pyplot
from suite.core.metrics import is_number

DENSE = ("none", "dense")  # compress schemes of the uncompressed model

def _against_sparsity(runs, metric: str):
    """Runs with a number for ``metric`` and a sparsity ``x`` (achieved, else target); None if none."""
    if len(runs) == 0 or metric not in runs.columns:
        return None
    if "task" in runs.columns:
        runs = runs[runs["task"] != "sr"]  # SR runs have their own plot (sr_psnr_vs_latency)
    x = runs["achieved_sparsity"].where(runs["achieved_sparsity"].notna(), runs["sparsity"])
    df = runs.assign(x=x)
    df = df[df[metric].map(is_number) & df["x"].map(is_number)]
    return df if len(df) else None


def accuracy_vs_sparsity(runs) -> bytes | None:
    df = _against_sparsity(runs, "clean_acc")
    if df is None:
        return None
    fig, ax = _axes(7.6, 4.0)
    dense_acc = {model: g["clean_acc"].mean() for model, g in df[df["compress"].isin(["none", "dense"])]
                 .groupby("model")}
    series = 0
    for (model, scheme), g in df.groupby(["model", "compress"], sort=True, dropna=False):
        mean = g.groupby("x")["clean_acc"].mean().sort_index()
        if scheme in ("none", "dense"):
            ax.plot(mean.index, mean.values, "*", markersize=9, label=f"{model} dense")
        else:
            xs, ys = list(mean.index), list(mean.values)
            if model in dense_acc and xs and xs[0] > 0:  # lines start at the dense model
                xs, ys = [0.0] + xs, [dense_acc[model]] + ys
            ax.plot(xs, ys, "-o", markersize=5, label=f"{model} {scheme}")
        series += 1
        if series >= MAX_SERIES:
            break
    ax.set_xlabel("sparsity (fraction of prunable weights removed)")
    ax.set_ylabel("clean accuracy")
    ax.set_title("Accuracy vs sparsity per scheme")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    _legend(ax, series)
    return _png(fig)


def speedup_vs_sparsity(runs) -> bytes | None:
    df = _against_sparsity(runs, "speedup")
    if df is None:
        return None
    fig, ax = _axes(6.4, 4.0)
    top = min(0.95, max(0.9, float(df["x"].max())))
    grid = [i / 100 * top for i in range(101)]
    ax.plot(grid, [1 / (1 - s) for s in grid], "k--", linewidth=1, label="ideal 1/(1-s)")
    series = 1
    for (backend, scheme), g in df.groupby(["backend", "compress"], sort=True, dropna=False):
        ax.plot(g["x"], g["speedup"], "o", label=f"{backend} {scheme}")
        series += 1
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("sparsity")
    ax.set_ylabel("measured speedup over dense (log)")
    ax.set_title("Measured speedup vs sparsity")
    ax.grid(alpha=0.3, which="both")
    _legend(ax, series)
    return _png(fig)


def robustness_vs_sparsity(table) -> bytes | None:
    """Robust accuracy (left) and UAP fooling rate (right, uniform noise dashed) against sparsity, from a
    :func:`reports.tradeoff.tradeoff_table`; one colour per (model, scheme), one marker per attack; lines
    start at the dense model (sparsity 0).  None when the table has no attack values."""
    if table is None or len(table) == 0:
        return None
    values = [c for c in table.columns if not c.startswith("dense_") and not c.endswith("_noise_fooling_rate")]
    robust = [c for c in values if c.endswith("_robust_acc")]
    fooling = [c for c in values if c.endswith("_fooling_rate")]
    panels = [(cols, name) for cols, name in ((robust, "robust accuracy"), (fooling, "UAP fooling rate"))
              if any(table[c].map(is_number).any() for c in cols)]
    if not panels:
        return None
    df = table.assign(x=table["achieved_sparsity"].where(table["achieved_sparsity"].map(is_number),
                                                         table["sparsity"]))
    dense = df[df["compress"].isin(DENSE)]
    schemes = sorted({(m, c) for m, c in zip(df["model"], df["compress"]) if c not in DENSE}, key=str)
    cycle = _pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {key: cycle[i % len(cycle)] for i, key in enumerate(schemes)}
    fig, axs = _axes(6.2 * len(panels), 4.2, ncols=len(panels))
    for ax, (cols, name) in zip([axs] if len(panels) == 1 else list(axs), panels):
        series = 0
        for (model, scheme), g in df.groupby(["model", "compress"], sort=True, dropna=False):
            if scheme in DENSE and model in {m for m, _ in schemes}:
                continue  # the dense model is where each scheme's line starts
            for i, c in enumerate(cols):
                pts = g[g[c].map(is_number)].sort_values("x")
                if len(pts) == 0 or series >= MAX_SERIES:
                    continue
                attack = c.rsplit("_", 2)[0]
                style = {"color": colour.get((model, scheme)), "marker": "os^vDP"[i % 6], "markersize": 5}
                ax.plot(*_from_dense(pts, c, dense[dense["model"] == model]), "-",
                        label=f"{model} {scheme} {attack}", **style)
                series += 1
                noise = f"{attack}_noise_fooling_rate"
                if noise in pts.columns and pts[noise].map(is_number).any():
                    ax.plot(*_from_dense(pts[pts[noise].map(is_number)], noise, dense[dense["model"] == model]),
                            "--", linewidth=1, color=style["color"])
        ax.set_xlabel("sparsity (fraction of prunable weights removed)")
        ax.set_ylabel(f"{name} at the standard budget")
        dashed = " (dashed: uniform noise)" if cols is fooling else ""
        ax.set_title(f"{name[0].upper()}{name[1:]} vs sparsity{dashed}", fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        _legend(ax, series)
    return _png(fig)


def _from_dense(points, column: str, dense) -> tuple[list[float], list[float]]:
    """``(x, y)`` of ``points[column]``, starting at ``(0, dense value)`` when the dense rows have one."""
    xs, ys = [float(v) for v in points["x"]], [float(v) for v in points[column]]
    start = [float(v) for v in dense[column] if is_number(v)] if column in dense.columns else []
    if start and xs and xs[0] > 0:
        xs, ys = [0.0] + xs, [sum(start) / len(start)] + ys
    return xs, ys


def transfer_heatmaps(transfers: list[dict[str, Any]]) -> bytes | None:
    groups: dict[tuple, list[list[list[float]]]] = {}
    for t in transfers:
        if len(t["rows"]) * len(t["cols"]) < 2:
            continue  # a dense-only run has nothing to transfer to
        groups.setdefault((t["name"], tuple(t["rows"]), tuple(t["cols"]), t["metric"]), []).append(t["values"])
    if not groups:
        return None
    plt = _pyplot()
    # the fullest matrices (dense -> compressed -> deployed) first, then the most common
    items = sorted(groups.items(), key=lambda kv: (-len(kv[0][1]) * len(kv[0][2]), -len(kv[1]), kv[0][0]))[:4]
    ncols = min(2, len(items))
    nrows = math.ceil(len(items) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.9 * nrows), squeeze=False)
    for ax in axes.flat[len(items):]:
        ax.axis("off")
    for ax, ((name, rows, cols, metric), mats) in zip(axes.flat, items):
        mean = [[_mean([m[i][j] for m in mats]) for j in range(len(cols))] for i in range(len(rows))]
        shown = [[v if not math.isnan(v) else 0.0 for v in line] for line in mean]
        im = ax.imshow(shown, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel("evaluated on")
        ax.set_ylabel("crafted on")
        ax.set_title(f"{name} ({metric}, {len(mats)} runs)", fontsize=9)
        for i, line in enumerate(mean):
            for j, v in enumerate(line):
                text = "n/a" if math.isnan(v) else f"{v:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if (math.isnan(v) or v < 0.6) else "black")
        fig.colorbar(im, ax=ax, fraction=0.046)
    return _png(fig)


def roc_curves(fingerprints) -> bytes | None:
    if len(fingerprints) == 0 or "roc" not in fingerprints.columns:
        return None
    grid = [i / 200 for i in range(201)]
    by_method: dict[str, list[list[float]]] = {}
    aucs: dict[str, list[float]] = {}
    for _, row in fingerprints.iterrows():
        roc = row.get("roc")
        if not isinstance(roc, dict):
            continue
        try:
            fpr = [float(v) for v in roc["fpr"]]
            tpr = [float(v) for v in roc["tpr"]]
        except (KeyError, TypeError, ValueError):
            continue
        if len(fpr) < 2 or len(fpr) != len(tpr):
            continue
        by_method.setdefault(str(row["id"]), []).append(_interp(grid, fpr, tpr))
        if is_number(row.get("auc")):
            aucs.setdefault(str(row["id"]), []).append(float(row["auc"]))
    if not by_method:
        return None
    fig, ax = _axes(5.2, 4.4)
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    for method, curves in sorted(by_method.items())[:MAX_SERIES]:
        mean = [sum(c[i] for c in curves) / len(curves) for i in range(len(grid))]
        auc = f", AUC {_mean(aucs.get(method, [])):.3f}" if aucs.get(method) else ""
        ax.plot(grid, mean, linewidth=2, label=f"{method} ({len(curves)} runs{auc})")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("Fingerprint ROC curves")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    _legend(ax, len(by_method) + 1)
    return _png(fig)


def _interp(grid: list[float], fpr: list[float], tpr: list[float]) -> list[float]:
    """TPR of a ROC curve at each FPR of ``grid`` (linear between points; the
    highest TPR wins where the curve rises vertically)."""
    import numpy as np

    order = np.lexsort((np.asarray(tpr), np.asarray(fpr)))
    x, y = np.asarray(fpr)[order], np.asarray(tpr)[order]
    return [float(v) for v in np.interp(grid, x, y)]


def _mean(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


PLOTS = {
    "accuracy_vs_sparsity": ("Accuracy vs sparsity per scheme", "compression"),
    "speedup_vs_sparsity": ("Measured speedup vs sparsity (ideal 1/(1-s))", "compression"),
    "uap_vs_budget": ("UAP fooling rate vs budget", "robustness"),
    "robust_acc_vs_budget": ("Robust accuracy vs budget", "robustness"),
    "transfer_heatmaps": ("Transfer: dense -> compressed -> deployed", "robustness"),
    "robustness_vs_sparsity": ("Robustness at the standard budget vs sparsity per scheme",
                               "compression_robustness"),
    "roc_curves": ("Fingerprint ROC curves", "ip"),
    "sr_psnr_vs_latency": ("Super-resolution: test PSNR-Y vs measured latency per frame", "sr"),
}


def sr_psnr_vs_latency(runs) -> bytes | None:
    """SR runs (``task == "sr"``): PSNR-Y of the deployment against its measured frame latency, one marker per
    (model, compression, backend); bicubic PSNR-Y as a dashed line.  None without SR runs."""
    if "task" not in runs.columns or "psnr_y" not in runs.columns:
        return None
    df = runs[(runs["task"] == "sr") & runs["psnr_y"].map(is_number) & runs["latency_ms"].map(is_number)]
    if len(df) == 0:
        return None
    fig, ax = _axes(6.4, 4.0)
    series = 0
    for (model, scheme, backend), g in df.groupby(["model", "compress", "backend"], sort=True, dropna=False):
        ax.plot(g["latency_ms"], g["psnr_y"], "o", label=f"{model} {scheme} {backend}")
        series += 1
    if "bicubic_psnr_y" in df.columns and df["bicubic_psnr_y"].map(is_number).any():
        ax.axhline(float(df["bicubic_psnr_y"].mean()), color="grey", linestyle="--", linewidth=1, label="bicubic")
        series += 1
    ax.set_xscale("log")
    ax.set_xlabel("measured latency per frame, ms (log)")
    ax.set_ylabel("test PSNR-Y, dB")
    ax.set_title("SR quality vs measured latency")
    ax.grid(alpha=0.3, which="both")
    _legend(ax, series)
    return _png(fig)


def make_plots(data) -> dict[str, bytes | None]:
    """All plots of ``data`` by name (see :data:`PLOTS`)."""
    from reports.tradeoff import tradeoff_table

    return {
        "accuracy_vs_sparsity": accuracy_vs_sparsity(data.runs),
        "speedup_vs_sparsity": speedup_vs_sparsity(data.runs),
        "uap_vs_budget": uap_vs_budget(data.attacks, data.sweeps),
        "robust_acc_vs_budget": robust_acc_vs_budget(data.attacks, data.sweeps),
        "robustness_vs_sparsity": robustness_vs_sparsity(tradeoff_table(data)),
        "transfer_heatmaps": transfer_heatmaps(data.transfers),
        "roc_curves": roc_curves(data.fingerprints),
        "sr_psnr_vs_latency": sr_psnr_vs_latency(data.runs),
    }
