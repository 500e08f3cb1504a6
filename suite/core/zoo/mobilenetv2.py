"""CIFAR MobileNetV2.

Standard inverted-residual settings with the stem and the first two stages
at stride 1 (the common CIFAR adaptation), so a 32x32 input reaches the head
at 4x4.  Activations are plain ``ReLU`` rather than ``ReLU6`` (friendlier to
quantisation fusion and compilers; accuracy is equivalent on CIFAR).  Channel
counts are rounded to multiples of 8; the last 1x1 conv has
``1280 * max(1, width)`` channels.
"""

from __future__ import annotations

import torch
from torch import nn

from suite.core.zoo.common import (
    ZooModel,
    check_common,
    conv_bn_relu,
    make_divisible,
    make_normalize,
)

# (expansion t, output channels c, repeats n, stride s of the first unit)
CIFAR_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # ImageNet: stride 2
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """``[1x1 expand-BN-ReLU] -> 3x3 depthwise-BN-ReLU -> 1x1 project-BN`` (+ x)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(in_ch * expand_ratio))
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_relu(in_ch, hidden, 1))
        layers.append(conv_bn_relu(hidden, hidden, 3, stride, groups=hidden))
        layers.append(nn.Conv2d(hidden, out_ch, 1, 1, 0, bias=False))
        layers.append(nn.BatchNorm2d(out_ch))
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(ZooModel):
    arch = "mobilenetv2"

    def __init__(
        self,
        num_classes: int = 10,
        width: float = 1.0,
        in_channels: int = 3,
        mean=None,
        std=None,
        settings: tuple[tuple[int, int, int, int], ...] = CIFAR_SETTINGS,
    ) -> None:
        super().__init__()
        num_classes, width, in_channels = check_common(num_classes, width, in_channels)
        self.num_classes, self.width, self.in_channels = num_classes, width, in_channels
        self.normalize = make_normalize(in_channels, mean, std)
        c = make_divisible(32 * width, 8)
        last = make_divisible(1280 * max(1.0, width), 8)
        layers: list[nn.Module] = [conv_bn_relu(in_channels, c, 3, 1)]
        for t, ch, n, s in settings:
            out = make_divisible(ch * width, 8)
            for i in range(n):
                layers.append(InvertedResidual(c, out, s if i == 0 else 1, t))
                c = out
        layers.append(conv_bn_relu(c, last, 1))
        self._attach_head(nn.Sequential(*layers), last, num_classes)


def build_mobilenetv2(
    num_classes: int = 10, width: float = 1.0, in_channels: int = 3, mean=None, std=None
) -> nn.Module:
    """CIFAR MobileNetV2 (stride-1 stem and first two stages, 1280-channel head)."""
    return MobileNetV2(num_classes, width, in_channels, mean, std)
