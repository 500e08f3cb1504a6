"""Benchmark: every compression scheme at several sparsities, side by side.

For each model and (scheme, sparsity) it prunes the cached dense model with
the scheme's default recovery (one-shot + masked fine-tuning), then reports
test accuracy after recovery, accuracy before fine-tuning, the achieved
sparsity, the effective MACs ratio and the measured latency ratio of the plan
on the torch GEMM proxy (sum over layers of the compact-format kernel time
divided by the dense time; the TVM numbers replace this once the TVM backend
lands).  ``auto`` plans (rule and search) run at the same sparsities.

Results are appended to a JSON file as they finish (the run resumes where it
stopped) and printed as a Markdown table.

    python bench/bench_compression.py --models vgg16,resnet18 --width 0.5 --sparsities 0.5,0.75,0.9
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from compression import latency as lat
from compression.layers import list_layers
from suite.core import registries as reg
from suite.core.config import RunConfig
from suite.app.pipeline import get_trained_model, load_source, setup_runtime

SCHEMES = ["unstructured", "block", "block-punched", "pattern", "nm", "filter", "pas", "auto-rule", "auto-search"]


def plan_latency_ratio(model: torch.nn.Module, info: dict, shape) -> float | None:
    """Sum of per-layer proxy latencies of the chosen schemes / dense, from the record's per_layer."""
    per_layer = info.get("per_layer")
    if not per_layer or info.get("method") in ("filter", "pas"):
        return None  # channel pruning shrinks dense layers; see the TVM deploy benchmark
    layers = {l.name: l for l in list_layers(model, shape)}
    cache = lat.LatencyCache(None)
    dense = sparse = 0.0
    for row in per_layer:
        layer = layers.get(row["name"])
        if layer is None:
            continue
        d = cache.measure(layer, "dense", 0.0, {})
        dense += d
        if row["scheme"] == "dense":
            sparse += d
        else:
            r = row["block"][0] if isinstance(row.get("block"), list) else 8
            sparse += cache.measure(layer, row["scheme"], row["sparsity"], {"r": r})
    return sparse / dense if dense else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="vgg16,resnet18")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--source", default="digits16")
    p.add_argument("--sparsities", default="0.5,0.75,0.9")
    p.add_argument("--schemes", default=",".join(SCHEMES))
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: the profile's)")
    p.add_argument("--out", default="bench/results/compression.json")
    p.add_argument("--cache-dir", default=None)
    args = p.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(out.read_text()) if out.exists() else []
    done = {(r["model"], r["scheme"], r["target"]) for r in rows}
    for arch in args.models.split(","):
        cfg = RunConfig(model=arch, source=args.source, width=args.width, quiet=True,
                        **({"cache_dir": args.cache_dir} if args.cache_dir else {})).resolved()
        setup_runtime(cfg)
        source = load_source(cfg)
        trained = get_trained_model(cfg, source)
        for scheme in args.schemes.split(","):
            for s in [float(v) for v in args.sparsities.split(",")]:
                if scheme == "nm" and s != 0.5 and s != 0.75:
                    continue
                if (arch, scheme, s) in done:
                    continue
                settings: dict = {}
                name = scheme
                if scheme.startswith("auto-"):
                    name, settings["mapping"] = "auto", scheme.split("-", 1)[1]
                if scheme == "nm":
                    settings.update(n=2 if s == 0.5 else 1, m=4)
                if args.epochs is not None:
                    settings["epochs"] = args.epochs
                comp = reg.compressors.build(name, sparsity=s, **settings)
                start = time.perf_counter()
                kw = {"cache_dir": cfg.cache_dir} if name == "auto" else {}
                res = comp.compress(trained.model, source, seed=0, profile="default", quiet=True, **kw)
                seconds = time.perf_counter() - start
                info = res.info
                row = {"model": arch, "width": args.width, "scheme": scheme, "target": s,
                       "achieved": info.get("achieved_sparsity"), "acc_dense": info.get("acc_dense"),
                       "acc_before_ft": info.get("acc_pruned_before_finetune"),
                       "acc": _acc(res.model, source), "macs_ratio": info.get("macs_ratio"),
                       "latency_ratio_proxy": plan_latency_ratio(res.model, info, source.shape),
                       "schemes_used": info.get("schemes_used"), "seconds": round(seconds, 1)}
                rows.append(row)
                tmp = out.with_suffix(".tmp")
                tmp.write_text(json.dumps(rows, indent=1))
                os.replace(tmp, out)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print(table(rows))


def _acc(model, source) -> float:
    from suite.core.training import accuracy

    return accuracy(model, source.test)


def table(rows: list[dict]) -> str:
    from tabulate import tabulate

    cols = ["model", "scheme", "target", "achieved", "acc_dense", "acc_before_ft", "acc", "macs_ratio",
            "latency_ratio_proxy", "seconds"]
    body = [[r.get(c) if not isinstance(r.get(c), float) else round(r[c], 4) for c in cols] for r in rows]
    return tabulate(body, headers=cols, tablefmt="github")


if __name__ == "__main__":
    main()
