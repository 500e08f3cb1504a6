"""Crafted attacks as cached artifacts; every run still scores them afresh.

A universal perturbation ``[C, H, W]`` or a set of per-image adversarials
``[N, C, H, W]`` is an *artifact* of (the attack's resolved settings, the
exact crafting model, the exact craft images, the tracking set): crafting
the same thing again gives the same tensor.  What a run reports about it --
fooling rate, robust accuracy on each subject, the budget sweep's points --
is a *measurement*, and the attack stage takes it afresh on every run from
the loaded tensor.  The crafting facts (steps, gradient queries, seconds,
the tracking history) are the artifact's provenance, stored with it and
returned with ``cached=True`` so a record says that the craft was reused.

Only white-box crafts (an ``nn.Module`` whose state can be hashed) are
cached; an attack crafted through a black-box predictor (a compiled
deployment) is crafted again by every run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from attacks.base import AttackResult
from suite.core.errors import ArtifactError
from suite.core.files import state_sha256
from suite.core.store import Store

FORMAT = 1
NAMESPACE = "attacks"
TENSOR_FILE = "crafted.pt"
FACTS_FILE = "craft.json"


def tensor_digest(*tensors: torch.Tensor | None) -> str:
    """sha256 over the shapes, dtypes and bytes of ``tensors`` (None counts as an empty marker)."""
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none|")
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _plain(value: Any) -> bool:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return False


def craft_key(attack: Any, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
              track: tuple[torch.Tensor, torch.Tensor] | None = None,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The cache key of crafting ``attack`` on ``model`` from ``x`` (and ``y`` / ``track``).

    Settings that are not plain JSON (a meta-learned state object) must be
    identified through ``extra`` (e.g. the shipped state's sha256); they are
    left out of the settings part of the key.
    """
    settings = {k: v for k, v in sorted(attack.settings.items()) if _plain(v)}
    skipped = sorted(k for k, v in attack.settings.items() if not _plain(v))
    if skipped and not extra:
        raise ValueError(f"settings {skipped} of {attack.name} need an identity in extra=")
    return {"format": FORMAT, "attack": attack.name, "settings": settings, "model": type(model).__name__, "state": state_sha256(model),
            "images": tensor_digest(x, y), "track": tensor_digest(*track) if track is not None else None,
            "extra": extra or {}, "torch": torch.__version__}


def _save(result: AttackResult, directory: Path) -> None:
    tensors = {"perturbation": result.perturbation, "adversarials": result.adversarials, "success": result.success}
    torch.save({k: v for k, v in tensors.items() if v is not None}, directory / TENSOR_FILE)
    facts = {"attack": result.attack, "norm": result.norm, "eps": result.eps, "metrics": result.metrics,
             "converged": result.converged, "steps": result.steps, "grad_queries": result.grad_queries,
             "queries": result.queries, "seconds": result.seconds, "history": result.history,
             "target": result.target}
    (directory / FACTS_FILE).write_text(json.dumps(facts, indent=1) + "\n")


def _load(directory: Path) -> AttackResult:
    try:
        tensors = torch.load(directory / TENSOR_FILE, map_location="cpu", weights_only=True)
        facts = json.loads((directory / FACTS_FILE).read_text())
    except Exception as err:  # corrupt or unreadable: the store moves the entry aside and crafts again
        raise ArtifactError(f"unreadable crafted attack ({type(err).__name__}: {err})") from None
    if not isinstance(tensors, dict) or not ({"perturbation", "adversarials"} & set(tensors)):
        raise ArtifactError("crafted attack holds neither a perturbation nor adversarials")
    return AttackResult(facts["attack"], facts["norm"], facts["eps"], perturbation=tensors.get("perturbation"),
                        adversarials=tensors.get("adversarials"), success=tensors.get("success"),
                        metrics=facts["metrics"], converged=facts["converged"], steps=facts["steps"],
                        grad_queries=facts["grad_queries"], queries=facts["queries"], seconds=facts["seconds"],
                        history=facts["history"], target=facts["target"], cached=True)


def cached_craft(attack: Any, model: Any, x: torch.Tensor, y: torch.Tensor | None = None, *,
                 track: tuple[torch.Tensor, torch.Tensor] | None = None, cache_dir: str | Path | None = None,
                 extra: dict[str, Any] | None = None,
                 warn: Any = None) -> AttackResult:
    """``attack.craft(model, x, ...)``, loaded from the cache when the same craft was done before.

    Universal attacks (``attack.universal``) get ``track``; per-image ones get
    ``y``.  Without ``cache_dir``, or for a model that is not an
    ``nn.Module`` (a black-box predictor), this is a plain craft.
    """
    def craft() -> AttackResult:
        if attack.universal:
            return attack.craft(model, x, track=track) if track is not None else attack.craft(model, x)
        return attack.craft(model, x, y)

    if cache_dir is None or not isinstance(model, torch.nn.Module):
        return craft()
    key = craft_key(attack, model, x, y, track, extra)
    made: dict[str, AttackResult] = {}

    def build(tmp: Path) -> AttackResult:
        made["result"] = result = craft()
        _save(result, tmp)
        return result

    got = Store(cache_dir, NAMESPACE).get_or_build(
        key, build, _load, name=f"{attack.name}/{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]}",
        corrupt=(ArtifactError,),
        warn=(lambda entry, why: warn(f"warning: cached attack {entry} unusable ({why}); crafting again"))
        if warn is not None else None)
    return got.value if got.hit else made.get("result", got.value)
