"""On-disk cache of trained models, keyed by everything that determines them.

Layout: ``<cache_dir>/models/<arch>/<digest>/`` with ``model.pt`` (a plain
``state_dict``) and ``meta.json`` (the key, the sha256 of ``model.pt``, the
training report).  Entries are written to a temporary directory and renamed
into place, so a crash never leaves a half-written entry under the final name.
Loading checks the key, the sha256 and the state-dict structure and loads with
``weights_only=True``; any mismatch is reported as a :class:`CacheMiss` with
the reason, and the caller rebuilds -- a corrupt entry is never used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

CACHE_FORMAT = 1


@dataclass(frozen=True)
class ModelKey:
    """Identity of a trained model: (model, width, source, seed, training recipe)."""

    arch: str
    width: float
    in_channels: int
    num_classes: int
    source: str
    source_sha256: str
    seed: int
    recipe: tuple[tuple[str, Any], ...]

    @classmethod
    def make(cls, *, arch: str, width: float, in_channels: int, num_classes: int, source: str,
             source_sha256: str, seed: int, recipe: dict[str, Any]) -> "ModelKey":
        return cls(arch, float(width), int(in_channels), int(num_classes), source, source_sha256,
                   int(seed), tuple(sorted(recipe.items())))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["recipe"] = dict(self.recipe)
        d["format"] = CACHE_FORMAT
        return d

    def digest(self) -> str:
        blob = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def model_id(self) -> str:
        """Stable, human-readable model ID (RobustBench style)."""
        return f"{self.arch}-w{self.width:g}-{self.source}-s{self.seed}-{self.digest()[:8]}"


class CacheMiss(Exception):
    """No usable entry; ``reason`` says why (absent, corrupt, mismatched)."""

    def __init__(self, reason: str, corrupt: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.corrupt = corrupt


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


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


class ModelCache:
    """Trained-model cache rooted at ``root`` (created on demand)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def entry_dir(self, key: ModelKey) -> Path:
        return self.root / "models" / key.arch / key.digest()[:24]

    @contextlib.contextmanager
    def lock(self, key: ModelKey) -> Iterator[None]:
        """Exclusive inter-process lock on one key (so parallel jobs train once)."""
        d = self.root / "models" / key.arch
        d.mkdir(parents=True, exist_ok=True)
        with open(d / f".{key.digest()[:24]}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def load(self, key: ModelKey, model: torch.nn.Module) -> dict[str, Any]:
        """Load the entry for ``key`` into ``model``; return its meta or raise CacheMiss."""
        d = self.entry_dir(key)
        if not d.exists():
            raise CacheMiss("absent")
        try:
            meta = json.loads((d / "meta.json").read_text())
        except (OSError, ValueError) as err:
            raise CacheMiss(f"meta.json unreadable ({err.__class__.__name__})", corrupt=True) from None
        if not isinstance(meta, dict) or meta.get("key") != key.as_dict():
            raise CacheMiss("meta.json key does not match the requested model", corrupt=True)
        weights = d / "model.pt"
        if not weights.exists():
            raise CacheMiss("model.pt missing", corrupt=True)
        digest = sha256_file(weights)
        if digest != meta.get("sha256"):
            raise CacheMiss("model.pt sha256 mismatch", corrupt=True)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure means corrupt
            raise CacheMiss(f"model.pt does not load ({err.__class__.__name__})", corrupt=True) from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CacheMiss("model.pt is not a state_dict of tensors", corrupt=True)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise CacheMiss(f"state_dict does not fit the model ({first})", corrupt=True) from None
        return meta

    def save(self, key: ModelKey, model: torch.nn.Module, extra: dict[str, Any]) -> dict[str, Any]:
        """Write ``model``'s state_dict and meta atomically; return the meta."""
        final = self.entry_dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
        try:
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            torch.save(state, tmp / "model.pt")
            meta = {"key": key.as_dict(), "model_id": key.model_id(), "sha256": sha256_file(tmp / "model.pt"),
                    **extra}
            atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return meta

    def discard(self, key: ModelKey) -> None:
        shutil.rmtree(self.entry_dir(key), ignore_errors=True)

    def get_or_create(self, key: ModelKey, build: Callable[[], torch.nn.Module],
                      train: Callable[[torch.nn.Module], dict[str, Any]],
                      warn: Callable[[str], None] = lambda msg: None) -> tuple[torch.nn.Module, dict[str, Any], bool]:
        """Return ``(model, meta, hit)``; trains and saves on a miss.

        build: returns a freshly initialised model (deterministic for the key).
        train: trains the model in place and returns extra meta to store.
        warn: called with a one-line message when a corrupt entry is rebuilt.
        """
        with self.lock(key):
            model = build()
            try:
                return model, self.load(key, model), True
            except CacheMiss as miss:
                if miss.corrupt:
                    warn(f"cache entry {self.entry_dir(key)} is corrupt ({miss.reason}); rebuilding it")
                    self.discard(key)
            model = build()
            extra = train(model)
            meta = self.save(key, model, extra)
            return model, meta, False
