"""A threat model: the standard perturbation budgets of an image source (no heavy imports).

Declared where each source is registered (:mod:`suite.core.registries`);
looked up with :func:`suite.core.threat.threat_model_for`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Norm(str, Enum):
    """Budget norms of a threat model (values as attacks spell them)."""

    LINF = "linf"
    L2 = "l2"


@dataclass(frozen=True)
class ThreatModel:
    """A source's standard perturbation budgets, in pixel units of ``[0, 1]`` inputs.

    linf: Linf budget (max per-coordinate change).
    l2: L2 budget over the whole ``[C, H, W]`` input.
    reference: where the numbers come from (a paper or benchmark), or how
        they were derived when the field has no standard for the source.
    derived: True when the budgets were derived here rather than taken from
        the literature.
    """

    linf: float
    l2: float
    reference: str
    derived: bool = False

    def __post_init__(self) -> None:
        if not (0 < self.linf <= 1 and self.l2 > 0):
            raise ValueError(f"threat model budgets must be 0 < linf <= 1 and l2 > 0, got {self.linf}, {self.l2}")

    def budget(self, norm: "Norm | str") -> float:
        """The standard budget for ``norm`` (``linf`` or ``l2``)."""
        return self.linf if Norm(norm) is Norm.LINF else self.l2

    def summary(self) -> dict:
        return {"linf": self.linf, "l2": self.l2, "reference": self.reference, "derived": self.derived}
