"""Perturbation budgets: projection onto Linf / L2 balls and resizing across resolutions.

A universal perturbation ``v`` is a float tensor ``[C, H, W]`` at its task's
resolution; a batch perturbation is ``[N, C, H, W]``.  Budgets are in pixel
units of inputs in [0, 1] (``eps=10/255`` for Linf; L2 over all C*H*W values).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from suite.core.errors import ConfigError

NORMS = ("linf", "l2")


def check_budget(norm: str, eps: float) -> tuple[str, float]:
    """Validate and canonicalise a budget; returns ``(norm, eps)``."""
    norm = str(norm).lower()
    if norm in ("inf", "linf", "l-inf", "l_inf"):
        norm = "linf"
    if norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r} (choices: {', '.join(NORMS)})")
    eps = float(eps)
    if not eps > 0:
        raise ConfigError(f"eps must be > 0, got {eps}")
    if norm == "linf" and eps > 1:
        raise ConfigError(f"a Linf budget above 1 is meaningless for inputs in [0, 1], got {eps}")
    return norm, eps


def norms_of(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norms of ``delta`` ``[N, ...]`` -> ``[N]``."""
    flat = delta.reshape(delta.shape[0], -1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def project(v: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Project ``v`` (``[C, H, W]`` or ``[N, C, H, W]``) onto the ``eps``-ball of ``norm``.

    Differentiable almost everywhere (used inside meta-training).
    """
    if norm == "linf":
        return v.clamp(-eps, eps)
    batched = v if v.dim() == 4 else v.unsqueeze(0)
    n = batched.reshape(batched.shape[0], -1).norm(dim=1).clamp_min(1e-12)
    factor = torch.clamp(eps / n, max=1.0).view(-1, 1, 1, 1)
    out = batched * factor
    return out if v.dim() == 4 else out.squeeze(0)


def resize_perturbation(v: torch.Tensor, size: tuple[int, int], norm: str, eps: float) -> torch.Tensor:
    """Resize ``v`` ``[C, H, W]`` to ``size`` (bilinear) and re-project onto the budget.

    Linf is kept by bilinear resizing; L2 is not (it scales with the pixel
    count), so the result is projected again in both cases.
    """
    if tuple(v.shape[-2:]) == tuple(size):
        return project(v, norm, eps)
    out = F.interpolate(v.unsqueeze(0), size=size, mode="bilinear", align_corners=False).squeeze(0)
    if norm == "l2":  # keep the energy per pixel, then enforce the budget exactly
        out = out * (v.norm() / out.norm().clamp_min(1e-12))
    return project(out, norm, eps)


def apply_perturbation(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``clip(x + v, 0, 1)`` with ``v`` broadcast over the batch; ``x`` is not modified."""
    return (x + v).clamp(0.0, 1.0)


def coordinate_scale(norm: str, eps: float, numel: int) -> float:
    """Typical per-coordinate magnitude of a perturbation on the budget's boundary.

    ``eps`` for Linf, ``eps / sqrt(numel)`` for L2: makes step sizes and the
    learned optimizer's features independent of resolution.
    """
    return eps if norm == "linf" else eps / float(numel) ** 0.5
