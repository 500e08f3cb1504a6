"""Parallel schedules for the ops TVM lowers by default (pooling, means, normalisation glue)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

tvm = pytest.importorskip("tvm")

from compression.tvm_backend.compile import compile_model, export_relax  # noqa: E402
from compression.tvm_backend.other_ops import MIN_PARALLEL_WORK, schedule_prim_func  # noqa: E402
from compression.tvm_backend.target import host_target_dict  # noqa: E402

TARGET = host_target_dict(2)


class PoolNet(nn.Module):
    """Normalisation, a conv, then every pooling kind the zoo and users' models put between convs."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = torch.relu(self.conv((x - self.mean) / self.std))
        x = nn.functional.max_pool2d(x, 2, 2)  # 2x2 stride 2
        x = nn.functional.max_pool2d(x, 3, 2, padding=1)  # overlapping windows with padding
        x = torch.relu(self.conv2(x))
        x = nn.functional.avg_pool2d(x, 2, 1) + 0.5 * x[..., 1:, 1:]
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


def _legalized(model: nn.Module, shape: tuple[int, int, int], batch: int):
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    target = tvm.target.Target(TARGET)
    with target:
        seq = tvm.transform.Sequential(cpu.library_dispatch_passes(target) + cpu.legalize_passes(target))
        return seq(export_relax(model, shape, batch))


def _prim_funcs(mod) -> dict[str, object]:
    return {gv.name_hint: f.with_attr("global_symbol", gv.name_hint) for gv, f in mod.functions.items()
            if isinstance(f, tvm.tirx.PrimFunc)}


@pytest.mark.parametrize("batch,size", [(1, 32), (3, 20)])
def test_compiled_model_with_pools_agrees_with_eager(batch, size):
    torch.manual_seed(0)
    model = PoolNet().eval()
    result = compile_model(model, (3, size, size), TARGET, batch=batch, measure=False)
    vm = tvm.relax.VirtualMachine(result.executable, tvm.cpu())
    x = torch.rand(batch, 3, size, size)
    out = vm["main"](tvm.runtime.tensor(x.numpy()))
    out = (out if hasattr(out, "numpy") else out[0]).numpy()
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(out - ref).max() < 1e-4


def test_max_pool_runs_parallel_over_channels_with_the_window_unrolled():
    funcs = _prim_funcs(_legalized(nn.MaxPool2d(3, 2, padding=1).eval(), (64, 32, 32), 1))
    pool = next(f for name, f in funcs.items() if "max_pool" in name)
    before = pool.script()
    sch = schedule_prim_func(pool)
    assert sch is not None
    after = sch.mod["main"].script()
    assert "T.parallel" not in before and "T.parallel" in after
    assert after.count("T.unroll") == 2  # the 3x3 window
    assert "pad_temp" in before and "pad_temp" not in after  # the padded copy inlined into the pool


def test_elementwise_glue_is_vectorised_and_small_or_own_kernels_are_left_alone():
    class Norm(nn.Module):
        def forward(self, x):
            return (x - 0.5) / 0.25

    big = next(iter(_prim_funcs(_legalized(Norm(), (16, 32, 32), 1)).values()))  # 16384 elements
    after = schedule_prim_func(big).mod["main"].script()
    assert "T.parallel" in after and "T.vectorized" in after
    small = next(iter(_prim_funcs(_legalized(Norm(), (3, 8, 8), 1)).values()))  # 192 < MIN_PARALLEL_WORK
    kept = schedule_prim_func(small)  # at most the subtract inlined into the divide, no parallel launch
    assert 3 * 8 * 8 < MIN_PARALLEL_WORK and (kept is None or "T.parallel" not in kept.mod["main"].script())
    assert schedule_prim_func(big.with_attr("global_symbol", "conv_sparse_3")) is None
