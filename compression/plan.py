"""Per-layer compression plans: which scheme, block size and ratio each layer gets.

A plan is what scheme mapping produces and what the compiler consumes; it is
saved as ``plan.json`` next to every compressed model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compression.decisions import LayerDecision, legacy_decision
from suite.core.errors import ArtifactError

PLAN_VERSION = 1


@dataclass
class LayerPlan:
    """The decision for one layer.

    scheme: a scheme name or ``"dense"``; settings: the scheme's settings
    (block size, pattern entries, n/m ...); sparsity: target fraction of this
    layer's weights removed; decision: what was decided, as a
    :class:`~compression.decisions.LayerDecision` (``PRUNED`` by default for a
    non-dense scheme; a dense layer must say why); reason: the same for people
    (keep-dense rule, scheme not applicable, not worth it); latency_ms / dense_latency_ms: the
    measured per-layer latency of this choice and of dense (None if unmeasured);
    sensitivity: estimated accuracy cost of this choice (search only).
    """

    name: str
    scheme: str
    sparsity: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    latency_ms: float | None = None
    dense_latency_ms: float | None = None
    sensitivity: float | None = None
    decision: LayerDecision | None = None

    def __post_init__(self) -> None:
        if self.decision is None:
            if self.scheme == "dense":
                raise TypeError(f"dense layer {self.name!r} needs a decision")
            self.decision = LayerDecision.PRUNED
        self.decision = LayerDecision(self.decision)

    @property
    def dense(self) -> bool:
        return self.scheme == "dense"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decision": self.decision.value}


@dataclass
class Plan:
    """An ordered list of layer decisions plus how it was made."""

    method: str
    layers: list[LayerPlan]
    target: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    search: dict[str, Any] = field(default_factory=dict)
    # True when loaded from an old plan.json without decisions (derived from reasons; not saved)
    legacy_decisions: bool = False

    def layer(self, name: str) -> LayerPlan:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)

    def pruned(self) -> list[LayerPlan]:
        return [l for l in self.layers if not l.dense]

    def schemes_used(self) -> list[str]:
        return sorted({l.scheme for l in self.layers})

    def as_dict(self) -> dict[str, Any]:
        return {"version": PLAN_VERSION, "method": self.method, "target": self.target, "seed": self.seed,
                "search": self.search, "layers": [l.as_dict() for l in self.layers]}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Plan":
        try:
            if data.get("version") != PLAN_VERSION:
                raise ValueError(f"plan version {data.get('version')!r}")
            legacy = any("decision" not in l for l in data["layers"])
            layers = [LayerPlan(**l) if "decision" in l else
                      LayerPlan(**l, decision=legacy_decision(l.get("scheme", ""), l.get("reason")))
                      for l in data["layers"]]
            return cls(data["method"], layers, data.get("target", {}), int(data.get("seed", 0)),
                       data.get("search", {}), legacy_decisions=legacy)
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(f"malformed compression plan ({err})") from None

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as err:
            raise ArtifactError(f"cannot read plan {path}: {err}") from None
