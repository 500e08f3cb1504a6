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

Schedule (hand-written template): parallel over (image, row-block, tile of
``TP`` output positions); an ``r x TP`` accumulator tile lives in registers
(stack allocation, vector lanes over ``TP``), the reduction over kept columns
is unrolled by ``U``, each step is one vector load of ``xp`` and ``r``
broadcast-FMAs.  ``TP`` is picked per layer by measurement (see
:mod:`compression.tvm_backend.tuning`).
"""

from __future__ import annotations

import functools

from dataclasses import asdict, dataclass

import numpy as np


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

    def scratch_len(self, tp: int, phased: bool = False) -> int:
        """Length of one image's ``xp`` scratch row (input copy plus the zero tail read by the last tile)."""
        n_tiles = -(-self.positions(phased) // tp)
        if phased and self.stride > 1:
            npy, npx = self.phases
            return npy * npx * self.ci * self.hq * self.wq + n_tiles * tp + self.wq * self.kh + self.kw
        return self.ci * self.hp * self.wp + n_tiles * tp * self.stride + self.wp * self.kh + self.kw

    def column_offsets(self, cols: np.ndarray, phased: bool = False) -> np.ndarray:
        """``xp`` offsets (int32, same shape as ``cols``) of GEMM columns ``cols`` (``ci*kh*kw + ky*kw + kx``)."""
        cols = np.asarray(cols, dtype=np.int64)
        ci, rem = cols // (self.kh * self.kw), cols % (self.kh * self.kw)
        ky, kx = rem // self.kw, rem % self.kw
        if not phased or self.stride == 1:
            return (ci * self.hp * self.wp + ky * self.wp + kx).astype(np.int32)
        s, plane = self.stride, self.hq * self.wq
        phase = (ky % s) * self.phases[1] + kx % s
        return (phase * self.ci * plane + ci * plane + (ky // s) * self.wq + kx // s).astype(np.int32)

    def macs(self) -> int:
        return self.n * self.nb * self.r * self.kk * self.ho * self.wo

    def key(self) -> str:
        items = asdict(self)
        if not self.relu6:  # keys of specs without ReLU6 stay what they were before the field existed
            items.pop("relu6")
        return "_".join(f"{k}{int(v)}" for k, v in items.items())


@functools.lru_cache(maxsize=512)
def conv_kernel(spec: ConvSpec, tp: int = 16, unroll: int = 4, phased: bool = False):
    """Build the PrimFunc ``(x, values, off, bias) -> (xp, acc, y)`` for ``spec``.

    Shapes: ``x [N, Ci, H, W]``, ``values [nb, Kk, r]``, ``off [nb, Kk]``
    int32, ``bias [nb*r]``, ``xp [N, spec.scratch_len(tp, phased)]``, ``acc
    [N, nb*r, ceil(P/tp)*tp]`` with ``P = spec.positions(phased)``, ``y [N,
    Co, Ho, Wo]``.  ``phased``: the stride-phase layout (see the module
    docstring; ``off`` from ``spec.column_offsets(cols, phased=True)``).

    Memoised per ``(spec, tp, unroll)``: parsing the TVMScript costs about
    0.2 s, and the tuner and the model build ask for the same kernels
    (PrimFuncs are immutable; callers derive named copies with ``with_attr``).

    ``xp`` and ``acc`` are scratch outputs (so every buffer is a kernel
    parameter and LLVM sees them as distinct); callers use only ``y``.
    """
    from tvm.script import tirx as T

    N, Ci, H, W, Co = spec.n, spec.ci, spec.h, spec.w, spec.co
    pad, s, r, Kk = spec.pad, spec.stride, spec.r, spec.kk
    Hp, Wp, Ho, Wo, nb = spec.hp, spec.wp, spec.ho, spec.wo, spec.nb
    HWp = Hp * Wp
    phased = bool(phased) and s > 1
    P = spec.positions(phased)
    nP = -(-P // tp)
    PP = nP * tp
    L = spec.scratch_len(tp, phased)
    U = max(1, unroll)
    TP = tp
    relu = spec.relu or spec.relu6
    lo = T.float32(0) if relu else T.float32(-3.4e38)
    hi = T.float32(6) if spec.relu6 else T.float32(3.4e38)
    if phased:
        return _phased_conv(spec, tp, U, lo, hi)

    @T.prim_func
    def conv(x: T.Buffer((N, Ci, H, W), "float32"), vals: T.Buffer((nb, Kk, r), "float32"),
             off: T.Buffer((nb, Kk), "int32"), bias: T.Buffer((nb * r,), "float32"),
             xp: T.Buffer((N, L), "float32"), acc: T.Buffer((N, nb * r, PP), "float32"),
             y: T.Buffer((N, Co, Ho, Wo), "float32")):
        T.func_attr({"tir.noalias": True})
        for nc in T.parallel(N * Ci):
            for hh, ww in T.grid(Hp, Wp):
                xp[nc // Ci, nc % Ci * HWp + hh * Wp + ww] = T.if_then_else(
                    pad <= hh and hh < H + pad and pad <= ww and ww < W + pad,
                    x[nc // Ci, nc % Ci, hh - pad, ww - pad], T.float32(0))
        for n0 in range(N):
            for t in range(L - Ci * HWp):
                xp[n0, Ci * HWp + t] = T.float32(0)
        for job in T.parallel(N * nb * nP):
            n = T.bind(job // (nb * nP))
            b = T.bind(job // nP % nb)
            p0 = T.bind(job % nP * TP)
            ac = T.alloc_buffer((r, TP), "float32", scope="local", annotations={"disable_lower_builtin": True})
            for i in T.unroll(r):
                ac[i, T.ramp(0, 1, TP)] = T.broadcast(bias[b * r + i], TP)
            for ko in range(Kk // U):
                for ki in T.unroll(U):
                    o = T.bind(off[b, ko * U + ki] + p0 * s)
                    xv = T.bind(xp[n, T.ramp(o, s, TP)])
                    for i in T.unroll(r):
                        ac[i, T.ramp(0, 1, TP)] = ac[i, T.ramp(0, 1, TP)] + T.broadcast(vals[b, ko * U + ki, i], TP) * xv
            for k in range(Kk // U * U, Kk):
                o2 = T.bind(off[b, k] + p0 * s)
                xv2 = T.bind(xp[n, T.ramp(o2, s, TP)])
                for i in T.unroll(r):
                    ac[i, T.ramp(0, 1, TP)] = ac[i, T.ramp(0, 1, TP)] + T.broadcast(vals[b, k, i], TP) * xv2
            for i in T.unroll(r):
                acc[n, b * r + i, T.ramp(p0, 1, TP)] = ac[i, T.ramp(0, 1, TP)]
        for nco in T.parallel(N * Co):
            for oh, ow in T.grid(Ho, Wo):
                y[nco // Co, nco % Co, oh, ow] = T.min(T.max(acc[nco // Co, nco % Co, oh * Wp + ow], lo), hi)

    return conv


def _phased_conv(spec: ConvSpec, tp: int, U: int, lo, hi):
    """The stride-phase variant of :func:`conv_kernel` (same arguments, consecutive tile loads)."""
    from tvm.script import tirx as T

    N, Ci, H, W, Co = spec.n, spec.ci, spec.h, spec.w, spec.co
    pad, s, r, Kk = spec.pad, spec.stride, spec.r, spec.kk
    Hq, Wq, Ho, Wo, nb = spec.hq, spec.wq, spec.ho, spec.wo, spec.nb
    HWq = Hq * Wq
    npy, npx = spec.phases
    S2 = npy * npx
    nP = -(-spec.positions(True) // tp)
    PP = nP * tp
    L = spec.scratch_len(tp, True)
    TP = tp

    @T.prim_func
    def conv(x: T.Buffer((N, Ci, H, W), "float32"), vals: T.Buffer((nb, Kk, r), "float32"),
             off: T.Buffer((nb, Kk), "int32"), bias: T.Buffer((nb * r,), "float32"),
             xp: T.Buffer((N, L), "float32"), acc: T.Buffer((N, nb * r, PP), "float32"),
             y: T.Buffer((N, Co, Ho, Wo), "float32")):
        T.func_attr({"tir.noalias": True})
        for nc in T.parallel(N * Ci):
            for ph, hq, wq in T.grid(S2, Hq, Wq):
                xp[nc // Ci, ph * Ci * HWq + nc % Ci * HWq + hq * Wq + wq] = T.if_then_else(
                    pad <= hq * s + ph // npx and hq * s + ph // npx < H + pad
                    and pad <= wq * s + ph % npx and wq * s + ph % npx < W + pad,
                    x[nc // Ci, nc % Ci, hq * s + ph // npx - pad, wq * s + ph % npx - pad], T.float32(0))
        for n0 in range(N):
            for t in range(L - S2 * Ci * HWq):
                xp[n0, S2 * Ci * HWq + t] = T.float32(0)
        for job in T.parallel(N * nb * nP):
            n = T.bind(job // (nb * nP))
            b = T.bind(job // nP % nb)
            p0 = T.bind(job % nP * TP)
            ac = T.alloc_buffer((r, TP), "float32", scope="local", annotations={"disable_lower_builtin": True})
            for i in T.unroll(r):
                ac[i, T.ramp(0, 1, TP)] = T.broadcast(bias[b * r + i], TP)
            for ko in range(Kk // U):
                for ki in T.unroll(U):
                    o = T.bind(off[b, ko * U + ki] + p0)
                    xv = T.bind(xp[n, T.ramp(o, 1, TP)])
                    for i in T.unroll(r):
                        ac[i, T.ramp(0, 1, TP)] = ac[i, T.ramp(0, 1, TP)] + T.broadcast(vals[b, ko * U + ki, i], TP) * xv
            for k in range(Kk // U * U, Kk):
                o2 = T.bind(off[b, k] + p0)
                xv2 = T.bind(xp[n, T.ramp(o2, 1, TP)])
                for i in T.unroll(r):
                    ac[i, T.ramp(0, 1, TP)] = ac[i, T.ramp(0, 1, TP)] + T.broadcast(vals[b, k, i], TP) * xv2
            for i in T.unroll(r):
                acc[n, b * r + i, T.ramp(p0, 1, TP)] = ac[i, T.ramp(0, 1, TP)]
        for nco in T.parallel(N * Co):
            for oh, ow in T.grid(Ho, Wo):
                y[nco // Co, nco % Co, oh, ow] = T.min(T.max(acc[nco // Co, nco % Co, oh * Wq + ow], lo), hi)

    return conv


def pack_weights(weight: np.ndarray, bias: np.ndarray | None, spec: ConvSpec,
                 col_idx: np.ndarray | None, *, phased: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pack a (pruned) conv weight into the kernel's ``values, off, bias``.

    ``phased``: offsets for the stride-phase layout (``conv_kernel(..., phased=True)``).

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
    off = spec.column_offsets(col_idx, phased=phased and spec.stride > 1)
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
