"""Unstructured magnitude pruning, plus the helpers every scheme shares.

Mask: the ``n_keep = max(1, round(numel * (1 - s)))`` weights of largest
absolute value are kept (ties: lower flat index first).  Granularity
``1 / numel``; the ``max(1, ...)`` floor only matters for tiny layers at very
high sparsity.  :func:`global_masks` ranks the weights of several layers
together (global magnitude pruning).

Compact format (CSR of the GEMM view ``W [Co, K]``, see ``base.gemm_view``):

``indptr``  int64 ``[Co + 1]``: row ``i`` owns entries ``indptr[i]:indptr[i+1]``;
``indices`` int32 ``[nnz]``: column of each kept weight, ascending within a row;
``data``    ``[nnz]`` in the weight's dtype (float32 for models): the kept values.

``nnz`` counts kept positions (the mask), so a kept weight that happens to be
0.0 is still stored.

The shared helpers (``check_sparsity``, ``kept_count``, ``keep_top``,
``setting_*``) live here because this is the simplest scheme; the others
import them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from compression.schemes.base import CompactLayer, gemm_view
from suite.core.errors import ArtifactError, ConfigError

# --------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------


def check_sparsity(sparsity: float) -> float:
    """Return ``sparsity`` as a float, or raise ConfigError unless ``0 <= s < 1``."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise ConfigError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    value = float(sparsity)
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ConfigError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return value


def kept_count(total: int, sparsity: float) -> int:
    """How many of ``total`` structures to keep: ``max(1, round(total * (1 - s)))``.

    Rounds half up (not to even) so the result does not depend on parity.
    """
    return min(total, max(1, math.floor(total * (1.0 - sparsity) + 0.5)))


def keep_top(scores: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Bool mask ``[..., n]`` keeping the ``n_keep`` largest scores of each last-dim row.

    Ties are broken by index (the lower index wins), so the result is
    deterministic.
    """
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    keep = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    return keep.scatter_(-1, order[..., :n_keep], True)


def squared(weight: torch.Tensor) -> torch.Tensor:
    """``weight ** 2`` in float64 (importance scores; squared L2 ranks like L2)."""
    return weight.detach().to(torch.float64).square()


def setting_int(scheme: str, name: str, value: Any, low: int, high: int | None = None) -> int:
    """Validate an integer setting in ``[low, high]``; accepts ``8``, ``8.0`` or ``"8"``."""
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        number = int(value)
    bounds = f">= {low}" if high is None else f"in {low}..{high}"
    if number is None or number < low or (high is not None and number > high):
        raise ConfigError(f"{scheme}: {name} must be an integer {bounds}, got {value!r}")
    return number


def setting_bool(scheme: str, name: str, value: Any) -> bool:
    """Validate a boolean setting; accepts bools, 0/1 and true/false/yes/no strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise ConfigError(f"{scheme}: {name} must be true or false, got {value!r}")


def setting_choice(scheme: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Validate a string setting against ``choices``."""
    if value not in choices:
        raise ConfigError(f"{scheme}: {name} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def require_applicable(scheme: Any, shape: tuple[int, ...]) -> None:
    """Raise ConfigError with the scheme's reason if it does not apply to ``shape``."""
    reason = scheme.check_applicable(tuple(shape))
    if reason is not None:
        raise ConfigError(reason)


def check_compact(compact: CompactLayer, name: str) -> None:
    """Raise ArtifactError if ``compact`` was not produced by scheme ``name``."""
    if compact.scheme != name:
        raise ArtifactError(f"compact layer is of scheme {compact.scheme!r}, not {name!r}")


def check_pair(weight: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise AssertionError unless a weight and its mask agree in shape."""
    if mask.shape != weight.shape:
        raise AssertionError(f"mask shape {tuple(mask.shape)} differs from weight shape "
                             f"{tuple(weight.shape)}")


def assert_bool_mask(mask: torch.Tensor, min_dims: int = 2) -> None:
    """The invariant every scheme shares: a bool tensor with at least ``min_dims`` dims.

    Like every ``verify`` check, raises AssertionError explicitly (not ``assert``),
    so the guard also holds under ``python -O``.
    """
    if mask.dtype != torch.bool:
        raise AssertionError(f"mask must be a bool tensor, got {mask.dtype}")
    if mask.dim() < min_dims:
        raise AssertionError(f"mask must have >= {min_dims} dims, got shape {tuple(mask.shape)}")


# --------------------------------------------------------------------------
# the scheme
# --------------------------------------------------------------------------


class Unstructured:
    """Magnitude pruning of individual weights within one layer (no settings)."""

    name = "unstructured"

    def __init__(self) -> None:
        pass

    def settings(self) -> dict[str, Any]:
        return {}

    def check_applicable(self, shape: tuple[int, ...]) -> str | None:
        if len(shape) < 2 or math.prod(shape) == 0:
            return f"unstructured needs a non-empty weight with >= 2 dims, got shape {tuple(shape)}"
        return None

    def mask(self, weight: torch.Tensor, sparsity: float) -> torch.Tensor:
        """``[...]`` -> bool ``[...]``: keep the ``round(numel*(1-s))`` largest |w|."""
        sparsity = check_sparsity(sparsity)
        require_applicable(self, tuple(weight.shape))
        scores = squared(weight).flatten()
        return keep_top(scores, kept_count(scores.numel(), sparsity)).reshape(weight.shape)

    def project(self, weight: torch.Tensor, sparsity: float) -> torch.Tensor:
        return weight * self.mask(weight, sparsity)

    def to_compact(self, weight: torch.Tensor, mask: torch.Tensor) -> CompactLayer:
        """CSR of the masked GEMM view (see the module docstring)."""
        check_pair(weight, mask)
        self.verify(mask)
        w2 = gemm_view(weight.detach()).cpu()
        m2 = gemm_view(mask).cpu()
        flat = torch.nonzero(m2.flatten()).flatten()  # row-major: columns ascend per row
        indptr = np.zeros(m2.shape[0] + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(m2.sum(dim=1).numpy())
        arrays = {
            "indptr": indptr,
            "indices": (flat % m2.shape[1]).numpy().astype(np.int32),
            "data": w2.flatten().index_select(0, flat).numpy().copy(),
        }
        return CompactLayer(self.name, tuple(weight.shape), arrays, {"nnz": int(flat.numel())})

    def from_compact(self, compact: CompactLayer) -> torch.Tensor:
        check_compact(compact, self.name)
        indptr = torch.from_numpy(compact.arrays["indptr"]).long()
        cols = torch.from_numpy(compact.arrays["indices"]).long()
        data = torch.from_numpy(compact.arrays["data"].copy())
        n_rows = indptr.numel() - 1
        n_cols = math.prod(compact.shape) // max(n_rows, 1)
        rows = torch.repeat_interleave(torch.arange(n_rows), indptr[1:] - indptr[:-1])
        dense = torch.zeros(n_rows * n_cols, dtype=data.dtype)
        dense.index_copy_(0, rows * n_cols + cols, data)
        return dense.reshape(compact.shape)

    def verify(self, mask: torch.Tensor) -> None:
        """Unstructured masks only need to be bool tensors of >= 2 dims."""
        assert_bool_mask(mask)


def global_masks(weights: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Global magnitude pruning: rank all weights of all layers together.

    weights: name -> tensor (any shapes); returns name -> bool mask of the same
    shape.  ``max(1, round(total * (1 - s)))`` weights are kept overall; ties are
    broken by position in the concatenation (dict order, then flat index).
    """
    sparsity = check_sparsity(sparsity)
    if not weights:
        return {}
    device = next(iter(weights.values())).device
    flat = torch.cat([w.detach().abs().flatten().to(device) for w in weights.values()])
    keep = keep_top(flat, kept_count(flat.numel(), sparsity))
    masks: dict[str, torch.Tensor] = {}
    start = 0
    for name, w in weights.items():
        masks[name] = keep[start:start + w.numel()].reshape(w.shape).to(w.device)
        start += w.numel()
    return masks
