"""Benchmark: does filter reordering raise the compact kernel's speedup at equal sparsity?

Exact command (the RESULTS.md run):

    python bench/bench_reorder.py --model vgg16 --schemes unstructured:0.9,pattern:0.9,nm-1:4,block:0.8 \\
        --out bench/results/reorder.json

For each (scheme, sparsity) the same masked model (random weights, width 1.0,
32x32, every prunable layer masked as ``bench_deploy`` does for ``block``) is
compiled twice with our TVM kernels at batch 1 -- in the filters' own order
and with ``reorder=True`` (:mod:`compression.tvm_backend.reorder`) -- and both
are timed interleaved in one process with ONNX Runtime dense beside them
(2 threads, median of ``--repeats`` samples of 5 calls).  Reported: kept
columns summed over the sparse convs (before / after), convs on the compact
kernel, latency, and agreement with eager.
"""

from __future__ import annotations

import os

os.environ["TVM_NUM_THREADS"] = "2"  # must precede ``import tvm``

import argparse
import json
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_deploy as bd  # noqa: E402  (the same models, runners and interleaved timing)


def masks_for(model: torch.nn.Module, shape, scheme: str, sparsity: float, settings: dict) -> dict:
    from compression.layers import get_weight, prunable_layers
    from compression.schemes import make_scheme

    sch = make_scheme(scheme, **settings)
    out = {}
    for layer in prunable_layers(model, shape):
        weight = get_weight(model, layer.name).detach()
        if sch.check_applicable(layer.weight_shape):
            continue
        out[layer.name] = sch.mask(weight, sparsity)
    return out


def parse(spec: str) -> tuple[str, float, dict]:
    """``unstructured:0.9`` | ``pattern:0.9`` | ``block:0.8`` | ``nm-1:4``."""
    if spec.startswith("nm-"):
        n, m = (int(v) for v in spec[3:].split(":"))
        return "nm", 1.0 - n / m, {"n": n, "m": m}
    name, ratio = spec.split(":")
    return name, float(ratio), ({"r": 8, "c": 16} if name == "block" else {})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg16")
    p.add_argument("--schemes", default="unstructured:0.9,pattern:0.9,nm-1:4,block:0.8")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--tuning-db", default=None)
    p.add_argument("--out", default="bench/results/reorder.json")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(bd.THREADS)
    from compression.tvm_backend.backend import tuning_db_path
    from compression.tvm_backend.compile import compile_model
    from compression.tvm_backend.target import host_target_dict
    from compression.tvm_backend.tuning import TuningDB

    shape = (3, args.resolution, args.resolution)
    target = host_target_dict(bd.THREADS)
    db = TuningDB(args.tuning_db or tuning_db_path(None))
    model = bd.build(args.model)
    names = bd.conv_names(model, shape)
    x = np.random.default_rng(1).standard_normal((1, *shape)).astype(np.float32)
    workdir = tempfile.mkdtemp(prefix="bench_reorder_")
    ort = bd.ort_runner(model, x, workdir)
    rows = []
    for spec in args.schemes.split(","):
        scheme, sparsity, settings = parse(spec)
        sparse_model = bd.apply_masks(model, masks_for(model, shape, scheme, sparsity, settings))
        with torch.inference_mode():
            eager = sparse_model(torch.from_numpy(x)).numpy()
        runs, info = {}, {}
        for reorder in (False, True):
            res = compile_model(sparse_model, shape, target, batch=1, db=db, names=names, reorder=reorder)
            run = bd.TVMRun(res.executable, x)
            key = "reordered" if reorder else "own_order"
            runs[key] = run
            convs = [c for c in res.layers if c.op == "conv"]
            info[key] = {
                "kept_columns": sum(c.kept_columns for c in convs if c.kernel == "sparse"),
                "kept_before_reorder": sum((c.kept_before_reorder or c.kept_columns) for c in convs
                                           if c.kernel == "sparse"),
                "total_columns": sum(c.total_columns for c in convs),
                "reordered_layers": sum(1 for c in convs if c.row_permutation is not None),
                "sparse_layers": f"{sum(1 for c in convs if c.kernel == 'sparse')}/{len(convs)}",
                "max_abs_diff": float(np.abs(run.logits(x) - eager).max()),
            }
        samples = bd.time_interleaved({"ort_dense": ort, **runs}, args.repeats, 5, 3)
        ms = {k: statistics.median(v) for k, v in samples.items()}
        row = {"model": args.model, "scheme": scheme, "settings": settings, "sparsity": round(sparsity, 4),
               "ort_dense_ms": ms["ort_dense"], "own_order_ms": ms["own_order"], "reordered_ms": ms["reordered"],
               "speedup_from_reordering": ms["own_order"] / ms["reordered"], **{f"{k}": v for k, v in info.items()},
               "load": bd._load()}
        rows.append(row)
        print(f"[{scheme} {sparsity:.2f}] own order {ms['own_order']:.3f} ms ({info['own_order']['sparse_layers']} "
              f"sparse, {info['own_order']['kept_columns']} kept cols) vs reordered {ms['reordered']:.3f} ms "
              f"({info['reordered']['sparse_layers']} sparse, {info['reordered']['kept_columns']} kept cols, "
              f"{info['reordered']['reordered_layers']} reordered); ORT dense {ms['ort_dense']:.3f} ms; "
              f"load {row['load']}", flush=True)
    db.save()
    from suite.core.cache import atomic_write_text

    atomic_write_text(Path(args.out), json.dumps({"meta": {"command": " ".join(["python", *sys.argv])},
                                                  "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
