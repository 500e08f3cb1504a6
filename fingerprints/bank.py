"""Cached fingerprints of an owner and their evaluation over the owner's suspect zoo.

Layout under ``<cache_dir>/fingerprints/<owner sha256[:16]>/<method>-<digest[:16]>-s<seed>/``:

* ``fingerprints.npz`` / ``fingerprints.json``: the :class:`FingerprintSet`
  (the digest covers the method's settings and the source's pixels);
* ``eval-<zoo key[:16]>-<access>.json``: every zoo member's match rate, the
  calibration / evaluation split of the negatives and the calibrated threshold
  (what ``suite audit`` needs besides the fingerprints).

Both are written atomically (a :mod:`suite.core.store` entry for the set,
``atomic_write_text`` for the evaluation, a sidecar of the entry); a corrupt
set is regenerated.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fingerprints.base import FingerprintMethod, FingerprintSet, settings_digest
from fingerprints.metrics import calibrate_threshold, split_negatives
from fingerprints.verify import match_scores
from suite.core.cache import atomic_write_text
from suite.core.errors import ArtifactError
from suite.core.store import Store

EVAL_FORMAT = 1
#: files added to a published fingerprint set: its evaluations (and their atomic-write temporaries)
EVAL_SIDECARS = ("eval-*.json", ".eval-*.tmp")
TARGET_FPR = 0.01


def _bank_name(owner_sha256: str, method: FingerprintMethod, seed: int, source_sha256: str) -> str:
    digest = settings_digest({"method": method.digest(), "source": source_sha256})
    return f"{owner_sha256[:16]}/{method.name}-{digest[:16]}-s{seed}"


def bank_dir(cache_dir: str | os.PathLike, owner_sha256: str, method: FingerprintMethod, seed: int,
             source_sha256: str) -> Path:
    """Where the fingerprints of (owner, method settings, seed, source) live (the source fixes the input shape)."""
    return Path(cache_dir) / "fingerprints" / _bank_name(owner_sha256, method, seed, source_sha256)


def get_fingerprints(method: FingerprintMethod, owner_model, source, *, owner_sha256: str, cache_dir: str,
                     seed: int, device: str = "cpu",
                     log: Callable[[str], None] = lambda m: None) -> tuple[FingerprintSet, Path, bool]:
    """The cached fingerprint set of (owner, method, seed), generating it on a miss; ``(set, dir, hit)``."""
    source_sha256 = source.fingerprint()
    key = {"owner": owner_sha256, "method": method.digest(), "source": source_sha256, "seed": seed}

    def build(tmp: Path) -> FingerprintSet:
        log(f"fingerprints: generating {method.name} ({method.settings.get('count')} requested)")
        fps = method.generate(owner_model, source, seed=seed, device=device)
        fps.meta = {**fps.meta, "owner_sha256": owner_sha256, "seed": seed}
        fps.save(tmp)
        return fps

    got = Store(cache_dir, "fingerprints").get_or_build(
        key, build, FingerprintSet.load, name=_bank_name(owner_sha256, method, seed, source_sha256),
        corrupt=(ArtifactError,), legacy=True, sidecars=EVAL_SIDECARS,
        warn=lambda entry, why: log(f"warning: cached fingerprints {entry} unusable ({why}); regenerating them"))
    fps = got.value
    if got.hit:
        return fps, got.path, True
    log(f"fingerprints: {method.name}: {len(fps)} kept in {fps.generation_seconds:.1f} s")
    return fps, got.path, False


@dataclass
class Evaluation:
    """Match rates of every zoo member for one fingerprint set, with the calibrated threshold."""

    method: str
    access: str
    queries: int
    members: list[dict[str, Any]]       # id, role, family, accuracy, rate
    calibration: list[str]              # negative ids the threshold was calibrated on
    evaluation: list[str]               # held-out negative ids (false positives counted here)
    threshold: float
    seconds: float
    path: Path | None = None

    def rates(self, role: str, ids: list[str] | None = None) -> list[float]:
        keep = set(ids) if ids is not None else None
        return [m["rate"] for m in self.members if m["role"] == role and (keep is None or m["id"] in keep)]

    def as_dict(self) -> dict[str, Any]:
        return {"format": EVAL_FORMAT, "method": self.method, "access": self.access, "queries": self.queries,
                "members": self.members, "calibration": self.calibration, "evaluation": self.evaluation,
                "threshold": self.threshold, "target_fpr": TARGET_FPR, "seconds": self.seconds}

    @classmethod
    def load(cls, path: Path) -> "Evaluation":
        try:
            d = json.loads(path.read_text())
            if d.get("format") != EVAL_FORMAT:
                raise ValueError("format")
            return cls(d["method"], d["access"], int(d["queries"]), d["members"], d["calibration"],
                       d["evaluation"], float(d["threshold"]), float(d.get("seconds", 0.0)), path)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ArtifactError(f"fingerprint evaluation {path} unreadable ({err.__class__.__name__})") from None


def encode_scores(scores: list[float]) -> str | list[float]:
    """Per-fingerprint scores of one member, compactly: ``"0110..."`` for label matches, else rounded floats."""
    if all(s in (0.0, 1.0) for s in scores):
        return "".join("1" if s else "0" for s in scores)
    return [round(float(s), 4) for s in scores]


def decode_scores(value: str | list[float] | None) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [1.0 if c == "1" else 0.0 for c in value]
    return [float(v) for v in value]


def nearest_members(scores: list[float], members: list[dict[str, Any]],
                    roles: tuple[str, ...] = ("positive", "extraction")) -> dict[str, Any] | None:
    """The zoo member whose per-fingerprint answers agree most with ``scores`` (1 - mean |difference|).

    Returns ``{"member", "kind", "family", "similarity", "by_kind", "tied_kinds"}`` (``by_kind``: the best
    similarity per family kind; ``tied_kinds``: every kind reaching the best similarity, the first member
    found wins a tie), or None when the evaluation holds no per-fingerprint scores (written before they were kept).
    """
    best: dict[str, Any] | None = None
    by_kind: dict[str, float] = {}
    for m in members:
        if m.get("role") not in roles:
            continue
        other = decode_scores(m.get("scores"))
        if other is None or len(other) != len(scores) or not scores:
            continue
        sim = 1.0 - sum(abs(a - b) for a, b in zip(scores, other)) / len(scores)
        kind = str(m["family"].get("kind", "?"))
        by_kind[kind] = max(by_kind.get(kind, 0.0), round(sim, 4))
        if best is None or sim > best["similarity"]:
            best = {"member": m["id"], "kind": kind, "family": m["family"], "similarity": round(sim, 4)}
    if best is None:
        return None
    best["by_kind"] = dict(sorted(by_kind.items(), key=lambda kv: -kv[1]))
    # near-lossless copies (int8, fp16, compiled, lightly pruned) answer like the owner on every fingerprint:
    # then several kinds tie and the hint cannot tell them apart; say so
    best["tied_kinds"] = [k for k, v in best["by_kind"].items() if v >= best["similarity"] - 1e-9]
    return best


def eval_path(bank: Path, zoo_key: str, access: str) -> Path:
    return bank / f"eval-{zoo_key[:16]}-{access}.json"


def evaluate_on_zoo(fps: FingerprintSet, zoo, *, access: str = "label", seed: int = 0,
                    log: Callable[[str], None] = lambda m: None) -> Evaluation:
    """Query every zoo member with ``fps`` (predictor interface only), split the negatives, calibrate."""
    return evaluate_many_on_zoo([fps], zoo, access=access, seed=seed, log=log)[0]


def evaluate_many_on_zoo(sets: list[FingerprintSet], zoo, *, access: str = "label", seed: int = 0,
                         log: Callable[[str], None] = lambda m: None) -> list[Evaluation]:
    """:func:`evaluate_on_zoo` for several fingerprint sets, each member loaded once for all of them.

    A compiled member is an isolated worker process and an eager one a
    model file: opening each once and asking it every set's queries halves
    the evaluation of a two-method run.  ``seconds`` of each evaluation is
    the shared wall time split in proportion to the set's queries.
    """
    start = time.perf_counter()
    members: list[list[dict[str, Any]]] = [[] for _ in sets]
    for m in zoo.members:
        with zoo.predictor(m) as pred:
            for i, fps in enumerate(sets):
                v = match_scores(pred, fps, access)
                members[i].append({"id": m.id, "role": m.role, "family": m.family, "accuracy": m.accuracy,
                                   "rate": round(v.rate, 6), "scores": encode_scores(v.scores)})
    wall = time.perf_counter() - start
    total = max(1, sum(len(f) for f in sets))
    out = []
    origins = {m.id: str(m.family["origin"]) for m in zoo.members
               if m.role == "negative" and "origin" in m.family}
    for fps, rows in zip(sets, members):
        neg_ids = [m["id"] for m in rows if m["role"] == "negative"]
        cal, ev = split_negatives(neg_ids, seed, origins or None)  # stratified by origin when known
        cal_rates = [m["rate"] for m in rows if m["id"] in set(cal)]
        threshold = calibrate_threshold(cal_rates, len(fps), TARGET_FPR)
        seconds = round(wall * max(1, len(fps)) / total, 3)
        out.append(Evaluation(fps.method, access, len(fps), rows, cal, ev, threshold, seconds))
    names = ", ".join(f.method for f in sets)
    log(f"fingerprints: {names} evaluated on {len(zoo.members)} zoo members in {wall:.1f} s")
    return out


def get_evaluations(sets: list[tuple[FingerprintSet, Path]], zoo, zoo_key: str, *, access: str = "label",
                    seed: int = 0, fresh: bool = False,
                    log: Callable[[str], None] = lambda m: None) -> list[Evaluation]:
    """:func:`get_evaluation` for several ``(fingerprints, bank)``: the cached ones loaded, the rest in one pass."""
    out: list[Evaluation | None] = [None] * len(sets)
    todo = []
    for i, (fps, bank) in enumerate(sets):
        path = eval_path(bank, zoo_key, access)
        if path.exists() and not fresh:
            try:
                out[i] = Evaluation.load(path)
                continue
            except ArtifactError as err:
                log(f"warning: {err}; re-evaluating")
        todo.append(i)
    if todo:
        for i, ev in zip(todo, evaluate_many_on_zoo([sets[i][0] for i in todo], zoo, access=access, seed=seed,
                                                    log=log)):
            path = eval_path(sets[i][1], zoo_key, access)
            atomic_write_text(path, json.dumps({**ev.as_dict(), "zoo": str(zoo.directory)}, indent=1) + "\n")
            ev.path = path
            out[i] = ev
    return [ev for ev in out if ev is not None]


def get_evaluation(fps: FingerprintSet, bank: Path, zoo, zoo_key: str, *, access: str = "label", seed: int = 0,
                   fresh: bool = False, log: Callable[[str], None] = lambda m: None) -> Evaluation:
    """Cached :func:`evaluate_on_zoo` (recomputed when ``fresh`` or unreadable)."""
    path = eval_path(bank, zoo_key, access)
    if path.exists() and not fresh:
        try:
            return Evaluation.load(path)
        except ArtifactError as err:
            log(f"warning: {err}; re-evaluating")
    ev = evaluate_on_zoo(fps, zoo, access=access, seed=seed, log=log)
    atomic_write_text(path, json.dumps({**ev.as_dict(), "zoo": str(zoo.directory)}, indent=1) + "\n")
    ev.path = path
    return ev
