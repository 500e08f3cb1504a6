"""The run pipeline: source -> model -> compress -> deploy -> evaluate -> record.

Each stage is a plain function over small typed objects; later stages
(attacks, fingerprints) are added as further functions and registry entries,
not as special cases here.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

import suite
from suite.core import registries as reg
from suite.core import models as core_models
from suite.core.cache import ModelKey, sha256_file
from suite.core.config import RunConfig
from suite.core.errors import ConfigError
from suite.core.models import ModelSpec, SourceSpec, TrainedModel
from suite.core.predictor import Deployment, predict_labels
from suite.core.record import (HIGHER_IS_BETTER, SCHEMA_VERSION, PendingRunDir, ResultRecord, env_info,
                          git_sha, new_run_id, utc_now)
from suite.core.sources.base import ImageSource
from suite.core.runtime import Runtime


def log(cfg: RunConfig, msg: str) -> None:
    if not cfg.quiet:
        print(f"[suite] {msg}", file=sys.stderr, flush=True)


class Timer:
    """Accumulates wall-clock seconds per stage name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 4)


@dataclass
class StageContext:
    """What the evaluation stages after deployment (attacks, fingerprints) receive.

    trained.model: the dense eager model (gradients available).
    compressed.model: the compressed eager model (gradients available).
    deployment.predictor: the deployed model, a black box unless
        ``differentiable`` (query it only through ``predict``).
    run_dir: the pending run directory; files written here land with the record.
    """

    cfg: RunConfig
    source: ImageSource
    trained: TrainedModel
    compressed: Any  # compression.base.CompressionResult
    deployment: Deployment
    run_dir: Path
    log: Callable[[str], None]


# A stage returns a dict with any of: its record sections (e.g. "attacks",
# "transfer", "fingerprints"), "metrics" (name -> float, merged into the
# record's metrics) and "higher_is_better" (name -> bool).
STAGES: tuple[tuple[str, str, str], ...] = (
    # (config field, timer name, "module:function")
    ("attacks", "attack", "attacks.stage:run_attack_stage"),
    ("fingerprints", "fingerprint", "fingerprints.stage:run_fingerprint_stage"),
)


def run_stages(ctx: StageContext, timer: "Timer") -> dict[str, Any]:
    """Run each configured post-deployment stage; returns merged record sections."""
    import importlib

    sections: dict[str, Any] = {"attacks": [], "transfer": {}, "fingerprints": [], "metrics": {},
                                "higher_is_better": {}}
    for field_name, timer_name, target in STAGES:
        if not getattr(ctx.cfg, field_name):
            continue
        module, attr = target.split(":")
        stage = getattr(importlib.import_module(module), attr)
        with timer.stage(timer_name):
            out = stage(ctx)
        for key, value in out.items():
            if key in ("metrics", "higher_is_better"):
                sections[key].update(value)
            else:
                sections[key] = value
    return sections


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


def model_key(cfg: RunConfig, source: ImageSource) -> ModelKey:
    return core_models.model_key(model_spec(cfg), source)


def get_trained_model(cfg: RunConfig, source: ImageSource) -> TrainedModel:
    """Load the dense model from the model store, training it first on a miss."""
    return core_models.get_trained_model(model_spec(cfg), source, runtime_of(cfg))


def build_compressor(cfg: RunConfig):
    """Build the configured compressor; unknown settings become a ConfigError."""
    try:
        return reg.compressors.build(cfg.compress, sparsity=cfg.sparsity, **cfg.compress_args)
    except TypeError as err:  # an unexpected keyword from --compress-args
        raise ConfigError(f"bad --compress-args for {cfg.compress}: {err}") from None


def compress_model(cfg: RunConfig, trained: TrainedModel, source: ImageSource, compressor=None):
    compressor = compressor or build_compressor(cfg)
    kwargs: dict[str, Any] = {}
    if getattr(compressor, "name", "") == "auto":
        kwargs["cache_dir"] = cfg.cache_dir  # latency tables are cached next to the models
    return compressor.compress(trained.model, source, seed=cfg.seed, device=cfg.device, profile=cfg.profile,
                               quiet=cfg.quiet, **kwargs)


def build_backend(cfg: RunConfig):
    """Build the configured backend; ``--backend-args`` become its settings."""
    settings = dict(cfg.backend_args)
    if isinstance(settings.get("batch_sizes"), (int, str)):
        settings["batch_sizes"] = [int(v) for v in str(settings["batch_sizes"]).split(":")]
    if cfg.backend == "tvm":
        settings = {"target": cfg.target, "threads": cfg.threads, "cache_dir": cfg.cache_dir, **settings}
    elif cfg.target is not None:
        raise ConfigError(f"--target applies to --backend tvm, not {cfg.backend}")
    elif cfg.backend == "onnx":
        settings = {"threads": cfg.threads, **settings}
    try:
        return reg.backends.build(cfg.backend, **settings)
    except TypeError as err:
        raise ConfigError(f"bad --backend-args for {cfg.backend}: {err}") from None


def deploy_model(cfg: RunConfig, model: torch.nn.Module, source: ImageSource, workdir: Path) -> Deployment:
    backend = build_backend(cfg)
    kwargs: dict[str, Any] = {}
    if cfg.backend == "tvm":
        from compression.layers import list_layers

        kwargs["layer_names"] = [l.name for l in list_layers(model, source.shape)
                                 if l.kind == "conv" and not l.depthwise]
    return backend.deploy(model, source.shape, source.num_classes, workdir=str(workdir), device=cfg.device,
                          **kwargs)


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


def _digest(payload: dict[str, Any]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def state_sha256(model: torch.nn.Module) -> str:
    """sha256 over a model's state_dict (names, shapes, dtypes and bytes)."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _publish(tmp: Path, final: Path) -> None:
    """Move a finished cache entry into place (another process may have won the race)."""
    import shutil

    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return
    os.rename(tmp, final)


def get_compressed(cfg: RunConfig, trained: TrainedModel, source: ImageSource, compressor, workdir: Path):
    """Compress (or load the cached compressed model) and place its files in ``workdir``.

    Cache key: the dense model's sha256, the compressor and its settings, the
    seed and the profile.  A corrupt entry is reported and rebuilt.
    """
    import json
    import shutil
    import tempfile

    from compression.artifacts import load_compression, save_compression
    from compression.base import CompressionResult
    from suite.core.errors import ArtifactError

    if cfg.compress == "none":
        return compress_model(cfg, trained, source, compressor)
    key = _digest({"dense": trained.info["sha256"], "compress": cfg.compress, "sparsity": cfg.sparsity,
                   "args": cfg.compress_args, "seed": cfg.seed, "profile": cfg.profile, "format": 1})
    entry = Path(cfg.cache_dir) / "compressed" / cfg.model / key[:24]
    if (entry / "info.json").exists():
        try:
            factory = reg.models.get(cfg.model)

            def build() -> torch.nn.Module:
                return factory(num_classes=source.num_classes, width=cfg.width, in_channels=source.shape[0])

            model, plan, masks = load_compression(entry, build)
            info = json.loads((entry / "info.json").read_text())
            shutil.copytree(entry, workdir)
            log(cfg, f"loaded cached compressed model {entry}")
            return CompressionResult(model, {**info, "cache_hit": True}, plan=plan)
        except (ArtifactError, OSError, ValueError) as err:
            log(cfg, f"warning: cached compressed model {entry} unusable ({err}); rebuilding it")
            shutil.rmtree(entry, ignore_errors=True)
    result = compress_model(cfg, trained, source, compressor)
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}.tmp-"))
    try:
        fields = save_compression(result, tmp / "c", relative_to=tmp)
        fields = {k: (v.replace("c", "compressed", 1) if isinstance(v, str) and v.startswith("c") else v)
                  for k, v in fields.items()}
        result.info.update(fields)
        result.info["cache_hit"] = False
        (tmp / "c" / "info.json").write_text(json.dumps(result.info, indent=1, default=str))
        shutil.copytree(tmp / "c", workdir)
        os.rename(tmp / "c", tmp / "entry")
        _publish(tmp / "entry", entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def get_deployment(cfg: RunConfig, compressed, source: ImageSource, workdir: Path) -> Deployment:
    """Deploy (or reuse a cached compiled artifact) and check it against the eager model."""
    import json
    import shutil
    import tempfile

    from compression.backends.artifact import load_predictor
    from suite.core.errors import ArtifactError

    if cfg.backend == "torch":
        return deploy_model(cfg, compressed.model, source, workdir)
    from suite.core.record import package_version

    state_digest = state_sha256(compressed.model)
    key = _digest({"state": state_digest, "backend": cfg.backend, "target": cfg.target, "args": cfg.backend_args,
                   "threads": cfg.threads, "shape": source.shape, "tvm": package_version("apache-tvm"),
                   "ort": package_version("onnxruntime"), "format": 1})
    entry = Path(cfg.cache_dir) / "artifacts" / cfg.backend / key[:24]
    if (entry / "deployment.json").exists():
        try:
            info = json.loads((entry / "deployment.json").read_text())
            shutil.copytree(entry, workdir, ignore=shutil.ignore_patterns("deployment.json"))
            runnable = info.get("runnable", True)
            predictor = load_predictor(workdir, isolated=True) if runnable else deploy_model(
                cfg, compressed.model, source, workdir).predictor
            deployment = Deployment(predictor, {**info, "artifact": "artifacts", "cache_hit": True})
            if runnable:
                deployment.info.update(check_deployment(deployment, compressed.model, source))
            log(cfg, f"reused cached {cfg.backend} artifact {entry}")
            return deployment
        except (ArtifactError, OSError, ValueError) as err:
            log(cfg, f"warning: cached artifact {entry} unusable ({err}); rebuilding it")
            shutil.rmtree(entry, ignore_errors=True)
            shutil.rmtree(workdir, ignore_errors=True)
    deployment = deploy_model(cfg, compressed.model, source, workdir)
    if not deployment.predictor.differentiable and deployment.info.get("runnable", True):
        deployment.info.update(check_deployment(deployment, compressed.model, source))
    deployment.info["artifact"] = "artifacts"
    deployment.info["cache_hit"] = False
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}.tmp-"))
    try:
        shutil.copytree(workdir, tmp / "entry")
        cached = {k: v for k, v in deployment.info.items()
                  if k not in ("agreement_top1", "max_abs_logit_diff", "checked_images", "cache_hit")}
        (tmp / "entry" / "deployment.json").write_text(json.dumps(cached, indent=1, default=str))
        _publish(tmp / "entry", entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return deployment


# ----------------------------------------------------------------- driver
def run(cfg: RunConfig, *, on_stage: Callable[[str], None] | None = None) -> tuple[Path, ResultRecord]:
    """Execute one run and write its record; returns ``(run_dir, record)``.

    ``cfg`` is resolved here (profile defaults, canonical names, validation).
    """
    started = time.perf_counter()
    cfg = cfg.resolved()
    setup_runtime(cfg)
    compressor = build_compressor(cfg)  # settings errors surface before any training
    build_backend(cfg)
    timer = Timer()
    run_id = new_run_id(cfg.model, cfg.compress, cfg.source, cfg.seed)
    with PendingRunDir(cfg.output_dir, run_id) as pending:
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
        ctx = StageContext(cfg, source, trained, compressed, deployment, pending.path, lambda m: log(cfg, m))
        sections = run_stages(ctx, timer)
        metrics.update(sections.pop("metrics"))
        higher_is_better = {**HIGHER_IS_BETTER, **sections.pop("higher_is_better")}
        timer.seconds["total"] = round(time.perf_counter() - started, 4)
        config = cfg.as_dict()
        record: ResultRecord = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id,
            "created_at": utc_now().isoformat(),
            "suite_version": suite.__version__,
            "git_sha": git_sha(),
            "env": env_info(cfg.threads or 1, cfg.device),
            "config": config,
            "seeds": {"run": cfg.seed, "model_init": cfg.seed, "data_order": cfg.seed,
                      "split": int(source.meta.get("split_seed", 0))},
            "source": source.summary(),
            "model": trained.info,  # type: ignore[typeddict-item]
            "compression": compressed.info,
            "deployment": deployment.info,
            "metrics": metrics,
            "attacks": sections["attacks"],
            "transfer": sections["transfer"],
            "fingerprints": sections["fingerprints"],
            "timings": dict(timer.seconds),
            "higher_is_better": {k: v for k, v in higher_is_better.items() if k in metrics},
        }
        path = pending.commit(record, config)
    return path, record
