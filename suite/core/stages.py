"""The contract between the pipeline and its post-deployment stages (attacks, fingerprints, ...).

The pipeline builds one :class:`Subjects` object naming what the later stages
may use -- the dense model, the compressed model, the deployment -- each a
:class:`Subject`: a predictor, plus the eager module when gradients are
available.  Every post-deployment stage implements :class:`Stage`: it
receives a :class:`StageInput` and returns a :class:`StageOutput` of typed
record sections, which the pipeline merges into the record.  A new stage is a
class implementing the protocol and one line in the pipeline's stage list,
never a special case in the pipeline.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Union

import torch

from suite.core.config import RunConfig
from suite.core.predictor import Predictor
from suite.core.runtime import Runtime
from suite.core.sources.base import ImageSource


# A JSON value as it lands in a record (what record sections are made of).
Json = Union[str, int, float, bool, None, list["Json"], dict[str, "Json"]]
JsonObject = dict[str, Json]


class Role(str, enum.Enum):
    """What a subject is in the flow dense -> compressed -> deployed (values appear in records)."""

    DENSE = "dense"
    COMPRESSED = "compressed"
    DEPLOYED = "deployed"


@dataclass(frozen=True)
class Subject:
    """One model the stages may query.

    role: where it sits in the flow.
    predictor: ``predict(x [N, C, H, W] in [0, 1]) -> logits [N, K]``; the only
        way to query a deployment.
    module: the eager ``torch.nn.Module`` (eval mode) when gradients are
        available (white box), else None (black box: a compiled artifact).
    info: JSON-ready facts of the record section it came from (model id and
        sha256, compression facts, deployment facts).
    """

    role: Role
    predictor: Predictor
    module: torch.nn.Module | None = None
    info: JsonObject = field(default_factory=dict)

    @property
    def differentiable(self) -> bool:
        return self.module is not None

    @property
    def name(self) -> str:
        return self.role.value


@dataclass(frozen=True)
class Subjects:
    """What a run produced up to deployment.

    dense: the trained dense model (always white box; the fingerprint owner).
    compressed: the compressed eager model, or None when the run compresses nothing.
    deployed: the deployment when it is a different runtime from eager torch
        (TVM, ONNX Runtime; black box) and runnable here, else None.
    """

    dense: Subject
    compressed: Subject | None = None
    deployed: Subject | None = None

    def all(self) -> dict[str, Subject]:
        """Every subject by role name, in flow order."""
        return {s.name: s for s in (self.dense, self.compressed, self.deployed) if s is not None}

    def white_box(self) -> dict[str, Subject]:
        """The subjects with gradients (dense, and compressed when present)."""
        return {n: s for n, s in self.all().items() if s.differentiable}

    @property
    def shipped(self) -> Subject:
        """What the run ships: the deployment, else the compressed model, else the dense one."""
        return self.deployed or self.compressed or self.dense

    @property
    def nearest_white_box(self) -> Subject:
        """The white-box subject closest to what ships (compressed, else dense)."""
        return self.compressed or self.dense


@dataclass(frozen=True)
class StageInput:
    """What a post-deployment stage receives.

    config: the resolved run configuration (its stage lists and ``*_args``).
    source: the run's image source (train / val / test splits).
    subjects: dense, compressed and deployed models.
    run_dir: the pending run directory; files written here land with the record.
    runtime: cache directory, device, threads and the run's log.
    """

    config: RunConfig
    source: ImageSource
    subjects: Subjects
    run_dir: Path
    runtime: Runtime

    def log(self, msg: str) -> None:
        self.runtime.log(msg)


@dataclass
class StageOutput:
    """Record sections a stage returns (merged into the record by the pipeline).

    attacks: attack entries (see ``attacks.stage``); transfer: name -> matrix;
    fingerprints: fingerprint entries (see ``fingerprints.summary``);
    metrics: flat headline metrics (name -> float);
    higher_is_better: the direction of each of those metrics.
    """

    attacks: list[JsonObject] = field(default_factory=list)
    transfer: JsonObject = field(default_factory=dict)
    fingerprints: list[JsonObject] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    higher_is_better: dict[str, bool] = field(default_factory=dict)

    def merge(self, other: "StageOutput") -> None:
        self.attacks += other.attacks
        self.transfer.update(other.transfer)
        self.fingerprints += other.fingerprints
        self.metrics.update(other.metrics)
        self.higher_is_better.update(other.higher_is_better)


class Stage(Protocol):
    """A post-deployment stage.

    name: the timer name in the record's ``timings`` (``attack``, ``fingerprint``).
    """

    name: str

    def enabled(self, config: RunConfig) -> bool:
        """Whether the run asked for this stage."""
        ...

    def run(self, inp: StageInput) -> StageOutput:
        ...


@dataclass(frozen=True)
class ListedStage:
    """A :class:`Stage` that runs when the run's config lists at least one method under ``config_field``.

    name: timer name; config_field: a tuple field of :class:`RunConfig`
    (``attacks``, ``fingerprints``); run_stage: the stage's work.
    """

    name: str
    config_field: str
    run_stage: Callable[[StageInput], StageOutput]

    def enabled(self, config: RunConfig) -> bool:
        return bool(getattr(config, self.config_field))

    def run(self, inp: StageInput) -> StageOutput:
        return self.run_stage(inp)
