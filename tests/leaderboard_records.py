"""Hand-made result records for report tests (the report is under test, not the pipeline).

``write_runs(root)`` fills ``root`` with valid schema-1.1 records that have
every section a leaderboard reads (compression, TVM latency, UAP attacks at
several budgets, a PGD entry, a dense -> compressed -> deployed transfer
matrix, two fingerprint methods with ROC curves), one schema-1.0 record, and
the junk a real runs directory collects: a truncated record, a foreign JSON
object, a JSON list, a record of an unknown schema version and a binary file.
"""

from __future__ import annotations

import json
import math
import random
import zlib
from pathlib import Path
from typing import Any

JUNK = {
    "truncated/result.json": '{"schema_version": "1.1", "run_id": "x", "metr',
    "notes.json": json.dumps({"author": "someone", "purpose": "not a record"}),
    "list.json": json.dumps([1, 2, 3]),
    "future/result.json": json.dumps({"schema_version": "9.0", "run_id": "future"}),
    "binary.json": b"\x89PNG\r\n\x1a\n\x00\xff\xfe",
}


FP_FIELDS = {"auc": True, "tpr_at_1pct_fpr": True, "U": True, "R": True, "T": False, "false_positives": False,
             "queries": False, "generation_seconds": False}  # as fingerprints.summary flattens them


def make_record(model: str, compress: str, sparsity: float, backend: str, seed: int, *,
                version: str = "1.1", rng: random.Random | None = None,
                fingerprint_methods: tuple[str, ...] = ("ltrc-examples", "ipguard")) -> dict[str, Any]:
    rng = rng or random.Random(zlib.crc32(f"{model}/{compress}/{sparsity}/{backend}/{seed}".encode()))
    run_id = f"20260101T000000Z-{model}-{compress}-digits16-s{seed}-{backend}{int(sparsity * 100):02d}"
    dense_acc = 0.95 if model == "vgg16" else 0.9
    acc = dense_acc - (0.3 * sparsity ** 3 if compress != "none" else 0.0) - 0.01 * seed
    macs_dense = 3.1e8 if model == "vgg16" else 4.1e7
    deployment: dict[str, Any] = {"backend": backend, "artifact": None if backend == "torch" else "artifacts"}
    if backend == "tvm":
        speedup = 1.0 + 1.6 * sparsity + rng.uniform(-0.1, 0.1)
        deployment.update({"latency_ms": {"p50": 2.0 / speedup, "p90": 2.2 / speedup, "batch": 1, "threads": 2},
                           "dense_latency_ms": 2.0, "speedup_vs_dense": speedup, "compile_seconds": 40.0,
                           "best_dense_runtime": "onnxruntime", "best_dense_latency_ms": 1.5,
                           "speedup_vs_best_dense": 1.5 * speedup / 2.0,
                           "target": {"kind": "llvm", "mcpu": "znver4"}, "agreement_top1": 1.0})
    record: dict[str, Any] = {
        "schema_version": version,
        "run_id": run_id,
        "created_at": "2026-01-01T00:00:00+00:00",
        "suite_version": "0.1.0",
        "git_sha": None,
        "env": {"python": "3.11", "threads": 2, "device": "cpu"},
        "config": {"model": model, "source": "digits16", "compress": compress, "backend": backend,
                   "sparsity": sparsity, "seed": seed, "profile": "smoke", "threads": 2},
        "seeds": {"run": seed, "model_init": seed, "data_order": seed, "split": 11},
        "source": {"name": "digits16", "shape": [3, 16, 16], "num_classes": 10},
        "model": {"id": f"{model}-w0.25-digits16-s{seed}", "arch": model, "width": 0.25, "source": "digits16",
                  "params": 1.5e7 if model == "vgg16" else 2.7e5, "macs": macs_dense, "sha256": "0" * 64,
                  "cache_hit": True, "train": {}},
        "compression": ({"scheme": "none", "sparsity": 0.0} if compress == "none" else
                        {"method": compress, "target_sparsity": sparsity, "achieved_sparsity": sparsity - 0.004,
                         "macs": macs_dense * (1 - sparsity * 0.95), "macs_dense": macs_dense,
                         "macs_ratio": 1 - sparsity * 0.95, "acc_dense": dense_acc, "params": 1e5}),
        "deployment": deployment,
        "metrics": {"clean_acc": acc, "test_images": 360.0},
        "timings": {"total": 12.5},
        "higher_is_better": {"clean_acc": True},
    }
    if version == "1.0":
        return record
    # as attacks.stage writes them: every white-box model x every target, one transfer matrix per attack
    white = ["dense"] + ([] if compress == "none" else ["compressed"])
    targets = white + ([] if backend == "torch" else ["deployed"])
    attacks, transfer, metrics = [], {}, {}
    budgets = {"uap-pgd": (2 / 255, 4 / 255, 8 / 255, 10 / 255), "pgd": (8 / 255,)}
    for name, eps_list in budgets.items():
        for eps in eps_list:
            values = []
            for crafted in white:
                row = []
                for target in targets:
                    if name == "uap-pgd":
                        rate = 0.1 + 6 * eps + 0.2 * sparsity + (0.05 if target == "deployed" else 0.0)
                        rate -= 0.15 if crafted != target and "dense" in (crafted, target) else 0.0
                        robust = 1 - min(1.0, rate) * 0.95
                    else:
                        robust = 0.1 + 0.1 * (1 - sparsity) + (0.3 if crafted != target else 0.0)
                        rate = 1 - robust
                    rate = min(1.0, rate)
                    attacks.append({"id": f"{name}:{crafted}->{target}", "attack": name,
                                    "universal": name.startswith("uap"), "norm": "linf", "eps": eps,
                                    "source": "digits16", "crafted_on": crafted, "evaluated_on": target,
                                    "fooling_rate": rate, "asr": rate * 0.9, "misclassification_rate": 1 - robust,
                                    "robust_acc": robust, "achieved_norm": eps, "steps": 50, "grad_queries": 5000,
                                    "seconds": 3.0})
                    row.append(rate)
                values.append(row)
            if eps == 8 / 255:
                transfer[name] = {"rows": white, "cols": targets, "values": values, "metric": "fooling_rate",
                                  "norm": "linf", "eps": eps}
    final, nearest = targets[-1], white[-1]
    head = {a["attack"]: a for a in attacks
            if a["crafted_on"] == nearest and a["evaluated_on"] == final and a["eps"] >= 8 / 255}
    metrics = {"uap_pgd_fooling_rate": head["uap-pgd"]["fooling_rate"], "pgd_robust_acc": head["pgd"]["robust_acc"]}
    record["attacks"] = attacks
    record["transfer"] = transfer
    record["metrics"].update(metrics)
    record["higher_is_better"].update({"uap_pgd_fooling_rate": False, "pgd_robust_acc": True})
    fps = []
    for method, strength in zip(fingerprint_methods, (3.0, 1.2)):
        fpr = [i / 20 for i in range(21)]
        tpr = [min(1.0, 1 - (1 - f) ** (strength + rng.uniform(0, 0.5))) for f in fpr]
        auc = sum((fpr[i + 1] - fpr[i]) * (tpr[i + 1] + tpr[i]) / 2 for i in range(20))
        r, t = 0.9 - 0.2 * sparsity if strength > 2 else 0.7, 0.05 if strength > 2 else 0.3
        fps.append({"id": method, "R": r, "T": t, "U": r - t, "auc": auc, "tpr_at_1pct_fpr": tpr[1] * 0.8,
                    "threshold": 0.5, "false_positives": 0 if strength > 2 else 2, "n_positives": 12,
                    "n_negatives": 16, "queries": 100, "generation_seconds": 20.0 * strength,
                    "by_family": {}, "roc": {"fpr": fpr, "tpr": tpr}})
    record["fingerprints"] = fps
    for fp in fps:  # the record's flat fp_<method>_<field> metrics, as fingerprints.stage writes them
        for field, higher in FP_FIELDS.items():
            record["metrics"][f"fp_{fp['id']}_{field}"] = float(fp[field])
            record["higher_is_better"][f"fp_{fp['id']}_{field}"] = higher
    return record


GRID = [(m, c, s, b, seed)
        for m in ("vgg16", "resnet20")
        for c, sparsities in (("none", (0.0,)), ("block", (0.5, 0.75, 0.9)), ("pattern", (0.75,)))
        for s in sparsities
        for b in ("torch", "tvm")
        for seed in (0,)
        if not (c == "none" and b == "tvm")]


def write_runs(root: Path, *, junk: bool = True) -> list[dict[str, Any]]:
    """Write the records (and junk) under ``root``; returns the valid records written."""
    root.mkdir(parents=True, exist_ok=True)
    records = [make_record(*spec) for spec in GRID]
    records.append(make_record("resnet20", "nm", 0.5, "torch", 1, version="1.0"))
    for rec in records:
        d = root / rec["run_id"]
        d.mkdir()
        (d / "result.json").write_text(json.dumps(rec, indent=1))
        (d / "compressed").mkdir()
        (d / "compressed" / "manifest.json").write_text(json.dumps({"files": {}}))  # artifacts are not records
    if junk:
        for rel, content in JUNK.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
        (root / ".grid" / "staging" / "x").mkdir(parents=True)  # hidden: never read
        (root / ".grid" / "staging" / "x" / "result.json").write_text("{")
    return records


def finite(values) -> bool:
    return all(not (isinstance(v, float) and math.isnan(v)) for v in values)
