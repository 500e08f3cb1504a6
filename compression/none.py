"""The ``none`` compressor: the dense baseline every scheme is compared with."""

from __future__ import annotations

import torch

from compression.base import CompressionResult
from suite.core.sources.base import ImageSource


class NoCompression:
    """Returns the model unchanged (sparsity 0)."""

    name = "none"

    def __init__(self, sparsity: float = 0.0) -> None:
        if sparsity != 0.0:
            from suite.core.errors import ConfigError

            raise ConfigError(f"--compress none takes no --sparsity (got {sparsity})")

    def compress(self, model: torch.nn.Module, source: ImageSource, *, seed: int,
                 device: str = "cpu", profile: str = "default", quiet: bool = True) -> CompressionResult:
        return CompressionResult(model, {"scheme": "none", "sparsity": 0.0})
