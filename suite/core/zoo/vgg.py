"""CIFAR-style VGG16 with batch norm.

13 ``conv3x3 -> BN -> ReLU`` layers in the classic configuration, five
``MaxPool2d(2, 2, ceil_mode=True)`` (so inputs down to 16x16, or odd sizes,
still work), ``AdaptiveAvgPool2d(1)`` and a single ``Linear(512*w, classes)``.
"""

from __future__ import annotations

from torch import nn

from suite.core.zoo.common import (
    ZooModel,
    check_common,
    conv_bn_relu,
    make_normalize,
    scale_channels,
)

VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, "M",
    512, 512, 512, "M",
    512, 512, 512, "M",
)  # fmt: skip


class VGG(ZooModel):
    arch = "vgg16"

    def __init__(
        self,
        cfg: tuple[int | str, ...] = VGG16_CFG,
        num_classes: int = 10,
        width: float = 1.0,
        in_channels: int = 3,
        mean=None,
        std=None,
    ) -> None:
        super().__init__()
        num_classes, width, in_channels = check_common(num_classes, width, in_channels)
        self.num_classes, self.width, self.in_channels = num_classes, width, in_channels
        self.normalize = make_normalize(in_channels, mean, std)
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            else:
                out = scale_channels(int(v), width)
                layers.append(conv_bn_relu(c, out, 3))
                c = out
        self._attach_head(nn.Sequential(*layers), c, num_classes)


def build_vgg16(
    num_classes: int = 10, width: float = 1.0, in_channels: int = 3, mean=None, std=None
) -> nn.Module:
    """CIFAR VGG16-BN (13 conv3x3+BN+ReLU, 5 ceil-mode max-pools, GAP, one FC)."""
    return VGG(VGG16_CFG, num_classes, width, in_channels, mean, std)
