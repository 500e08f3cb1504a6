"""Quick per-layer parameter search for our kernels, with an on-disk database.

Also the searches of the depth-wise and Linear templates
(:func:`best_depthwise`, :func:`best_linear`) and the time of TVM's default
lowering of the same call (:func:`time_default_lowering`), all in the same
database.  Stride-2 convs are also timed in the stride-phase layout
(``best_tile(..., phased=True)``; keys of the strided layout are unchanged).

For every conv call the search measures the template at a few output tiles
(:func:`conv_tile_candidates`, sized to the target's vector registers: grid
tiles and, where the output rows allow, row tiles of 4- to 16-lane row
segments stored straight into the output; im2col tiles on small maps at
batch 1) for the compressed weights and for dense, on this machine (weights
over 1 MB timed streaming from memory, as in a model, see :func:`time_kernel`),
and keeps the fastest of each; the compressed kernel is used only if
it beats the dense one (per-layer no-regression fallback).  Results are cached
in a JSON database keyed by (layer spec, target, tvm version), so a second
compile of the same shapes does not re-measure.  A search costs seconds
(each candidate compiles in ~0.1 s and is timed over a few repeats).
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from compression.tvm_backend.kernels import ConvSpec, ConvTile, InputCopy, as_tile, conv_kernel, conv_output_shapes
from compression.tvm_backend.target import vector_registers

CONV_TEMPLATE = "t8"  # bumped when the conv template, its candidates or the search change (cached timings re-measured)
SEARCH_ROUNDS = 3  # conv tile search: candidates timed in this many interleaved rounds, median kept ...
SEARCH_ROUNDS_BELOW_MS = 1.0  # ... when the fastest first-round time is under this (short kernels are the noisy ones)
BATCH_ORDERS = "im2+il2+blk+pfi"  # batched calls (N > 1): image-major order, image-lane tiles, job blocks, input prefetch; keys carry this
DEPTHWISE_TILES = (8, 16, 32, 64)
DEPTHWISE_TEMPLATE = "dw3"  # bumped when the depth-wise template changes (cached timings re-measured)
LINEAR_TILES = (8, 16, 32)
LINEAR_ROW_BLOCKS = (1, 4, 8)


@dataclass
class Measured:
    tp: int
    ms: float
    tile: ConvTile | None = None  # conv template: the tile measured fastest (``tp`` is its positions)


def conv_tile_candidates(spec: ConvSpec, register_lanes: int = 16, threads: int = 1) -> tuple[ConvTile, ...]:
    """The conv tiles :func:`best_tile` measures for ``spec``, sized to the ISA's vector registers.

    ``register_lanes``: float32 lanes per vector register (16 on AVX-512 with
    32 registers, 8 on AVX2 with 16; :func:`~compression.tvm_backend.target.vector_registers`).

    AVX-512: grid tiles of 32 and 48 positions (8 and 16 too on small feature
    maps, under 64 positions) over the whole row-block (16-24 accumulator
    registers), and one row tile: the widest of 16, 8 or 4 lanes dividing the
    row width (``Wo``; ``Ho*Wo`` for an unpadded stride-1 1x1 conv), two
    vectors when they fit.  (A sweep over vgg16 and resnet18 layers found the
    other shapes never clearly faster.)

    Narrower registers (AVX2: 16 of 8 lanes): those tiles need 32-48
    registers and spill, 2-3x slower; the tiles instead keep at most 12
    accumulators: one 8-lane vector for all 8 filters of a row-block (``8x1``,
    grid and row), or 4 filters a job (``filters=4``) with 3 grid vectors or 2
    row vectors (a 16-lane row segment: one vector, two registers).  A sweep
    of vgg16's convs on a Zen 3 EPYC found one of these fastest on every layer.

    Batches (``spec.n > 1``): each tile also in the image-major job order
    (``ConvTile.image_major``): on resnet18's first stage at batch 32 the
    tile-outer order took 6.9-8.3 ms where 32 batch-1 calls took 4.15 ms
    (one image's input stays in L2 across the row-blocks, 32 images' do not);
    and image-lane tiles where the lanes divide the batch (``ConvTile.image_lanes``:
    a vector holds one position of 16 (AVX-512) or 8 images; on vgg16's 2x2 and
    4x4 layers at batch 32 they ran 1.6-3x faster than the position tiles).

    Batch 1, output planes up to 8x8: im2col tiles (:func:`_im2col_tiles`):
    with their compact copy they ran vgg16's dense 256-channel 8x8 layer
    20-37% faster, and its 512-channel 4x4 layers about 12% faster, than the
    best grid tile, which spends lanes on the padded-width grid's junk
    columns (bench/RESULTS.md section 3.0); compact sparse layers, whose copy
    still holds every column, mostly keep the other tiles.  Each im2col tile
    is also offered as a shifted tile (stride 1, :func:`_flat_plane_tiles`),
    which the search picks on most such sparse layers.

    Batch 1 with ``threads > 1``: each row tile also cut into ``threads`` row
    parts (``ConvTile.parts``): each thread then reads every weight, but only
    the input rows it wrote itself in the previous layer.  Offered on every
    layer, not only where the weights are smaller than the input: on resnet18
    at 0.8 and batch 1, letting the search pick them for the 8x8 layers too
    took the whole call from 1.455 to 1.413 ms (bench/RESULTS.md section 3.0).
    """
    width = spec.row_hw[1]
    lanes = next((v for v in (16, 8, 4) if width % v == 0), None)
    if register_lanes >= 16:
        grid = [ConvTile.grid(tp) for tp in ((8, 16, 32, 48) if spec.positions() < 64 else (32, 48))]
        rows = []
        if lanes is not None:
            rows = [ConvTile(lanes, 2, True) if ConvTile(lanes, 2, True).fits(spec) else ConvTile(lanes, 1, True)]
        return _with_row_parts(spec, _with_batch_tiles(spec, tuple(grid + rows + _flat_plane_tiles(spec, 16, threads)),
                                                        register_lanes), threads)
    half, vl = _half_block(spec), register_lanes
    tiles = [ConvTile(vl, 1, False), ConvTile(vl, 3, False, half)]
    if lanes is not None:
        seg = min(lanes, vl)
        tiles += [ConvTile(seg, 1, True), ConvTile(seg, 2, True, half)]
        if lanes > vl:
            tiles.append(ConvTile(lanes, 1, True, half))
    tiles += _flat_plane_tiles(spec, vl, threads)
    return _with_row_parts(spec, _with_batch_tiles(spec, tuple(t for t in tiles if t.fits(spec)), register_lanes),
                           threads)


def _plane_tiles(spec: ConvSpec, register_lanes: int, **kind) -> list[ConvTile]:
    """Batch 1, small output planes: tiles over the whole plane, flat (``kind``: ``im2col=True`` or ``shifted=True,
    parts=...``), of the widest lanes (<= one register) dividing ``Ho*Wo``; those that fit.

    One and two vectors over the whole row-block with 16-lane registers (8
    and 16 accumulators); with narrower ones, one vector for the whole
    row-block and two for half of it (at most 8 accumulators).
    """
    positions = spec.ho * spec.wo
    lanes = next((v for v in (16, 8, 4) if v <= register_lanes and positions % v == 0), None)
    if lanes is None:
        return []
    two = ConvTile(lanes, 2, **kind) if register_lanes >= 16 else ConvTile(lanes, 2, False, _half_block(spec), **kind)
    return [t for t in (ConvTile(lanes, 1, **kind), two) if t.fits(spec)]


def _flat_plane_tiles(spec: ConvSpec, register_lanes: int, threads: int) -> list[ConvTile]:
    """Batch 1, small output planes: the im2col tiles, and the same shapes as shifted tiles with ``threads`` parts.

    Shifted tiles (``ConvTile.shifted``: one copy per thread, no copy read by
    another core) ran vgg16's 0.9-sparse 512-channel 4x4 layer in 34 us
    against 64 for the best other tile, its 2x2 layers 22 against 31, at 0.8
    the 8x8 layers 27-35% faster, and resnet18's stride-2 convs 2-3x faster
    sparse and 5-40% dense (bench/RESULTS.md section 3.0, "shifted tiles").
    Stride 1 up to 8x8 planes (on 16x16 and larger the row-part tiles stay
    faster), strided convs up to 16x16 (:data:`~compression.tvm_backend.kernels.STRIDED_SHIFTED_MAX_POSITIONS`).
    """
    return (_plane_tiles(spec, register_lanes, im2col=True)
            + _plane_tiles(spec, register_lanes, shifted=True, parts=max(1, threads)))


def _with_row_parts(spec: ConvSpec, tiles: "tuple[ConvTile, ...]", threads: int) -> tuple[ConvTile, ...]:
    """``tiles`` and, at batch 1 on ``threads > 1``, each row tile cut into ``threads`` row parts (those that fit)."""
    if spec.n != 1 or threads < 2:
        return tiles
    return tiles + tuple(p for p in (replace(t, parts=threads) for t in tiles if t.rows) if p.fits(spec))


def _with_batch_tiles(spec: ConvSpec, tiles: "tuple[ConvTile, ...]", register_lanes: int = 16) -> tuple[ConvTile, ...]:
    """``tiles`` and, for a batch, each of them in the image-major order too, and the image-lane tiles (those that fit).

    Image-lane tiles: ``lanes`` = the register width (16 or 8), the whole
    row-block with 2 vectors, or half of it with 4 (AVX-512; 16 accumulators);
    AVX2: the whole row-block with 1 vector, or half of it with 2 (8).
    """
    if spec.n == 1:
        return tiles
    half, vl = _half_block(spec), min(16, register_lanes)
    lanes_tiles = ((ConvTile(vl, 2, image_lanes=True), ConvTile(vl, 4, filters=half, image_lanes=True)) if vl >= 16
                   else (ConvTile(vl, 1, image_lanes=True), ConvTile(vl, 2, filters=half, image_lanes=True)))
    return (tiles + tuple(t for t in (replace(t, image_major=True) for t in tiles) if t.fits(spec))
            + tuple(t for t in lanes_tiles if t.fits(spec)))


def _half_block(spec: ConvSpec) -> int:
    """``ConvTile.filters`` for half a row-block's filters (4 of r = 8); 0 (the whole block) when r cannot split."""
    return spec.r // 2 if spec.r % 2 == 0 and spec.r > 2 else 0


def unmeasured_tile(spec: ConvSpec, target: dict) -> ConvTile:
    """The conv tile used where nothing can be timed (cross-compilation): a grid tile that fits the registers.

    AVX-512 (and wider): 16 positions over the whole row-block (8 accumulators of
    16 lanes); narrower ISAs: 3 register-wide vectors for half the row-block's
    filters (12 accumulators, the AVX2 sweep's most frequent winner).
    """
    lanes = vector_registers(target)[0]
    if lanes >= 16:
        return ConvTile.grid(16)
    tile = ConvTile(lanes, 3, False, _half_block(spec))
    return tile if tile.fits(spec) else ConvTile(lanes, 1, False)


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


def _key(spec: ConvSpec, target: dict, sparse: bool, phased: bool = False) -> str:
    import tvm

    layout = "|phased" if phased and spec.stride > 1 else ""
    orders = f"|{BATCH_ORDERS}" if spec.n > 1 else ""  # batch-1 keys (and their timings) are unchanged
    return (f"{tvm.__version__}|{json.dumps(target, sort_keys=True)}|{spec.key()}|{'sparse' if sparse else 'dense'}"
            f"{layout}|{CONV_TEMPLATE}{orders}")


def db_key(target: dict, *parts: str) -> str:
    """A database key for the other kernels (depth-wise, linear, default lowering): version, target, parts."""
    import tvm

    return "|".join([tvm.__version__, json.dumps(target, sort_keys=True), *parts])


def time_kernel(spec: ConvSpec, tp: "int | ConvTile", target: dict, *, repeats: int = 5, number: int = 5,
                phased: bool = False, min_repeat_ms: int = 0) -> float:
    """Median milliseconds of one call of the template with random data.

    ``tp``: the tile (an int: the grid tile of that many positions);
    ``phased``: time the stride-phase layout instead (same for stride 1);
    ``min_repeat_ms``: raise ``number`` until one repeat lasts that long
    (0: exactly ``number`` calls per repeat).

    Weight-heavy calls (packed weights and offsets over ``STREAM_ABOVE_BYTES``)
    are timed as a model runs them, with weights that are not in cache: the
    calls rotate through copies of the weights, ``STREAM_BYTES`` in all, and
    each sample is the mean call of one rotation.  Timed with the same weights
    call after call, vgg16's 2x2 512-channel layers picked a tile that ran 25%
    slower in the model than the one that streams best (bench/RESULTS.md
    section 3.0).
    """
    import tvm

    tile = as_tile(tp)
    lib = _kernel_lib(spec, tile, bool(phased), json.dumps(target, sort_keys=True))
    dev = tvm.cpu()
    x, weights, bias = _kernel_inputs(spec, bool(phased), tile.input_copy)
    rng = np.random.default_rng(1)
    tail = [rng.standard_normal((spec.n, spec.co, spec.ho, spec.wo)).astype(np.float32)] if spec.residual else []
    tail += [np.zeros(shape, np.float32) for shape in conv_output_shapes(spec, tile, phased)]
    head = tvm.runtime.tensor(x, dev)
    rest = [tvm.runtime.tensor(a, dev) for a in [bias, *tail]]
    sets = [[head, tvm.runtime.tensor(v, dev), tvm.runtime.tensor(o, dev), *rest] for v, o in weights]
    if len(sets) == 1:
        ev = lib.mod.time_evaluator("main", dev, number=number, repeat=repeats, min_repeat_ms=int(min_repeat_ms))
        return float(np.median(ev(*sets[0]).results) * 1e3)
    fn = lib["main"]
    for args in sets:
        fn(*args)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for args in sets:
            fn(*args)
        samples.append((time.perf_counter() - start) / len(sets) * 1e3)
    return float(np.median(samples))


STREAM_ABOVE_BYTES = 1 << 20  # time_kernel: packed weights above this are timed streaming (rotated copies) ...
STREAM_BYTES = 64 << 20  # ... through this many bytes of copies (at most STREAM_COPIES)
STREAM_COPIES = 16


@functools.lru_cache(maxsize=2)
def _kernel_inputs(spec: ConvSpec, phased: bool, copy: InputCopy) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Random input, weight copies ``[(values, off)]`` (one, or a rotation for streaming) and bias for ``spec``."""
    rng = np.random.default_rng(0)
    x = rng.random((spec.n, spec.ci, spec.h, spec.w), dtype=np.float32)
    nbytes = spec.nb * spec.kk * (spec.r + 1) * 4
    copies = min(STREAM_COPIES, -(-STREAM_BYTES // nbytes)) if nbytes > STREAM_ABOVE_BYTES else 1
    weights = []
    for _ in range(copies):
        # realistic gather offsets: sorted random kept columns per row-block
        cols = np.sort(np.stack([rng.permutation(spec.k_total)[: spec.kk] for _ in range(spec.nb)]), axis=1)
        weights.append((rng.standard_normal((spec.nb, spec.kk, spec.r)).astype(np.float32),
                        spec.column_offsets(cols, phased, copy)))
    return x, weights, np.zeros(spec.nb * spec.r, np.float32)


@functools.lru_cache(maxsize=64)
def _kernel_lib(spec: ConvSpec, tile: ConvTile, phased: bool, target_json: str):
    """The compiled template for ``(spec, tile, phased)`` on a target (JSON): the search's rounds compile once."""
    return compile_prim(conv_kernel(spec, tile, phased=phased), json.loads(target_json))


def compile_prim(func, target: dict):
    import tvm

    with tvm.transform.PassContext(config={"tirx.disable_storage_rewrite": True}):
        return tvm.compile(tvm.IRModule({"main": func}), target=tvm.target.Target(target))


def best_tile(spec: ConvSpec, target: dict, db: TuningDB, *, sparse: bool,
              candidates: "tuple[int | ConvTile, ...] | None" = None, phased: bool = False) -> Measured:
    """Fastest tile for ``spec`` (cached in ``db``); ``phased``: the stride-phase layout.

    ``candidates``: tiles (ints are grid tiles); default
    :func:`conv_tile_candidates`.  The result's ``tile`` is the winner.
    """
    default = candidates is None
    if candidates is None:
        candidates = conv_tile_candidates(spec, vector_registers(target)[0], int(target.get("num-cores", 1)))
    tiles = tuple(t for t in (as_tile(c) for c in candidates) if t.fits(spec, phased))
    suffix = "" if default else "|" + ",".join(t.label for t in tiles)
    return _cached_tile_search(db, _key(spec, target, sparse, phased) + suffix, tiles, spec.positions(phased),
                               lambda tile: time_kernel(spec, tile, target, phased=phased), rounds=SEARCH_ROUNDS)


def _cached_tile_search(db: TuningDB, key: str, candidates: "tuple[int | ConvTile, ...]", positions: int,
                        time_tile, rounds: int = 1) -> Measured:
    """The fastest of ``candidates`` tiles by ``time_tile(tile) -> ms``, looked up in / stored to ``db`` under ``key``.

    Candidates are tile sizes (int) or conv tiles.  Grid tiles much wider
    than the ``positions`` of the feature map only add junk lanes and are
    skipped once one tile is timed (row and image-lane tiles never are).
    ``rounds``: when the fastest first-round time is under
    ``SEARCH_ROUNDS_BELOW_MS``, every remaining candidate is timed once per
    round, round after round (so a slow spell of the machine hits all of
    them), and the median of its rounds decides: one sample each picked a
    tile 40% slower than another on resnet18's 8x8 layers at batch 1
    (bench/RESULTS.md section 3.0).  Longer kernels (batches) keep one
    round: each sample is already a median over milliseconds, and three
    rounds took resnet18's batch-32 compile and tuning from 180 to 331 s.
    """
    hit = db.entries.get(key)
    if hit:
        tile = ConvTile.from_params(hit["tile"]) if "tile" in hit else None
        return Measured(int(hit["tp"]), float(hit["ms"]), tile)
    start = time.perf_counter()
    kept: list = []
    samples: list[list[float]] = []  # per kept candidate, its times round by round
    for cand in candidates:
        tile = cand if isinstance(cand, ConvTile) else None
        tp = tile.tp if tile is not None else int(cand)
        no_junk = tile is not None and (tile.rows or tile.image_lanes or tile.flat_plane)  # no junk lanes in these
        if tp > 2 * max(8, positions) and kept and not no_junk:
            continue
        kept.append(cand)
        samples.append([time_tile(cand)])
    assert kept
    extra = rounds - 1 if min(v[0] for v in samples) < SEARCH_ROUNDS_BELOW_MS else 0
    for _ in range(extra):
        for i, cand in enumerate(kept):
            samples[i].append(time_tile(cand))
    i_best = min(range(len(kept)), key=lambda i: float(np.median(samples[i])))
    cand = kept[i_best]
    tile = cand if isinstance(cand, ConvTile) else None
    best = Measured(tile.tp if tile is not None else int(cand), float(np.median(samples[i_best])), tile)
    db.entries[key] = {"tp": best.tp, "ms": best.ms, "search_seconds": round(time.perf_counter() - start, 3),
                       **({"tile": best.tile.params()} if best.tile is not None else {})}
    return best


def _time_prim(func, shapes: list[tuple[int, ...]], target: dict) -> float:
    """Median ms of a PrimFunc on random float32 arguments of ``shapes``."""
    import tvm

    lib = compile_prim(func, target)
    rng = np.random.default_rng(0)
    dev = tvm.cpu()
    tensors = [tvm.runtime.tensor(rng.standard_normal(s).astype(np.float32), dev) for s in shapes]
    start = time.perf_counter()
    lib["main"](*tensors)
    once = max(time.perf_counter() - start, 1e-6)
    number = int(min(20, max(1, 0.05 / once)))
    return float(np.median(lib.mod.time_evaluator("main", dev, number=number, repeat=5)(*tensors).results) * 1e3)


def best_depthwise(spec, target: dict, db: TuningDB, candidates: "tuple[int | ConvTile, ...] | None" = None) -> Measured:
    """Fastest tile of the depth-wise template for ``spec`` (a ``DepthwiseSpec``; cached in ``db``).

    Default candidates: the grid tiles ``DEPTHWISE_TILES`` and the row tile
    (when ``Wo`` has one, see :func:`depthwise_row_lanes`).  The result's
    ``tile`` is set for a row tile (None for a grid tile).
    """
    from compression.tvm_backend.kernels_layers import depthwise_kernel, depthwise_output_shapes, depthwise_row_lanes

    if candidates is None:
        lanes = depthwise_row_lanes(spec)
        candidates = DEPTHWISE_TILES + ((ConvTile(lanes, 1, True),) if lanes else ())
        key = db_key(target, spec.key(), DEPTHWISE_TEMPLATE)
    else:
        key = db_key(target, spec.key(), DEPTHWISE_TEMPLATE, ",".join(map(str, candidates)))

    def time_tile(tp) -> float:
        shapes = [(spec.n, spec.c, spec.h, spec.w), (spec.c, spec.k * spec.k), (spec.c,),
                  *depthwise_output_shapes(spec, tp)]
        return _time_prim(depthwise_kernel(spec, tp), shapes, target)

    return _cached_tile_search(db, key, candidates, spec.positions(), time_tile)


def best_linear(spec, target: dict, db: TuningDB, tiles: tuple[int, ...] = LINEAR_TILES,
                row_blocks: tuple[int, ...] = LINEAR_ROW_BLOCKS) -> tuple[Measured, int, int]:
    """Fastest ``(OT, RB)`` of the Linear template for ``spec`` (a ``LinearSpec``; cached in ``db``).

    Returns ``(Measured(tp=OT, ms), OT, RB)``; ``RB`` runs over the
    ``row_blocks`` that divide the batch.
    """
    from compression.tvm_backend.kernels_layers import linear_kernel, row_block_candidates

    key = db_key(target, spec.key())
    hit = db.entries.get(key)
    if hit:
        return Measured(int(hit["ot"]), float(hit["ms"])), int(hit["ot"]), int(hit["rb"])
    best: tuple[Measured, int, int] | None = None
    start = time.perf_counter()
    rbs = [rb for rb in row_blocks if rb in row_block_candidates(spec.n)] or [1]
    for ot in tiles:
        if ot > 2 * max(8, spec.o) and best is not None:
            continue
        for rb in rbs:
            nt = spec.n_tiles(ot)
            shapes = [(spec.n, spec.i), (nt, spec.i, ot), (nt * ot,), (spec.n, nt * ot), (spec.n, spec.o)]
            ms = _time_prim(linear_kernel(spec, ot, rb), shapes, target)
            if best is None or ms < best[0].ms:
                best = (Measured(ot, ms), ot, rb)
    assert best is not None
    db.entries[key] = {"ot": best[1], "rb": best[2], "ms": best[0].ms,
                       "search_seconds": round(time.perf_counter() - start, 3)}
    return best


def default_lowering_module(spec, weight: np.ndarray, bias: np.ndarray | None):
    """A Relax module of one call as the model has it, for TVM's default lowering.

    ``spec``: a ``DepthwiseSpec`` (``conv2d`` groups = C, weight ``[C, 1, k,
    k]``) or a ``LinearSpec`` (``matmul`` with weight ``[I, O]``); then the
    bias ``add`` and the activation (``relu`` / ``clip(0, 6)``) when present.
    """
    from tvm import relax

    from compression.tvm_backend.kernels_layers import DepthwiseSpec

    bb = relax.BlockBuilder()
    if isinstance(spec, DepthwiseSpec):
        x = relax.Var("x", relax.TensorType((spec.n, spec.c, spec.h, spec.w), "float32"))
    else:
        x = relax.Var("x", relax.TensorType((spec.n, spec.i), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            if isinstance(spec, DepthwiseSpec):
                lv = bb.emit(relax.op.nn.conv2d(x, relax.const(weight.astype(np.float32)), strides=spec.stride,
                                                padding=spec.pad, groups=spec.c, out_dtype="float32"))
                shape = (1, spec.c, 1, 1)
            else:
                lv = bb.emit(relax.op.matmul(x, relax.const(weight.astype(np.float32)), out_dtype="float32"))
                shape = (spec.o,)
            if bias is not None:
                lv = bb.emit(relax.op.add(lv, relax.const(np.asarray(bias, np.float32).reshape(shape))))
            if spec.act == "relu":
                lv = bb.emit(relax.op.nn.relu(lv))
            elif spec.act == "relu6":
                lv = bb.emit(relax.op.clip(lv, 0.0, 6.0))
            out = bb.emit_output(lv)
        bb.emit_func_output(out)
    return bb.get()


def time_default_lowering(spec, weight: np.ndarray, bias: np.ndarray | None, target: dict, db: TuningDB) -> float:
    """Median ms of TVM's default lowering (``tvm.compile``, opt level 3) of one call (cached in ``db``).

    Keyed by the spec and whether a bias is added (the weight values do not
    change the time).
    """
    import tvm
    from tvm import relax

    key = db_key(target, spec.key(), "bias" if bias is not None else "nobias", "tvm-default")
    hit = db.entries.get(key)
    if hit:
        return float(hit["ms"])
    start = time.perf_counter()
    mod = default_lowering_module(spec, weight, bias)
    with tvm.transform.PassContext(opt_level=3):
        exe = tvm.compile(mod, target=tvm.target.Target(target))
    dev = tvm.cpu()
    vm = relax.VirtualMachine(exe, dev)
    shape = [int(d) for d in mod["main"].params[0].ty.shape]
    x = tvm.runtime.tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32), dev)
    t0 = time.perf_counter()
    vm["main"](x)
    once = max(time.perf_counter() - t0, 1e-6)
    number = int(min(20, max(1, 0.05 / once)))
    ms = float(np.median(vm.time_evaluator("main", dev, number=number, repeat=5)(x).results) * 1e3)
    db.entries[key] = {"ms": ms, "search_seconds": round(time.perf_counter() - start, 3)}
    return ms
