"""Per-layer latency tables: the PyTorch proxy (``torch-gemm-proxy``).

The ``auto`` planner scores candidates on our TVM kernels by default
(:mod:`compression.tvm_backend.latency_table`); this module is the
backend-free alternative (``latency_backend="torch-gemm-proxy"``) and the
dense fallback for layers the TVM kernels do not take.  It is PyTorch on this CPU:
each candidate (scheme, ratio) of a layer runs its compact computation for a
batch-1 im2col GEMM and is timed against the dense GEMM of the same layer:

* dense: ``W [Co, K] @ X [K, N]`` (``torch.mm``);
* row-block gather (``block``, ``block-punched``): ``bmm(values [nb, r, K_keep],
  X[col_idx] [nb, K_keep, N])`` -- exactly the compact format the compiler consumes;
* per-row gather (``pattern``, ``nm``): the same with ``r = 1``;
* ``unstructured``: ``torch.sparse.mm`` with the CSR weight.

Times are medians over ``repeats`` runs after warm-up, in milliseconds.  They
are machine-dependent measurements, never constants; the table records the
backend name so a plan says what it was scored on.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from compression.layers import LayerInfo

BACKEND = "torch-gemm-proxy"


def _median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return 1e3 * times[len(times) // 2]


def dense_gemm_ms(layer: LayerInfo, repeats: int = 15) -> float:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(layer.rows, layer.cols, generator=gen)
    x = torch.randn(layer.cols, layer.spatial * max(1, layer.groups), generator=gen)
    if layer.depthwise:
        w = torch.randn(layer.groups, 1, layer.cols, generator=gen)
        x = torch.randn(layer.groups, layer.cols, layer.spatial, generator=gen)
        return _median_ms(lambda: torch.bmm(w, x), repeats)
    return _median_ms(lambda: torch.mm(w, x), repeats)


def gather_gemm_ms(layer: LayerInfo, r: int, keep_cols: int, repeats: int = 15) -> float:
    """Row-block gather GEMM with ``r`` rows per block and ``keep_cols`` kept columns."""
    gen = torch.Generator().manual_seed(0)
    nb = -(-layer.rows // r)
    keep_cols = max(1, min(layer.cols, keep_cols))
    values = torch.randn(nb, r, keep_cols, generator=gen)
    idx = torch.stack([torch.randperm(layer.cols, generator=gen)[:keep_cols].sort().values for _ in range(nb)])
    x = torch.randn(layer.cols, layer.spatial, generator=gen)
    return _median_ms(lambda: torch.bmm(values, x[idx]), repeats)


def csr_ms(layer: LayerInfo, density: float, repeats: int = 15) -> float:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(layer.rows, layer.cols, generator=gen)
    w = w * (torch.rand(layer.rows, layer.cols, generator=gen) < density)
    csr = w.to_sparse_csr()
    x = torch.randn(layer.cols, layer.spatial, generator=gen)
    return _median_ms(lambda: torch.sparse.mm(csr, x), repeats)


def candidate_ms(layer: LayerInfo, scheme: str, sparsity: float, settings: dict, repeats: int = 15) -> float:
    """Measured latency of one layer under (scheme, sparsity) with the torch proxy."""
    keep = max(1, int(round(layer.cols * (1.0 - sparsity))))
    if scheme == "dense":
        return dense_gemm_ms(layer, repeats)
    if scheme in ("block", "block-punched"):
        return gather_gemm_ms(layer, int(settings.get("r", 8)), keep, repeats)
    if scheme in ("pattern", "nm"):
        return gather_gemm_ms(layer, 1, keep, repeats)
    if scheme == "unstructured":
        return csr_ms(layer, 1.0 - sparsity, repeats)
    raise ValueError(f"no latency proxy for scheme {scheme!r}")


class LatencyCache:
    """Measured per-layer latencies persisted as JSON, keyed by shape, candidate and machine.

    Measurements are noisy; caching them makes a search reproducible from its
    seed on the same machine (same table -> same plan) and saves re-measuring.
    The key holds the backend, CPU model and thread count, so a table measured
    elsewhere is never reused.
    """

    def __init__(self, path: str | None) -> None:
        import json
        import os

        self.path = path
        self.entries: dict[str, float] = {}
        self.dirty = False
        if path and os.path.exists(path):
            try:
                data = json.loads(open(path).read())
                self.entries = {str(k): float(v) for k, v in data.get("entries", {}).items()}
            except (OSError, ValueError, AttributeError, TypeError):
                self.entries = {}  # unreadable cache: re-measure and overwrite

    @staticmethod
    def key(layer: LayerInfo, scheme: str, sparsity: float, settings: dict) -> str:
        from suite.core.record import cpu_name

        r = settings.get("r", 1) if scheme in ("block", "block-punched") else 1
        return (f"{BACKEND}|{cpu_name()}|t{torch.get_num_threads()}|{layer.kind}|{layer.rows}x{layer.cols}"
                f"x{layer.spatial}|g{layer.groups}|{scheme}|r{r}|s{sparsity:.4f}")

    backend = BACKEND
    drops_unaccelerated = False  # a proxy, not the deployment: its slower candidates stay in the table

    def measure(self, layer: LayerInfo, scheme: str, sparsity: float, settings: dict, repeats: int = 15, *,
                mask: torch.Tensor | None = None) -> float:
        """Milliseconds of ``layer`` under the candidate (the proxy models the scheme, not ``mask``)."""
        k = self.key(layer, scheme, sparsity, settings)
        if k not in self.entries:
            self.entries[k] = candidate_ms(layer, scheme, sparsity, settings, repeats)
            self.dirty = True
        return self.entries[k]

    def save(self) -> None:
        """Merge the measured entries into the file (locked read-merge-write; other writers' entries kept)."""
        from suite.core.files import update_json

        def merge(current: Any) -> dict[str, Any]:
            theirs = current.get("entries") if isinstance(current, dict) else None
            kept: dict[str, float] = {}
            for k, v in (theirs.items() if isinstance(theirs, dict) else ()):
                try:
                    kept[str(k)] = float(v)
                except (TypeError, ValueError):
                    continue  # a malformed entry: re-measured when needed
            return {"backend": BACKEND, "entries": {**kept, **self.entries}}

        if self.path and self.dirty:
            self.entries = update_json(self.path, merge)["entries"]
            self.dirty = False
