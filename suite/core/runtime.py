"""The runtime context every component can read: cache directory, device, threads, logging.

The application layer opens one context per run (:func:`using`); a component
that needs the cache directory (the ``auto`` mapping's latency tables, the TVM
tuning database) or the log asks :func:`current` instead of receiving it
through a special case in the pipeline.  Outside any run, :func:`current`
returns defaults (``$SUITE_CACHE`` or ``~/.cache/suite``, CPU, quiet).

Thread counts are *not* process state here: a deployment carries its own.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator


def default_cache_dir() -> str:
    """``$SUITE_CACHE`` if set, else ``~/.cache/suite``."""
    return os.environ.get("SUITE_CACHE") or str(Path.home() / ".cache" / "suite")


def _stderr_log(msg: str) -> None:
    print(f"[suite] {msg}", file=sys.stderr, flush=True)


def _silent(msg: str) -> None:
    return None


@dataclass(frozen=True)
class Runtime:
    """What a run lends to every component it calls.

    cache_dir: root of every content-keyed store (models, compressed models,
        artifacts, tuning database, meta-trained attackers, fingerprints, zoos).
    device: ``cpu`` or ``cuda`` for eager torch work.
    threads: intra-op threads the run was given (> 0).
    quiet: no progress bars or log lines.
    """

    cache_dir: str = field(default_factory=default_cache_dir)
    device: str = "cpu"
    threads: int = 1
    quiet: bool = True

    def log(self, msg: str) -> None:
        (_silent if self.quiet else _stderr_log)(msg)


_CURRENT: contextvars.ContextVar[Runtime | None] = contextvars.ContextVar("suite_runtime", default=None)


def current() -> Runtime:
    """The innermost open runtime context, else defaults."""
    rt = _CURRENT.get()
    return rt if rt is not None else Runtime()


def active() -> Runtime | None:
    """The innermost open runtime context, or None outside any (no cache to write to)."""
    return _CURRENT.get()


@contextlib.contextmanager
def using(rt: Runtime) -> Iterator[Runtime]:
    """Make ``rt`` the current runtime inside the ``with`` block."""
    token = _CURRENT.set(rt)
    try:
        yield rt
    finally:
        _CURRENT.reset(token)


LogFn = Callable[[str], None]
