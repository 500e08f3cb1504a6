"""Resolved run configuration: one dataclass, validated, written to ``config.yaml``.

Profiles fill in whatever the user did not set: ``default`` is the real job
sized for a newcomer's first run on two cores (every stage, every rigour
check, in minutes), ``full`` is the thorough job (full-width model, longer
schedules, the large suspect zoo, the five-point budget sweep), ``smoke``
makes everything tiny (narrow model, few images, two epochs) so the whole
pipeline runs in seconds in tests.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.core.errors import ConfigError
from suite.core.runtime import default_cache_dir

PROFILES = ("smoke", "default", "full")
DEVICES = ("cpu", "cuda")
AUGMENTS = ("none", "shift", "shift-flip")


class Task(str, enum.Enum):
    """What a run does: ``classification`` (the default) or ``sr`` (single-image super-resolution).

    The run pipeline dispatches on it (:data:`suite.app.pipeline.TASK_RUNS`).
    """

    CLASSIFICATION = "classification"
    SR = "sr"

    @classmethod
    def parse(cls, value: "str | Task") -> "Task":
        try:
            return cls(value.value if isinstance(value, cls) else str(value).strip().lower())
        except ValueError:
            raise ConfigError(f"unknown task {value!r} (choices: {', '.join(t.value for t in cls)})") from None


# --task sr: what it accepts besides the SR registries (suite.core.sr).
SR_SCALES = (2, 4)
SR_COMPRESS = ("none", "block", "auto")
SR_BACKENDS = ("torch", "onnx", "tvm")
SR_DEFAULTS = {"model": "fsrcnn", "source": "photos"}
# Post-deployment SR stages by config name (their stages: suite.app.sr_pipeline.SR_STAGES):
# sr-uap: attacks/sr_uap.py (universal perturbation crafted on the dense model, scored on every subject);
# sr-outputs: fingerprints/sr.py (output fingerprint of the dense owner, audit of compressed / deployed).
SR_ATTACKS: tuple[str, ...] = ("sr-uap",)
SR_FINGERPRINTS: tuple[str, ...] = ("sr-outputs",)
# Fields that only --task sr sets; left out of a classification run's as_dict() so its config
# (and a grid job's identity hash) stays what it was before the task field existed.
SR_ONLY_FIELDS = ("task", "scale", "latency_target")


@dataclass(frozen=True)
class TrainRecipe:
    """How a model is trained; part of the model cache key.

    epochs: full passes over the train split (>= 0; 0 keeps the random init).
    batch_size: images per SGD step (> 0).
    lr: peak learning rate of SGD with Nesterov momentum, cosine-annealed
        to zero after ``warmup_epochs`` of linear warm-up.
    weight_decay, momentum, label_smoothing: the usual.
    augment: ``none``, ``shift`` (random translation by up to 2 px, zero
        padded) or ``shift-flip`` (plus horizontal flips; not for digits).
    grad_clip: largest global gradient norm per step (0: no clipping).
        Clipping keeps the first steps of a deep plain network (VGG16 on the
        photo-blended digits) from blowing up the batch-norm statistics,
        after which it never learned.
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    label_smoothing: float = 0.0
    augment: str = "shift"
    grad_clip: float = 2.0

    def validate(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size <= 0:
            raise ConfigError(f"batch size must be > 0, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError("weight decay must be >= 0 and momentum in [0, 1)")
        if self.warmup_epochs < 0:
            raise ConfigError(f"warmup epochs must be >= 0, got {self.warmup_epochs}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if not self.grad_clip >= 0:
            raise ConfigError(f"grad clip must be >= 0, got {self.grad_clip}")
        if self.augment not in AUGMENTS:
            raise ConfigError(f"unknown augment {self.augment!r} (choices: {', '.join(AUGMENTS)})")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# default: VGG16 at width 0.5 reaches the full-width model's test accuracy on
# digits16 (0.994 both) after 12 epochs, at a quarter of the FLOPs per image,
# which every later stage (attacks, fingerprints, the suspect zoo) pays again.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "default": {"width": 0.5, "limit": None, "recipe": TrainRecipe(epochs=12)},
    "full": {"width": 1.0, "limit": None, "recipe": TrainRecipe()},
    "smoke": {"width": 0.25, "limit": 96,
              "recipe": TrainRecipe(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0)},
}


# What a plain ``run`` evaluates after deployment; entries join these lists
# as their implementations land (names must be registered).
# Per profile: the smoke profile skips meta-training (its own tests cover it).
# the noise baselines ride along: every attack figure is read against them
DEFAULT_ATTACKS: dict[str, tuple[str, ...]] = {"default": ("uap-pgd", "uap-meta", "pgd", "noise-uniform",
                                                           "noise-checkerboard"),
                                               "full": ("uap-pgd", "uap-meta", "pgd", "noise-uniform",
                                                        "noise-checkerboard"),
                                               "smoke": ("uap-pgd", "pgd", "noise-uniform")}
DEFAULT_FINGERPRINTS: tuple[str, ...] = ("ltrc-examples", "misclassified")


def parse_names(text: str | None) -> tuple[str, ...] | None:
    """``"a,b"`` -> ``("a", "b")``; ``"none"`` or ``""`` -> ``()``; None -> None (profile default)."""
    if text is None:
        return None
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    return () if items in ((), ("none",)) else items


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run; the resolved copy is saved with each record."""

    model: str = "vgg16"
    source: str = "digits16"
    compress: str = "none"
    backend: str = "torch"
    target: str | None = None
    backend_args: dict[str, Any] = field(default_factory=dict)
    sparsity: float | None = None
    compress_args: dict[str, Any] = field(default_factory=dict)
    width: float | None = None
    data_root: str | None = None
    seed: int = 0
    profile: str = "default"
    device: str = "cpu"
    threads: int | None = None
    output_dir: str = "runs"
    cache_dir: str = field(default_factory=default_cache_dir)
    limit: int | None = None
    recipe: TrainRecipe | None = None
    quiet: bool = False
    attacks: tuple[str, ...] | None = None       # None: the profile's default attack list
    attack_args: dict[str, Any] = field(default_factory=dict)
    fingerprints: tuple[str, ...] | None = None  # None: the profile's default fingerprint list
    fingerprint_args: dict[str, Any] = field(default_factory=dict)
    negatives: int | None = None                 # suspect-zoo negatives (None: profile default)
    task: Task = Task.CLASSIFICATION             # classification | sr (see Task)
    scale: int | None = None                     # sr only: the SR factor, 2 or 4 (None: 2)
    # sr only, --compress auto: milliseconds per 720p output frame (1280x720) on the chosen backend.
    # (classification keeps its --latency-target, a fraction of dense latency, in compress_args.)
    latency_target: float | None = None

    def resolved(self) -> "RunConfig":
        """Fill profile defaults, canonicalise registry names and validate."""
        from suite.core import registries as reg

        if self.profile not in PROFILES:
            raise ConfigError(f"unknown profile {self.profile!r} (choices: {', '.join(PROFILES)})")
        task = Task.parse(self.task)
        if task is Task.SR:
            return dataclasses.replace(self, task=task)._resolved_sr()
        if self.scale is not None or self.latency_target is not None:
            raise ConfigError("scale and latency_target (milliseconds) are --task sr settings; classification "
                              "takes --latency-target as a fraction of dense (compress_args)")
        defaults = PROFILE_DEFAULTS[self.profile]
        compress = reg.compressors.canonical(self.compress)
        sparsity = self.sparsity
        if sparsity is None:
            sparsity = float(reg.compressors.entry(compress).tags.get("default_sparsity", 0.0))
        cfg = dataclasses.replace(
            self,
            sparsity=float(sparsity),
            model=reg.models.canonical(self.model),
            source=reg.sources.canonical(self.source),
            compress=compress,
            backend=reg.backends.canonical(self.backend),
            width=defaults["width"] if self.width is None else float(self.width),
            limit=defaults["limit"] if self.limit is None else self.limit,
            recipe=defaults["recipe"] if self.recipe is None else self.recipe,
            threads=self.threads if self.threads is not None else default_threads(),
            output_dir=str(Path(self.output_dir).expanduser()),
            cache_dir=str(Path(self.cache_dir).expanduser()),
            data_root=str(Path(self.data_root).expanduser()) if self.data_root else None,
            attacks=tuple(reg.attacks.canonical(a) for a in
                          (DEFAULT_ATTACKS[self.profile] if self.attacks is None else self.attacks)),
            fingerprints=tuple(reg.fingerprints.canonical(f) for f in
                               (DEFAULT_FINGERPRINTS if self.fingerprints is None else self.fingerprints)),
        )
        cfg.validate()
        return cfg

    def _resolved_sr(self) -> "RunConfig":
        """:meth:`resolved` for ``--task sr``: SR registries, SR compressors and backends, no default stages."""
        from suite.core import registries as reg
        from suite.core.sr import sr_models, sr_sources

        model = self.model
        if model in reg.models and model not in sr_models:
            raise ConfigError(f"model {model!r} is a classification model; --task sr takes an SR model "
                              f"(choices: {', '.join(sr_models.names())})")
        compress = self.compress if self.compress in SR_COMPRESS else reg.compressors.canonical(self.compress)
        if compress not in SR_COMPRESS:
            raise ConfigError(f"--compress {compress} is not available for --task sr "
                              f"(choices: {', '.join(SR_COMPRESS)})")
        backend = reg.backends.canonical(self.backend)
        if backend not in SR_BACKENDS:
            raise ConfigError(f"--backend {backend} is not available for --task sr (choices: {', '.join(SR_BACKENDS)})")
        for kind, given, allowed in (("attack", self.attacks, SR_ATTACKS),
                                     ("fingerprint", self.fingerprints, SR_FINGERPRINTS)):
            bad = [n for n in (given or ()) if n not in allowed]
            if bad:
                raise ConfigError(f"{kind} {bad[0]!r} is not an SR {kind} (--task sr {kind}s: "
                                  f"{', '.join(allowed) or 'none yet'})")
        sparsity = self.sparsity
        if sparsity is None:
            sparsity = float(reg.compressors.entry("block").tags.get("default_sparsity", 0.75)) \
                if compress == "block" else 0.0
        cfg = dataclasses.replace(
            self,
            model=sr_models.canonical(model),
            source=sr_sources.canonical(self.source),
            compress=compress,
            backend=backend,
            sparsity=float(sparsity),
            scale=2 if self.scale is None else self.scale,
            width=1.0 if self.width is None else float(self.width),
            recipe=None,  # SR training steps come from the profile (suite.app.sr_pipeline.SR_PROFILES)
            threads=self.threads if self.threads is not None else default_threads(),
            output_dir=str(Path(self.output_dir).expanduser()),
            cache_dir=str(Path(self.cache_dir).expanduser()),
            data_root=str(Path(self.data_root).expanduser()) if self.data_root else None,
            attacks=tuple(self.attacks or ()),
            fingerprints=tuple(self.fingerprints or ()),
        )
        cfg.validate()
        if cfg.device != "cpu":
            raise ConfigError(f"--task sr runs on the CPU only for now (got --device {cfg.device})")
        if cfg.scale not in SR_SCALES:
            raise ConfigError(f"--scale must be one of {', '.join(map(str, SR_SCALES))}, got {cfg.scale}")
        if cfg.compress == "auto":
            if cfg.latency_target is None:
                raise ConfigError("--task sr --compress auto needs --latency-target MS "
                                  "(milliseconds per 720p output frame)")
            if not cfg.latency_target > 0:
                raise ConfigError(f"--latency-target is milliseconds per 720p frame for --task sr and must be > 0, "
                                  f"got {cfg.latency_target}")
        elif cfg.latency_target is not None:
            raise ConfigError(f"--latency-target applies to --compress auto only, not --compress {cfg.compress}")
        if cfg.compress == "none" and cfg.sparsity:
            raise ConfigError(f"--sparsity {cfg.sparsity:g} needs --compress block (got --compress none)")
        return cfg

    def validate(self) -> None:
        if self.sparsity is not None and not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.width is not None and not 0.0 < self.width <= 4.0:
            raise ConfigError(f"width must be in (0, 4], got {self.width}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.device not in DEVICES:
            raise ConfigError(f"unknown device {self.device!r} (choices: {', '.join(DEVICES)})")
        if self.threads is not None and self.threads <= 0:
            raise ConfigError(f"threads must be > 0, got {self.threads}")
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"limit must be > 0, got {self.limit}")
        if self.negatives is not None and self.negatives < 2:
            raise ConfigError(f"negatives must be >= 2 (half calibrate, half evaluate), got {self.negatives}")
        if self.recipe is not None:
            self.recipe.validate()

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("attacks", "fingerprints"):
            if d[key] is not None:
                d[key] = list(d[key])
        task = Task.parse(self.task)
        if task is Task.CLASSIFICATION and self.scale is None and self.latency_target is None:
            for key in SR_ONLY_FIELDS:
                d.pop(key)
        else:
            d["task"] = task.value
        return d


def default_threads() -> int:
    """Intra-op threads: ``$SUITE_THREADS`` or the number of usable cores."""
    env = os.environ.get("SUITE_THREADS")
    if env:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def parse_kv(text: str | None) -> dict[str, Any]:
    """Parse ``"r=8,c=4,rows=true"`` into ``{"r": 8, "c": 4, "rows": True}``."""
    out: dict[str, Any] = {}
    if not text:
        return out
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ConfigError(f"expected key=value in {text!r}, got {item!r}")
        key, value = (s.strip() for s in item.split("=", 1))
        out[key] = _parse_scalar(value)
    return out


def _parse_scalar(value: str) -> Any:
    low = value.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value
