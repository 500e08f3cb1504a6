"""Dense runtimes a user would deploy instead, timed side by side with the deployment, in one process.

A compressed deployment's speed means something only against the fastest
alternative its user has: PyTorch eager, ONNX Runtime, or the same compiler
without sparse kernels.  :func:`time_dense_runtimes` times each of them on
the model's dense computation (the compressed model's weights run as dense
tensors: pruned zeros cost a dense runtime the same FLOPs as the original
weights) the way a user calls it from Python: a float32 NCHW batch in,
logits out, input conversion and output copy included.  Every figure is
milliseconds per call, the median of ``repeat`` calls after ``warmup``.

Called by every run, cache hit or not: a cached artifact is reused, its
timings never are.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

WARMUP = 5
REPEAT = 30
ROUNDS = 3  # time_side_by_side: blocks per runtime
SETTLE_S = 0.1  # idle before timing a runtime: the previous one's worker threads stop spinning (see settle)


def settle(seconds: float = SETTLE_S) -> None:
    """Idle ``seconds`` so that worker threads of what ran before (PyTorch's OpenMP pool above all) stop spinning.

    After a parallel region libgomp's threads spin-wait for more work, on
    the cores the next runtime needs: on the default run's 16x16 VGG16, a
    TVM call timed right after a PyTorch forward took 0.31 ms against 0.19
    ms after 0.2 s idle.
    """
    time.sleep(seconds)


def median_ms(call: Callable[[], Any], *, warmup: int = WARMUP, repeat: int = REPEAT) -> dict[str, float]:
    """``{"p50", "p90"}`` milliseconds of ``call()`` (``repeat`` timed calls after :func:`settle` and ``warmup``)."""
    settle()
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {"p50": round(statistics.median(times), 4), "p90": round(times[min(len(times) - 1, int(0.9 * len(times)))], 4)}


def torch_eager_call(model: torch.nn.Module, x: np.ndarray) -> Callable[[], np.ndarray]:
    """PyTorch eager under ``inference_mode``: numpy in, numpy out."""
    model = model.eval()

    def call() -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return call


def onnxruntime_call(model: torch.nn.Module, x: np.ndarray, threads: int, workdir: Path) -> Callable[[], np.ndarray]:
    """ONNX Runtime CPU session (``threads`` intra-op threads, all graph optimisations) on an export of ``model``."""
    import onnxruntime as ort

    from compression.backends.onnx_backend import export_onnx

    path = workdir / "dense.onnx"
    export_onnx(model, tuple(x.shape[1:]), path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def call() -> np.ndarray:
        return session.run(None, {name: x})[0]

    return call


def tvm_vm_call(vm: Any, x: np.ndarray) -> Callable[[], np.ndarray]:
    """A TVM Relax VM's ``main`` as a user calls it: numpy -> device tensor -> numpy."""
    import tvm

    def call() -> np.ndarray:
        out = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x)))
        if not hasattr(out, "numpy"):
            out = out[0]
        return out.numpy()

    return call


def tvm_kernel_ms(vm: Any, x: np.ndarray, repeat: int = REPEAT) -> float:
    """Kernel-only milliseconds of a VM's ``main`` (``time_evaluator``: no Python conversion), median."""
    import tvm

    arg = tvm.runtime.tensor(np.ascontiguousarray(x))
    ev = vm.time_evaluator("main", tvm.cpu(), number=5, repeat=repeat, min_repeat_ms=0)
    settle()
    return round(statistics.median(ev(arg).results) * 1e3, 4)


def time_side_by_side(calls: dict[str, Callable[[], Any]], *, rounds: int = ROUNDS, repeat: int = REPEAT,
                      warmup: int = 2) -> dict[str, dict[str, float]]:
    """``{name: {"p50", "p90"}}`` milliseconds per call of each of ``calls``, timed side by side.

    ``rounds`` rounds; in each, every call in turn (the order rotated from
    round to round) gets one block: :func:`settle`, ``warmup`` untimed
    calls, then ``repeat // rounds`` timed ones.  Load that comes and goes
    (another process, a worker thread still spinning) then falls on every
    runtime alike instead of on whichever happened to run then: on the
    default run's 16x16 VGG16 the compressed deployment, timed first and
    alone, read 0.20 or 0.31 ms from one run to the next.
    """
    names = list(calls)
    per_block = max(1, repeat // max(1, rounds))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(max(1, rounds)):
        for name in names[r % len(names):] + names[:r % len(names)]:
            call = calls[name]
            settle()
            for _ in range(warmup):
                call()
            for _ in range(per_block):
                start = time.perf_counter()
                call()
                samples[name].append((time.perf_counter() - start) * 1e3)
    out = {}
    for name, times in samples.items():
        times.sort()
        out[name] = {"p50": round(statistics.median(times), 4),
                     "p90": round(times[min(len(times) - 1, int(0.9 * len(times)))], 4)}
    return out


def time_dense_runtimes(model: torch.nn.Module, input_shape: tuple[int, int, int], batch: int, *, threads: int,
                        tvm_dense_vm: Any = None, tvm_metaschedule_vm: Any = None,
                        beside: dict[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """``{runtime: {"p50", "p90"}}`` for torch eager, onnxruntime and (given their VMs) TVM dense at ``batch``.

    tvm_dense_vm: TVM dense with our kernel template, timed as ``"tvm-dense"``;
    tvm_metaschedule_vm: TVM dense compiled with a MetaSchedule database
    (:func:`compression.tvm_backend.metaschedule.compile_dense_tuned`), timed
    as ``"tvm-metaschedule"``.  Both are timed through the Python call path,
    with the kernel-only ``time_evaluator`` median as ``"kernel_ms"`` beside it.
    beside: further ``{name: TVM VM}`` (the deployment under test), timed the
    same way in the same rounds (:func:`time_side_by_side`), returned under
    their names.

    Runs in the calling process with ``threads`` threads for torch and ONNX
    Runtime (TVM's pool is set by the caller).  A runtime that fails here
    (an op ONNX cannot export, say) is reported as ``{"error": ...}``.
    """
    x = np.random.default_rng(0).random((batch, *input_shape), dtype=np.float32)
    model = model.eval().cpu()
    out: dict[str, dict[str, Any]] = {}
    calls: dict[str, Callable[[], Any]] = {"torch": torch_eager_call(model, x)}
    vms = {"tvm-dense": tvm_dense_vm, "tvm-metaschedule": tvm_metaschedule_vm, **(beside or {})}
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        with tempfile.TemporaryDirectory(prefix="suite-ort-") as tmp:
            try:
                calls["onnxruntime"] = onnxruntime_call(model, x, threads, Path(tmp))
            except Exception as err:  # noqa: BLE001 - reported, not fatal: the other runtimes still count
                out["onnxruntime"] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
            calls.update({name: tvm_vm_call(vm, x) for name, vm in vms.items() if vm is not None})
            out.update(time_side_by_side(calls))
    finally:
        torch.set_num_threads(previous)
    for name, vm in vms.items():
        if vm is not None:
            out[name]["kernel_ms"] = tvm_kernel_ms(vm, x)
    return out


def best_dense(timings: dict[str, dict[str, Any]]) -> tuple[str, float]:
    """``(runtime, p50 ms)`` of the fastest dense runtime that ran."""
    ok = {name: t["p50"] for name, t in timings.items() if "p50" in t}
    name = min(ok, key=ok.get)
    return name, ok[name]
