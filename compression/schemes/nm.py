"""N:M sparsity along the GEMM columns.

In every row of the GEMM view ``W [Co, K]`` (see ``base.gemm_view``), each
group of ``M`` consecutive columns ``[g*M, (g+1)*M)`` keeps exactly the ``N``
weights of largest magnitude (ties: lower column).  Needs ``M | K``.
The sparsity is fixed at ``1 - N/M``: ``mask(w, s)`` accepts that value
(within 1e-6) or ``s == 0`` meaning "the scheme's own sparsity"; anything
else is a ConfigError that suggests the ``n``/``m`` to use instead.

Compact format (``G = K / M`` groups per row):

``values`` ``[Co, G*N]`` in the weight's dtype (float32 for models): the kept
           weights, group by group, ascending column within a group;
``idx``    uint8 ``[Co, G*N]``: position of each kept weight inside its group
           (0..M-1), so its column is ``(j // N) * M + idx[i, j]``.

``meta``: ``n``, ``m``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from compression.schemes.base import CompactLayer, gemm_view
from compression.schemes.unstructured import (assert_bool_mask, check_compact, check_pair,
                                              check_sparsity, keep_top, require_applicable,
                                              setting_int, squared)
from suite.core.errors import ConfigError

MAX_M = 256  # idx is uint8


class NM:
    """Keep N of every M consecutive GEMM columns in each row."""

    name = "nm"

    def __init__(self, n: int = 2, m: int = 4) -> None:
        self.m = setting_int(self.name, "m", m, 2, MAX_M)
        self.n = setting_int(self.name, "n", n, 1)
        if self.n >= self.m:
            raise ConfigError(f"nm: n must be smaller than m, got n={self.n}, m={self.m}")

    @property
    def sparsity(self) -> float:
        """The scheme's fixed sparsity ``1 - N/M``."""
        return 1.0 - self.n / self.m

    def settings(self) -> dict[str, Any]:
        return {"n": self.n, "m": self.m}

    def check_applicable(self, shape: tuple[int, ...]) -> str | None:
        if len(shape) < 2 or math.prod(shape) == 0:
            return f"nm needs a non-empty weight with >= 2 dims, got shape {tuple(shape)}"
        n_cols = math.prod(shape[1:])
        if n_cols % self.m:
            return (f"nm {self.n}:{self.m} needs m={self.m} to divide the GEMM columns "
                    f"K={n_cols}")
        return None

    def check_target(self, sparsity: float) -> None:
        """Raise ConfigError unless ``sparsity`` is 0 (default) or ``1 - N/M``."""
        sparsity = check_sparsity(sparsity)
        if sparsity == 0.0 or abs(sparsity - self.sparsity) <= 1e-6:
            return
        ratio = Fraction(1.0 - sparsity).limit_denominator(16)
        n, m = (ratio.numerator, ratio.denominator) if ratio.numerator else (1, 16)
        raise ConfigError(f"nm {self.n}:{self.m} has sparsity {self.sparsity:g}; choose n and m "
                          f"(compress-args n={n},m={m}) instead of --sparsity {sparsity:g}")

    def mask(self, weight: torch.Tensor, sparsity: float) -> torch.Tensor:
        """``[Co, ...]`` -> bool, same shape: ``N`` kept per group of ``M`` columns."""
        self.check_target(sparsity)
        require_applicable(self, tuple(weight.shape))
        scores = squared(gemm_view(weight))
        groups = scores.reshape(scores.shape[0], -1, self.m)  # [Co, G, M]
        return keep_top(groups, self.n).reshape(weight.shape)

    def project(self, weight: torch.Tensor, sparsity: float) -> torch.Tensor:
        return weight * self.mask(weight, sparsity)

    def to_compact(self, weight: torch.Tensor, mask: torch.Tensor) -> CompactLayer:
        check_pair(weight, mask)
        self.verify(mask)
        m2 = gemm_view(mask).cpu()
        w2 = gemm_view(weight.detach()).cpu()
        n_rows, n_cols = m2.shape
        cols = torch.nonzero(m2)[:, 1].reshape(n_rows, n_cols // self.m * self.n)  # ascending
        arrays = {"values": torch.gather(w2, 1, cols).numpy().copy(),
                  "idx": (cols % self.m).numpy().astype(np.uint8)}
        return CompactLayer(self.name, tuple(weight.shape), arrays, {"n": self.n, "m": self.m})

    def from_compact(self, compact: CompactLayer) -> torch.Tensor:
        check_compact(compact, self.name)
        values = torch.from_numpy(compact.arrays["values"].copy())
        idx = torch.from_numpy(compact.arrays["idx"].astype(np.int64))
        n, m = int(compact.meta["n"]), int(compact.meta["m"])
        n_rows, n_kept = values.shape
        cols = (torch.arange(n_kept) // n)[None, :] * m + idx
        dense = torch.zeros(n_rows, n_kept // n * m, dtype=values.dtype)
        return dense.scatter_(1, cols, values).reshape(compact.shape)

    def verify(self, mask: torch.Tensor) -> None:
        """Exactly ``N`` kept in every group of ``M`` consecutive GEMM columns."""
        assert_bool_mask(mask)
        reason = self.check_applicable(tuple(mask.shape))
        if reason is not None:
            raise AssertionError(f"shape invariant violated: {reason}")
        counts = gemm_view(mask).reshape(mask.shape[0], -1, self.m).sum(dim=2)
        bad = torch.nonzero(counts != self.n)
        if bad.numel():
            row, group = bad[0].tolist()
            raise AssertionError(f"N:M invariant violated: row {row}, group {group} keeps "
                                 f"{int(counts[row, group])} of {self.m}, not {self.n}")
