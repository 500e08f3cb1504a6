"""Query an untrusted suspect model in a sandboxed process with time limits.

:class:`SuspectPredictor` is the parent side of :mod:`fingerprints.suspect_worker`:
the same isolation as :class:`compression.backends.artifact.IsolatedPredictor`
(subprocess, pipes, JSON + ``.npy`` frames, no pickle), with a time limit for
loading (``startup_timeout``) and one per request (``timeout``).  A suspect that
hangs is killed and reported as :class:`~suite.core.errors.ArtifactError`; so is
one that crashes, returns garbage or does not load.  It is a
:class:`~suite.core.predictor.Predictor` (``differentiable = False``): attacks and
fingerprints query it like any deployment.

The suspect is copied into a private read-only directory and the worker enters
the kernel sandbox of :mod:`compression.backends.sandbox` (read-only file system
limited to the runtime and that copy, no network, no new programs or processes,
resource limits, uid ``nobody``) before it reads a byte of it; ``sandbox`` holds
what the worker reported.  Error messages name the original suspect path.
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
from compression.backends.sandbox import PrivateCopy, SandboxPolicy, default_memory_mb
from suite.core.errors import ArtifactError

SUSPECT_WORKER = "fingerprints.suspect_worker"
#: Default limits of a suspect worker: address space (MiB; half the machine's memory, at least 8 GiB)
#: and CPU seconds over its life.
MEMORY_MB = default_memory_mb()
CPU_SECONDS = 3600


class _SuspectWorker(_Worker):
    """A :class:`~compression.backends.artifact._Worker` started on the suspect worker module."""

    def __init__(self, spec: dict[str, Any], startup_timeout: float, policy: SandboxPolicy | None = None,
                 cwd: str | None = None) -> None:
        super().__init__(str(spec["path"]), startup_timeout, module=SUSPECT_WORKER, argument=json.dumps(spec),
                         label="suspect", starting="load", policy=policy, cwd=cwd)


def _as_suspect_error(err: ArtifactError, renames: tuple[tuple[str, str], ...] = ()) -> ArtifactError:
    text = str(err)
    for private, original in renames:
        text = text.replace(private, original)
    return ArtifactError("suspect " + text[len("deployment "):] if text.startswith("deployment ") else text)


def suspect_policy(private_dir: str, *, memory_mb: int | None = MEMORY_MB, cpu_seconds: int | None = CPU_SECONDS,
                   require: bool = False) -> SandboxPolicy:
    """The sandbox of a suspect worker: read-only access to the suspect's private copy, and limits."""
    return SandboxPolicy(read=[private_dir], memory_mb=memory_mb, cpu_seconds=cpu_seconds, require=require)


class SuspectPredictor:
    """Predictor over an untrusted model file or artifact directory, served by an isolated worker.

    path: the suspect; fmt: ``state_dict`` | ``pt2`` | ``onnx`` | ``artifact``
    (see :func:`fingerprints.suspects.detect_format`); arch/width: for state_dicts;
    input_hw: ``(H, W)`` assumed when the suspect does not fix its own;
    timeout: seconds per request; startup_timeout: seconds to load;
    threads: torch / onnxruntime threads in the worker;
    memory_mb / cpu_seconds: the worker's address-space and CPU-time limits
    (None: none); require_sandbox: refuse to load the suspect (ArtifactError)
    unless every protection is active; sandbox: False runs it without one
    (tests and debugging only).

    After construction ``input_shape``, ``num_classes``, ``format``,
    ``details`` and ``sandbox`` (what the worker reported, protection -> text)
    describe the suspect.  ``predict(x)`` sends ``x`` ``[N, C, H, W]`` in chunks
    of ``batch_size`` and returns float32 logits on ``x.device``.
    """

    differentiable = False

    def __init__(self, path: str | os.PathLike, fmt: str, *, arch: str | None = None, width: float | None = None,
                 input_hw: tuple[int, int] = (32, 32), timeout: float = 30.0, startup_timeout: float = 60.0,
                 threads: int = 1, batch_size: int = 256, memory_mb: int | None = MEMORY_MB,
                 cpu_seconds: int | None = CPU_SECONDS, require_sandbox: bool = False, sandbox: bool = True) -> None:
        if not timeout > 0 or not startup_timeout > 0:
            raise ValueError("timeouts must be > 0")
        self.path = str(Path(path).resolve())
        self.timeout = float(timeout)
        self.batch_size = int(batch_size)
        self._lock = threading.Lock()
        self._worker: _SuspectWorker | None = None
        try:
            self._copy: PrivateCopy | None = PrivateCopy(self.path)
        except OSError as err:
            raise ArtifactError(f"suspect {self.path} cannot be copied for the sandbox "
                                f"({err.strerror or err})") from None
        self._renames = ((str(self._copy.path), self.path), (str(self._copy.root), str(Path(self.path).parent)))
        self.spec = {"format": fmt, "path": str(self._copy.path), "arch": arch, "width": width,
                     "input_hw": [int(input_hw[0]), int(input_hw[1])], "threads": int(threads)}
        policy = suspect_policy(str(self._copy.root), memory_mb=memory_mb, cpu_seconds=cpu_seconds,
                                require=require_sandbox)
        policy.enabled = bool(sandbox)
        try:
            self._worker = _SuspectWorker(self.spec, float(startup_timeout), policy, cwd=str(self._copy.root))
        except ArtifactError as err:
            self._discard_copy()
            raise _as_suspect_error(err, self._renames) from None
        info = self._worker.info
        self.input_shape: tuple[int, int, int] = tuple(int(v) for v in info["input_shape"])  # type: ignore[assignment]
        self.num_classes: int = int(info["num_classes"])
        self.format: str = str(info.get("format") or fmt)
        self.details: dict[str, Any] = dict(info.get("details") or {})
        self.sandbox: dict[str, str] = dict(self._worker.sandbox)

    def _discard_copy(self) -> None:
        if self._copy is not None:
            self._copy.cleanup()
            self._copy = None

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
                    raise _as_suspect_error(err, self._renames) from None
        logits = np.concatenate(outs) if outs else np.zeros((0, self.num_classes), np.float32)
        return torch.from_numpy(np.ascontiguousarray(logits)).to(x.device)

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker.stop()
                self._worker = None
            self._discard_copy()

    def __enter__(self) -> "SuspectPredictor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
