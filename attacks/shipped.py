"""Meta-trained attackers that ship inside the package, and how a run picks one.

The learned optimizer is coordinate-wise and the learned init is a 32x32
pattern in budget units, so a trained state is a few tens of kB and serves
any source, resolution and budget of its norm: meta-train once, adapt to new
sources instantly.  Each shipped state lives in ``attacks/shipped/<name>/``
(``state.pt``: tensors only, loaded with ``weights_only=True``;
``meta.json``: config, provenance of every task, the command that made it,
and the sha256 of ``state.pt``), and ``attacks/shipped/SHA256SUMS`` lists the
sha256 of both files of every state.

A run may only use a state whose meta-training never saw its source's
dataset family (:func:`pick_shipped`); among those it prefers one that never
saw its architecture either.  States are produced by ``python -m suite
meta-train ... --ship NAME`` (see the README), reproducible from the seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suite.core.errors import ArtifactError

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
SUMS = "SHA256SUMS"


@dataclass(frozen=True)
class ShippedAttacker:
    """One shipped meta-trained state, described from its ``meta.json`` (the tensors are loaded on demand)."""

    name: str
    path: Path
    variant: str
    norm: str
    sources: frozenset[str]
    families: frozenset[str]
    archs: frozenset[str]
    sha256: str

    def never_saw(self, source: str, family: str | None) -> bool:
        """True when neither ``source`` nor any source of its dataset family was a meta-training task."""
        return source not in self.sources and (family is None or family not in self.families)

    def load(self):
        """The :class:`attacks.meta.MetaState` (sha256 checked against SHA256SUMS and meta.json)."""
        from attacks.meta import load_state

        verify(self.path)
        state = load_state(self.path)
        state.info["shipped"] = self.name
        return state


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_sums(directory: Path = SHIPPED_DIR) -> dict[str, str]:
    """``{"<name>/<file>": sha256}`` from ``SHA256SUMS`` (empty if there is none)."""
    path = directory / SUMS
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, rel = line.split(None, 1)
            out[rel.strip()] = digest
    return out


def verify(path: Path) -> None:
    """ArtifactError unless both files of the state at ``path`` match ``SHA256SUMS``."""
    sums = read_sums(path.parent)
    for fname in ("state.pt", "meta.json"):
        rel = f"{path.name}/{fname}"
        if rel not in sums:
            raise ArtifactError(f"shipped attacker {path.name}: {fname} is not listed in {SUMS}")
        if _sha256(path / fname) != sums[rel]:
            raise ArtifactError(f"shipped attacker {path.name}: {fname} does not match its sha256 in {SUMS}")


def describe(path: Path) -> ShippedAttacker:
    try:
        meta = json.loads((path / "meta.json").read_text())
        cfg, tasks = meta["config"], meta["info"]["tasks"]
        return ShippedAttacker(
            name=path.name, path=path, variant=cfg["variant"], norm=cfg["norm"],
            sources=frozenset(t["source"] for t in tasks),
            families=frozenset(t["family"] for t in tasks if t.get("family")),
            archs=frozenset(t["arch"] for t in tasks if t.get("arch")), sha256=meta["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ArtifactError(f"shipped attacker {path.name}: meta.json is unreadable ({err})") from None


def shipped(directory: Path = SHIPPED_DIR) -> list[ShippedAttacker]:
    """Every shipped state, by name."""
    if not directory.is_dir():
        return []
    return [describe(p) for p in sorted(directory.iterdir()) if (p / "meta.json").is_file()]


def pick_shipped(variant: str, norm: str, source: str, arch: str | None = None, *,
                 directory: Path = SHIPPED_DIR) -> ShippedAttacker | None:
    """The shipped ``variant`` state for ``norm`` whose tasks never saw ``source``'s family; None if none fits.

    Among the candidates, one whose tasks never used ``arch`` comes first.
    """
    from attacks.tasks import family_of

    family = family_of(source)
    fits = [s for s in shipped(directory) if s.variant == variant and s.norm == norm and s.never_saw(source, family)]
    fits.sort(key=lambda s: (arch is not None and arch in s.archs, s.name))
    return fits[0] if fits else None


def ship(state_dir: str | os.PathLike, name: str, provenance: dict[str, Any],
         directory: Path = SHIPPED_DIR) -> Path:
    """Copy a trained state into ``directory/name`` with ``provenance`` added to its info; update SHA256SUMS.

    The new directory is written aside and renamed into place, and
    SHA256SUMS is rewritten atomically, so a crash leaves the old state or
    the new one.
    """
    from attacks.meta import load_state, save_state

    state = load_state(state_dir)
    state.info.update(provenance)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=directory))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a package directory is world-readable
    save_state(state, tmp)
    final = directory / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    sums = {k: v for k, v in read_sums(directory).items() if not k.startswith(f"{name}/")}
    for fname in ("state.pt", "meta.json"):
        sums[f"{name}/{fname}"] = _sha256(final / fname)
    text = "".join(f"{sums[k]}  {k}\n" for k in sorted(sums))
    fd, tmp_sums = tempfile.mkstemp(prefix=".sums.", dir=directory)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp_sums, 0o644)
    os.replace(tmp_sums, directory / SUMS)
    return final
