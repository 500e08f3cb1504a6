"""Sources and trained models as functions of their specs ("get me this trained model").

Every layer that needs an image source or a trained zoo model (the run
pipeline, the meta-training tasks of the attacks, the suspect zoo and the
audit of the fingerprints) asks here, so a model is trained once per key and
shared through the model store whoever asks first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

import suite
from suite.core import registries as reg
from suite.core.cache import ModelCache, ModelKey
from suite.core.config import TrainRecipe
from suite.core.errors import ConfigError
from suite.core.record import utc_now
from suite.core.runtime import LogFn, Runtime, current
from suite.core.sources.base import ImageSource
from suite.core.training import train_model
from suite.core.zoo.profile import count_macs, count_params


@dataclass(frozen=True)
class SourceSpec:
    """Which image source: registry name, optional dataset root on disk, optional per-split image limit."""

    name: str
    data_root: str | None = None
    limit: int | None = None


def load_source(spec: SourceSpec) -> ImageSource:
    """Build the source named by ``spec``; ConfigError when it needs a data root and has none."""
    entry = reg.sources.entry(spec.name)
    if entry.tags.get("needs_data_root") and not spec.data_root:
        raise ConfigError(f"source {spec.name!r} reads a dataset on disk: pass --data-root PATH")
    kwargs: dict[str, Any] = {}
    if spec.limit is not None:
        kwargs["limit"] = spec.limit
    return entry.resolve()(spec.data_root, **kwargs)


@dataclass(frozen=True)
class ModelSpec:
    """A trained model: architecture, width multiplier, seed and training recipe (on some source)."""

    arch: str
    width: float
    seed: int
    recipe: TrainRecipe


@dataclass
class TrainedModel:
    """A dense trained model (eval mode, CPU) and its record entry (``id``, ``sha256``, ``cache_hit``...)."""

    model: torch.nn.Module
    info: dict[str, Any]


def model_key(spec: ModelSpec, source: ImageSource) -> ModelKey:
    return ModelKey.make(arch=reg.models.canonical(spec.arch), width=spec.width, in_channels=source.shape[0],
                         num_classes=source.num_classes, source=source.name,
                         source_sha256=source.fingerprint(), seed=spec.seed, recipe=spec.recipe.as_dict())


def get_trained_model(spec: ModelSpec, source: ImageSource, runtime: Runtime | None = None,
                      log: LogFn | None = None) -> TrainedModel:
    """Load ``spec`` trained on ``source`` from the model store, training it first on a miss.

    runtime: cache directory, device and verbosity (default: the current runtime).
    """
    rt = runtime or current()
    say = log or rt.log
    arch = reg.models.canonical(spec.arch)
    key = model_key(spec, source)
    factory = reg.models.get(arch)

    def build() -> torch.nn.Module:
        torch.manual_seed(spec.seed)
        return factory(num_classes=source.num_classes, width=spec.width, in_channels=source.shape[0])

    def train(model: torch.nn.Module) -> dict[str, Any]:
        say(f"training {key.model_id()} on {source.name} ({len(source.train)} images, "
            f"{spec.recipe.epochs} epochs, {rt.device})")
        report = train_model(model, source.train, source.val, spec.recipe, seed=spec.seed,
                             device=rt.device, quiet=rt.quiet, desc=f"train {arch}")
        model.cpu()
        return {"train": report.as_dict(), "created_at": utc_now().isoformat(),
                "suite_version": suite.__version__}

    cache = ModelCache(rt.cache_dir)
    model, meta, hit = cache.get_or_create(key, build, train, warn=lambda m: say(f"warning: {m}"))
    if hit:
        say(f"loaded cached model {key.model_id()}")
    model.eval()
    info = {
        "id": key.model_id(),
        "arch": arch,
        "width": spec.width,
        "source": source.name,
        "params": count_params(model),
        "macs": count_macs(model, source.shape),
        "sha256": meta["sha256"],
        "cache_hit": hit,
        "cache_dir": str(cache.entry_dir(key)),
        "train": meta.get("train", {}),
    }
    return TrainedModel(model, info)
