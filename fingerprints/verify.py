"""Verification: query a suspect with fingerprints through the predictor interface only.

``match_scores(predictor, fps, access)`` sends ``fps.x`` once (``len(fps)``
queries) and returns one score per fingerprint:

* ``access="label"`` (default): 1.0 when the suspect's top-1 label equals the
  fingerprint label, else 0.0 -- only the argmax of the answer is used;
* ``access="prob"``: the softmax probability the suspect gives the
  fingerprint label.

The match rate is the mean score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fingerprints.base import FingerprintSet

ACCESS = ("label", "prob")


@dataclass
class Verification:
    """Result of querying one suspect: per-fingerprint scores, their mean and the query count."""

    scores: list[float]
    queries: int

    @property
    def rate(self) -> float:
        return float(sum(self.scores) / len(self.scores)) if self.scores else 0.0

    @property
    def matches(self) -> int:
        return int(sum(1 for s in self.scores if s >= 0.5))


def match_scores(predictor, fps: FingerprintSet, access: str = "label", batch_size: int = 256) -> Verification:
    """Query ``predictor`` with every fingerprint once; see the module docstring."""
    if access not in ACCESS:
        raise ValueError(f"access must be one of {ACCESS}, got {access!r}")
    outs = []
    with torch.no_grad():
        for i in range(0, len(fps), batch_size):
            logits = predictor.predict(fps.x[i:i + batch_size]).detach().float().cpu()
            if access == "label":
                outs.append((logits.argmax(1) == fps.y[i:i + batch_size]).float())
            else:
                outs.append(torch.softmax(logits, 1).gather(1, fps.y[i:i + batch_size, None])[:, 0])
    scores = torch.cat(outs).tolist() if outs else []
    return Verification([float(s) for s in scores], len(fps))
