"""On-disk cache of trained models, keyed by everything that determines them.

Layout: ``<cache_dir>/models/<arch>/<digest>/`` (a :mod:`suite.core.store` entry) with ``model.pt`` (a plain
``state_dict``) and ``meta.json`` (the key, the sha256 of ``model.pt``, the
training report).  Entries are written to a temporary directory and renamed
into place, so a crash never leaves a half-written entry under the final name.
Loading checks the key, the sha256 and the state-dict structure and loads with
``weights_only=True``; any mismatch is reported as a :class:`CacheMiss` with
the reason, and the caller rebuilds -- a corrupt entry is never used.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from suite.core.files import atomic_write_text, fsync_dir, json_digest, sha256_file  # noqa: F401 (re-exported)
from suite.core.store import Store

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
        return json_digest(self.as_dict(), compact=True)

    def model_id(self) -> str:
        """Stable, human-readable model ID (RobustBench style)."""
        return f"{self.arch}-w{self.width:g}-{self.source}-s{self.seed}-{self.digest()[:8]}"


class CacheMiss(Exception):
    """No usable entry; ``reason`` says why (absent, corrupt, mismatched)."""

    def __init__(self, reason: str, corrupt: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.corrupt = corrupt


class ModelCache:
    """Trained-model cache rooted at ``root`` (created on demand); a :class:`~suite.core.store.Store`
    namespace ``models`` with the entry name ``<arch>/<digest[:24]>`` and a per-key lock."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.store = Store(self.root, "models")

    @staticmethod
    def _name(key: ModelKey) -> str:
        return f"{key.arch}/{key.digest()[:24]}"

    def entry_dir(self, key: ModelKey) -> Path:
        return self.store.entry_dir(key.as_dict(), self._name(key))

    @contextlib.contextmanager
    def lock(self, key: ModelKey) -> Iterator[None]:
        """Exclusive inter-process lock on one key (so parallel jobs train once)."""
        with self.store.lock(self.entry_dir(key)):
            yield

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

    @staticmethod
    def _write(directory: Path, key: ModelKey, model: torch.nn.Module, extra: dict[str, Any]) -> dict[str, Any]:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save(state, directory / "model.pt")
        meta = {"key": key.as_dict(), "model_id": key.model_id(), "sha256": sha256_file(directory / "model.pt"),
                **extra}
        atomic_write_text(directory / "meta.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return meta

    def save(self, key: ModelKey, model: torch.nn.Module, extra: dict[str, Any]) -> dict[str, Any]:
        """Write ``model``'s state_dict and meta atomically; return the meta.

        If the entry exists already (another process published it first) it
        is kept and its meta returned; the own copy is discarded.
        """
        entry, won, meta = self.store.publish(key.as_dict(), lambda d: self._write(d, key, model, extra),
                                              name=self._name(key))
        if not won:
            with contextlib.suppress(OSError, ValueError):
                meta = json.loads((entry / "meta.json").read_text())
        return meta

    def discard(self, key: ModelKey) -> None:
        self.store.discard(self.entry_dir(key))

    def get_or_create(self, key: ModelKey, build: Callable[[], torch.nn.Module],
                      train: Callable[[torch.nn.Module], dict[str, Any]],
                      warn: Callable[[str], None] = lambda msg: None) -> tuple[torch.nn.Module, dict[str, Any], bool]:
        """Return ``(model, meta, hit)``; trains and saves on a miss.

        build: returns a freshly initialised model (deterministic for the key).
        train: trains the model in place and returns extra meta to store.
        warn: called with a one-line message when a corrupt entry is rebuilt.
        """

        def load(entry: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
            model = build()
            return model, self.load(key, model)

        def make(tmp: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
            model = build()
            extra = train(model)
            return model, self._write(tmp, key, model, extra)

        got = self.store.get_or_build(
            key.as_dict(), make, load, name=self._name(key), lock=True, legacy=True, corrupt=(CacheMiss,),
            warn=lambda entry, reason: warn(f"cache entry {entry} is corrupt ({reason}); rebuilding it"))
        model, meta = got.value
        return model, meta, got.hit
