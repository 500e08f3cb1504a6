"""Supervised training and evaluation of zoo models on an image source.

Deterministic given the seed: the model is initialised under
``torch.manual_seed(seed)`` and the batch order and augmentation come from a
dedicated ``torch.Generator`` seeded from the same seed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from suite.core.config import TrainRecipe
from suite.core.sources.base import ImageSplit


@dataclass
class TrainReport:
    """What happened during training (recorded with the cached model)."""

    epochs: int
    seconds: float
    train_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"epochs": self.epochs, "seconds": round(self.seconds, 3),
                "train_loss": [round(v, 5) for v in self.train_loss],
                "val_acc": [round(v, 5) for v in self.val_acc]}


def augment_batch(x: torch.Tensor, mode: str, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to ``max_shift`` px (zero fill), optional h-flip.

    x: ``[N, C, H, W]`` in [0, 1]; returns a new tensor of the same shape.
    """
    if mode == "none":
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if mode == "shift-flip":
        flip = torch.rand(n, generator=gen) < 0.5
        out[flip] = out[flip].flip(-1)
    return out


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up for ``warmup`` steps then cosine decay to 0 at ``total``."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_model(model: torch.nn.Module, train: ImageSplit, val: ImageSplit | None, recipe: TrainRecipe,
                *, seed: int, device: str = "cpu", quiet: bool = False, desc: str = "train",
                extra_loss: Callable[[torch.nn.Module], torch.Tensor] | None = None,
                after_step: Callable[[], None] | None = None,
                on_epoch_end: Callable[[int], None] | None = None) -> TrainReport:
    """Train ``model`` in place with SGD + Nesterov momentum and a cosine schedule.

    Hooks used by compression: ``extra_loss(model)`` is added to the
    cross-entropy (e.g. ADMM's proximal term); ``after_step()`` runs after every
    optimiser step (e.g. re-applying fixed masks); ``on_epoch_end(epoch)`` after
    every epoch (e.g. ADMM's Z/U updates, gradual pruning).
    """
    recipe.validate()
    dev = torch.device(device)
    model.to(dev)
    gen = torch.Generator().manual_seed(seed)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0,
    )
    n = len(train)
    steps_per_epoch = max(1, math.ceil(n / recipe.batch_size))
    total = recipe.epochs * steps_per_epoch
    warmup = recipe.warmup_epochs * steps_per_epoch
    report = TrainReport(recipe.epochs, 0.0)
    start = time.perf_counter()
    step = 0
    # disable=None: tqdm hides itself when stderr is not a terminal (a log then holds the stage lines only)
    bar = tqdm(total=total, desc=desc, leave=False, unit="step", disable=True if quiet else None)
    try:
        for _epoch in range(recipe.epochs):
            model.train()
            order = torch.randperm(n, generator=gen).numpy()
            loss_sum, seen = 0.0, 0
            for i in range(0, n, recipe.batch_size):
                idx = np.sort(order[i:i + recipe.batch_size])
                if len(idx) < 2:  # batch norm needs two samples per channel
                    continue
                x, y = train.tensors(idx)
                x = augment_batch(x, recipe.augment, gen)
                x, y = x.to(dev), y.to(dev)
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, total, warmup, recipe.lr)
                loss = F.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
                if extra_loss is not None:
                    loss = loss + extra_loss(model)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if recipe.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
                opt.step()
                if after_step is not None:
                    after_step()
                loss_sum += float(loss.detach()) * len(y)
                seen += len(y)
                step += 1
                bar.update(1)
            report.train_loss.append(loss_sum / max(1, seen))
            if on_epoch_end is not None:
                on_epoch_end(_epoch)
            if val is not None and len(val):
                report.val_acc.append(accuracy(model, val, device=device))
                bar.set_postfix(loss=f"{report.train_loss[-1]:.3f}", val_acc=f"{report.val_acc[-1]:.3f}")
    finally:
        bar.close()
    model.eval()
    report.seconds = time.perf_counter() - start
    return report


@torch.no_grad()
def accuracy(model: torch.nn.Module, split: ImageSplit, *, device: str = "cpu", batch_size: int = 256) -> float:
    """Top-1 accuracy of an eager model on ``split`` as a fraction in [0, 1]."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(split), batch_size):
        x, y = split.tensors(slice(i, i + batch_size))
        correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
    model.train(was_training)
    return correct / max(1, len(split))
