"""In-process predictor for a TVM artifact (run inside the isolated worker).

Loads ``model_b<B>.so`` for every compiled batch size ``B`` listed in the
manifest and answers ``predict(x)`` by running full batches of the largest
size and the rest one image at a time (or padded, whichever runs fewer images).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from suite.core.errors import ArtifactError


# TVM's affinity mode "threads share all cores" (runtime.config_threadpool's
# kSpecifyThreadShareAllCore): resizes the pool without pinning threads.
_SHARE_ALL_CORES = -3


def num_tvm_threads() -> int:
    import tvm

    return int(tvm.get_global_func("runtime.NumThreads")())


def set_tvm_threads(threads: int) -> None:
    """Resize TVM's CPU thread pool of this process to ``threads`` (> 0) workers."""
    import tvm

    tvm.get_global_func("runtime.config_threadpool")(_SHARE_ALL_CORES, int(threads))


@contextlib.contextmanager
def tvm_threads(threads: int) -> Iterator[None]:
    """Run the block with TVM's pool at ``threads`` workers, then restore the previous size."""
    before = num_tvm_threads()
    set_tvm_threads(threads)
    try:
        yield
    finally:
        set_tvm_threads(before)


class TVMPredictor:
    """Black-box predictor over a compiled Relax executable (no gradients)."""

    differentiable = False

    def __init__(self, artifact_dir: str, manifest: dict[str, Any]) -> None:
        import tvm
        from tvm import relax

        set_tvm_threads(int(manifest.get("threads") or 2))  # the worker serves this one artifact

        self.input_shape = tuple(int(v) for v in manifest["input_shape"])
        self.num_classes = int(manifest["num_classes"])
        self.vms: dict[int, Any] = {}
        libs = manifest.get("libraries") or {}
        if not libs:
            raise ArtifactError(f"{artifact_dir}/manifest.json lists no runnable library (cross-compiled artifact?)")
        for batch, name in libs.items():
            try:
                lib = tvm.runtime.load_module(str(Path(artifact_dir) / name))
                self.vms[int(batch)] = relax.VirtualMachine(lib, tvm.cpu())
            except Exception as err:  # noqa: BLE001 - any load failure means a bad artifact
                raise ArtifactError(f"cannot load {name}: {str(err).strip().splitlines()[0]}") from None
        self.batches = sorted(self.vms)

    def _run(self, batch: int, x: np.ndarray) -> np.ndarray:
        import tvm

        out = self.vms[batch]["main"](tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32)))
        if not hasattr(out, "numpy"):
            out = out[0]
        return out.numpy()

    def _run_padded(self, batch: int, chunk: np.ndarray) -> np.ndarray:
        """Run ``chunk`` (at most ``batch`` images) on the batch-``batch`` library, zero-padded."""
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), np.float32)])
        return self._run(batch, chunk)[:n]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        data = x.detach().cpu().numpy().astype(np.float32)
        if data.ndim != 4 or tuple(data.shape[1:]) != self.input_shape:
            raise ValueError(f"expected input [N, {', '.join(map(str, self.input_shape))}], got {list(data.shape)}")
        big, small = self.batches[-1], self.batches[0]
        outs, i = [], 0
        while i < len(data):
            rest = len(data) - i
            size = big if rest >= big or (rest > big // 4 and big > small) else small
            outs.append(self._run_padded(size, data[i:i + size]))
            i += size
        if not outs:
            return torch.zeros(0, self.num_classes)
        return torch.from_numpy(np.concatenate(outs))

    def latency_ms(self, batch: int, number: int = 10, repeat: int = 30) -> list[float]:
        """Per-call times (ms) of the compiled batch-``batch`` function on random input."""
        import tvm

        x = tvm.runtime.tensor(np.random.default_rng(0).random((batch, *self.input_shape), dtype=np.float32))
        ev = self.vms[batch].time_evaluator("main", tvm.cpu(), number=number, repeat=repeat)
        return [t * 1e3 for t in ev(x).results]
