"""The compressor contract shared by every pruning scheme.

A compressor is built from its settings only (``compressors.build(name,
**settings)``); the trained model and the source arrive at call time, so one
configured compressor applies unchanged to any model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from suite.core.sources.base import ImageSource


@dataclass
class CompressionResult:
    """A compressed model and JSON-ready facts for the record.

    model: the compressed eager model (same input/output contract as the dense one).
    info: e.g. ``{"scheme": ..., "sparsity": ..., "plan": ...}``.
    """

    model: torch.nn.Module
    info: dict[str, Any] = field(default_factory=dict)
    plan: Any = None          # compression.plan.Plan for weight-level schemes
    masks: Any = None         # compression.masks.MaskSet (fixed masks)
    compact: dict[str, Any] = field(default_factory=dict)  # layer -> CompactLayer
    shapes: dict[str, list[int]] | None = None  # channel-pruned weight shapes
    extra: dict[str, str] = field(default_factory=dict)  # more files to save (name -> text)


class Compressor(Protocol):
    name: str

    def compress(self, model: torch.nn.Module, source: ImageSource, *, seed: int,
                 device: str = "cpu", profile: str = "default", quiet: bool = True) -> CompressionResult:
        ...
