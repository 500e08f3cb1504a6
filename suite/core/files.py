"""Small file primitives shared by every cache and record writer.

* :func:`json_digest` -- the one "sha256 of ``json.dumps(sort_keys=True)``"
  used for every cache key;
* :func:`sha256_file`, :func:`fsync_dir`, :func:`atomic_write_text`;
* :func:`file_lock` -- an optional inter-process ``fcntl`` lock (an
  optimisation only: nothing may depend on it for correctness, two hosts
  sharing an NFS cache may not share locks);
* :func:`update_json` -- a locked read-merge-write of one JSON file (the
  single-file caches: TVM tuning database, latency tables).  Writers never
  fail each other and the file is always a complete JSON document; without a
  working lock a concurrent update may at worst drop the other writer's
  newest entries (they are re-measured later), never the file.

Imports nothing from the suite (bottom of ``suite.core``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def json_digest(payload: Any, *, compact: bool = False) -> str:
    """sha256 hex of ``json.dumps(payload, sort_keys=True, default=str)``.

    compact: use ``separators=(",", ":")`` (the model-cache key's historical
    form); the default spacing is that of every other cache key.  Changing
    either changes every on-disk cache key.
    """
    separators = (",", ":") if compact else None
    blob = json.dumps(payload, sort_keys=True, default=str, separators=separators)
    return hashlib.sha256(blob.encode()).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 hex of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory's entries (renames) to disk; best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a fsynced temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; records and manifests are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, shared: bool = False, blocking: bool = True) -> Iterator[bool]:
    """Hold an ``fcntl.flock`` on ``path`` (created if needed) for the block: exclusive, or ``shared``.

    Yields True when the lock is held; False when the file system refused it
    or, with ``blocking=False``, when another process holds a conflicting
    lock (the block then runs unlocked: callers must be correct without it,
    or check the value).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, mode)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """The parsed JSON file, or ``default`` if it is missing or unreadable."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return default


def update_json(path: str | os.PathLike, merge: Callable[[Any], Any], *, lock: bool = True,
                indent: int | None = 0) -> Any:
    """Locked read-merge-write of the JSON file ``path``; returns what was written.

    merge: receives the file's current content (``None`` if missing or
        unreadable) and returns the new JSON-able content.
    lock: hold :func:`file_lock` on ``<path>.lock`` around the read and the
        write, so concurrent updaters merge instead of overwriting each other.
    The write is :func:`atomic_write_text`: readers always see a whole file.
    """
    path = Path(path)
    with file_lock(path.with_name(f".{path.name}.lock")) if lock else contextlib.nullcontext():
        data = merge(read_json(path))
        atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=True) + "\n")
        return data


def state_sha256(model: Any) -> str:
    """sha256 over a torch module's state_dict (names, shapes, dtypes and bytes)."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()
