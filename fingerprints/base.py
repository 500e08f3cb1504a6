"""The fingerprint-method contract and the fingerprint set it produces.

A method is built from its settings only (``fingerprints.build(name,
**settings)``; an unknown or impossible setting is a
:class:`~suite.core.errors.ConfigError`) and generates fingerprints at call time
from the owner's eager model (gradients of the owner only) and the image
source::

    method = reg.fingerprints.build("ltrc-examples", count=50)
    fps = method.generate(owner_model, source, seed=0)

A :class:`FingerprintSet` is ``x`` ``[N, C, H, W]`` float32 in [0, 1] plus
the label ``y`` ``[N]`` the owner gives each input.  A suspect *matches* a
fingerprint when it answers the same label (label-only access); with
probability access the score of a fingerprint is the probability the suspect
assigns to that label.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from suite.core.cache import atomic_write_text, sha256_file
from suite.core.errors import ArtifactError
from suite.core.files import json_digest
from suite.core.settings import Configurable, Field, SettingsSpec

SET_FORMAT = 1


@dataclass
class FingerprintSet:
    """Generated fingerprints.

    method: canonical method name; settings: the method's resolved settings.
    x: ``[N, C, H, W]`` float32 in [0, 1]; y: ``[N]`` int64 labels the owner gives.
    generation_seconds: wall-clock seconds spent generating (owner gradients included).
    meta: JSON-ready facts (requested count, kept count, owner confidence...).
    """

    method: str
    settings: dict[str, Any]
    x: torch.Tensor
    y: torch.Tensor
    generation_seconds: float
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``fingerprints.npz`` (no pickle) and ``fingerprints.json`` (with its sha256)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / "fingerprints.npz", x=self.x.detach().cpu().float().numpy(),
                 y=self.y.detach().cpu().long().numpy())
        info = {"format": SET_FORMAT, "method": self.method, "settings": self.settings,
                "generation_seconds": self.generation_seconds, "meta": self.meta,
                "count": len(self), "sha256": sha256_file(d / "fingerprints.npz")}
        atomic_write_text(d / "fingerprints.json", json.dumps(info, indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "FingerprintSet":
        """Read a set written by :meth:`save`; ArtifactError if missing, corrupt or malformed."""
        d = Path(directory)
        try:
            info = json.loads((d / "fingerprints.json").read_text())
            if info.get("format") != SET_FORMAT or sha256_file(d / "fingerprints.npz") != info.get("sha256"):
                raise ArtifactError(f"fingerprint set {d} is corrupt (format or sha256 mismatch)")
            with np.load(d / "fingerprints.npz", allow_pickle=False) as arrays:
                x, y = arrays["x"], arrays["y"]
        except ArtifactError:
            raise
        except (OSError, ValueError, KeyError) as err:
            raise ArtifactError(f"fingerprint set {d} is unreadable ({err.__class__.__name__})") from None
        if x.ndim != 4 or y.shape != (x.shape[0],) or not (x.min(initial=0) >= 0 and x.max(initial=0) <= 1):
            raise ArtifactError(f"fingerprint set {d} is malformed (shapes {x.shape}, {y.shape})")
        return cls(info["method"], info["settings"], torch.from_numpy(x.astype(np.float32)),
                   torch.from_numpy(y.astype(np.int64)), float(info["generation_seconds"]), info.get("meta", {}))


def settings_digest(payload: dict[str, Any]) -> str:
    """sha256 hex of a JSON-able dict (sorted keys): :func:`suite.core.files.json_digest`."""
    return json_digest(payload)


# Settings every generator has (each method declares which of them it takes, see COMMON).
COUNT = Field(100, int, ge=1, le=10_000, doc="fingerprints requested")
STEPS = Field(200, int, ge=0, doc="optimisation steps")
SPLIT = ("train", "val", "test")


class FingerprintMethod(Configurable):
    """Base class: settings declared as ``SETTINGS`` (:mod:`suite.core.settings`); subclasses implement ``_generate``.

    Subclasses set ``name`` and ``SETTINGS`` (fields with defaults, types,
    ranges and choices, plus a ``smoke`` profile) and optionally
    :meth:`validate` for checks across settings.  ``method.settings`` is the
    frozen resolved mapping; ``method.count`` reads one setting.
    """

    name: ClassVar[str] = "base"
    SETTINGS: ClassVar[SettingsSpec] = SettingsSpec()

    def digest(self) -> str:
        """Stable digest of (method, settings): part of every cache key."""
        return settings_digest({"method": self.name, "settings": dict(self.settings), "format": SET_FORMAT})

    def generate(self, owner: torch.nn.Module, source, *, seed: int = 0, device: str = "cpu") -> FingerprintSet:
        """Generate fingerprints for ``owner`` (eager, gradients used) on ``source``'s input contract."""
        import time

        owner = owner.eval().to(device)
        flags = [(p, p.requires_grad) for p in owner.parameters()]
        for p, _ in flags:
            p.requires_grad_(False)
        start = time.perf_counter()
        try:
            x, y, meta = self._generate(owner, source, seed=seed, device=device)
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
        seconds = time.perf_counter() - start
        x = x.detach().cpu().float().clamp_(0.0, 1.0)
        return FingerprintSet(self.name, dict(self.settings), x, y.detach().cpu().long(), round(seconds, 3), meta)

    def _generate(self, owner: torch.nn.Module, source, *, seed: int,
                  device: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        raise NotImplementedError

