"""The one interface through which attacks and fingerprints query a deployment.

A :class:`Predictor` maps a batch ``x`` of shape ``[N, C, H, W]`` (float32,
values in [0, 1]) to logits ``[N, num_classes]``.  ``differentiable`` says
whether gradients flow through ``predict`` (eager torch) or not (compiled
TVM / ONNX artifacts, which are black boxes to the attacker).  Backends build
predictors; see :class:`Backend`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Predictor(Protocol):
    input_shape: tuple[int, int, int]
    num_classes: int
    differentiable: bool

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` for ``x`` ``[N, C, H, W]`` in [0, 1]."""
        ...


def predict_labels(predictor: Predictor, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Top-1 labels ``[N]`` (int64), querying in batches without gradients."""
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(predictor.predict(x[i:i + batch_size]).argmax(dim=1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


@dataclass
class Deployment:
    """A deployed model: its predictor plus what the record should say about it.

    info: JSON-ready facts (backend, target, artifact path, latency...).
    """

    predictor: Predictor
    info: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """Turns an eager (possibly compressed) model into a :class:`Deployment`."""

    name: str

    def deploy(self, model: torch.nn.Module, input_shape: tuple[int, int, int], num_classes: int,
               *, workdir: str, device: str = "cpu") -> Deployment:
        ...
