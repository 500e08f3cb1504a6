"""The machine's limits, measured: peak FP32 FMA throughput and streaming memory bandwidth.

A kernel's speed means something against what the machine can do at most.
:func:`peak_gflops` compiles (with the same TVM/LLVM toolchain and target as
our kernels) a register-only FMA loop -- ``A`` independent accumulators of
``lanes`` float32 each, ``acc = acc * m + c`` repeated, one loop per thread in
parallel -- over a few ``(lanes, A)`` shapes, and keeps the fastest: a
calibrated peak, not a datasheet number.  :func:`stream_gbytes` measures a
read-mostly reduction over a buffer much larger than the caches (the
bandwidth a memory-bound layer can reach).  Both use ``time_evaluator``
(kernel time only) and report the median.

``achieved_fraction(macs, ms, peak)`` = ``2 * macs / (ms * 1e-3) / (peak * 1e9)``:
the share of the calibrated peak a kernel or model reached.
"""

from __future__ import annotations

import functools
import statistics
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

FMA_SHAPES = ((8, 8), (8, 12), (16, 8), (16, 12), (16, 16))  # (lanes, independent accumulators)
ITERATIONS = 20_000


@dataclass(frozen=True)
class Peak:
    """Calibrated limits of this machine under ``threads`` threads."""

    threads: int
    gflops: float  # FP32 GFLOP/s (an FMA counts 2)
    lanes: int
    accumulators: int
    per_shape: dict[str, float]
    stream_gbytes: float | None = None  # GB/s read

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fma_kernel(threads: int, lanes: int, accs: int, iters: int):
    from tvm.script import tirx as T

    @T.prim_func
    def fma(out: T.Buffer((threads, accs, lanes), "float32")):
        T.func_attr({"tir.noalias": True})
        for t in T.parallel(threads):
            acc = T.alloc_buffer((accs, lanes), "float32", scope="local", annotations={"disable_lower_builtin": True})
            for j in T.unroll(accs):
                acc[j, T.ramp(0, 1, lanes)] = T.broadcast(T.float32(0.001) * T.Cast("float32", j + t), lanes)
            for _it in range(iters):
                for j in T.unroll(accs):
                    acc[j, T.ramp(0, 1, lanes)] = (acc[j, T.ramp(0, 1, lanes)] * T.broadcast(T.float32(0.999999), lanes)
                                                   + T.broadcast(T.float32(1e-7), lanes))
            for j in T.unroll(accs):
                out[t, j, T.ramp(0, 1, lanes)] = acc[j, T.ramp(0, 1, lanes)]

    return fma


def _stream_kernel(threads: int, n: int, lanes: int = 16):
    from tvm.script import tirx as T

    chunk = n // threads

    @T.prim_func
    def stream(x: T.Buffer((n,), "float32"), out: T.Buffer((threads, lanes), "float32")):
        T.func_attr({"tir.noalias": True})
        for t in T.parallel(threads):
            acc = T.alloc_buffer((4, lanes), "float32", scope="local", annotations={"disable_lower_builtin": True})
            for j in T.unroll(4):
                acc[j, T.ramp(0, 1, lanes)] = T.broadcast(T.float32(0), lanes)
            for i in range(chunk // (4 * lanes)):
                for j in T.unroll(4):
                    acc[j, T.ramp(0, 1, lanes)] = acc[j, T.ramp(0, 1, lanes)] + x[
                        T.ramp(t * chunk + (i * 4 + j) * lanes, 1, lanes)]
            out[t, T.ramp(0, 1, lanes)] = (acc[0, T.ramp(0, 1, lanes)] + acc[1, T.ramp(0, 1, lanes)]
                                           + acc[2, T.ramp(0, 1, lanes)] + acc[3, T.ramp(0, 1, lanes)])

    return stream


def _median_seconds(func, target: dict, args: list[np.ndarray], repeat: int) -> float:
    import tvm

    from compression.tvm_backend.tuning import compile_prim

    lib = compile_prim(func, target)
    dev = tvm.cpu()
    tensors = [tvm.runtime.tensor(a, dev) for a in args]
    lib.mod["main"](*tensors)  # warm-up (thread pool, page faults)
    ev = lib.mod.time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=0)
    return float(statistics.median(ev(*tensors).results))


def fma_gflops(target: dict, threads: int, lanes: int, accs: int, *, iters: int = ITERATIONS,
               repeat: int = 15) -> float:
    """GFLOP/s of the register-only FMA loop at one ``(lanes, accs)`` shape."""
    seconds = _median_seconds(_fma_kernel(threads, lanes, accs, iters), target,
                              [np.zeros((threads, accs, lanes), np.float32)], repeat)
    return 2.0 * threads * accs * lanes * iters / seconds / 1e9


def stream_gbytes(target: dict, threads: int, *, megabytes: int = 256, repeat: int = 7) -> float:
    """Read bandwidth in GB/s over a ``megabytes`` buffer (far larger than the last-level cache)."""
    n = megabytes * (1 << 20) // 4
    n -= n % (threads * 64)
    x = np.random.default_rng(0).random(n, dtype=np.float32)
    seconds = _median_seconds(_stream_kernel(threads, n), target, [x, np.zeros((threads, 16), np.float32)], repeat)
    return 4.0 * n / seconds / 1e9


def measure_peak(target: dict, threads: int = 2, *, with_stream: bool = True) -> Peak:
    """Measure the FP32 FMA peak (and read bandwidth) now, at ``threads`` threads (a few seconds)."""
    from compression.tvm_backend.runtime import tvm_threads

    with tvm_threads(threads):
        per_shape = {f"{lanes}x{accs}": round(fma_gflops(target, threads, lanes, accs), 2)
                     for lanes, accs in FMA_SHAPES}
        bandwidth = round(stream_gbytes(target, threads), 2) if with_stream else None
    best = max(per_shape, key=per_shape.get)
    lanes, accs = (int(v) for v in best.split("x"))
    return Peak(threads, per_shape[best], lanes, accs, per_shape, bandwidth)


@functools.lru_cache(maxsize=8)
def _memo(target_json: str, threads: int, with_stream: bool) -> Peak:
    import json

    return measure_peak(json.loads(target_json), threads, with_stream=with_stream)


def peak_gflops(target: dict, threads: int = 2, *, with_stream: bool = True) -> Peak:
    """:func:`measure_peak`, memoised per process, target and thread count.

    Like every timing here it is a measurement under the current load: run it
    beside the kernels it is compared with (``measure_peak`` again afterwards
    shows whether the load changed).
    """
    import json

    return _memo(json.dumps(target, sort_keys=True), int(threads), bool(with_stream))


def achieved_fraction(macs: float, ms: float, peak: Peak) -> float:
    """Share of the calibrated peak reached by ``macs`` multiply-accumulates in ``ms`` milliseconds."""
    if ms <= 0 or peak.gflops <= 0:
        return float("nan")
    return 2.0 * macs / (ms * 1e-3) / (peak.gflops * 1e9)
