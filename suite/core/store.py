"""One primitive for every on-disk cache: build privately, verify, publish with one rename.

Layout: ``<root>/<namespace>/<name>/`` where ``name`` is the entry's path
inside the namespace (default: the first 24 hex digits of the key's
:func:`~suite.core.files.json_digest`; caches with a historical layout pass
their own, e.g. ``"<arch>/<digest[:24]>"``).  Every entry holds the files its
``build`` wrote plus :data:`STORE_MANIFEST`: the key and the sha256 of every
file.

Protocol of :meth:`Store.get_or_build`:

1. If the entry exists, its manifest is verified (readable, same key, no
   missing / extra / modified file) and ``load(entry_dir)`` is called.  A
   failed check, or ``load`` raising one of the ``corrupt`` exceptions, is
   reported through ``warn`` and the entry is moved aside atomically (renamed
   to a unique hidden trash name, then removed) and rebuilt.
2. On a miss ``build(tmpdir)`` writes the entry's files into a private
   temporary directory next to the final one; the store hashes and fsyncs
   them, writes the manifest and publishes with a single ``rename``.
3. If the final directory appeared meanwhile (another process, perhaps on
   another host, won the race) the store discards its own copy and loads the
   winner's; this never raises (a corrupt winner is moved aside and the own
   copy published instead).

An optional per-entry ``fcntl`` lock (``lock=True``) makes concurrent builders
of an expensive entry wait instead of building twice; correctness never
depends on it.  Imports nothing above ``suite.core``.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, NamedTuple, TypeVar

from suite.core.errors import ArtifactError
from suite.core.files import atomic_write_text, file_lock, fsync_dir, json_digest, sha256_file

STORE_MANIFEST = "store-manifest.json"
STORE_FORMAT = 1

T = TypeVar("T")


class CorruptEntry(Exception):
    """A published entry failed verification; ``reason`` is one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Got(NamedTuple, Generic[T]):
    """What :meth:`Store.get_or_build` returns."""

    value: T      # from ``load`` (hit) or ``build`` (miss, unless reload)
    path: Path    # the published entry directory
    hit: bool     # True when the value came from an entry this call did not publish


def normalize_key(key: Any) -> Any:
    """The key as it reads back from JSON (tuples -> lists, other objects -> str)."""
    return json.loads(json.dumps(key, sort_keys=True, default=str))


def _files_of(directory: Path) -> list[str]:
    """Relative POSIX paths of every regular file under ``directory`` (links included), sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for f in filenames:
            out.append((Path(dirpath) / f).relative_to(directory).as_posix())
    return sorted(out)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else err.__class__.__name__


class Store:
    """The caches of one kind under ``<root>/<namespace>/``.

    root: the cache directory (``--cache-dir``); namespace: the kind of entry
    ("models", "compressed", "artifacts", "meta", "fingerprints", "zoo"...).
    """

    def __init__(self, root: str | os.PathLike, namespace: str) -> None:
        self.root = Path(root)
        self.namespace = namespace
        self.dir = self.root / namespace

    # ------------------------------------------------------------- naming
    def entry_dir(self, key: Any, name: str | None = None) -> Path:
        """The final directory of ``key`` (``name``: its path inside the namespace)."""
        return self.dir / (name if name is not None else json_digest(key)[:24])

    @contextlib.contextmanager
    def lock(self, entry: Path) -> Iterator[bool]:
        """Exclusive inter-process lock on one entry (``.<name>.lock`` next to it); yields whether held."""
        with file_lock(entry.parent / f".{entry.name}.lock") as held:
            yield held

    @staticmethod
    def use_lock_path(entry: Path) -> Path:
        """``.<name>.use.lock``: loaders hold it shared while reading an entry; ``cache prune`` exclusive."""
        return entry.parent / f".{entry.name}.use.lock"

    # -------------------------------------------------------- verification
    def verify(self, entry: Path, key: Any, *, sidecars: tuple[str, ...] = ()) -> dict[str, Any]:
        """Check ``entry`` against its manifest and ``key``; return the manifest or raise CorruptEntry.

        sidecars: fnmatch patterns (relative paths) of files legitimately
        added to the entry after publication (not in the manifest, not extra).
        """
        try:
            manifest = json.loads((entry / STORE_MANIFEST).read_text())
        except FileNotFoundError:
            raise CorruptEntry(f"{STORE_MANIFEST} missing") from None
        except (OSError, ValueError) as err:
            raise CorruptEntry(f"{STORE_MANIFEST} unreadable ({err.__class__.__name__})") from None
        if (not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT
                or not isinstance(manifest.get("files"), dict)):
            raise CorruptEntry(f"{STORE_MANIFEST} is malformed")
        if manifest.get("key") != normalize_key(key):
            raise CorruptEntry(f"{STORE_MANIFEST} key does not match the requested entry")
        listed: dict[str, str] = manifest["files"]
        present = [f for f in _files_of(entry) if f != STORE_MANIFEST]
        extra = [f for f in present if f not in listed and not any(fnmatch.fnmatch(f, p) for p in sidecars)]
        if extra:
            raise CorruptEntry(f"unexpected file {extra[0]}")
        missing = sorted(set(listed) - set(present))
        if missing:
            raise CorruptEntry(f"{missing[0]} missing")
        for rel, digest in sorted(listed.items()):
            try:
                actual = sha256_file(entry / rel)
            except OSError as err:
                raise CorruptEntry(f"{rel} unreadable ({err.__class__.__name__})") from None
            if actual != digest:
                raise CorruptEntry(f"{rel} sha256 mismatch")
        return manifest

    # ------------------------------------------------------------ writing
    def stage(self, key: Any, build: Callable[[Path], T], entry: Path) -> tuple[Path, T]:
        """Run ``build`` in a fresh temporary sibling of ``entry``; write the manifest; fsync.

        Returns ``(tmpdir, build's value)``; the caller publishes or removes
        ``tmpdir``.  On any exception (KeyboardInterrupt included) the
        temporary directory is removed and the exception propagates.
        """
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}.tmp-"))
        try:
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; caches may be shared
            value = build(tmp)
            files: dict[str, str] = {}
            for rel in _files_of(tmp):
                if rel == STORE_MANIFEST:
                    raise ValueError(f"build wrote the store's own {STORE_MANIFEST}")
                path = tmp / rel
                files[rel] = sha256_file(path)
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())
            for dirpath, _, _ in os.walk(tmp):
                fsync_dir(dirpath)
            manifest = {"format": STORE_FORMAT, "namespace": self.namespace, "key": normalize_key(key),
                        "files": files}
            atomic_write_text(tmp / STORE_MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
            fsync_dir(tmp)
            return tmp, value
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _rename(self, tmp: Path, entry: Path) -> bool:
        """Publish ``tmp`` as ``entry``; False when ``entry`` already exists (the race was lost)."""
        try:
            os.rename(tmp, entry)
        except OSError as err:
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR) or entry.exists():
                return False
            raise
        fsync_dir(entry.parent)
        return True

    def publish(self, key: Any, build: Callable[[Path], T], *, name: str | None = None) -> tuple[Path, bool, T]:
        """Build and publish ``key`` unconditionally; ``(entry, won, build's value)``.

        won is False when the entry already existed: the own copy is then
        discarded and the existing entry is left as it is.
        """
        entry = self.entry_dir(key, name)
        tmp, value = self.stage(key, build, entry)
        try:
            return entry, self._rename(tmp, entry), value
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def discard(entry: Path, *, only_inode: int | None = None) -> None:
        """Move ``entry`` aside atomically (unique hidden trash name), then remove it.

        only_inode: remove only if the directory still is the one that was
        judged corrupt (a fresh entry published meantime is put back).
        """
        trash = entry.parent / f".{entry.name}.trash-{secrets.token_hex(6)}"
        try:
            os.rename(entry, trash)
        except FileNotFoundError:
            return  # someone else moved it already
        except OSError:
            shutil.rmtree(entry, ignore_errors=True)
            return
        if only_inode is not None and os.stat(trash).st_ino != only_inode:
            with contextlib.suppress(OSError):
                os.rename(trash, entry)  # not the entry we judged: put it back if nobody replaced it
                return
        shutil.rmtree(trash, ignore_errors=True)

    # ------------------------------------------------------------ reading
    def _try_load(self, entry: Path, key: Any, load: Callable[[Path], T],
                  warn: Callable[[Path, str], None] | None, corrupt: tuple[type[BaseException], ...],
                  sidecars: tuple[str, ...], legacy: bool) -> tuple[bool, T | None]:
        try:
            inode = os.stat(entry).st_ino
        except FileNotFoundError:
            return False, None
        try:
            with file_lock(self.use_lock_path(entry), shared=True):  # ``cache prune`` leaves it alone meanwhile
                if not entry.exists():
                    return False, None  # pruned between the stat and the lock
                try:
                    self.verify(entry, key, sidecars=sidecars)
                except CorruptEntry as err:
                    if not (legacy and err.reason == f"{STORE_MANIFEST} missing"):
                        raise
                value = load(entry)
                with contextlib.suppress(OSError):  # last use, for ``cache ls`` / ``prune --older-than``
                    os.utime(entry / STORE_MANIFEST)
                return True, value
        except CorruptEntry as err:
            reason = err.reason
        except corrupt as err:  # type: ignore[misc]
            reason = getattr(err, "reason", None) or _one_line(err)
        if warn is not None:
            warn(entry, reason)
        self.discard(entry, only_inode=inode)
        return False, None

    def get_or_build(self, key: Any, build: Callable[[Path], T], load: Callable[[Path], T], *,
                     name: str | None = None, lock: bool = False,
                     warn: Callable[[Path, str], None] | None = None,
                     corrupt: tuple[type[BaseException], ...] = (ArtifactError, OSError, ValueError),
                     sidecars: tuple[str, ...] = (), legacy: bool = False, reload: bool = False,
                     keep_own: bool = False) -> Got[T]:
        """The entry of ``key``: loaded if present and valid, else built and published.

        key: JSON-able dict identifying the entry (stored in the manifest and
            compared on every load).
        build(tmpdir: Path) -> T: writes the entry's files into ``tmpdir``
            (an empty private directory next to the final one; it must not
            write :data:`STORE_MANIFEST`) and returns the in-memory value.
        load(entry_dir: Path) -> T: reads a verified entry; raising one of
            ``corrupt`` marks the entry corrupt (reported, moved aside, rebuilt).
        name: path of the entry inside the namespace (default: digest[:24]).
        lock: hold an inter-process lock on the entry while loading/building.
        warn(entry_dir: Path, reason: str) -> None: called once per corrupt
            entry with a one-line reason, before it is moved aside.
        sidecars: fnmatch patterns of files added to the entry after
            publication (not checked).
        legacy: accept an entry without a manifest (written by an older
            version) when ``load`` accepts it.
        reload: return ``load(entry)`` instead of build's value after publishing.
        keep_own: when the race is lost, return build's value (already live,
            e.g. a loaded deployment) instead of loading the winner's entry.

        Returns ``Got(value, entry_dir, hit)``; hit is True when the value
        was loaded from an entry this call did not publish.
        """
        entry = self.entry_dir(key, name)
        with self.lock(entry) if lock else contextlib.nullcontext():
            ok, value = self._try_load(entry, key, load, warn, corrupt, sidecars, legacy)
            if ok:
                return Got(value, entry, True)  # type: ignore[arg-type]
            tmp, value = self.stage(key, build, entry)
            try:
                for _ in range(5):
                    if self._rename(tmp, entry):
                        return Got(load(entry) if reload else value, entry, False)
                    if keep_own:
                        break
                    ok, theirs = self._try_load(entry, key, load, warn, corrupt, sidecars, legacy)
                    if ok:
                        return Got(theirs, entry, True)  # type: ignore[arg-type]
                    # the winner was corrupt and has been moved aside: publish ours instead
                return Got(value, entry, False)  # never raise for a lost race: use the own value
            finally:
                shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["STORE_MANIFEST", "CorruptEntry", "Got", "Store", "json_digest", "normalize_key"]
