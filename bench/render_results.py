"""Render the measured JSON of the benchmarks as Markdown tables (used for RESULTS.md).

    python bench/render_results.py compression bench/results/compression.json
    python bench/render_results.py deploy bench/results/deploy.json
"""

from __future__ import annotations

import json
import sys

from tabulate import tabulate

COMPRESSION_COLS = ["model", "scheme", "target", "achieved", "acc_dense", "acc_before_ft", "acc", "macs_ratio",
                    "latency_ratio_proxy", "schemes_used", "seconds"]
DEPLOY_COLS = ["model", "batch", "scheme", "sparsity", "torch_dense_ms", "ort_dense_ms", "tvm_dense_ms",
               "tvm_sparse_ms", "torch_sparse_ms", "speedup_vs_tvm_dense", "speedup_vs_torch_dense",
               "speedup_vs_ort", "ideal", "sparse_layers", "max_abs_diff", "load_before"]


def _cell(value):
    if isinstance(value, float):
        return round(value, 4) if abs(value) < 10 else round(value, 2)
    if isinstance(value, list):
        return "/".join(str(round(v, 1)) if isinstance(v, float) else str(v) for v in value)
    return value


def render(kind: str, path: str) -> str:
    data = json.load(open(path))
    rows = data["rows"] if isinstance(data, dict) else data
    cols = COMPRESSION_COLS if kind == "compression" else DEPLOY_COLS
    return tabulate([[_cell(r.get(c)) for c in cols] for r in rows], headers=cols, tablefmt="github")


if __name__ == "__main__":
    print(render(sys.argv[1], sys.argv[2]))
