"""Model zoo: CIFAR-style classifiers with normalisation built in.

Every model maps float images ``[N, C, H, W]`` in ``[0, 1]`` (any ``H, W >=
16``) to logits ``[N, num_classes]``.  Its first submodule ``normalize`` is a
:class:`~suite.core.zoo.common.Normalize` with per-channel ``mean``/``std`` buffers
(default 0.5 / 0.25).  Top-level layout of all models: ``normalize ->
features -> pool -> flatten -> classifier``; ``model.forward_features(x)``
returns the pooled embedding.

Use :func:`build_model` (validated) or the ``build_<arch>`` functions.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from suite.core.errors import UnknownNameError
from suite.core.zoo.common import Normalize, ZooModel, check_common
from suite.core.zoo.mobilenetv2 import build_mobilenetv2
from suite.core.zoo.profile import count_macs, count_params, layer_table
from suite.core.zoo.resnet import build_resnet18, build_resnet20
from suite.core.zoo.vgg import build_vgg16

ZOO: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "vgg16": (build_vgg16, "CIFAR VGG16-BN: 13 conv3x3+BN+ReLU, ceil-mode max-pools, global avg pool, one FC"),
    "resnet18": (build_resnet18, "CIFAR ResNet-18: 3x3 stem, BasicBlocks [2,2,2,2], widths 64-512"),
    "resnet20": (build_resnet20, "CIFAR ResNet-20: 3 stages x 3 BasicBlocks, widths 16/32/64, 1x1 projection shortcuts"),
    "mobilenetv2": (build_mobilenetv2, "CIFAR MobileNetV2: stride-1 stem and first two stages, 1280-channel head"),
}


def build_model(
    arch: str,
    num_classes: int = 10,
    width: float = 1.0,
    in_channels: int = 3,
    mean=None,
    std=None,
) -> nn.Module:
    """Build ``arch`` from :data:`ZOO`.

    Raises :class:`~suite.core.errors.UnknownNameError` for an unknown ``arch`` and
    :class:`~suite.core.errors.ConfigError` for a bad ``num_classes``, ``width``,
    ``in_channels``, ``mean`` or ``std``.
    """
    if not isinstance(arch, str) or arch not in ZOO:
        raise UnknownNameError(f"unknown architecture {arch!r}; choose one of: {', '.join(sorted(ZOO))}")
    check_common(num_classes, width, in_channels)
    builder, _ = ZOO[arch]
    return builder(num_classes=num_classes, width=width, in_channels=in_channels, mean=mean, std=std)


__all__ = [
    "ZOO",
    "Normalize",
    "ZooModel",
    "build_model",
    "build_vgg16",
    "build_resnet18",
    "build_resnet20",
    "build_mobilenetv2",
    "count_params",
    "count_macs",
    "layer_table",
]
