"""Standard threat models per source: the budgets an attack defaults to.

The numbers are the field's where one exists, declared where each source is
registered (``threat=`` tag in :mod:`suite.core.registries`):

* MNIST-like grey digits: Linf 0.3 (Madry et al. 2018), L2 2.0;
* Fashion-MNIST: Linf 0.1, L2 1.5;
* CIFAR-10/100, SVHN, STL-10: Linf 8/255, L2 0.5 (RobustBench).

The embedded sources have no literature budget; theirs are *derived* from
the closest standard one by two rules (see the README's "Threat models"):

* **Linf carries over by contrast.**  A budget is a fraction of the pixel
  range, so a source with the same kind of image (full-contrast grey digits:
  ``digits16``) keeps MNIST's 0.3; colour digits over photos and noise
  (``digits-photo32``, ``digits-affine24``) keep SVHN's 8/255.
* **L2 carries over by per-coordinate RMS.**  An L2 budget ``e`` spread over
  ``d = C*H*W`` coordinates changes each by ``e / sqrt(d)`` on average, so a
  source of ``d`` coordinates gets ``e_ref * sqrt(d / d_ref)``.

A source with no declared threat model (an image folder) gets CIFAR's budgets
by the same two rules, marked derived.
"""

from __future__ import annotations

import math

from suite.core import registries as reg
from suite.core.budgets import ThreatModel
from suite.core.sources.base import ImageSource

CIFAR_DIMS = 3 * 32 * 32


def scaled_l2(l2_ref: float, dims_ref: int, dims: int) -> float:
    """``l2_ref`` moved from ``dims_ref`` to ``dims`` coordinates at equal per-coordinate RMS (3 decimals)."""
    return round(l2_ref * math.sqrt(dims / dims_ref), 3)


def generic_threat_model(shape: tuple[int, int, int]) -> ThreatModel:
    """CIFAR's budgets carried to a ``(C, H, W)`` source that declares none."""
    dims = int(shape[0] * shape[1] * shape[2])
    return ThreatModel(8 / 255, scaled_l2(0.5, CIFAR_DIMS, dims),
                       f"derived: no standard budget for this source; RobustBench CIFAR-10 Linf 8/255, L2 0.5 "
                       f"scaled to {dims} coordinates at equal per-coordinate RMS", derived=True)


def declared_threat_model(name: str) -> ThreatModel | None:
    """The threat model registered with source ``name`` (None: it declares none); unknown names raise."""
    declared = reg.sources.entry(name).tags.get("threat")
    return declared if isinstance(declared, ThreatModel) else None


def threat_model_for(source: ImageSource) -> ThreatModel:
    """The standard threat model of ``source``: its registered one, else :func:`generic_threat_model`."""
    declared = declared_threat_model(source.name) if source.name in reg.sources else None
    return declared if declared is not None else generic_threat_model(source.shape)
