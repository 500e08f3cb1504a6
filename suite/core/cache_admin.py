"""What the cache holds, and bounding it: the logic behind ``suite cache ls`` / ``suite cache prune``.

An *entry* is a published :class:`~suite.core.store.Store` directory: any
directory below the cache root holding a ``store-manifest.json`` (models,
compressed models, compiled artifacts, meta-trained attackers, fingerprint
banks, zoo members).  Its *last use* is the manifest's mtime (the store
touches it on every hit).  Hidden ``.<name>.tmp-*`` / ``.<name>.trash-*``
directories are builds in progress or removals that were interrupted.

Removal is the store's own: an entry is renamed to a hidden trash name in
one step, then deleted, so it is either whole or gone, never half-deleted;
and only while holding its ``.<name>.use.lock`` exclusively, which every
loader holds shared while it reads, so an entry being loaded or built is
skipped (reported ``in use``), never removed under a reader.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from suite.core.errors import ConfigError
from suite.core.files import file_lock
from suite.core.store import STORE_MANIFEST, Store

_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024 ** 2, "mb": 1024 ** 2, "g": 1024 ** 3,
               "gb": 1024 ** 3, "t": 1024 ** 4, "tb": 1024 ** 4}
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
STALE_TEMPORARY_S = 86400.0  # a build or removal left this long ago is abandoned


def parse_size(text: str) -> int:
    """``"1G"``, ``"500MB"``, ``"2048"`` -> bytes (binary units)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ConfigError(f"bad size {text!r}: use a number with an optional unit K, M, G or T (e.g. 1G)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def parse_age(text: str) -> float:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"90s"``, ``"2w"`` -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhdw])\s*", str(text).lower())
    if not m:
        raise ConfigError(f"bad age {text!r}: use a number and a unit s, m, h, d or w (e.g. 7d)")
    return float(m.group(1)) * _AGE_UNITS[m.group(2)]


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@dataclass
class CacheEntry:
    """One published store entry.

    namespace: the store (``models``, ``compressed``, ``artifacts``, ``meta``...);
    name: its path inside the namespace; size_bytes: every file in it;
    last_used: POSIX seconds (manifest mtime); key: the manifest's key;
    sha256: the files' digests (relative path -> hex), used to tie runs to it;
    used_by: run ids that reference it (filled by :func:`attach_runs`).
    """

    namespace: str
    name: str
    path: Path
    size_bytes: int
    files: int
    last_used: float
    key: Any = None
    sha256: dict[str, str] = field(default_factory=dict)
    used_by: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "name": self.name, "path": str(self.path),
                "size_bytes": self.size_bytes, "files": self.files, "last_used": self.last_used,
                "used_by": self.used_by}


def _dir_size(path: Path) -> tuple[int, int]:
    total = count = 0
    for dirpath, _, filenames in os.walk(path):
        for f in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
                count += 1
            except OSError:
                pass
    return total, count


def tree_size(root: str | os.PathLike) -> int:
    """Bytes of every file below ``root`` (entries, tuning databases, locks, temporaries)."""
    return _dir_size(Path(root))[0] if Path(root).is_dir() else 0


def list_entries(root: str | os.PathLike) -> list[CacheEntry]:
    """Every published entry below ``root``, least recently used first (hidden directories skipped)."""
    root = Path(root)
    out: list[CacheEntry] = []
    if not root.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if STORE_MANIFEST not in filenames:
            continue
        dirnames[:] = []  # an entry's subdirectories are its own files
        path = Path(dirpath)
        rel = path.relative_to(root).parts
        try:
            manifest = json.loads((path / STORE_MANIFEST).read_text())
            last = os.stat(path / STORE_MANIFEST).st_mtime
        except (OSError, ValueError):
            manifest, last = {}, 0.0
        size, count = _dir_size(path)
        out.append(CacheEntry(rel[0], "/".join(rel[1:]) or ".", path, size, count, last,
                              manifest.get("key") if isinstance(manifest, dict) else None,
                              dict(manifest.get("files") or {}) if isinstance(manifest, dict) else {}))
    return sorted(out, key=lambda e: (e.last_used, str(e.path)))


def stale_temporaries(root: str | os.PathLike, *, older_than_s: float = STALE_TEMPORARY_S,
                      now: float | None = None) -> list[Path]:
    """Hidden ``.*.tmp-*`` / ``.*.trash-*`` directories untouched for ``older_than_s`` (abandoned)."""
    now = time.time() if now is None else now
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        keep = []
        for d in sorted(dirnames):
            if d.startswith(".") and (".tmp-" in d or ".trash-" in d):
                p = Path(dirpath) / d
                try:
                    if now - os.stat(p).st_mtime >= older_than_s:
                        found.append(p)
                except OSError:
                    pass
            elif not d.startswith("."):
                keep.append(d)
        dirnames[:] = keep
    return found


def _strings(obj: Any) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def attach_runs(entries: list[CacheEntry], runs_dir: str | os.PathLike) -> None:
    """Fill ``used_by`` from the records below ``runs_dir``.

    A run uses an entry when its record names a path inside the entry (e.g.
    a deployment's artifact directory) or a sha256 equal to one of the
    entry's files (e.g. the model's weights).
    """
    by_digest: dict[str, list[CacheEntry]] = {}
    for e in entries:
        for digest in e.sha256.values():
            by_digest.setdefault(digest, []).append(e)
    for path in sorted(Path(runs_dir).rglob("result.json")):
        if any(part.startswith(".") for part in path.relative_to(runs_dir).parts):
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        run_id = str(record.get("run_id", path.parent.name))
        hits: set[int] = set()
        for text in _strings(record):
            for e in by_digest.get(text, []):
                hits.add(id(e))
            if "/" in text:
                for e in entries:
                    if text == str(e.path) or text.startswith(str(e.path) + os.sep):
                        hits.add(id(e))
        for e in entries:
            if id(e) in hits and run_id not in e.used_by:
                e.used_by.append(run_id)


@dataclass
class PruneReport:
    removed: list[CacheEntry] = field(default_factory=list)
    in_use: list[CacheEntry] = field(default_factory=list)
    temporaries: list[Path] = field(default_factory=list)
    freed_bytes: int = 0
    kept_bytes: int = 0

    def summary(self) -> dict[str, Any]:
        return {"removed": [e.summary() for e in self.removed], "in_use": [str(e.path) for e in self.in_use],
                "temporaries": [str(p) for p in self.temporaries], "freed_bytes": self.freed_bytes,
                "kept_bytes": self.kept_bytes}


def remove_entry(entry: CacheEntry) -> bool:
    """Remove one entry whole (store rename-then-delete) unless a loader holds it; True when removed."""
    use = Store.use_lock_path(entry.path)
    with file_lock(use, blocking=False) as held:
        if not held:
            return False
        Store.discard(entry.path)
        removed = not entry.path.exists()
    if removed:
        try:
            use.unlink()
        except OSError:
            pass
    return removed


def prune(root: str | os.PathLike, *, older_than_s: float | None = None, max_size_bytes: int | None = None,
          dry_run: bool = False, now: float | None = None) -> PruneReport:
    """Remove entries unused for ``older_than_s``, then least recently used ones until under ``max_size_bytes``.

    Entries being read or built are skipped (``in_use``); abandoned
    temporaries (:func:`stale_temporaries`) are removed too.  With neither
    bound given nothing but abandoned temporaries is removed.
    """
    now = time.time() if now is None else now
    report = PruneReport()
    entries = list_entries(root)
    total = sum(e.size_bytes for e in entries)
    victims: list[CacheEntry] = []
    if older_than_s is not None:
        victims += [e for e in entries if now - e.last_used >= older_than_s]
    if max_size_bytes is not None:
        remaining = total - sum(e.size_bytes for e in victims)
        for e in entries:  # least recently used first
            if remaining <= max_size_bytes:
                break
            if e not in victims:
                victims.append(e)
                remaining -= e.size_bytes
    for e in victims:
        if dry_run or remove_entry(e):
            report.removed.append(e)
            report.freed_bytes += e.size_bytes
        else:
            report.in_use.append(e)
    report.kept_bytes = total - report.freed_bytes
    for tmp in stale_temporaries(root, now=now):
        report.temporaries.append(tmp)
        if not dry_run:
            shutil.rmtree(tmp, ignore_errors=True)
    return report
