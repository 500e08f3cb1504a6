"""Which layers of a model can be pruned, and their GEMM shapes.

A prunable layer is a ``Conv2d`` or ``Linear`` with a weight.  By default the
first conv (few input channels, tiny GEMM, sensitive) and the classifier stay
dense.  Depth-wise convs (``groups == in_channels``) are listed but marked,
since weight-level schemes rarely pay on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from suite.core.zoo.profile import layer_table


@dataclass(frozen=True)
class LayerInfo:
    """One conv/linear layer as the pruning code sees it.

    name: dotted module name; kind: "conv" | "linear";
    weight_shape: dense weight shape; rows, cols: GEMM view ``Co x K``
    (``K = Ci/groups * kh * kw``); spatial: output positions per image (the
    GEMM's N); macs: multiply-accumulates per image; depthwise: groups > 1.
    first / classifier: position flags used by the default keep-dense rules.
    in_hw: input height and width per image; stride, padding: the conv's
    (square) stride and zero padding (1 and 0 for linear layers) -- what a
    compiler needs to build the layer's kernel.
    """

    name: str
    kind: str
    weight_shape: tuple[int, ...]
    rows: int
    cols: int
    spatial: int
    macs: int
    kernel: tuple[int, int]
    groups: int
    first: bool
    classifier: bool
    in_hw: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: int = 0

    @property
    def depthwise(self) -> bool:
        return self.groups > 1

    @property
    def numel(self) -> int:
        n = 1
        for s in self.weight_shape:
            n *= s
        return n


def list_layers(model: nn.Module, input_shape: tuple[int, int, int]) -> list[LayerInfo]:
    """All conv/linear layers in execution order, with GEMM shapes."""
    rows = [r for r in layer_table(model, input_shape) if r["type"] in ("Conv2d", "Linear")]
    out: list[LayerInfo] = []
    last = len(rows) - 1
    for i, r in enumerate(rows):
        shape = tuple(r["weight_shape"])
        if r["type"] == "Conv2d":
            kh, kw = r["kernel_size"]
            pad = r["padding"] if not isinstance(r["padding"], str) else (-1, -1)  # "same"/"valid": not square
            in_hw = tuple(int(v) for v in r["input_shape"][-2:])
            out.append(LayerInfo(r["name"], "conv", shape, shape[0], shape[1] * kh * kw,
                                 r["gemm"]["M"], r["macs"], (kh, kw), r["groups"], i == 0, False,
                                 in_hw, int(r["stride"][0]) if r["stride"][0] == r["stride"][1] else -1,
                                 int(pad[0]) if pad[0] == pad[1] else -1))
        else:
            out.append(LayerInfo(r["name"], "linear", shape, shape[0], shape[1], r["gemm"]["M"],
                                 r["macs"], (1, 1), 1, i == 0, i == last))
    return out


def prunable_layers(model: nn.Module, input_shape: tuple[int, int, int], *, keep_first: bool = True,
                    keep_classifier: bool = True) -> list[LayerInfo]:
    """Layers that a scheme may prune (the keep-dense rules applied)."""
    return [l for l in list_layers(model, input_shape)
            if not (keep_first and l.first) and not (keep_classifier and l.classifier)]


def get_weight(model: nn.Module, name: str) -> torch.Tensor:
    return model.get_submodule(name).weight
