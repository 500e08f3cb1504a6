"""Seeded, stratified split assignment.

Uses ``numpy.random.default_rng`` (PCG64), whose streams are specified and
identical across platforms, so a seed pins the split on every machine.
"""

from __future__ import annotations

import hashlib

import numpy as np

from suite.core.errors import ConfigError


def stratified_split(
    labels: np.ndarray, fractions: dict[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Assign every sample to one named split, per class in the given proportions.

    labels: ``[N]`` integer class labels.
    fractions: split name -> fraction; must sum to 1 (within 1e-6).
    Returns split name -> sorted-then-shuffled ``int64`` index array; the arrays
    are disjoint and cover ``range(N)``.  The order inside a split is a seeded
    shuffle, so ``split[:n]`` is a class-mixed prefix.
    """
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6 or any(f < 0 for f in fractions.values()):
        raise ConfigError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    names = list(fractions)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        bounds = np.round(np.cumsum([fractions[k] for k in names]) * len(idx)).astype(int)
        start = 0
        for name, stop in zip(names, bounds):
            parts[name].append(idx[start:stop])
            start = stop
    out: dict[str, np.ndarray] = {}
    for name in names:
        merged = np.sort(np.concatenate(parts[name])) if parts[name] else np.zeros(0, np.int64)
        out[name] = merged[rng.permutation(len(merged))].astype(np.int64)
    return out


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(len(labels))`` into ``(keep, holdout)``, stratified by class."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"holdout fraction must be in [0, 1), got {fraction}")
    parts = stratified_split(labels, {"keep": 1.0 - fraction, "holdout": fraction}, seed)
    return parts["keep"], parts["holdout"]


def indices_digest(splits: dict[str, np.ndarray]) -> str:
    """Short sha256 of split index arrays, recorded next to results."""
    h = hashlib.sha256()
    for name in sorted(splits):
        h.update(name.encode())
        h.update(np.asarray(splits[name], dtype=np.int64).tobytes())
    return h.hexdigest()[:16]
