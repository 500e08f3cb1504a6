"""Pattern + connectivity pruning of 3x3 convs (PatDNN-style).

Positions of a 3x3 kernel are numbered ``p = y*3 + x`` (0..8, centre = 4).
A *pattern* is a set of ``k = entries`` positions; a *library* is a small list
of patterns.  Each kernel keeps the weights of one library pattern, or is
removed entirely (connectivity pruning).

Library (data-driven unless a fixed ``library`` setting is given): candidate
patterns are the ``k``-subsets of the 9 positions that contain the centre.
Each kernel votes for its own best candidate (the centre plus its ``k-1``
largest-magnitude other positions, ties: lower position); the library is the
``library_size`` candidates with most votes (ties: candidate order, i.e.
lexicographic order of the sorted position tuples).  :func:`select_library`
builds one library from several layers, to share it via ``library=``.

Mask of one layer at target sparsity ``s``:

1. ``k`` = ``entries``, raised to ``ceil(9 * (1 - s))`` for this layer when the
   patterns alone would prune more than ``s`` (``s < 1 - entries/9``); the
   ``k`` used is recorded as ``meta["entries"]``.  With a fixed library ``k``
   cannot change, so such a target is a ConfigError.
2. Every kernel gets the library pattern that keeps the most L2 energy
   (ties: lower library index).
3. Connectivity (``connectivity=True``): keep the
   ``max(1, round(n_kernels * (1 - s) * 9 / k))`` kernels with the largest L2
   norm after patterning (ties: lower kernel index ``co*Ci + ci``), remove the
   rest.  Achieved sparsity is within ``k / (18 * n_kernels)`` of ``s``
   (granularity ``k / (9 * n_kernels)``).
   With ``connectivity=False`` no kernel is removed and the achieved sparsity
   is exactly ``1 - k/9`` whatever ``s`` (``s`` only raises ``k``).

Compact format:

``library``    uint8 ``[P, 9]`` (0/1): the fixed library if one was given, else
               the distinct patterns the mask uses, sorted by their bit code
               ``sum(1 << p)``;
``pattern_id`` int16 ``[Co, Ci]``: library row of each kernel, ``-1`` = removed;
``values``     ``[Co, Ci, k]`` in the weight's dtype (float32 for models): the
               kept weights in ascending position order; zeros for removed kernels.

``meta``: ``entries`` (the ``k`` used), ``library_size`` (``P``), ``connectivity``,
``kept_kernels``.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import torch

from compression.schemes.base import CompactLayer
from compression.schemes.unstructured import (assert_bool_mask, check_compact, check_pair,
                                              check_sparsity, keep_top, kept_count,
                                              require_applicable, setting_bool, setting_int,
                                              squared)
from suite.core.errors import ConfigError

N_POS = 9
CENTRE = 4
BITS = 1 << torch.arange(N_POS)  # position p -> bit 1 << p


def candidate_patterns(entries: int) -> list[tuple[int, ...]]:
    """The ``entries``-subsets of the 9 positions containing the centre (lexicographic order)."""
    return [p for p in itertools.combinations(range(N_POS), entries) if CENTRE in p]


def pattern_codes(kernel_masks: torch.Tensor) -> torch.Tensor:
    """bool ``[n, 9]`` -> int64 ``[n]`` bit codes ``sum(1 << p)``."""
    return (kernel_masks.long() * BITS.to(kernel_masks.device)).sum(dim=1)


def patterns_to_masks(patterns: list[list[int]]) -> torch.Tensor:
    """Position lists -> bool ``[P, 9]``."""
    masks = torch.zeros(len(patterns), N_POS, dtype=torch.bool)
    for row, positions in enumerate(patterns):
        masks[row, list(positions)] = True
    return masks


def best_patterns(kernel_scores: torch.Tensor, entries: int) -> torch.Tensor:
    """``[n, 9]`` squared weights -> bool ``[n, 9]``: centre + the ``k-1`` largest others."""
    scores = kernel_scores.clone()
    scores[:, CENTRE] = math.inf
    return keep_top(scores, entries)


def library_from_scores(kernel_scores: torch.Tensor, entries: int,
                        library_size: int) -> list[list[int]]:
    """The ``library_size`` most-voted candidate patterns of ``[n, 9]`` kernels."""
    votes = torch.bincount(pattern_codes(best_patterns(kernel_scores, entries)).cpu(),
                           minlength=1 << N_POS)
    candidates = candidate_patterns(entries)
    codes = torch.tensor([sum(1 << p for p in c) for c in candidates])
    order = torch.sort(votes[codes], descending=True, stable=True).indices
    return [list(candidates[i]) for i in order[:library_size].tolist()]


def kernel_scores_of(weights: list[torch.Tensor]) -> torch.Tensor:
    """3x3 conv weights -> float64 ``[sum(Co*Ci), 9]`` squared values."""
    for w in weights:
        if w.dim() != 4 or tuple(w.shape[2:]) != (3, 3):
            raise ConfigError(f"pattern needs 3x3 conv weights, got shape {tuple(w.shape)}")
    return torch.cat([squared(w).reshape(-1, N_POS).cpu() for w in weights])


def select_library(weights: list[torch.Tensor], entries: int = 4,
                   library_size: int = 8) -> list[list[int]]:
    """One data-driven library for several 3x3 conv layers (votes are pooled).

    Returns ``library_size`` position lists (ascending), usable as the
    ``library`` setting of :class:`Pattern`.
    """
    entries = setting_int("pattern", "entries", entries, 1, N_POS)
    library_size = setting_int("pattern", "library_size", library_size, 1)
    if not weights:
        raise ConfigError("select_library needs at least one weight")
    return library_from_scores(kernel_scores_of(weights), entries, library_size)


def parse_library(value: Any) -> list[list[int]]:
    """Validate a fixed library: a list of 9-bit masks (ints) or position lists.

    Also accepts the same as a JSON string.  Returns sorted position lists.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"pattern: library is not valid JSON ({exc.msg})") from None
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"pattern: library must be a non-empty list of patterns, got {value!r}")
    patterns = [_parse_pattern(item) for item in value]
    if len({len(p) for p in patterns}) != 1:
        raise ConfigError("pattern: library patterns must all have the same number of entries")
    if len({tuple(p) for p in patterns}) != len(patterns):
        raise ConfigError("pattern: library contains a pattern twice")
    return patterns


def _parse_pattern(item: Any) -> list[int]:
    """One library entry (9-bit mask int or list of positions) -> sorted positions."""
    if isinstance(item, int) and not isinstance(item, bool) and 1 <= item < (1 << N_POS):
        return [p for p in range(N_POS) if item >> p & 1]
    if isinstance(item, (list, tuple)) and item:
        ok = all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p < N_POS for p in item)
        if ok and len(set(item)) == len(item):
            return sorted(item)
    raise ConfigError(f"pattern: library entry {item!r} is neither a 9-bit mask (1..511) "
                      "nor a list of distinct positions 0..8")


class Pattern:
    """Kernel pattern pruning from a small library, plus connectivity pruning."""

    name = "pattern"

    def __init__(self, entries: int | None = None, library_size: int | None = None,
                 connectivity: bool = True, library: Any = None) -> None:
        self.library = parse_library(library) if library is not None else None
        fixed_k = len(self.library[0]) if self.library else None
        if entries is None:  # default: the fixed library's size, else 4
            entries = fixed_k if fixed_k is not None else 4
        if library_size is None:  # default: the fixed library's length, else 8
            library_size = len(self.library) if self.library is not None else 8
        self.entries = setting_int(self.name, "entries", entries, 1, N_POS)
        self.library_size = setting_int(self.name, "library_size", library_size, 1)
        self.connectivity = setting_bool(self.name, "connectivity", connectivity)
        if self.library is not None:
            self._check_fixed_library(self.library)

    def _check_fixed_library(self, library: list[list[int]]) -> None:
        if self.entries != len(library[0]):
            raise ConfigError(f"pattern: entries={self.entries} but the library patterns "
                              f"have {len(library[0])} entries")
        if len(library) > self.library_size:
            raise ConfigError(f"pattern: library has {len(library)} patterns, more than "
                              f"library_size={self.library_size}")

    def settings(self) -> dict[str, Any]:
        return {"entries": self.entries, "library_size": self.library_size,
                "connectivity": self.connectivity, "library": self.library}

    def check_applicable(self, shape: tuple[int, ...]) -> str | None:
        if len(shape) != 4:
            return f"pattern needs a 3x3 conv weight [Co, Ci, 3, 3], got shape {tuple(shape)}"
        if tuple(shape[2:]) != (3, 3):
            return f"pattern needs 3x3 kernels, got {shape[2]}x{shape[3]}"
        if math.prod(shape) == 0:
            return f"pattern needs a non-empty weight, got shape {tuple(shape)}"
        return None

    def layer_entries(self, sparsity: float) -> int:
        """``k`` for a layer at this sparsity: ``entries``, raised to ``ceil(9*(1-s))`` if needed.

        Raises ConfigError if a raise is needed but the library is fixed.
        """
        needed = math.ceil(N_POS * (1.0 - sparsity) - 1e-9)
        if needed <= self.entries:
            return self.entries
        if self.library is not None:
            raise ConfigError(f"pattern: the fixed library keeps {self.entries} of 9 weights "
                              f"(sparsity >= {1 - self.entries / N_POS:.3f}); sparsity "
                              f"{sparsity} needs entries >= {needed}")
        return needed

    def mask(self, weight: torch.Tensor, sparsity: float) -> torch.Tensor:
        """``[Co, Ci, 3, 3]`` -> bool, same shape (see the module docstring)."""
        sparsity = check_sparsity(sparsity)
        require_applicable(self, tuple(weight.shape))
        entries = self.layer_entries(sparsity)
        scores = squared(weight).reshape(-1, N_POS)  # [n_kernels, 9]
        library = self._library_masks(scores, entries).to(scores.device)
        kernel_masks = library.index_select(0, assign_patterns(scores, library))
        if self.connectivity:
            energy = (scores * kernel_masks).sum(dim=1)
            removed = 1.0 - (1.0 - sparsity) * N_POS / entries
            alive = keep_top(energy, kept_count(energy.numel(), max(removed, 0.0)))
            kernel_masks &= alive[:, None]
        return kernel_masks.reshape(weight.shape)

    def _library_masks(self, scores: torch.Tensor, entries: int) -> torch.Tensor:
        """bool ``[P, 9]``: the fixed library or one selected from this layer."""
        if self.library is not None:
            return patterns_to_masks(self.library)
        return patterns_to_masks(library_from_scores(scores, entries, self.library_size))

    def project(self, weight: torch.Tensor, sparsity: float) -> torch.Tensor:
        return weight * self.mask(weight, sparsity)

    def to_compact(self, weight: torch.Tensor, mask: torch.Tensor) -> CompactLayer:
        """library / pattern_id / values (see the module docstring)."""
        check_pair(weight, mask)
        self.verify(mask)
        co, ci = mask.shape[:2]
        kernel_masks = mask.reshape(-1, N_POS).cpu()
        library = self._compact_library(kernel_masks)
        pattern_id = _pattern_ids(kernel_masks, library)
        entries = int(library[0].sum()) if len(library) else self.entries
        positions = torch.nonzero(library)[:, 1].reshape(len(library), entries)
        kernels = weight.detach().reshape(-1, N_POS).cpu()
        alive = pattern_id >= 0
        values = kernels.new_zeros(kernels.shape[0], entries)
        if len(library):
            index = positions.index_select(0, pattern_id.clamp(min=0))
            gathered = torch.gather(kernels, 1, index)
            values = torch.where(alive[:, None], gathered, values)
        arrays = {"library": library.numpy().astype(np.uint8),
                  "pattern_id": pattern_id.reshape(co, ci).numpy().astype(np.int16),
                  "values": values.reshape(co, ci, entries).numpy().copy()}
        meta = {"entries": entries, "library_size": len(library),
                "connectivity": self.connectivity, "kept_kernels": int(alive.sum())}
        return CompactLayer(self.name, tuple(weight.shape), arrays, meta)

    def _compact_library(self, kernel_masks: torch.Tensor) -> torch.Tensor:
        """bool ``[P, 9]``: the fixed library, else the mask's patterns sorted by code."""
        if self.library is not None:
            return patterns_to_masks(self.library)
        codes = torch.unique(pattern_codes(kernel_masks))  # sorted ascending
        codes = codes[codes != 0]
        return (codes[:, None] & BITS) != 0

    def from_compact(self, compact: CompactLayer) -> torch.Tensor:
        check_compact(compact, self.name)
        library = torch.from_numpy(compact.arrays["library"].astype(bool))
        pattern_id = torch.from_numpy(compact.arrays["pattern_id"].astype(np.int64)).flatten()
        values = torch.from_numpy(compact.arrays["values"].copy())
        entries = values.shape[2]
        values = values.reshape(-1, entries)
        positions = torch.nonzero(library)[:, 1].reshape(library.shape[0], entries)
        dense = values.new_zeros(pattern_id.numel(), N_POS)
        if library.shape[0]:
            alive = (pattern_id >= 0)[:, None]
            index = positions.index_select(0, pattern_id.clamp(min=0))
            scattered = dense.clone().scatter_(1, index, values)
            dense = torch.where(alive, scattered, dense)
        return dense.reshape(compact.shape)

    def verify(self, mask: torch.Tensor) -> None:
        """Each kernel all-zero or one pattern; equal pattern sizes; library bounds."""
        assert_bool_mask(mask)
        reason = self.check_applicable(tuple(mask.shape))
        if reason is not None:
            raise AssertionError(f"shape invariant violated: {reason}")
        kernel_masks = mask.reshape(-1, N_POS)
        counts = kernel_masks.sum(dim=1)
        alive = torch.nonzero(counts).flatten()
        used = counts.index_select(0, alive)
        if used.numel() and not bool((used == used[0]).all()):
            raise AssertionError("pattern-size invariant violated: kernels keep different numbers "
                                 f"of weights ({sorted(set(used.tolist()))})")
        if not self.connectivity and used.numel() != counts.numel():
            raise AssertionError("connectivity invariant violated: a kernel was removed but "
                                 "connectivity=False")
        if used.numel() == 0:
            return
        entries = int(used[0])
        if entries < self.entries:
            raise AssertionError(f"entries invariant violated: kernels keep {entries} weights, "
                                 f"fewer than entries={self.entries}")
        codes = torch.unique(pattern_codes(kernel_masks.index_select(0, alive))).cpu()
        if self.library is not None:
            allowed = torch.tensor([sum(1 << p for p in pat) for pat in self.library])
            if not bool(torch.isin(codes, allowed).all()):
                raise AssertionError("library invariant violated: a kernel's pattern is not in "
                                     "the fixed library")
            return
        if codes.numel() > self.library_size:
            raise AssertionError(f"library invariant violated: {codes.numel()} distinct patterns, "
                                 f"more than library_size={self.library_size}")
        if not bool((codes >> CENTRE & 1).all()):
            raise AssertionError("centre invariant violated: a kernel's pattern does not keep the "
                                 "centre weight")


def assign_patterns(scores: torch.Tensor, library: torch.Tensor) -> torch.Tensor:
    """int64 ``[n]``: for kernels ``[n, 9]`` the library row ``[P, 9]`` keeping most energy.

    Ties go to the lower library index.
    """
    energy = torch.stack([(scores * row).sum(dim=1) for row in library], dim=1)  # [n, P]
    return torch.argmax(energy, dim=1)


def _pattern_ids(kernel_masks: torch.Tensor, library: torch.Tensor) -> torch.Tensor:
    """int64 ``[n]``: row of ``library`` equal to each kernel mask, ``-1`` for empty kernels."""
    table = torch.full((1 << N_POS,), -1, dtype=torch.long)
    table[pattern_codes(library)] = torch.arange(library.shape[0])
    return table.index_select(0, pattern_codes(kernel_masks))
