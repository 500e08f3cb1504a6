"""The leaderboard views, ranked: compression, robustness, compression x robustness, IP protection.

Each :class:`View` is a DataFrame with a ``rank`` column (1 = best on the
sort metric; ties share a rank; rows without the metric are unranked and come
last), identity columns and metric columns (floats).  Columns are fixed per
view so that CSVs keep stable names; a view without data is an empty table.
The compression x robustness view (:mod:`reports.tradeoff`) has one row per
(model, source, scheme, sparsity) rather than per run, so it has no
``run_id``; it is ranked only when ``--sort`` names one of its metrics, and
otherwise ordered by its identity columns.

Robustness columns, per run (a record metric of the same name wins).  The
"target" of a run is the model it ships: its deployment when its entries
have one, else the compressed model, else the dense one.

uap_fooling_rate       worst (highest) of the run's universal-attack headline
                       metrics (``<attack>_fooling_rate`` of each attack its
                       entries mark ``universal``, as ``attacks.stage`` writes
                       them), else of its universal entries evaluated on the
                       target
pgd_robust_acc         worst (lowest) robust accuracy of its PGD entries
                       (``attack == "pgd"``, not universal) evaluated on the
                       target (1 - misclassification rate when an entry gives
                       no robust_acc)

Further robustness columns: every run metric that :mod:`suite.core.metrics`
puts in the robustness view (per-attack headline metrics such as
``uap_pgd_fooling_rate``, ``autoattack_clean_acc`` beside
``autoattack_robust_acc``, black-box ``square_robust_acc`` /
``square_queries``); fingerprint metrics (``fp_*``) belong to the IP view
only.
transfer_fooling_rate  worst over the run's transfer matrices of the
                       dense -> deployed cell (dense -> compressed when there
                       is no deployed column), else the mean off-diagonal

Super-resolution runs (``task == "sr"``) are in the sr view only: their
attack / fingerprint entries never reach the robustness, compression x
robustness or IP tables (see :mod:`reports.load`).  The sr view adds, where
any SR run has them, the ``sr-uap`` PSNR-Y drop on the shipped model beside
its same-norm noise baseline (``sr_uap_drop_db``, ``sr_uap_noise_drop_db``)
and the ``sr-outputs`` fingerprint verdicts (``sr_fp_verdict``, text, from
``sr_fp_<role>_derived``) with the held-out false positives
(``sr_fp_heldout_false_positives`` of ``sr_fp_heldout_negatives``); a record
metric wins, else the run's entries give them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from reports.metrics import direction
from suite.core.metrics import LeaderboardView, as_float, view_of

IDENT = ["model", "source", "compress", "sparsity", "backend", "seed"]
COMPRESSION_METRICS = ["clean_acc", "acc_dense", "achieved_sparsity", "macs", "macs_ratio", "params",
                       "latency_ms", "speedup", "speedup_vs_best_dense", "best_dense_runtime"]
ROBUSTNESS_METRICS = ["clean_acc", "uap_fooling_rate", "pgd_robust_acc", "transfer_fooling_rate"]
TEXT_COLUMNS = {"best_dense_runtime"}  # facts shown beside the metrics, never ranked or averaged
IP_METRICS = ["R", "T", "U", "auc", "tpr_at_1pct_fpr", "false_positives", "queries", "generation_seconds"]
ATTACK_DETAIL = ["attack", "norm", "eps", "crafted_on", "evaluated_on", "fooling_rate", "asr",
                 "misclassification_rate", "robust_acc", "achieved_norm", "grad_queries", "seconds",
                 "headline", "eps_standard", "eps_multiple", "eps_origin", "black_box", "feedback",
                 "queries_per_image"]
# attack detail columns that older records never fill (the HTML page leaves them out when all empty)
OPTIONAL_DETAIL = ["eps_standard", "eps_multiple", "eps_origin", "feedback", "queries_per_image"]
# super-resolution runs (task sr): quality vs measured latency per model / compression / backend
SR_IDENT = ["model", "source", "scale", "compress", "sparsity", "backend", "seed"]
SR_METRICS = ["psnr_y", "ssim_y", "latency_ms", "speedup_vs_best_dense", "best_dense_runtime", "dense_psnr_y",
              "dense_ssim_y", "bicubic_psnr_y", "bicubic_ssim_y", "achieved_sparsity", "params", "max_abs_diff"]
# sr-uap / sr-outputs columns of the sr view, each shown only where some SR run has it
SR_ATTACK_METRICS = ["sr_uap_drop_db", "sr_uap_noise_drop_db"]
SR_FP_METRICS = ["sr_fp_verdict", "sr_fp_heldout_false_positives", "sr_fp_heldout_negatives"]
SR_FP_ROLES = ("compressed", "deployed")  # the copies sr-outputs gives a verdict on (as fingerprints.sr)
SR_NOTE = ("UAP drop: PSNR-Y loss (dB) of the shipped model under the sr-uap perturbation crafted on the dense "
           "model, beside same-norm random-sign noise; fingerprint: the sr-outputs verdict on each compressed / "
           "deployed copy and the false positives among held-out independent models.")
SR_DIRECTIONS = {"psnr_y": True, "ssim_y": True, "dense_psnr_y": True, "dense_ssim_y": True,
                 "bicubic_psnr_y": True, "bicubic_ssim_y": True, "max_abs_diff": False,
                 "sr_uap_drop_db": False, "sr_uap_noise_drop_db": False, "sr_fp_heldout_false_positives": False}
DEFAULT_SORT: dict[str, str | None] = {"compression": "clean_acc", "robustness": "uap_fooling_rate",
                                       "compression_robustness": None, "ip": "U", "sr": "psnr_y"}
TITLES = {"compression": "Compression", "robustness": "Robustness",
          "compression_robustness": "Compression x robustness", "ip": "IP protection",
          "sr": "Super-resolution: PSNR / SSIM vs measured latency"}


@dataclass
class View:
    """One ranked leaderboard table."""

    key: str               # compression | robustness | compression_robustness | ip | sr
    title: str
    table: Any             # pandas.DataFrame: rank, identity, metrics
    identity: list[str]
    metrics: list[str]
    sort_by: str | None    # the metric the rank is over (None: no rankable metric)
    higher_is_better: bool | None

    @property
    def empty(self) -> bool:
        return len(self.table) == 0

    @property
    def columns(self) -> list[str]:
        return ["rank", *self.identity, *self.metrics]


def parse_sort(text: str | None) -> tuple[str | None, bool | None]:
    """``"metric"``, ``"metric:asc"`` or ``"metric:desc"`` -> (metric, higher-first or None)."""
    if not text:
        return None, None
    name, _, order = text.partition(":")
    if order not in ("", "asc", "desc"):
        from suite.core.errors import ConfigError

        raise ConfigError(f"--sort takes METRIC, METRIC:asc or METRIC:desc, got {text!r}")
    return name.strip(), None if not order else order == "desc"


def rank(table, metric: str | None, higher: bool | None, tie_columns: list[str]):
    """Add ``rank`` and sort; rows lacking the metric are unranked and last."""
    import pandas as pd

    df = table.copy()
    if metric is None or metric not in df.columns or len(df) == 0:
        df.insert(0, "rank", pd.Series([math.nan] * len(df), index=df.index, dtype=float))
        return df.sort_values(tie_columns, kind="stable", na_position="last").reset_index(drop=True)
    values = pd.to_numeric(df[metric], errors="coerce")
    df.insert(0, "rank", values.rank(ascending=not higher, method="min"))
    key_cols = ["rank"] + [c for c in tie_columns if c in df.columns]
    return df.sort_values(key_cols, kind="stable", na_position="last").reset_index(drop=True)


def build_views(data, sort: str | None = None) -> list[View]:
    """The views of ``data`` (a :class:`reports.load.RunData`), in page order."""
    from reports.tradeoff import TRADEOFF_IDENTITY, TRADEOFF_METRICS, tradeoff_table

    sort_metric, sort_order = parse_sort(sort)
    hib = data.higher_is_better
    specs = [("compression", compression_table(data), COMPRESSION_METRICS, IDENT),
             ("robustness", robustness_table(data), ROBUSTNESS_METRICS, IDENT + ["attack_args"]),
             ("compression_robustness", tradeoff_table(data), list(TRADEOFF_METRICS), list(TRADEOFF_IDENTITY)),
             ("ip", ip_table(data), IP_METRICS, IDENT + ["method", "fingerprint_args"])]
    if has_sr(data):  # the sr view only where there are SR records (classification reports stay as they were)
        specs.append(("sr", sr_table(data), SR_METRICS, SR_IDENT))
        hib = {**SR_DIRECTIONS, **hib}
    views = []
    for key, table, metrics, ident in specs:
        extra = [c for c in table.columns if c not in ident and c not in metrics and c != "run_id"]
        metrics = metrics + extra
        metric = sort_metric if sort_metric in metrics else DEFAULT_SORT[key]
        higher = None
        if metric is not None:
            higher = sort_order if (sort_order is not None and metric == sort_metric) else direction(metric, hib)
            higher = True if higher is None else higher
        keep = ["run_id"] if "run_id" in table.columns else []
        ranked = rank(table[[*keep, *ident, *metrics]], metric, higher, ident)
        views.append(View(key, TITLES[key], ranked, ident, metrics, metric, higher))
    return views


def all_metrics(views: list[View]) -> set[str]:
    return {m for v in views for m in v.metrics}


# ------------------------------------------------------------------ tables
def _is_sr(runs):
    """Boolean mask of the SR runs (``task == "sr"``) of a runs table."""
    import pandas as pd

    if "task" not in runs.columns:
        return pd.Series(False, index=runs.index)
    return runs["task"] == "sr"


def has_sr(data) -> bool:
    return bool(_is_sr(data.runs).any())


def _metric_frame(runs, ident, metrics):
    """``runs``' run_id + ``ident`` columns, then ``metrics`` (numeric, text for TEXT_COLUMNS; NaN where absent)."""
    import pandas as pd

    out = pd.DataFrame({c: runs[c] if c in runs.columns else math.nan for c in ["run_id", *ident]})
    for m in metrics:
        if m not in runs.columns:
            out[m] = math.nan
        elif m in TEXT_COLUMNS:
            out[m] = runs[m]
        else:
            out[m] = pd.to_numeric(runs[m], errors="coerce")
    return out


def sr_table(data):
    """One row per SR run: PSNR / SSIM of the deployment beside its measured frame latency (see SR_METRICS)."""
    runs = data.runs[_is_sr(data.runs)]
    out = _metric_frame(runs, SR_IDENT, SR_METRICS)
    security = sr_security(data, runs)
    for c in SR_ATTACK_METRICS + SR_FP_METRICS:  # only where present (plain SR runs keep their columns)
        values = [row[c] for row in security]
        if any(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in values):
            out[c] = values
    return out.reset_index(drop=True)


def sr_security(data, runs) -> list[dict[str, Any]]:
    """Per SR run (rows of ``runs``): the sr-uap / sr-outputs columns of the sr view (module docstring)."""
    attacks: dict[Any, list[dict[str, Any]]] = {}
    fps: dict[Any, list[dict[str, Any]]] = {}
    for e in getattr(data, "sr_attacks", None) or []:
        attacks.setdefault(e.get("run_id"), []).append(e)
    for e in getattr(data, "sr_fingerprints", None) or []:
        fps.setdefault(e.get("run_id"), []).append(e)
    out = []
    for run in runs.to_dict("records"):
        rid = run.get("run_id")
        shipped = _sr_shipped(attacks.get(rid, []))
        fp = next(iter(fps.get(rid, [])), {})
        given = fp.get("verdicts") if isinstance(fp.get("verdicts"), dict) else {}
        verdicts = {}
        for role in SR_FP_ROLES:
            derived = as_float(run.get(f"sr_fp_{role}_derived"))
            if not math.isnan(derived):
                verdicts[role] = "derived" if derived >= 0.5 else "independent"
            elif isinstance(given.get(role), dict) and given[role].get("verdict"):
                verdicts[role] = str(given[role]["verdict"])
        out.append({
            "sr_uap_drop_db": _first(run.get("sr_uap_drop_db"), shipped.get("drop_db")),
            "sr_uap_noise_drop_db": _first(run.get("sr_uap_noise_drop_db"), shipped.get("noise_drop_db")),
            "sr_fp_verdict": ", ".join(f"{role} {v}" for role, v in verdicts.items()) or None,
            "sr_fp_heldout_false_positives": _first(run.get("sr_fp_heldout_false_positives"),
                                                    fp.get("heldout_false_positives")),
            "sr_fp_heldout_negatives": _first(fp.get("n_heldout_negatives")),
        })
    return out


def _sr_shipped(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's sr-uap entry on what it ships: marked ``shipped``, else deployed / compressed / dense."""
    if not entries:
        return {}
    marked = [e for e in entries if e.get("shipped") is True]
    if marked:
        return marked[0]
    for role in ("deployed", "compressed", "dense"):
        for e in entries:
            if e.get("evaluated_on") == role:
                return e
    return {}


def compression_table(data):
    runs = data.runs[~_is_sr(data.runs)]  # SR runs have their own view (sr_table)
    return _metric_frame(runs, IDENT, COMPRESSION_METRICS)


def robustness_table(data):
    """One row per run that has any robustness number (see module docstring)."""
    import pandas as pd

    runs, attacks = data.runs[~_is_sr(data.runs)], data.attacks  # SR runs: the sr view only
    from reports.load import IDENTITY

    extra_metrics = sorted(c for c in runs.columns if c not in ROBUSTNESS_METRICS and c not in IDENTITY
                           and view_of(c) is LeaderboardView.ROBUSTNESS)
    rows = []
    transfer_by_run: dict[str, list[dict[str, Any]]] = {}
    for t in data.transfers:
        transfer_by_run.setdefault(t["run_id"], []).append(t)
    for _, run in runs.iterrows():
        run_id = run.get("run_id")
        mine = attacks[attacks["run_id"] == run_id] if len(attacks) else attacks
        row = {"run_id": run_id, **{c: run.get(c) for c in IDENT}, "attack_args": run.get("attack_args", ""),
               "clean_acc": as_float(run.get("clean_acc"))}
        target = _target(mine)
        on_target = mine[mine["evaluated_on"] == target] if len(mine) else mine
        universal = _universal_attacks(mine)
        headline = [run.get(f"{a.replace('-', '_')}_fooling_rate") for a in universal]
        row["uap_fooling_rate"] = _first(run.get("uap_fooling_rate"), _max(headline),
                                         _agg(on_target, lambda e: e["universal"], "fooling_rate", max))
        row["pgd_robust_acc"] = _first(run.get("pgd_robust_acc"),
                                       _agg(on_target, lambda e: not e["universal"] and e["attack"] == "pgd",
                                            "robust_acc", min))
        row["transfer_fooling_rate"] = _first(run.get("transfer_fooling_rate"),
                                              transfer_summary(transfer_by_run.get(run_id, [])))
        for c in extra_metrics:
            row[c] = as_float(run.get(c))
        if any(not math.isnan(row[c]) for c in ROBUSTNESS_METRICS[1:] + extra_metrics) or len(mine):
            rows.append(row)
    return pd.DataFrame(rows, columns=["run_id", *IDENT, "attack_args", *ROBUSTNESS_METRICS, *extra_metrics])


def attack_details(data):
    """All attack entries with their run's identity (sorted, unranked)."""
    cols = ["run_id", *IDENT, *ATTACK_DETAIL]
    attacks = data.attacks
    if len(attacks) == 0:
        import pandas as pd

        return pd.DataFrame(columns=cols)
    return attacks[cols].sort_values(IDENT + ["attack", "eps", "crafted_on", "evaluated_on"], kind="stable",
                                     na_position="last") \
        .reset_index(drop=True)


def ip_table(data):
    """One row per (run, fingerprint method)."""
    import pandas as pd

    fps = data.fingerprints
    cols = ["run_id", *IDENT, "method", "fingerprint_args", *IP_METRICS]
    if len(fps) == 0:
        return pd.DataFrame(columns=cols)
    args = dict(zip(data.runs["run_id"], data.runs.get("fingerprint_args", [""] * len(data.runs))))
    out = fps.rename(columns={"id": "method"})
    out["fingerprint_args"] = out["run_id"].map(args).fillna("")
    for m in IP_METRICS:
        out[m] = pd.to_numeric(out[m], errors="coerce")
    return out[cols].reset_index(drop=True)


def transfer_summary(matrices: list[dict[str, Any]]) -> float:
    """Worst dense -> deployed (else dense -> compressed) cell over the matrices (see module docstring)."""
    cells = []
    for m in matrices:
        rows = [r.lower() for r in m["rows"]]
        cols = [c.lower() for c in m["cols"]]
        r = next((i for i, name in enumerate(rows) if "dense" in name), None)
        c = next((j for j, name in enumerate(cols) if "deploy" in name),
                 next((j for j, name in enumerate(cols) if "compress" in name), None))
        if r is not None and c is not None and not math.isnan(m["values"][r][c]):
            cells.append(float(m["values"][r][c]))
            continue
        off = [v for i, line in enumerate(m["values"]) for j, v in enumerate(line)
               if not math.isnan(v) and rows[i] != cols[j]]
        if off:
            cells.append(float(sum(off) / len(off)))
    return max(cells) if cells else math.nan


def filter_runs(data, expr: str | None):
    """Keep the runs for which ``expr`` (pandas ``DataFrame.query`` syntax on the runs table) holds."""
    if not expr:
        return data
    from dataclasses import replace

    from suite.core.errors import ConfigError

    try:
        kept = data.runs.query(expr, engine="python")
    except Exception as err:  # noqa: BLE001 - pandas raises many kinds for a bad expression
        cols = ", ".join(str(c) for c in data.runs.columns)
        raise ConfigError(f"bad --filter {expr!r}: {' '.join(str(err).split())} (columns: {cols})") from None
    ids = set(kept["run_id"])
    keep_rows = lambda df: df[df["run_id"].isin(ids)].reset_index(drop=True)  # noqa: E731
    records = [r for r in data.records if r.get("run_id") in ids]
    return replace(data, records=records, runs=kept.reset_index(drop=True), attacks=keep_rows(data.attacks),
                   fingerprints=keep_rows(data.fingerprints),
                   transfers=[t for t in data.transfers if t["run_id"] in ids],
                   sweeps=None if data.sweeps is None else keep_rows(data.sweeps),
                   sr_attacks=[e for e in data.sr_attacks if e.get("run_id") in ids],
                   sr_fingerprints=[e for e in data.sr_fingerprints if e.get("run_id") in ids],
                   sr_transfers=[t for t in data.sr_transfers if t.get("run_id") in ids])


# ----------------------------------------------------------------- helpers
def _first(*values: Any) -> float:
    for v in values:
        f = as_float(v)
        if not math.isnan(f):
            return f
    return math.nan


def _max(values: list[Any]) -> float:
    vals = [as_float(v) for v in values]
    vals = [v for v in vals if not math.isnan(v)]
    return max(vals) if vals else math.nan


def _target(attacks) -> str | None:
    """The model a run ships, among its entries' ``evaluated_on``."""
    if len(attacks) == 0:
        return None
    seen = {str(v) for v in attacks["evaluated_on"] if v is not None}
    for name in ("deployed", "compressed", "dense"):
        if name in seen:
            return name
    return next(iter(sorted(seen)), None)


def _universal_attacks(attacks) -> list[str]:
    """Names of the attacks whose entries are universal (one perturbation for all images)."""
    if len(attacks) == 0:
        return []
    return sorted({str(a) for a, u in zip(attacks["attack"], attacks["universal"]) if _true(u)})


def _agg(attacks, match, column: str, reduce) -> float:
    """Reduce ``column`` over entries (``{"attack": name, "universal": bool}``) that satisfy ``match``."""
    if len(attacks) == 0:
        return math.nan
    values = [float(v) for a, u, v in zip(attacks["attack"], attacks["universal"], attacks[column])
              if match({"attack": str(a), "universal": _true(u)}) and not math.isnan(as_float(v))]
    return float(reduce(values)) if values else math.nan


def _true(flag: Any) -> bool:
    """An entry's boolean field (numpy or Python bool) is set; missing (None / NaN) is not."""
    import numpy as np

    return isinstance(flag, (bool, np.bool_)) and bool(flag)
