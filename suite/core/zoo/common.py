"""Building blocks shared by the model zoo.

Every zoo model takes float images ``[N, C, H, W]`` in ``[0, 1]`` and starts
with a :class:`Normalize` submodule named ``normalize``; the rest uses only
standard ``torch.nn`` modules (Conv2d, BatchNorm2d, ReLU, MaxPool2d,
AdaptiveAvgPool2d, Flatten, Linear) plus residual additions, so that
``torch.export``, ONNX and TVM can compile the models unchanged.

All models share the same top-level layout::

    normalize -> features -> pool -> flatten -> classifier

``features`` produces the last feature map, ``pool`` is
``AdaptiveAvgPool2d(1)`` and ``classifier`` is the single ``Linear`` head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

import torch
from torch import nn

from suite.core.errors import ConfigError

DEFAULT_MEAN = 0.5
DEFAULT_STD = 0.25


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with ``mean``/``std`` kept as buffers.

    The buffers have shape ``[1, C, 1, 1]`` and are part of the state dict
    (``normalize.mean`` / ``normalize.std``), so a saved model carries its own
    input normalisation.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor([float(m) for m in mean], dtype=torch.float32)
        std_t = torch.as_tensor([float(s) for s in std], dtype=torch.float32)
        if mean_t.ndim != 1 or mean_t.numel() == 0 or mean_t.shape != std_t.shape:
            raise ConfigError(
                f"normalize mean and std must be non-empty and of equal length, "
                f"got {len(mean_t)} and {len(std_t)}"
            )
        if not bool(torch.isfinite(mean_t).all()) or not bool(torch.isfinite(std_t).all()):
            raise ConfigError("normalize mean and std must be finite")
        if bool((std_t <= 0).any()):
            raise ConfigError(f"normalize std must be > 0, got {std_t.tolist()}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    @property
    def num_channels(self) -> int:
        return int(self.mean.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        m = ", ".join(f"{v:g}" for v in self.mean.flatten().tolist())
        s = ", ".join(f"{v:g}" for v in self.std.flatten().tolist())
        return f"mean=({m}), std=({s})"


class ZooModel(nn.Module):
    """Common top-level layout of the zoo models.

    Subclasses set ``normalize``, ``features``, ``pool``, ``flatten`` and
    ``classifier`` (in that registration order, so ``normalize`` is the first
    submodule).  Plain attributes ``arch``, ``num_classes``, ``in_channels``
    and ``width`` describe how the model was built.
    """

    arch: str = ""

    def _attach_head(self, features: nn.Module, channels: int, num_classes: int) -> None:
        """Register ``features``, global average pooling, flatten and the linear classifier, then initialise.

        channels: output channels of ``features`` (the classifier's input size).
        """
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate embedding ``[N, D]`` (pooled features before the head)."""
        x = self.normalize(x)
        x = self.features(x)
        x = self.pool(x)
        return self.flatten(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))

    @property
    def embedding_dim(self) -> int:
        return int(self.classifier.in_features)


# ----------------------------------------------------------------------------
# validation helpers


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_width(width: object) -> float:
    """Return ``width`` as a float; raise :class:`ConfigError` unless finite and > 0."""
    if isinstance(width, bool) or not isinstance(width, Real):
        raise ConfigError(f"width must be a positive number, got {width!r}")
    w = float(width)
    if not math.isfinite(w) or w <= 0:
        raise ConfigError(f"width must be a positive number, got {width!r}")
    return w


def check_positive_int(name: str, value: object) -> int:
    if not _is_int(value) or int(value) < 1:  # type: ignore[arg-type]
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def _channel_stats(name: str, value: object, default: float, channels: int) -> tuple[float, ...]:
    if value is None:
        return (default,) * channels
    if isinstance(value, torch.Tensor):
        value = value.detach().flatten().tolist()
    if isinstance(value, Real) and not isinstance(value, bool):
        return (float(value),) * channels
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ConfigError(f"{name} must be a number or a sequence of {channels} numbers, got {value!r}")
    vals = list(value)
    if len(vals) == 1:
        vals = vals * channels
    if len(vals) != channels:
        raise ConfigError(f"{name} must have {channels} values (one per input channel), got {len(vals)}")
    try:
        return tuple(float(v) for v in vals)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must contain numbers, got {value!r}") from exc


def make_normalize(in_channels: int, mean: object = None, std: object = None) -> Normalize:
    """A :class:`Normalize` for ``in_channels`` (defaults mean 0.5, std 0.25).

    ``mean``/``std`` may be ``None``, a scalar, a one-element sequence (all
    broadcast to every channel) or a sequence of ``in_channels`` numbers.
    """
    m = _channel_stats("mean", mean, DEFAULT_MEAN, in_channels)
    s = _channel_stats("std", std, DEFAULT_STD, in_channels)
    return Normalize(m, s)


def check_common(num_classes: object, width: object, in_channels: object) -> tuple[int, float, int]:
    """Validate the common builder arguments and return them normalised."""
    return (
        check_positive_int("num_classes", num_classes),
        check_width(width),
        check_positive_int("in_channels", in_channels),
    )


# ----------------------------------------------------------------------------
# channel scaling


def scale_channels(c: int, width: float) -> int:
    """VGG/ResNet width rule: ``max(8, round(c * width))``."""
    return max(8, int(round(c * width)))


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """MobileNet rule: round to a multiple of ``divisor`` without losing > 10 %."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


# ----------------------------------------------------------------------------
# layers and init


def conv_bn_relu(
    in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    """``Conv2d(bias=False) -> BatchNorm2d -> ReLU`` with 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=False),
    )


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, ReLU), BN weight 1 / bias 0.

    Linear layers keep PyTorch's default init; biases of convs are zeroed.
    Deterministic given ``torch.manual_seed``.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
