"""Two small architecture families outside the four classic zoo models (independent suspects for fingerprints).

``plaincnn``: four ``conv3x3 -> BN -> ReLU`` layers (32-64-128-128 channels
times ``width``) with a 2x2 max-pool after the second and third, global
average pooling and one linear head: a plain, narrow CNN without residuals.

``wideshallow``: two wide layers only, a ``5x5`` conv (128 x ``width``) then a
``3x3`` conv (256 x ``width``) with one max-pool between them: a wide, shallow
network whose features are unlike the deep stacks of VGG/ResNet.

Both keep the zoo's layout ``normalize -> features -> pool -> flatten ->
classifier`` (see :mod:`suite.core.zoo.common`), take any input >= 8 px and
export to ONNX / TVM unchanged.
"""

from __future__ import annotations

from torch import nn

from suite.core.zoo.common import ZooModel, check_common, conv_bn_relu, make_normalize, scale_channels


class PlainCNN(ZooModel):
    arch = "plaincnn"

    def __init__(self, num_classes: int = 10, width: float = 1.0, in_channels: int = 3, mean=None,
                 std=None) -> None:
        super().__init__()
        num_classes, width, in_channels = check_common(num_classes, width, in_channels)
        self.num_classes, self.width, self.in_channels = num_classes, width, in_channels
        self.normalize = make_normalize(in_channels, mean, std)
        c1, c2, c3, c4 = (scale_channels(c, width) for c in (32, 64, 128, 128))
        features = nn.Sequential(
            conv_bn_relu(in_channels, c1, 3), conv_bn_relu(c1, c2, 3),
            nn.MaxPool2d(2, 2, ceil_mode=True),
            conv_bn_relu(c2, c3, 3), nn.MaxPool2d(2, 2, ceil_mode=True),
            conv_bn_relu(c3, c4, 3),
        )
        self._attach_head(features, c4, num_classes)


class WideShallow(ZooModel):
    arch = "wideshallow"

    def __init__(self, num_classes: int = 10, width: float = 1.0, in_channels: int = 3, mean=None,
                 std=None) -> None:
        super().__init__()
        num_classes, width, in_channels = check_common(num_classes, width, in_channels)
        self.num_classes, self.width, self.in_channels = num_classes, width, in_channels
        self.normalize = make_normalize(in_channels, mean, std)
        c1, c2 = scale_channels(128, width), scale_channels(256, width)
        features = nn.Sequential(
            conv_bn_relu(in_channels, c1, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
            conv_bn_relu(c1, c2, 3),
        )
        self._attach_head(features, c2, num_classes)


def build_plaincnn(num_classes: int = 10, width: float = 1.0, in_channels: int = 3, mean=None,
                   std=None) -> nn.Module:
    """Plain 4-layer CNN (32-64-128-128 x width, two max-pools, GAP, one FC)."""
    return PlainCNN(num_classes, width, in_channels, mean, std)


def build_wideshallow(num_classes: int = 10, width: float = 1.0, in_channels: int = 3, mean=None,
                      std=None) -> nn.Module:
    """Wide shallow net: conv5x5 (128 x width) -> max-pool -> conv3x3 (256 x width), GAP, one FC."""
    return WideShallow(num_classes, width, in_channels, mean, std)
