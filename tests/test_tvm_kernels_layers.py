"""TVM kernels for every layer type: depth-wise convs, Linear layers, stride-phase convs, ReLU6 fusion."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

tvm = pytest.importorskip("tvm")

from compression.decisions import LayerDecision  # noqa: E402
from compression.tvm_backend.backend import kernel_layer_names  # noqa: E402
from compression.tvm_backend.compile import choices_as_dicts, compile_model, export_relax, rewrite_convs  # noqa: E402
from compression.tvm_backend.kernels import ConvSpec, conv_kernel, pack_weights, row_block_columns  # noqa: E402
from compression.tvm_backend.kernels_layers import (  # noqa: E402
    DepthwiseSpec,
    LinearSpec,
    depthwise_kernel,
    depthwise_output_shapes,
    linear_kernel,
    pack_depthwise,
    pack_linear,
)
from compression.tvm_backend.target import host_target_dict  # noqa: E402
from compression.tvm_backend.tuning import (  # noqa: E402
    TuningDB,
    best_depthwise,
    best_linear,
    best_tile,
    compile_prim,
    time_default_lowering,
)

TARGET = host_target_dict(2)
ACT = {"none": lambda t: t, "relu": F.relu, "relu6": lambda t: t.clamp(0, 6)}


def _run(func, args: list[np.ndarray]) -> np.ndarray:
    tensors = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in args]
    compile_prim(func, TARGET)["main"](*tensors)
    return tensors[-1].numpy()


@pytest.mark.parametrize("n, c, h, w, k, pad, stride", [(2, 5, 7, 9, 3, 1, 1), (2, 5, 7, 9, 3, 1, 2),
                                                        (1, 4, 8, 8, 3, 1, 2), (1, 3, 6, 5, 5, 2, 2)])
@pytest.mark.parametrize("act", ["none", "relu", "relu6"])
def test_depthwise_kernel_matches_torch(n, c, h, w, k, pad, stride, act):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32) * 3  # large values: relu6's upper clip matters
    weight = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    spec = DepthwiseSpec(n, c, h, w, k, pad, stride, act)
    wt, b = pack_depthwise(weight, bias)
    tp = 8
    assert depthwise_output_shapes(spec, tp) == [(n, c, spec.ho, spec.wo)]  # scratch is per job, inside
    out = _run(depthwise_kernel(spec, tp), [x, wt, b, np.zeros((n, c, spec.ho, spec.wo), np.float32)])
    ref = ACT[act](F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias), stride=stride,
                            padding=pad, groups=c)).numpy()
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("n, i, o, ot, rb", [(1, 37, 10, 16, 1), (1, 64, 40, 8, 1), (32, 24, 10, 16, 8),
                                             (32, 20, 33, 8, 4), (6, 5, 3, 8, 2)])
@pytest.mark.parametrize("act", ["none", "relu", "relu6"])
def test_linear_kernel_matches_torch(n, i, o, ot, rb, act):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, i)).astype(np.float32) * 2
    weight = rng.standard_normal((o, i)).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    spec = LinearSpec(n, i, o, act)
    wp, b = pack_linear(weight.T, bias, ot)
    assert wp.shape == (spec.n_tiles(ot), i, ot)
    out = _run(linear_kernel(spec, ot, rb), [x, wp, b, np.zeros((n, spec.n_tiles(ot) * ot), np.float32),
                                             np.zeros((n, o), np.float32)])
    ref = ACT[act](F.linear(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias))).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def _run_conv(weight, bias, x, pad, stride, cols, phased, relu6, tp=8):
    co, ci, kh, kw = weight.shape
    kk = ci * kh * kw if cols is None else cols.shape[1]
    spec = ConvSpec(x.shape[0], ci, x.shape[2], x.shape[3], co, kh, kw, pad, stride, 8, kk, relu6, relu6)
    values, off, b = pack_weights(weight, bias, spec, cols, phased=phased)
    pp = -(-spec.positions(phased) // tp) * tp
    return _run(conv_kernel(spec, tp, phased=phased),
                [x, values, off, b, np.zeros((spec.n, spec.scratch_len(tp, phased)), np.float32),
                 np.zeros((spec.n, spec.nb * spec.r, pp), np.float32),
                 np.zeros((spec.n, co, spec.ho, spec.wo), np.float32)])


@pytest.mark.parametrize("shape, pad, hw", [((16, 12, 3, 3), 1, (7, 9)), ((20, 8, 3, 3), 1, (8, 8)),
                                            ((16, 8, 1, 1), 0, (8, 8))])
@pytest.mark.parametrize("sparse", [False, True])
def test_stride2_phase_layout_matches_torch(shape, pad, hw, sparse):
    rng = np.random.default_rng(2)
    weight = rng.standard_normal(shape).astype(np.float32)
    if sparse:  # row-block column sparsity: whole kept-column sets per block of 8 filters
        keep = np.repeat(rng.random((-(-shape[0] // 8), 1, int(np.prod(shape[1:])))) < 0.4, 8, axis=0)
        weight *= keep[: shape[0]].reshape(shape)
    cols = row_block_columns(weight, 8) if sparse else None
    if sparse:
        assert cols.shape[1] < weight[0].size
    bias = rng.standard_normal(shape[0]).astype(np.float32)
    x = rng.standard_normal((2, shape[1], *hw)).astype(np.float32) * 3
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias), stride=2, padding=pad)
    for relu6 in (False, True):
        out = _run_conv(weight, bias, x, pad, 2, cols, phased=True, relu6=relu6)
        expect = (ref.clamp(0, 6) if relu6 else ref).numpy()
        np.testing.assert_allclose(out, expect, atol=1e-4, rtol=0)
    strided = _run_conv(weight, bias, x, pad, 2, cols, phased=False, relu6=False)
    np.testing.assert_allclose(strided, ref.numpy(), atol=1e-4, rtol=0)


def test_phase_offsets_stride1_unchanged():
    spec = ConvSpec(1, 4, 6, 6, 8, 3, 3, 1, 1, 8, 36, True)
    cols = np.arange(36)
    assert (spec.column_offsets(cols, True) == spec.column_offsets(cols, False)).all()
    assert spec.scratch_len(16, True) == spec.scratch_len(16) and spec.positions(True) == spec.positions()
    assert "relu6" not in spec.key()  # keys of existing tuning entries unchanged
    one = ConvSpec(1, 4, 8, 8, 8, 1, 1, 0, 2, 8, 4, False)
    assert one.phases == (1, 1)  # a 1x1 stride-2 conv stores one phase plane


class MobileLike(nn.Module):
    """Stem conv + ReLU6, a depth-wise stride-2 unit with ReLU6, a project conv, residual-free head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.expand = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(32, 32, 3, 2, 1, groups=32, bias=False), nn.BatchNorm2d(32), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(32, 24, 1, bias=False), nn.BatchNorm2d(24))
        self.dw1 = nn.Sequential(nn.Conv2d(24, 24, 3, 1, 1, groups=24, bias=False), nn.BatchNorm2d(24), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(24, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.fc1 = nn.Linear(32, 20)
        self.fc2 = nn.Linear(20, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(self.dw1(self.project(self.dw(self.expand(self.stem(x))))))
        return self.fc2(F.relu(self.fc1(x.mean((2, 3)))))


def _mobile_like() -> nn.Module:
    torch.manual_seed(0)
    model = MobileLike().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    with torch.no_grad():  # row-block sparsity in the stride-2 conv: the compact kernel with phases
        w = model.down[0].weight
        keep = (torch.rand(w.shape[0] // 8, 1, w[0].numel()) < 0.4).float().repeat_interleave(8, 0)
        w.mul_(keep.reshape(w.shape))
    return model


@pytest.fixture(scope="module")
def mobile_like():
    return _mobile_like()


def _agree(result, model, batch: int) -> None:
    vm = tvm.relax.VirtualMachine(result.executable, tvm.cpu())
    x = torch.rand(batch, 3, 12, 12) * 4
    out = vm["main"](tvm.runtime.tensor(x.numpy()))
    out = (out if hasattr(out, "numpy") else out[0]).numpy()
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(out - ref).max() <= 1e-4
    assert (out.argmax(1) == ref.argmax(1)).all()


def test_mobile_like_model_compiles_every_layer_type(mobile_like):
    model = mobile_like
    names = kernel_layer_names(model, (3, 12, 12))
    result = compile_model(model, (3, 12, 12), TARGET, batch=2, measure=False, names=names)
    _agree(result, model, 2)
    by_name = {c.name: c for c in result.layers}
    assert [c.name for c in result.layers] == names  # one choice per kernel layer, in graph order
    assert by_name["dw.0"].kernel == "depthwise" and by_name["dw.0"].fused == ["bias", "relu6"]
    assert by_name["dw.0"].layout == "phased" and by_name["dw1.0"].layout == "padded"
    assert by_name["stem.0"].kernel == "dense" and by_name["stem.0"].fused == ["bias", "relu6"]
    assert by_name["down.0"].kernel == "sparse" and by_name["down.0"].layout == "phased"
    assert by_name["fc1"].kernel == "linear" and by_name["fc1"].fused == ["bias", "relu"]
    assert by_name["fc2"].kernel == "linear" and by_name["fc2"].shape == [10, 20]
    json.dumps(choices_as_dicts(result.layers))
    # the old behaviour stays available: only groups == 1 convs lowered, names still aligned
    _, only_convs = rewrite_convs(export_relax(model, (3, 12, 12), 1), 1, TARGET, TuningDB(None), names=names,
                                  measure=False, other_layers=False)
    assert [c.name for c in only_convs] == ["stem.0", "expand.0", "project.0", "down.0"]


def test_measured_compile_records_choices_and_caches(mobile_like, tmp_path):
    db = TuningDB(str(tmp_path / "tuning.json"))
    result = compile_model(mobile_like, (3, 12, 12), TARGET, batch=1, db=db,
                           names=kernel_layer_names(mobile_like, (3, 12, 12)))
    _agree(result, mobile_like, 1)
    rows = choices_as_dicts(result.layers)
    json.dumps(rows)
    for c in result.layers:
        if c.op in ("depthwise", "linear"):  # each measured against TVM's default lowering
            assert c.default_ms is not None and c.default_ms > 0 and "tvm-default" in c.measured
            assert (c.kernel == "tvm-default") == (c.decision is LayerDecision.DEFAULT_LOWERING)
            assert (c.kernel == "tvm-default") == (c.measured["tvm-default"] < c.measured["kernel"])
    down = next(c for c in result.layers if c.name == "down.0")  # stride 2: both layouts timed
    assert {"dense/padded", "dense/phased"} <= set(down.measured)
    # a second rewrite of the same shapes measures nothing again and decides the same
    again = TuningDB(str(tmp_path / "tuning.json"))
    n_entries = len(again.entries)
    _, layers = rewrite_convs(export_relax(mobile_like, (3, 12, 12), 1), 1, TARGET, again)
    assert len(again.entries) == n_entries
    assert [(c.kernel, c.layout, c.tile) for c in layers] == [(c.kernel, c.layout, c.tile) for c in result.layers]


def test_searches_are_cached_in_the_db(tmp_path):
    db = TuningDB(str(tmp_path / "t.json"))
    dw = DepthwiseSpec(1, 8, 8, 8, 3, 1, 2, "relu6")
    lin = LinearSpec(1, 16, 10, "relu")
    first = (best_depthwise(dw, TARGET, db, candidates=(8, 16)), best_linear(lin, TARGET, db, tiles=(16,)),
             time_default_lowering(dw, np.ones((8, 1, 3, 3), np.float32), np.zeros(8, np.float32), TARGET, db))
    conv = ConvSpec(1, 4, 8, 8, 8, 3, 3, 1, 2, 8, 36, True)
    tile = best_tile(conv, TARGET, db, sparse=False, candidates=(8,), phased=True)
    db.save()
    db2 = TuningDB(str(tmp_path / "t.json"))
    assert best_depthwise(dw, TARGET, db2, candidates=(8, 16)) == first[0]
    assert best_linear(lin, TARGET, db2, tiles=(16,)) == first[1]
    assert time_default_lowering(dw, np.ones((8, 1, 3, 3), np.float32), np.zeros(8, np.float32), TARGET,
                                 db2) == first[2]
    assert best_tile(conv, TARGET, db2, sparse=False, candidates=(8,), phased=True) == tile
    assert any("|phased|" in k for k in db2.entries)
