"""Verification: query a suspect with fingerprints through the predictor interface only.

``match_scores(predictor, fps, access)`` sends ``fps.x`` once (``len(fps)``
queries) and returns one score per fingerprint:

* ``access="label"`` (default): 1.0 when the suspect's top-1 label equals the
  fingerprint label, else 0.0 -- only the argmax of the answer is used;
* ``access="prob"``: the softmax probability the suspect gives the
  fingerprint label.

The match rate is the mean score.  Sets marked ``meta["scoring"] ==
"correlation"`` (the SAC-style baselines) are scored by
:func:`correlation_verification` instead: one score per sample, the
agreement of the suspect's output-correlation row with the owner's.
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
    if fps.meta.get("scoring") == "correlation":
        return correlation_verification(predictor, fps, access, batch_size)
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


def correlation_verification(predictor, fps: FingerprintSet, access: str, batch_size: int = 256) -> Verification:
    """SAC-style sets (:mod:`fingerprints.baselines`): per-sample agreement of the output correlation matrices."""
    from fingerprints.baselines import correlation_scores, owner_outputs, suspect_outputs

    with torch.no_grad():
        logits = torch.cat([predictor.predict(fps.x[i:i + batch_size]).detach().float().cpu()
                            for i in range(0, len(fps), batch_size)]) if len(fps) else torch.zeros(0, 1)
    if not len(fps):
        return Verification([], 0)
    ref = owner_outputs(fps, access, int(logits.shape[1]))
    return Verification(correlation_scores(suspect_outputs(logits, access), ref), len(fps))
