"""Training and evaluation of SR models on an :class:`~suite.core.sr.photos.SRSource`.

Training: L1 loss between the model's output and the HR patch, Adam, cosine
learning-rate decay to 0 over ``steps`` (no warm-up), batches of random
sub-crops of the source's HR training patches with random horizontal and
vertical flips; the LR input is :func:`~suite.core.sr.degrade.bicubic_down`
of the HR crop (8-bit quantised).  Deterministic given ``seed`` (one
``torch.Generator`` draws every crop and flip; the model is initialised by the
caller) and the number of torch threads, which ``threads`` sets for the
duration of the call.

Evaluation: every image of a split, SR output clamped to ``[0, 1]``, PSNR and
SSIM on Y with a ``scale``-pixel border crop (:mod:`suite.core.sr.metrics`),
beside the bicubic upsampling baseline, averaged over images.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from suite.core.errors import ConfigError, DataError
from suite.core.sr.degrade import bicubic_down, bicubic_up, check_scale
from suite.core.sr.metrics import psnr_y, ssim_y
from suite.core.sr.photos import SRSource, SRSplit


@dataclass(frozen=True)
class SRTrainRecipe:
    """Settings of :func:`train_sr`.

    steps: optimiser steps.  batch_size: patches per step.
    patch_size: side of the LR input patch in pixels (the HR crop is ``patch_size * scale``).
    lr: Adam's peak learning rate, decayed by a cosine to 0 at ``steps``.
    betas, weight_decay: Adam's.  flips: random horizontal / vertical flips.
    transpose: also swap height and width at random (with flips: all 8 rotations / reflections).
    lr_scales: ``(module-name prefix, multiplier)`` pairs: parameters under that
    module train at ``multiplier x`` the scheduled learning rate (the first
    matching prefix wins; e.g. ``(("deconv", 0.1),)``, FSRCNN's recipe).  A prefix
    that names no parameter of the model is an error.
    """

    steps: int = 1000
    batch_size: int = 16
    patch_size: int = 32
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    flips: bool = True
    transpose: bool = False
    lr_scales: tuple[tuple[str, float], ...] = ()

    def validate(self) -> "SRTrainRecipe":
        for name in ("steps", "batch_size", "patch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"SR recipe {name} must be a positive integer, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"SR recipe lr must be a positive number, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"SR recipe weight_decay must be >= 0, got {self.weight_decay!r}")
        for item in self.lr_scales:
            if (not isinstance(item, (tuple, list)) or len(item) != 2 or not isinstance(item[0], str) or not item[0]
                    or isinstance(item[1], bool) or not isinstance(item[1], (int, float))
                    or not math.isfinite(item[1]) or item[1] <= 0):
                raise ConfigError(f"SR recipe lr_scales must be (module prefix, positive multiplier) pairs, "
                                  f"got {item!r}")
        return self


def param_groups(model: nn.Module, lr_scales: tuple[tuple[str, float], ...]) -> list[dict]:
    """Adam parameter groups: one per multiplier of ``lr_scales`` (``"lr_scale"`` key), the rest at 1.

    A parameter ``name`` falls under prefix ``p`` when ``name == p`` or starts with ``p + "."``.
    Raises ConfigError when a prefix matches no parameter.
    """
    groups: dict[float, list[nn.Parameter]] = {}
    used = {p: False for p, _ in lr_scales}
    for name, param in model.named_parameters():
        scale = 1.0
        for prefix, mult in lr_scales:
            if name == prefix or name.startswith(prefix + "."):
                scale, used[prefix] = float(mult), True
                break
        groups.setdefault(scale, []).append(param)
    missing = [p for p, hit in used.items() if not hit]
    if missing:
        raise ConfigError(f"SR recipe lr_scales prefixes {missing} name no parameter of {type(model).__name__}")
    return [{"params": ps, "lr_scale": s} for s, ps in groups.items()]


@dataclass
class SRTrainReport:
    """What happened: ``losses`` is the L1 loss (in [0, 1] pixel units) of every step."""

    steps: int
    seconds: float
    threads: int
    losses: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"steps": self.steps, "seconds": round(self.seconds, 3), "threads": self.threads,
                "first_loss": round(self.losses[0], 5) if self.losses else None,
                "last_loss": round(self.losses[-1], 5) if self.losses else None}


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(threads)`` (None: unchanged); restores the old value."""
    old = torch.get_num_threads()
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def cosine_lr(step: int, total: int, peak: float) -> float:
    """``peak`` decayed by a half cosine from step 0 to 0 at ``total``."""
    return 0.5 * peak * (1.0 + math.cos(math.pi * min(1.0, step / max(1, total))))


def sample_batch(pool: torch.Tensor, batch_size: int, hr_size: int, flips: bool,
                 gen: torch.Generator, transpose: bool = False) -> torch.Tensor:
    """Random ``hr_size`` crops of random pool patches, randomly flipped (and transposed).

    pool: ``uint8 [N, 3, P, P]`` HR patches (``P >= hr_size``).
    transpose: swap H and W of a random half (drawn after the flips, so ``False`` keeps the old stream).
    Returns float32 ``[batch_size, 3, hr_size, hr_size]`` in [0, 1].
    """
    n, _, ph, pw = pool.shape
    idx = torch.randint(0, n, (batch_size,), generator=gen)
    tops = torch.randint(0, ph - hr_size + 1, (batch_size,), generator=gen)
    lefts = torch.randint(0, pw - hr_size + 1, (batch_size,), generator=gen)
    out = torch.stack([pool[i, :, t:t + hr_size, l:l + hr_size] for i, t, l in
                       zip(idx.tolist(), tops.tolist(), lefts.tolist())]).float().div_(255.0)
    if flips:
        hflip = torch.rand(batch_size, generator=gen) < 0.5
        vflip = torch.rand(batch_size, generator=gen) < 0.5
        out[hflip] = out[hflip].flip(-1)
        out[vflip] = out[vflip].flip(-2)
    if transpose:
        swap = torch.rand(batch_size, generator=gen) < 0.5
        out[swap] = out[swap].transpose(-1, -2)
    return out


def train_sr(model: nn.Module, train: SRSplit, scale: int, recipe: SRTrainRecipe, *, seed: int,
             threads: int | None = None, device: str = "cpu",
             before_step: Callable[[int], None] | None = None,
             log: Callable[[str], None] | None = None, log_every: int = 0) -> SRTrainReport:
    """Train ``model`` in place with L1 loss, Adam and a cosine schedule.

    model: ``[N, 3, h, w]`` in [0, 1] -> ``[N, 3, h*scale, w*scale]``.
    train: HR training patches (all of one size, at least ``recipe.patch_size * scale``).
    before_step(step): called before every step (e.g. to pick a supernet's sub-network).
    log: receives one line every ``log_every`` steps (0: never).
    Returns the per-step losses and the wall time; leaves the model in eval mode.
    """
    recipe.validate()
    check_scale(scale)
    if len(train) == 0:
        raise DataError("SR training needs at least one HR training patch; the train split is empty")
    pool = torch.from_numpy(train.stack())
    hr_size = recipe.patch_size * scale
    if pool.shape[-1] < hr_size or pool.shape[-2] < hr_size:
        raise ConfigError(f"HR crop {hr_size} px (patch_size {recipe.patch_size} x scale {scale}) is larger than "
                          f"the source's {pool.shape[-2]}x{pool.shape[-1]} training patches")
    dev = torch.device(device)
    model.to(dev).train()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(param_groups(model, tuple(recipe.lr_scales)), lr=recipe.lr, betas=recipe.betas,
                           weight_decay=recipe.weight_decay)
    with torch_threads(threads) as n_threads:
        report = SRTrainReport(recipe.steps, 0.0, n_threads)
        start = time.perf_counter()
        for step in range(recipe.steps):
            if before_step is not None:
                before_step(step)
            hr = sample_batch(pool, recipe.batch_size, hr_size, recipe.flips, gen, recipe.transpose)
            lr_img = bicubic_down(hr, scale)
            hr, lr_img = hr.to(dev), lr_img.to(dev)
            for group in opt.param_groups:
                group["lr"] = group["lr_scale"] * cosine_lr(step, recipe.steps, recipe.lr)
            loss = F.l1_loss(model(lr_img), hr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            report.losses.append(float(loss.detach()))
            if log is not None and log_every and (step + 1) % log_every == 0:
                recent = report.losses[-log_every:]
                log(f"step {step + 1}/{recipe.steps}: L1 {sum(recent) / len(recent):.5f}")
        report.seconds = time.perf_counter() - start
    model.eval()
    return report


@torch.no_grad()
def evaluate(model: nn.Module, source: SRSource, split: str = "test", scale: int | None = None, *,
             threads: int | None = None, device: str = "cpu", limit: int | None = None) -> dict:
    """PSNR / SSIM (Y channel, ``scale``-pixel border) of ``model`` and of bicubic on one split.

    scale: the SR factor (default: the source's; it must match the model's ``scale`` when it has one).
    limit: score only the first ``limit`` images.
    Returns ``{"psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y"}`` (dB, dB, unitless means over
    images) plus ``"images"`` (count) and ``"per_image"`` (one dict per image with its photo name).
    """
    scale = check_scale(source.scale if scale is None else scale)
    model_scale = getattr(model, "scale", scale)
    if model_scale != scale:
        raise ConfigError(f"model is x{model_scale} but evaluation asked for x{scale}")
    data = source.split(split)
    n = len(data) if limit is None else min(limit, len(data))
    if n == 0:
        raise DataError(f"{source.name}: the {split} split is empty; nothing to evaluate")
    was_training = model.training
    model.to(torch.device(device)).eval()
    rows = []
    with torch_threads(threads):
        for i, (lr_img, hr) in enumerate(data.pairs(scale)):
            if i >= n:
                break
            sr = model(lr_img.to(device)).clamp(0.0, 1.0).cpu()
            bic = bicubic_up(lr_img, scale)
            rows.append({"photo": data.crops[i].photo,
                         "psnr_y": float(psnr_y(sr, hr, scale)[0]), "ssim_y": float(ssim_y(sr, hr, scale)[0]),
                         "bicubic_psnr_y": float(psnr_y(bic, hr, scale)[0]),
                         "bicubic_ssim_y": float(ssim_y(bic, hr, scale)[0])})
    model.train(was_training)
    out = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y")}
    out["images"] = len(rows)
    out["per_image"] = rows
    return out
