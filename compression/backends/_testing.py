"""Test-only runtimes for exercising :mod:`compression.backends.artifact` (not for real use).

* :class:`SleepyPredictor` sleeps ``manifest["sleep"]`` seconds per ``predict``
  and returns logits ``[N, K]`` with ``logits[n, k] = (k + 1) * mean(x[n])``.
* :class:`CrashingPredictor` kills its own process with exit code 3 in ``predict``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import torch

from compression.backends.artifact import write_manifest


class SleepyPredictor:
    """Deterministic toy runtime; sleeps ``manifest.get("sleep", 0)`` s per call."""

    differentiable = False

    def __init__(self, artifact_dir: str, manifest: dict[str, Any]) -> None:
        self.input_shape = tuple(manifest["input_shape"])
        self.num_classes = int(manifest["num_classes"])
        self.sleep = float(manifest.get("sleep", 0.0))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.sleep)
        scale = torch.arange(1, self.num_classes + 1, dtype=torch.float32)
        return x.float().flatten(1).mean(1, keepdim=True) * scale


class CrashingPredictor(SleepyPredictor):
    """Runtime that dies like a segfaulting compiled library would (exit code 3)."""

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        print("CrashingPredictor: crashing on purpose", file=sys.stderr, flush=True)
        os._exit(3)


def write_fake_artifact(artifact_dir: str | os.PathLike, runtime_class: str = "SleepyPredictor",
                        input_shape: tuple[int, int, int] = (3, 8, 8), num_classes: int = 4,
                        **extra: Any) -> dict[str, Any]:
    """Create an artifact directory served by a class of this module; ``extra`` goes into the manifest."""
    os.makedirs(artifact_dir, exist_ok=True)
    return write_manifest(artifact_dir, {"backend": "fake", "runtime": f"{__name__}:{runtime_class}",
                                         "input_shape": list(input_shape), "num_classes": num_classes,
                                         **extra})
