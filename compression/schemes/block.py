"""Block-based column pruning of the GEMM view.

The GEMM view ``W [Co, K]`` (see ``base.gemm_view``) is cut into row-blocks
of ``r`` rows (``nb = ceil(Co / r)``; the last row-block has ``Co - (nb-1)*r``
rows when ``r`` does not divide ``Co``) and column-blocks of ``c`` columns.
Inside a row-block a column is kept or pruned for all of the block's rows
together.  Importance of a block-column = L2 norm of its entries; ties are
broken by the lower column index.

``balance`` (both balance the row-blocks, so the kernel has static shapes):

* ``"row-block"`` (default): every row-block keeps exactly
  ``K_keep = max(1, round(K * (1 - s)))`` columns, the strongest within that
  row-block; column-blocks may keep different counts (``c`` does not affect
  the mask).  Granularity ``1 / K``.
* ``"block"``: every ``r x c`` block keeps exactly ``k = max(1, round(c * (1 - s)))``
  columns, so ``K_keep = (K / c) * k``.  Granularity ``1 / c``; needs ``c | K``.

Compact format (what the TVM block kernel consumes):

``values``  ``[nb, r, K_keep]`` in the weight's dtype (float32 for models): the
            kept columns of each row-block, in ascending column order; the last
            row-block is padded with zero rows up to ``r`` when ``r`` does not
            divide ``Co``;
``col_idx`` int32 ``[nb, K_keep]``: the kept columns, ascending;

so that for the im2col matrix ``X [K, N]``::

    Y[b*r + i, n] = sum_k values[b, i, k] * X[col_idx[b, k], n]

(rows ``b*r + i >= Co`` of the padded last block are dropped).
``meta``: ``r``, ``c``, ``balance``, ``nb``, ``K``, ``K_keep``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from compression.schemes.base import CompactLayer, gemm_view
from compression.schemes.unstructured import (assert_bool_mask, check_compact, check_pair,
                                              check_sparsity, keep_top, kept_count,
                                              require_applicable, setting_choice, setting_int,
                                              squared)

BALANCES = ("row-block", "block")


def row_block_ids(n_rows: int, r: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """int64 ``[n_rows]``: the row-block of each row (``i // r``)."""
    return torch.arange(n_rows, device=device) // r


def row_block_sums(values: torch.Tensor, r: int) -> torch.Tensor:
    """``[Co, ...]`` -> ``[nb, ...]``: sums over the rows of each row-block (ragged last)."""
    n_blocks = math.ceil(values.shape[0] / r)
    padded = values.new_zeros((n_blocks * r, *values.shape[1:]))
    padded[: values.shape[0]] = values
    return padded.reshape(n_blocks, r, *values.shape[1:]).sum(dim=1)


def row_block_sizes(n_rows: int, r: int) -> torch.Tensor:
    """int64 ``[nb]``: the number of rows of each row-block."""
    return torch.bincount(row_block_ids(n_rows, r))


def assert_row_blocks_uniform(m2: torch.Tensor, r: int) -> torch.Tensor:
    """Assert the row-block invariants of a GEMM-view mask ``[Co, K]``.

    Returns the per-row-block column mask ``[nb, K]``.
    """
    counts = row_block_sums(m2.long(), r)  # [nb, K]: kept rows per block-column
    sizes = row_block_sizes(m2.shape[0], r).to(counts.device)[:, None]
    uniform = (counts == 0) | (counts == sizes)
    if not bool(uniform.all()):
        block = int(torch.nonzero(~uniform)[0, 0])
        raise AssertionError(f"block-column invariant violated: in row-block {block} a column "
                             "is kept in some rows and pruned in others")
    keep = counts > 0
    per_block = keep.sum(dim=1)
    if not bool((per_block == per_block[0]).all()):
        raise AssertionError("balance invariant violated: row-blocks keep different numbers of "
                             f"columns ({sorted(set(per_block.tolist()))})")
    return keep


def pack_row_blocks(w2: torch.Tensor, keep: torch.Tensor,
                    r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather the kept columns of each row-block.

    w2: ``[Co, K]``; keep: bool ``[nb, K]`` with the same count in every row.
    Returns ``values [nb, r, K_keep]`` (last block zero-padded to ``r`` rows)
    and ``col_idx`` int32 ``[nb, K_keep]`` (ascending).
    """
    n_blocks, n_cols = keep.shape
    k_keep = int(keep[0].sum()) if n_blocks else 0
    col_idx = torch.nonzero(keep)[:, 1].reshape(n_blocks, k_keep)  # row-major => ascending
    padded = torch.zeros(n_blocks * r, n_cols, dtype=w2.dtype, device=w2.device)
    padded[: w2.shape[0]] = w2
    index = col_idx[:, None, :].expand(n_blocks, r, k_keep)
    values = torch.gather(padded.reshape(n_blocks, r, n_cols), 2, index)
    return values, col_idx.to(torch.int32)


def unpack_row_blocks(values: torch.Tensor, col_idx: torch.Tensor, n_rows: int,
                      n_cols: int) -> torch.Tensor:
    """Inverse of :func:`pack_row_blocks`: ``[nb, r, K_keep]`` -> dense ``[n_rows, n_cols]``."""
    n_blocks, r, k_keep = values.shape
    dense = torch.zeros(n_blocks, r, n_cols, dtype=values.dtype)
    index = col_idx.long()[:, None, :].expand(n_blocks, r, k_keep)
    dense.scatter_(2, index, values)
    return dense.reshape(n_blocks * r, n_cols)[:n_rows]


def row_block_compact(name: str, weight: torch.Tensor, keep: torch.Tensor, r: int,
                      meta: dict[str, Any]) -> CompactLayer:
    """Build the row-block gather CompactLayer (shared with block-punched)."""
    w2 = gemm_view(weight.detach()).cpu()
    values, col_idx = pack_row_blocks(w2, keep.cpu(), r)
    arrays = {"values": values.numpy().copy(), "col_idx": col_idx.numpy().copy()}
    meta = {"r": r, "nb": int(keep.shape[0]), "K": int(w2.shape[1]),
            "K_keep": int(col_idx.shape[1]), **meta}
    return CompactLayer(name, tuple(weight.shape), arrays, meta)


def row_block_dense(compact: CompactLayer) -> torch.Tensor:
    """The masked dense weight of a row-block gather CompactLayer."""
    values = torch.from_numpy(compact.arrays["values"].copy())
    col_idx = torch.from_numpy(compact.arrays["col_idx"].copy())
    n_rows = compact.shape[0]
    n_cols = math.prod(compact.shape) // n_rows
    return unpack_row_blocks(values, col_idx, n_rows, n_cols).reshape(compact.shape)


class Block:
    """Block-based pruning: whole block-columns kept/pruned, balanced row-blocks."""

    name = "block"

    def __init__(self, r: int = 8, c: int = 16, balance: str = "row-block") -> None:
        self.r = setting_int(self.name, "r", r, 1)
        self.c = setting_int(self.name, "c", c, 1)
        self.balance = setting_choice(self.name, "balance", balance, BALANCES)

    def settings(self) -> dict[str, Any]:
        return {"r": self.r, "c": self.c, "balance": self.balance}

    def check_applicable(self, shape: tuple[int, ...]) -> str | None:
        if len(shape) < 2 or math.prod(shape) == 0:
            return f"block needs a non-empty weight with >= 2 dims, got shape {tuple(shape)}"
        n_cols = math.prod(shape[1:])
        if self.balance == "block" and n_cols % self.c:
            return (f"block balance=block needs c={self.c} to divide the GEMM columns "
                    f"K={n_cols}; use balance=row-block or another c")
        return None

    def mask(self, weight: torch.Tensor, sparsity: float) -> torch.Tensor:
        """``[Co, ...]`` -> bool ``[Co, ...]`` (see the module docstring)."""
        sparsity = check_sparsity(sparsity)
        require_applicable(self, tuple(weight.shape))
        scores = row_block_sums(squared(gemm_view(weight)), self.r)  # [nb, K]
        keep = self._keep_columns(scores, sparsity)
        ids = row_block_ids(weight.shape[0], self.r, keep.device)
        return keep.index_select(0, ids).reshape(weight.shape)

    def _keep_columns(self, scores: torch.Tensor, sparsity: float) -> torch.Tensor:
        """scores ``[nb, K]`` -> bool ``[nb, K]`` of kept block-columns."""
        n_blocks, n_cols = scores.shape
        if self.balance == "row-block":
            return keep_top(scores, kept_count(n_cols, sparsity))
        grouped = scores.reshape(n_blocks, n_cols // self.c, self.c)
        return keep_top(grouped, kept_count(self.c, sparsity)).reshape(n_blocks, n_cols)

    def project(self, weight: torch.Tensor, sparsity: float) -> torch.Tensor:
        return weight * self.mask(weight, sparsity)

    def to_compact(self, weight: torch.Tensor, mask: torch.Tensor) -> CompactLayer:
        check_pair(weight, mask)
        self.verify(mask)
        keep = assert_row_blocks_uniform(gemm_view(mask).cpu(), self.r)
        return row_block_compact(self.name, weight, keep, self.r,
                                 {"c": self.c, "balance": self.balance})

    def from_compact(self, compact: CompactLayer) -> torch.Tensor:
        check_compact(compact, self.name)
        return row_block_dense(compact)

    def verify(self, mask: torch.Tensor) -> None:
        """Block-columns uniform per row-block; balanced row-blocks (and blocks)."""
        assert_bool_mask(mask)
        keep = assert_row_blocks_uniform(gemm_view(mask), self.r)
        if self.balance == "block":
            n_blocks, n_cols = keep.shape
            if n_cols % self.c:
                raise AssertionError(f"balance=block invariant violated: c={self.c} does not "
                                     f"divide K={n_cols}")
            per_block = keep.reshape(n_blocks, n_cols // self.c, self.c).sum(dim=2)
            if not bool((per_block == per_block.flatten()[0]).all()):
                counts = sorted(set(per_block.flatten().tolist()))
                raise AssertionError("balance=block invariant violated: r x c blocks keep "
                                     f"different numbers of columns ({counts})")
