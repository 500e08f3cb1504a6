"""Registry factories: ``compressors.build(name, sparsity=..., **settings)``.

Settings are declared in :mod:`suite.core.settings` terms: the weight-level
ones by :func:`compression.compressor.weight_pruning_spec` (checked by
:class:`~compression.compressor.WeightPruning`), ``auto``'s below.
"""

from __future__ import annotations

from typing import Any

from compression.compressor import WeightPruning, weight_pruning_spec
from suite.core.settings import Field

# auto's own knobs (values checked by AutoCompressor); the rest are unstructured pruning's settings
AUTO_FIELDS = {"mapping": Field("rule", str), "latency_target": Field(None, float, optional=True),
               "latency_cache": Field(None, str, optional=True), "ratios": Field(None, object),
               "latency_backend": Field("tvm-kernels", str, doc="tvm-kernels | torch-gemm-proxy"),
               "sensitivity_images": Field(None, int, optional=True, doc="validation images per sensitivity (256)"),
               "trial_images": Field(None, int, optional=True,
                                     doc="training images of each rival plan's trial (2048; smoke 128; 0: off)"),
               **{k: Field(None, object) for k in ("gamma", "max_ratio", "punch_min_channels", "generations", "beta")}}


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

    weight_pruning_spec("unstructured").extend(owner="auto", **AUTO_FIELDS).check_keys(settings)
    return AutoCompressor(sparsity, **settings)
