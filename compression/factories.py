"""Registry factories: ``compressors.build(name, sparsity=..., **settings)``."""

from __future__ import annotations

from typing import Any

from compression.compressor import WeightPruning


def unstructured(sparsity: float = 0.0, **settings: Any) -> WeightPruning:
    return WeightPruning("unstructured", sparsity, **settings)


def block(sparsity: float = 0.0, **settings: Any) -> WeightPruning:
    return WeightPruning("block", sparsity, **settings)


def block_punched(sparsity: float = 0.0, **settings: Any) -> WeightPruning:
    return WeightPruning("block-punched", sparsity, **settings)


def pattern(sparsity: float = 0.0, **settings: Any) -> WeightPruning:
    return WeightPruning("pattern", sparsity, **settings)


def nm(sparsity: float = 0.0, **settings: Any) -> WeightPruning:
    n, m = settings.get("n", 2), settings.get("m", 4)
    if sparsity == 0.0 and isinstance(n, int) and isinstance(m, int) and m > 0:
        sparsity = 1.0 - n / m  # N:M fixes its own ratio
    return WeightPruning("nm", sparsity, **settings)


def auto(sparsity: float = 0.0, **settings: Any):
    from compression.mapping import AutoCompressor

    return AutoCompressor(sparsity, **settings)
