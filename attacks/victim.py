"""How attacks see a model: a white-box torch callable or a black-box predictor.

Attacks accept either a ``torch.nn.Module`` (eager, differentiable) or any
:class:`suite.core.predictor.Predictor`.  Gradient attacks call :func:`white_box`,
which refuses black boxes (compiled TVM / ONNX deployments) with a clear
error; evaluation only needs :func:`labels_of`, which works for both.
"""

from __future__ import annotations

from typing import Callable, Union

import torch

from suite.core.errors import ConfigError
from suite.core.predictor import Predictor

Model = Union[torch.nn.Module, Predictor]
Logits = Callable[[torch.Tensor], torch.Tensor]


def is_differentiable(model: Model) -> bool:
    if isinstance(model, torch.nn.Module):
        return True
    return bool(getattr(model, "differentiable", False))


def white_box(model: Model, attack: str) -> Logits:
    """A logits function with gradients w.r.t. the input, or a ConfigError for black boxes.

    The model is put in eval mode; its parameters are not modified.
    """
    if isinstance(model, torch.nn.Module):
        model.eval()
        return model
    if is_differentiable(model):
        return model.predict
    kind = type(model).__name__
    raise ConfigError(
        f"attack {attack!r} needs input gradients, but the model is a black box ({kind}, e.g. a compiled "
        "deployment); craft on the eager model and evaluate the perturbation on this one instead")


def as_module(model: Model) -> torch.nn.Module:
    """An ``nn.Module`` view (for torchattacks / foolbox, which need modules)."""
    if isinstance(model, torch.nn.Module):
        return model.eval()
    fn = white_box(model, "per-image")

    class _Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # torchattacks reads the device from the first parameter
            self._anchor = torch.nn.Parameter(torch.zeros(0), requires_grad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D401
            return fn(x)

    return _Wrapped().eval()


def logits_of(model: Model, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits ``[N, K]`` without gradients, through ``predict`` for predictors."""
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            out.append((model(xb) if isinstance(model, torch.nn.Module) else model.predict(xb)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def labels_of(model: Model, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Top-1 labels ``[N]`` (int64) without gradients."""
    return logits_of(model, x, batch_size).argmax(dim=1) if len(x) else torch.zeros(0, dtype=torch.long)
