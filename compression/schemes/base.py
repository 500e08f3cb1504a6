"""The contract of a weight-level pruning scheme.

A scheme works on ONE layer weight at a time, seen in its GEMM view:
conv ``[Co, Ci, kh, kw]`` -> ``W`` of shape ``Co x (Ci*kh*kw)`` (rows = filters,
columns = im2col positions, column index ``ci*kh*kw + y*kw + x``); linear
``[out, in]`` is already ``out x in``.

A scheme is built from its settings only; weights arrive at call time:

``check_applicable(shape)``  -> None if the scheme applies to a weight of this
                              shape, else a one-line reason (the caller then
                              keeps the layer dense and records the reason).
``mask(weight, sparsity)``   -> bool tensor, same shape, True = kept; the
                              projection onto the scheme's sparsity set: keeps
                              the structures of largest magnitude (L2), and the
                              fraction of False is as close to ``sparsity`` as
                              the scheme's granularity allows.
``project(weight, sparsity)``-> ``weight * mask`` (ADMM's Z-update).
``to_compact(weight, mask)`` -> :class:`CompactLayer`, what the compiler consumes.
``from_compact(compact)``    -> the masked dense weight, bit-exact.
``verify(mask)``             -> raise AssertionError naming the violated
                              structural invariant (used by tests and as a
                              guard before export).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch


def gemm_view(weight: torch.Tensor) -> torch.Tensor:
    """``[Co, ...]`` -> ``[Co, K]`` (a view for contiguous weights)."""
    return weight.reshape(weight.shape[0], -1)


@dataclass
class CompactLayer:
    """A pruned layer in compact form.

    scheme: scheme name; shape: the dense weight shape;
    arrays: named numpy arrays (packed weights, indices...), documented per scheme;
    meta: JSON-ready scalars (block size, pattern count, ...).
    """

    scheme: str
    shape: tuple[int, ...]
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()))


class Scheme(Protocol):
    name: str

    def check_applicable(self, shape: tuple[int, ...]) -> str | None: ...

    def mask(self, weight: torch.Tensor, sparsity: float) -> torch.Tensor: ...

    def project(self, weight: torch.Tensor, sparsity: float) -> torch.Tensor: ...

    def to_compact(self, weight: torch.Tensor, mask: torch.Tensor) -> CompactLayer: ...

    def from_compact(self, compact: CompactLayer) -> torch.Tensor: ...

    def verify(self, mask: torch.Tensor) -> None: ...

    def settings(self) -> dict[str, Any]: ...
