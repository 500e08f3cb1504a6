"""Meta-training tasks from the suite's own sources and model zoo.

A task is (source, victim model) at the source's resolution and standard
budget; its model is trained (or loaded from the model cache) by the same
machinery as ``suite run``, with the task profile's width and recipe.  Only
the task's *train* split is handed to meta-training.

The task family spans two datasets at three resolutions each
(:data:`TASK_SOURCES`): the digit family (16 grey-as-RGB, 24 and 32 colour)
and the Fashion-MNIST family (28 grey, 24 and 32 colour), times the
architectures of :data:`DEFAULT_TASK_MODELS`.  Held-out evaluation leaves a
whole dataset family out (:func:`meta_training_sources`): sources of one
family share their content, so adapting to ``digits16`` after meta-training
on ``digits-photo32`` would not be a new source.
"""

from __future__ import annotations

from typing import Any, Callable

from attacks.meta import Task
from suite.core import registries as reg
from suite.core.config import PROFILE_DEFAULTS, TrainRecipe
from suite.core.errors import ConfigError, DataError
from suite.core.models import ModelSpec, SourceSpec, get_trained_model, load_source
from suite.core.runtime import Runtime, current
from suite.core.threat import threat_model_for

# Victim models for meta-training tasks, per profile: narrower and shorter
# than the run's own model (the learned optimizer only needs gradients of
# reasonable victims, not the best ones).  ``limit``: images per split (the
# digit sources have 1,258 train images; the Fashion-MNIST ones are cut to
# 2,000).  ``families``: per-family overrides; Fashion-MNIST victims train 4
# epochs (0.80-0.85 test accuracy), so that all 18 victims train in about
# half an hour on two cores.
TASK_PROFILES: dict[str, dict[str, Any]] = {
    "default": {"width": 0.5, "recipe": TrainRecipe(epochs=10), "limit": 2000,
                "families": {"fashion": {"recipe": TrainRecipe(epochs=4)}}},
    "smoke": {"width": 0.25, "recipe": PROFILE_DEFAULTS["smoke"]["recipe"], "limit": 96},
}
TASK_PROFILES["full"] = TASK_PROFILES["default"]  # the shipped attackers' tasks: one definition

# The meta-training sources of each dataset family: three resolutions each.
TASK_SOURCES: dict[str, tuple[str, ...]] = {
    "digits": ("digits16", "digits-photo32", "digits-affine24"),
    "fashion": ("fashion-mnist", "fashion-photo32", "fashion-affine24"),
}

# Victim architectures of the meta-training tasks, whatever the run's model:
# the learned optimizer works on input gradients, so its tasks need not share
# the attacked architecture.  VGG16 is left out on purpose: it is the
# held-out architecture of the shipped attackers (the default run attacks a
# VGG16 on digits16, a source family and an architecture meta-training never saw).
DEFAULT_TASK_MODELS: tuple[str, ...] = ("resnet18", "resnet20", "mobilenetv2")


def family_of(source: str) -> str | None:
    """The dataset family of a registered source (``digits``, ``fashion``), None if it declares none."""
    return reg.sources.entry(reg.sources.canonical(source)).tags.get("family")


def embedded_sources() -> list[str]:
    return [e.name for e in reg.sources.entries() if e.tags.get("embedded")]


def meta_training_sources(held_out: str) -> list[str]:
    """Task sources of every family except ``held_out``'s (a source without a family leaves only itself out)."""
    held = reg.sources.canonical(held_out)
    family = family_of(held)
    return [s for fam, names in TASK_SOURCES.items() if fam != family for s in names if s != held]


def other_sources(held_out: str) -> list[str]:
    """Alias of :func:`meta_training_sources` (the name older callers use)."""
    return meta_training_sources(held_out)


def build_tasks(sources: list[str], archs: list[str], *, profile: str = "default", seed: int = 0,
                cache_dir: str | None = None, threads: int | None = None, quiet: bool = True,
                width: float | None = None, norm: str = "linf", skip_missing: bool = False,
                log: Callable[[str], None] = lambda m: None) -> list[Task]:
    """Train or load one victim per (source, arch) and wrap them as tasks at the source's budget for ``norm``.

    skip_missing: leave out (with a log line) sources whose data is not on
        this machine instead of failing; a ConfigError if none is left.
    """
    prof = TASK_PROFILES[profile]
    base = current()
    rt = Runtime(cache_dir=cache_dir or base.cache_dir, device=base.device, threads=threads or base.threads,
                 quiet=quiet)
    tasks = []
    for src_name in sources:
        try:
            source = load_source(SourceSpec(src_name, None, prof["limit"]))
        except DataError as err:
            if not skip_missing:
                raise
            log(f"meta tasks: skipping {src_name} ({err})")
            continue
        eps = threat_model_for(source).budget(norm)
        own = {**prof, **prof.get("families", {}).get(family_of(source.name) or "", {})}
        for arch in archs:
            spec = ModelSpec(arch, float(width or own["width"]), seed, own["recipe"])
            trained = get_trained_model(spec, source, rt, log=log)
            log(f"meta task {src_name}/{arch}: {trained.info['id']} "
                f"({'cached' if trained.info['cache_hit'] else 'trained'})")
            tasks.append(Task(f"{source.name}/{trained.info['id']}", source.name, trained.model, source.train,
                              model_id=trained.info["sha256"], arch=reg.models.canonical(arch),
                              family=family_of(source.name), eps=eps))
    if not tasks:
        raise ConfigError(f"no meta-training task could be built from {', '.join(sources)}")
    return tasks


def with_profile(cfg_kwargs: dict[str, Any], profile: str) -> dict[str, Any]:
    """Meta-training defaults per profile (smoke: tiny)."""
    if profile == "smoke":
        return {"meta_steps": 6, "tasks_per_step": 1, "support": 16, "query": 32, "inner_steps": 4, **cfg_kwargs}
    return dict(cfg_kwargs)
