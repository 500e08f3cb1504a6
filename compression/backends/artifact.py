"""Deployable artifacts: a directory of files plus a verified ``manifest.json``.

Layout of an artifact directory (written by a backend such as ``onnx``)::

    DIR/model.onnx        (whatever the backend deploys)
    DIR/manifest.json     {"format": 1, "backend": "onnx",
                           "runtime": "compression.backends.onnx_backend:OnnxPredictor",
                           "input_shape": [C, H, W], "num_classes": K,
                           "files": {"model.onnx": "<sha256>"}, "created_at": "...Z",
                           ...free-form backend facts...}

A manifest is untrusted input: :func:`read_manifest` checks its structure, the
sha256 of every listed file, and that ``runtime`` names a class inside our own
``compression.`` package (nothing else is ever imported).  Every problem is an
:class:`~suite.core.errors.ArtifactError` with a one-line message naming the file.

:func:`load_predictor` turns a directory into a :class:`~suite.core.predictor.Predictor`.
By default (``isolated=True``) the runtime runs in a separate worker process
(``python -m compression.backends.worker DIR``) so that a compiled artifact that
hangs or crashes costs an :class:`ArtifactError`, not the evaluation process.
The worker starts with a scrubbed environment and enters a kernel sandbox
(:mod:`compression.backends.sandbox`: read-only file system, no network, no new
programs or processes, resource limits, an unprivileged user) before it loads
anything.

Parent <-> worker protocol (stdin/stdout pipes, never pickle): each frame is
``struct ">IQ"`` (header length, payload length), a UTF-8 JSON header, then a
payload that is empty or one ``.npy`` array (``np.save``, ``allow_pickle=False``).

* worker -> parent at start: ``{"op": "sandbox", "sandbox": {protection: text}}`` (before
  anything is loaded), then ``{"op": "ready", ...}`` or ``{"op": "error", "message"}``;
* parent -> worker: ``{"op": "predict"}`` + x ``[N, C, H, W]`` float32, or ``{"op": "close"}``;
* worker -> parent: ``{"op": "result"}`` + logits ``[N, K]`` float32, or
  ``{"op": "error", "kind": "value" | "artifact", "message"}`` (the worker stays up).
"""

from __future__ import annotations

import collections
import datetime as _dt
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from compression.backends.framing import _Timeout, _one_line, decode_array, encode_array, recv_frame, send_frame
from compression.backends.sandbox import SandboxPolicy, python_flags, worker_environment
from suite.core.cache import atomic_write_text, sha256_file
from suite.core.errors import ArtifactError, SuiteError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
REQUIRED_KEYS = ("format", "backend", "runtime", "input_shape", "num_classes", "files", "created_at")
#: ``runtime`` modules must start with one of these (a manifest never imports foreign code).
RUNTIME_PREFIXES = ("compression.",)
WORKER_MODULE = "compression.backends.worker"

_RUNTIME_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*):([A-Za-z][A-Za-z0-9_]*)$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------- manifest

def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_runtime(runtime: Any, where: str) -> tuple[str, str]:
    """Split ``"module:Class"`` into ``(module, class)``; refuse modules outside :data:`RUNTIME_PREFIXES`.

    where: the file named in error messages.
    """
    match = _RUNTIME_RE.match(runtime) if isinstance(runtime, str) else None
    if match is None:
        raise ArtifactError(f"artifact {where} has a malformed runtime {runtime!r} (expected 'module:Class')")
    module, cls = match.groups()
    if not module.startswith(RUNTIME_PREFIXES):
        raise ArtifactError(f"artifact {where} names runtime {runtime!r} outside the allowed packages "
                            f"({', '.join(p + '*' for p in RUNTIME_PREFIXES)}); refusing to import it")
    return module, cls


def _safe_member(directory: Path, name: Any, where: str) -> Path:
    """``directory / name`` for a relative file name that stays inside ``directory``."""
    if not isinstance(name, str) or not name or name == MANIFEST_NAME or "\\" in name:
        raise ArtifactError(f"artifact {where} lists an invalid file name {name!r}")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise ArtifactError(f"artifact {where} lists a file outside the artifact directory: {name!r}")
    path = directory / rel
    if not path.resolve().is_relative_to(directory.resolve()):
        raise ArtifactError(f"artifact {where} lists a file that resolves outside the artifact directory: {name!r}")
    return path


def _default_files(directory: Path) -> list[str]:
    """Regular, non-hidden files under ``directory`` (recursive, posix names), minus the manifest."""
    names = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if path.is_file() and not path.is_symlink() and rel.as_posix() != MANIFEST_NAME \
                and not any(part.startswith(".") for part in rel.parts):
            names.append(rel.as_posix())
    return names


def write_manifest(artifact_dir: str | os.PathLike, manifest: dict[str, Any]) -> dict[str, Any]:
    """Fill in and atomically write ``artifact_dir/manifest.json``; return what was written.

    manifest: at least ``backend``, ``runtime``, ``input_shape`` [C, H, W] and
    ``num_classes``.  ``files`` (sha256s) is computed for the names in
    ``manifest["files"]`` (its keys) or, when absent/empty, for every regular
    non-hidden file in the directory; ``format`` and ``created_at`` default to
    1 and now (UTC).  The result is re-read with :func:`read_manifest`.
    """
    directory = Path(artifact_dir)
    where = str(directory / MANIFEST_NAME)
    out = dict(manifest)
    out.setdefault("format", MANIFEST_FORMAT)
    out.setdefault("created_at", _utc_now())
    parse_runtime(out.get("runtime"), where)
    names = list(out.get("files") or {}) or _default_files(directory)
    files = {}
    for name in names:
        path = _safe_member(directory, name, where)
        if not path.is_file():
            raise ArtifactError(f"artifact {path} listed for manifest.json does not exist")
        files[name] = sha256_file(path)
    out["files"] = files
    out["input_shape"] = [int(v) for v in out["input_shape"]]
    out["num_classes"] = int(out["num_classes"])
    atomic_write_text(directory / MANIFEST_NAME, json.dumps(out, indent=2, sort_keys=True) + "\n")
    return read_manifest(directory)


def _check_fields(m: dict[str, Any], where: str) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in m]
    if missing:
        raise ArtifactError(f"artifact {where} lacks required keys: {', '.join(missing)}")
    if m["format"] != MANIFEST_FORMAT:
        raise ArtifactError(f"artifact {where} has format {m['format']!r}; this suite reads format {MANIFEST_FORMAT}")
    if not isinstance(m["backend"], str) or not m["backend"]:
        raise ArtifactError(f"artifact {where} has an invalid backend {m['backend']!r}")
    shape = m["input_shape"]
    if not (isinstance(shape, list) and len(shape) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise ArtifactError(f"artifact {where} has an invalid input_shape {shape!r} (expected [C, H, W])")
    k = m["num_classes"]
    if not (isinstance(k, int) and not isinstance(k, bool) and k > 0):
        raise ArtifactError(f"artifact {where} has an invalid num_classes {k!r}")
    if not isinstance(m["files"], dict):
        raise ArtifactError(f"artifact {where} has an invalid files entry (expected {{name: sha256}})")
    if not isinstance(m["created_at"], str):
        raise ArtifactError(f"artifact {where} has an invalid created_at {m['created_at']!r}")


def read_manifest(artifact_dir: str | os.PathLike) -> dict[str, Any]:
    """Load and verify ``artifact_dir/manifest.json`` (structure, runtime, every file's sha256).

    Raises :class:`ArtifactError` with a one-line message on any problem.
    """
    directory = Path(artifact_dir)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise ArtifactError(f"artifact directory {directory} does not exist")
    if not path.is_file():
        raise ArtifactError(f"artifact {path} is missing (not an artifact directory, or an interrupted build)")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ArtifactError(f"artifact {path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ArtifactError(f"artifact {path} is unreadable ({_one_line(err)})") from None
    if not isinstance(m, dict):
        raise ArtifactError(f"artifact {path} is not a JSON object")
    _check_fields(m, str(path))
    parse_runtime(m["runtime"], str(path))
    for name, digest in m["files"].items():
        member = _safe_member(directory, name, str(path))
        if not isinstance(digest, str) or not _SHA_RE.match(digest):
            raise ArtifactError(f"artifact {path} has an invalid sha256 for {name!r}")
        if not member.is_file():
            raise ArtifactError(f"artifact {member} listed in manifest.json is missing")
        if sha256_file(member) != digest:
            raise ArtifactError(f"artifact {member} does not match its sha256 in manifest.json (corrupt or replaced)")
    return m


def resolve_runtime(manifest: dict[str, Any], where: str = MANIFEST_NAME) -> type:
    """Import the runtime class named by a manifest already checked by :func:`read_manifest`.

    Only a public class defined in the named ``compression.*`` module itself is
    accepted (no re-exported names), and it must have a ``predict`` method.
    """
    module_name, cls_name = parse_runtime(manifest.get("runtime"), where)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ArtifactError(f"artifact {where}: runtime module {module_name} does not import "
                            f"({_one_line(err)})") from None
    cls = getattr(module, cls_name, None)
    if not isinstance(cls, type) or cls.__module__ != module_name or not callable(getattr(cls, "predict", None)):
        raise ArtifactError(f"artifact {where}: {module_name} has no runtime class {cls_name}")
    return cls


def load_predictor(artifact_dir: str | os.PathLike, *, isolated: bool = True, timeout: float = 60.0,
                   startup_timeout: float | None = None):
    """A :class:`~suite.core.predictor.Predictor` (``differentiable=False``) for an artifact directory.

    isolated: run the runtime in a worker process (:class:`IsolatedPredictor`);
        ``False`` constructs ``Class(artifact_dir, manifest)`` in this process.
    timeout: seconds allowed per request (isolated only).
    startup_timeout: seconds allowed for the worker to load the artifact
        (default ``max(timeout, 120)``; importing torch alone can take seconds).
    """
    if isolated:
        return IsolatedPredictor(artifact_dir, timeout=timeout, startup_timeout=startup_timeout)
    manifest = read_manifest(artifact_dir)
    where = str(Path(artifact_dir) / MANIFEST_NAME)
    cls = resolve_runtime(manifest, where)
    try:
        return cls(str(artifact_dir), manifest)
    except SuiteError:
        raise
    except Exception as err:  # noqa: BLE001 - any runtime load failure means an unusable artifact
        raise ArtifactError(f"artifact {artifact_dir}: runtime {manifest['runtime']} failed to load "
                            f"({err.__class__.__name__}: {_one_line(err)})") from None


# --------------------------------------------------------------------------- isolated predictor

def _drain(stream: IO[bytes], tail: collections.deque) -> None:
    """Keep the last lines of the worker's stderr (and never let the pipe fill up)."""
    try:
        for line in iter(stream.readline, b""):
            text = line.decode("utf-8", "replace").strip()
            if text:
                tail.append(text)
    except (OSError, ValueError):
        pass


def _stop_process(proc: subprocess.Popen, drain: threading.Thread, grace: float = 2.0) -> None:
    """Ask the worker to exit (stdin EOF), kill it after ``grace`` s, reap it, close the pipes."""
    try:
        if proc.poll() is None:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        drain.join(timeout=1.0)
        try:
            proc.stderr.close()
        except OSError:
            pass


def _worker_env(policy: SandboxPolicy | None = None) -> dict[str, str]:
    """A scrubbed environment (:func:`~compression.backends.sandbox.worker_environment`): this checkout's
    root as the only PYTHONPATH entry (so ``-m compression...`` resolves) and the sandbox policy."""
    return worker_environment(str(Path(__file__).resolve().parents[2]), policy)


class _Worker:
    """One worker process serving one artifact; every failure is raised as ArtifactError."""

    def __init__(self, artifact_dir: str, startup_timeout: float, *, module: str = WORKER_MODULE,
                 argument: str | None = None, label: str = "worker", starting: str = "start",
                 policy: SandboxPolicy | None = None, cwd: str | None = None) -> None:
        """Start ``python -m module argument`` (argument defaults to ``artifact_dir``) and wait for ``ready``.

        label: names the stderr drain thread; starting: the verb of the start-up
        timeout message ("did not <starting> within T s"); policy: the sandbox the
        worker enters before loading anything (None: none); cwd: its working directory.
        The worker gets a scrubbed environment and never the current directory on ``sys.path``.
        """
        self.artifact_dir = artifact_dir
        self.proc = subprocess.Popen([sys.executable, *python_flags(), "-m", module,
                                      artifact_dir if argument is None else argument],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     bufsize=0, env=_worker_env(policy), cwd=cwd)
        self.tail: collections.deque = collections.deque(maxlen=20)
        drain = threading.Thread(target=_drain, args=(self.proc.stderr, self.tail), daemon=True,
                                 name=f"{label}-stderr-{self.proc.pid}")
        drain.start()
        self._finalizer = weakref.finalize(self, _stop_process, self.proc, drain)
        os.set_blocking(self.proc.stdin.fileno(), False)
        deadline = time.monotonic() + startup_timeout
        timeout_text = f"did not {starting} within {startup_timeout:g} s"
        header, _ = self._exchange(None, startup_timeout, timeout_text)
        #: what the worker's sandbox reported before it loaded anything (see
        #: :func:`compression.backends.sandbox.enter`); later frames cannot change it
        self.sandbox: dict[str, str] = {}
        if header.get("op") == "sandbox":
            self.sandbox = {str(k): str(v) for k, v in dict(header.get("sandbox") or {}).items()}
            header, _ = self._exchange(None, max(deadline - time.monotonic(), 0.001), timeout_text)
        if header.get("op") != "ready":
            message = str(header.get("message") or f"worker sent {header.get('op')!r} instead of 'ready'")
            self.stop()
            if header.get("kind") == "sandbox":
                message = f"deployment {self.artifact_dir}: {message}"
            raise ArtifactError(message)
        self.info = header

    @property
    def alive(self) -> bool:
        return self._finalizer.alive and self.proc.poll() is None

    def stop(self) -> None:
        self._finalizer()

    def _kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.stop()

    def _died(self) -> ArtifactError:
        try:
            rc = self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self._kill()
            rc = self.proc.returncode
        self.stop()
        how = f"exit code {rc}"
        if rc is not None and rc < 0:
            try:
                how += f", {signal.Signals(-rc).name}"
            except ValueError:
                pass
        last = " | ".join(list(self.tail)[-5:]) or "(empty)"
        return ArtifactError(f"deployment {self.artifact_dir} worker died ({how}); last stderr: {last}")

    def _exchange(self, request: tuple[dict[str, Any], bytes] | None, timeout: float, timeout_text: str,
                  max_payload: int = 1 << 40) -> tuple[dict[str, Any], bytes]:
        """Send ``request`` (if any) and read one reply frame within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        try:
            if request is not None:
                send_frame(self.proc.stdin.fileno(), *request, deadline=deadline)
            return recv_frame(self.proc.stdout.fileno(), deadline, max_payload)
        except _Timeout:
            self._kill()
            raise ArtifactError(f"deployment {self.artifact_dir} {timeout_text} (worker killed)") from None
        except (EOFError, BrokenPipeError, ConnectionResetError):
            raise self._died() from None
        except ValueError as err:  # malformed frame: the worker cannot be trusted any more
            self._kill()
            raise ArtifactError(f"deployment {self.artifact_dir} worker sent a malformed reply "
                                f"({_one_line(err)})") from None

    def predict(self, x: np.ndarray, num_classes: int, timeout: float) -> np.ndarray:
        """Logits ``[N, num_classes]`` float32 for ``x`` ``[N, C, H, W]`` float32."""
        max_payload = x.shape[0] * num_classes * 8 + (1 << 16)
        header, payload = self._exchange(({"op": "predict"}, encode_array(x)), timeout,
                                         f"timed out after {timeout:g} s", max_payload)
        if header.get("op") == "error":
            message = str(header.get("message", "unknown worker error"))
            raise (ValueError if header.get("kind") == "value" else ArtifactError)(message)
        try:
            out = decode_array(payload) if header.get("op") == "result" else None
        except ValueError:
            out = None
        if out is None or out.shape != (x.shape[0], num_classes) or out.dtype.kind != "f":
            got = "no array" if out is None else f"{out.dtype} {list(out.shape)}"
            raise ArtifactError(f"deployment {self.artifact_dir} returned {got}; "
                                f"expected float logits {[x.shape[0], num_classes]}")
        return out.astype(np.float32, copy=False)


def deployment_policy(artifact_dir: str | os.PathLike, *, enabled: bool = True) -> SandboxPolicy:
    """The sandbox of a run's own deployment worker: read-only access to its artifact directory, the
    default address-space limit, no CPU-time limit (attacks may query it for hours)."""
    return SandboxPolicy(read=[os.path.realpath(artifact_dir)], cpu_seconds=None, enabled=enabled)


class IsolatedPredictor:
    """Predictor whose runtime lives in a ``compression.backends.worker`` subprocess.

    predict(x): x ``[N, C, H, W]`` float in [0, 1] (``C, H, W == input_shape``,
    else ValueError) -> logits ``[N, num_classes]`` float32 on ``x.device``,
    sent in chunks of ``batch_size`` samples, each with ``timeout`` seconds.  A
    timeout kills the worker and raises ArtifactError; so does a crash (the
    message has the exit code and the last stderr lines).  A dead worker is
    restarted by the next ``predict``.  ``close()`` (or leaving a ``with``
    block, garbage collection, interpreter exit) stops the worker.

    sandbox: the worker's :class:`~compression.backends.sandbox.SandboxPolicy`
    (True: :func:`deployment_policy`, read-only access to the artifact directory;
    False: none).  ``self.sandbox`` is what the live worker reported.
    """

    differentiable = False

    def __init__(self, artifact_dir: str | os.PathLike, *, timeout: float = 60.0,
                 startup_timeout: float | None = None, batch_size: int = 256,
                 sandbox: SandboxPolicy | bool = True) -> None:
        if not timeout > 0 or batch_size < 1:
            raise ValueError(f"timeout must be > 0 and batch_size >= 1 (got {timeout}, {batch_size})")
        self.artifact_dir = str(artifact_dir)
        self.policy = (sandbox if isinstance(sandbox, SandboxPolicy) else
                       deployment_policy(self.artifact_dir, enabled=bool(sandbox)))
        self.manifest = read_manifest(self.artifact_dir)
        self.input_shape: tuple[int, int, int] = tuple(self.manifest["input_shape"])
        self.num_classes: int = self.manifest["num_classes"]
        self.timeout = float(timeout)
        self.startup_timeout = float(startup_timeout if startup_timeout is not None else max(timeout, 120.0))
        self.batch_size = int(batch_size)
        self._lock = threading.Lock()
        self._closed = False
        self._worker: _Worker | None = None
        self._ensure_worker()

    def _ensure_worker(self) -> _Worker:
        if self._closed:
            raise ArtifactError(f"deployment {self.artifact_dir} is closed")
        if self._worker is None or not self._worker.alive:
            self._worker = _Worker(self.artifact_dir, self.startup_timeout, policy=self.policy)
        return self._worker

    @property
    def sandbox(self) -> dict[str, str]:
        """The protections the current (or last) worker reported."""
        return dict(self._worker.sandbox) if self._worker is not None else {}

    @property
    def worker_pid(self) -> int | None:
        """PID of the live worker process (None when none is running)."""
        w = self._worker
        return w.proc.pid if w is not None and w.alive else None

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            got = list(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise ValueError(f"expected input [N, {', '.join(map(str, self.input_shape))}], got {got}")
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outs = []
        with self._lock:
            for i in range(0, len(arr), self.batch_size):
                outs.append(self._ensure_worker().predict(arr[i:i + self.batch_size], self.num_classes,
                                                          self.timeout))
        logits = np.concatenate(outs) if outs else np.zeros((0, self.num_classes), np.float32)
        return torch.from_numpy(np.ascontiguousarray(logits)).to(x.device)

    def suspend(self) -> None:
        """Stop the worker to free its memory; the next ``predict`` starts a fresh one (same checks)."""
        with self._lock:
            if self._worker is not None:
                self._worker.stop()
                self._worker = None

    def close(self) -> None:
        """Stop the worker; later ``predict`` calls raise ArtifactError."""
        with self._lock:
            self._closed = True
            if self._worker is not None:
                self._worker.stop()

    def __enter__(self) -> "IsolatedPredictor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"IsolatedPredictor({self.artifact_dir!r}, runtime={self.manifest['runtime']!r})"
