"""CPU schedules for the ops between our kernels: pooling, means, normalisation, element-wise glue.

TVM 0.27's CPU Relax pipeline (``relax.backend.cpu_generic``) legalizes
these ops to TIR and compiles them unscheduled: one serial scalar loop nest
each.  In a compressed model at batch 1 that is no longer noise: in vgg16
at 90 % block sparsity (32x32, 2 threads) the five max-pools took 0.062 ms
of a 0.71 ms call.  :func:`cpu_relax_pipeline` is TVM's CPU pipeline with
one dlight rule after operator fusion, :class:`ParallelCPUSchedule`:

* producers are inlined into their consumer first (``try_inline``: the
  max-pool's padded copy, a normalisation's subtract into its divide);
* a block of only spatial iterators (element-wise, copies, layout ops):
  its loops are fused, split ``[parallel, VW]`` and the inner part
  vectorised, ``VW`` the widest of 16 / 8 / 4 / 2 dividing the extent;
* a reduction block (max / average pooling, means; iterators ``S...SR...R``):
  the spatial loops are fused and run in parallel, the reduction loops
  stay inside, unrolled when they are short (at most ``UNROLL_MAX``
  iterations in all, as a 2x2 or 3x3 pool window);
* a block under ``MIN_PARALLEL_WORK`` iterations (spatial times reduction)
  is left as TVM made it: a parallel launch costs more than such a loop.

Functions named like our own kernels (``conv_*``, ``depthwise_*``,
``linear_*``, scheduled by construction), functions with opaque blocks,
symbolic shapes or any other iterator layout are left alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

OUR_KERNELS = ("conv_", "depthwise_", "linear_")  # global-symbol prefixes of our call_tir kernels
MIN_PARALLEL_WORK = 4096  # iterations of one block below which it stays serial
UNROLL_MAX = 16  # reduction iterations per output unrolled in full


def _static_extents(sch, loops) -> list[int] | None:
    from tvm import tirx

    extents = [sch.get(loop).extent for loop in loops]
    if not all(isinstance(e, tirx.IntImm) for e in extents):
        return None
    return [int(e) for e in extents]


def _schedule_spatial(sch, loops, extents: list[int]) -> None:
    """Fuse, split ``[parallel, VW]``, vectorise the inner ``VW`` (the whole extent is parallel when odd)."""
    total = int(np.prod(extents))
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    lanes = next(v for v in (16, 8, 4, 2, 1) if total % v == 0)
    if lanes > 1:
        outer, inner = sch.split(fused, [None, lanes])
        sch.parallel(outer)
        sch.vectorize(inner)
    else:
        sch.parallel(fused)


def _schedule_reduction(sch, loops, extents: list[int], n_spatial: int) -> None:
    """Parallel over the fused spatial loops; the reduction loops inside, unrolled when short.

    (Vectorising a pooled row inside the window loops measured slower than
    scalar here: a 2x2 / stride-2 pool reads its row with stride 2.)
    """
    spatial, reduce = loops[:n_spatial], loops[n_spatial:]
    fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
    sch.parallel(fused)
    if int(np.prod(extents[n_spatial:])) <= UNROLL_MAX:
        for loop in reduce:
            sch.unroll(loop)


def schedule_prim_func(func) -> Any | None:
    """The :class:`ParallelCPUSchedule` schedule of ``func`` (an ``s_tir.Schedule``), or None to keep TVM's."""
    from tvm import s_tir, tirx
    from tvm.s_tir.dlight.analysis import normalize_prim_func
    from tvm.s_tir.dlight.base.common_schedules import try_inline

    if not isinstance(func, tirx.PrimFunc):
        return None
    symbol = str(func.attrs["global_symbol"]) if func.attrs and "global_symbol" in func.attrs else ""
    if symbol.startswith(OUR_KERNELS):
        return None
    sch = s_tir.Schedule(func)
    blocks = normalize_prim_func(sch)
    if not blocks:
        return None
    kinds = [b.dom_kind() for b in blocks]
    if any("O" in k or "RS" in k for k in kinds):  # opaque iterators, or spatial inside a reduction
        return None
    blocks = try_inline(sch, blocks)
    changed = False
    for block in blocks:
        loops = sch.get_loops(block.block_rv)
        if not loops:
            continue
        extents = _static_extents(sch, loops)
        if extents is None:
            return None
        if int(np.prod(extents)) < MIN_PARALLEL_WORK:
            continue
        n_spatial = sum(1 for it in sch.get(block.block_rv).iter_vars if it.iter_type == tirx.IterVar.DataPar)
        if n_spatial == len(loops):
            _schedule_spatial(sch, loops, extents)
        elif 0 < n_spatial and len(loops) == len(sch.get(block.block_rv).iter_vars):
            _schedule_reduction(sch, loops, extents, n_spatial)
        else:
            continue
        changed = True
    return sch if changed or len(blocks) < len(kinds) else None


def parallel_cpu_rule():
    """The dlight rule applying :func:`schedule_prim_func` (a ``CPUScheduleRule``)."""
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

    class ParallelCPUSchedule(CPUScheduleRule):
        """Parallel (and, for element-wise blocks, vectorised) loops for TVM's unscheduled CPU ops."""

        def apply(self, func, target, _tunable):
            if not self.is_target_available(target):
                return None
            return schedule_prim_func(func)

    return ParallelCPUSchedule()


def cpu_relax_pipeline(target: Any, *, fast_math: bool = False):
    """TVM's CPU Relax pipeline with :class:`ParallelCPUSchedule` after operator fusion.

    ``target``: a ``tvm.target.Target``.  fast_math: first
    ``relax.transform.FastMathTransform`` (``tanh`` / ``exp`` / ``erf`` as
    TOPI's vectorisable rational approximations instead of scalar libm
    calls; the SR models' ``tanh``).
    """
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.s_tir import dlight

    rule = parallel_cpu_rule()
    first = [relax.transform.FastMathTransform()] if fast_math else []

    @tvm.transform.module_pass(opt_level=0, name="SuiteCPUPipeline")
    def _pipeline(mod, _ctx):
        with target:
            seq = tvm.transform.Sequential(
                first + cpu.library_dispatch_passes(target) + cpu.legalize_passes(target)
                + [dlight.ApplyDefaultSchedule(rule)]
                + cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target))
            return seq(mod)

    return _pipeline
