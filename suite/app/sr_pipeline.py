"""The run of ``--task sr``: photos -> SR model -> compress -> deploy -> PSNR / SSIM and 720p latency -> record.

Same guarantees as the classification run (:mod:`suite.app.pipeline`): the
record is assembled in a hidden :class:`~suite.core.record.PendingRunDir` and
renamed into place last (nothing is left on Ctrl-C / SIGTERM); it carries the
resolved config, seeds, package versions and per-stage timings, and its
top-level ``task`` is ``"sr"``.

Stages:

source    the SR source (``photos``: the bundled photos; ``srfolder``: a folder),
          cut per profile (:data:`SR_PROFILES`)
model     the dense SR model: loaded from the cache (``<cache>/sr-models``,
          keyed by model, scale, width, source sha256, recipe and seed;
          ``torch.load(weights_only=True)``) or trained (:func:`suite.core.sr.train.train_sr`)
compress  ``none`` (the dense model), ``block`` (:func:`compression.sr_deploy.block_prune_sr`
          at ``--sparsity`` + masked fine-tuning) or ``auto``
          (:func:`compression.sr_search.search_sr` under ``--latency-target`` ms per 720p frame)
deploy    the compressed model on ``--backend`` (torch eager, ONNX Runtime, TVM with our
          block-sparse kernels), timed per frame interleaved in one process against the dense
          model on torch eager, ONNX Runtime and TVM dense; max |pixel diff| against eager
evaluate  PSNR / SSIM (Y, border = scale) on the test photos of the deployed model, the dense
          model and bicubic
attack    ``--attacks sr-uap`` (:data:`attacks.sr_uap.SR_UAP_STAGE`): a UAP crafted on the dense model
          (train crops), scored on the test photos against dense, compressed and deployed beside
          same-norm noise
fingerprint ``--fingerprints sr-outputs`` (:data:`fingerprints.sr.SR_FINGERPRINT_STAGE`): the dense
          owner's output fingerprint; verdicts on compressed / deployed against a threshold calibrated
          on independently trained models (cached like the dense model)

The frame is a crop of the test photo ``rocket``: LR 360x640 at x2 / 180x320 at x4 (a 1280x720 output); the
smoke profile uses a 1/8-size frame to stay fast (``deployment.frame`` says which).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import suite
from suite.core.config import RunConfig, Task
from suite.core.errors import ConfigError
from suite.core.record import PendingRunDir, ResultRecord, new_run_id, record_head
from suite.core.runtime import using
from suite.core.stages import StageOutput

# LR input of one 1280x720 output frame, per scale
FRAME_720P: dict[int, tuple[int, int]] = {2: (360, 640), 4: (180, 320)}
FRAME_PHOTO = "rocket"


@dataclass(frozen=True)
class SRProfile:
    """What a profile sizes for ``--task sr``.

    steps / batch_size / patch_size / lr: dense training (:class:`~suite.core.sr.train.SRTrainRecipe`).
    ft_steps: masked fine-tuning steps after block pruning (at ``lr / 2``).
    source: keyword arguments of the SR source (HR patch size, patches per image, eval crop).
    frame_div: the timed frame is the 720p frame divided by this (1: a real 720p frame).
    reps: timed frames per runtime (median recorded).  tune: time TVM tiles (cached) when building.
    search: budget fields of :class:`compression.sr_search.SRSearchSettings` for ``--compress auto``.
    """

    steps: int
    batch_size: int
    patch_size: int
    lr: float
    ft_steps: int
    source: dict[str, Any]
    frame_div: int = 1
    reps: int = 10
    tune: bool = True
    search: dict[str, Any] = field(default_factory=dict)


# default: bench/bench_sr.py's data and recipe at 1500 dense steps (the bench trains ESPCN / FSRCNN 3000;
# bench/bench_sr_recipe.py measured ESPCN's val PSNR-Y only +0.08 dB higher at 4500 steps than at 1500);
# the default search budget (400 sandwich steps, 2000 fine-tuning steps of the chosen sub-network) is cheaper than the
# bench's --search one (2000 sandwich steps: with 400 the bench missed +1.5 dB at its smallest target); full uses 2000;
# verify_rounds: the chosen model is built at the 720p frame and timed (TVM, the run's threads and tuning cache), and
# re-chosen on a rescaled prediction while over the target or under 0.75 of it (at most 3 builds); smoke skips it
SR_PROFILES: dict[str, SRProfile] = {
    "smoke": SRProfile(steps=30, batch_size=4, patch_size=16, lr=1e-3, ft_steps=10,
                       source={"patch_size": 64, "patches_per_image": 4, "eval_size": 64}, frame_div=8, reps=3,
                       tune=False, search={"supernet_steps": 0, "population": 4, "generations": 1,
                                           "finetune_steps": 10, "val_crop": 32, "table_tile": (45, 80),
                                           "verify_rounds": 0}),
    "default": SRProfile(steps=1500, batch_size=16, patch_size=32, lr=1e-3, ft_steps=300,
                         source={"patch_size": 96, "patches_per_image": 64}, reps=10,
                         search={"supernet_steps": 400, "finetune_steps": 2000, "verify_rounds": 3}),
    "full": SRProfile(steps=3000, batch_size=16, patch_size=32, lr=1e-3, ft_steps=600,
                      source={"patch_size": 96, "patches_per_image": 64}, reps=20,
                      search={"supernet_steps": 2000, "population": 12, "generations": 5, "finetune_steps": 4000,
                              "verify_rounds": 3}),
}

# Post-deployment SR stages, in order: "module:object" implementing suite.core.stages.Stage over an
# SRStageInput (enabled(config) reads config.attacks / config.fingerprints).
# Their config names: suite.core.config.SR_ATTACKS / SR_FINGERPRINTS.
SR_STAGES: tuple[str, ...] = ("attacks.sr_uap:SR_UAP_STAGE", "fingerprints.sr:SR_FINGERPRINT_STAGE")

HIGHER_IS_BETTER = {"psnr_y": True, "ssim_y": True, "bicubic_psnr_y": True, "bicubic_ssim_y": True,
                    "dense_psnr_y": True, "dense_ssim_y": True, "latency_ms": False,
                    "speedup_vs_best_dense": True, "max_abs_diff": False}


@dataclass(frozen=True)
class SRSubject:
    """One SR model the stages may query: role (dense / compressed / deployed), predictor, eager module or None."""

    role: str
    predictor: Any  # suite.core.sr.predictor.SRPredictor
    module: torch.nn.Module | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SRStageInput:
    """What a post-deployment SR stage receives (the SR counterpart of :class:`suite.core.stages.StageInput`)."""

    config: RunConfig
    source: Any  # suite.core.sr.photos.SRSource
    subjects: dict[str, SRSubject]
    run_dir: Path
    runtime: Any
    # seed -> (model, model record section): the run's dense SR model (architecture, width, recipe, source)
    # trained with another seed, or loaded from the model cache: independent models for the stages that need them
    independent_model: Callable[[int], tuple[torch.nn.Module, dict[str, Any]]] | None = None

    def log(self, msg: str) -> None:
        self.runtime.log(msg)


def _log(cfg: RunConfig, msg: str) -> None:
    from suite.app.pipeline import log

    log(cfg, msg)


def model_lr(profile: SRProfile, model: str) -> float:
    """The peak Adam learning rate of ``model``'s dense training: the profile's, times the model's registered
    ``lr_scale`` tag (1 if none; FSRCNN's was chosen on the val photo, ``bench/bench_sr_recipe.py``)."""
    from suite.core.sr import scaled_lr

    return scaled_lr(model, profile.lr)


def sr_recipe(profile: SRProfile, model: str):
    from suite.core.sr.train import SRTrainRecipe

    return SRTrainRecipe(steps=profile.steps, batch_size=profile.batch_size, patch_size=profile.patch_size,
                         lr=model_lr(profile, model))


# ------------------------------------------------------------------ stages
def load_sr_source(cfg: RunConfig, profile: SRProfile):
    from suite.core.sr import sr_sources

    kwargs = dict(profile.source)
    if cfg.limit is not None and cfg.source == "srfolder":
        kwargs["limit"] = cfg.limit
    return sr_sources.build(cfg.source, cfg.data_root, scale=cfg.scale, seed=cfg.seed, **kwargs)


def _build(cfg: RunConfig) -> torch.nn.Module:
    from suite.core.sr.models import build_sr_model

    torch.manual_seed(cfg.seed)
    return build_sr_model(cfg.model, cfg.scale, cfg.width)


def _macs(model: torch.nn.Module, shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass at LR ``shape`` (convs and transposed convs)."""
    total = 0

    def hook(mod, _inp, out):
        nonlocal total
        k = mod.weight[0].numel()  # Ci/groups * kh * kw (Conv2d); Co/groups * kh * kw (ConvTranspose2d)
        if isinstance(mod, torch.nn.ConvTranspose2d):
            total += int(_inp[0].numel() * k)
        else:
            total += int(out.numel() * k)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape))
    finally:
        for h in handles:
            h.remove()
    return total


def get_dense_sr(cfg: RunConfig, source, profile: SRProfile) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained dense SR model, from the cache or trained now; and its record section."""
    from suite.core.files import json_digest, state_sha256
    from suite.core.sr.train import train_sr
    from suite.core.store import Store

    recipe = sr_recipe(profile, cfg.model)
    # "arch": the built model's architecture name (e.g. sr-supernet-nn with the nearest-neighbour anchor), so a
    # cached state dict of another architecture with the same parameter names never loads silently
    key = {"format": 2, "kind": "sr-model", "model": cfg.model, "arch": getattr(_build(cfg), "arch", cfg.model),
           "scale": cfg.scale, "width": cfg.width, "source": source.name, "source_sha256": source.fingerprint(),
           "recipe": asdict(recipe), "seed": cfg.seed}
    digest = json_digest(key)

    def build(tmp: Path):
        model = _build(cfg)
        report = train_sr(model, source.train, cfg.scale, recipe, seed=cfg.seed, threads=cfg.threads,
                          log=lambda m: _log(cfg, f"sr train: {m}"), log_every=max(1, recipe.steps // 5))
        torch.save(model.state_dict(), tmp / "model.pt")
        (tmp / "train.json").write_text(json.dumps(report.as_dict()) + "\n")
        return model, report.as_dict()

    def load(entry: Path):
        model = _build(cfg)
        model.load_state_dict(torch.load(entry / "model.pt", map_location="cpu", weights_only=True))
        return model.eval(), json.loads((entry / "train.json").read_text())

    got = Store(cfg.cache_dir, "sr-models").get_or_build(
        key, build, load, name=f"{cfg.model}-x{cfg.scale}/{digest[:24]}", lock=True,
        warn=lambda p, reason: _log(cfg, f"corrupt SR model cache entry {p}: {reason}; retraining"))
    model, train = got.value
    model.eval()
    info = {"id": f"{cfg.model}-x{cfg.scale}-w{cfg.width:g}-s{cfg.seed}-{digest[:12]}", "arch": cfg.model,
            "width": float(cfg.width), "scale": cfg.scale, "source": source.name,
            "params": int(sum(p.numel() for p in model.parameters())),
            "macs": _macs(model, (3, *FRAME_720P[cfg.scale])), "macs_per": "720p frame",
            "sha256": state_sha256(model), "cache_hit": bool(got.hit), "cache_dir": str(got.path),
            "train": {**train, "recipe": asdict(recipe), "loss": "L1", "optimizer": "Adam", "schedule": "cosine"}}
    return model, info


def compress_sr(cfg: RunConfig, dense: torch.nn.Module, source, profile: SRProfile, frame_lr: tuple[int, int]):
    """``(compressed model, record section)`` for ``cfg.compress`` (none | block | auto)."""
    from compression.sr_deploy import block_prune_sr, fine_tune_masked
    from suite.core.sr.train import SRTrainRecipe

    params_dense = int(sum(p.numel() for p in dense.parameters()))
    if cfg.compress == "none":
        return dense, {"scheme": "none", "sparsity": 0.0, "achieved_sparsity": 0.0, "params": params_dense,
                       "params_dense": params_dense}
    lr = model_lr(profile, cfg.model)
    if cfg.compress == "block":
        pruned, masks = block_prune_sr(dense, cfg.sparsity)
        report = None
        if profile.ft_steps > 0:
            report = fine_tune_masked(pruned, masks, source.train, cfg.scale,
                                      SRTrainRecipe(steps=profile.ft_steps, batch_size=profile.batch_size,
                                                    patch_size=profile.patch_size, lr=lr / 2),
                                      seed=cfg.seed, threads=cfg.threads)
        nonzero = int(sum(int((p != 0).sum()) for p in pruned.parameters()))
        return pruned, {"scheme": "block", "sparsity": cfg.sparsity, "r": 8, "c": 16, "balance": "row-block",
                        "pruned_layers": masks.names(), "achieved_sparsity": round(float(masks.sparsity()), 6),
                        "params": nonzero, "params_dense": params_dense,
                        "fine_tune": None if report is None else {**report.as_dict(), "lr": lr / 2}}
    # auto: the compiler-aware search (compression/sr_search.py), imported only here
    from compression.sr_search import SRSearchSettings, search_sr
    from compression.tvm_backend.backend import tuning_db_path
    from compression.tvm_backend.latency_table import TVMLatencyTable

    settings = SRSearchSettings(latency_target_ms=float(cfg.latency_target), frame_lr=tuple(frame_lr),
                                seed=cfg.seed, threads=int(cfg.threads or 1), batch_size=profile.batch_size,
                                patch_size=profile.patch_size, lr=lr, **profile.search)
    table = TVMLatencyTable(tuning_db_path(cfg.cache_dir), threads=settings.threads)  # the run's cache, as deploy's
    result = search_sr(copy.deepcopy(dense), cfg.scale, source, settings, table=table,
                       log=lambda m: _log(cfg, m))
    model = result.model.eval()
    nonzero = int(sum(int((p != 0).sum()) for p in model.parameters()))
    masks = result.masks
    return model, {"scheme": "auto", "latency_target_ms": float(cfg.latency_target),
                   "sparsity": round(float(masks.sparsity()), 6) if masks is not None and masks.names() else 0.0,
                   "achieved_sparsity": round(float(masks.sparsity()), 6) if masks is not None and masks.names()
                   else 0.0, "params": nonzero, "params_dense": params_dense, "choice": result.choice,
                   "predicted_ms": float(result.predicted_ms), "val_psnr_y": float(result.val_psnr),
                   "search_seconds": dict(result.seconds), "history": list(result.history),
                   "search": dict(result.info) if result.info else {},
                   "settings": json.loads(json.dumps(asdict(settings), default=list))}


def frame_of(scale: int, div: int) -> np.ndarray:
    """The timed LR frame: a centred crop of the test photo :data:`FRAME_PHOTO` (x2), bicubic-halved for x4."""
    from suite.core.sr.degrade import bicubic_down
    from suite.core.sr.photos import read_photo

    h2, w2 = FRAME_720P[2]
    h2, w2 = max(8, (h2 // div) // 2 * 2), max(8, (w2 // div) // 2 * 2)
    img = torch.from_numpy(np.ascontiguousarray(read_photo(FRAME_PHOTO))).float().div_(255.0).unsqueeze(0)
    top, left = (img.shape[-2] - h2) // 2, (img.shape[-1] - w2) // 2
    x = img[..., top:top + h2, left:left + w2].contiguous()
    if scale == 4:
        x = bicubic_down(x, 2).contiguous()
    return x.numpy().astype(np.float32)


def _tvm_kwargs(cfg: RunConfig, tune: bool) -> dict[str, Any]:
    from compression.tvm_backend.backend import tuning_db_path
    from compression.tvm_backend.target import host_target_dict
    from compression.tvm_backend.tuning import TuningDB

    return {"target": host_target_dict(int(cfg.threads or 1)), "measure": tune,
            "db": TuningDB(tuning_db_path(cfg.cache_dir)) if tune else None}


def deployed_runtime(cfg: RunConfig, model: torch.nn.Module, shape: tuple[int, int, int], *, tune: bool,
                     workdir: Path | None = None):
    """The compressed model on ``cfg.backend`` as an :class:`compression.sr_deploy.SRRuntime` for LR ``shape``."""
    from compression.sr_deploy import eager_runtime, onnx_runtime, tvm_runtime

    if cfg.backend == "torch":
        return eager_runtime(model, name="deployed")
    if cfg.backend == "onnx":
        return onnx_runtime(model, shape, threads=int(cfg.threads or 1), workdir=workdir, name="deployed")
    return tvm_runtime(model, shape, name="deployed", sparse=True, **_tvm_kwargs(cfg, tune))


def deploy_and_time(cfg: RunConfig, dense: torch.nn.Module, compressed: torch.nn.Module, profile: SRProfile,
                    workdir: Path) -> tuple[Any, dict[str, Any]]:
    """Build the deployment and the dense runtimes for the frame; time them interleaved; check agreement."""
    from compression.sr_deploy import eager_runtime, max_abs_diff, onnx_runtime, time_interleaved, tvm_runtime
    from compression.tvm_backend.runtime import tvm_threads
    from suite.core.sr.train import torch_threads

    threads = int(cfg.threads or 1)
    x = frame_of(cfg.scale, profile.frame_div)
    shape = tuple(int(v) for v in x.shape[1:])
    workdir.mkdir(parents=True, exist_ok=True)
    with tvm_threads(threads), torch_threads(threads):
        start = time.perf_counter()
        deployed = deployed_runtime(cfg, compressed, shape, tune=profile.tune, workdir=workdir)
        build_seconds = time.perf_counter() - start
        reference = eager_runtime(compressed, name="eager-compressed")
        dense_rts = {"eager": eager_runtime(dense), "onnxruntime": onnx_runtime(dense, shape, threads=threads),
                     "tvm-dense": tvm_runtime(dense, shape, sparse=False, **_tvm_kwargs(cfg, profile.tune))}
        ref = reference.call(x)
        diff = max_abs_diff(deployed.call(x), ref)
        dense_diffs = {k: max_abs_diff(rt.call(x), dense_rts["eager"].call(x)) for k, rt in dense_rts.items()}
        timing = time_interleaved({**dense_rts, "deployed": deployed}, x, reps=profile.reps)
    lat = {k: {"median_ms": round(v["median_ms"], 3), "min_ms": round(v["min_ms"], 3), "max_ms": round(v["max_ms"], 3)}
           for k, v in timing.items()}
    best = min(dense_rts, key=lambda k: timing[k]["median_ms"])
    ms = timing["deployed"]["median_ms"]
    out_h, out_w = shape[1] * cfg.scale, shape[2] * cfg.scale
    info = {
        "backend": cfg.backend, "task": "sr", "scale": cfg.scale, "threads": threads,
        "frame": {"photo": FRAME_PHOTO, "lr": list(shape), "output": [3, out_h, out_w],
                  "is_720p": profile.frame_div == 1,
                  "note": "720p output frame" if profile.frame_div == 1 else
                  f"1/{profile.frame_div} of a 720p frame per side ({cfg.profile} profile)"},
        "timing": f"interleaved in one process, numpy in / numpy out, 2 warm-up calls, median of {profile.reps}",
        "latency": lat, "latency_ms": round(ms, 3), "dense_latency_ms": lat["eager"]["median_ms"],
        "best_dense_runtime": best, "best_dense_ms": lat[best]["median_ms"],
        "speedup_vs_best_dense": round(timing[best]["median_ms"] / ms, 4),
        "speedup_vs_dense": round(timing["eager"]["median_ms"] / ms, 4),
        "max_abs_diff": diff, "max_abs_diff_reference": "eager of the compressed model, same frame",
        "dense_max_abs_diff": dense_diffs, "build_seconds": round(build_seconds, 3),
        "runtime": deployed.info, "dense_runtimes": {k: rt.info for k, rt in dense_rts.items()},
        "tuned": profile.tune,
    }
    return deployed, info


def deployed_module(cfg: RunConfig, compressed: torch.nn.Module) -> torch.nn.Module:
    """The deployment as an ``nn.Module`` for :func:`~suite.core.sr.train.evaluate` (rebuilt per photo shape)."""
    from compression.sr_deploy import RuntimeModule

    if cfg.backend == "torch":
        return compressed
    return RuntimeModule(lambda sh: deployed_runtime(cfg, compressed, sh, tune=False), cfg.scale)


def evaluate_sr(cfg: RunConfig, dense, compressed, source) -> tuple[dict[str, float], dict[str, Any]]:
    """Test PSNR / SSIM of the deployment, the dense model and bicubic; ``(metrics, per-image detail)``."""
    from compression.tvm_backend.runtime import tvm_threads
    from suite.core.sr.train import evaluate

    threads = int(cfg.threads or 1)
    with tvm_threads(threads):
        dep = evaluate(deployed_module(cfg, compressed), source, "test", cfg.scale, threads=threads)
    den = evaluate(dense, source, "test", cfg.scale, threads=threads)
    metrics = {"psnr_y": dep["psnr_y"], "ssim_y": dep["ssim_y"],
               "bicubic_psnr_y": dep["bicubic_psnr_y"], "bicubic_ssim_y": dep["bicubic_ssim_y"],
               "dense_psnr_y": den["psnr_y"], "dense_ssim_y": den["ssim_y"], "test_images": float(dep["images"])}
    return metrics, {"deployed": dep["per_image"], "dense": den["per_image"]}


def make_sr_subjects(cfg: RunConfig, dense, compressed, deployed, info: dict[str, dict]) -> dict[str, SRSubject]:
    from suite.core.sr.predictor import CallSRPredictor, ModuleSRPredictor

    subjects = {"dense": SRSubject("dense", ModuleSRPredictor(dense, cfg.scale), dense, info["model"])}
    if cfg.compress != "none":
        subjects["compressed"] = SRSubject("compressed", ModuleSRPredictor(compressed, cfg.scale), compressed,
                                           info["compression"])
    if cfg.backend != "torch":
        predictor = CallSRPredictor(lambda sh: deployed_runtime(cfg, compressed, sh, tune=False).call, cfg.scale)
        subjects["deployed"] = SRSubject("deployed", predictor, None, info["deployment"])
    return subjects


def enabled_stages(cfg: RunConfig) -> list:
    import importlib

    stages = []
    for target in SR_STAGES:
        module, attr = target.split(":")
        stage = getattr(importlib.import_module(module), attr)
        if stage.enabled(cfg):
            stages.append(stage)
    return stages


# ----------------------------------------------------------------- driver
def run(cfg: RunConfig, *, on_stage: Callable[[str], None] | None = None) -> tuple[Path, ResultRecord]:
    """Execute one ``--task sr`` run and write its record; returns ``(run_dir, record)``."""
    from suite.app.pipeline import Timer, runtime_of, setup_runtime

    started = time.perf_counter()
    cfg = cfg.resolved()
    if cfg.task is not Task.SR:
        raise ConfigError(f"suite.app.sr_pipeline.run takes --task sr, got {cfg.task.value}")
    setup_runtime(cfg)
    profile = SR_PROFILES[cfg.profile]
    stages = enabled_stages(cfg)
    timer = Timer(say=None if cfg.quiet else (lambda m: _log(cfg, m)), total=5 + len(stages))
    run_id = new_run_id(cfg.model, cfg.compress, cfg.source, cfg.seed)
    runtime = runtime_of(cfg)
    with using(runtime), PendingRunDir(cfg.output_dir, run_id) as pending:
        with timer.stage("source"):
            source = load_sr_source(cfg, profile)
        _log(cfg, f"source {source.name} x{source.scale}: train/val/test = "
                  f"{len(source.train)}/{len(source.val)}/{len(source.test)} images")
        with timer.stage("model"):
            dense, model_info = get_dense_sr(cfg, source, profile)
        with timer.stage("compress"):
            compressed, comp_info = compress_sr(cfg, dense, source, profile, FRAME_720P[cfg.scale])
        with timer.stage("deploy"):
            deployed, dep_info = deploy_and_time(cfg, dense, compressed, profile, pending.path / "artifacts")
        _log(cfg, f"deployed on {cfg.backend}: {dep_info['latency_ms']:.1f} ms per frame "
                  f"({dep_info['speedup_vs_best_dense']:.2f}x vs {dep_info['best_dense_runtime']}), "
                  f"max |diff| {dep_info['max_abs_diff']:.1e}")
        with timer.stage("evaluate"):
            metrics, per_image = evaluate_sr(cfg, dense, compressed, source)
        metrics.update({"latency_ms": dep_info["latency_ms"], "speedup_vs_best_dense": dep_info["speedup_vs_best_dense"],
                        "max_abs_diff": dep_info["max_abs_diff"]})
        sections = StageOutput()
        if stages:
            subjects = make_sr_subjects(cfg, dense, compressed, deployed,
                                        {"model": model_info, "compression": comp_info, "deployment": dep_info})
            inp = SRStageInput(cfg, source, subjects, pending.path, runtime,
                               lambda seed: get_dense_sr(dataclasses.replace(cfg, seed=seed), source, profile))
            for stage in stages:
                with timer.stage(stage.name):
                    sections.merge(stage.run(inp))
        metrics.update(sections.metrics)
        higher = {**{k: v for k, v in HIGHER_IS_BETTER.items() if k in metrics}, **sections.higher_is_better}
        timer.seconds["total"] = round(time.perf_counter() - started, 4)
        config = cfg.as_dict()
        record: dict[str, Any] = {
            **record_head(run_id, config, seed=cfg.seed, split_seed=int(source.meta.get("seed", cfg.seed)),
                          source=source.summary(), threads=cfg.threads or 1, device=cfg.device,
                          suite_version=suite.__version__, task=Task.SR.value),
            "model": model_info,
            "compression": comp_info,
            "deployment": dep_info,
            "metrics": metrics,
            "per_image": per_image,
            "attacks": sections.attacks,
            "transfer": sections.transfer,
            "fingerprints": sections.fingerprints,
            "timings": dict(timer.seconds),
            "higher_is_better": higher,
        }
        path = pending.commit(record, config)  # type: ignore[arg-type]
    return path, record  # type: ignore[return-value]


def format_sr_summary(path: Path, record: dict[str, Any]) -> str:
    """A few lines for the terminal after an SR run."""
    m, d, c = record["metrics"], record["deployment"], record["compression"]
    lines = [f"run {record['run_id']} (task sr) -> {path}",
             f"  model {record['model']['id']} ({record['model']['params']} params, "
             f"{'cache hit' if record['model']['cache_hit'] else 'trained'}); compress {c['scheme']}"
             + (f" sparsity {c.get('achieved_sparsity', 0):.3f}" if c["scheme"] != "none" else ""),
             f"  test PSNR-Y {m['psnr_y']:.2f} dB (dense {m['dense_psnr_y']:.2f}, bicubic {m['bicubic_psnr_y']:.2f}); "
             f"SSIM-Y {m['ssim_y']:.4f} (bicubic {m['bicubic_ssim_y']:.4f})",
             f"  {d['backend']}: {d['latency_ms']:.1f} ms per frame {d['frame']['lr'][1]}x{d['frame']['lr'][2]} -> "
             f"{d['frame']['output'][1]}x{d['frame']['output'][2]}; best dense {d['best_dense_runtime']} "
             f"{d['best_dense_ms']:.1f} ms ({d['speedup_vs_best_dense']:.2f}x); max |diff| {d['max_abs_diff']:.1e}"]
    if c["scheme"] == "auto":
        lines.append(f"  search: target {c['latency_target_ms']:g} ms, predicted {c['predicted_ms']:.1f} ms, "
                     f"val PSNR-Y {c['val_psnr_y']:.2f} dB")
    uap = [a for a in record.get("attacks") or [] if a.get("attack") == "sr-uap"]
    if uap:
        lines.append(f"  sr-uap eps {uap[0]['eps_255']:g}/255 crafted on dense: PSNR-Y drop "
                     + ", ".join(f"{a['evaluated_on']} {a['drop_db']:.2f} dB (noise {a['noise_drop_db']:.2f})"
                                 for a in uap))
    for f in record.get("fingerprints") or []:
        if f.get("method") == "sr-outputs":
            auc = f"AUC {f['auc']:.3f}, " if f.get("auc") is not None else ""
            lines.append(f"  {f['method']} ({f['score']}, threshold {f['threshold']:.3f}): "
                         + ", ".join(f"{k} {v['verdict']} ({v['score']:.3f})" for k, v in f["verdicts"].items()
                                     if k != "dense")
                         + f"; held-out false positives {f['heldout_false_positives']}/{f['n_heldout_negatives']}"
                         + (f", {auc.rstrip(', ')}" if auc else ""))
    lines.append(f"  {record['timings']['total']:.0f} s")
    return "\n".join(lines)
