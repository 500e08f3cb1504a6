"""Compile an eager (compressed) model into a TVM Relax executable with our kernels.

Flow: ``torch.export`` -> ``from_exported_program`` (weights as constants) ->
``FoldBatchnormToConv2D`` + ``FoldConstant`` (BN folded into conv weight and
bias) -> our rewrite: every ``conv2d(x, W)`` with ``groups == 1`` (with the
following bias ``add`` and ``relu`` fused when present) becomes a
``call_tir`` to the row-block gather kernel of
:mod:`compression.tvm_backend.kernels` -> ``tvm.compile``.

The rewrite reads the sparsity structure from the folded weight itself (the
kept GEMM columns of each row-block of ``r`` filters), so any scheme whose
zeros form row-block column structure (block, block-punched; pattern / N:M /
unstructured when their rows happen to share columns) gets a compact kernel.
Per layer the compact kernel is measured against the dense template and used
only if faster; the decision is recorded.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from compression.decisions import LayerDecision
from compression.tvm_backend.kernels import ConvSpec, conv_kernel, pack_weights, row_block_columns
from compression.tvm_backend.tuning import Measured, TuningDB, best_tile

PASS_CONFIG = {"tirx.disable_storage_rewrite": True}  # keeps accumulator tiles as stack allocations


@dataclass
class LayerChoice:
    """What the compiler did with one conv call."""

    index: int
    name: str
    shape: list[int]
    kernel: str  # "sparse" | "dense"
    kept_columns: int
    total_columns: int
    tile: int
    sparse_ms: float | None
    dense_ms: float
    fused: list[str] = field(default_factory=list)
    reason: str = ""  # for people; code reads ``decision``
    decision: LayerDecision = LayerDecision.NO_SPARSITY


@dataclass
class CompileResult:
    executable: Any
    layers: list[LayerChoice]
    compile_seconds: float
    tuning_seconds: float
    batch: int


def export_relax(model: torch.nn.Module, input_shape: tuple[int, int, int], batch: int):
    """``torch.export`` + Relax import with BN folded into the convs."""
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    model = model.eval().cpu()
    example = torch.rand(batch, *input_shape)
    with torch.no_grad():
        exported = torch.export.export(model, (example,))
    mod = from_exported_program(exported)
    mod = relax.transform.FoldBatchnormToConv2D()(mod)
    mod = relax.transform.FoldConstant()(mod)
    mod = relax.transform.DeadCodeElimination()(mod)
    return mod


def _const_array(expr) -> np.ndarray | None:
    import tvm

    if isinstance(expr, tvm.ir.Constant):
        return expr.value.numpy()
    return None


def _conv_spec(call, weight: np.ndarray, batch: int, r: int, kk: int, relu: bool) -> ConvSpec | None:
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
                    stride=strides[0], r=r, kk=kk, relu=relu)


def _find_chains(func) -> tuple[dict, dict]:
    """Map conv var -> (bias const or None, relu?, last var of the chain) and users per var."""
    from tvm import relax

    bindings = [b for block in func.body.blocks for b in block.bindings]
    users: dict[Any, list] = {}
    value_of: dict[Any, Any] = {}
    for b in bindings:
        value_of[b.var] = b.value
        for arg in getattr(b.value, "args", []) or []:
            if isinstance(arg, relax.Var):
                users.setdefault(arg, []).append(b)
    # the function output also uses vars
    chains = {}
    for b in bindings:
        v = b.value
        if not (isinstance(v, relax.Call) and getattr(v.op, "name", "") == "relax.nn.conv2d"):
            continue
        if _const_array(v.args[1]) is None:
            continue
        last, bias, relu, fused = b.var, None, False, []
        u = users.get(last, [])
        if len(u) == 1 and getattr(u[0].value.op, "name", "") == "relax.add":
            other = [a for a in u[0].value.args if not a.same_as(last)]
            arr = _const_array(other[0]) if len(other) == 1 else None
            if arr is not None and arr.size == int(v.ty.shape[1]):
                bias, last = arr.reshape(-1), u[0].var
                fused.append("bias")
                u = users.get(last, [])
                if len(u) == 1 and getattr(u[0].value.op, "name", "") == "relax.nn.relu":
                    relu, last = True, u[0].var
                    fused.append("relu")
        chains[b.var] = {"bias": bias, "relu": relu, "last": last, "fused": fused}
    return chains, value_of


def rewrite_convs(mod, batch: int, target: dict, db: TuningDB, *, r: int = 8, names: list[str] | None = None,
                  allow_sparse: bool = True, min_gain: float = 1.0, measure: bool = True,
                  sparse_threshold: float = 0.7):
    """Replace conv chains by our kernels; returns ``(mod, [LayerChoice])``."""
    from tvm import relax

    func = mod["main"]
    chains, _ = _find_chains(func)
    choices: list[LayerChoice] = []

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
            info = next((i for k, i in chains.items() if k.same_as(binding.var)), None)
            if info is None:
                return super().visit_var_binding_(binding)
            call = binding.value
            weight = _const_array(call.args[1])
            choice, new_value = self._lower(call, weight, info)
            if new_value is None:
                return super().visit_var_binding_(binding)
            choices.append(choice)
            x = self.visit_expr(call.args[0])
            out = self.builder_.emit(new_value(x))
            y = self.builder_.emit(relax.TupleGetItem(out, 2))
            # drop the fused add / relu bindings and send their uses to y
            chain_vars = []
            if not info["last"].same_as(binding.var):
                chain_vars.append(info["last"])
            self.skip.extend(chain_vars)
            self.set_var_remap(binding.var, y)
            self.set_var_remap(info["last"], y)
            for v in self._intermediate(binding.var, info):
                self.skip.append(v)
                self.set_var_remap(v, y)

        def _intermediate(self, start, info):
            out = []
            if info["fused"] == ["bias", "relu"]:
                # the add between conv and relu
                for b in [bb for blk in func.body.blocks for bb in blk.bindings]:
                    if getattr(b.value, "op", None) is not None and getattr(b.value.op, "name", "") == "relax.add" \
                            and any(a.same_as(start) for a in b.value.args):
                        out.append(b.var)
            return out

        def _lower(self, call, weight, info):
            idx = self.index
            self.index += 1
            name = names[idx] if names and idx < len(names) else f"conv{idx}"
            cols = row_block_columns(weight, r) if allow_sparse else None
            total = int(np.prod(weight.shape[1:]))
            kk = total if cols is None else int(cols.shape[1])
            dense_spec = _conv_spec(call, weight, batch, r, total, info["relu"])
            if dense_spec is None:
                return None, None
            if not measure:  # cross-compilation: nothing to time here, use a density rule
                dense = Measured(16, float("nan"))
            else:
                dense = best_tile(dense_spec, target, db, sparse=False)
            kernel, spec, tile, sparse_ms, reason = "dense", dense_spec, dense.tp, None, "dense weights"
            decision = LayerDecision.NO_SPARSITY
            if cols is not None and kk < total:
                sparse_spec = _conv_spec(call, weight, batch, r, kk, info["relu"])
                if not measure:
                    if kk < sparse_threshold * total:
                        kernel, spec, tile, reason = "sparse", sparse_spec, 16, "kept fraction below threshold"
                        decision = LayerDecision.SPARSE_KERNEL
                    else:
                        reason, decision = "kept fraction too high: dense", LayerDecision.TOO_DENSE
                else:
                    sparse = best_tile(sparse_spec, target, db, sparse=True)
                    sparse_ms = sparse.ms
                    if sparse.ms * min_gain < dense.ms:
                        kernel, spec, tile, reason = "sparse", sparse_spec, sparse.tp, "compact kernel faster"
                        decision = LayerDecision.SPARSE_KERNEL
                    else:
                        reason = "compact kernel not faster than dense: fallback"
                        decision = LayerDecision.SLOWER_THAN_DENSE
            values, off, bias = pack_weights(weight, info["bias"], spec, cols if kernel == "sparse" else None)
            fname = f"conv_{kernel}_{idx}"
            prim = conv_kernel(spec, tile).with_attr("global_symbol", fname)
            gvar = self.builder_.add_func(prim, fname)
            L = spec.scratch_len(tile)
            pp = -(-spec.positions() // tile) * tile
            out_sinfo = [relax.TensorType((spec.n, L), "float32"),
                         relax.TensorType((spec.n, spec.nb * spec.r, pp), "float32"),
                         relax.TensorType((spec.n, spec.co, spec.ho, spec.wo), "float32")]
            consts = [relax.const(values), relax.const(off), relax.const(bias)]
            choice = LayerChoice(idx, name, list(weight.shape), kernel, kk if kernel == "sparse" else total, total,
                                 tile, sparse_ms, dense.ms, list(info["fused"]), reason, decision)
            return choice, (lambda x: relax.call_tir(gvar, [x, *consts], out_sinfo))

    rewriter = Rewriter(mod)
    new_main = rewriter.visit_expr(func)
    new_mod = rewriter.builder_.get()
    new_mod["main"] = new_main
    new_mod = relax.transform.DeadCodeElimination()(new_mod)
    return new_mod, choices


def compile_model(model: torch.nn.Module, input_shape: tuple[int, int, int], target: dict, *, batch: int = 1,
                  db: TuningDB | None = None, allow_sparse: bool = True, names: list[str] | None = None,
                  r: int = 8, measure: bool = True, min_gain: float = 1.0, exported: Any = None) -> CompileResult:
    """Export, rewrite, tune and compile; returns the Relax executable and per-layer choices.

    exported: ``export_relax(model, input_shape, batch)`` done already (the
    sparse and the dense build of one batch size share it; left unchanged).
    """
    import tvm

    db = db or TuningDB(None)
    start = time.perf_counter()
    mod = exported if exported is not None else export_relax(model, input_shape, batch)
    t_tune = time.perf_counter()
    mod, choices = rewrite_convs(mod, batch, target, db, r=r, names=names, allow_sparse=allow_sparse,
                                 measure=measure, min_gain=min_gain)
    tuning_seconds = time.perf_counter() - t_tune
    db.save()
    with tvm.transform.PassContext(opt_level=3, config=PASS_CONFIG):
        exe = tvm.compile(mod, target=tvm.target.Target(target))
    return CompileResult(exe, choices, time.perf_counter() - start, tuning_seconds, batch)


def choices_as_dicts(choices: list[LayerChoice]) -> list[dict[str, Any]]:
    """JSON-ready layer choices (``decision`` as its string value)."""
    return [{**asdict(c), "decision": c.decision.value} for c in choices]
