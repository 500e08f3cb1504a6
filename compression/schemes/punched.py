"""Block-punched pruning of conv weights ``[Co, Ci, kh, kw]`` with ``kh*kw > 1``.

A block is ``r`` filters x ``c`` input channels (the last row-block / channel
block is shorter when ``r`` does not divide ``Co`` / ``c`` does not divide
``Ci``).  Inside a block a kernel position ``p = y*kw + x`` is kept or pruned
in all of the block's kernels together.  Every block keeps the same number
``P_keep = max(1, round(kh*kw * (1 - s)))`` of positions: the ones whose
weights in the block have the largest L2 norm (ties: lower position first).
Granularity ``1 / (kh*kw)``.  1x1 convs and linear layers are not applicable
(use ``block``).

Compact format: the same row-block gather format as ``block`` (see
``compression.schemes.block``): ``values [nb, r, K_keep]`` (weight dtype,
last row-block zero-padded to ``r`` rows) and ``col_idx`` int32
``[nb, K_keep]`` ascending, with ``K_keep = Ci * P_keep`` (every row-block
keeps ``P_keep`` positions of every input channel, so row-blocks are
balanced); plus, for reference, ``positions`` int32 ``[nb, ceil(Ci/c), P_keep]``:
the kept positions (ascending) of each block.
``meta``: ``r``, ``c``, ``nb``, ``K``, ``K_keep``, ``P_keep``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from compression.schemes.base import CompactLayer, gemm_view
from compression.schemes.block import row_block_compact, row_block_dense, row_block_sums
from compression.schemes.unstructured import (assert_bool_mask, check_compact, check_pair,
                                              check_sparsity, keep_top, kept_count,
                                              require_applicable, setting_int, squared)


def block_sums(values: torch.Tensor, r: int, c: int) -> torch.Tensor:
    """``[Co, Ci, P]`` -> ``[nb, ncb, P]``: sums over each r x c block (ragged edges)."""
    rows = row_block_sums(values, r)  # [nb, Ci, P]
    return row_block_sums(rows.transpose(0, 1), c).transpose(0, 1)


class BlockPunched:
    """Prune kernel positions jointly in r-filter x c-channel blocks."""

    name = "block-punched"

    def __init__(self, r: int = 8, c: int = 4) -> None:
        self.r = setting_int(self.name, "r", r, 1)
        self.c = setting_int(self.name, "c", c, 1)

    def settings(self) -> dict[str, Any]:
        return {"r": self.r, "c": self.c}

    def check_applicable(self, shape: tuple[int, ...]) -> str | None:
        if len(shape) != 4:
            return (f"block-punched needs a conv weight [Co, Ci, kh, kw], got shape "
                    f"{tuple(shape)}; use block")
        if shape[2] * shape[3] <= 1:
            return "block-punched needs kernels larger than 1x1; use block"
        if math.prod(shape) == 0:
            return f"block-punched needs a non-empty weight, got shape {tuple(shape)}"
        return None

    def mask(self, weight: torch.Tensor, sparsity: float) -> torch.Tensor:
        """``[Co, Ci, kh, kw]`` -> bool, same shape (see the module docstring)."""
        sparsity = check_sparsity(sparsity)
        require_applicable(self, tuple(weight.shape))
        co, ci, kh, kw = weight.shape
        scores = block_sums(squared(weight).reshape(co, ci, kh * kw), self.r, self.c)
        keep = keep_top(scores, kept_count(kh * kw, sparsity))  # [nb, ncb, P]
        rows = torch.arange(co, device=keep.device) // self.r
        chans = torch.arange(ci, device=keep.device) // self.c
        return keep.index_select(0, rows).index_select(1, chans).reshape(weight.shape)

    def project(self, weight: torch.Tensor, sparsity: float) -> torch.Tensor:
        return weight * self.mask(weight, sparsity)

    def to_compact(self, weight: torch.Tensor, mask: torch.Tensor) -> CompactLayer:
        check_pair(weight, mask)
        positions = self._positions(mask)
        keep = gemm_view(mask).cpu()[:: self.r]  # first row of every row-block: [nb, K]
        compact = row_block_compact(self.name, weight, keep, self.r,
                                    {"c": self.c, "P_keep": int(positions.shape[2])})
        compact.arrays["positions"] = positions.numpy().astype("int32")
        return compact

    def _positions(self, mask: torch.Tensor) -> torch.Tensor:
        """Verify ``mask`` and return the kept positions ``[nb, ncb, P_keep]``, ascending."""
        self.verify(mask)
        co, ci, kh, kw = mask.shape
        kept = block_sums(mask.cpu().long().reshape(co, ci, kh * kw), self.r, self.c) > 0
        n_blocks, n_chan_blocks, _ = kept.shape
        return torch.nonzero(kept)[:, 2].reshape(n_blocks, n_chan_blocks, -1)

    def from_compact(self, compact: CompactLayer) -> torch.Tensor:
        check_compact(compact, self.name)
        return row_block_dense(compact)

    def verify(self, mask: torch.Tensor) -> None:
        """Positions uniform inside each block; every block keeps the same count."""
        assert_bool_mask(mask)
        reason = self.check_applicable(tuple(mask.shape))
        if reason is not None:
            raise AssertionError(f"shape invariant violated: {reason}")
        co, ci, kh, kw = mask.shape
        counts = block_sums(mask.long().reshape(co, ci, kh * kw), self.r, self.c)
        sizes = block_sums(torch.ones(co, ci, 1, dtype=torch.long, device=mask.device),
                           self.r, self.c)
        uniform = (counts == 0) | (counts == sizes)
        if not bool(uniform.all()):
            block = tuple(torch.nonzero(~uniform)[0, :2].tolist())
            raise AssertionError("punched-position invariant violated: in block (row-block, "
                                 f"channel-block) = {block} a position is kept in some kernels "
                                 "and pruned in others")
        per_block = (counts > 0).sum(dim=2)
        if not bool((per_block == per_block.flatten()[0]).all()):
            counts = sorted(set(per_block.flatten().tolist()))
            raise AssertionError("balance invariant violated: blocks keep different numbers of "
                                 f"positions ({counts})")
