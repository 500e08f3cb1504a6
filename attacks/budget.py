"""An attack's budget in a run: the source's standard one unless the user gave ``eps``.

:func:`choose_budget` fills ``eps`` from the run source's
:class:`~suite.core.budgets.ThreatModel` for the attack's norm and says where
the number came from; :meth:`BudgetChoice.fields` are the flat record fields
every attack entry carries (``eps_standard``, ``eps_multiple``,
``eps_origin``, ``budget_reference``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from attacks.base import canonical_norm
from suite.core import registries as reg
from suite.core.budgets import ThreatModel


class EpsOrigin(str, Enum):
    """Where an attack's ``eps`` came from."""

    STANDARD = "standard"  # the run source's standard budget for the attack's norm
    GIVEN = "given"        # set by the user (--attack-args eps=... or NAME.eps=...)


@dataclass(frozen=True)
class BudgetChoice:
    """The budget an attack runs at (pixel units of [0, 1] inputs) and its provenance."""

    norm: str
    eps: float
    origin: EpsOrigin
    standard: float
    reference: str

    def fields(self) -> dict[str, Any]:
        """Flat fields for the attack's record entries."""
        return {"eps_standard": self.standard, "eps_multiple": round(self.eps / self.standard, 6),
                "eps_origin": self.origin.value, "budget_reference": self.reference}


def choose_budget(name: str, settings: dict[str, Any], threat: ThreatModel) -> tuple[dict[str, Any], BudgetChoice]:
    """``settings`` with ``eps`` filled in from ``threat`` when not given, and the choice made.

    ``settings`` are the attack's given settings (user values over its
    profile's); the attack's declared default ``eps`` is never used in a run.
    """
    spec = reg.attacks.get(name).SETTINGS
    norm = canonical_norm(spec.fields["norm"].coerce(name, "norm", settings.get("norm", spec.fields["norm"].default)))
    standard = threat.budget(norm)
    if "eps" in settings:
        eps, origin = float(spec.fields["eps"].coerce(name, "eps", settings["eps"])), EpsOrigin.GIVEN
    else:
        eps, origin = standard, EpsOrigin.STANDARD
        settings = {**settings, "eps": eps}
    return settings, BudgetChoice(norm, eps, origin, standard, threat.reference)
