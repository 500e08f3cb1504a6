"""The ``none`` compressor: the dense baseline every scheme is compared with."""

from __future__ import annotations

from typing import Any

import torch

from compression.base import CompressionResult
from suite.core.errors import ConfigError
from suite.core.settings import Configurable, Field, SettingsSpec
from suite.core.sources.base import ImageSource


class NoCompression(Configurable):
    """Returns the model unchanged (sparsity 0)."""

    name = "none"
    SETTINGS = SettingsSpec({"sparsity": Field(0.0, float, doc="must be 0")})

    def __init__(self, sparsity: float = 0.0, **settings: Any) -> None:
        super().__init__(sparsity=sparsity, **settings)

    def validate(self) -> None:
        if self.sparsity != 0.0:
            raise ConfigError(f"--compress none takes no --sparsity (got {self.sparsity})")

    def compress(self, model: torch.nn.Module, source: ImageSource, *, seed: int,
                 device: str = "cpu", profile: str = "default", quiet: bool = True) -> CompressionResult:
        return CompressionResult(model, {"scheme": "none", "sparsity": 0.0})
