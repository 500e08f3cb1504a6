"""The run pipeline: source -> model -> compress -> deploy -> evaluate -> record.

Each stage is a plain function over small typed objects; later stages
(attacks, fingerprints) are added as further functions and registry entries,
not as special cases here.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

import suite
from compression.base import CompressionResult
from suite.core import registries as reg
from suite.core import models as core_models
from suite.core.config import RunConfig, Task
from suite.core.errors import ConfigError
from suite.core.files import state_sha256  # noqa: F401 - re-exported: callers import it from here
from suite.core.metrics import record_directions
from suite.core.models import ModelSpec, SourceSpec, TrainedModel
from suite.core.predictor import Deployment, predict_labels
from suite.core.record import PendingRunDir, ResultRecord, new_run_id, record_head
from suite.core.sources.base import ImageSource
from suite.core.runtime import Runtime, using
from suite.core.stages import Role, Stage, StageInput, StageOutput, Subject, Subjects


def log(cfg: RunConfig, msg: str) -> None:
    if not cfg.quiet:
        print(f"[suite] {msg}", file=sys.stderr, flush=True)


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Between stages the run drops large temporaries (TVM compilations, whole
    batches of crafted images); without the trim glibc keeps their pages,
    and the process carries them into the suspect zoo's build, where the
    workers add their own.
    """
    import gc

    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


class Timer:
    """Accumulates wall-clock seconds per stage name and prints one progress line per stage.

    say: where the lines go (None: silent); total: the number of stages the
    run will go through, for the ``[k/N]`` counter.
    """

    def __init__(self, say: Callable[[str], None] | None = None, total: int = 0) -> None:
        self.seconds: dict[str, float] = {}
        self.say, self.total, self.done = say, total, 0
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block; on success print ``[k/N] name: X s (run T s)`` (nothing on failure: the error is the line)."""
        start = time.perf_counter()
        self.done += 1
        tag = f"[{self.done}/{self.total}] {name}" if self.total else name
        try:
            yield
        finally:
            took = time.perf_counter() - start
            self.seconds[name] = round(self.seconds.get(name, 0.0) + took, 4)
            release_memory()
        if self.say is not None:
            self.say(f"{tag}: {took:.1f} s (run {time.perf_counter() - self.started:.0f} s)")


# Post-deployment stages, in order: "module:object" implementing suite.core.stages.Stage.
STAGES: tuple[str, ...] = ("attacks.stage:STAGE", "fingerprints.stage:STAGE")


def make_subjects(cfg: RunConfig, source: ImageSource, trained: TrainedModel, compressed: CompressionResult,
                  deployment: Deployment) -> Subjects:
    """The typed subjects the stages may use: dense, compressed (if any), deployed (if another runtime)."""
    from compression.backends.torch_eager import TorchPredictor

    def eager(model: torch.nn.Module) -> TorchPredictor:
        return TorchPredictor(model.eval(), source.shape, source.num_classes)

    dense = Subject(Role.DENSE, eager(trained.model), trained.model.eval(), dict(trained.info))
    comp = None
    if cfg.compress != "none":
        comp = Subject(Role.COMPRESSED, eager(compressed.model), compressed.model.eval(), dict(compressed.info))
    deployed = None
    if not deployment.predictor.differentiable and deployment.info.get("runnable", True):
        deployed = Subject(Role.DEPLOYED, deployment.predictor, None, dict(deployment.info))
    return Subjects(dense, comp, deployed)


def run_stages(inp: StageInput, timer: "Timer") -> StageOutput:
    """Run each configured post-deployment stage; returns the merged record sections."""
    import importlib

    merged = StageOutput()
    for target in STAGES:
        module, attr = target.split(":")
        stage: Stage = getattr(importlib.import_module(module), attr)
        if not stage.enabled(inp.config):
            continue
        with timer.stage(stage.name):
            merged.merge(stage.run(inp))
    return merged


def count_stages(cfg: RunConfig) -> int:
    """Stages this run goes through: source, model, compress, deploy, evaluate, then the enabled post stages."""
    import importlib

    post = 0
    for target in STAGES:
        module, attr = target.split(":")
        post += bool(getattr(importlib.import_module(module), attr).enabled(cfg))
    return 5 + post


# ------------------------------------------------------------------ stages
def setup_runtime(cfg: RunConfig) -> None:
    """Threads and device checks; call before any torch work."""
    torch.set_num_threads(cfg.threads or 1)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but no CUDA device is available to torch")


def source_spec(cfg: RunConfig) -> SourceSpec:
    return SourceSpec(cfg.source, cfg.data_root, cfg.limit)


def model_spec(cfg: RunConfig) -> ModelSpec:
    assert cfg.recipe is not None and cfg.width is not None
    return ModelSpec(cfg.model, float(cfg.width), cfg.seed, cfg.recipe)


def runtime_of(cfg: RunConfig) -> Runtime:
    return Runtime(cache_dir=cfg.cache_dir, device=cfg.device, threads=cfg.threads or 1, quiet=cfg.quiet)


def load_source(cfg: RunConfig) -> ImageSource:
    return core_models.load_source(source_spec(cfg))


def get_trained_model(cfg: RunConfig, source: ImageSource) -> TrainedModel:
    """Load the dense model from the model store, training it first on a miss."""
    return core_models.get_trained_model(model_spec(cfg), source, runtime_of(cfg))


def build_compressor(cfg: RunConfig):
    """Build the configured compressor; it checks ``--compress-args`` against its declared settings
    (:mod:`suite.core.settings`: unknown keys and bad values are one-line ConfigErrors)."""
    return reg.compressors.build(cfg.compress, sparsity=cfg.sparsity, **cfg.compress_args)


def compress_model(cfg: RunConfig, trained: TrainedModel, source: ImageSource, compressor=None):
    compressor = compressor or build_compressor(cfg)
    with using(runtime_of(cfg)):  # components read the cache directory from the runtime context
        return compressor.compress(trained.model, source, seed=cfg.seed, device=cfg.device, profile=cfg.profile,
                                   quiet=cfg.quiet)


def backend_args(cfg: RunConfig) -> dict[str, Any]:
    """``--backend-args`` over the backend's profile defaults (the default profile compiles batch 1 only)."""
    spec = reg.backends.get(reg.backends.canonical(cfg.backend)).SETTINGS
    return {**spec.profile(cfg.profile), **dict(cfg.backend_args)}


def build_backend(cfg: RunConfig):
    """Build the configured backend; ``--backend-args`` are checked against its declared ``SETTINGS``.

    Run-level facts (``threads``, ``target``, ``cache_dir``) go to every backend
    that declares a setting of that name; ``--target`` for a backend without
    one is a ConfigError.
    """
    name = reg.backends.canonical(cfg.backend)
    spec = reg.backends.get(name).SETTINGS
    settings = spec.coerce_given(backend_args(cfg), owner=f"backend {name}")
    if cfg.target is not None and "target" not in spec:
        takers = [b for b in reg.backends.names() if "target" in reg.backends.get(b).SETTINGS]
        raise ConfigError(f"--target applies to --backend {' or '.join(takers)}, not {name}")
    run_level = {"target": cfg.target, "threads": cfg.threads, "cache_dir": cfg.cache_dir}
    settings = {**{k: v for k, v in run_level.items() if k in spec}, **settings}
    return reg.backends.build(name, **settings)


def deploy_model(cfg: RunConfig, model: torch.nn.Module, source: ImageSource, workdir: Path) -> Deployment:
    backend = build_backend(cfg)
    return backend.deploy(model, source.shape, source.num_classes, workdir=str(workdir), device=cfg.device)


def check_deployment(deployment: Deployment, model: torch.nn.Module, source: ImageSource) -> dict[str, Any]:
    """Compare a black-box deployment with the eager model on the whole test split."""
    x, _ = source.test.tensors()
    with torch.no_grad():
        eager = torch.cat([model.eval().cpu()(x[i:i + 256]) for i in range(0, len(x), 256)])
        deployed = deployment.predictor.predict(x).float()
    agree = float((eager.argmax(1) == deployed.argmax(1)).float().mean())
    return {"agreement_top1": agree, "max_abs_logit_diff": float((eager - deployed).abs().max()),
            "checked_images": int(len(x))}


def evaluate_clean(deployment: Deployment, source: ImageSource) -> dict[str, float]:
    """Top-1 accuracy on the test split, queried through the predictor only."""
    x, y = source.test.tensors()
    pred = predict_labels(deployment.predictor, x)
    correct = int((pred == y).sum())
    return {"clean_acc": correct / max(1, len(y)), "test_images": float(len(y))}


def get_compressed(cfg: RunConfig, trained: TrainedModel, source: ImageSource, compressor, workdir: Path):
    """Compress (or load the cached compressed model) and place its files in ``workdir``.

    Cache key: the dense model's sha256, the compressor and its settings (and
    its ``algorithm_version`` where it has one), the seed and the profile (:func:`compression.cache.get_compressed`).  A
    corrupt entry is reported and rebuilt.
    """
    from compression import cache as ccache

    if cfg.compress == "none":
        return compress_model(cfg, trained, source, compressor)
    factory = reg.models.get(cfg.model)
    return ccache.get_compressed(
        cache_dir=cfg.cache_dir, model_name=cfg.model, dense_sha256=trained.info["sha256"],
        compress_name=cfg.compress, sparsity=cfg.sparsity, settings=cfg.compress_args, seed=cfg.seed,
        profile=cfg.profile, algorithm=getattr(compressor, "algorithm_version", None),
        model_factory=lambda: factory(num_classes=source.num_classes, width=cfg.width, in_channels=source.shape[0]),
        compress=lambda: compress_model(cfg, trained, source, compressor), workdir=Path(workdir),
        log=lambda m: log(cfg, m))


def get_deployment(cfg: RunConfig, compressed, source: ImageSource, workdir: Path) -> Deployment:
    """Deploy (or reuse a cached compiled artifact) and check it against the eager model."""
    from compression import cache as ccache
    from suite.core.record import package_version

    if cfg.backend == "torch":
        return deploy_model(cfg, compressed.model, source, workdir)
    key = ccache.deployment_key(
        state_sha256=state_sha256(compressed.model), backend=cfg.backend, target=cfg.target,
        args=backend_args(cfg), threads=cfg.threads, shape=source.shape, tvm=package_version("apache-tvm"),
        ort=package_version("onnxruntime"))
    deployment = ccache.get_deployment(
        cache_dir=cfg.cache_dir, backend=cfg.backend, key=key,
        deploy=lambda wd: deploy_model(cfg, compressed.model, source, wd),
        check=lambda dep: check_deployment(dep, compressed.model, source), workdir=Path(workdir),
        log=lambda m: log(cfg, m))
    backend = build_backend(cfg)
    if deployment.info.get("cache_hit") and deployment.info.get("runnable", True) and hasattr(backend, "measure"):
        # a cached artifact, never its timings: time it (and the dense runtimes beside it) afresh
        deployment.info.update(backend.measure(Path(workdir), compressed.model, source.shape))
    return deployment


# ----------------------------------------------------------------- driver
# task -> its run function ("module:function" imported on use); each takes the unresolved RunConfig.
TASK_RUNS: dict[Task, str] = {
    Task.CLASSIFICATION: "suite.app.pipeline:run_classification",
    Task.SR: "suite.app.sr_pipeline:run",
}


def run(cfg: RunConfig, *, on_stage: Callable[[str], None] | None = None) -> tuple[Path, ResultRecord]:
    """Execute one run of ``cfg.task`` (see :data:`TASK_RUNS`) and write its record; returns ``(run_dir, record)``."""
    import importlib

    module, attr = TASK_RUNS[Task.parse(cfg.task)].split(":")
    return getattr(importlib.import_module(module), attr)(cfg, on_stage=on_stage)


def run_classification(cfg: RunConfig, *,
                       on_stage: Callable[[str], None] | None = None) -> tuple[Path, ResultRecord]:
    """Execute one classification run and write its record; returns ``(run_dir, record)``.

    ``cfg`` is resolved here (profile defaults, canonical names, validation).
    """
    started = time.perf_counter()
    cfg = cfg.resolved()
    setup_runtime(cfg)
    compressor = build_compressor(cfg)  # settings errors surface before any training
    build_backend(cfg)
    timer = Timer(say=None if cfg.quiet else (lambda m: log(cfg, m)), total=count_stages(cfg))
    run_id = new_run_id(cfg.model, cfg.compress, cfg.source, cfg.seed)
    runtime = runtime_of(cfg)
    with using(runtime), PendingRunDir(cfg.output_dir, run_id) as pending:
        with timer.stage("source"):
            source = load_source(cfg)
        log(cfg, f"source {source.name}: {source.shape}, train/val/test = "
                 f"{len(source.train)}/{len(source.val)}/{len(source.test)}")
        with timer.stage("model"):
            trained = get_trained_model(cfg, source)
        with timer.stage("compress"):
            compressed = get_compressed(cfg, trained, source, compressor, pending.path / "compressed")
        with timer.stage("deploy"):
            deployment = get_deployment(cfg, compressed, source, pending.path / "artifacts")
        with timer.stage("evaluate"):
            metrics = evaluate_clean(deployment, source)
        subjects = make_subjects(cfg, source, trained, compressed, deployment)
        sections = run_stages(StageInput(cfg, source, subjects, pending.path, runtime), timer)
        metrics.update(sections.metrics)
        higher_is_better = {**record_directions(metrics), **sections.higher_is_better}
        timer.seconds["total"] = round(time.perf_counter() - started, 4)
        config = cfg.as_dict()
        record: ResultRecord = {  # type: ignore[typeddict-item]
            **record_head(run_id, config, seed=cfg.seed, split_seed=int(source.meta.get("split_seed", 0)),
                          source=source.summary(), threads=cfg.threads or 1, device=cfg.device,
                          suite_version=suite.__version__),
            "model": trained.info,  # type: ignore[typeddict-item]
            "compression": compressed.info,
            "deployment": deployment.info,
            "metrics": metrics,
            "attacks": sections.attacks,
            "transfer": sections.transfer,
            "fingerprints": sections.fingerprints,
            "timings": dict(timer.seconds),
            "higher_is_better": {k: v for k, v in higher_is_better.items() if k in metrics},
        }
        path = pending.commit(record, config)
    return path, record
