"""The one interface through which SR stages (robustness, fingerprints) query an SR model or deployment.

An :class:`SRPredictor` maps a batch of low-resolution images ``x``
``[N, 3, h, w]`` (float32 in [0, 1]) to super-resolved images
``[N, 3, h * scale, w * scale]`` (float32, not clamped).  ``differentiable``
says whether gradients flow through :meth:`SRPredictor.upscale` (eager torch)
or not (a compiled TVM / ONNX deployment: a black box to the attacker and to
the auditor).  It is the SR counterpart of :class:`suite.core.predictor.Predictor`.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn


@runtime_checkable
class SRPredictor(Protocol):
    scale: int
    differentiable: bool

    def upscale(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, h, w]`` in [0, 1] -> ``[N, 3, h * scale, w * scale]`` float32 (not clamped)."""
        ...


class ModuleSRPredictor:
    """An eager SR module as a predictor (white box: gradients flow; the module is put in eval mode)."""

    differentiable = True

    def __init__(self, module: nn.Module, scale: int) -> None:
        self.module = module.eval()
        self.scale = int(scale)

    def upscale(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class CallSRPredictor:
    """A black-box deployment as a predictor.

    factory(input_shape) -> ``call``: builds the deployment for one LR shape
    ``(3, h, w)`` and returns a function ``[1, 3, h, w]`` float32 numpy ->
    ``[1, 3, h s, w s]`` numpy; builds are cached per shape and images are run
    one at a time (deployments are built for batch 1).
    """

    differentiable = False

    def __init__(self, factory: Callable[[tuple[int, int, int]], Callable[[np.ndarray], np.ndarray]],
                 scale: int) -> None:
        self.factory = factory
        self.scale = int(scale)
        self.builds: dict[tuple[int, int, int], Callable[[np.ndarray], np.ndarray]] = {}

    def upscale(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().numpy().astype(np.float32)
        shape = tuple(int(v) for v in arr.shape[1:])
        if shape not in self.builds:
            self.builds[shape] = self.factory(shape)  # type: ignore[index]
        call = self.builds[shape]  # type: ignore[index]
        return torch.from_numpy(np.concatenate([call(arr[i:i + 1]) for i in range(len(arr))]))
