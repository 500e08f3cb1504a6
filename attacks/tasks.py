"""Meta-training tasks from the suite's own sources and model zoo.

A task is (source, victim model); its model is trained (or loaded from the
model cache) by the same machinery as ``suite run``, with the meta profile's
width and recipe.  Only the task's *train* split is handed to meta-training.
"""

from __future__ import annotations

from typing import Any, Callable

from attacks.meta import Task
from suite.core import registries as reg
from suite.core.config import PROFILE_DEFAULTS, TrainRecipe
from suite.core.models import ModelSpec, SourceSpec, get_trained_model, load_source
from suite.core.runtime import Runtime, current

# Victim models for meta-training tasks, per profile: narrower and shorter
# than the run's own model (the learned optimizer only needs gradients of
# reasonable victims, not the best ones).
TASK_PROFILES: dict[str, dict[str, Any]] = {
    "default": {"width": 0.5, "recipe": TrainRecipe(epochs=15), "limit": None},
    "smoke": {"width": 0.25, "recipe": PROFILE_DEFAULTS["smoke"]["recipe"], "limit": 96},
}


# Victim architectures of the meta-training tasks, whatever the run's model:
# the learned optimizer works on input gradients, so its tasks need not share
# the attacked architecture (bench/uap.py adapts it to VGG16 and ResNet-18).
# ResNet-18 trains reliably on every embedded source with the default recipe;
# VGG16 (width 0.5) diverged in warm-up on digits-photo32 and digits-affine24
# (test accuracy 0.17-0.38 and 0.16), which makes useless meta-training tasks.
DEFAULT_TASK_MODELS: tuple[str, ...] = ("resnet18",)


def embedded_sources() -> list[str]:
    return [e.name for e in reg.sources.entries() if e.tags.get("embedded")]


def other_sources(held_out: str) -> list[str]:
    """Embedded sources other than ``held_out`` (the meta-training sources)."""
    held = reg.sources.canonical(held_out)
    return [s for s in embedded_sources() if s != held]


def build_tasks(sources: list[str], archs: list[str], *, profile: str = "default", seed: int = 0,
                cache_dir: str | None = None, threads: int | None = None, quiet: bool = True,
                width: float | None = None, log: Callable[[str], None] = lambda m: None) -> list[Task]:
    """Train or load one victim per (source, arch) and wrap them as tasks."""
    prof = TASK_PROFILES[profile]
    base = current()
    rt = Runtime(cache_dir=cache_dir or base.cache_dir, device=base.device, threads=threads or base.threads,
                 quiet=quiet)
    tasks = []
    for src_name in sources:
        for arch in archs:
            source = load_source(SourceSpec(src_name, None, prof["limit"]))
            spec = ModelSpec(arch, float(width or prof["width"]), seed, prof["recipe"])
            trained = get_trained_model(spec, source, rt, log=log)
            log(f"meta task {src_name}/{arch}: {trained.info['id']} "
                f"({'cached' if trained.info['cache_hit'] else 'trained'})")
            tasks.append(Task(f"{source.name}/{trained.info['id']}", source.name, trained.model, source.train,
                              model_id=trained.info["sha256"]))
    return tasks


def with_profile(cfg_kwargs: dict[str, Any], profile: str) -> dict[str, Any]:
    """Meta-training defaults per profile (smoke: tiny)."""
    if profile == "smoke":
        return {"meta_steps": 6, "support": 16, "query": 32, "inner_steps": 4, **cfg_kwargs}
    return dict(cfg_kwargs)

