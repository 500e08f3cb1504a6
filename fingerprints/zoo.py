"""The suspect zoo of one owner: real derived copies (positives) and real independent models (negatives).

Positives (built from the owner's dense eager model in this process):

* ``prune-<scheme>-<sparsity>``: the owner pruned with a registered scheme
  (masks from magnitudes, no weight update), then its batch-norm statistics
  re-estimated on ``bn_images`` train images (what any pruner does; without
  it a BN network pruned past ~50% answers one class for everything);
* ``prune-<scheme>-<sparsity>-ft<E>``: the same plus ``E`` epochs of masked
  fine-tuning (then BN re-estimated);
* ``copy-last-layer`` / ``copy-all-layers`` / ``copy-reinit-head``: the owner
  fine-tuned (classifier only / every layer / classifier re-initialised, then
  every layer) for ``copy_epochs`` epochs with another data order;
* ``<backend>:<positive>``: a positive compiled with the ``tvm`` (untuned
  template kernels) or ``onnx`` backend, queried through its isolated worker.

A positive whose test accuracy falls below ``min_positive_acc`` is not a
usable copy of the owner (nothing is left to protect); it is listed under
``excluded`` with its accuracy instead of being scored.

Negatives: models trained independently on the same source through the suite's
own model cache (``suite.core.models.get_trained_model``): other seeds, other
architectures and widths, and other train subsets, one executor job each (a
fresh process, or a Ray task on a cluster).  They do not depend on the owner,
so the model cache shares them between owners.

Cache: ``<cache_dir>/zoo/<owner sha256[:16]>-<digest[:16]>/`` holds
``zoo.json`` (members, families, accuracies, composition, build seconds),
``positives/<id>.pt`` (state_dicts, plus ``<id>.shapes.json`` for channel
pruning) and ``deploy/<id>/`` (compiled artifacts with their manifests).  The
digest covers the owner, the source, the spec and the seed.  The entry is
assembled in a temporary directory and renamed into place; an entry that fails
to load (missing file, sha256 mismatch, a negative gone from the model cache)
is reported and rebuilt.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from fingerprints.base import settings_digest
from fingerprints.bn import recalibrate_bn
from suite.core.cache import atomic_write_text, sha256_file
from suite.core.errors import ArtifactError, ConfigError
from suite.core.store import Store

ZOO_FORMAT = 1

# (arch, width or None = the owner's width, train-subset fraction)
NEGATIVE_TEMPLATES: dict[str, tuple[tuple[str, float | None, float], ...]] = {
    "default": (
        ("vgg16", 0.25, 1.0), ("resnet20", 0.5, 1.0), ("resnet18", 0.25, 1.0), ("vgg16", 0.5, 1.0),
        ("mobilenetv2", 0.25, 1.0), ("vgg16", 0.25, 0.6), ("resnet20", 0.5, 0.6), ("resnet18", 0.25, 0.6),
        ("vgg16", 0.5, 0.6), ("resnet20", 1.0, 1.0),
    ),
    "smoke": (("resnet20", 0.25, 1.0), ("vgg16", 0.25, 1.0), ("resnet20", 0.25, 0.6), ("vgg16", 0.25, 0.6)),
    # the first run's: the zoo's four architectures at narrow widths, whole and 60% train subsets
    # (the owner's architecture at its own width on a 60% subset, the narrow zoo architectures; MobileNetV2's
    # depth-wise convs and ResNet-18 cost 3-8x more per epoch on a CPU and stay in the full profile)
    "lean": (("vgg16", 0.25, 1.0), ("resnet20", 0.25, 1.0), ("vgg16", 0.25, 0.6), ("resnet20", 0.25, 0.6),
             ("vgg16", None, 0.6)),
}

# harder negatives, on top of ``negatives``: (arch, width, mode); mode ``full`` (the whole train split),
# ``half0`` / ``half1`` (the two disjoint halves of train), ``transfer`` (pre-trained on a related source,
# then fine-tuned on the owner's task); seeds 2000 + i
EXTRA_NEGATIVES: dict[str, tuple[tuple[str, float, str], ...]] = {
    "default": (
        ("plaincnn", 1.0, "full"), ("plaincnn", 0.5, "full"), ("wideshallow", 1.0, "full"),
        ("wideshallow", 0.5, "full"), ("plaincnn", 1.0, "half0"), ("plaincnn", 1.0, "half1"),
        ("resnet20", 0.5, "half0"), ("resnet20", 0.5, "half1"), ("plaincnn", 1.0, "transfer"),
        ("resnet20", 0.5, "transfer"),
    ),
    "smoke": (),
    "lean": (
        ("plaincnn", 0.5, "full"), ("plaincnn", 1.0, "full"), ("wideshallow", 0.5, "full"),
        ("wideshallow", 0.5, "half0"), ("plaincnn", 0.5, "half0"), ("plaincnn", 0.5, "half1"),
        ("resnet20", 0.25, "half0"), ("resnet20", 0.25, "half1"), ("plaincnn", 0.5, "transfer"),
        ("resnet20", 0.25, "transfer"),
    ),
}
NEGATIVE_MODES = ("full", "half0", "half1", "transfer")  # extra_negatives; ``recipe`` is same_recipe's own


@dataclass(frozen=True)
class ZooSpec:
    """What a suspect zoo contains; every field is part of the cache key.

    schemes / sparsities: pruned positives (``nm`` and other fixed-ratio
        schemes are built once at their own ratio).
    finetune_sparsities: sparsities that also get a masked fine-tuned copy of
        ``finetune_epochs`` epochs (``()``: none).
    copies / copy_epochs / copy_lr: fine-tuned copies of the dense owner.
    compiled: ``(backend, positive id)`` pairs deployed as extra positives
        (``"owner"`` is the dense owner itself).
    tvm_batch: the batch size the TVM positives are compiled for.
    negatives / negative_epochs / templates: independent models, cycling
        through ``templates`` (arch, width (None = owner's), train fraction)
        with seeds ``1000 + i``.
    same_recipe: independent models of the owner's own architecture and width,
        trained on its whole train split with its whole recipe (its epochs,
        not ``negative_epochs``), seeds ``3000 + i``: the nearest model an
        honest rival can make, and the negative a copy is hardest to tell from.
    min_positive_acc: positives below this test accuracy are excluded.
    bn_images: train images used to re-estimate BN statistics of pruned copies.
    executor / jobs / address: how the negatives are trained (see ``suite.core.executors``).
    """

    schemes: tuple[str, ...] = ("unstructured", "block", "block-punched", "pattern", "nm", "filter")
    sparsities: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
    finetune_sparsities: tuple[float, ...] = (0.5, 0.9)
    finetune_epochs: int = 1
    copies: tuple[str, ...] = ("last-layer", "all-layers", "reinit-head")
    copy_epochs: int = 2
    copy_lr: float = 0.01
    compiled: tuple[tuple[str, str], ...] = (("tvm", "owner"), ("tvm", "prune-block-0.7"),
                                             ("onnx", "prune-unstructured-0.5-ft1"),
                                             ("onnx", "copy-all-layers"))
    tvm_batch: int = 1
    negatives: int = 20
    negative_epochs: int = 8
    templates: tuple[tuple[str, float | None, float], ...] = NEGATIVE_TEMPLATES["default"]
    extra_negatives: tuple[tuple[str, float, str], ...] = EXTRA_NEGATIVES["default"]
    same_recipe: int = 2
    quantized: tuple[tuple[str, str], ...] = (("int8-dynamic", "owner"), ("int8-static", "owner"),
                                              ("fp16", "owner"), ("int8-static", "prune-unstructured-0.5-ft1"),
                                              ("int8-static", "tp-channel-0.5-ft2"))
    calib_images: int = 256
    fine_prune: tuple[float, ...] = (0.5, 0.8)
    fine_prune_layers: int = 3
    fine_prune_epochs: int = 1
    channel_prune: tuple[float, ...] = (0.3, 0.5)
    channel_prune_epochs: int = 2
    extraction: tuple[tuple[str, float, str], ...] = (
        ("resnet20", 0.5, "label"), ("resnet20", 0.5, "prob"), ("plaincnn", 1.0, "label"),
        ("plaincnn", 1.0, "prob"), ("vgg16", 0.25, "label"), ("vgg16", 0.25, "prob"))
    extraction_epochs: int = 15
    extraction_copies: int = 7
    min_positive_acc: float = 0.5
    bn_images: int = 512
    executor: str = "local"
    jobs: int = 2
    address: str | None = None

    # fields that do not change the zoo's content (not in the cache key)
    RUNTIME_FIELDS = ("executor", "jobs", "address")

    def validate(self) -> None:
        if self.negatives < 2:
            raise ConfigError(f"the zoo needs >= 2 negatives (half calibrate, half evaluate), got {self.negatives}")
        if any(not 0.0 <= s < 1.0 for s in (*self.sparsities, *self.finetune_sparsities)):
            raise ConfigError("zoo sparsities must be in [0, 1)")
        if self.same_recipe < 0:
            raise ConfigError(f"zoo same_recipe must be >= 0, got {self.same_recipe}")
        if self.finetune_epochs < 0 or self.copy_epochs < 0 or self.negative_epochs < 0:
            raise ConfigError("zoo epochs must be >= 0")
        unknown = [c for c in self.copies if c not in COPY_KINDS]
        if unknown:
            raise ConfigError(f"unknown zoo copy {unknown[0]!r} (choices: {', '.join(COPY_KINDS)})")
        for backend, _ in self.compiled:
            if backend not in ("tvm", "onnx"):
                raise ConfigError(f"zoo compiled backends are tvm and onnx, got {backend!r}")
        if not self.templates:
            raise ConfigError("the zoo needs at least one negative template")
        if self.executor not in ("local", "ray", "inline"):
            raise ConfigError(f"zoo executor must be local, ray or inline, got {self.executor!r}")
        if self.jobs < 1 or self.tvm_batch < 1:
            raise ConfigError("zoo jobs and tvm_batch must be >= 1")
        from fingerprints.families import EXTRACTION_ACCESS, QUANT_MODES

        for mode, _ in self.quantized:
            if mode not in QUANT_MODES:
                raise ConfigError(f"zoo quantized modes are {', '.join(QUANT_MODES)}, got {mode!r}")
        for _, _, mode in self.extra_negatives:
            if mode not in NEGATIVE_MODES:
                raise ConfigError(f"zoo extra_negatives modes are {', '.join(NEGATIVE_MODES)}, got {mode!r}")
        for _, _, access in self.extraction:
            if access not in EXTRACTION_ACCESS:
                raise ConfigError(f"zoo extraction access is label or prob, got {access!r}")
        if any(not 0.0 < f < 1.0 for f in (*self.fine_prune, *self.channel_prune)):
            raise ConfigError("zoo fine_prune / channel_prune fractions must be in (0, 1)")

    def key_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in self.RUNTIME_FIELDS:
            d.pop(k, None)
        return d


COPY_KINDS = ("last-layer", "all-layers", "reinit-head")

PROFILE_SPECS: dict[str, ZooSpec] = {
    # the first run's zoo: every copy family (pruned under four schemes, fine-tuned, compiled, quantized,
    # fine-pruned, channel-pruned) and extraction, with 22 independent negatives (11 calibrate the threshold,
    # 11 are held out; split by origin): 20 narrow or foreign ones on shorter schedules and 2 same-recipe
    # rivals (the owner's architecture, width, data and recipe); fewer members per family than ``full``
    "default": ZooSpec(schemes=("unstructured", "block", "pattern", "filter"), sparsities=(0.5, 0.9),
                       finetune_sparsities=(0.9,), copies=("last-layer", "all-layers"), copy_epochs=1,
                       # compiled: an ONNX copy here; the run's own TVM deployment of its compressed model is
                       # scored beside the zoo as a further compiled positive (family this-run)
                       compiled=(("onnx", "prune-block-0.5"),), negatives=10,
                       negative_epochs=5, templates=NEGATIVE_TEMPLATES["lean"],
                       extra_negatives=EXTRA_NEGATIVES["lean"],
                       quantized=(("int8-static", "owner"), ("fp16", "owner"),
                                  ("int8-dynamic", "prune-unstructured-0.5")),
                       fine_prune=(0.5,), channel_prune=(0.5,),
                       extraction=(("plaincnn", 1.0, "label"), ("plaincnn", 1.0, "prob")), extraction_epochs=10,
                       extraction_copies=4),
    "full": ZooSpec(),
    # seconds, for tests: no compiled members, negatives trained in this process (see fingerprints.executor)
    "smoke": ZooSpec(schemes=("block",), sparsities=(0.5,), finetune_sparsities=(0.5,), finetune_epochs=1,
                     copies=("all-layers",), copy_epochs=1, compiled=(), negatives=4, negative_epochs=2,
                     templates=NEGATIVE_TEMPLATES["smoke"], min_positive_acc=0.0, bn_images=96,
                     executor="inline", jobs=1, extra_negatives=EXTRA_NEGATIVES["smoke"], quantized=(),
                     fine_prune=(), channel_prune=(), extraction=(), calib_images=64, extraction_epochs=3,
                     extraction_copies=2, same_recipe=0),
}


def _coerce_tuple(value: Any) -> Any:
    """``"a:b"`` / ``"a"`` / lists from --fingerprint-args into tuples; ``"none"`` -> ``()``."""
    if value is None or value == "none" or value == "":
        return ()
    if isinstance(value, str):
        return tuple(v for v in value.split(":") if v)
    if isinstance(value, (int, float)):
        return (value,)
    return tuple(value)


def make_spec(profile: str = "default", negatives: int | None = None, **overrides: Any) -> ZooSpec:
    """The profile's zoo spec with ``negatives`` and any field overridden.

    Tuple fields accept ``"a:b:c"`` strings (``--fingerprint-args zoo.schemes=block:nm``);
    ``compiled`` accepts ``"tvm/owner:onnx/copy-all-layers"``.
    """
    if profile not in PROFILE_SPECS:
        raise ConfigError(f"unknown profile {profile!r} for the zoo (choices: {', '.join(PROFILE_SPECS)})")
    base = PROFILE_SPECS[profile]
    fields = {f.name: f for f in dataclasses.fields(ZooSpec)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in fields:
            import difflib

            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown zoo setting {key!r}{hint} (settings: {', '.join(sorted(fields))})")
        if key == "compiled":
            items = _coerce_tuple(value)
            value = tuple(tuple(v.split("/", 1)) if isinstance(v, str) else tuple(v) for v in items)
            if any(len(v) != 2 for v in value):
                raise ConfigError("zoo compiled entries look like backend/positive-id, e.g. tvm/owner")
        elif key == "quantized":
            items = _coerce_tuple(value)
            value = tuple(tuple(v.split("/", 1)) if isinstance(v, str) else tuple(v) for v in items)
            if any(len(v) != 2 for v in value):
                raise ConfigError("zoo quantized entries look like mode/positive-id, e.g. int8-static/owner")
        elif key in ("extraction", "extra_negatives"):
            items = _coerce_tuple(value)
            value = tuple(tuple(v.split("/")) if isinstance(v, str) else tuple(v) for v in items)
            if any(len(v) != 3 for v in value):
                raise ConfigError(f"zoo {key} entries look like arch/width/{'access' if key == 'extraction' else 'mode'}"
                                  f", e.g. plaincnn/1/{'label' if key == 'extraction' else 'half0'}")
            try:
                value = tuple((str(a), float(w), str(m)) for a, w, m in value)
            except ValueError:
                raise ConfigError(f"zoo {key}: a width is not a number in {value!r}") from None
        elif key in ("sparsities", "finetune_sparsities", "fine_prune", "channel_prune"):
            value = tuple(float(v) for v in _coerce_tuple(value))
        elif key in ("schemes", "copies"):
            value = tuple(str(v) for v in _coerce_tuple(value))
        changes[key] = value
    if negatives is not None:
        changes["negatives"] = int(negatives)
    spec = dataclasses.replace(base, **changes)
    spec.validate()
    return spec


# ------------------------------------------------------------------ owner
@dataclass
class Owner:
    """The model whose copies the zoo holds.

    model: dense eager model; arch/width: its zoo architecture; sha256: of its
    cached state_dict (identity); source: the image source it was trained on;
    source_args: ``{"name", "data_root", "limit"}`` to rebuild that source in
    another process; seed: the run seed (fine-tuning data orders derive from it).
    """

    model: torch.nn.Module
    arch: str
    width: float
    sha256: str
    model_id: str
    source: Any
    source_args: dict[str, Any]
    seed: int = 0
    profile: str = "default"


@dataclass
class Member:
    """One suspect in the zoo (JSON-ready except for nothing: all fields are plain data)."""

    id: str
    role: str                      # "positive" | "negative"
    family: dict[str, Any]
    accuracy: float | None = None
    arch: str | None = None
    width: float | None = None
    file: str | None = None        # state_dict (relative to the zoo dir, or absolute for negatives)
    sha256: str | None = None
    shapes: str | None = None      # channel-pruned shapes json (relative)
    artifact: str | None = None    # compiled artifact dir (relative)
    info: dict[str, Any] = field(default_factory=dict)
    onnx: str | None = None        # an ONNX file of ours (quantized / fp16 / channel-pruned), relative

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Zoo:
    """A built (or loaded) zoo: members plus where its files are."""

    directory: Path
    owner_sha256: str
    spec: dict[str, Any]
    members: list[Member]
    excluded: list[dict[str, Any]]
    build_seconds: dict[str, float]
    cache_hit: bool = False
    num_classes: int = 10
    input_shape: tuple[int, int, int] = (3, 16, 16)

    def positives(self) -> list[Member]:
        return [m for m in self.members if m.role == "positive"]

    def negatives(self) -> list[Member]:
        return [m for m in self.members if m.role == "negative"]

    def extractions(self) -> list[Member]:
        """Extraction students: reported apart from the copy positives (role ``extraction``)."""
        return [m for m in self.members if m.role == "extraction"]

    def composition(self) -> dict[str, Any]:
        """Counts per role and kind, the negatives' architectures, what was excluded and why."""
        pos = self.positives()
        kinds: dict[str, int] = {}
        for m in pos:
            kinds[m.family.get("kind", "?")] = kinds.get(m.family.get("kind", "?"), 0) + 1
        archs: dict[str, int] = {}
        for m in self.negatives():
            key = f"{m.arch}-w{m.width:g}" + ("" if m.family.get("subset", 1.0) >= 1.0 else
                                              f"-subset{m.family['subset']:g}")
            archs[key] = archs.get(key, 0) + 1
        origins: dict[str, int] = {}
        for m in self.negatives():
            o = m.family.get("origin", "seed")
            origins[o] = origins.get(o, 0) + 1
        neg_acc = [m.accuracy for m in self.negatives() if m.accuracy is not None]
        pos_acc = [m.accuracy for m in pos if m.accuracy is not None]
        ext = self.extractions()
        return {"positives": len(pos), "positive_kinds": kinds, "negatives": len(self.negatives()),
                "negative_models": archs, "negative_origins": origins, "excluded": self.excluded,
                "extraction": len(ext),
                "extraction_acc": {m.id: m.accuracy for m in ext},
                "positive_acc_min": round(min(pos_acc), 4) if pos_acc else None,
                "negative_acc_mean": round(float(np.mean(neg_acc)), 4) if neg_acc else None,
                "build_seconds": self.build_seconds, "cache_hit": self.cache_hit, "directory": str(self.directory)}

    @contextlib.contextmanager
    def predictor(self, member: Member) -> Iterator[Any]:
        """A predictor for ``member`` (eager torch, or the isolated worker of its compiled artifact)."""
        if member.onnx:
            from fingerprints.families import OnnxFilePredictor

            pred = OnnxFilePredictor(self.directory / member.onnx, self.input_shape, self.num_classes)
            try:
                yield pred
            finally:
                pred.close()
            return
        if member.artifact:
            from compression.backends.artifact import load_predictor

            pred = load_predictor(self.directory / member.artifact, isolated=True, timeout=120.0)
            try:
                yield pred
            finally:
                pred.close()
            return
        from compression.backends.torch_eager import TorchPredictor

        model = load_member_model(self, member)
        yield TorchPredictor(model, self.input_shape, self.num_classes)


def _model_path(zoo: Zoo, member: Member) -> Path:
    assert member.file is not None
    p = Path(member.file)
    return p if p.is_absolute() else zoo.directory / p


def load_member_model(zoo: Zoo, member: Member) -> torch.nn.Module:
    """Rebuild an eager member from its state_dict (sha256 checked, ``weights_only=True``)."""
    from suite.core import registries as reg

    path = _model_path(zoo, member)
    if not path.is_file():
        raise ArtifactError(f"zoo member {member.id}: {path} is missing")
    if member.sha256 and sha256_file(path) != member.sha256:
        raise ArtifactError(f"zoo member {member.id}: {path} does not match its sha256")
    model = reg.models.build(member.arch, num_classes=zoo.num_classes, width=member.width,
                             in_channels=zoo.input_shape[0])
    if member.shapes:
        from compression.channel import rebuild_pruned

        shapes = json.loads((zoo.directory / member.shapes).read_text())
        model = rebuild_pruned(model, shapes, member.info.get("input_shape")) or model
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, OSError) as err:
        raise ArtifactError(f"zoo member {member.id}: state_dict does not load "
                            f"({str(err).strip().splitlines()[0]})") from None
    return model.eval()


# ------------------------------------------------------------ helpers
def subset_source(source, fraction: float, seed: int):
    """``source`` with a seeded random ``fraction`` of its train split (val/test unchanged)."""
    from suite.core.sources.base import ImageSplit

    if fraction >= 1.0:
        return source
    n = max(2, int(round(len(source.train) * fraction)))
    idx = np.sort(np.random.default_rng(seed).permutation(len(source.train))[:n])
    t = source.train
    train = ImageSplit(t.images[idx], t.labels[idx], t.indices[idx])
    return dataclasses.replace(source, train=train, meta={**source.meta, "train_subset": fraction,
                                                          "train_subset_seed": seed})


def negative_jobs(owner: Owner, spec: ZooSpec, cache_dir: str, recipe: dict[str, Any],
                  out_dir: Path | None = None) -> list[dict[str, Any]]:
    """One job dict per negative (picklable, JSON-able): what :func:`train_negative` trains.

    out_dir: where transfer-learned negatives are written (they are not model-cache entries).
    """
    jobs = []
    for i in range(spec.negatives):
        arch, width, subset = spec.templates[i % len(spec.templates)]
        width = owner.width if width is None else width
        seed = 1000 + i
        jobs.append({"id": f"neg-{arch}-w{width:g}-s{seed}" + ("" if subset >= 1.0 else f"-sub{subset:g}"),
                     "arch": arch, "width": float(width), "seed": seed, "subset": float(subset),
                     "subset_seed": seed, "recipe": {**recipe, "epochs": spec.negative_epochs},
                     "source": owner.source_args, "profile": owner.profile, "cache_dir": cache_dir,
                     "threads": 1})
    for i, (arch, width, mode) in enumerate(spec.extra_negatives):
        seed = 2000 + i
        jobs.append({"id": f"neg-{arch}-w{width:g}-s{seed}-{mode}", "arch": arch, "width": float(width),
                     "seed": seed, "subset": 1.0, "subset_seed": seed, "mode": mode,
                     "recipe": {**recipe, "epochs": spec.negative_epochs}, "source": owner.source_args,
                     "profile": owner.profile, "cache_dir": cache_dir, "threads": 1,
                     "out_dir": str(out_dir) if out_dir is not None else None})
    for i in range(spec.same_recipe):  # the owner's architecture, width, data and recipe; only the seed differs
        seed = 3000 + i
        jobs.append({"id": f"neg-{owner.arch}-w{owner.width:g}-s{seed}-recipe", "arch": owner.arch,
                     "width": float(owner.width), "seed": seed, "subset": 1.0, "subset_seed": seed,
                     "mode": "recipe", "recipe": dict(recipe), "source": owner.source_args,
                     "profile": owner.profile, "cache_dir": cache_dir, "threads": 1})
    return jobs


def negative_origin(job: dict[str, Any], owner_arch: str) -> str:
    """How an independent model differs from the owner.

    same-recipe (only the seed: the owner's architecture, width, data and
    recipe), transfer, disjoint (half of train), subset, foreign, seed (the
    owner's architecture on all of train with the zoo's shorter schedule),
    other-arch.
    """
    mode = job.get("mode", "full")
    if mode == "recipe":
        return "same-recipe"
    if mode == "transfer":
        return "transfer"
    if mode in ("half0", "half1"):
        return "disjoint"
    if job.get("subset", 1.0) < 1.0:
        return "subset"
    if job["arch"] in ("plaincnn", "wideshallow"):
        return "foreign"
    return "seed" if job["arch"] == owner_arch else "other-arch"


def train_negative(job: dict[str, Any]) -> dict[str, Any]:
    """Executor job: train (or load from the model cache) one independent model; JSON-able summary.

    job: from :func:`negative_jobs`.  Runs in a fresh process with ``threads`` torch threads.
    """
    from suite.core.config import TrainRecipe
    from suite.core.models import ModelSpec, SourceSpec, get_trained_model, load_source
    from suite.core.runtime import Runtime
    from suite.core.training import accuracy

    threads = int(job.get("threads", 1))
    torch.set_num_threads(threads)
    src = job["source"]
    source = subset_source(load_source(SourceSpec(src["name"], src.get("data_root"), src.get("limit"))),
                           job["subset"], job["subset_seed"])
    mode = job.get("mode", "full")
    if mode in ("half0", "half1"):
        from fingerprints.families import disjoint_half

        source = disjoint_half(source, int(mode[-1]), 4242)  # one fixed split: the two halves are disjoint
    spec = ModelSpec(job["arch"], float(job["width"]), int(job["seed"]), TrainRecipe(**job["recipe"]))
    rt = Runtime(cache_dir=job["cache_dir"], device="cpu", threads=threads, quiet=True)
    start = time.perf_counter()
    if mode == "transfer":
        return _train_transfer_negative(job, spec, source, rt, start)
    trained = get_trained_model(spec, source, rt)
    return {"id": job["id"], "model_id": trained.info["id"], "sha256": trained.info["sha256"],
            "file": str(Path(trained.info["cache_dir"]) / "model.pt"),
            "accuracy": accuracy(trained.model, source.test), "cache_hit": trained.info["cache_hit"],
            "seconds": round(time.perf_counter() - start, 3)}


def _train_transfer_negative(job: dict[str, Any], spec, source, rt, start: float) -> dict[str, Any]:
    """Pre-train ``spec`` on the related source (model cache), adapt its input, fine-tune on ``source``."""
    from fingerprints.families import RELATED_SOURCES, adapt_first_conv
    from suite.core.config import TrainRecipe
    from suite.core.models import SourceSpec, get_trained_model, load_source
    from suite.core.training import accuracy, train_model

    src = job["source"]
    related_name = RELATED_SOURCES.get(src["name"], "digits-affine24")
    related = load_source(SourceSpec(related_name, None, src.get("limit")))
    pre = get_trained_model(spec, related, rt)
    model = adapt_first_conv(copy.deepcopy(pre.model).cpu(), int(source.shape[0]))
    torch.manual_seed(int(job["seed"]))
    model.classifier = torch.nn.Linear(model.classifier.in_features, int(source.num_classes))
    recipe = TrainRecipe(**{**job["recipe"], "epochs": max(1, int(job["recipe"]["epochs"]) // 2), "lr": 0.02,
                            "warmup_epochs": 0})
    train_model(model, source.train, None, recipe, seed=int(job["seed"]), quiet=True, desc="transfer")
    model.eval()
    if job.get("out_dir") is None:
        raise ConfigError("a transfer-learned negative needs the zoo's out_dir")
    rel = f"negatives/{job['id']}.pt"
    sha = _save_state(model, Path(job["out_dir"]) / rel)
    return {"id": job["id"], "model_id": f"{job['id']}-from-{related_name}", "sha256": sha, "file": rel,
            "accuracy": accuracy(model, source.test), "cache_hit": pre.info["cache_hit"],
            "related_source": related_name, "pretrained": pre.info["id"],
            "seconds": round(time.perf_counter() - start, 3)}


def _prune(owner: Owner, scheme: str, sparsity: float, epochs: int, spec: ZooSpec, device: str):
    from suite.core import registries as reg

    settings: dict[str, Any] = {"epochs": epochs}
    if scheme == "nm":
        comp = reg.compressors.build(scheme, **settings)
    else:
        comp = reg.compressors.build(scheme, sparsity=sparsity, **settings)
    result = comp.compress(owner.model, owner.source, seed=owner.seed, device=device, profile=owner.profile,
                           quiet=True)
    model = recalibrate_bn(result.model.cpu(), owner.source, spec.bn_images, owner.seed)
    achieved = result.info.get("achieved_sparsity", result.info.get("sparsity"))
    return model, result.shapes, achieved


def _finetune_copy(owner: Owner, kind: str, spec: ZooSpec, device: str) -> torch.nn.Module:
    from suite.core.config import TrainRecipe
    from suite.core.training import train_model

    model = copy.deepcopy(owner.model).cpu()
    head = model.classifier
    seed = owner.seed + 7919 + COPY_KINDS.index(kind)
    if kind == "reinit-head":
        torch.manual_seed(seed)
        head.reset_parameters()
    frozen_bn = None
    if kind == "last-layer":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("classifier."))
        frozen_bn = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    recipe = TrainRecipe(epochs=spec.copy_epochs, lr=spec.copy_lr, warmup_epochs=0)
    train_model(model, owner.source.train, None, recipe, seed=seed, device=device, quiet=True,
                desc=f"zoo {kind}")
    if frozen_bn is not None:  # features untouched: undo the BN running-stat drift of train mode
        model.load_state_dict({**model.state_dict(), **frozen_bn})
    for p in model.parameters():
        p.requires_grad_(True)
    return model.cpu().eval()


def _save_state(model: torch.nn.Module, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, path)
    return sha256_file(path)


def _deploy(backend_name: str, model: torch.nn.Module, owner: Owner, workdir: Path, spec: ZooSpec,
            cache_dir: str, threads: int) -> dict[str, Any]:
    from suite.core import registries as reg

    shape = tuple(owner.source.shape)
    if backend_name == "tvm":
        backend = reg.backends.build("tvm", batch_sizes=[spec.tvm_batch], tune=False, measure_dense=False,
                                     threads=threads, cache_dir=cache_dir)
        dep = backend.deploy(model, shape, owner.source.num_classes, workdir=str(workdir))
    else:
        backend = reg.backends.build("onnx", threads=threads)
        dep = backend.deploy(model, shape, owner.source.num_classes, workdir=str(workdir))
    dep.predictor.close()
    return {k: v for k, v in dep.info.items() if k in ("backend", "compile_seconds", "export_seconds", "tvm",
                                                      "verify_max_abs_diff", "latency_ms")}


def _accuracy_of(predictor, source) -> float:
    from suite.core.predictor import predict_labels

    x, y = source.test.tensors()
    return float((predict_labels(predictor, x) == y).float().mean())


# ------------------------------------------------------------------- build
def zoo_key_payload(owner_sha256: str, source_sha256: str, spec: ZooSpec, seed: int, profile: str) -> dict:
    """Everything that determines a zoo's content (computable without loading any model)."""
    return {"owner": owner_sha256, "source": source_sha256, "spec": spec.key_dict(), "seed": int(seed),
            "profile": profile, "format": ZOO_FORMAT}


def zoo_key(owner_sha256: str, source_sha256: str, spec: ZooSpec, seed: int, profile: str) -> str:
    """Digest of :func:`zoo_key_payload`."""
    return settings_digest(zoo_key_payload(owner_sha256, source_sha256, spec, seed, profile))


def owner_zoo_key(owner: Owner, spec: ZooSpec) -> str:
    return zoo_key(owner.sha256, owner.source.fingerprint(), spec, owner.seed, owner.profile)


def zoo_dir(cache_dir: str | os.PathLike, owner: Owner, spec: ZooSpec) -> Path:
    return Path(cache_dir) / "zoo" / f"{owner.sha256[:16]}-{owner_zoo_key(owner, spec)[:16]}"


def build_zoo(owner: Owner, spec: ZooSpec, directory: Path, *, cache_dir: str, recipe: dict[str, Any],
              threads: int = 1, device: str = "cpu", log: Callable[[str], None] = lambda m: None) -> Zoo:
    """Build every member into ``directory`` (a fresh temporary directory) and write ``zoo.json``."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    shape = tuple(owner.source.shape)
    num_classes = int(owner.source.num_classes)
    members: list[Member] = []
    excluded: list[dict[str, Any]] = []
    eager: dict[str, torch.nn.Module] = {"owner": owner.model}

    def add_positive(pid: str, model: torch.nn.Module, family: dict[str, Any], shapes: Any = None) -> None:
        from compression.backends.torch_eager import TorchPredictor

        acc = _accuracy_of(TorchPredictor(model, shape, num_classes), owner.source)
        if acc < spec.min_positive_acc:
            excluded.append({"id": pid, "accuracy": round(acc, 4), "family": family,
                             "reason": f"test accuracy {acc:.3f} < min_positive_acc {spec.min_positive_acc}"})
            log(f"zoo: {pid} excluded (accuracy {acc:.3f})")
            return
        sha = _save_state(model, directory / "positives" / f"{pid}.pt")
        member = Member(pid, "positive", family, round(acc, 4), owner.arch, owner.width, f"positives/{pid}.pt", sha,
                        info={"input_shape": list(shape)})
        if shapes is not None:
            atomic_write_text(directory / "positives" / f"{pid}.shapes.json", json.dumps(shapes))
            member.shapes = f"positives/{pid}.shapes.json"
        members.append(member)
        eager[pid] = model

    # pruned copies, with and without masked fine-tuning
    start = time.perf_counter()
    from suite.core import registries as reg

    for scheme in spec.schemes:
        fixed = reg.compressors.canonical(scheme) == "nm"
        for sparsity in (spec.sparsities[:1] if fixed else spec.sparsities):
            for epochs in ((0, spec.finetune_epochs) if (sparsity in spec.finetune_sparsities or fixed)
                           and spec.finetune_epochs > 0 else (0,)):
                model, shapes, achieved = _prune(owner, scheme, sparsity, epochs, spec, device)
                sp = 0.5 if fixed else sparsity
                pid = f"prune-{scheme}-{sp:g}" + (f"-ft{epochs}" if epochs else "")
                add_positive(pid, model, {"kind": "pruned", "scheme": scheme, "sparsity": sp,
                                          "achieved_sparsity": achieved,
                                          "finetune": f"masked-{epochs}ep" if epochs else "none",
                                          "compiled": "eager"}, shapes)
                log(f"zoo: {pid} built ({time.perf_counter() - start:.0f} s so far)")
    timings["pruned"] = round(time.perf_counter() - start, 2)

    start = time.perf_counter()
    for kind in spec.copies:
        model = _finetune_copy(owner, kind, spec, device)
        add_positive(f"copy-{kind}", model, {"kind": "finetuned", "scheme": "none", "sparsity": 0.0,
                                             "finetune": kind, "compiled": "eager"})
    timings["finetuned"] = round(time.perf_counter() - start, 2)

    start = time.perf_counter()
    for backend_name, base in spec.compiled:
        if base not in eager:
            excluded.append({"id": f"{backend_name}:{base}", "reason": f"base model {base!r} not in the zoo"})
            continue
        pid = f"{backend_name}:{base}"
        rel = f"deploy/{backend_name}-{base}"
        info = _deploy(backend_name, eager[base], owner, directory / rel, spec, cache_dir, threads)
        from compression.backends.artifact import load_predictor

        with load_predictor(directory / rel, isolated=True, timeout=120.0) as pred:
            acc = _accuracy_of(pred, owner.source)
        base_family = next((m.family for m in members if m.id == base), {"scheme": "none", "sparsity": 0.0,
                                                                         "finetune": "none"})
        members.append(Member(pid, "positive", {**base_family, "kind": "compiled", "compiled": backend_name,
                                                "base": base}, round(acc, 4), owner.arch, owner.width,
                              artifact=rel, info=info))
        log(f"zoo: {pid} compiled ({time.perf_counter() - start:.0f} s so far)")
    timings["compiled"] = round(time.perf_counter() - start, 2)
    _build_thief_families(owner, spec, directory, members, excluded, eager, add_positive, timings, log)

    # negatives: independent models, one executor job each
    start = time.perf_counter()
    from fingerprints.executor import run_jobs

    jobs = negative_jobs(owner, spec, cache_dir, recipe, directory)
    log(f"zoo: training {len(jobs)} independent models ({spec.executor} executor, {spec.jobs} at a time)")
    for job, res in zip(jobs, run_jobs(train_negative, jobs, kind=spec.executor, parallel=spec.jobs,
                                       address=spec.address, log=log)):
        family = {"kind": "independent", "arch": job["arch"], "width": job["width"], "seed": job["seed"],
                  "subset": job["subset"], "origin": negative_origin(job, owner.arch)}
        if job.get("mode", "full") != "full":
            family["mode"] = job["mode"]
        info = {"model_id": res["model_id"], "cache_hit": res["cache_hit"]}
        info.update({k: res[k] for k in ("related_source", "pretrained") if k in res})
        members.append(Member(job["id"], "negative", family, round(res["accuracy"], 4), job["arch"], job["width"],
                              res["file"], res["sha256"], info=info))
    timings["negatives"] = round(time.perf_counter() - start, 2)
    timings["total"] = round(time.perf_counter() - t0, 2)
    zoo = Zoo(directory, owner.sha256, spec.key_dict(), members, excluded, timings, False, num_classes, shape)
    _write_zoo_json(zoo, owner)
    return zoo


def _build_thief_families(owner: Owner, spec: ZooSpec, directory: Path, members: list[Member],
                          excluded: list[dict[str, Any]], eager: dict[str, torch.nn.Module], add_positive,
                          timings: dict[str, float], log: Callable[[str], None]) -> None:
    """Fine-pruned, channel-pruned (torch-pruning), quantized / fp16 ONNX positives and extraction students."""
    import logging

    from compression.backends.onnx_backend import export_onnx
    from fingerprints import families as fam

    shape = tuple(owner.source.shape)
    num_classes = int(owner.source.num_classes)

    def add_onnx(pid: str, path: Path, family: dict[str, Any], info: dict[str, Any]) -> None:
        pred = fam.OnnxFilePredictor(path, shape, num_classes)
        acc = _accuracy_of(pred, owner.source)
        if acc < spec.min_positive_acc:
            excluded.append({"id": pid, "accuracy": round(acc, 4), "family": family,
                             "reason": f"test accuracy {acc:.3f} < min_positive_acc {spec.min_positive_acc}"})
            log(f"zoo: {pid} excluded (accuracy {acc:.3f})")
            return
        members.append(Member(pid, "positive", family, round(acc, 4), owner.arch, owner.width,
                              sha256=sha256_file(path), onnx=str(path.relative_to(directory)), info=info))

    start = time.perf_counter()
    for frac in spec.fine_prune:
        model, info = fam.fine_prune(owner.model, owner.source, fraction=frac, layers=spec.fine_prune_layers,
                                     epochs=spec.fine_prune_epochs, lr=spec.copy_lr, images=spec.bn_images,
                                     seed=owner.seed + 31)
        pid = f"fineprune-{frac:g}-ft{spec.fine_prune_epochs}"
        add_positive(pid, model, {"kind": "fine-pruned", "scheme": "fine-pruning", "sparsity": float(frac),
                                  "finetune": f"{spec.fine_prune_epochs}ep", "compiled": "eager"})
        log(f"zoo: {pid} built")
    timings["fine_pruned"] = round(time.perf_counter() - start, 2)

    start = time.perf_counter()
    for ratio in spec.channel_prune:
        model, info = fam.channel_prune(owner.model, owner.source, ratio=ratio, epochs=spec.channel_prune_epochs,
                                        lr=spec.copy_lr, seed=owner.seed + 37)
        pid = f"tp-channel-{ratio:g}-ft{spec.channel_prune_epochs}"
        path = directory / "onnx" / f"{pid}.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(model, shape, path)
        add_onnx(pid, path, {"kind": "channel-pruned", "scheme": "torch-pruning", "sparsity": float(ratio),
                             "finetune": f"{spec.channel_prune_epochs}ep", "compiled": "onnx"}, info)
        eager[pid] = model
        log(f"zoo: {pid} built ({info['params_after']}/{info['params_before']} parameters)")
    timings["channel_pruned"] = round(time.perf_counter() - start, 2)

    start = time.perf_counter()
    calib = None
    if any(mode == "int8-static" for mode, _ in spec.quantized):
        idx = np.sort(np.random.default_rng(owner.seed + 41).permutation(len(owner.source.train))[:spec.calib_images])
        calib = owner.source.train.tensors(idx)[0]
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # onnxruntime.quantization warns on the root logger about pre-processing
    try:
        for mode, base in spec.quantized:
            pid = f"{mode}:{base}"
            if base not in eager:
                excluded.append({"id": pid, "reason": f"base model {base!r} not in the zoo"})
                continue
            fp32 = directory / "onnx" / f"fp32-{base}.onnx"
            fp32.parent.mkdir(parents=True, exist_ok=True)
            if not fp32.is_file():
                export_onnx(eager[base], shape, fp32)
            path = directory / "onnx" / f"{mode}-{base}.onnx"
            info = fam.quantize_onnx(fp32, path, mode, calib)
            base_family = next((m.family for m in members if m.id == base),
                               {"scheme": "none", "sparsity": 0.0, "finetune": "none"})
            add_onnx(pid, path, {**base_family, "kind": "quantized", "compiled": mode, "base": base}, info)
            log(f"zoo: {pid} quantized")
    finally:
        quiet.setLevel(level)
    for f in (directory / "onnx").glob("fp32-*.onnx") if (directory / "onnx").is_dir() else []:
        f.unlink()  # intermediates only
    timings["quantized"] = round(time.perf_counter() - start, 2)

    start = time.perf_counter()
    for arch, width, access in spec.extraction:
        if arch == owner.arch:
            continue  # extraction students are of other architectures
        student, info = fam.train_student(owner.model, owner.source, arch=arch, width=width, access=access,
                                          epochs=spec.extraction_epochs, copies=spec.extraction_copies,
                                          seed=owner.seed + 53)
        pid = f"extract-{access}-{arch}-w{width:g}"
        from compression.backends.torch_eager import TorchPredictor

        acc = _accuracy_of(TorchPredictor(student, shape, num_classes), owner.source)
        sha = _save_state(student, directory / "extraction" / f"{pid}.pt")
        members.append(Member(pid, "extraction", {"kind": "extraction", "scheme": f"student-{arch}",
                                                  "sparsity": 0.0, "finetune": f"{access}-only" if access == "label"
                                                  else "probabilities", "compiled": "eager", "access": access},
                              round(acc, 4), arch, float(width), f"extraction/{pid}.pt", sha, info=info))
        log(f"zoo: {pid} trained (accuracy {acc:.3f}, agreement {info['agreement_on_queries']:.3f})")
    timings["extraction"] = round(time.perf_counter() - start, 2)


def _write_zoo_json(zoo: Zoo, owner: Owner) -> None:
    payload = {"format": ZOO_FORMAT, "owner": {"sha256": owner.sha256, "model_id": owner.model_id,
                                               "arch": owner.arch, "width": owner.width},
               "spec": zoo.spec, "num_classes": zoo.num_classes, "input_shape": list(zoo.input_shape),
               "members": [m.as_dict() for m in zoo.members], "excluded": zoo.excluded,
               "build_seconds": zoo.build_seconds}
    atomic_write_text(zoo.directory / "zoo.json", json.dumps(payload, indent=1, default=str) + "\n")


def load_zoo(directory: Path, owner_sha256: str | None = None) -> Zoo:
    """Read ``zoo.json`` and check every member's files (sha256, artifact manifest); ArtifactError if unusable."""
    from compression.backends.artifact import read_manifest

    try:
        payload = json.loads((directory / "zoo.json").read_text())
    except (OSError, ValueError) as err:
        raise ArtifactError(f"zoo {directory}: zoo.json unreadable ({err.__class__.__name__})") from None
    if payload.get("format") != ZOO_FORMAT:
        raise ArtifactError(f"zoo {directory}: unknown format {payload.get('format')!r}")
    if owner_sha256 is not None and payload["owner"]["sha256"] != owner_sha256:
        raise ArtifactError(f"zoo {directory} belongs to another owner")
    members = [Member(**m) for m in payload["members"]]
    zoo = Zoo(directory, payload["owner"]["sha256"], payload["spec"], members, payload.get("excluded", []),
              payload.get("build_seconds", {}), True, int(payload["num_classes"]),
              tuple(int(v) for v in payload["input_shape"]))
    for m in members:
        if m.artifact:
            read_manifest(directory / m.artifact)
        elif m.onnx:
            if not (directory / m.onnx).is_file() or sha256_file(directory / m.onnx) != m.sha256:
                raise ArtifactError(f"zoo member {m.id}: {m.onnx} is missing or does not match its sha256")
        else:
            path = _model_path(zoo, m)
            if not path.is_file() or sha256_file(path) != m.sha256:
                raise ArtifactError(f"zoo member {m.id}: {path} is missing or does not match its sha256")
    if len(zoo.negatives()) < 2:
        raise ArtifactError(f"zoo {directory} has fewer than 2 negatives")
    return zoo


def get_zoo(owner: Owner, spec: ZooSpec, *, cache_dir: str, recipe: dict[str, Any], threads: int = 1,
            device: str = "cpu", log: Callable[[str], None] = lambda m: None) -> Zoo:
    """Load the cached zoo of ``owner`` or build it (a :mod:`suite.core.store` entry, published atomically)."""
    final = zoo_dir(cache_dir, owner, spec)
    key = zoo_key_payload(owner.sha256, owner.source.fingerprint(), spec, owner.seed, owner.profile)

    def load(entry: Path) -> Zoo:
        zoo = load_zoo(entry, owner.sha256)
        log(f"zoo: loaded {entry} ({len(zoo.positives())} positives, {len(zoo.negatives())} negatives)")
        return zoo

    def build(tmp: Path) -> None:
        build_zoo(owner, spec, tmp, cache_dir=cache_dir, recipe=recipe, threads=threads, device=device, log=log)

    def reload(entry: Path) -> Zoo:  # after publishing: the zoo as read from its final place
        zoo = load_zoo(entry, owner.sha256)
        zoo.cache_hit = False
        return zoo

    store = Store(cache_dir, "zoo")
    got = store.get_or_build(key, build, load, name=final.name, corrupt=(ArtifactError,), legacy=True,
                             warn=lambda entry, why: log(f"warning: cached zoo {entry} unusable ({why}); "
                                                         "rebuilding it"))
    if got.value is None:  # published by this call
        return reload(got.path)
    return got.value
