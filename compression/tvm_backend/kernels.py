"""Our row-block gather convolution kernel, as a TIR template.

Every conv with ``groups == 1`` (dense or pruned) runs through this one
template, so "TVM dense" and "TVM compressed" get the same schedule effort.

Data layout (batch ``N``, input ``[N, Ci, H, W]``, output ``[N, Co, Ho, Wo]``):

* ``xp``  -- the zero-padded input flattened per image, ``[N, L]`` with
  ``L = Ci*Hp*Wp + tail``; position ``(c, h, w)`` is at ``c*Hp*Wp + h*Wp + w``.
* outputs are computed on the *padded width* grid ``p = oh*Wp + ow`` (columns
  ``ow >= Wo`` are junk and dropped), so for stride 1 consecutive ``p`` read
  consecutive ``xp`` addresses and the tile loads are plain vector loads even
  for 2x2 feature maps.
* weights: ``values [nb, Kk, r]`` and ``off [nb, Kk]`` (int32): row-block ``b``
  (``r`` output channels) keeps ``Kk`` GEMM columns; ``off[b, k] = ci*Hp*Wp +
  ky*Wp + kx`` of its k-th kept column.  ``Y[b*r+i, p] = bias + sum_k
  values[b,k,i] * xp[off[b,k] + p*stride]``.  A dense layer is the same with
  all ``K = Ci*kh*kw`` columns kept.

Stride-2 variant without strided loads (``phased=True``): the padded input
is split into its stride phases (space-to-depth of ``xp``: plane ``(py,
px)`` holds ``xp[:, py::s, px::s]``, each ``Hq x Wq`` with ``Hq =
ceil(Hp/s)``, ``Wq = ceil(Wp/s)``; only the ``min(s, kh) x min(s, kw)``
phases some tap reads are stored, so a 1x1 stride-2 conv keeps one plane),
planes stored one after the other, each ``[Ci, Hq, Wq]``, plane index
``(ky%s)*min(s, kw) + kx%s``.  Outputs live on the ``Wq``-wide grid ``p =
oh*Wq + ow``, and kept column ``(ci, ky, kx)`` reads ``xph[off + p]`` with
``off = plane*Ci*Hq*Wq + ci*Hq*Wq + (ky//s)*Wq + kx//s`` -- consecutive
addresses, exactly like stride 1 (for ``s == 1`` both layouts coincide).
The row-block (sparse) format is unchanged: only the offsets differ.

Schedule (hand-written template): parallel over (row-block, tile), row-block
outer so each thread streams its own row-blocks' weights once per call (tile
outer for a batch whose input outweighs the weights, see
:func:`tile_outer_order`; other batches in blocks of row-blocks whose
weights fit in half the L2, tile by tile within a block, see
:func:`job_block`; or, a tile option for batches, image-major: per
image, its padded copy and then its jobs, row-block outer, while the copy is
in cache, in a one-image scratch); an
``r x V`` tile of ``VW``-lane vectors lives in registers (stack allocation),
the reduction over kept columns is unrolled by ``U``, each step is ``V``
vector loads of ``xp`` and ``r * V`` broadcast-FMAs; every step also asks
for the weights and offsets ``PREFETCH_BYTES`` ahead (software prefetch: a
batch-1 layer's weights come from memory, not cache, and without it the
512-channel layers of vgg16 streamed them at 10-13 GB/s where ONNX Runtime
reached 17-33); a batch's steps also prefetch the input vectors of the
column ``INPUT_PREFETCH_COLUMNS`` ahead (its offsets jump by a channel plane
of the whole batch, which no hardware prefetcher follows: with the job
blocks, vgg16's 512-channel 4x4 layer at batch 32 went from 13.6 to 8.3-9.4
ms).  Three kinds of tile (:class:`ConvTile`, picked per layer by
measurement, see :mod:`compression.tvm_backend.tuning`):

* grid tiles: ``V * VW`` consecutive positions of one image's output grid
  (junk columns included), written to a scratch ``acc`` and copied into
  ``y`` by a second pass (which drops the junk columns);
* row tiles (``Wo % VW == 0``): each vector is a ``VW``-wide segment of one
  output row, of any image, stored straight into ``y`` -- no junk lanes, no
  second pass, and an unpadded stride-1 conv reads ``x`` itself (no copy);
  an unpadded stride-1 1x1 conv treats each channel plane as one row of
  ``Ho*Wo`` positions (so a 4x4 map is one 16-lane vector);
* im2col tiles (batch 1, output planes up to ``IM2COL_MAX_POSITIONS``): the
  input is first copied into im2col order (``Ho*Wo`` floats per GEMM column,
  its own offsets), and the vectors cover the output plane flat -- any
  stride, every lane a real output.
* shifted tiles (batch 1, output planes up to ``IM2COL_MAX_POSITIONS``,
  strided convs up to ``STRIDED_SHIFTED_MAX_POSITIONS``): every thread
  copies the input into its own workspace as ``kw`` column-shifted (and, for
  a stride ``s``, column-subsampled) copies of the padded planes, split into
  ``min(s, kh)`` row phases (``kw*Hp*Wo`` floats per channel at stride 1, a
  third of an im2col copy for 3x3), and computes its share of the row-blocks
  over the whole output plane flat: every lane a real output, plain loads at
  any stride, no data shared between threads.

Batch 1, row tiles of a padded stride-1 conv: a tile may also be cut into
``parts`` (one per thread, :attr:`ConvTile.parts`): one parallel region in
which each thread copies the padded rows its output rows read into its own
workspace and computes those rows for every row-block -- no scratch shared
between threads, and each thread reads the rows it wrote in the previous
such layer.

Epilogue: the bias starts the accumulators; a residual input (``res``, the
shortcut of a ResNet / MobileNetV2 block, when ``spec.residual``) is added,
then ReLU / ReLU6 clamps -- so ``conv -> bias -> add -> relu`` is one call.
"""

from __future__ import annotations

import functools

from dataclasses import asdict, dataclass, replace
from enum import Enum

import numpy as np

PREFETCH_BYTES = 8192  # software prefetch distance of the streamed weights (bench/RESULTS.md section 3.0)
CACHE_LINE_FLOATS = 16  # float32 per 64-byte cache line
# im2col and shifted tiles: output planes up to 8x8 (the copies are Ci*kh*kw*Ho*Wo and about Ci*kw*Hp*Wo floats);
# at stride 1 on 16x16 and 32x32 planes the row-part tiles beat shifted ones (no junk lanes there either, and a smaller
# copy), but strided convs have no row parts
IM2COL_MAX_POSITIONS = 64
STRIDED_SHIFTED_MAX_POSITIONS = 256  # shifted tiles of strided convs: output planes up to 16x16 (no row parts there)


class InputCopy(str, Enum):
    """How a conv tile reads its input, which fixes the column offsets the weights are packed with."""

    PADDED = "padded"  # the zero-padded planes (``xp``, or ``x`` itself): ``ci*Hp*Wp + ky*Wp + kx``
    IM2COL = "im2col"  # an im2col copy, ``Ho*Wo`` floats per GEMM column: ``col * Ho*Wo``
    SHIFTED = "shifted"  # column-shifted, row-padded planes per channel: ``(((ci*kw + kx)*S + ky%s)*Hs + ky//s) * Wo``


class PaddedGeometry:
    """Feature-map geometry shared by the conv specs (fields ``h, w, pad, stride``; ``kernel_hw``).

    ``hp, wp``: the zero-padded input; ``ho, wo``: the output; ``hq, wq``: one
    stride phase plane of the padded input (``ceil(Hp / stride)`` x ``ceil(Wp / stride)``).
    """

    h: int
    w: int
    pad: int
    stride: int

    @property
    def kernel_hw(self) -> tuple[int, int]:
        raise NotImplementedError

    @property
    def hp(self) -> int:
        return self.h + 2 * self.pad

    @property
    def wp(self) -> int:
        return self.w + 2 * self.pad

    @property
    def ho(self) -> int:
        return (self.hp - self.kernel_hw[0]) // self.stride + 1

    @property
    def wo(self) -> int:
        return (self.wp - self.kernel_hw[1]) // self.stride + 1

    @property
    def hq(self) -> int:
        return -(-self.hp // self.stride)

    @property
    def wq(self) -> int:
        return -(-self.wp // self.stride)


@dataclass(frozen=True)
class ConvSpec(PaddedGeometry):
    """Static shape of one conv layer call (everything the template needs)."""

    n: int
    ci: int
    h: int
    w: int
    co: int
    kh: int
    kw: int
    pad: int
    stride: int
    r: int
    kk: int
    relu: bool
    relu6: bool = False  # clip to [0, 6] after the bias (ReLU6); implies ``relu``
    residual: bool = False  # a residual input ``res [N, Co, Ho, Wo]`` is added before the activation

    @property
    def kernel_hw(self) -> tuple[int, int]:
        return self.kh, self.kw

    @property
    def nb(self) -> int:
        return -(-self.co // self.r)

    @property
    def k_total(self) -> int:
        return self.ci * self.kh * self.kw

    @property
    def phases(self) -> tuple[int, int]:
        """Stored stride phases per axis in the phased layout, ``(min(s, kh), min(s, kw))``."""
        return min(self.stride, self.kh), min(self.stride, self.kw)

    def grid_width(self, phased: bool = False) -> int:
        """Width of the output position grid: ``Wp`` (strided layout) or ``Wq`` (phased layout)."""
        return self.wq if phased and self.stride > 1 else self.wp

    def positions(self, phased: bool = False) -> int:
        """Output positions on the padded-width grid, ``P = Ho * Wp`` (``Ho * Wq`` when phased)."""
        return self.ho * self.grid_width(phased)

    def scratch_len(self, tp: int, phased: bool = False, rows: bool = False) -> int:
        """Length of one image's ``xp`` scratch row (input copy plus the zero tail read by the last tile).

        ``rows``: for row tiles, which never read past the copy (no tail).
        """
        if rows:
            npy, npx = self.phases
            return npy * npx * self.ci * self.hq * self.wq if phased and self.stride > 1 else self.ci * self.hp * self.wp
        n_tiles = -(-self.positions(phased) // tp)
        if phased and self.stride > 1:
            npy, npx = self.phases
            return npy * npx * self.ci * self.hq * self.wq + n_tiles * tp + self.wq * self.kh + self.kw
        return self.ci * self.hp * self.wp + n_tiles * tp * self.stride + self.wp * self.kh + self.kw

    def column_offsets(self, cols: np.ndarray, phased: bool = False,
                       copy: "InputCopy" = InputCopy.PADDED) -> np.ndarray:
        """``xp`` offsets (int32, same shape as ``cols``) of GEMM columns ``cols`` (``ci*kh*kw + ky*kw + kx``).

        ``copy``: offsets into an im2col or shifted tile's copy instead (:class:`InputCopy`).
        """
        cols = np.asarray(cols, dtype=np.int64)
        if copy == InputCopy.IM2COL:
            return (cols * (self.ho * self.wo)).astype(np.int32)
        ci, rem = cols // (self.kh * self.kw), cols % (self.kh * self.kw)
        ky, kx = rem // self.kw, rem % self.kw
        if copy == InputCopy.SHIFTED:
            phases, rows = self.shifted_planes
            plane = (ci * self.kw + kx) * phases + ky % self.stride
            return ((plane * rows + ky // self.stride) * self.wo).astype(np.int32)
        if not phased or self.stride == 1:
            return (ci * self.hp * self.wp + ky * self.wp + kx).astype(np.int32)
        s, plane = self.stride, self.hq * self.wq
        phase = (ky % s) * self.phases[1] + kx % s
        return (phase * self.ci * plane + ci * plane + (ky // s) * self.wq + kx // s).astype(np.int32)

    def macs(self) -> int:
        return self.n * self.nb * self.r * self.kk * self.ho * self.wo

    def live_columns(self) -> np.ndarray:
        """``[k_total]`` bool: GEMM columns ``(ci, ky, kx)`` whose tap reads the input at some output position.

        A tap is dead when every output row, or every output column, puts it
        in the zero padding (a 3x3 conv on a 1x1 map keeps only its centre):
        its weights only ever multiply zeros, so the kernels need not stream them.
        """
        rows = np.arange(self.ho) * self.stride - self.pad
        cols = np.arange(self.wo) * self.stride - self.pad
        ky_live = np.array([((rows + ky >= 0) & (rows + ky < self.h)).any() for ky in range(self.kh)])
        kx_live = np.array([((cols + kx >= 0) & (cols + kx < self.w)).any() for kx in range(self.kw)])
        return np.tile((ky_live[:, None] & kx_live[None, :]).reshape(-1), self.ci)

    @property
    def shifted_planes(self) -> tuple[int, int]:
        """``(S, Hs)`` of a shifted tile's copy: row phases ``min(stride, kh)`` and rows ``Ho + (kh-1)//stride`` a plane.

        Plane ``(ci, kx, ry)`` holds ``xpad[ci, hq*stride + ry, ow*stride + kx]``
        for ``hq < Hs``, ``ow < Wo``: kept column ``(ci, ky, kx)`` reads it from
        row ``ky // stride``, ``Ho*Wo`` consecutive floats (stride 1: ``S = 1``,
        ``Hs = Hp``).
        """
        return min(self.stride, self.kh), self.ho + (self.kh - 1) // self.stride

    @property
    def flat(self) -> bool:
        """An unpadded stride-1 1x1 conv: each channel plane is one row of ``Ho*Wo`` positions for row tiles."""
        return self.kh == 1 and self.kw == 1 and self.pad == 0 and self.stride == 1

    @property
    def row_hw(self) -> tuple[int, int]:
        """``(rows, row width)`` row tiles cut into segments: ``(1, Ho*Wo)`` for :attr:`flat` convs, else ``(Ho, Wo)``."""
        return (1, self.ho * self.wo) if self.flat else (self.ho, self.wo)

    def row_jobs(self, tile: "ConvTile") -> int:
        """Row tiles (jobs) of one image with ``tile`` (a row tile that fits): row segments / vectors."""
        rows, width = self.row_hw
        return rows * (width // tile.lanes) // tile.vectors

    def key(self) -> str:
        items = asdict(self)
        for name in ("relu6", "residual"):  # keys without these stay what they were before the fields existed
            if not items[name]:
                items.pop(name)
        return "_".join(f"{k}{int(v)}" for k, v in items.items())


@dataclass(frozen=True)
class ConvTile:
    """One job's output tile: ``vectors`` vectors of ``lanes`` consecutive output positions.

    ``rows=False`` (grid tile): the vectors cover ``lanes * vectors``
    consecutive positions of one image's padded-width grid (junk columns
    included), written to the scratch ``acc`` and copied to ``y`` by a
    second pass that adds the residual and applies the activation.
    ``rows=True`` (row tile): every vector is a segment of one output row
    (``Wo % lanes == 0``; a tile's segments run over images, rows and row
    segments), stored straight into ``y`` with the epilogue applied -- no
    junk lanes, no ``acc`` pass.

    ``image_major`` (batches only): jobs run image by image, and within an
    image row-block outer, tile inner -- each image's input stays in cache
    across the row-blocks, as in a batch-1 call; otherwise the order is
    :func:`job_block`'s (row-block outer, tile outer, or blocks of row-blocks over the whole batch).

    ``image_lanes`` (batches only, ``N % lanes == 0``): every vector holds one
    output position of ``lanes`` consecutive images instead of ``lanes``
    positions of one image (:mod:`compression.tvm_backend.kernels_image_lanes`):
    no junk lanes on small feature maps, contiguous loads at any stride.

    ``parts`` (batch 1, row tiles of a padded stride-1 conv): the output rows
    are cut into ``parts`` contiguous parts, one per thread, in one parallel
    region; each part copies the padded input rows it reads into its own
    thread's workspace and computes its rows for every row-block.  No scratch
    is shared between threads, and a thread reads the rows it wrote in the
    previous such layer -- on our 2-core machines data one core wrote and
    the other then reads cost more than the padded copy itself (bench/RESULTS.md
    section 3.0, "What changed at batch 1 (evening): row-part tiles").

    ``im2col`` (batch 1, output planes of at most :data:`IM2COL_MAX_POSITIONS`
    positions, any stride, padded layout): the input is first copied into
    im2col order, ``P = Ho*Wo`` consecutive floats per GEMM column, and the
    vectors then cover the output plane flat (``lanes * vectors`` divides
    ``P``), every lane a real output: a 4x4 map is one 16-lane vector where a
    grid tile computes 32 lanes for its 16 outputs (the padded-width grid's
    junk columns and the tile's tail).  The copy is ``Ci*kh*kw*P`` floats, small
    beside the ``Co*Ci*kh*kw`` weights of such a layer; GEMM column ``k`` starts
    at ``k*P``, so the offsets differ from the padded layout's
    (``pack_weights(..., copy=InputCopy.IM2COL)``; the values are the same).

    ``shifted`` (batch 1, output planes of at most
    :data:`IM2COL_MAX_POSITIONS` positions, :data:`STRIDED_SHIFTED_MAX_POSITIONS`
    for strided convs; padded layout; ``parts`` = the threads): the vectors
    cover the output plane flat, as an im2col tile's, but each of the
    ``parts`` threads first copies the whole input into its own workspace as
    column-shifted planes (:attr:`ConvSpec.shifted_planes`; stride 1: ``kw``
    row-padded planes ``Hp x Wo`` per channel, and kept column ``(c, ky,
    kx)`` reads ``Ho*Wo`` consecutive floats from ``((c*kw + kx)*Hp +
    ky)*Wo``; stride ``s``: also column-subsampled, in ``min(s, kh)`` row
    phases), then computes its ``1/parts`` of the row-blocks.  A third of an im2col copy
    for a 3x3 conv, and no copy read by another core (the cost that kept
    im2col tiles off sparse layers); each thread reads every input but only
    its own row-blocks' weights.
    """

    lanes: int
    vectors: int = 1
    rows: bool = False
    filters: int = 0  # output channels per job: 0 = the whole row-block (``r``), else a divisor of ``r``
    image_major: bool = False
    image_lanes: bool = False
    parts: int = 0  # batch 1: output-row parts, one per thread, each with its own padded input rows (0: off)
    im2col: bool = False  # batch 1, small maps: vectors over the whole output plane, read from an im2col copy
    shifted: bool = False  # batch 1, small maps: the same vectors, read from per-thread shifted copies

    @property
    def input_copy(self) -> InputCopy:
        """The input this tile reads (and the column offsets its weights are packed with)."""
        return InputCopy.SHIFTED if self.shifted else InputCopy.IM2COL if self.im2col else InputCopy.PADDED

    @property
    def flat_plane(self) -> bool:
        """Vectors over the whole output plane, flat, read from a copy (im2col and shifted tiles): no junk lanes."""
        return self.im2col or self.shifted

    @property
    def tp(self) -> int:
        """Output positions per tile."""
        return self.lanes * self.vectors

    def filters_of(self, spec: "ConvSpec") -> int:
        """Output channels one job accumulates (``filters``, or the row-block's ``r``)."""
        return self.filters or spec.r

    def accumulators(self, spec: "ConvSpec", register_lanes: int) -> int:
        """Vector registers the tile's accumulators take, with ``register_lanes`` float32 lanes per register."""
        return self.filters_of(spec) * self.vectors * -(-self.lanes // register_lanes)

    def fits(self, spec: "ConvSpec", phased: bool = False) -> bool:
        """Whether this tile applies to ``spec``: ``filters`` divides ``r``; row tiles: ``Wo % lanes == 0``, whole tiles.

        ``phased``: in the stride-phase layout, which image-lane tiles never read
        (their loads are contiguous at any stride in the padded layout).
        """
        if self.filters and spec.r % self.filters:
            return False
        if self.shifted:
            positions = spec.ho * spec.wo
            return (spec.n == 1 and not (phased and spec.stride > 1) and not spec.flat and self.parts >= 1
                    and not self.im2col
                    and not (self.rows or self.image_major or self.image_lanes)
                    and positions <= (IM2COL_MAX_POSITIONS if spec.stride == 1 else STRIDED_SHIFTED_MAX_POSITIONS)
                    and positions % self.tp == 0)
        if self.im2col:
            positions = spec.ho * spec.wo
            return (spec.n == 1 and not (phased and spec.stride > 1) and not spec.flat
                    and not (self.rows or self.image_major or self.image_lanes or self.parts)
                    and positions <= IM2COL_MAX_POSITIONS and positions % self.tp == 0)
        if self.parts:
            return (self.rows and not self.image_major and not self.image_lanes and spec.n == 1
                    and spec.stride == 1 and not reads_input_directly(spec, self)
                    and replace(self, parts=0).fits(spec) and self.parts <= spec.row_jobs(self))
        if self.image_lanes:
            from compression.tvm_backend.kernels_image_lanes import image_lanes_fit

            return (not (phased and spec.stride > 1) and not self.rows and not self.image_major
                    and image_lanes_fit(spec, self))
        if self.image_major and spec.n == 1:
            return False
        if not self.rows:
            return True
        rows, width = spec.row_hw
        per_image = rows * (width // self.lanes)  # row segments of one image
        return width % self.lanes == 0 and (per_image if self.image_major else spec.n * per_image) % self.vectors == 0

    def params(self) -> dict[str, int]:
        extra = {"filters": self.filters} if self.filters else {}
        if self.image_major:
            extra["image_major"] = 1
        if self.image_lanes:
            extra["image_lanes"] = 1
        if self.parts:
            extra["parts"] = self.parts
        if self.im2col:
            extra["im2col"] = 1
        if self.shifted:
            extra["shifted"] = 1
        return {"tp": self.tp, "lanes": self.lanes, "vectors": self.vectors, "rows": int(self.rows), **extra}

    @property
    def label(self) -> str:
        """Short name for database keys, e.g. ``16x2r`` (row tile), ``16x3g`` (grid tile), ``8x3rf4`` (4 filters a
        job), ``8x1gi`` (image-major order), ``16x2gn`` (image lanes), ``16x2rp2`` (2 row parts), ``16x1c`` (im2col),
        ``16x1sp2`` (shifted copies, 2 parts)."""
        kind = "r" if self.rows else "c" if self.im2col else "s" if self.shifted else "g"
        return (f"{self.lanes}x{self.vectors}{kind}" + (f"f{self.filters}" if self.filters else "")
                + ("i" if self.image_major else "") + ("n" if self.image_lanes else "")
                + (f"p{self.parts}" if self.parts else ""))

    @classmethod
    def grid(cls, tp: int) -> "ConvTile":
        """The grid tile of ``tp`` positions (16-lane vectors; narrower tiles are one vector)."""
        lanes = tp if tp <= 16 else 16
        return cls(lanes, max(1, tp // lanes), False)

    @classmethod
    def from_params(cls, params: dict[str, int]) -> "ConvTile":
        if "lanes" in params:
            return cls(int(params["lanes"]), int(params["vectors"]), bool(params["rows"]), int(params.get("filters", 0)),
                       bool(params.get("image_major", 0)), bool(params.get("image_lanes", 0)),
                       int(params.get("parts", 0)), bool(params.get("im2col", 0)), bool(params.get("shifted", 0)))
        return cls.grid(int(params["tp"]))


def as_tile(tile: "int | ConvTile") -> ConvTile:
    """A :class:`ConvTile` (an int is the grid tile of that many positions)."""
    return tile if isinstance(tile, ConvTile) else ConvTile.grid(int(tile))


def reads_input_directly(spec: "ConvSpec", tile: "int | ConvTile") -> bool:
    """Row tiles of an unpadded stride-1 conv read ``x`` itself (no padded copy)."""
    return as_tile(tile).rows and spec.pad == 0 and spec.stride == 1


def has_shared_scratch(spec: "ConvSpec", tile: "int | ConvTile") -> bool:
    """Whether the kernel takes the scratch outputs (``xp``, ``acc``); row-part tiles keep theirs per thread."""
    tile = as_tile(tile)
    return not (reads_input_directly(spec, tile) or tile.parts)  # (shifted tiles have parts)


def conv_output_shapes(spec: "ConvSpec", tile: "int | ConvTile", phased: bool = False) -> list[tuple[int, ...]]:
    """Shapes of the kernel's outputs, ``y`` last: scratch ``[xp?, acc?]`` first."""
    tile = as_tile(tile)
    if tile.image_lanes:
        from compression.tvm_backend.kernels_image_lanes import image_lanes_output_shapes

        return image_lanes_output_shapes(spec, tile)
    phased = bool(phased) and spec.stride > 1
    y = (spec.n, spec.co, spec.ho, spec.wo)
    if tile.im2col:
        return [(1, im2col_len(spec)), y]
    if tile.shifted:
        return [y]  # the shifted copies live in per-thread workspaces
    images = 1 if tile.image_major else spec.n  # image-major: scratch for the one image being computed
    if tile.rows:
        if not has_shared_scratch(spec, tile):
            return [y]
        return [(images, spec.scratch_len(tile.tp, phased, rows=True)), y]
    pp = -(-spec.positions(phased) // tile.tp) * tile.tp
    return [(images, spec.scratch_len(tile.tp, phased)), (images, spec.nb * spec.r, pp), y]


def im2col_len(spec: ConvSpec) -> int:
    """Floats of an im2col tile's copy: ``P = Ho*Wo`` per GEMM column."""
    return spec.k_total * spec.ho * spec.wo


def shifted_len(spec: ConvSpec) -> int:
    """Floats of a shifted tile's per-thread copy: ``kw * S`` planes of ``Hs x Wo`` per channel (:attr:`ConvSpec.shifted_planes`)."""
    phases, rows = spec.shifted_planes
    return spec.ci * spec.kw * phases * rows * spec.wo


def tile_outer_order(spec: ConvSpec, phased: bool = False) -> bool:
    """Job order of the conv template: tile outer for a batch whose input outweighs the packed weights.

    Row-block outer (batch 1, or weights larger than the input) streams each
    filter's weights once per call; tile outer keeps one tile's input rows
    in cache across all row-blocks while the (smaller) weights are re-read.
    """
    inputs = spec.n * spec.ci * (spec.hq * spec.wq * spec.phases[0] * spec.phases[1] if phased and spec.stride > 1
                                 else spec.hp * spec.wp)
    return spec.n > 1 and spec.nb * spec.kk * spec.r <= inputs


INPUT_PREFETCH_COLUMNS = 32  # batches: input vectors prefetched this many kept columns ahead (0: off)
WEIGHT_BLOCK_BYTES = 1 << 20  # batches, row-block outer: packed weights of the filter groups one job block covers


def job_block(spec: ConvSpec, filters: int, phased: bool = False) -> int:
    """Filter groups (of ``filters`` rows) one block of jobs covers: the job order's outer level.

    Jobs run block by block; in a block, tile by tile, and in a tile the
    block's filter groups.  ``NG`` (every group, one block) is tile outer,
    ``1`` is row-block outer.  Batch 1 runs row-block outer (its input is in
    cache anyway); a batch whose input outweighs the weights runs tile outer
    (:func:`tile_outer_order`); any other batch takes the most groups whose
    packed weights fit in ``WEIGHT_BLOCK_BYTES`` (half a core's L2 here), so
    a tile's input is read once per block from cache instead of once per
    row-block from memory: row-block outer re-read the whole 2.4 MB input
    of a 512-channel 4x4 layer at batch 32 for each of its 64 row-blocks.
    """
    groups = spec.nb * (spec.r // filters)
    if tile_outer_order(spec, phased):
        return groups
    if spec.n == 1:
        return 1
    fit = max(1, WEIGHT_BLOCK_BYTES // (spec.kk * (filters + 1) * 4))
    return max(d for d in range(1, min(fit, groups) + 1) if groups % d == 0)


def tile_reduction(F: int, V: int, VW: int, U: int, Kk: int, nsub: int, load, vals_lanes: int, start=None,
                   input_ahead: int = 0):
    """TVMScript macro ``(ac, vals, off, bias, b, xs, g0)``: one job's ``F x V`` register tile of ``VW`` lanes.

    The bias of filter group ``b`` starts the accumulators; then, over the
    ``Kk`` kept columns (unrolled by ``U``), ``ac[i, j] += vals[b // nsub, k,
    b % nsub * F + i] * load(xs, g0, j, off[b // nsub, k])``, where ``load``
    (a Python function evaluated while parsing) gives vector ``j``'s input at
    a column offset -- the one place the tile kinds differ.

    ``input_ahead > 0`` (with ``start``, the first element of vector ``j``
    as a scalar load, same arguments as ``load``): every unrolled step also
    prefetches the input vectors of the kept columns ``input_ahead``
    columns ahead (batches: a tile's input comes from L3, at offsets no
    hardware prefetcher follows).
    """
    from tvm.script import tirx as T
    r = vals_lanes
    PFI = input_ahead if start is not None else 0
    PF_K_PER_LINE = max(1, CACHE_LINE_FLOATS // r)  # kept columns per cache line of ``vals``
    PF_LINES = -(-U * r // CACHE_LINE_FLOATS)  # cache lines of ``vals`` one unrolled step reads
    PF_K = max(U, PREFETCH_BYTES // (4 * r))  # prefetch distance in kept columns

    @T.macro
    def reduce(ac, vals, off, bias, b, xs, g0):
        for i in T.unroll(F):
            for j in T.unroll(V):
                ac[i * V + j, T.ramp(0, 1, VW)] = T.broadcast(bias[b * F + i], VW)
        for ko in range(Kk // U):
            # the weights PREFETCH_BYTES ahead, one request per cache line (past the last row-block's end the
            # address is outside the buffer: a prefetch is a hint, x86 drops it without a fault)
            for q in T.unroll(PF_LINES):
                T.evaluate(T.call_intrin("void", "tirx.prefetch", T.address_of(
                    vals[b // nsub, ko * U + PF_K + q * PF_K_PER_LINE, 0]), 0, 3, 1))
            T.evaluate(T.call_intrin("void", "tirx.prefetch", T.address_of(off[b // nsub, ko * U + PF_K]), 0, 3, 1))
            if PFI > 0:
                for ki in T.unroll(U):
                    oa = T.bind(off[b // nsub, T.min(ko * U + ki + PFI, Kk - 1)])
                    for j in T.unroll(V):
                        T.evaluate(T.call_intrin("void", "tirx.prefetch", T.address_of(start(xs, g0, j, oa)), 0, 3, 1))
            for ki in T.unroll(U):
                o = T.bind(off[b // nsub, ko * U + ki])
                for i in T.unroll(F):
                    for j in T.unroll(V):
                        ac[i * V + j, T.ramp(0, 1, VW)] = ac[i * V + j, T.ramp(0, 1, VW)] + T.broadcast(
                            vals[b // nsub, ko * U + ki, b % nsub * F + i], VW) * load(xs, g0, j, o)
        for k in range(Kk // U * U, Kk):
            o2 = T.bind(off[b // nsub, k])
            for i in T.unroll(F):
                for j in T.unroll(V):
                    ac[i * V + j, T.ramp(0, 1, VW)] = ac[i * V + j, T.ramp(0, 1, VW)] + T.broadcast(
                        vals[b // nsub, k, b % nsub * F + i], VW) * load(xs, g0, j, o2)

    return reduce


@functools.lru_cache(maxsize=512)
def conv_kernel(spec: ConvSpec, tp: "int | ConvTile" = 16, unroll: int = 4, phased: bool = False):
    """Build the PrimFunc ``(x, values, off, bias[, res]) -> (*scratch, y)`` for ``spec``.

    Shapes: ``x [N, Ci, H, W]``, ``values [nb, Kk, r]``, ``off [nb, Kk]``
    int32, ``bias [nb*r]``, ``res [N, Co, Ho, Wo]`` (only when
    ``spec.residual``: added before the activation); outputs as
    :func:`conv_output_shapes` (grid tiles: ``xp [N, scratch_len]``, ``acc
    [N, nb*r, ceil(P/TP)*TP]``, ``y``; row tiles: ``xp`` unless the input is
    read directly, then ``y``; an image-major tile's scratch holds one image,
    ``[1, ...]``).  ``tp``: a :class:`ConvTile`, or an int (the
    grid tile of that many positions).  ``phased``: the stride-phase layout
    (see the module docstring; ``off`` from ``spec.column_offsets(cols,
    phased=True)``).

    Memoised per ``(spec, tile, unroll, phased)``: parsing the TVMScript
    costs about 0.2 s, and the tuner and the model build ask for the same
    kernels (PrimFuncs are immutable; callers derive named copies with
    ``with_attr``).  Scratch buffers are outputs so that every buffer is a
    kernel parameter and LLVM sees them as distinct; callers use only ``y``.
    """
    from tvm.script import tirx as T

    tile = as_tile(tp)
    if not tile.fits(spec, phased):
        raise ValueError(f"tile {tile} does not fit {spec}{' in the stride-phase layout' if phased else ''}")
    if tile.image_lanes:
        from compression.tvm_backend.kernels_image_lanes import image_lanes_kernel

        return image_lanes_kernel(spec, tile, unroll)
    N, Ci, H, W, Co = spec.n, spec.ci, spec.h, spec.w, spec.co
    pad, s, r, Kk = spec.pad, spec.stride, spec.r, spec.kk
    Hp, Wp, Ho, Wo, nb = spec.hp, spec.wp, spec.ho, spec.wo, spec.nb
    HWp = Hp * Wp
    phased = bool(phased) and s > 1
    VW, V, U, TP = tile.lanes, tile.vectors, max(1, unroll), tile.tp
    relu = spec.relu or spec.relu6
    lo = T.float32(0) if relu else T.float32(-3.4e38)
    hi = T.float32(6) if spec.relu6 else T.float32(3.4e38)
    # flat plane (im2col and shifted tiles): computed like a row tile over one flat row of Ho*Wo positions, read
    # from a copy
    im2col, shifted, flat_plane = tile.im2col, tile.shifted, tile.flat_plane
    has_res, rows, direct = spec.residual, tile.rows or flat_plane, reads_input_directly(spec, tile)
    shared = has_shared_scratch(spec, tile)
    full_rows = nb * r == Co  # every kernel row is a real output channel
    F = tile.filters_of(spec)  # output channels per job: a group of F consecutive rows of one row-block
    nsub = r // F  # groups per row-block; group ``b`` holds filters ``b*F .. b*F+F-1`` of row-block ``b // nsub``
    NG = nb * nsub
    L = im2col_len(spec) if im2col else shifted_len(spec) if shifted else spec.scratch_len(TP, phased, rows=rows)
    # A tile's vector j covers "segment" g0 + j; it reads xs[n(g), off + base(g) + lane * ls].
    if phased:
        Hq, Wq = spec.hq, spec.wq
        npy, npx = spec.phases
        S2, HWq = npy * npx, Hq * Wq
        copied = S2 * Ci * HWq
        row_step, col_step, ls = Wq, 1, 1
    else:
        copied = Ci * HWp
        row_step, col_step, ls = Wp * s, s, s
    gw = spec.grid_width(phased)
    Hr, Wr = (1, Ho * Wo) if flat_plane else spec.row_hw  # row tiles: rows and row width (a flat 1x1 conv's plane,
    # and an im2col or shifted tile's, is one row)
    image_major = tile.image_major
    GB = job_block(spec, F, phased)  # filter groups per block of jobs (NG: tile outer, 1: row-block outer)
    if rows:
        SG = Wr // VW  # row segments per output row
        nJ = N * Hr * SG // V
        PP = 1
    else:
        nP = -(-spec.positions(phased) // TP)
        nJ = N * nP
        SG = nP * V  # segments per image
        PP = nP * TP
    nJi = nJ // N  # jobs of one image (image-major order; ``fits`` makes it whole)
    # image-major: one pass per image (copy its padded input, then its jobs, while the copy is in cache);
    # the other orders: one pass over the whole batch
    NI, passes = (1, N) if image_major else (N, 1)  # NI: images a pass computes, and the scratch (xp, acc) holds

    # TVMScript helpers, evaluated while parsing (g: a segment index PrimExpr)
    def n_of(g):
        return g // (Hr * SG) if rows else g // SG

    def oh_of(g):
        return g // SG % Hr

    def ow_of(g):
        return g % SG * VW

    def sn_of(g):  # scratch row of segment g's image: an image-major scratch holds one image
        return 0 if image_major and not direct else n_of(g)

    def base_of(g):
        return oh_of(g) * row_step + ow_of(g) * col_step if rows else g % SG * VW * col_step

    def lanes_of(base, n):  # n consecutive elements from base: a vector index, or a scalar one for n == 1
        return T.ramp(base, 1, n) if n > 1 else base

    def first(g0, j, o):  # (scratch row, index) of the first element of vector j at column offset o
        if flat_plane:  # the copy's offset o of a column, then the vector's positions
            return 0, o + ow_of(g0 + j)
        return sn_of(g0 + j), o + base_of(g0 + j)

    def load(xs, g0, j, o):  # vector j of the tile at column offset o
        row, i = first(g0, j, o)
        return xs[row, T.ramp(i, 1 if flat_plane else ls, VW)]

    def start(xs, g0, j, o):  # the first element of ``load``'s vector (a prefetch address)
        row, i = first(g0, j, o)
        return xs[row, i]

    reduce_tile = tile_reduction(F, V, VW, U, Kk, nsub, load, r, start, INPUT_PREFETCH_COLUMNS if N > 1 else 0)

    FV = next(v for v in (16, 8, 4, 1) if W % v == 0)  # lanes of a padded row's copy

    @T.macro
    def pad_row(dst, dn, x, xn, c, hh):
        # padded row hh of channel c into dst[dn] (the xp layout): zeros in the padding, x[xn, c, hh - pad] inside
        if pad <= hh and hh < H + pad:
            for ww in range(pad):
                dst[dn, c * HWp + hh * Wp + ww] = T.float32(0)
            for wv in range(W // FV):
                dst[dn, lanes_of(c * HWp + hh * Wp + pad + wv * FV, FV)] = x[xn, c, hh - pad, lanes_of(wv * FV, FV)]
            for ww in range(Wp - W - pad):
                dst[dn, c * HWp + hh * Wp + W + pad + ww] = T.float32(0)
        else:
            for ww in range(Wp):
                dst[dn, c * HWp + hh * Wp + ww] = T.float32(0)

    @T.macro
    def store_rows(ac, y, res, b, g0):
        # a row tile's accumulators into y (row view), with the residual and the activation
        for i in T.unroll(F):
            if full_rows or b * F + i < Co:
                for j in T.unroll(V):
                    y[n_of(g0 + j), b * F + i, oh_of(g0 + j), T.ramp(ow_of(g0 + j), 1, VW)] = T.min(T.max(
                        ac[i * V + j, T.ramp(0, 1, VW)]
                        + (res[n_of(g0 + j), b * F + i, oh_of(g0 + j), T.ramp(ow_of(g0 + j), 1, VW)]
                           if has_res else T.broadcast(T.float32(0), VW)),
                        T.broadcast(lo, VW)), T.broadcast(hi, VW))

    @T.macro
    def fill(x, xp, p):
        if im2col:  # GEMM column (c, ky, kx) at (c*kh*kw + ky*kw + kx) * Ho*Wo: its inputs, zeros in the padding
            planes = T.alloc_buffer((1, Ci * HWp), "float32")  # padded channel planes, each written and read by one thread
            for c in T.parallel(Ci):
                for hh in range(Hp):
                    pad_row(planes, 0, x, 0, c, hh)
                for ky, kx, oh in T.grid(spec.kh, spec.kw, Ho):
                    xp[0, lanes_of((((c * spec.kh + ky) * spec.kw + kx) * Ho + oh) * Wo, Wo)] = planes[
                        0, T.ramp(c * HWp + (oh * s + ky) * Wp + kx, s, Wo) if Wo > 1 else c * HWp + (oh * s + ky) * Wp + kx]
        elif phased:
            for nc in T.parallel(NI * Ci):
                for ph, hq, wq in T.grid(S2, Hq, Wq):
                    xp[nc // Ci, ph * Ci * HWq + nc % Ci * HWq + hq * Wq + wq] = T.if_then_else(
                        pad <= hq * s + ph // npx and hq * s + ph // npx < H + pad
                        and pad <= wq * s + ph % npx and wq * s + ph % npx < W + pad,
                        x[p * NI + nc // Ci, nc % Ci, hq * s + ph // npx - pad, wq * s + ph % npx - pad], T.float32(0))
        else:
            for nc in T.parallel(NI * Ci):
                for hh in range(Hp):
                    pad_row(xp, nc // Ci, x, p * NI + nc // Ci, nc % Ci, hh)
        if not im2col:
            for n0 in range(NI):
                for t in range(L - copied):
                    xp[n0, copied + t] = T.float32(0)

    @T.macro
    def jobs(xs, vals, off, bias, res, acc, y, p):
        # job_block's order: row-block outer (batch 1: each thread streams its own row-blocks' weights once
        # per call), tile outer (batches whose inputs outweigh the weights: a tile's inputs stay in cache across
        # the row-blocks), or blocks of row-blocks, tile by tile within a block (the other batches)
        # (image-major: image outer, then row-block, then the image's tiles: a batch-1 call per image)
        # b: a group of F filters (b*F ..), in row-block b // nsub at row b % nsub * F
        for job in T.parallel(NG * nJ // passes):
            b = T.bind(job // nJi if image_major else job // (GB * nJ) * GB + job % GB)
            g0 = T.bind((p * nJi + job % nJi) * V if image_major else job // GB % nJ * V)
            ac = T.alloc_buffer((F * V, VW), "float32", scope="local", annotations={"disable_lower_builtin": True})
            reduce_tile(ac, vals, off, bias, b, xs, g0)
            if rows:
                store_rows(ac, y, res, b, g0)
            else:
                for i in T.unroll(F):
                    for j in T.unroll(V):
                        acc[sn_of(g0 + j), b * F + i, T.ramp((g0 + j) % SG * VW, 1, VW)] = ac[i * V + j, T.ramp(0, 1, VW)]
        if not rows:
            for nco in T.parallel(NI * Co):
                for oh, ow in T.grid(Ho, Wo):
                    y[p * NI + nco // Co, nco % Co, oh, ow] = T.min(T.max(
                        acc[nco // Co, nco % Co, oh * gw + ow]
                        + (res[p * NI + nco // Co, nco % Co, oh, ow] if has_res else T.float32(0)), lo), hi)

    QP, KH, KW, parted = tile.parts, spec.kh, spec.kw, tile.parts > 0 and not shifted

    def zeros(n):
        return T.broadcast(T.float32(0), n) if n > 1 else T.float32(0)

    SP, HS = spec.shifted_planes

    @T.macro
    def shifted_jobs(x, vals, off, bias, res, y):
        # one parallel region; part q (one thread): the whole input as column-shifted, row-phase copies of the
        # padded planes in its own workspace xq (plane (c, kx, ry) holds xpad[c, ry::s, kx::s] cut to HS x Wo),
        # then its share of the row-blocks, each over the whole output plane
        for q in T.parallel(QP):
            xq = T.alloc_buffer((1, L), "float32")
            row = T.alloc_buffer((Wp,), "float32")
            for c, ry, hq in T.grid(Ci, SP, HS):
                if pad <= hq * s + ry and hq * s + ry < H + pad:
                    row[lanes_of(0, Wp)] = zeros(Wp)
                    row[lanes_of(pad, W)] = x[0, c, hq * s + ry - pad, lanes_of(0, W)]
                    for kx in T.unroll(KW):
                        xq[0, lanes_of((((c * KW + kx) * SP + ry) * HS + hq) * Wo, Wo)] = row[
                            T.ramp(kx, s, Wo) if Wo > 1 else kx]
                else:
                    for kx in T.unroll(KW):
                        xq[0, lanes_of((((c * KW + kx) * SP + ry) * HS + hq) * Wo, Wo)] = zeros(Wo)
            for b in range(q * NG // QP, (q + 1) * NG // QP):
                for t in range(nJ):
                    g0 = T.bind(t * V)
                    ac = T.alloc_buffer((F * V, VW), "float32", scope="local", annotations={"disable_lower_builtin": True})
                    reduce_tile(ac, vals, off, bias, b, xq, g0)
                    store_rows(ac, y, res, b, g0)

    @T.macro
    def part_jobs(x, vals, off, bias, res, y):
        # one parallel region; part q (one thread): its tiles' padded input rows copied into its own
        # workspace xq (same layout as xp, only those rows written), then its tiles for every row-block
        for q in T.parallel(QP):
            xq = T.alloc_buffer((1, L), "float32")
            t_lo = T.bind(q * nJ // QP)
            t_hi = T.bind((q + 1) * nJ // QP)
            hp_lo = T.bind(t_lo * V // SG)
            hp_hi = T.bind(T.min((t_hi * V - 1) // SG + KH, Hp))
            for c in range(Ci):
                for hh in range(hp_lo, hp_hi):
                    pad_row(xq, 0, x, 0, c, hh)
            for tj, b in T.grid(t_hi - t_lo, NG):  # tile outer: the tile's rows stay in cache across row-blocks
                g0 = T.bind((t_lo + tj) * V)
                ac = T.alloc_buffer((F * V, VW), "float32", scope="local", annotations={"disable_lower_builtin": True})
                reduce_tile(ac, vals, off, bias, b, xq, g0)
                store_rows(ac, y, res, b, g0)

    # TVMScript signatures are static: one PrimFunc per parameter list (residual input or not; scratch
    # outputs xp / acc or not), the bodies are the shared macros above.
    XS, YS = (N, Ci * H * W), (N, Co, Hr, Wr)  # flat input view; output viewed as rows (flat 1x1 convs)
    if rows and not shared and has_res:
        @T.prim_func
        def conv(x: T.Buffer((N, Ci, H, W), "float32"), vals: T.Buffer((nb, Kk, r), "float32"),
                 off: T.Buffer((nb, Kk), "int32"), bias: T.Buffer((nb * r,), "float32"),
                 res: T.Buffer((N, Co, Ho, Wo), "float32"), y: T.Buffer((N, Co, Ho, Wo), "float32")):
            T.func_attr({"tir.noalias": True})
            xf = T.decl_buffer(XS, "float32", data=x.data)
            yv = T.decl_buffer(YS, "float32", data=y.data)
            rv = T.decl_buffer(YS, "float32", data=res.data)
            if shifted:
                shifted_jobs(x, vals, off, bias, rv, yv)
            elif parted:
                part_jobs(x, vals, off, bias, res, y)
            else:
                for p in range(passes):
                    jobs(xf, vals, off, bias, rv, None, yv, p)
    elif rows and not shared:
        @T.prim_func
        def conv(x: T.Buffer((N, Ci, H, W), "float32"), vals: T.Buffer((nb, Kk, r), "float32"),
                 off: T.Buffer((nb, Kk), "int32"), bias: T.Buffer((nb * r,), "float32"),
                 y: T.Buffer((N, Co, Ho, Wo), "float32")):
            T.func_attr({"tir.noalias": True})
            xf = T.decl_buffer(XS, "float32", data=x.data)
            yv = T.decl_buffer(YS, "float32", data=y.data)
            if shifted:
                shifted_jobs(x, vals, off, bias, None, yv)
            elif parted:
                part_jobs(x, vals, off, bias, None, y)
            else:
                for p in range(passes):
                    jobs(xf, vals, off, bias, None, None, yv, p)
    elif rows and has_res:
        @T.prim_func
        def conv(x: T.Buffer((N, Ci, H, W), "float32"), vals: T.Buffer((nb, Kk, r), "float32"),
                 off: T.Buffer((nb, Kk), "int32"), bias: T.Buffer((nb * r,), "float32"),
                 res: T.Buffer((N, Co, Ho, Wo), "float32"), xp: T.Buffer((NI, L), "float32"),
                 y: T.Buffer((N, Co, Ho, Wo), "float32")):
            T.func_attr({"tir.noalias": True})
            yv = T.decl_buffer(YS, "float32", data=y.data)
            rv = T.decl_buffer(YS, "float32", data=res.data)
            for p in range(passes):
                fill(x, xp, p)
                jobs(xp, vals, off, bias, rv, None, yv, p)
    elif rows:
        @T.prim_func
        def conv(x: T.Buffer((N, Ci, H, W), "float32"), vals: T.Buffer((nb, Kk, r), "float32"),
                 off: T.Buffer((nb, Kk), "int32"), bias: T.Buffer((nb * r,), "float32"),
                 xp: T.Buffer((NI, L), "float32"), y: T.Buffer((N, Co, Ho, Wo), "float32")):
            T.func_attr({"tir.noalias": True})
            yv = T.decl_buffer(YS, "float32", data=y.data)
            for p in range(passes):
                fill(x, xp, p)
                jobs(xp, vals, off, bias, None, None, yv, p)
    elif has_res:
        @T.prim_func
        def conv(x: T.Buffer((N, Ci, H, W), "float32"), vals: T.Buffer((nb, Kk, r), "float32"),
                 off: T.Buffer((nb, Kk), "int32"), bias: T.Buffer((nb * r,), "float32"),
                 res: T.Buffer((N, Co, Ho, Wo), "float32"), xp: T.Buffer((NI, L), "float32"),
                 acc: T.Buffer((NI, nb * r, PP), "float32"), y: T.Buffer((N, Co, Ho, Wo), "float32")):
            T.func_attr({"tir.noalias": True})
            for p in range(passes):
                fill(x, xp, p)
                jobs(xp, vals, off, bias, res, acc, y, p)
    else:
        @T.prim_func
        def conv(x: T.Buffer((N, Ci, H, W), "float32"), vals: T.Buffer((nb, Kk, r), "float32"),
                 off: T.Buffer((nb, Kk), "int32"), bias: T.Buffer((nb * r,), "float32"),
                 xp: T.Buffer((NI, L), "float32"), acc: T.Buffer((NI, nb * r, PP), "float32"),
                 y: T.Buffer((N, Co, Ho, Wo), "float32")):
            T.func_attr({"tir.noalias": True})
            for p in range(passes):
                fill(x, xp, p)
                jobs(xp, vals, off, bias, None, acc, y, p)
    return conv


def pack_weights(weight: np.ndarray, bias: np.ndarray | None, spec: ConvSpec,
                 col_idx: np.ndarray | None, *, phased: bool = False,
                 copy: InputCopy = InputCopy.PADDED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pack a (pruned) conv weight into the kernel's ``values, off, bias``.

    ``phased``: offsets for the stride-phase layout (``conv_kernel(..., phased=True)``);
    ``copy``: offsets for the input the tile reads (``ConvTile.input_copy``: an im2col or shifted copy).

    weight: ``[Co, Ci, kh, kw]`` float32 (already masked / BN-folded);
    col_idx: ``[nb, Kk]`` kept GEMM columns per row-block (ascending), or None
    for dense (all columns).  Returns ``values [nb, Kk, r]``, ``off [nb, Kk]``
    int32 and ``bias [nb*r]`` (rows past ``Co`` are zero padding).
    """
    co, k_total = weight.shape[0], spec.k_total
    gemm = weight.reshape(co, k_total).astype(np.float32)
    if col_idx is None:
        col_idx = np.tile(np.arange(k_total, dtype=np.int64), (spec.nb, 1))
    col_idx = np.asarray(col_idx, dtype=np.int64)
    padded = np.zeros((spec.nb * spec.r, k_total), np.float32)
    padded[:co] = gemm
    blocks = padded.reshape(spec.nb, spec.r, k_total)
    values = np.take_along_axis(blocks, col_idx[:, None, :].repeat(spec.r, axis=1), axis=2)
    values = np.ascontiguousarray(values.transpose(0, 2, 1))  # [nb, Kk, r]
    off = spec.column_offsets(col_idx, phased=phased and spec.stride > 1, copy=copy)
    b = np.zeros(spec.nb * spec.r, np.float32)
    if bias is not None:
        b[:co] = bias
    return values, np.ascontiguousarray(off), b


def row_block_columns(weight: np.ndarray, r: int) -> np.ndarray | None:
    """Kept columns per row-block if the zero pattern is row-block balanced, else None.

    A column is kept by a row-block if any of its ``r`` rows is nonzero there;
    the format needs every row-block to keep the same number of columns.
    """
    co = weight.shape[0]
    gemm = weight.reshape(co, -1)
    nb = -(-co // r)
    padded = np.zeros((nb * r, gemm.shape[1]), gemm.dtype)
    padded[:co] = gemm
    used = (padded.reshape(nb, r, -1) != 0).any(axis=1)  # [nb, K]
    counts = used.sum(axis=1)
    kk = int(counts.max()) if len(counts) else 0
    if kk == 0:
        return np.zeros((nb, 1), np.int64)
    # Pad row-blocks that keep fewer columns with extra (zero-valued) columns so shapes stay static.
    out = np.zeros((nb, kk), np.int64)
    for b in range(nb):
        cols = np.flatnonzero(used[b])
        if len(cols) < kk:
            extra = np.setdiff1d(np.arange(gemm.shape[1]), cols)[: kk - len(cols)]
            cols = np.sort(np.concatenate([cols, extra]))
        out[b] = cols
    return out
