"""Compiler-aware search for super-resolution models (issue 18, point 4).

Staged like the ICCV'21 seed ("compiler-aware NAS and pruning search for
real-time SR"); the paper's exact spaces are not public, the design here is ours:

1. **Supernet training** (only for an :class:`~suite.core.sr.models.SRSupernet`,
   ``supernet_steps > 0``): the sandwich rule -- every step sums the L1 losses
   of the largest, the smallest and two random sub-networks, then one Adam
   step (cosine learning rate), on random crops of the *train* split.  Seeded.
   The supernet is trained in place.
2. **Architecture + per-layer pruning-scheme search** (supernet only): a
   candidate is an :class:`~suite.core.sr.models.SRChoice` plus, per prunable
   conv, a scheme: ``dense`` or ``block`` (r = 8, c = 16, balanced row-blocks)
   at a ratio from ``settings.ratios``.  Its latency is *predicted* on the TVM
   latency table (:class:`compression.tvm_backend.latency_table.TVMLatencyTable`,
   the table the classifiers' ``auto`` mapper uses), its score is the
   one-shot validation PSNR (supernet weights, magnitude block masks, no
   fine-tuning) on the *val* split.  A seeded evolutionary search:
   ``population`` feasible candidates (the smallest and the largest
   sub-network, then random ones, each with random per-conv ratios), then ``generations`` rounds of
   keep-the-best-half + mutation (width, depth, one block's kernel, one layer's
   ratio).  Infeasible candidates are repaired by greedy pruning (most ms saved
   per predicted PSNR lost) and dropped if still over the target.
3. **Pruning-ratio search** under ``latency_target_ms`` on the winning
   architecture (or on a fixed trained model: ``fsrcnn`` / ``espcn`` /
   ``edsr`` -- then stages 3-4 only): single-layer sensitivities ``dPSNR(layer,
   ratio)`` on val (one layer pruned, the rest dense), then greedy: starting
   dense, repeatedly raise the ratio of the layer whose next step loses the
   least PSNR per ms saved on the table, until the prediction meets the
   target.  The greedy's plan and stage 2's plan (supernet) are both scored
   for real on val; the better one is kept.
   Then, optionally, the verify rounds (below).
4. **Fine-tuning**: the chosen (sub-)network with its block masks fixed,
   :func:`compression.sr_deploy.fine_tune_masked` for ``finetune_steps``.

Latency prediction: each conv of the deployed graph (FSRCNN's deconvolution
as its sub-pixel conv, :func:`compression.sr_deploy.lower_for_deploy`) is
looked up at batch 1 on the table at the frame ``frame_lr`` itself (default),
or on a smaller LR tile ``table_tile`` scaled by ``frame pixels / tile
pixels``; the sum over convs is the frame's predicted milliseconds.  A pruned
conv costs ``min(dense, compact kernel)`` -- the compiler keeps the dense
kernel where the compact one is not faster.  Non-conv operators (mean shift,
pixel shuffle, the anchor, residual adds) are not in the table: measured at
4.7-5.5 ms per 360x640 frame, 1-2 % of it (``bench/results/sr_search_gap.json``).
Measured there too, and the reason the default is the frame and the verify
rounds exist: a conv's time per pixel is not constant across sizes (a 90 x 160
tile runs in cache and x16 under-predicts the frame's conv 1.6-1.8x), and a
table entry cached in the tuning database keeps the time of the moment it was
measured (on a shared host, 32->32 3x3 at 180 x 320 was cached at 7.6 ms and
re-timed at 19.5-26.7 ms).

Verify rounds (``verify_rounds > 0``): the prediction is a model, and a
model can be wrong (see "Latency prediction"), so after stage 3 the chosen
masked model -- before fine-tuning: its latency depends on its masks, not its
weight values -- is built at ``frame_lr`` by the benchmark's own builder
(:func:`compression.sr_deploy.measure_tvm_frame`: TVM, sparse, compact kernel
where faster) and timed.  The loop closes from both sides:

* **over the target**: every prediction is multiplied by ``measured / raw
  predicted`` of that model (never below the factor in force) and stages 2-3
  choose again;
* **under with headroom** (measured below ``verify_grow_below`` x target): the
  factor is lowered to ``measured / raw predicted`` -- but kept high enough
  that every plan already measured over the target stays predicted over it --
  and stages 2-3 choose again, so a frame that left a third of its budget
  unused can buy a larger, higher-PSNR model.

A round that chooses a plan already measured ends the loop (nothing new to
learn), and so does ``verify_rounds`` builds.  If nothing meets the rescaled
prediction, the fastest plan of the space (smallest sub-network, every conv
at the largest ratio) is measured last.  The result keeps, of the rounds that
met the target, the one with the best one-shot val PSNR (the search's own
score), else the fastest measured one, and records every round's predicted
and measured milliseconds in ``info["verify"]``.

The test split is never read: training uses ``source.split("train")``,
scoring ``source.split("val")``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compression.layers import LayerInfo, list_layers
from compression.masks import MaskSet
from suite.core.errors import ConfigError

BLOCK = {"scheme": "block", "r": 8, "c": 16, "balance": "row-block"}


# --------------------------------------------------------------------------- settings and result


@dataclass(frozen=True)
class SRSearchSettings:
    """Settings of :func:`search_sr`.

    latency_target_ms: per frame, predicted on the TVM table at ``frame_lr``.
    frame_lr: LR input ``(h, w)`` of the frame (360 x 640: a 1280 x 720 output at x2).
    table_tile: LR ``(h, w)`` at which the table times each conv, scaled by pixels to the frame
    (None, the default: at ``frame_lr`` itself, no scaling -- a conv's time per pixel is not constant
    across sizes, see "Latency prediction").
    supernet_steps: sandwich-rule training steps (0: use the supernet as it is).
    population / generations: evolutionary search of stage 2.
    finetune_steps: masked fine-tuning steps of the chosen model (0: none); each is cheap next to a
    supernet step (one small sub-network instead of four sub-networks including the largest).
    ratios: block-pruning ratios a conv may take (0 = dense).
    batch_size / patch_size / lr: of supernet training (fine-tuning uses ``lr / 2``).
    val_crop: LR side of the centre crop of each val image used to score candidates
    (None: whole images); the reported ``val_psnr`` is always on whole val images.
    threads: torch threads (training, scoring) and TVM threads (the table).
    seed: every random choice (supernet sampling, crops, search).
    verify_rounds: at most this many closed-loop checks after choosing (0: none, the prediction is
    trusted): the chosen masked model is built at ``frame_lr`` by the benchmark's TVM builder and
    timed; if the measured frame is over the target, every prediction is rescaled by
    measured / predicted and stages 2-3 choose again (see :func:`search_sr`).
    verify_reps: timed frames per check (median; 2 warm-up calls before).
    verify_grow_below: a checked frame measured under this fraction of the target leaves headroom: the
    prediction is rescaled down and stages 2-3 choose again, for a larger model (0: never; see
    :func:`search_sr`).
    """

    latency_target_ms: float
    frame_lr: tuple[int, int] = (360, 640)
    table_tile: tuple[int, int] | None = None
    supernet_steps: int = 400
    population: int = 8
    generations: int = 3
    finetune_steps: int = 2000
    ratios: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.875)
    batch_size: int = 16
    patch_size: int = 32
    lr: float = 1e-3
    val_crop: int | None = 96
    threads: int = 2
    seed: int = 0
    verify_rounds: int = 0
    verify_reps: int = 5
    verify_grow_below: float = 0.75

    def validate(self) -> None:
        t = self.latency_target_ms
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ConfigError(f"latency_target_ms must be a positive number of milliseconds, got {t!r}")
        for name in ("frame_lr", "table_tile"):
            v = getattr(self, name)
            if v is None and name == "table_tile":
                continue
            if (not isinstance(v, (tuple, list)) or len(v) != 2
                    or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in v)):
                raise ConfigError(f"{name} must be two positive integers (h, w), got {v!r}")
        for name in ("supernet_steps", "finetune_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {v!r}")
        for name in ("population", "batch_size", "patch_size", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.generations, bool) or not isinstance(self.generations, int) or self.generations < 0:
            raise ConfigError(f"generations must be an integer >= 0, got {self.generations!r}")
        if not self.ratios or any(not 0.0 <= float(r) < 1.0 for r in self.ratios):
            raise ConfigError(f"ratios must be a non-empty list of fractions in [0, 1), got {self.ratios!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        if self.val_crop is not None and (isinstance(self.val_crop, bool) or not isinstance(self.val_crop, int)
                                          or self.val_crop < 8):
            raise ConfigError(f"val_crop must be None or an integer >= 8 (LR pixels), got {self.val_crop!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        if isinstance(self.verify_rounds, bool) or not isinstance(self.verify_rounds, int) or self.verify_rounds < 0:
            raise ConfigError(f"verify_rounds must be an integer >= 0, got {self.verify_rounds!r}")
        if isinstance(self.verify_reps, bool) or not isinstance(self.verify_reps, int) or self.verify_reps < 1:
            raise ConfigError(f"verify_reps must be a positive integer, got {self.verify_reps!r}")
        g = self.verify_grow_below
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0.0 <= g < 1.0:
            raise ConfigError(f"verify_grow_below must be a fraction in [0, 1), got {g!r}")

    @property
    def ratio_steps(self) -> tuple[float, ...]:
        return tuple(sorted({0.0, *(float(r) for r in self.ratios)}))

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class SRSearchResult:
    """What :func:`search_sr` chose.

    model: the chosen sparse model, fine-tuned, eval mode, masks applied.
    masks: its block masks (pruned convs only).
    choice: JSON-ready: ``architecture`` (supernet only, else None), ``base``, and
    ``layers`` -- per prunable conv ``{"scheme": "dense" | "block", "ratio", ...}``.
    predicted_ms: on the table, at ``frame_lr`` (times the verify rounds' calibration, if any).
    val_psnr: whole val images, after fine-tuning.
    info: facts of the run; ``info["verify"]`` (verify rounds on): per round the plan, calibration,
    predicted / raw predicted / measured ms and whether it met the target; ``met``, ``chosen_round``.
    history: every scored candidate (stage, choice, val PSNR, predicted ms).
    seconds: wall time per stage.
    """

    model: nn.Module
    masks: MaskSet
    choice: dict
    predicted_ms: float
    val_psnr: float
    history: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- latency prediction


def default_table(threads: int = 2):
    """A :class:`TVMLatencyTable` on the default tuning database (the deployment's, as the ``auto`` mapper's)."""
    from compression.tvm_backend.backend import tuning_db_path
    from compression.tvm_backend.latency_table import TVMLatencyTable

    return TVMLatencyTable(tuning_db_path(None), threads=threads)


class SRLatencyModel:
    """Per-frame milliseconds of an SR model with per-conv block ratios, from a latency table.

    Each conv is timed on the table at the LR ``tile`` and scaled by
    ``frame pixels / tile pixels``; the frame's prediction is that sum times
    ``calibration`` (1 until a verify round of :func:`search_sr` measured the
    deployed frame and set it to measured / raw prediction).  Lookups are
    cached per (conv shape, ratio), uncalibrated.
    """

    def __init__(self, table: Any, frame_lr: tuple[int, int], tile: tuple[int, int],
                 calibration: float = 1.0) -> None:
        self.table = table
        self.frame_lr = tuple(int(v) for v in frame_lr)
        self.tile = tuple(int(v) for v in tile)
        self.factor = (self.frame_lr[0] * self.frame_lr[1]) / (self.tile[0] * self.tile[1])
        self.calibration = float(calibration)
        self._ms: dict[tuple, float] = {}
        self._layers: dict[Any, list[LayerInfo]] = {}
        self.lookups = 0

    def layers(self, model: nn.Module, key: Any = None) -> list[LayerInfo]:
        """The deployed graph's convs (transposed convs lowered) at the tile; cached under ``key``."""
        if key is not None and key in self._layers:
            return self._layers[key]
        from compression.sr_deploy import lower_for_deploy

        convs = [l for l in list_layers(lower_for_deploy(model), (3, *self.tile)) if l.kind == "conv"]
        if key is not None:
            self._layers[key] = convs
        return convs

    def layer_ms(self, layer: LayerInfo, ratio: float) -> float:
        """Frame milliseconds of ``layer`` block-pruned at ``ratio`` (0: dense), times ``calibration``."""
        return self.raw_layer_ms(layer, ratio) * self.calibration

    def raw_layer_ms(self, layer: LayerInfo, ratio: float) -> float:
        """Frame milliseconds of ``layer`` at ``ratio`` on the table (tile time x pixel factor, uncalibrated)."""
        k = (layer.weight_shape, layer.in_hw, layer.stride, layer.padding, layer.groups, round(float(ratio), 6))
        if k not in self._ms:
            self.lookups += 1
            dense = float(self.table.dense_ms(layer))
            ms = dense
            if ratio > 0 and layer.groups == 1:
                from compression.schemes import make_scheme

                gen = torch.Generator().manual_seed(0)  # balanced row-blocks: the kept count depends on shape only
                mask = make_scheme("block", r=BLOCK["r"], c=BLOCK["c"]).mask(
                    torch.randn(layer.weight_shape, generator=gen), float(ratio))
                ms = min(dense, float(self.table.sparse_ms(layer, self.table.kept_columns(mask))))
            self._ms[k] = ms * self.factor
        return self._ms[k]

    def model_ms(self, layers: list[LayerInfo], ratios: dict[str, float]) -> float:
        """Predicted frame milliseconds: the convs' :meth:`layer_ms` summed (calibrated)."""
        return float(sum(self.layer_ms(l, ratios.get(l.name, 0.0)) for l in layers))

    def raw_ms(self, layers: list[LayerInfo], ratios: dict[str, float]) -> float:
        """The table's frame milliseconds before calibration."""
        return float(sum(self.raw_layer_ms(l, ratios.get(l.name, 0.0)) for l in layers))


# --------------------------------------------------------------------------- helpers


def _block_masks(model: nn.Module, ratios: dict[str, float]) -> MaskSet:
    from compression.schemes import make_scheme

    scheme = make_scheme("block", r=BLOCK["r"], c=BLOCK["c"])
    return MaskSet({n: scheme.mask(model.get_submodule(n).weight.detach(), float(r))
                    for n, r in ratios.items() if r > 0})


class _ValScorer:
    """Val PSNR-Y of a model on (optionally centre-cropped) val pairs; the pairs are made once."""

    def __init__(self, source: Any, scale: int, crop: int | None, threads: int) -> None:
        self.scale, self.threads = int(scale), int(threads)
        self.pairs = []
        for lr_img, hr in source.split("val").pairs(scale):
            if crop is not None:
                h, w = lr_img.shape[-2:]
                ch, cw = min(crop, h), min(crop, w)
                t, l = (h - ch) // 2, (w - cw) // 2
                lr_img = lr_img[..., t:t + ch, l:l + cw]
                hr = hr[..., t * scale:(t + ch) * scale, l * scale:(l + cw) * scale]
            self.pairs.append((lr_img.contiguous(), hr.contiguous()))
        if not self.pairs:
            raise ConfigError("the search needs a non-empty val split (candidates are scored on it)")

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> float:
        from suite.core.sr.metrics import psnr_y
        from suite.core.sr.train import torch_threads

        model.eval()
        with torch_threads(self.threads):
            vals = [float(psnr_y(model(lr).clamp(0.0, 1.0), hr, self.scale)[0]) for lr, hr in self.pairs]
        return float(np.mean(vals))


def _layers_dict(names: list[str], ratios: dict[str, float]) -> dict:
    return {n: ({"scheme": "dense", "ratio": 0.0} if ratios.get(n, 0.0) <= 0 else
                {**BLOCK, "ratio": float(ratios[n])}) for n in names}


# --------------------------------------------------------------------------- stage 1: supernet training


def train_supernet(supernet: nn.Module, train: Any, scale: int, settings: SRSearchSettings, *,
                   log: Callable[[str], None] | None = None) -> dict:
    """Sandwich-rule training in place: per step, L1 of max + min + 2 random sub-networks, one Adam step."""
    from suite.core.sr.degrade import bicubic_down
    from suite.core.sr.train import cosine_lr, sample_batch, torch_threads

    steps = settings.supernet_steps
    pool = torch.from_numpy(train.stack())
    hr_size = settings.patch_size * scale
    if pool.shape[-1] < hr_size or pool.shape[-2] < hr_size:
        raise ConfigError(f"HR crop {hr_size} px is larger than the {pool.shape[-2]}x{pool.shape[-1]} train patches")
    gen = torch.Generator().manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    opt = torch.optim.Adam(supernet.parameters(), lr=settings.lr)
    supernet.train()
    losses = []
    start = time.perf_counter()
    with torch_threads(settings.threads):
        for step in range(steps):
            hr = sample_batch(pool, settings.batch_size, hr_size, True, gen)
            lr_img = bicubic_down(hr, scale)
            for group in opt.param_groups:
                group["lr"] = cosine_lr(step, steps, settings.lr)
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for choice in (supernet.max_choice(), supernet.min_choice(), supernet.sample(rng), supernet.sample(rng)):
                loss = F.l1_loss(supernet(lr_img, choice), hr)
                loss.backward()
                total += float(loss.detach())
            opt.step()
            losses.append(total / 4)
            if log is not None and (step + 1) % max(1, steps // 5) == 0:
                log(f"supernet step {step + 1}/{steps}: sandwich L1 {np.mean(losses[-max(1, steps // 5):]):.5f}")
    supernet.eval()
    return {"steps": steps, "seconds": round(time.perf_counter() - start, 2),
            "first_loss": round(losses[0], 5) if losses else None, "last_loss": round(losses[-1], 5) if losses else None}


# --------------------------------------------------------------------------- stage 3: greedy ratios


def greedy_ratios(model: nn.Module, names: list[str], layers: list[LayerInfo], lat: SRLatencyModel,
                  score: Callable[[nn.Module], float], target_ms: float, steps: tuple[float, ...],
                  history: list[dict] | None = None, tag: dict | None = None,
                  sensitivities: tuple[float, dict] | None = None) -> tuple[dict[str, float], dict]:
    """Per-layer ratios meeting ``target_ms`` (if reachable), greedy by predicted PSNR loss per ms saved.

    Sensitivities: val PSNR with one layer pruned at each ratio (the rest dense); ``sensitivities``:
    ``(base PSNR, {(layer, ratio): drop})`` of an earlier call on the same model (then not rescored,
    nor recorded in ``history`` again).
    Returns ``(ratios, info)``; ``info["feasible"]`` says whether the target was met; ``info["_sens"]``
    is this call's ``sensitivities``.
    """
    fresh = sensitivities is None
    if sensitivities is not None:
        base_psnr, sens = sensitivities[0], dict(sensitivities[1])
    else:
        base_psnr = score(model)
        sens = {}
        for n in names:
            for r in steps[1:]:
                pruned = copy.deepcopy(model)
                _block_masks(pruned, {n: r}).apply(pruned)
                sens[(n, r)] = max(0.0, base_psnr - score(pruned))
    ratios = {n: 0.0 for n in names}
    by_name = {l.name: l for l in layers}
    ms = lat.model_ms(layers, ratios)
    moves = 0
    while ms > target_ms:
        best = None
        for n in names:
            i = steps.index(ratios[n])
            # look ahead to every higher ratio (a step that saves nothing may precede one that does)
            for r in steps[i + 1:]:
                saved = lat.layer_ms(by_name[n], ratios[n]) - lat.layer_ms(by_name[n], r)
                if saved <= 1e-9:
                    continue
                cost = (sens[(n, r)] - sens.get((n, ratios[n]), 0.0)) / saved
                if best is None or cost < best[0] - 1e-12:
                    best = (cost, n, r)
        if best is None:
            break
        ratios[best[1]] = best[2]
        ms = lat.model_ms(layers, ratios)
        moves += 1
    info = {"base_psnr": base_psnr, "moves": moves, "predicted_ms": ms, "feasible": ms <= target_ms,
            "sensitivity": {f"{n}@{r:g}": round(v, 4) for (n, r), v in sens.items()}, "_sens": (base_psnr, sens)}
    if history is not None and fresh:
        for (n, r), v in sens.items():
            history.append({"stage": "sensitivity", **(tag or {}), "layer": n, "ratio": r,
                            "val_psnr_drop": round(v, 4)})
    return dict(ratios), info


# --------------------------------------------------------------------------- the search


def search_sr(base: nn.Module, scale: int, source: Any, settings: SRSearchSettings, *, table: Any = None,
              log: Callable[[str], None] = print,
              measure: Callable[[nn.Module], float | dict] | None = None) -> SRSearchResult:
    """Compiler-aware search (see the module docstring) on ``base`` under ``settings.latency_target_ms``.

    base: an :class:`SRSupernet` (trained in place when ``settings.supernet_steps > 0``) or a trained
    fixed SR model (stages 3-4 only).  source: an SRSource (train and val splits are read, never test).
    table: latency table with ``dense_ms(layer)``, ``sparse_ms(layer, kept)``, ``kept_columns(mask)``
    (default :func:`default_table`).  measure: ``model -> ms`` (or a dict with ``"median_ms"``) of
    one ``frame_lr`` frame of a masked model, for the verify rounds (``settings.verify_rounds > 0``;
    default :func:`default_measure`: the benchmark's TVM build at the full frame).  Raises
    ConfigError if the target is below the smallest predicted latency of the search space.
    """
    from compression.sr_deploy import fine_tune_masked, sr_conv_names
    from suite.core.sr.models import SRChoice, SRSupernet
    from suite.core.sr.train import SRTrainRecipe, evaluate, torch_threads

    settings.validate()
    if getattr(base, "scale", scale) != scale:
        raise ConfigError(f"base model is x{base.scale} but the search asked for x{scale}")
    table = table if table is not None else default_table(settings.threads)
    tile = tuple(settings.table_tile) if settings.table_tile is not None else tuple(settings.frame_lr)
    lat = SRLatencyModel(table, settings.frame_lr, tile)
    target = float(settings.latency_target_ms)
    steps = settings.ratio_steps
    max_r = steps[-1]
    seconds: dict[str, float] = {}
    history: list[dict] = []
    info: dict[str, Any] = {"frame_lr": list(settings.frame_lr), "table_tile": list(tile),
                            "tile_scale_factor": lat.factor, "block": dict(BLOCK),
                            "table": type(table).__name__, "settings": settings.as_dict()}
    is_supernet = isinstance(base, SRSupernet)
    t0 = time.perf_counter()

    def names_of(model: nn.Module) -> list[str]:
        return sr_conv_names(model, (3, 24, 24))  # names do not depend on the input size

    # ---- feasibility: the smallest predicted latency of the space
    if is_supernet:
        small = base.extract(base.min_choice())
        small_names = names_of(small)
        min_ms = lat.model_ms(lat.layers(small, base.min_choice()), {n: max_r for n in small_names})
    else:
        fixed = copy.deepcopy(base).cpu().eval()
        fixed_names = names_of(fixed)
        fixed_layers = lat.layers(fixed, "fixed")
        min_ms = lat.model_ms(fixed_layers, {n: max_r for n in fixed_names})
    info["smallest_predicted_ms"] = min_ms
    if target < min_ms:
        raise ConfigError(f"latency target {target:g} ms is below the smallest predicted latency of the search "
                          f"space, {min_ms:.2f} ms per {settings.frame_lr[0]}x{settings.frame_lr[1]} LR frame")
    seconds["feasibility"] = round(time.perf_counter() - t0, 3)

    # ---- stage 1: supernet training
    if is_supernet and settings.supernet_steps > 0:
        t = time.perf_counter()
        log(f"[sr-search] stage 1: supernet sandwich training, {settings.supernet_steps} steps")
        info["supernet_train"] = train_supernet(base, source.split("train"), scale, settings, log=log)
        seconds["supernet"] = round(time.perf_counter() - t, 3)

    scorer = _ValScorer(source, scale, settings.val_crop, settings.threads)
    cache: dict[tuple, dict] = {}  # (choice, ratios) -> scored candidate; val PSNR does not depend on the round
    greedy_cache: dict[Any, tuple[dict[str, float], dict]] = {}

    def choose(round_i: int) -> dict:
        """Stages 2 (supernet) and 3 under the latency model's current calibration; the chosen plan."""
        tag = {"round": round_i}
        # ---- stage 2: architecture + per-layer scheme search (supernet)
        stage2_best = None
        if is_supernet:
            t = time.perf_counter()
            rng = np.random.default_rng(settings.seed + 1)  # every round replays the same seeded search
            base.eval()
            seen: set[tuple] = set()  # candidates of this round (each recorded once in the history)

            def evaluate_candidate(choice: SRChoice, ratios: dict[str, float], how: str) -> dict | None:
                sub = base.extract(choice).eval()
                names = names_of(sub)
                layers = lat.layers(sub, choice)
                ratios = {n: float(ratios.get(n, 0.0)) for n in names}
                ms = lat.model_ms(layers, ratios)
                if ms > target:  # repair: prune more where it saves the most ms per step
                    ratios, ms = _repair(names, layers, ratios, lat, target, steps)
                if ms > target:
                    history.append({"stage": "arch", **tag, "how": how, "architecture": choice.as_dict(),
                                    "layers": _layers_dict(names, ratios), "predicted_ms": round(ms, 3),
                                    "val_psnr": None, "feasible": False})
                    return None
                key = (choice, tuple(sorted(ratios.items())))
                if key not in cache:
                    _block_masks(sub, ratios).apply(sub)
                    cache[key] = {"choice": choice, "ratios": ratios, "psnr": scorer(sub)}
                cand = {**cache[key], "ms": ms}
                if key in seen:
                    return cand
                seen.add(key)
                history.append({"stage": "arch", **tag, "how": how, "architecture": choice.as_dict(),
                                "layers": _layers_dict(names, ratios), "predicted_ms": round(ms, 3),
                                "val_psnr": round(cand["psnr"], 4), "feasible": True})
                return cand

            def random_ratios(choice: SRChoice) -> dict[str, float]:
                sub_names = names_of(ResidualSR_like(base, choice))
                return {n: float(steps[int(rng.integers(len(steps)))]) for n in sub_names}

            def ResidualSR_like(net, choice):  # names only: a weightless stand-in of the extracted sub-network
                from suite.core.sr.models import ResidualSR

                return ResidualSR(net.scale, choice.width, choice.kernels)

            def same(a: dict, b: dict) -> bool:
                return a["choice"] == b["choice"] and a["ratios"] == b["ratios"]

            pop: list[dict] = []
            tries = 0
            while len(pop) < settings.population and tries < settings.population * 4:
                tries += 1
                # the smallest and the largest sub-networks first (the largest repaired by pruning), then random ones
                choice = {1: base.min_choice(), 2: base.max_choice()}.get(tries) or base.sample(rng)
                cand = evaluate_candidate(choice, random_ratios(choice), "random")
                if cand is not None and not any(same(cand, c) for c in pop):
                    pop.append(cand)
            for gen_i in range(settings.generations if pop else 0):
                pop.sort(key=lambda c: -c["psnr"])
                parents = pop[:max(1, len(pop) // 2)]
                children = []
                for k in range(settings.population - len(parents)):
                    parent = parents[k % len(parents)]
                    choice, ratios = _mutate(base, parent["choice"], parent["ratios"], rng, steps)
                    cand = evaluate_candidate(choice, ratios, f"mutation g{gen_i + 1}")
                    if cand is not None:
                        children.append(cand)
                pop = parents + [c for c in children if not any(same(c, p) for p in parents)]
            if pop:
                stage2_best = max(pop, key=lambda c: c["psnr"])
                log(f"[sr-search] stage 2 (round {round_i}): "
                    f"{sum(1 for h in history if h['stage'] == 'arch' and h['round'] == round_i)} candidates; best "
                    f"{stage2_best['choice'].as_dict()} val PSNR {stage2_best['psnr']:.3f} dB (one-shot), "
                    f"{stage2_best['ms']:.1f} ms predicted")
            seconds["arch_search"] = round(seconds.get("arch_search", 0.0) + time.perf_counter() - t, 3)
            if stage2_best is None:
                raise ConfigError(f"no candidate met the latency target {target:g} ms (smallest {min_ms:.2f} ms "
                                  f"uncalibrated, calibration x{lat.calibration:.3f})")
            arch = stage2_best["choice"]
            model = base.extract(arch).eval()
        else:
            arch = None
            model = fixed

        # ---- stage 3: pruning-ratio search under the target
        t = time.perf_counter()
        names = names_of(model)
        layers = lat.layers(model, arch if arch is not None else "fixed")
        arch_tag = {"architecture": arch.as_dict() if arch is not None else None}
        with torch_threads(settings.threads):
            ratios, ginfo = greedy_ratios(model, names, layers, lat, scorer, target, steps, history,
                                          {**arch_tag, **tag}, sensitivities=greedy_cache.get(arch))
        greedy_cache[arch] = ginfo.pop("_sens")
        plans = []
        if ginfo["feasible"]:
            pruned = copy.deepcopy(model)
            _block_masks(pruned, ratios).apply(pruned)
            psnr = scorer(pruned)
            history.append({"stage": "ratio", **tag, "how": "greedy", **arch_tag,
                            "layers": _layers_dict(names, ratios), "predicted_ms": round(ginfo["predicted_ms"], 3),
                            "val_psnr": round(psnr, 4), "feasible": True})
            plans.append(("greedy", ratios, ginfo["predicted_ms"], psnr))
        if stage2_best is not None:
            plans.append(("arch-search", stage2_best["ratios"], stage2_best["ms"], stage2_best["psnr"]))
        if not plans:
            raise ConfigError(f"the ratio search could not meet the latency target {target:g} ms "
                              f"(smallest predicted {min_ms:.2f} ms uncalibrated, calibration "
                              f"x{lat.calibration:.3f})")
        plan_name, ratios, predicted, one_shot = max(plans, key=lambda p: p[3])
        ratios = {n: float(ratios.get(n, 0.0)) for n in names}
        log(f"[sr-search] stage 3 (round {round_i}): plan {plan_name}, one-shot val PSNR {one_shot:.3f} dB, "
            f"{predicted:.1f} ms predicted (target {target:g}, calibration x{lat.calibration:.3f})")
        seconds["ratio_search"] = round(seconds.get("ratio_search", 0.0) + time.perf_counter() - t, 3)
        return {"arch": arch, "model": model, "names": names, "layers": layers, "ratios": ratios,
                "predicted": float(predicted), "plan": plan_name, "one_shot": float(one_shot),
                "greedy": {k: v for k, v in ginfo.items() if k != "sensitivity"}}

    def fastest() -> dict:
        """The smallest predicted plan of the space (smallest sub-network, every conv at the largest ratio)."""
        if is_supernet:
            arch = base.min_choice()
            model = base.extract(arch).eval()
        else:
            arch, model = None, fixed
        names = names_of(model)
        layers = lat.layers(model, arch if arch is not None else "fixed")
        ratios = {n: max_r for n in names}
        pruned = copy.deepcopy(model)
        _block_masks(pruned, ratios).apply(pruned)
        return {"arch": arch, "model": model, "names": names, "layers": layers, "ratios": ratios,
                "predicted": lat.model_ms(layers, ratios), "plan": "fastest", "one_shot": scorer(pruned),
                "greedy": None}

    pick = choose(1)

    # ---- verify rounds: measure the chosen (masked) model at the full frame; rescale the prediction, choose again
    rounds: list[dict] = []
    if settings.verify_rounds > 0:
        t = time.perf_counter()
        measure = measure if measure is not None else default_measure(table, settings)
        picks = []
        over_raw: list[float] = []  # raw predictions of the plans measured over the target
        while True:
            masked = copy.deepcopy(pick["model"]).cpu().eval()
            _block_masks(masked, pick["ratios"]).apply(masked)  # latency depends on the masks, not the values
            got = measure(masked)
            measured = float(got["median_ms"] if isinstance(got, dict) else got)
            raw = lat.raw_ms(pick["layers"], pick["ratios"])
            row = {"round": len(rounds) + 1, "plan": pick["plan"],
                   "architecture": pick["arch"].as_dict() if pick["arch"] is not None else None,
                   "layers": _layers_dict(pick["names"], pick["ratios"]), "calibration": round(lat.calibration, 4),
                   "predicted_ms": round(pick["predicted"], 3), "raw_predicted_ms": round(raw, 3),
                   "measured_ms": round(measured, 3), "measured_over_raw": round(measured / raw, 4),
                   "one_shot_val_psnr": round(pick["one_shot"], 4), "met": measured <= target}
            if isinstance(got, dict):
                row["measure"] = {k: v for k, v in got.items() if k != "median_ms"}
            rounds.append(row)
            picks.append((measured, pick))
            log(f"[sr-search] verify round {row['round']}: {pick['plan']} predicted {pick['predicted']:.1f} ms, "
                f"measured {measured:.1f} ms (target {target:g}) -> {'met' if row['met'] else 'over'}")
            grow = row["met"] and measured < settings.verify_grow_below * target
            if len(rounds) >= settings.verify_rounds or (row["met"] and not grow) or (
                    not row["met"] and pick["plan"] == "fastest"):
                row["next"] = "stop"
                break
            row["next"] = "grow" if grow else "rescale"
            if row["met"]:
                # headroom: rescale down to this frame, but keep every plan measured over the target predicted over it
                floor = max((target / r for r in over_raw), default=0.0) * (1 + 1e-6)
                lat.calibration = max(measured / raw, floor)
            else:
                over_raw.append(raw)
                # rescale every prediction by measured / raw predicted (never below the factor in force)
                lat.calibration = max(lat.calibration, measured / raw)
            try:
                pick = choose(len(rounds) + 1)
            except ConfigError as exc:
                if row["met"]:
                    break
                log(f"[sr-search] nothing meets the calibrated prediction ({exc}); trying the fastest plan")
                pick = fastest()
            if any(_plan_key(pick) == _plan_key(p) for _, p in picks):
                log(f"[sr-search] round {len(rounds) + 1} chose a plan already measured; the loop ends")
                row["next"] = "stop (plan already measured)"
                break
        met = [p for p in picks if p[0] <= target]
        # of the met plans the one the search scores best (one-shot val PSNR; the later on a tie), else the fastest
        pick = (max(reversed(met), key=lambda p: p[1]["one_shot"])[1] if met
                else min(picks, key=lambda p: p[0])[1])
        seconds["verify"] = round(time.perf_counter() - t, 3)
        info["verify"] = {"rounds": rounds, "met": bool(met), "calibration": round(lat.calibration, 4),
                          "chosen_round": next(i + 1 for i, p in enumerate(picks) if p[1] is pick),
                          "measured_ms": next(r["measured_ms"] for r, p in zip(rounds, picks) if p[1] is pick)}

    arch, model, names, ratios = pick["arch"], pick["model"], pick["names"], pick["ratios"]
    predicted, plan_name = pick["predicted"], pick["plan"]
    info.update({"plan": plan_name, "one_shot_val_psnr": pick["one_shot"], "greedy": pick["greedy"]})

    # ---- stage 4: fine-tune with fixed masks
    t = time.perf_counter()
    final = copy.deepcopy(model).cpu()
    masks = _block_masks(final, ratios)
    masks.apply(final)
    if settings.finetune_steps > 0:
        recipe = SRTrainRecipe(steps=settings.finetune_steps, batch_size=settings.batch_size,
                               patch_size=settings.patch_size, lr=settings.lr / 2)
        report = fine_tune_masked(final, masks, source.split("train"), scale, recipe, seed=settings.seed,
                                  threads=settings.threads)
        info["finetune"] = report.as_dict()
    final.eval()
    masks.apply(final)
    seconds["finetune"] = round(time.perf_counter() - t, 3)
    val = evaluate(final, source, "val", scale, threads=settings.threads)
    seconds["total"] = round(time.perf_counter() - t0, 3)
    info["latency_lookups"] = lat.lookups
    info["table_seconds"] = round(float(getattr(table, "seconds", 0.0)), 3)
    if hasattr(table, "save"):
        table.save()
    choice = {"base": "sr-supernet" if is_supernet else getattr(base, "arch", type(base).__name__),
              "architecture": arch.as_dict() if arch is not None else None,
              "layers": _layers_dict(names, ratios), "plan": plan_name}
    return SRSearchResult(final, masks, choice, float(predicted), float(val["psnr_y"]), history, seconds, info)


def _plan_key(pick: dict) -> tuple:
    """What identifies a plan of the verify rounds: its architecture (None: a fixed model) and per-conv ratios."""
    return (pick["arch"], tuple(sorted((n, round(float(r), 6)) for n, r in pick["ratios"].items())))


def default_measure(table: Any, settings: SRSearchSettings) -> Callable[[nn.Module], dict]:
    """``model -> dict`` timing one ``settings.frame_lr`` frame of a masked model on TVM.

    :func:`compression.sr_deploy.measure_tvm_frame` -- the benchmark's builder (sparse, compact kernel
    where faster) -- on the table's target, threads and tuning database when it has them (a
    :class:`~compression.tvm_backend.latency_table.TVMLatencyTable`), else this host with
    ``settings.threads`` threads and an in-memory database; ``settings.verify_reps`` timed calls.
    """
    from compression.sr_deploy import measure_tvm_frame

    threads = int(getattr(table, "threads", settings.threads))
    tgt = getattr(table, "target", None)
    db = getattr(table, "db", None)
    shape = (3, *settings.frame_lr)

    def measure(model: nn.Module) -> dict:
        return measure_tvm_frame(model, shape, threads=threads, target=tgt, db=db, reps=settings.verify_reps,
                                 seed=settings.seed)

    return measure


def _repair(names: list[str], layers: list[LayerInfo], ratios: dict[str, float], lat: SRLatencyModel,
            target: float, steps: tuple[float, ...]) -> tuple[dict[str, float], float]:
    """Raise ratios one step at a time (most ms saved first) until the prediction meets ``target`` or nothing saves."""
    ratios = dict(ratios)
    by_name = {l.name: l for l in layers}
    ms = lat.model_ms(layers, ratios)
    while ms > target:
        best = None
        for n in names:
            i = steps.index(ratios[n]) if ratios[n] in steps else 0
            if i + 1 >= len(steps):
                continue
            saved = lat.layer_ms(by_name[n], ratios[n]) - lat.layer_ms(by_name[n], steps[-1])
            if saved > 1e-9 and (best is None or saved > best[0]):
                best = (saved, n, steps[i + 1])
        if best is None:
            break
        ratios[best[1]] = best[2]
        ms = lat.model_ms(layers, ratios)
    return ratios, ms


def _mutate(supernet: nn.Module, choice: Any, ratios: dict[str, float], rng: np.random.Generator,
            steps: tuple[float, ...]) -> tuple[Any, dict[str, float]]:
    """One random change: width, depth (+/- one block), one block's kernel, or one layer's ratio."""
    from suite.core.sr.models import SRChoice

    width, kernels, ratios = choice.width, list(choice.kernels), dict(ratios)
    what = int(rng.integers(4))
    if what == 0 and len(supernet.widths) > 1:
        width = int(supernet.widths[int(rng.integers(len(supernet.widths)))])
    elif what == 1:
        if len(kernels) < supernet.max_depth and (len(kernels) <= supernet.min_depth or rng.random() < 0.5):
            kernels.append(int(supernet.kernel_sizes[int(rng.integers(len(supernet.kernel_sizes)))]))
        elif len(kernels) > supernet.min_depth:
            kernels.pop()
            d = len(kernels)
            ratios = {n: r for n, r in ratios.items() if not (n.startswith("body.") and int(n.split(".")[1]) >= d)}
    elif what == 2 and kernels:
        i = int(rng.integers(len(kernels)))
        kernels[i] = int(supernet.kernel_sizes[int(rng.integers(len(supernet.kernel_sizes)))])
    elif ratios:
        n = sorted(ratios)[int(rng.integers(len(ratios)))]
        ratios[n] = float(steps[int(rng.integers(len(steps)))])
    return SRChoice(width, tuple(kernels)), ratios
