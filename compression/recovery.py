"""Accuracy recovery after pruning: one-shot + masked fine-tuning, gradual, ADMM.

All three end with fixed masks: the pruned weights are exactly zero when the
function returns (checked by the tests), because the masks are re-applied after
every optimiser step and gradients of pruned weights are zeroed.

* ``oneshot``: magnitude masks from the trained weights, then fine-tune.
* ``gradual``: sparsity ramps up over the first ``ramp`` fraction of the epochs
  with the cubic schedule ``s_t = s * (1 - (1 - t/T)^3)`` (Zhu & Gupta 2017);
  masks are recomputed from the current weights at each epoch end, then frozen.
* ``admm``: ``CE + sum_l 0.5 * rho * ||W_l - Z_l + U_l||^2``; every
  ``update_every`` epochs ``Z = project(W + U)`` onto the scheme's sparsity set
  and ``U += W - Z``; ``rho`` grows by ``rho_growth`` per update.  Then hard
  prune (masks from the projection) and masked retraining.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from compression.masks import MaskSet
from suite.core.config import TrainRecipe
from suite.core.errors import ConfigError
from suite.core.sources.base import ImageSource
from suite.core.training import train_model

METHODS = ("oneshot", "gradual", "admm")

# Layer name -> function(weight, sparsity) -> bool mask.
MaskFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RecoveryConfig:
    """Settings of accuracy recovery.

    method: oneshot | gradual | admm; epochs: masked fine-tuning epochs (after
    ADMM's own epochs for admm); lr: peak learning rate; ramp: fraction of the
    gradual schedule spent increasing sparsity; admm_epochs, rho, rho_growth,
    update_every: ADMM knobs.
    """

    method: str = "oneshot"
    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 64
    ramp: float = 0.6
    admm_epochs: int = 6
    rho: float = 1e-3
    rho_growth: float = 1.5
    update_every: int = 1

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown recovery {self.method!r} (choices: {', '.join(METHODS)})")
        for epochs in (self.epochs, self.admm_epochs):  # epochs, lr, batch size: the training recipe's rules
            try:
                self.recipe(epochs).validate()
            except ConfigError as err:
                raise ConfigError(f"recovery {err}") from None
        if not 0 < self.ramp <= 1:
            raise ConfigError(f"ramp must be in (0, 1], got {self.ramp}")
        if not self.rho > 0 or self.rho_growth < 1 or self.update_every < 1:
            raise ConfigError("ADMM needs rho > 0, rho_growth >= 1, update_every >= 1")

    def recipe(self, epochs: int) -> TrainRecipe:
        return TrainRecipe(epochs=epochs, batch_size=self.batch_size, lr=self.lr, warmup_epochs=0)


def compute_masks(model: nn.Module, mask_fns: dict[str, MaskFn]) -> MaskSet:
    """Masks for every layer in ``mask_fns`` from the model's current weights."""
    return MaskSet({name: fn(model.get_submodule(name).weight.detach()) for name, fn in mask_fns.items()})


def masked_finetune(model: nn.Module, masks: MaskSet, source: ImageSource, cfg: RecoveryConfig, epochs: int,
                    *, seed: int, device: str, quiet: bool, desc: str = "fine-tune") -> list[float]:
    """Train with fixed masks; returns per-epoch val accuracy."""
    masks.attach(model)
    try:
        report = train_model(model, source.train, source.val, cfg.recipe(epochs), seed=seed, device=device,
                             quiet=quiet, desc=desc, after_step=lambda: masks.apply(model))
    finally:
        masks.detach()
    masks.apply(model)
    return report.val_acc


def oneshot(model: nn.Module, mask_fns: dict[str, MaskFn], source: ImageSource, cfg: RecoveryConfig, *,
            seed: int, device: str, quiet: bool) -> tuple[MaskSet, dict]:
    masks = compute_masks(model, mask_fns)
    masks.apply(model)
    val = masked_finetune(model, masks, source, cfg, cfg.epochs, seed=seed, device=device, quiet=quiet)
    return masks, {"val_acc": val}


def cubic_schedule(done_epochs: int, ramp_epochs: int) -> float:
    """Fraction of the final sparsity in force after ``done_epochs`` epochs (0 -> 0, ramp -> 1)."""
    t = min(1.0, done_epochs / max(1, ramp_epochs))
    return 1.0 - (1.0 - t) ** 3


def gradual(model: nn.Module, mask_fns_at: Callable[[float], dict[str, MaskFn]], source: ImageSource,
            cfg: RecoveryConfig, *, seed: int, device: str, quiet: bool) -> tuple[MaskSet, dict]:
    """``mask_fns_at(fraction)`` gives mask functions at ``fraction`` of each layer's target."""
    ramp_epochs = max(1, math.ceil(cfg.epochs * cfg.ramp))
    masks = compute_masks(model, mask_fns_at(cubic_schedule(0, ramp_epochs)))  # nothing pruned yet
    history: list[float] = []

    def on_epoch_end(epoch: int) -> None:
        frac = cubic_schedule(epoch + 1, ramp_epochs)
        history.append(frac)
        fresh = compute_masks(model, mask_fns_at(frac))
        for name in fresh.names():
            masks[name] = fresh[name]
        masks.apply(model)

    report = train_model(model, source.train, source.val, cfg.recipe(cfg.epochs), seed=seed, device=device,
                         quiet=quiet, desc="gradual", after_step=lambda: masks.apply(model),
                         on_epoch_end=on_epoch_end)
    final = compute_masks(model, mask_fns_at(1.0))
    final.apply(model)
    return final, {"val_acc": report.val_acc, "schedule": history}


def admm(model: nn.Module, mask_fns: dict[str, MaskFn], source: ImageSource, cfg: RecoveryConfig, *,
         seed: int, device: str, quiet: bool) -> tuple[MaskSet, dict]:
    params = {name: model.get_submodule(name).weight for name in mask_fns}

    def project(w: torch.Tensor, name: str) -> torch.Tensor:
        return w * mask_fns[name](w).to(w.dtype)

    with torch.no_grad():
        Z = {n: project(w.detach().clone(), n) for n, w in params.items()}
        U = {n: torch.zeros_like(w) for n, w in params.items()}
    state = {"rho": cfg.rho, "updates": 0}
    residuals: list[float] = []

    def extra_loss(_model: nn.Module) -> torch.Tensor:
        total = sum(((params[n] - Z[n] + U[n]) ** 2).sum() for n in params)
        return 0.5 * state["rho"] * total

    def on_epoch_end(epoch: int) -> None:
        if (epoch + 1) % cfg.update_every:
            return
        with torch.no_grad():
            num = den = 0.0
            for n, w in params.items():
                Z[n] = project(w.detach() + U[n], n)
                U[n] += w.detach() - Z[n]
                num += float(((w - Z[n]) ** 2).sum())
                den += float((w ** 2).sum())
        residuals.append(math.sqrt(num / max(den, 1e-12)))
        state["rho"] *= cfg.rho_growth
        state["updates"] += 1

    report = train_model(model, source.train, source.val, cfg.recipe(cfg.admm_epochs), seed=seed, device=device,
                         quiet=quiet, desc="admm", extra_loss=extra_loss, on_epoch_end=on_epoch_end)
    masks = compute_masks(model, mask_fns)  # hard prune: projection of the ADMM-trained weights
    masks.apply(model)
    val = masked_finetune(model, masks, source, cfg, cfg.epochs, seed=seed + 1, device=device, quiet=quiet,
                          desc="retrain")
    return masks, {"admm_val_acc": report.val_acc, "val_acc": val, "relative_residual": residuals,
                   "final_rho": state["rho"]}

