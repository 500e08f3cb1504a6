"""TIR templates for the zoo's other layer types: depth-wise convs and Linear layers.

Both are called from Relax with ``call_tir`` like the row-block conv kernel
of :mod:`compression.tvm_backend.kernels`, and both fuse the following bias
add and ReLU / ReLU6 (``clip(0, 6)``).

Depth-wise conv (``groups == Ci == Co``, square ``k x k`` kernel, stride
``s``; input ``x [N, C, H, W]``, output ``y [N, C, Ho, Wo]``):

* every ``(image, channel)`` pair is one parallel job; the job copies its
  zero-padded plane into its own scratch ``xp [L]`` (a per-thread workspace
  reused job after job, so it stays in L1; a ``[N*C, L]`` output scratch made
  a batch's depth-wise conv write and re-read the whole padded input through
  L3) split into its ``s*s``
  stride phases (plane ``(py, px)`` holds ``padded[py::s, px::s]``, each
  ``Hq x Wq``, ``Hq = ceil(Hp/s)``, ``Wq = ceil(Wp/s)``; for ``s == 1`` this
  is just the padded plane);
* outputs are computed on the ``Wq``-wide grid ``p = oh*Wq + ow`` in tiles
  of ``TP`` consecutive positions (vector lanes over output width
  positions): tap ``(ky, kx)`` of position ``p`` is
  ``xp[phase(ky%s, kx%s)*Hq*Wq + (ky//s)*Wq + kx//s + p]``, so every tap of
  a tile is one plain vector load and one broadcast-FMA (the ``k*k`` taps
  are unrolled);
* the tile goes to the job's scratch ``acc [ceil(P/TP)*TP]``; the job then writes
  the ``Wo`` valid columns of each row to ``y`` with the activation;
* or, with a row tile (``Wo`` a multiple of its 16/8/4/2 lanes), each
  vector is one output row segment, stored straight into ``y`` with the
  activation (no junk lanes, no copy pass); the padded copy is written row
  by row (plain vector copies for stride 1).

Linear (``y [N, O] = x [N, I] @ Wt [I, O] + b``; Relax gives the weight
already transposed, ``matmul(x, Wt)``):

* the weight is packed at compile time into ``wp [nO, I, OT]`` (``nO =
  ceil(O/OT)`` tiles of ``OT`` output features, zero padded), so one job
  streams one contiguous ``I x OT`` panel;
* parallel over (row-block of ``RB`` images, output tile); an ``RB x OT``
  accumulator lives in registers; per input feature one vector load of the
  panel row and ``RB`` broadcast-FMAs (batch 1: a GEMV, ``RB = 1``);
* results go to scratch ``acc [N, nO*OT]`` and are copied to ``y``.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

from compression.tvm_backend.kernels import ConvTile, PaddedGeometry, as_tile

ACTIVATIONS = ("none", "relu", "relu6")


def _bounds(act: str):
    """``(lo, hi)`` float32 clamp of an activation name."""
    from tvm.script import tirx as T

    lo = T.float32(0) if act in ("relu", "relu6") else T.float32(-3.4e38)
    hi = T.float32(6) if act == "relu6" else T.float32(3.4e38)
    return lo, hi


def _key(obj) -> str:
    return "_".join(f"{k}{v}" for k, v in asdict(obj).items())


@dataclass(frozen=True)
class DepthwiseSpec(PaddedGeometry):
    """Static shape of one depth-wise conv call (``groups == C``, ``k x k`` kernel)."""

    n: int
    c: int
    h: int
    w: int
    k: int
    pad: int
    stride: int
    act: str = "none"  # one of ACTIVATIONS, applied after the bias

    @property
    def kernel_hw(self) -> tuple[int, int]:
        return self.k, self.k

    def positions(self) -> int:
        """Output positions on the ``Wq``-wide grid, ``P = Ho * Wq``."""
        return self.ho * self.wq

    def padded_positions(self, tp: int) -> int:
        return -(-self.positions() // tp) * tp

    def scratch_len(self, tp: int) -> int:
        """One job's ``xp`` row: the ``s*s`` phase planes and the zero tail read by the last tile."""
        return self.stride * self.stride * self.hq * self.wq + self.padded_positions(tp) + self.wq * self.k + self.k

    def macs(self) -> int:
        return self.n * self.c * self.ho * self.wo * self.k * self.k

    def key(self) -> str:
        return "dw_" + _key(self)


def depthwise_row_lanes(spec: DepthwiseSpec) -> int | None:
    """Lanes of the depth-wise row tile for ``spec``: the widest of 16/8/4/2 dividing ``Wo`` (None: none)."""
    return next((v for v in (16, 8, 4, 2) if spec.wo % v == 0), None)


def depthwise_output_shapes(spec: DepthwiseSpec, tp: "int | ConvTile") -> list[tuple[int, ...]]:
    """Shapes of the depth-wise kernel's outputs: ``y`` alone (its scratch is per job, inside the kernel)."""
    return [(spec.n, spec.c, spec.ho, spec.wo)]


@functools.lru_cache(maxsize=256)
def depthwise_kernel(spec: DepthwiseSpec, tp: "int | ConvTile" = 16):
    """PrimFunc ``(x, wt, bias) -> (*scratch, y)`` of a depth-wise conv.

    Shapes: ``x [N, C, H, W]``, ``wt [C, k*k]``, ``bias [C]``, the one
    output ``y [N, C, Ho, Wo]``.  A grid tile (``tp`` an int, or a non-row
    :class:`ConvTile`) uses per-job scratch ``xp [spec.scratch_len(tp)]`` and
    ``acc [spec.padded_positions(tp)]``; a row tile (``ConvTile(lanes, 1,
    rows=True)``, ``Wo % lanes == 0``) stores each ``lanes``-wide output row
    segment straight into ``y`` (scratch ``xp`` only).
    """
    from tvm.script import tirx as T

    rows = isinstance(tp, ConvTile) and tp.rows
    N, C, H, W, K = spec.n, spec.c, spec.h, spec.w, spec.k
    pad, s = spec.pad, spec.stride
    Hq, Wq, Ho, Wo = spec.hq, spec.wq, spec.ho, spec.wo
    HWq = Hq * Wq
    S2 = s * s
    KK = K * K
    if rows:
        VW = tp.lanes
        if Wo % VW:
            raise ValueError(f"row tile of {VW} lanes does not fit Wo={Wo}")
        L = S2 * HWq
        TP, PP = VW, VW
    else:
        TP = as_tile(tp).tp
        PP = spec.padded_positions(TP)
        L = spec.scratch_len(TP)
    nP = -(-spec.positions() // TP)
    lo, hi = _bounds(spec.act)

    def tap(kk):  # xp offset of tap kk (phase plane, row, column) relative to the output position
        return (kk // K % s * s + kk % K % s) * HWq + kk // K // s * Wq + kk % K // s

    @T.macro
    def fill(x, xp, job):
        if s == 1:  # one plane: whole rows, vectorisable copies
            for hh in range(Hq):
                if pad <= hh and hh < H + pad:
                    for ww in range(pad):
                        xp[hh * Wq + ww] = T.float32(0)
                    for ww in range(W):
                        xp[hh * Wq + pad + ww] = x[job // C, job % C, hh - pad, ww]
                    for ww in range(Wq - W - pad):
                        xp[hh * Wq + W + pad + ww] = T.float32(0)
                else:
                    for ww in range(Wq):
                        xp[hh * Wq + ww] = T.float32(0)
        else:
            for ph, hq in T.grid(S2, Hq):
                if pad <= hq * s + ph // s and hq * s + ph // s < H + pad:
                    for wq in range(Wq):
                        xp[ph * HWq + hq * Wq + wq] = T.if_then_else(
                            pad <= wq * s + ph % s and wq * s + ph % s < W + pad,
                            x[job // C, job % C, hq * s + ph // s - pad, wq * s + ph % s - pad], T.float32(0))
                else:
                    for wq in range(Wq):
                        xp[ph * HWq + hq * Wq + wq] = T.float32(0)
        for t in range(L - S2 * HWq):
            xp[S2 * HWq + t] = T.float32(0)

    if rows:
        SG = Wo // VW

        @T.prim_func
        def dw(x: T.Buffer((N, C, H, W), "float32"), wt: T.Buffer((C, KK), "float32"),
               bias: T.Buffer((C,), "float32"), y: T.Buffer((N, C, Ho, Wo), "float32")):
            T.func_attr({"tir.noalias": True})
            for job in T.parallel(N * C):
                xp = T.alloc_buffer((L,), "float32")  # the job's padded plane (per-thread workspace)
                fill(x, xp, job)
                for oh, sg in T.grid(Ho, SG):
                    a = T.alloc_buffer((VW,), "float32", scope="local", annotations={"disable_lower_builtin": True})
                    a[T.ramp(0, 1, VW)] = T.broadcast(bias[job % C], VW)
                    for kk in T.unroll(KK):
                        a[T.ramp(0, 1, VW)] = a[T.ramp(0, 1, VW)] + T.broadcast(wt[job % C, kk], VW) * xp[
                            T.ramp(tap(kk) + oh * Wq + sg * VW, 1, VW)]
                    y[job // C, job % C, oh, T.ramp(sg * VW, 1, VW)] = T.min(T.max(
                        a[T.ramp(0, 1, VW)], T.broadcast(lo, VW)), T.broadcast(hi, VW))

        return dw

    @T.prim_func
    def dw(x: T.Buffer((N, C, H, W), "float32"), wt: T.Buffer((C, KK), "float32"),
           bias: T.Buffer((C,), "float32"), y: T.Buffer((N, C, Ho, Wo), "float32")):
        T.func_attr({"tir.noalias": True})
        for job in T.parallel(N * C):
            xp = T.alloc_buffer((L,), "float32")  # the job's padded plane and sums (per-thread workspace)
            acc = T.alloc_buffer((PP,), "float32")
            fill(x, xp, job)
            for tile in range(nP):
                a = T.alloc_buffer((TP,), "float32", scope="local", annotations={"disable_lower_builtin": True})
                a[T.ramp(0, 1, TP)] = T.broadcast(bias[job % C], TP)
                for kk in T.unroll(KK):
                    a[T.ramp(0, 1, TP)] = a[T.ramp(0, 1, TP)] + T.broadcast(wt[job % C, kk], TP) * xp[
                        T.ramp(tap(kk) + tile * TP, 1, TP)]
                acc[T.ramp(tile * TP, 1, TP)] = a[T.ramp(0, 1, TP)]
            for oh, ow in T.grid(Ho, Wo):
                y[job // C, job % C, oh, ow] = T.min(T.max(acc[oh * Wq + ow], lo), hi)

    return dw


def pack_depthwise(weight: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``weight [C, 1, k, k]`` (BN folded), ``bias [C]`` or None -> ``wt [C, k*k]``, ``bias [C]`` float32."""
    c = weight.shape[0]
    wt = np.ascontiguousarray(weight.reshape(c, -1).astype(np.float32))
    b = np.zeros(c, np.float32) if bias is None else np.asarray(bias, np.float32).reshape(c)
    return wt, b


@dataclass(frozen=True)
class LinearSpec:
    """Static shape of one ``y = x @ Wt + b`` call: ``x [n, i]``, ``Wt [i, o]``."""

    n: int
    i: int
    o: int
    act: str = "none"

    def n_tiles(self, ot: int) -> int:
        return -(-self.o // ot)

    def macs(self) -> int:
        return self.n * self.i * self.o

    def key(self) -> str:
        return "linear_" + _key(self)


def row_block_candidates(n: int) -> tuple[int, ...]:
    """Register row-block sizes ``RB`` that divide the batch ``n`` (at most 8)."""
    return tuple(rb for rb in (1, 2, 4, 8) if n % rb == 0)


@functools.lru_cache(maxsize=256)
def linear_kernel(spec: LinearSpec, ot: int = 16, rb: int = 1, unroll: int = 4):
    """PrimFunc ``(x, wp, bias) -> (acc, y)`` of a Linear layer.

    Shapes: ``x [N, I]``, ``wp [nO, I, OT]`` (from :func:`pack_linear`),
    ``bias [nO*OT]``, scratch ``acc [N, nO*OT]``, ``y [N, O]``; ``rb`` must
    divide ``N``.  Callers use only ``y``.
    """
    from tvm.script import tirx as T

    if spec.n % rb:
        raise ValueError(f"row block {rb} does not divide batch {spec.n}")
    N, I, O = spec.n, spec.i, spec.o
    OT, RB = ot, rb
    nO = spec.n_tiles(ot)
    nR = N // rb
    U = max(1, min(unroll, I))
    lo, hi = _bounds(spec.act)

    @T.prim_func
    def lin(x: T.Buffer((N, I), "float32"), wp: T.Buffer((nO, I, OT), "float32"),
            bias: T.Buffer((nO * OT,), "float32"), acc: T.Buffer((N, nO * OT), "float32"),
            y: T.Buffer((N, O), "float32")):
        T.func_attr({"tir.noalias": True})
        for job in T.parallel(nR * nO):
            r0 = T.bind(job // nO * RB)
            ob = T.bind(job % nO)
            a = T.alloc_buffer((RB, OT), "float32", scope="local", annotations={"disable_lower_builtin": True})
            for j in T.unroll(RB):
                a[j, T.ramp(0, 1, OT)] = bias[T.ramp(ob * OT, 1, OT)]
            for io in range(I // U):
                for ii in T.unroll(U):
                    wv = T.bind(wp[ob, io * U + ii, T.ramp(0, 1, OT)])
                    for j in T.unroll(RB):
                        a[j, T.ramp(0, 1, OT)] = a[j, T.ramp(0, 1, OT)] + T.broadcast(x[r0 + j, io * U + ii], OT) * wv
            for i2 in range(I // U * U, I):
                wv2 = T.bind(wp[ob, i2, T.ramp(0, 1, OT)])
                for j in T.unroll(RB):
                    a[j, T.ramp(0, 1, OT)] = a[j, T.ramp(0, 1, OT)] + T.broadcast(x[r0 + j, i2], OT) * wv2
            for j in T.unroll(RB):
                acc[r0 + j, T.ramp(ob * OT, 1, OT)] = a[j, T.ramp(0, 1, OT)]
        for n in T.parallel(N):
            for o in range(O):
                y[n, o] = T.min(T.max(acc[n, o], lo), hi)

    return lin


def pack_linear(wt: np.ndarray, bias: np.ndarray | None, ot: int) -> tuple[np.ndarray, np.ndarray]:
    """``Wt [I, O]`` (the matmul's right operand), ``bias [O]`` -> ``wp [nO, I, OT]``, ``bias [nO*OT]``."""
    i, o = wt.shape
    n_tiles = -(-o // ot)
    padded = np.zeros((i, n_tiles * ot), np.float32)
    padded[:, :o] = wt
    wp = np.ascontiguousarray(padded.reshape(i, n_tiles, ot).transpose(1, 0, 2))
    b = np.zeros(n_tiles * ot, np.float32)
    if bias is not None:
        b[:o] = np.asarray(bias, np.float32).reshape(o)
    return wp, b
