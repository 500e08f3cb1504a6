"""Compile an eager (compressed) model into a TVM Relax executable with our kernels.

Flow: BN folded into the convs in torch (:func:`fold_batchnorm`) ->
``torch.export`` -> ``from_exported_program`` (weights as constants) ->
constant reshapes / transposes folded in numpy, then ``FoldBatchnormToConv2D``
+ ``FoldConstant`` for whatever is left -> our rewrite: every ``conv2d(x, W)`` with ``groups == 1`` (with the
following bias ``add``, a residual ``add`` and ``relu`` / ``clip(0, 6)``
fused when present) becomes a
``call_tir`` to the row-block gather kernel of
:mod:`compression.tvm_backend.kernels` -> ``tvm.compile`` with TVM's CPU
pipeline plus parallel schedules for the ops left to it (pooling, means,
normalisation: :mod:`compression.tvm_backend.other_ops`).

The rewrite reads the sparsity structure from the folded weight itself (the
kept GEMM columns of each row-block of ``r`` filters), so any scheme whose
zeros form row-block column structure (block, block-punched; pattern / N:M /
unstructured when their rows happen to share columns) gets a compact kernel.
Per layer the compact kernel is measured against the dense template and used
only if faster; the decision is recorded.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from compression.decisions import LayerDecision
from compression.tvm_backend.kernels import (
    ConvSpec,
    as_tile,
    conv_kernel,
    conv_output_shapes,
    pack_weights,
    row_block_columns,
)
from compression.tvm_backend.kernels_layers import (
    DepthwiseSpec,
    LinearSpec,
    depthwise_kernel,
    depthwise_output_shapes,
    linear_kernel,
    pack_depthwise,
    pack_linear,
    row_block_candidates,
)
from compression.tvm_backend.other_ops import cpu_relax_pipeline
from compression.tvm_backend.tuning import (
    Measured,
    TuningDB,
    best_depthwise,
    best_linear,
    best_tile,
    time_default_lowering,
    unmeasured_tile,
)

PASS_CONFIG = {"tirx.disable_storage_rewrite": True}  # keeps accumulator tiles as stack allocations


@dataclass
class LayerChoice:
    """What the compiler did with one layer call (a conv, depth-wise conv or Linear layer).

    ``kernel``: ``"sparse"`` | ``"dense"`` (row-block conv template),
    ``"depthwise"`` / ``"linear"`` (templates of ``kernels_layers``) or
    ``"tvm-default"`` (TVM's default lowering measured faster than ours).
    ``measured``: every variant timed for the decision, ms by name (e.g.
    ``dense/strided``, ``dense/phased``, ``kernel``, ``tvm-default``).
    """

    index: int
    name: str
    shape: list[int]
    kernel: str
    kept_columns: int
    total_columns: int
    tile: int
    sparse_ms: float | None
    dense_ms: float
    fused: list[str] = field(default_factory=list)
    reason: str = ""  # for people; code reads ``decision``
    decision: LayerDecision = LayerDecision.NO_SPARSITY
    op: str = "conv"  # "conv" (groups == 1) | "depthwise" | "linear"
    layout: str = "padded"  # conv input layout: "padded" (loads with the conv stride) | "phased" (stride phases)
    params: dict[str, int] = field(default_factory=dict)  # template parameters (tp / ot, rb)
    default_ms: float | None = None  # TVM's default lowering of the same call (depth-wise, linear)
    measured: dict[str, float] = field(default_factory=dict)
    # filter reordering (sparse convs, ``reorder=True``): the kernel's row j computes filter
    # ``row_permutation[j]``; ``kept_before_reorder`` = kept columns per row-block in the original order
    row_permutation: list[int] | None = None
    kept_before_reorder: int | None = None


@dataclass
class CompileResult:
    executable: Any
    layers: list[LayerChoice]
    compile_seconds: float
    tuning_seconds: float
    batch: int


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of eval-mode ``model`` with every BatchNorm that directly follows a conv folded into it.

    Uses ``torch.fx`` (``torch.fx.experimental.optimization.fuse``): the folded
    conv's weight is ``W * gamma / sqrt(var + eps)`` per output channel, so
    zeros of a pruned weight stay zeros.  A model that ``torch.fx`` cannot trace
    is returned unchanged (Relax's ``FoldBatchnormToConv2D`` folds its BNs then,
    at the cost of one LLVM build per folded constant).
    """
    from torch.fx.experimental.optimization import fuse

    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    try:
        return fuse(model, inplace=False)
    except Exception:  # noqa: BLE001 - any tracing failure: keep the module, Relax folds the BNs
        return model


def fold_constant_layouts(mod):
    """Fold ``reshape`` / ``permute_dims`` of constants (bias reshapes, transposed linear weights) in numpy.

    Relax's ``FoldConstant`` compiles every such expression with LLVM (one build
    each: about 8 s for MobileNetV2's 52 bias reshapes); the values are the same.
    """
    from tvm import relax

    folder = _constant_layout_folder()
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            mod[gv] = folder(mod).visit_expr(func)
    return mod


def _constant_layout_folder():
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class ConstantLayoutFolder(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            name = _op_name(call)
            if name not in ("relax.reshape", "relax.permute_dims") or not isinstance(call.args[0], tvm.ir.Constant):
                return call
            value = call.args[0].value.numpy()
            if name == "relax.reshape":
                if not isinstance(call.args[1], relax.ShapeExpr):
                    return call
                folded = value.reshape([int(v) for v in call.args[1].values])
            else:
                axes = call.attrs.axes
                folded = np.transpose(value, None if axes is None else [int(a) for a in axes])
            return relax.const(np.ascontiguousarray(folded), str(value.dtype))

    return ConstantLayoutFolder


def export_relax(model: torch.nn.Module, input_shape: tuple[int, int, int], batch: int):
    """``torch.export`` + Relax import with BN folded into the convs and constant layouts folded.

    BNs are folded in torch first (:func:`fold_batchnorm`) and constant
    reshapes / transposes in numpy (:func:`fold_constant_layouts`), so
    ``FoldBatchnormToConv2D`` / ``FoldConstant`` are left little to compile
    (MobileNetV2 w0.5: 8 s -> 0.25 s).
    """
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    model = fold_batchnorm(model.eval().cpu())
    example = torch.rand(batch, *input_shape)
    with torch.no_grad():
        exported = torch.export.export(model, (example,))
    mod = from_exported_program(exported)
    mod = fold_constant_layouts(mod)
    mod = relax.transform.FoldBatchnormToConv2D()(mod)
    mod = relax.transform.FoldConstant()(mod)
    mod = relax.transform.DeadCodeElimination()(mod)
    return mod


def _const_array(expr) -> np.ndarray | None:
    import tvm

    if isinstance(expr, tvm.ir.Constant):
        return expr.value.numpy()
    return None


def _conv_spec(call, weight: np.ndarray, batch: int, r: int, kk: int, relu: bool,
               relu6: bool = False, residual: bool = False) -> ConvSpec | None:
    attrs = call.attrs
    strides = [int(v) for v in attrs.strides]
    padding = [int(v) for v in attrs.padding]
    dilation = [int(v) for v in attrs.dilation]
    if int(attrs.groups) != 1 or dilation != [1, 1] or strides[0] != strides[1] or len(set(padding)) != 1:
        return None
    if str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW":
        return None
    shape = [int(v) for v in call.args[0].ty.shape]
    co, ci, kh, kw = weight.shape
    if shape[1] != ci:
        return None
    return ConvSpec(n=batch, ci=ci, h=shape[2], w=shape[3], co=co, kh=kh, kw=kw, pad=padding[0],
                    stride=strides[0], r=r, kk=kk, relu=relu or relu6, relu6=relu6, residual=residual)


def _depthwise_spec(call, weight: np.ndarray, batch: int, act: str) -> DepthwiseSpec | None:
    """The spec of a depth-wise conv call (``groups == Ci == Co``, square kernel), else None."""
    attrs = call.attrs
    strides = [int(v) for v in attrs.strides]
    padding = [int(v) for v in attrs.padding]
    dilation = [int(v) for v in attrs.dilation]
    shape = [int(v) for v in call.args[0].ty.shape]
    if len(shape) != 4 or weight.ndim != 4:
        return None
    co, one, kh, kw = weight.shape
    groups = int(attrs.groups)
    if not (groups == shape[1] == co and one == 1 and kh == kw) or dilation != [1, 1]:
        return None
    if strides[0] != strides[1] or len(set(padding)) != 1 or shape[0] != batch:
        return None
    if str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW":
        return None
    return DepthwiseSpec(batch, co, shape[2], shape[3], kh, padding[0], strides[0], act)


def _linear_spec(call, weight: np.ndarray, act: str) -> LinearSpec | None:
    """The spec of ``matmul(x [N, I], W [I, O])`` with a constant 2-D weight, else None."""
    shape = [int(v) for v in call.args[0].ty.shape]
    if len(shape) != 2 or weight.ndim != 2 or shape[1] != weight.shape[0]:
        return None
    if str(call.ty.dtype) != "float32" or weight.dtype != np.float32:
        return None
    return LinearSpec(shape[0], shape[1], int(weight.shape[1]), act)


def _op_name(value) -> str:
    op = getattr(value, "op", None)
    return getattr(op, "name", "") if op is not None else ""


def _is_relu6(value) -> bool:
    """``clip(x, 0, 6)`` (how ``nn.ReLU6`` / ``F.relu6`` arrive in Relax)."""
    if _op_name(value) != "relax.clip" or len(value.args) != 3:
        return False
    try:
        return float(value.args[1].value) == 0.0 and float(value.args[2].value) == 6.0
    except (AttributeError, TypeError, ValueError):
        return False


def _residual_ok(call) -> bool:
    """Whether our conv kernel lowers ``call`` (so a residual add may be fused into it)."""
    weight = _const_array(call.args[1])
    if weight is None or weight.ndim != 4 or int(call.attrs.groups) != 1:
        return False
    return _conv_spec(call, weight, 1, 8, 1, False) is not None


def _find_chains(func) -> tuple[dict, dict]:
    """Map kernel-layer var -> its fusable chain, and each var's value.

    A chain starts at ``conv2d(x, W)`` (any groups) or ``matmul(x, W)`` with
    a constant weight, then takes a following bias ``add`` (constant of the
    channel axis' shape), for a ``groups == 1`` conv our kernel takes a
    residual ``add`` of a tensor of the output's shape (ResNet and
    MobileNetV2 shortcuts), and then ``relu`` or ``clip(0, 6)``, each when it
    is the only user of the value before it.  Entry: ``kind`` ("conv" |
    "linear"), ``bias`` (array or None), ``residual`` (the added var or
    None), ``relu``, ``act`` ("none" | "relu" | "relu6"), ``last`` (var of
    the chain's result), ``vars`` (every var of the chain, head first),
    ``emit_at`` (the var whose binding is replaced by the kernel call: the
    residual ``add`` when there is one, so the shortcut is computed by then,
    else the head) and ``fused`` (names of the fused steps).
    """
    from tvm import relax

    bindings = [b for block in func.body.blocks for b in block.bindings]
    users: dict[Any, list] = {}
    value_of: dict[Any, Any] = {}

    def use(var, user) -> None:
        users.setdefault(var, []).append(user)

    for b in bindings:
        value_of[b.var] = b.value
        args = getattr(b.value, "args", None)
        if args is None and isinstance(b.value, relax.Tuple):
            args = b.value.fields
        if args is None and isinstance(b.value, relax.TupleGetItem):
            args = [b.value.tuple_value]
        if args is None and isinstance(b.value, relax.Var):
            args = [b.value]
        for arg in args or []:
            if isinstance(arg, relax.Var):
                use(arg, b)
    result = func.body.body
    for arg in (result.fields if isinstance(result, relax.Tuple) else [result]):
        if isinstance(arg, relax.Var):
            use(arg, None)  # the function's output is a user that cannot be fused

    def only_user(var, op: str):
        u = users.get(var, [])
        if len(u) == 1 and u[0] is not None and _op_name(u[0].value) == op:
            return u[0]
        return None

    chains = {}
    claimed: list = []
    for b in bindings:
        v = b.value
        name = _op_name(v)
        if name not in ("relax.nn.conv2d", "relax.matmul") or len(v.args) < 2:
            continue
        if _const_array(v.args[1]) is None:
            continue
        kind = "conv" if name == "relax.nn.conv2d" else "linear"
        out_shape = [int(d) for d in v.ty.shape]
        channels = out_shape[1] if kind == "conv" else out_shape[-1]
        ok_bias_shapes = ({(1, channels, 1, 1), (channels, 1, 1)} if kind == "conv"
                          else {(channels,), (1, channels)})
        last, bias, act, fused, chain_vars = b.var, None, "none", [], [b.var]
        add = only_user(last, "relax.add")
        if add is not None:
            other = [a for a in add.value.args if not a.same_as(last)]
            arr = _const_array(other[0]) if len(other) == 1 else None
            if arr is not None and tuple(arr.shape) in ok_bias_shapes:
                bias, last = arr.reshape(-1).astype(np.float32), add.var
                chain_vars.append(last)
                fused.append("bias")
        residual, emit_at = None, b.var
        add = only_user(last, "relax.add")
        if add is not None and kind == "conv" and _residual_ok(v) and not any(add.var.same_as(c) for c in claimed):
            other = [a for a in add.value.args if not a.same_as(last)]
            if (len(other) == 1 and isinstance(other[0], relax.Var) and _const_array(other[0]) is None
                    and [int(d) for d in getattr(other[0].ty, "shape", [])] == out_shape
                    and str(other[0].ty.dtype) == "float32"):
                residual, last, emit_at = other[0], add.var, add.var
                claimed.append(add.var)  # an add of two conv chains (a conv shortcut) is fused into the first
                chain_vars.append(last)
                fused.append("residual")
        u = users.get(last, [])
        if len(u) == 1 and u[0] is not None and (_op_name(u[0].value) == "relax.nn.relu" or _is_relu6(u[0].value)):
            act = "relu" if _op_name(u[0].value) == "relax.nn.relu" else "relu6"
            last = u[0].var
            chain_vars.append(last)
            fused.append(act)
        chains[b.var] = {"kind": kind, "call": v, "bias": bias, "residual": residual, "relu": act != "none", "act": act,
                         "last": last, "vars": chain_vars, "emit_at": emit_at, "fused": fused}
    return chains, value_of


def rewrite_convs(mod, batch: int, target: dict, db: TuningDB, *, r: int = 8, names: list[str] | None = None,
                  allow_sparse: bool = True, min_gain: float = 1.0, measure: bool = True,
                  sparse_threshold: float = 0.7, other_layers: bool = True, reorder: bool = False,
                  reorder_min_gain: float = 0.9):
    """Replace conv / depth-wise / linear chains by our kernels; returns ``(mod, [LayerChoice])``.

    Every constant-weight conv2d and matmul counts as one kernel layer in
    graph order (its ``index``; ``names[index]`` names it -- see
    :func:`compression.tvm_backend.backend.kernel_layer_names`).
    ``other_layers=False`` lowers only the ``groups == 1`` convs (the
    depth-wise convs and Linear layers keep TVM's default lowering, no
    choice recorded) -- the behaviour before those kernels existed.
    ``reorder``: for each sparse conv, also try grouping filters with
    similar supports into row-blocks (:mod:`compression.tvm_backend.reorder`);
    used when it keeps at most ``reorder_min_gain`` of the columns, the
    output channels restored by a ``take`` after the kernel.
    """
    from tvm import relax

    func = mod["main"]
    chains, _ = _find_chains(func)
    choices: list[LayerChoice] = []
    # chain vars before a residual chain's emission point (the conv and its bias add): not emitted on their own
    for k, info in enumerate(chains.values()):
        info["index"] = k  # graph order of the heads (a residual chain is emitted later than its head)
    deferred = [v for i in chains.values() for v in i["vars"][:next(k for k, u in enumerate(i["vars"])
                                                                     if u.same_as(i["emit_at"]))]]

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def __init__(self, module):
            super().__init__(module)
            self.index = 0
            self.skip: list = []

        def _is_skipped(self, var) -> bool:
            return any(var.same_as(s) for s in self.skip)

        def visit_var_binding_(self, binding) -> None:
            if self._is_skipped(binding.var):
                return
            if any(v.same_as(binding.var) for v in deferred):  # emitted later, at its chain's residual add
                return
            info = next((i for i in chains.values() if i["emit_at"].same_as(binding.var)), None)
            if info is None:
                return super().visit_var_binding_(binding)
            call = info["call"]
            weight = _const_array(call.args[1])
            idx = info["index"]
            name = names[idx] if names and idx < len(names) else f"{'linear' if info['kind'] == 'linear' else 'conv'}{idx}"
            if info["kind"] == "linear":
                choice, new_value = self._lower_linear(idx, name, call, weight, info)
            elif int(call.attrs.groups) == 1:
                choice, new_value = self._lower_conv(idx, name, call, weight, info)
            else:
                choice, new_value = self._lower_depthwise(idx, name, call, weight, info)
            if choice is not None:
                choices.append(choice)
            if new_value is None:
                return super().visit_var_binding_(binding)
            x = self.visit_expr(call.args[0])
            out = self.builder_.emit(new_value(x))
            fields = getattr(out.ty, "fields", None)  # scratch outputs first, y last; or y alone
            y = self.builder_.emit(relax.TupleGetItem(out, len(fields) - 1)) if fields is not None else out
            if choice is not None and choice.row_permutation is not None:  # back to the original channel order
                from compression.tvm_backend.reorder import inverse

                inv = inverse(np.asarray(choice.row_permutation, dtype=np.int64)).astype(np.int32)
                y = self.builder_.emit(relax.op.take(y, relax.const(inv), axis=1))
            # drop the fused add / activation bindings and send their uses to y
            for v in info["vars"]:
                if not v.same_as(binding.var):
                    self.skip.append(v)
                self.set_var_remap(v, y)

        def _lower_conv(self, idx, name, call, weight, info):
            total = int(np.prod(weight.shape[1:]))
            residual, relu6 = info["residual"] is not None, info["act"] == "relu6"
            full_spec = _conv_spec(call, weight, batch, r, total, info["act"] == "relu", relu6, residual)
            if full_spec is None:
                return None, None
            live = full_spec.live_columns()
            dense_cols = None  # the columns the dense kernel runs: all, or only the taps that read the input
            if not live.all():  # their weights only ever multiply padding: zero them, never stream them
                weight = weight * live.reshape(weight.shape[1:])[None].astype(weight.dtype)
                dense_cols = np.tile(np.flatnonzero(live), (full_spec.nb, 1))
            cols = row_block_columns(weight, r) if allow_sparse else None
            kk = total if cols is None else int(cols.shape[1])
            perm, kept_before, bias_in = None, None, info["bias"]
            if reorder and cols is not None and not residual:  # a fused residual arrives in the filters' own order
                from compression.tvm_backend.reorder import similar_rows_permutation

                order = similar_rows_permutation(weight != 0, r)
                cols_p = row_block_columns(weight[order], r)
                if cols_p is not None and cols_p.shape[1] <= reorder_min_gain * kk:
                    perm, kept_before = order, kk
                    weight, cols, kk = weight[order], cols_p, int(cols_p.shape[1])
                    bias_in = None if bias_in is None else bias_in[order]
            dense_spec = replace(full_spec, kk=int(live.sum()))
            layouts = (False, True) if dense_spec.stride > 1 else (False,)
            measured: dict[str, float] = {}

            def fastest(spec: ConvSpec, sparse: bool) -> tuple[Measured, bool]:
                """Best tile over the layouts; the stride-phase layout for stride > 1 without measurements."""
                if not measure:  # cross-compilation: nothing to time here
                    tile = unmeasured_tile(spec, target)
                    return Measured(tile.tp, float("nan"), tile), dense_spec.stride > 1
                best = None
                for phased in layouts:
                    m = best_tile(spec, target, db, sparse=sparse, phased=phased)
                    measured[f"{'sparse' if sparse else 'dense'}/{'phased' if phased else 'padded'}"] = round(m.ms, 5)
                    if best is None or m.ms < best[0].ms:
                        best = (m, phased)
                return best

            dense, dense_phased = fastest(dense_spec, False)
            kernel, spec, tile, sparse_ms, reason = "dense", dense_spec, dense.tile, None, "dense weights"
            phased = dense_phased
            decision = LayerDecision.NO_SPARSITY
            if cols is not None and kk < dense_spec.kk:
                sparse_spec = replace(full_spec, kk=kk)
                if not measure:
                    if kk < sparse_threshold * total:
                        kernel, spec, reason = "sparse", sparse_spec, "kept fraction below threshold"
                        tile = unmeasured_tile(spec, target)
                        decision = LayerDecision.SPARSE_KERNEL
                    else:
                        reason, decision = "kept fraction too high: dense", LayerDecision.TOO_DENSE
                else:
                    sparse, sparse_phased = fastest(sparse_spec, True)
                    sparse_ms = sparse.ms
                    if sparse.ms * min_gain < dense.ms:
                        kernel, spec, tile, reason = "sparse", sparse_spec, sparse.tile, "compact kernel faster"
                        phased = sparse_phased
                        decision = LayerDecision.SPARSE_KERNEL
                    else:
                        reason = "compact kernel not faster than dense: fallback"
                        decision = LayerDecision.SLOWER_THAN_DENSE
            if kernel != "sparse" and perm is not None:  # the dense kernel runs the filters in their own order
                weight, bias_in, perm, kept_before = weight[np.argsort(perm)], info["bias"], None, None
            if kernel != "sparse":
                cols = dense_cols
            tile = tile or unmeasured_tile(spec, target)
            values, off, bias = pack_weights(weight, bias_in, spec, cols,
                                             phased=phased, copy=tile.input_copy)
            fname = f"conv_{kernel}_{idx}"
            prim = conv_kernel(spec, tile, phased=phased).with_attr("global_symbol", fname)
            gvar = self.builder_.add_func(prim, fname)
            out_sinfo = [relax.TensorType(shape, "float32") for shape in conv_output_shapes(spec, tile, phased)]
            consts = [relax.const(values), relax.const(off), relax.const(bias)]
            choice = LayerChoice(idx, name, list(weight.shape), kernel, spec.kk, total,
                                 tile.tp, sparse_ms, dense.ms, list(info["fused"]), reason, decision, op="conv",
                                 layout="phased" if phased else "padded", params=tile.params(),
                                 measured=measured, row_permutation=None if perm is None else perm.tolist(),
                                 kept_before_reorder=kept_before)
            res = info["residual"]

            def call(x):
                extra = [self.visit_expr(res)] if res is not None else []
                return relax.call_tir(gvar, [x, *consts, *extra], out_sinfo if len(out_sinfo) > 1 else out_sinfo[0])

            return choice, call

        def _default_choice(self, idx, name, weight, info, op, total, ours: Measured, default_ms, params):
            shape = [int(weight.shape[1]), int(weight.shape[0])] if op == "linear" else list(weight.shape)  # [O, I]
            return LayerChoice(idx, name, shape, "tvm-default", total, total, 0, None, ours.ms,
                               list(info["fused"]), "TVM default lowering measured faster than our kernel",
                               LayerDecision.DEFAULT_LOWERING, op=op, layout="", params=params,
                               default_ms=default_ms,
                               measured={"kernel": round(ours.ms, 5), "tvm-default": round(default_ms, 5)})

        def _lower_depthwise(self, idx, name, call, weight, info):
            if not other_layers:
                return None, None
            spec = _depthwise_spec(call, weight, batch, info["act"])
            if spec is None:
                return None, None
            total = spec.k * spec.k
            default_ms = None
            if measure:
                ours = best_depthwise(spec, target, db)
                default_ms = time_default_lowering(spec, weight, info["bias"], target, db)
                if default_ms < ours.ms:
                    return self._default_choice(idx, name, weight, info, "depthwise", total, ours, default_ms,
                                                {"tp": ours.tp}), None
            else:
                ours = Measured(16, float("nan"))
            tp = ours.tile or ours.tp  # a row tile, else the grid tile size
            wt, bias = pack_depthwise(weight, info["bias"])
            fname = f"depthwise_{idx}"
            gvar = self.builder_.add_func(depthwise_kernel(spec, tp).with_attr("global_symbol", fname), fname)
            out_sinfo = [relax.TensorType(shape, "float32") for shape in depthwise_output_shapes(spec, tp)]
            consts = [relax.const(wt), relax.const(bias)]
            measured = {} if default_ms is None else {"kernel": round(ours.ms, 5), "tvm-default": round(default_ms, 5)}
            choice = LayerChoice(idx, name, list(weight.shape), "depthwise", total, total, ours.tp, None, ours.ms,
                                 list(info["fused"]), "depth-wise kernel" + (" faster than TVM default" if measure
                                                                             else " (not measured)"),
                                 LayerDecision.NO_SPARSITY, op="depthwise", layout="phased" if spec.stride > 1
                                 else "padded", params=as_tile(tp).params(), default_ms=default_ms,
                                 measured=measured)
            return choice, (lambda x: relax.call_tir(gvar, [x, *consts], out_sinfo[0]))  # y alone

        def _lower_linear(self, idx, name, call, weight, info):
            if not other_layers:
                return None, None
            spec = _linear_spec(call, weight, info["act"])
            if spec is None:
                return None, None
            default_ms = None
            if measure:
                ours, ot, rb = best_linear(spec, target, db)
                default_ms = time_default_lowering(spec, weight, info["bias"], target, db)
                if default_ms < ours.ms:
                    return self._default_choice(idx, name, weight, info, "linear", spec.i, ours, default_ms,
                                                {"ot": ot, "rb": rb}), None
            else:
                ours, ot, rb = Measured(16, float("nan")), 16, max(row_block_candidates(spec.n))
            wp, bias = pack_linear(weight, info["bias"], ot)
            fname = f"linear_{idx}"
            gvar = self.builder_.add_func(linear_kernel(spec, ot, rb).with_attr("global_symbol", fname), fname)
            out_sinfo = [relax.TensorType((spec.n, spec.n_tiles(ot) * ot), "float32"),
                         relax.TensorType((spec.n, spec.o), "float32")]
            consts = [relax.const(wp), relax.const(bias)]
            measured = {} if default_ms is None else {"kernel": round(ours.ms, 5), "tvm-default": round(default_ms, 5)}
            choice = LayerChoice(idx, name, [spec.o, spec.i], "linear", spec.i, spec.i, ot, None, ours.ms,
                                 list(info["fused"]), "linear kernel" + (" faster than TVM default" if measure
                                                                         else " (not measured)"),
                                 LayerDecision.NO_SPARSITY, op="linear", layout="", params={"ot": ot, "rb": rb},
                                 default_ms=default_ms, measured=measured)
            return choice, (lambda x: relax.call_tir(gvar, [x, *consts], out_sinfo))

    rewriter = Rewriter(mod)
    new_main = rewriter.visit_expr(func)
    new_mod = rewriter.builder_.get()
    new_mod["main"] = new_main
    new_mod = relax.transform.DeadCodeElimination()(new_mod)
    return new_mod, sorted(choices, key=lambda c: c.index)  # graph order (residual chains are emitted late)


def compile_model(model: torch.nn.Module, input_shape: tuple[int, int, int], target: dict, *, batch: int = 1,
                  db: TuningDB | None = None, allow_sparse: bool = True, names: list[str] | None = None,
                  r: int = 8, measure: bool = True, min_gain: float = 1.0, exported: Any = None,
                  other_layers: bool = True, reorder: bool = False) -> CompileResult:
    """Export, rewrite, tune and compile; returns the Relax executable and per-layer choices.

    other_layers: also lower depth-wise convs and Linear layers to our
    kernels (each only where it measures faster than TVM's default lowering).
    reorder: group filters with similar supports into row-blocks (see
    :func:`rewrite_convs`).

    exported: ``export_relax(model, input_shape, batch)`` done already (the
    sparse and the dense build of one batch size share it; left unchanged).
    """
    import tvm

    db = db or TuningDB(None)
    start = time.perf_counter()
    mod = exported if exported is not None else export_relax(model, input_shape, batch)
    t_tune = time.perf_counter()
    mod, choices = rewrite_convs(mod, batch, target, db, r=r, names=names, allow_sparse=allow_sparse,
                                 measure=measure, min_gain=min_gain, other_layers=other_layers, reorder=reorder)
    tuning_seconds = time.perf_counter() - t_tune
    db.save()
    tvm_target = tvm.target.Target(target)
    with tvm.transform.PassContext(opt_level=3, config=PASS_CONFIG):
        exe = tvm.compile(mod, target=tvm_target, relax_pipeline=cpu_relax_pipeline(tvm_target))
    return CompileResult(exe, choices, time.perf_counter() - start, tuning_seconds, batch)


def choices_as_dicts(choices: list[LayerChoice]) -> list[dict[str, Any]]:
    """JSON-ready layer choices (``decision`` as its string value)."""
    return [{**asdict(c), "decision": c.decision.value} for c in choices]
