"""Image-lane variant of the row-block gather conv: vector lanes run over the images of a batch.

Why: on small feature maps (8x8, 4x4, 2x2: the late stages of a 32x32
VGG / ResNet) the position tiles of :mod:`compression.tvm_backend.kernels`
waste lanes -- a 2x2 map has 4 outputs per filter, so a 16-lane vector of
positions is 3/4 junk (padded-width grid) or needs 4-lane rows.  With a batch
of ``N`` images (``N % lanes == 0``) each vector instead holds the same
output position of ``lanes`` consecutive images: every lane is useful on any
map size, and stride-2 convs read contiguous vectors too.

Layout:

* ``xp [Ci*Hp*Wp*N]``: the zero-padded input, image index innermost --
  position ``(c, h, w)`` of image ``n`` at ``(c*Hp*Wp + h*Wp + w)*N + n``
  (one transposing copy per call).  The column offsets are the padded
  layout's (:meth:`ConvSpec.column_offsets`, ``phased=False``).
* a job: ``F`` filters of a row-block x ``V`` vectors; vector ``j`` is
  segment ``g = g0 + j``: output position ``q = g // (N/lanes)`` (``q = oh*Wo
  + ow``) of the ``lanes`` images from ``n0 = g % (N/lanes) * lanes``, read
  as ``xp[(off + oh*Wp*s + ow*s)*N + n0 + lane]``.  Jobs run in the order of
  :func:`~compression.tvm_backend.kernels.job_block`, as the position tiles
  (and prefetch the input the same way).  (Image group outer measured no faster on vgg16's 4x4 layers at
  batch 32 and 1.5x slower on its 8x8 ones.)
* ``acc [nb*r, Ho*Wo, N]``: the tiles' sums (bias included); a second pass
  writes ``y [N, Co, Ho, Wo]``, adding the residual and clamping (ReLU /
  ReLU6).

Weights, offsets and bias are packed exactly as for the other tiles
(:func:`~compression.tvm_backend.kernels.pack_weights`), so dense and compact
(row-block) layers both run on it.
"""

from __future__ import annotations

import functools

from compression.tvm_backend import kernels
from compression.tvm_backend.kernels import ConvSpec, ConvTile, job_block, tile_reduction


def image_lanes_fit(spec: ConvSpec, tile: ConvTile) -> bool:
    """Whether the image-lane ``tile`` applies: lanes divide the batch and the segments split into whole jobs."""
    if spec.n % tile.lanes or (tile.filters and spec.r % tile.filters):
        return False
    return (spec.ho * spec.wo * (spec.n // tile.lanes)) % tile.vectors == 0


def image_lanes_output_shapes(spec: ConvSpec, tile: ConvTile) -> list[tuple[int, ...]]:
    """Outputs of :func:`image_lanes_kernel`: scratch ``xp``, ``acc``, then ``y``."""
    return [(spec.ci * spec.hp * spec.wp * spec.n,), (spec.nb * spec.r, spec.ho * spec.wo, spec.n),
            (spec.n, spec.co, spec.ho, spec.wo)]


@functools.lru_cache(maxsize=256)
def image_lanes_kernel(spec: ConvSpec, tile: ConvTile, unroll: int = 4):
    """The PrimFunc ``(x, values, off, bias[, res]) -> (xp, acc, y)`` of the image-lane conv (see module docs).

    Shapes: ``x [N, Ci, H, W]``, ``values [nb, Kk, r]``, ``off [nb, Kk]`` int32
    (padded layout), ``bias [nb*r]``, ``res [N, Co, Ho, Wo]`` when
    ``spec.residual``; outputs as :func:`image_lanes_output_shapes`.
    """
    from tvm.script import tirx as T

    if not image_lanes_fit(spec, tile):
        raise ValueError(f"image-lane tile {tile} does not fit {spec}")
    N, Ci, H, W, Co = spec.n, spec.ci, spec.h, spec.w, spec.co
    pad, s, r, Kk = spec.pad, spec.stride, spec.r, spec.kk
    Hp, Wp, Ho, Wo, nb = spec.hp, spec.wp, spec.ho, spec.wo, spec.nb
    HWp, P = Hp * Wp, spec.ho * spec.wo
    VW, V, U = tile.lanes, tile.vectors, max(1, unroll)
    F = tile.filters_of(spec)
    nsub = r // F
    NG = nb * nsub  # filter groups
    NI = N // VW  # image groups
    nJ = NI * P // V  # jobs per filter group; segment g: position g // NI of image group g % NI
    L = Ci * HWp * N
    relu = spec.relu or spec.relu6
    lo = T.float32(0) if relu else T.float32(-3.4e38)
    hi = T.float32(6) if spec.relu6 else T.float32(3.4e38)
    has_res = spec.residual
    GB = job_block(spec, F)  # filter groups per block of jobs (see job_block)

    def q_of(g):
        return g // NI

    def n0_of(g):  # first image of segment g's vector
        return g % NI * VW

    def base_of(g):  # padded-grid offset of segment g's output position
        return q_of(g) // Wo * (Wp * s) + q_of(g) % Wo * s

    def first(g0, j, o):  # index of the first element of vector j at column offset o
        return (o + base_of(g0 + j)) * N + n0_of(g0 + j)

    def load(xs, g0, j, o):  # vector j of the tile at column offset o: one position of VW images
        return xs[T.ramp(first(g0, j, o), 1, VW)]

    def start(xs, g0, j, o):  # the first element of ``load``'s vector (a prefetch address)
        return xs[first(g0, j, o)]

    reduce_tile = tile_reduction(F, V, VW, U, Kk, nsub, load, r, start, kernels.INPUT_PREFETCH_COLUMNS)

    @T.macro
    def body(x, vals, off, bias, res, xp, acc, y):
        for c in T.parallel(Ci):
            for hh, ww, n in T.grid(Hp, Wp, N):
                xp[(c * HWp + hh * Wp + ww) * N + n] = T.if_then_else(
                    pad <= hh and hh < H + pad and pad <= ww and ww < W + pad,
                    x[n, c, hh - pad, ww - pad], T.float32(0))
        # job_block's order (as the position tiles): blocks of row-blocks, tile by tile within a block
        for job in T.parallel(NG * nJ):
            b = T.bind(job // (GB * nJ) * GB + job % GB)
            g0 = T.bind(job // GB % nJ * V)
            ac = T.alloc_buffer((F * V, VW), "float32", scope="local", annotations={"disable_lower_builtin": True})
            reduce_tile(ac, vals, off, bias, b, xp, g0)
            for i in T.unroll(F):
                for j in T.unroll(V):
                    acc[b * F + i, q_of(g0 + j), T.ramp(n0_of(g0 + j), 1, VW)] = ac[i * V + j, T.ramp(0, 1, VW)]
        for nco in T.parallel(N * Co):
            for q in range(P):
                y[nco // Co, nco % Co, q // Wo, q % Wo] = T.min(T.max(
                    acc[nco % Co, q, nco // Co]
                    + (res[nco // Co, nco % Co, q // Wo, q % Wo] if has_res else T.float32(0)), lo), hi)

    if has_res:
        @T.prim_func
        def conv(x: T.Buffer((N, Ci, H, W), "float32"), vals: T.Buffer((nb, Kk, r), "float32"),
                 off: T.Buffer((nb, Kk), "int32"), bias: T.Buffer((nb * r,), "float32"),
                 res: T.Buffer((N, Co, Ho, Wo), "float32"), xp: T.Buffer((L,), "float32"),
                 acc: T.Buffer((nb * r, P, N), "float32"), y: T.Buffer((N, Co, Ho, Wo), "float32")):
            T.func_attr({"tir.noalias": True})
            body(x, vals, off, bias, res, xp, acc, y)
    else:
        @T.prim_func
        def conv(x: T.Buffer((N, Ci, H, W), "float32"), vals: T.Buffer((nb, Kk, r), "float32"),
                 off: T.Buffer((nb, Kk), "int32"), bias: T.Buffer((nb * r,), "float32"),
                 xp: T.Buffer((L,), "float32"), acc: T.Buffer((nb * r, P, N), "float32"),
                 y: T.Buffer((N, Co, Ho, Wo), "float32")):
            T.func_attr({"tir.noalias": True})
            body(x, vals, off, bias, None, xp, acc, y)
    return conv
