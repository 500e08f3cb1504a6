"""Quick per-layer parameter search for our kernels, with an on-disk database.

For every conv call the search measures the template at a few tile sizes
(``TP`` in {8, 16, 32}) for the compressed weights and for dense, on this
machine, and keeps the fastest of each; the compressed kernel is used only if
it beats the dense one (per-layer no-regression fallback).  Results are cached
in a JSON database keyed by (layer spec, target, tvm version), so a second
compile of the same shapes does not re-measure.  A search costs seconds
(each candidate compiles in ~0.1 s and is timed over a few repeats).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from compression.tvm_backend.kernels import ConvSpec, conv_kernel

TILE_CANDIDATES = (8, 16, 32)


@dataclass
class Measured:
    tp: int
    ms: float


class TuningDB:
    """JSON file of measured kernel times; ``path=None`` keeps it in memory."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        if path and os.path.exists(path):
            try:
                self.entries = json.loads(open(path).read()).get("entries", {})
            except (OSError, ValueError, AttributeError):
                self.entries = {}

    def save(self) -> None:
        """Merge this database's entries into the file (locked read-merge-write; other writers' entries kept)."""
        if not self.path:
            return
        from suite.core.files import update_json

        def merge(current: Any) -> dict[str, Any]:
            theirs = current.get("entries") if isinstance(current, dict) else None
            return {"entries": {**(theirs if isinstance(theirs, dict) else {}), **self.entries}}

        self.entries = update_json(self.path, merge)["entries"]


def _key(spec: ConvSpec, target: dict, sparse: bool) -> str:
    import tvm

    return f"{tvm.__version__}|{json.dumps(target, sort_keys=True)}|{spec.key()}|{'sparse' if sparse else 'dense'}"


def time_kernel(spec: ConvSpec, tp: int, target: dict, *, repeats: int = 5, number: int = 5) -> float:
    """Median milliseconds of one call of the template with random data."""
    import tvm

    func = conv_kernel(spec, tp)
    lib = compile_prim(func, target)
    rng = np.random.default_rng(0)
    dev = tvm.cpu()
    args = [
        rng.random((spec.n, spec.ci, spec.h, spec.w), dtype=np.float32),
        rng.standard_normal((spec.nb, spec.kk, spec.r)).astype(np.float32),
        np.zeros((spec.nb, spec.kk), np.int32),  # replaced below by realistic offsets
        np.zeros(spec.nb * spec.r, np.float32),
        np.zeros((spec.n, spec.scratch_len(tp)), np.float32),
        np.zeros((spec.n, spec.nb * spec.r, -(-spec.positions() // tp) * tp), np.float32),
        np.zeros((spec.n, spec.co, spec.ho, spec.wo), np.float32),
    ]
    # realistic gather offsets: sorted random kept columns per row-block
    cols = np.sort(np.stack([rng.permutation(spec.k_total)[: spec.kk] for _ in range(spec.nb)]), axis=1)
    ci, rem = cols // (spec.kh * spec.kw), cols % (spec.kh * spec.kw)
    args[2] = (ci * spec.hp * spec.wp + (rem // spec.kw) * spec.wp + rem % spec.kw).astype(np.int32)
    tensors = [tvm.runtime.tensor(a, dev) for a in args]
    ev = lib.mod.time_evaluator("main", dev,
                                number=number, repeat=repeats)
    return float(np.median(ev(*tensors).results) * 1e3)


def compile_prim(func, target: dict):
    import tvm

    with tvm.transform.PassContext(config={"tirx.disable_storage_rewrite": True}):
        return tvm.compile(tvm.IRModule({"main": func}), target=tvm.target.Target(target))


def best_tile(spec: ConvSpec, target: dict, db: TuningDB, *, sparse: bool,
              candidates: tuple[int, ...] = TILE_CANDIDATES) -> Measured:
    """Fastest tile size for ``spec`` (cached in ``db``)."""
    key = _key(spec, target, sparse)
    hit = db.entries.get(key)
    if hit:
        return Measured(int(hit["tp"]), float(hit["ms"]))
    best: Measured | None = None
    start = time.perf_counter()
    for tp in candidates:
        if tp > 2 * max(8, spec.positions()) and best is not None:
            continue  # tiles much wider than the feature map only add junk lanes
        ms = time_kernel(spec, tp, target)
        if best is None or ms < best.ms:
            best = Measured(tp, ms)
    assert best is not None
    db.entries[key] = {"tp": best.tp, "ms": best.ms, "search_seconds": round(time.perf_counter() - start, 3)}
    return best
