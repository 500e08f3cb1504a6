"""Filter reordering: group filters with similar sparsity supports into the same row-block.

Our compact kernel runs a conv's GEMM ``[Co, K]`` in row-blocks of ``r``
filters, each row-block keeping the union of its filters' nonzero columns
(:func:`compression.tvm_backend.kernels.row_block_columns`; all row-blocks
padded to the largest union).  Masks whose zeros are not already aligned
across consecutive filters (unstructured, pattern, N:M) keep most columns.
Permuting the filters so that similar supports share a row-block shrinks the
unions -- the "matrix reordering" of the compression papers' compiler.  The
permutation is undone after the kernel by a channel gather of its output
(``take`` along the channel axis), so the next layer is untouched.

The grouping is greedy: a row-block starts from the remaining filter with the
most nonzeros and adds, ``r - 1`` times, the remaining filter that brings the
fewest new columns into the block's union.
"""

from __future__ import annotations

import numpy as np


def similar_rows_permutation(support: np.ndarray, r: int) -> np.ndarray:
    """A filter order (``perm[j]`` = original filter at position ``j``) grouping similar supports in blocks of ``r``.

    support: ``[Co, ...]`` bool, True where a weight is nonzero.
    """
    s = np.asarray(support, dtype=bool).reshape(support.shape[0], -1)
    co = s.shape[0]
    sf = s.astype(np.float32)
    counts = sf.sum(axis=1)
    remaining = np.ones(co, dtype=bool)
    order: list[int] = []
    while remaining.any():
        idx = np.flatnonzero(remaining)
        seed = int(idx[np.argmax(counts[idx])])
        block = [seed]
        remaining[seed] = False
        union = s[seed].copy()
        for _ in range(r - 1):
            idx = np.flatnonzero(remaining)
            if idx.size == 0:
                break
            new_cols = sf[idx] @ (~union).astype(np.float32)  # columns each candidate would add
            pick = int(idx[np.argmin(new_cols)])
            block.append(pick)
            remaining[pick] = False
            union |= s[pick]
        order.extend(block)
    return np.asarray(order, dtype=np.int64)


def kept_columns(support: np.ndarray, r: int) -> int:
    """Columns the compact format keeps per row-block (the largest union over row-blocks of ``r`` filters)."""
    s = np.asarray(support, dtype=bool).reshape(support.shape[0], -1)
    co = s.shape[0]
    nb = -(-co // r)
    padded = np.zeros((nb * r, s.shape[1]), dtype=bool)
    padded[:co] = s
    return int(padded.reshape(nb, r, -1).any(axis=1).sum(axis=1).max()) if co else 0


def inverse(perm: np.ndarray) -> np.ndarray:
    """``inv`` with ``inv[perm[j]] = j``: output channel ``c`` of the reordered kernel sits at ``inv[c]``."""
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size, dtype=perm.dtype)
    return inv
