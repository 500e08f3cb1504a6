"""Per-layer latency table measured on our TVM kernels: what the ``auto`` planner scores candidates with.

The planner (:mod:`compression.mapping`) asks, for every prunable layer and
every candidate (scheme, settings, ratio), how fast the *deployed* layer
would run.  The answer here is the compiler's own: the candidate's real mask
is packed the way :mod:`compression.tvm_backend.compile` packs it (kept GEMM
columns per row-block of ``r`` filters; ``row_block_columns``), and the
row-block gather kernel with that many kept columns is compiled and timed at
batch 1 on the host target (stride-2 convs in the stride-phase layout, which
the compiler prefers there), with ``threads`` TVM threads -- beside the dense
version of the same kernel template for that layer.  So a scheme whose zeros
do not line up across the ``r`` filters of a row-block (most ``pattern``,
``nm`` and ``unstructured`` masks) measures as slow as dense, and the planner
sees that it does not pay.

Layers our row-block kernel does not take (depth-wise convs, linear layers,
non-square stride or padding) get no compact kernel from the compiler: every
candidate of such a layer costs the layer's dense time (measured with the
torch proxy of :mod:`compression.latency`), so pruning them never looks faster.

Times are milliseconds (``time_evaluator`` medians, kernel only; a compact
kernel's entry is the median of ``TABLE_REPEATS`` repeats of at least
``TABLE_MIN_REPEAT_MS`` each: single short repeats of a ~0.1 ms kernel on a
2-core machine disagreed by up to 2x with the compile step's), cached in the
deployment's tuning database (:class:`~compression.tvm_backend.tuning.TuningDB`,
keyed by TVM version, target and layer shape), so a plan is reproducible on
the same machine and the later compile reuses the dense tile search.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from compression import latency as torch_latency
from compression.layers import LayerInfo

BACKEND = "tvm-kernels"
GRID = 16  # kept columns are timed at K/16, 2K/16, ..., K: candidates share kernels
TABLE_REPEATS = 7
TABLE_MIN_REPEAT_MS = 2
TABLE_KEY = "table-r7m2"  # the tuning-DB prefix of compact-kernel entries (names the timing protocol)


class TVMLatencyTable:
    """Measured per-layer latencies of candidates on our TVM kernels (batch ``batch``, host target).

    ``measure(layer, scheme, sparsity, settings, repeats, mask=...)`` returns
    milliseconds for the layer computed with that candidate's mask (the dense
    kernel when ``scheme == "dense"``).  Interface-compatible with
    :class:`compression.latency.LatencyCache` (``measure``, ``save``, ``backend``).
    """

    backend = BACKEND
    drops_unaccelerated = True  # a candidate not faster than dense here is one the compiler runs dense

    def __init__(self, db_path: str | None, *, threads: int = 2, batch: int = 1, r: int = 8,
                 target: dict[str, Any] | None = None, grid: int = GRID) -> None:
        from compression.tvm_backend.target import host_target_dict
        from compression.tvm_backend.tuning import TuningDB

        self.db = TuningDB(db_path)
        self.threads = int(threads)
        self.batch = int(batch)
        self.r = int(r)
        self.grid_points = max(1, int(grid))
        self.target = dict(target) if target else host_target_dict(self.threads)
        self.proxy = torch_latency.LatencyCache(None)
        self.seconds = 0.0  # time spent measuring (cache misses)
        self.kernels_timed = 0

    # ------------------------------------------------------------ shapes
    def kernel_spec(self, layer: LayerInfo, kept_columns: int | None = None):
        """The ``ConvSpec`` our compiler would build for ``layer`` (None: no row-block kernel for it)."""
        from compression.tvm_backend.kernels import ConvSpec

        if layer.kind != "conv" or layer.depthwise or layer.stride < 1 or layer.padding < 0:
            return None
        co, ci, kh, kw = layer.weight_shape
        h, w = layer.in_hw
        return ConvSpec(n=self.batch, ci=ci, h=h, w=w, co=co, kh=kh, kw=kw, pad=layer.padding, stride=layer.stride,
                        r=self.r, kk=int(kept_columns if kept_columns is not None else layer.cols), relu=True)

    def kept_columns(self, mask: torch.Tensor) -> int:
        """Kept GEMM columns per row-block of the compiler's packing of ``mask`` (``[Co, Ci, kh, kw]`` bool)."""
        from compression.tvm_backend.kernels import row_block_columns

        cols = row_block_columns(mask.detach().cpu().numpy().astype(np.float32), self.r)
        return int(cols.shape[1]) if cols is not None else int(mask[0].numel())

    # ------------------------------------------------------------ timing
    def _dense(self, layer: LayerInfo, repeats: int):
        """``(ms, tile)`` of the dense kernel for ``layer`` (the torch proxy and tile None if it has none)."""
        from compression.tvm_backend.runtime import tvm_threads
        from compression.tvm_backend.tuning import best_tile

        spec = self.kernel_spec(layer)
        if spec is None:
            return self.proxy.measure(layer, "dense", 0.0, {}, repeats), None
        start = time.perf_counter()
        with tvm_threads(self.threads):
            best = best_tile(spec, self.target, self.db, sparse=False,  # cached in the tuning database
                             phased=spec.stride > 1)
        self.seconds += time.perf_counter() - start
        return float(best.ms), best.tile or best.tp

    def _key(self, spec, kind: str) -> str:
        from compression.tvm_backend.tuning import _key

        return _key(spec, self.target, kind == "sparse", spec.stride > 1)

    def dense_ms(self, layer: LayerInfo, repeats: int = 5) -> float:
        return self._dense(layer, repeats)[0]

    def grid(self, layer: LayerInfo) -> list[int]:
        """Kept-column counts at which the compact kernel of ``layer`` is timed: ``ceil(K * j / grid)``."""
        k, g = layer.cols, self.grid_points
        return sorted({max(1, -(-k * j // g)) for j in range(1, g + 1)})

    def sparse_ms(self, layer: LayerInfo, kept: int, repeats: int = 5) -> float:
        """The row-block kernel with ``kept`` columns per row-block, ``kept`` rounded up to the grid.

        Rounding up makes candidates share kernels (fewer compiles) and errs
        on the slow side.  At or above ``K`` columns it is the dense kernel.
        """
        dense_ms, tp = self._dense(layer, repeats)
        if self.kernel_spec(layer) is None:
            return dense_ms
        point = next((g for g in self.grid(layer) if g >= kept), layer.cols)
        if point >= layer.cols:
            return dense_ms  # nothing to skip: the compiler keeps the dense kernel
        return self._grid_point_ms(layer, point, tp, repeats)

    def _grid_point_ms(self, layer: LayerInfo, kept: int, tile, repeats: int) -> float:
        """The compact kernel with ``kept`` columns at the dense kernel's tile (a ``ConvTile`` or grid size)."""
        from compression.tvm_backend.kernels import as_tile
        from compression.tvm_backend.runtime import tvm_threads
        from compression.tvm_backend.tuning import time_kernel

        spec = self.kernel_spec(layer, kept)
        tile = as_tile(tile)
        key = f"{TABLE_KEY}|{self._key(spec, 'sparse')}|{tile.label}"
        if key not in self.db.entries:
            start = time.perf_counter()
            with tvm_threads(self.threads):
                ms = time_kernel(spec, tile, self.target, repeats=max(repeats, TABLE_REPEATS), number=1,
                                 min_repeat_ms=TABLE_MIN_REPEAT_MS,
                                 phased=spec.stride > 1 and not tile.image_lanes)
            self.db.entries[key] = {"tp": tile.tp, "tile": tile.params(), "ms": ms}
            self.seconds += time.perf_counter() - start
            self.kernels_timed += 1
        return float(self.db.entries[key]["ms"])

    def measure(self, layer: LayerInfo, scheme: str, sparsity: float, settings: dict, repeats: int = 5, *,
                mask: torch.Tensor | None = None) -> float:
        """Milliseconds of ``layer`` deployed under the candidate (``mask``: its real keep-mask)."""
        if scheme == "dense" or mask is None or self.kernel_spec(layer) is None:
            return self.dense_ms(layer, repeats)
        return self.sparse_ms(layer, self.kept_columns(mask), repeats)

    def save(self) -> None:
        self.db.save()
