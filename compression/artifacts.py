"""Saving and loading compressed models.

``DIR/`` (normally ``runs/<run_id>/compressed/``) holds:

* ``model.pt``    -- the compressed model's ``state_dict`` (plain tensors);
* ``masks.pt``    -- fixed masks, layer name -> bool tensor (weight-level schemes);
* ``plan.json``   -- the per-layer plan (:class:`compression.plan.Plan`);
* ``compact.npz`` + ``compact.json`` -- per-layer compact arrays and their
  scheme/shape/meta, what the compiler consumes;
* ``shapes.json`` -- weight shapes after channel removal (filter / pas);
* ``manifest.json`` -- sha256 of every file above.

Everything loads with ``torch.load(weights_only=True)`` / ``numpy.load(allow_pickle=False)``;
a file whose sha256 differs from the manifest is refused with ArtifactError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from compression.plan import Plan
from compression.schemes.base import CompactLayer
from suite.core.cache import atomic_write_text, sha256_file
from suite.core.errors import ArtifactError


def save_compression(result, directory: Path, relative_to: Path | None = None) -> dict[str, Any]:
    """Write a :class:`~compression.base.CompressionResult`; return record fields (relative paths)."""
    directory.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    torch.save({k: v.detach().cpu() for k, v in result.model.state_dict().items()}, directory / "model.pt")
    files.append("model.pt")
    if result.masks is not None:
        torch.save(result.masks.state_dict(), directory / "masks.pt")
        files.append("masks.pt")
    if result.plan is not None:
        atomic_write_text(directory / "plan.json", result.plan.to_json())
        files.append("plan.json")
    if result.compact:
        arrays = {f"{name}/{key}": arr for name, c in result.compact.items() for key, arr in c.arrays.items()}
        np.savez(directory / "compact.npz", **arrays)
        meta = {name: {"scheme": c.scheme, "shape": list(c.shape), "meta": c.meta, "arrays": sorted(c.arrays),
                       "nbytes": c.nbytes()} for name, c in result.compact.items()}
        atomic_write_text(directory / "compact.json", json.dumps(meta, indent=2) + "\n")
        files += ["compact.npz", "compact.json"]
    if result.shapes is not None:
        atomic_write_text(directory / "shapes.json", json.dumps(result.shapes, indent=2) + "\n")
        files.append("shapes.json")
    for name, text in result.extra.items():
        atomic_write_text(directory / name, text)
        files.append(name)
    manifest = {name: sha256_file(directory / name) for name in files}
    atomic_write_text(directory / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    rel = (lambda p: str(p.relative_to(relative_to))) if relative_to else str
    out = {"artifacts": rel(directory), "model_file": rel(directory / "model.pt")}
    if result.plan is not None:
        out["plan"] = rel(directory / "plan.json")
    if result.compact:
        out["compact_bytes"] = int(sum(c.nbytes() for c in result.compact.values()))
    return out


def _verified(directory: Path, name: str, manifest: dict[str, str]) -> Path:
    path = directory / name
    if not path.exists():
        raise ArtifactError(f"{path} is missing")
    if manifest.get(name) != sha256_file(path):
        raise ArtifactError(f"{path} does not match its sha256 in manifest.json (corrupt or modified)")
    return path


def load_manifest(directory: Path) -> dict[str, str]:
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError) as err:
        raise ArtifactError(f"{directory}/manifest.json unreadable ({err.__class__.__name__})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{directory}/manifest.json is malformed")
    return manifest


def load_compact(directory: str | Path) -> dict[str, CompactLayer]:
    directory = Path(directory)
    manifest = load_manifest(directory)
    meta = json.loads(_verified(directory, "compact.json", manifest).read_text())
    with np.load(_verified(directory, "compact.npz", manifest), allow_pickle=False) as data:
        return {name: CompactLayer(m["scheme"], tuple(m["shape"]),
                                   {k: data[f"{name}/{k}"] for k in m["arrays"]}, m["meta"])
                for name, m in meta.items()}


def load_compression(directory: str | Path, build: Callable[[], torch.nn.Module]):
    """Rebuild ``(model, plan, masks_state)`` from ``directory``; ``build()`` gives a fresh dense model."""
    directory = Path(directory)
    manifest = load_manifest(directory)
    model = build()
    if "shapes.json" in manifest:
        from compression.channel import rebuild_pruned

        shapes = json.loads(_verified(directory, "shapes.json", manifest).read_text())
        model = rebuild_pruned(model, shapes) or model
    try:
        state = torch.load(_verified(directory, "model.pt", manifest), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0]
        raise ArtifactError(f"{directory}/model.pt does not load into the model ({first})") from None
    plan = Plan.load(_verified(directory, "plan.json", manifest)) if "plan.json" in manifest else None
    masks = None
    if "masks.pt" in manifest:
        masks = torch.load(_verified(directory, "masks.pt", manifest), map_location="cpu", weights_only=True)
    return model.eval(), plan, masks
