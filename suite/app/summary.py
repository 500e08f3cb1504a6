"""The human-readable summary ``suite run`` prints on stdout (``--json`` prints the JSON line instead).

:func:`format_summary` reads only the result record (any valid schema 1.0 /
1.1 record: sections a run did not produce are left out) and returns plain
aligned text: run directory, model and source, accuracy, compression,
deployment, each attack's headline metric (the noise baselines marked as
such), each fingerprint method's AUC / TPR@1%FPR / false positives, and the
total seconds.  It never fails on a missing field: the record is already
written when it is called.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

from tabulate import tabulate

NOISE_PREFIX = "noise"  # attacks named noise-* are baselines (attacks/entries.py)


def _num(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.{digits}f}"


def _eps(norm: Any, eps: Any) -> str:
    if not isinstance(eps, (int, float)):
        return "-"
    if norm == "linf" and 0 < eps * 255 < 64 and abs(eps * 255 - round(eps * 255)) < 1e-3:
        return f"{round(eps * 255)}/255"
    return f"{eps:.4g}"


def _accuracy(record: Mapping[str, Any]) -> str:
    metrics = record.get("metrics") or {}
    text = f"clean {_num(metrics.get('clean_acc'))}"
    compression = record.get("compression") or {}
    if _compressed(compression) and compression.get("acc_dense") is not None:
        text += f" (dense {_num(compression['acc_dense'])})"
    images = metrics.get("test_images")
    if isinstance(images, (int, float)):
        text += f" on {int(images)} test images"
    return text


def _compressed(compression: Mapping[str, Any]) -> bool:
    return (compression.get("method") or compression.get("scheme") or "none") != "none"


def _compression(compression: Mapping[str, Any]) -> str:
    if not _compressed(compression):
        return "none"
    parts = []
    achieved = compression.get("achieved_sparsity", compression.get("sparsity"))
    if achieved is not None:
        part = f"sparsity {_num(achieved)}"
        target = compression.get("target_sparsity")
        if target is not None:
            part += f" (target {_num(target)})"
        parts.append(part)
    if compression.get("macs_ratio") is not None:
        parts.append(f"MACs ratio {_num(compression['macs_ratio'])}")
    name = compression.get("method") or compression.get("scheme")
    return f"{name}: {', '.join(parts)}" if parts else str(name)


def _deployment(deployment: Mapping[str, Any]) -> str:
    parts = []
    latency = deployment.get("latency_ms")
    p50 = latency.get("p50") if isinstance(latency, Mapping) else latency
    if isinstance(p50, (int, float)):
        parts.append(f"latency p50 {p50:.3f} ms")
    speedup = deployment.get("speedup_vs_dense")
    if isinstance(speedup, (int, float)):
        parts.append(f"speedup {speedup:.2f}x vs dense")
    best, best_ms = deployment.get("best_dense_runtime"), deployment.get("best_dense_latency_ms")
    vs_best = deployment.get("speedup_vs_best_dense")
    if best and isinstance(vs_best, (int, float)) and isinstance(best_ms, (int, float)):
        verdict = "faster than" if vs_best > 1 else "SLOWER than"  # where the best dense runtime wins, say so
        parts.append(f"{vs_best:.2f}x vs the best dense runtime ({verdict} {best} at {best_ms:.3f} ms)")
    backend = str(deployment.get("backend", "?"))
    return f"{backend}: {', '.join(parts)}" if parts else backend


def _shipped_pair(entries: list[Mapping[str, Any]]) -> tuple[str, str]:
    """(nearest white box, what ships): the default pair of the headline numbers (attacks.stage)."""
    crafted = {e.get("crafted_on") for e in entries}
    evaluated = {e.get("evaluated_on") for e in entries}
    nearest = "compressed" if "compressed" in crafted else "dense"
    final = next((t for t in ("deployed", "compressed", "dense") if t in evaluated), "dense")
    return nearest, final


def _eps_of(e: Mapping[str, Any]) -> float:
    eps = e.get("eps")
    return float(eps) if isinstance(eps, (int, float)) else 0.0


def _headline(name: str, mine: list[Mapping[str, Any]], metrics: Mapping[str, Any], nearest: str,
              final: str) -> tuple[Mapping[str, Any], str]:
    """The entry behind an attack's headline metric, and that metric's field.

    The record's ``metrics[<attack>_<field>]`` decides when one entry carries
    exactly that value; otherwise the stage's rule: crafted on the nearest
    white box (black boxes: on what ships), evaluated on what ships, largest eps.
    """
    field = "fooling_rate" if mine[0].get("universal", True) else "robust_acc"
    value = metrics.get(f"{name.replace('-', '_')}_{field}")
    crafted = final if any(e.get("black_box") for e in mine) else nearest
    shipped = [e for e in mine if e.get("evaluated_on") == final] or mine
    ruled = [e for e in shipped if e.get("crafted_on") == crafted] or shipped
    exact = [e for e in ruled if value is not None and e.get(field) == value] or \
            [e for e in shipped if value is not None and e.get(field) == value]
    return max(exact or ruled, key=_eps_of), field


def _attack_rows(entries: list[Mapping[str, Any]], metrics: Mapping[str, Any]) -> list[list[str]]:
    nearest, final = _shipped_pair(entries)
    names = list(dict.fromkeys(str(e.get("attack")) for e in entries))
    names.sort(key=lambda n: n.startswith(NOISE_PREFIX))  # attacks first, then the baselines (stable)
    rows = []
    for name in names:
        main, field = _headline(name, [e for e in entries if str(e.get("attack")) == name], metrics, nearest,
                                final)
        note = ""
        if name.startswith(NOISE_PREFIX):
            note = "noise baseline"
        elif isinstance(main.get("queries_per_image"), (int, float)):
            note = f"{main['queries_per_image']:.0f} queries/image"
        rows.append([name, str(main.get("norm", "-")), _eps(main.get("norm"), main.get("eps")),
                     f"{main.get('crafted_on', '?')} -> {main.get('evaluated_on', '?')}", field,
                     _num(main.get(field)), note])
    if not any(row[-1] for row in rows):
        rows = [row[:-1] for row in rows]
    return rows


def _budget_line(entries: list[Mapping[str, Any]]) -> str:
    """Where the attacks' budgets come from: the source's standard one (and its reference) or given."""
    standard = [e for e in entries if e.get("eps_origin") == "standard"]
    if not standard:
        return "given by the user" if any(e.get("eps_origin") == "given" for e in entries) else ""
    seen = dict.fromkeys((str(e.get("norm")), e.get("eps_standard")) for e in standard)
    budgets = ", ".join(f"{norm} {_eps(norm, eps)}" for norm, eps in seen)
    reference = str(standard[0].get('budget_reference', '')).split(';')[0]
    return f"{budgets}: the source's standard ({reference})"


def _meta_line(entries: list[Mapping[str, Any]]) -> str:
    """Which meta-trained attacker the meta attacks adapted: shipped (held out how) or trained in the run."""
    seen = []
    for e in entries:
        origin = e.get("meta_origin")
        if not origin:
            continue
        if origin == "shipped":
            text = (f"{e['attack']}: shipped {e.get('meta_name')} (tasks: {', '.join(e.get('meta_task_sources', []))}"
                    f"; {', '.join(e.get('meta_task_archs', []))}; held out: {e.get('held_out_source')}"
                    + (" and this architecture" if e.get("held_out_arch") else "") + ")")
        else:
            text = f"{e['attack']}: meta-trained for this run ({len(e.get('meta_tasks', []))} tasks, cached)"
        if text not in seen:
            seen.append(text)
    return "; ".join(seen)


def _sweep_rows(entries: list[Mapping[str, Any]], metrics: Mapping[str, Any]) -> list[list[str]]:
    nearest, final = _shipped_pair(entries)
    rows = []
    for name in dict.fromkeys(str(e.get("attack")) for e in entries):
        if name.startswith(NOISE_PREFIX):
            continue
        main, field = _headline(name, [e for e in entries if str(e.get("attack")) == name], metrics, nearest,
                                final)
        points = [p for p in main.get("sweep") or [] if isinstance(p, Mapping)]
        if points:
            cells = [f"{_eps(main.get('norm'), p.get('eps'))}: {_num(p.get(field))} ({_num(p.get('noise_fooling_rate'))})"
                     if field == "fooling_rate" else f"{_eps(main.get('norm'), p.get('eps'))}: {_num(p.get(field))}"
                     for p in points]
            rows.append([name, field, *cells])
    return rows


def _fingerprint_rows(entries: list[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for e in entries:
        negatives = e.get("n_evaluation_negatives", e.get("n_negatives"))
        fp = e.get("false_positives")
        fp_text = "-" if fp is None else (f"{fp}/{negatives}" if negatives is not None else str(fp))
        rows.append([str(e.get("id", "?")), _num(e.get("auc")), _num(e.get("tpr_at_1pct_fpr")), fp_text])
    return rows


KEY_WIDTH = len("compression") + 2  # the key column of every "key  value" line


def _pairs(rows: list[list[str]]) -> str:
    return "\n".join(f"{key:<{KEY_WIDTH - 1}} {value}" for key, value in rows)  # a space even after a long key


def _indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + line for line in text.splitlines())


def format_summary(run_dir: str | os.PathLike, record: Mapping[str, Any]) -> str:
    """The summary of one run as lines of plain text (no trailing newline)."""
    model = record.get("model") or {}
    source = record.get("source") or {}
    model_text = str(model.get("id", "?"))
    details = [str(model[k]) for k in ("arch",) if model.get(k)]
    if model.get("width") is not None:
        details.append(f"width {model['width']:g}" if isinstance(model["width"], (int, float))
                       else f"width {model['width']}")
    if details:
        model_text += f" ({', '.join(details)})"
    head = [
        ["run", str(run_dir)],
        ["model", model_text],
        ["source", str(source.get("name", model.get("source", "?")))],
        ["accuracy", _accuracy(record)],
        ["compression", _compression(record.get("compression") or {})],
        ["deployment", _deployment(record.get("deployment") or {})],
    ]
    total = (record.get("timings") or {}).get("total")
    blocks = [_pairs(head)]
    attacks = [e for e in record.get("attacks") or [] if isinstance(e, Mapping)]
    if attacks:
        rows = _attack_rows(attacks, record.get("metrics") or {})
        headers = ["attack", "norm", "eps", "crafted -> evaluated", "metric", "value", "note"][:len(rows[0])]
        table = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
        blocks.append(f"attacks:\n{_indent(table)}")
        budget = _budget_line(attacks)
        if budget:
            blocks.append(_pairs([["budget", budget]]))
        meta = _meta_line(attacks)
        if meta:
            blocks.append(_pairs([["meta attacker", meta]]))
        sweeps = _sweep_rows(attacks, record.get("metrics") or {})
        if sweeps:
            blocks.append("budget sweep (metric at each eps, uniform noise at the same eps in brackets):\n"
                          + _indent(tabulate(sweeps, tablefmt="plain", disable_numparse=True)))
    fingerprints = [e for e in record.get("fingerprints") or [] if isinstance(e, Mapping)]
    if fingerprints:
        table = tabulate(_fingerprint_rows(fingerprints), headers=["method", "AUC", "TPR@1%FPR", "false positives"],
                         tablefmt="simple", disable_numparse=True)
        blocks.append(f"fingerprints:\n{_indent(table)}")
    blocks.append(_pairs([["total", f"{total:.1f} s" if isinstance(total, (int, float)) else "-"]]))
    return "\n".join(blocks)
