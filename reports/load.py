"""Records -> pandas tables, skipping what is not a usable record.

``load_runs(DIR)`` looks at every ``result.json`` below ``DIR`` (hidden
directories such as ``.grid`` and half-written ``.<run_id>.tmp-*`` are not
entered) and at every other ``*.json`` directly in ``DIR`` (a record copied
there flat still counts).  Each file is read with
:func:`suite.core.record.load_record` (schema 1.0 and 1.1); a file that is not
JSON, not an object, of another schema version or lacking record keys is
*skipped* with the reason -- never an exception.

Tables (floats stay floats; formatting happens in the writers):

runs          one row per record: identity columns (``IDENTITY``), compression
              and deployment facts (``RUN_FACTS``), then every metric under its
              own name
attacks       one row per attack entry, with the run's identity columns (the
              entry's own ``source`` is ``attack_source``; ``headline`` marks
              the run's headline pair: a white-box entry crafted on the run's
              compressed model -- dense when it has none -- and evaluated on
              what it ships: deployed, else compressed, else dense; a
              black-box entry, ``black_box`` true, crafted on and evaluated
              on what it ships).  Budget fields ``eps_standard`` (the source's
              standard budget for the entry's norm), ``eps_multiple`` (eps /
              eps_standard), ``eps_origin`` ("standard" or "given") and
              ``budget_reference`` are NaN / None in records without them;
              ``black_box`` is a bool, ``feedback`` and
              ``queries_per_image`` (black-box query accounting) NaN / None
              for white-box entries
sweeps        one row per budget point of an entry's ``sweep`` (see
              :mod:`reports.sweeps`), marked ``headline`` like its entry
fingerprints  one row per fingerprint entry (``roc`` kept as an object column)
transfers     list of ``{run_id, label, name, rows, cols, values, metric}``

The attack, sweep, fingerprint and transfer tables are classification only:
the entries of super-resolution records (``task == "sr"``, or an entry marked
``"task": "sr"``: ``sr-uap`` attacks, ``sr-outputs`` fingerprints) have none
of their columns (fooling rate, TPR ...) and are kept apart, raw, in
``sr_attacks`` / ``sr_fingerprints`` (lists of ``{"run_id", **entry}``) and
``sr_transfers``; the SR view reads its run's ``sr_uap_*`` / ``sr_fp_*``
metrics (see :func:`reports.views.sr_table`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reports.sweeps import SWEEP_COLUMNS, eps_multiple, sweep_rows
from suite.core.metrics import as_float, is_missing

IDENTITY = ("run_id", "model", "source", "compress", "sparsity", "backend", "seed", "profile", "width",
            "target", "attack_args", "fingerprint_args", "model_id", "created_at", "schema_version", "job_id")
RUN_FACTS = ("achieved_sparsity", "params", "params_dense", "macs", "macs_dense", "macs_ratio", "acc_dense",
             "latency_ms", "latency_p90_ms", "dense_latency_ms", "speedup", "speedup_vs_best_dense",
             "best_dense_runtime", "agreement_top1", "compile_seconds",
             "total_seconds")
ATTACK_FIELDS = ("id", "attack", "universal", "norm", "eps", "attack_source", "crafted_on", "evaluated_on", "fooling_rate", "asr",
                 "misclassification_rate", "robust_acc", "achieved_norm", "steps", "grad_queries", "seconds",
                 "eps_standard", "eps_multiple", "eps_origin", "budget_reference", "black_box", "feedback",
                 "queries_per_image")
ATTACK_FLOATS = ("eps", "fooling_rate", "asr", "misclassification_rate", "robust_acc", "achieved_norm", "steps",
                 "grad_queries", "seconds", "eps_standard", "eps_multiple", "queries_per_image")
FINGERPRINT_FIELDS = ("id", "R", "T", "U", "auc", "tpr_at_1pct_fpr", "threshold", "false_positives",
                      "n_positives", "n_negatives", "queries", "generation_seconds")
# identity columns copied into the attack and fingerprint tables
ROW_IDENTITY = ("run_id", "model", "source", "compress", "sparsity", "backend", "seed", "clean_acc")


@dataclass
class RunData:
    """Everything the report writers need."""

    records: list[dict[str, Any]]
    paths: list[Path]
    skipped: list[tuple[Path, str]]
    runs: Any           # pandas.DataFrame
    attacks: Any        # pandas.DataFrame
    fingerprints: Any   # pandas.DataFrame
    transfers: list[dict[str, Any]]
    failed_jobs: list[dict[str, Any]] = field(default_factory=list)
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    sweeps: Any = None  # pandas.DataFrame (reports.sweeps.SWEEP_COLUMNS); None: not built
    # super-resolution entries (task sr), kept out of the classification tables above: {"run_id", **entry}
    sr_attacks: list[dict[str, Any]] = field(default_factory=list)
    sr_fingerprints: list[dict[str, Any]] = field(default_factory=list)
    sr_transfers: list[dict[str, Any]] = field(default_factory=list)


def candidate_files(root: Path) -> list[Path]:
    """``result.json`` files below ``root`` plus loose ``*.json`` directly in it, sorted."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        if here == root:
            found.extend(here / f for f in sorted(filenames) if f.endswith(".json") and not f.startswith("."))
        elif "result.json" in filenames:
            found.append(here / "result.json")
            dirnames[:] = []  # a run directory: its artifacts hold no further records
    return found


def read_record(path: Path) -> tuple[dict[str, Any] | None, str]:
    """``(record, "")`` or ``(None, reason)``; never raises for bad content."""
    from suite.core.record import load_record

    try:
        return dict(load_record(path)), ""
    except json.JSONDecodeError as err:
        return None, f"not valid JSON ({err.msg} at line {err.lineno})"
    except UnicodeDecodeError:
        return None, "not a text file"
    except OSError as err:
        return None, f"unreadable ({err.strerror or err})"
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        return None, f"not a suite record ({' '.join(str(err).split())})"


def load_runs(root: str | os.PathLike) -> RunData:
    """Load every usable record below ``root`` into tables (see module docstring)."""
    from suite.core.errors import DataError

    base = Path(root)
    if not base.is_dir():
        raise DataError(f"runs directory {base} does not exist (expected DIR/<run_id>/result.json)")
    records, paths, skipped = [], [], []
    seen: set[str] = set()
    for path in candidate_files(base):
        record, reason = read_record(path)
        if record is None:
            skipped.append((path, reason))
            continue
        if record["run_id"] in seen:
            skipped.append((path, f"duplicate of run {record['run_id']} already loaded"))
            continue
        seen.add(record["run_id"])
        record["_job"] = _job_info(path)
        records.append(record)
        paths.append(path)
    return tables(records, paths, skipped, failed_jobs=_failed_jobs(base))


def _job_info(result_path: Path) -> dict[str, Any]:
    job = result_path.parent / "job.json"
    if result_path.name != "result.json" or not job.is_file():
        return {}
    try:
        info = json.loads(job.read_text())
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _failed_jobs(root: Path) -> list[dict[str, Any]]:
    out = []
    for f in sorted((root / ".grid" / "failed").glob("*.json")):
        try:
            info = json.loads(f.read_text())
            out.append({"job_id": info.get("job_id"), "name": info.get("name"), "error": info.get("error"),
                        "attempts": info.get("attempts")})
        except (OSError, ValueError, AttributeError):
            continue
    return out


# ------------------------------------------------------------------ tables
def _section(record: dict[str, Any], key: str) -> dict[str, Any]:
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def run_row(record: dict[str, Any]) -> dict[str, Any]:
    """Flatten one record into a row of the runs table."""
    config = _section(record, "config")
    model = _section(record, "model")
    comp = _section(record, "compression")
    dep = _section(record, "deployment")
    source = _section(record, "source")
    latency = dep.get("latency_ms")
    target = dep.get("target", config.get("target"))
    if isinstance(target, dict):
        target = target.get("kind", json.dumps(target, sort_keys=True))
    sparsity = comp.get("target_sparsity", comp.get("sparsity", config.get("sparsity")))
    compress = comp.get("method", comp.get("scheme", config.get("compress")))
    dense = compress in ("none", "dense")  # the uncompressed model: its own reference
    metrics = _section(record, "metrics")
    row: dict[str, Any] = {
        "run_id": record.get("run_id"),
        "model": model.get("arch", config.get("model")),
        "source": source.get("name", config.get("source")),
        "compress": compress,
        "sparsity": as_float(sparsity) if sparsity is not None else 0.0,
        "backend": dep.get("backend", config.get("backend")),
        "seed": config.get("seed", _section(record, "seeds").get("run")),
        "profile": config.get("profile"),
        "width": as_float(model.get("width", config.get("width"))),
        "target": None if target is None else str(target),
        "attack_args": settings_text(config.get("attack_args")),
        "fingerprint_args": settings_text(config.get("fingerprint_args")),
        "model_id": model.get("id"),
        "created_at": record.get("created_at"),
        "schema_version": record.get("schema_version"),
        "job_id": record.get("_job", {}).get("job_id"),
        "achieved_sparsity": as_float(comp.get("achieved_sparsity", 0.0 if dense else None)),
        "params": as_float(comp.get("params", model.get("params"))),
        "params_dense": as_float(comp.get("params_dense", model.get("params"))),
        "macs": as_float(comp.get("macs", model.get("macs"))),
        "macs_dense": as_float(comp.get("macs_dense", model.get("macs"))),
        "macs_ratio": as_float(comp.get("macs_ratio", 1.0 if dense else None)),
        "acc_dense": as_float(comp.get("acc_dense", metrics.get("clean_acc") if dense else None)),
        "latency_ms": as_float(latency.get("p50") if isinstance(latency, dict) else latency),
        "latency_p90_ms": as_float(latency.get("p90") if isinstance(latency, dict) else None),
        "dense_latency_ms": as_float(dep.get("dense_latency_ms")),
        "speedup": as_float(dep.get("speedup_vs_dense")),
        # against the fastest dense runtime measured beside it (torch / ONNX Runtime / TVM dense), named
        "speedup_vs_best_dense": as_float(dep.get("speedup_vs_best_dense")),
        "best_dense_runtime": dep.get("best_dense_runtime"),
        "agreement_top1": as_float(dep.get("agreement_top1")),
        "compile_seconds": as_float(dep.get("compile_seconds")),
        "total_seconds": as_float(_section(record, "timings").get("total")),
        # classification | sr (records before the task field are classification); scale: sr only
        "task": str(record.get("task") or config.get("task") or "classification"),
        "scale": as_float(config.get("scale", source.get("scale"))),
    }
    for name, value in metrics.items():
        key = name if name not in row else f"metric_{name}"
        row[key] = as_float(value)
    return row


def tables(records: list[dict[str, Any]], paths: list[Path] | None = None,
           skipped: list[tuple[Path, str]] | None = None,
           failed_jobs: list[dict[str, Any]] | None = None) -> RunData:
    """Build the tables from already loaded records."""
    import pandas as pd

    rows = [run_row(r) for r in records]
    runs = pd.DataFrame(rows)
    if runs.empty:
        runs = pd.DataFrame(columns=list(IDENTITY + RUN_FACTS) + ["clean_acc"])
    attack_rows, fingerprint_rows, transfers, sweep_rows_ = [], [], [], []
    sr_attacks: list[dict[str, Any]] = []
    sr_fingerprints: list[dict[str, Any]] = []
    sr_transfers: list[dict[str, Any]] = []
    higher: dict[str, bool] = {}
    for record, row in zip(records, rows):
        ident = {k: row.get(k) for k in ROW_IDENTITY}
        hib = record.get("higher_is_better")
        if isinstance(hib, dict):
            higher.update({str(k): bool(v) for k, v in hib.items()})
        sr_run = row.get("task") == "sr"
        is_sr = lambda e: sr_run or e.get("task") == "sr"  # noqa: E731 - an SR entry: not a classification row
        entries = [e for e in (record.get("attacks") or []) if isinstance(e, dict)]
        sr_attacks.extend({"run_id": row["run_id"], **e} for e in entries if is_sr(e))
        entries = [e for e in entries if not is_sr(e)]
        crafted = {str(e.get("crafted_on")) for e in entries}
        evaluated = {str(e.get("evaluated_on")) for e in entries}
        nearest = "compressed" if "compressed" in crafted else "dense"
        final = next((t for t in ("deployed", "compressed", "dense") if t in evaluated), None)
        for entry in entries:
            a = {**ident, **{f: entry.get(f) for f in ATTACK_FIELDS}}
            a["attack_source"] = entry.get("source")  # the images the attack used (may differ from the run's)
            for f in ATTACK_FLOATS:
                a[f] = as_float(a[f])
            a["eps_multiple"] = eps_multiple(a["eps"], a["eps_standard"], a["eps_multiple"])
            if math.isnan(a["robust_acc"]) and not math.isnan(a["misclassification_rate"]):
                a["robust_acc"] = 1.0 - a["misclassification_rate"]
            a["id"] = str(entry.get("id", "?"))
            # attacks.stage ids read "<attack>:<crafted_on>-><evaluated_on>"; the attack name is their head
            a["attack"] = str(entry.get("attack") or a["id"].split(":", 1)[0])
            a["universal"] = entry.get("universal") is True  # one perturbation for all images (a UAP)
            a["black_box"] = entry.get("black_box") is True  # queries forward passes only
            a["headline"] = is_headline(entry, nearest, final)
            attack_rows.append(a)
            sweep_rows_.extend(sweep_rows(entry, row, attack=a["attack"], headline=a["headline"]))
        for entry in record.get("fingerprints") or []:
            if not isinstance(entry, dict):
                continue
            if is_sr(entry):
                sr_fingerprints.append({"run_id": row["run_id"], **entry})
                continue
            f = {**ident, **{k: entry.get(k) for k in FINGERPRINT_FIELDS}}
            for k in FINGERPRINT_FIELDS[1:]:
                f[k] = as_float(f[k])
            f["id"] = str(entry.get("id", "?"))
            roc = entry.get("roc")
            f["roc"] = roc if isinstance(roc, dict) and "fpr" in roc and "tpr" in roc else None
            fingerprint_rows.append(f)
        transfer = record.get("transfer")
        if isinstance(transfer, dict):
            for name, matrix in transfer.items():
                if _valid_matrix(matrix):
                    (sr_transfers if sr_run else transfers).append({"run_id": row["run_id"], "label": run_label(row), "name": str(name),
                                      "rows": [str(r) for r in matrix["rows"]],
                                      "cols": [str(c) for c in matrix["cols"]],
                                      "values": [[as_float(v) for v in line] for line in matrix["values"]],
                                      "metric": str(matrix.get("metric", "fooling_rate"))})
    attacks = pd.DataFrame(attack_rows, columns=list(ROW_IDENTITY) + list(ATTACK_FIELDS) + ["headline"])
    fingerprints = pd.DataFrame(fingerprint_rows, columns=list(ROW_IDENTITY) + list(FINGERPRINT_FIELDS) + ["roc"])
    sweeps = pd.DataFrame(sweep_rows_, columns=list(SWEEP_COLUMNS))
    return RunData(records, list(paths or []), list(skipped or []), runs, attacks, fingerprints, transfers,
                   list(failed_jobs or []), higher, sweeps, sr_attacks, sr_fingerprints, sr_transfers)


def is_headline(entry: dict[str, Any], nearest: str, final: str | None) -> bool:
    """Whether ``entry`` is its run's headline pair: evaluated on what the run ships (``final``), crafted
    on the nearest white-box model (``nearest``) -- or, for a black-box entry, on what it ships too."""
    crafted = final if entry.get("black_box") is True else nearest
    return entry.get("crafted_on") == crafted and entry.get("evaluated_on") == final


def _valid_matrix(matrix: Any) -> bool:
    if not isinstance(matrix, dict):
        return False
    rows, cols, values = matrix.get("rows"), matrix.get("cols"), matrix.get("values")
    if not (isinstance(rows, list) and isinstance(cols, list) and isinstance(values, list)):
        return False
    return len(values) == len(rows) and all(isinstance(v, list) and len(v) == len(cols) for v in values)


def settings_text(settings: Any) -> str:
    """``{"eps": 0.03, "steps": 10}`` -> ``"eps=0.03,steps=10"`` (sorted; "" for none)."""
    if not isinstance(settings, dict):
        return ""
    return ",".join(f"{k}={settings[k]}" for k in sorted(settings))


def run_label(row: dict[str, Any]) -> str:
    """Short human label of a run: ``model/compress@sparsity/backend/s<seed>``."""
    sparsity = row.get("sparsity")
    s = "" if is_missing(sparsity) else f"@{sparsity:g}"
    return f"{row.get('model')}/{row.get('compress')}{s}/{row.get('backend')}/s{row.get('seed')}"
