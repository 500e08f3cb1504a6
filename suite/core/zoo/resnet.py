"""CIFAR ResNets: ResNet-18 (4 stages, 64..512) and ResNet-20 (3 stages, 16..64).

Both use a 3x3 stride-1 stem without max-pool, :class:`BasicBlock` residual
units and a ``1x1 conv + BN`` projection shortcut (option B) whenever the
shape changes.  ``features`` is ``Sequential(stem, layer1, ..., layerK)``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from suite.core.zoo.common import (
    ZooModel,
    check_common,
    conv_bn_relu,
    make_normalize,
    scale_channels,
)


class BasicBlock(nn.Module):
    """``conv3x3-BN-ReLU-conv3x3-BN`` + shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        if stride != 1 or in_ch != out_ch:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, 0, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return self.relu2(out)


class ResNet(ZooModel):
    def __init__(
        self,
        arch: str,
        blocks: Sequence[int],
        widths: Sequence[int],
        num_classes: int = 10,
        width: float = 1.0,
        in_channels: int = 3,
        mean=None,
        std=None,
    ) -> None:
        super().__init__()
        if len(blocks) != len(widths):
            raise ValueError("blocks and widths must have the same length")
        num_classes, width, in_channels = check_common(num_classes, width, in_channels)
        self.arch = arch
        self.num_classes, self.width, self.in_channels = num_classes, width, in_channels
        self.normalize = make_normalize(in_channels, mean, std)
        chans = [scale_channels(int(w), width) for w in widths]
        stages: OrderedDict[str, nn.Module] = OrderedDict()
        stages["stem"] = conv_bn_relu(in_channels, chans[0], 3, 1)
        c = chans[0]
        for i, (n, out) in enumerate(zip(blocks, chans)):
            stride = 1 if i == 0 else 2
            units = []
            for j in range(n):
                units.append(BasicBlock(c, out, stride if j == 0 else 1))
                c = out
            stages[f"layer{i + 1}"] = nn.Sequential(*units)
        self._attach_head(nn.Sequential(stages), c, num_classes)


def build_resnet18(
    num_classes: int = 10, width: float = 1.0, in_channels: int = 3, mean=None, std=None
) -> nn.Module:
    """CIFAR ResNet-18: 3x3 stem, BasicBlocks [2, 2, 2, 2], widths 64..512."""
    return ResNet("resnet18", (2, 2, 2, 2), (64, 128, 256, 512), num_classes, width, in_channels, mean, std)


def build_resnet20(
    num_classes: int = 10, width: float = 1.0, in_channels: int = 3, mean=None, std=None
) -> nn.Module:
    """CIFAR ResNet-20 (He et al.): 3 stages x 3 BasicBlocks, widths 16/32/64, option-B shortcuts."""
    return ResNet("resnet20", (3, 3, 3), (16, 32, 64), num_classes, width, in_channels, mean, std)
