"""Fixed pruning masks applied to a model's weights.

A :class:`MaskSet` maps layer names to bool tensors (True = kept) with the
layer's weight shape.  While attached, a gradient hook zeroes the gradients
of pruned weights and :meth:`MaskSet.apply` re-zeroes the weights after each
optimiser step, so pruned weights stay *exactly* zero through fine-tuning
(weight decay and momentum cannot revive them).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


class MaskSet:
    """Per-layer bool masks; the unit of state that fine-tuning keeps fixed."""

    def __init__(self, masks: dict[str, torch.Tensor] | None = None) -> None:
        self.masks: dict[str, torch.Tensor] = {k: v.bool() for k, v in (masks or {}).items()}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __contains__(self, name: str) -> bool:
        return name in self.masks

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.masks[name]

    def __setitem__(self, name: str, mask: torch.Tensor) -> None:
        self.masks[name] = mask.bool()

    def names(self) -> list[str]:
        return list(self.masks)

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero the pruned weights in place."""
        for name, mask in self.masks.items():
            w = model.get_submodule(name).weight
            w.mul_(mask.to(w.device, w.dtype))

    def attach(self, model: nn.Module) -> "MaskSet":
        """Apply the masks and register gradient hooks that zero pruned gradients."""
        self.detach()
        self.apply(model)
        for name, mask in self.masks.items():
            w = model.get_submodule(name).weight
            m = mask.to(w.device, w.dtype)
            self._handles.append(w.register_hook(lambda g, m=m: g * m))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def kept(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks.values()))

    def total(self) -> int:
        return int(sum(m.numel() for m in self.masks.values()))

    def sparsity(self) -> float:
        """Fraction of masked-layer weights that are pruned."""
        total = self.total()
        return 1.0 - self.kept() / total if total else 0.0

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.masks.items()}

def weight_sparsity(model: nn.Module, names: Iterable[str]) -> float:
    """Fraction of exactly-zero weights over the named layers."""
    zeros = total = 0
    for name in names:
        w = model.get_submodule(name).weight
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / total if total else 0.0
