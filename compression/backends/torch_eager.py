"""The ``torch`` backend: run the model eagerly (white box, gradients available)."""

from __future__ import annotations

import torch

from suite.core.predictor import Deployment
from suite.core.settings import Configurable, SettingsSpec


class TorchPredictor:
    """Eager PyTorch predictor; ``predict`` keeps the autograd graph."""

    differentiable = True

    def __init__(self, model: torch.nn.Module, input_shape: tuple[int, int, int], num_classes: int,
                 device: str = "cpu") -> None:
        self.model = model.eval().to(device)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.device = torch.device(device)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.device, torch.float32))


class TorchBackend(Configurable):
    """Settings-only backend object (no settings); the model is supplied to :meth:`deploy`."""

    name = "torch"
    SETTINGS = SettingsSpec()

    def deploy(self, model: torch.nn.Module, input_shape: tuple[int, int, int], num_classes: int,
               *, workdir: str, device: str = "cpu") -> Deployment:
        predictor = TorchPredictor(model, input_shape, num_classes, device)
        return Deployment(predictor, {"backend": self.name, "device": device,
                                      "artifact": None, "differentiable": True})
