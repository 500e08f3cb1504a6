"""Query an untrusted suspect model in a separate process with time limits.

:class:`SuspectPredictor` is the parent side of :mod:`fingerprints.suspect_worker`:
the same isolation as :class:`compression.backends.artifact.IsolatedPredictor`
(subprocess, pipes, JSON + ``.npy`` frames, no pickle), with a time limit for
loading (``startup_timeout``) and one per request (``timeout``).  A suspect that
hangs is killed and reported as :class:`~suite.core.errors.ArtifactError`; so is
one that crashes, returns garbage or does not load.  It is a
:class:`~suite.core.predictor.Predictor` (``differentiable = False``): attacks and
fingerprints query it like any deployment.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compression.backends.artifact import _Worker
from suite.core.errors import ArtifactError

SUSPECT_WORKER = "fingerprints.suspect_worker"


class _SuspectWorker(_Worker):
    """A :class:`~compression.backends.artifact._Worker` started on the suspect worker module."""

    def __init__(self, spec: dict[str, Any], startup_timeout: float) -> None:
        super().__init__(str(spec["path"]), startup_timeout, module=SUSPECT_WORKER, argument=json.dumps(spec),
                         label="suspect", starting="load")


def _as_suspect_error(err: ArtifactError) -> ArtifactError:
    text = str(err)
    return ArtifactError("suspect " + text[len("deployment "):] if text.startswith("deployment ") else text)


class SuspectPredictor:
    """Predictor over an untrusted model file or artifact directory, served by an isolated worker.

    path: the suspect; fmt: ``state_dict`` | ``pt2`` | ``onnx`` | ``artifact``
    (see :func:`fingerprints.suspects.detect_format`); arch/width: for state_dicts;
    input_hw: ``(H, W)`` assumed when the suspect does not fix its own;
    timeout: seconds per request; startup_timeout: seconds to load;
    threads: torch / onnxruntime threads in the worker.

    After construction ``input_shape``, ``num_classes``, ``format`` and
    ``details`` describe the suspect.  ``predict(x)`` sends ``x`` ``[N, C, H, W]``
    in chunks of ``batch_size`` and returns float32 logits on ``x.device``.
    """

    differentiable = False

    def __init__(self, path: str | os.PathLike, fmt: str, *, arch: str | None = None, width: float | None = None,
                 input_hw: tuple[int, int] = (32, 32), timeout: float = 30.0, startup_timeout: float = 60.0,
                 threads: int = 1, batch_size: int = 256) -> None:
        if not timeout > 0 or not startup_timeout > 0:
            raise ValueError("timeouts must be > 0")
        self.path = str(Path(path).resolve())
        self.spec = {"format": fmt, "path": self.path, "arch": arch, "width": width,
                     "input_hw": [int(input_hw[0]), int(input_hw[1])], "threads": int(threads)}
        self.timeout = float(timeout)
        self.batch_size = int(batch_size)
        self._lock = threading.Lock()
        try:
            self._worker: _SuspectWorker | None = _SuspectWorker(self.spec, float(startup_timeout))
        except ArtifactError as err:
            raise _as_suspect_error(err) from None
        info = self._worker.info
        self.input_shape: tuple[int, int, int] = tuple(int(v) for v in info["input_shape"])  # type: ignore[assignment]
        self.num_classes: int = int(info["num_classes"])
        self.format: str = str(info.get("format") or fmt)
        self.details: dict[str, Any] = dict(info.get("details") or {})

    @property
    def worker_pid(self) -> int | None:
        w = self._worker
        return w.proc.pid if w is not None and w.alive else None

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected input [N, {', '.join(map(str, self.input_shape))}], got {list(x.shape)}")
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outs = []
        with self._lock:
            for i in range(0, len(arr), self.batch_size):
                if self._worker is None or not self._worker.alive:
                    raise ArtifactError(f"suspect {self.path} is no longer running (timed out, crashed or closed)")
                try:
                    outs.append(self._worker.predict(arr[i:i + self.batch_size], self.num_classes, self.timeout))
                except ArtifactError as err:
                    raise _as_suspect_error(err) from None
        logits = np.concatenate(outs) if outs else np.zeros((0, self.num_classes), np.float32)
        return torch.from_numpy(np.ascontiguousarray(logits)).to(x.device)

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker.stop()
                self._worker = None

    def __enter__(self) -> "SuspectPredictor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
