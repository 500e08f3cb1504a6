"""SR deployment (issue 18, point 5): eager, ONNX Runtime and TVM (dense / block-sparse) agree on tiny inputs.

Tiny models and 24x24 inputs, one thread, no tile timing (``measure=False``:
default tile, compact kernel where under 70 % of a row-block's columns are kept).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compression.sr_deploy import (RuntimeModule, block_prune_sr, eager_runtime, lower_for_deploy, max_abs_diff,
                                   onnx_runtime, sr_conv_names, subpixel_from_deconv, time_interleaved, tvm_runtime)
from suite.core.errors import ConfigError
from suite.core.sr.models import ResidualSR, build_sr_model

pytest.importorskip("tvm")

SHAPE = (3, 24, 24)
TOL = 1e-4
# tiny members of each family: (zoo name, width, depth)
TINY = {"espcn": ("espcn", 0.25, 1.0), "fsrcnn": ("fsrcnn", 0.5, 0.5), "edsr": ("edsr", 0.25, 0.125)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _model(family: str, scale: int = 2) -> nn.Module:
    torch.manual_seed(0)
    if family == "residual-nn":  # a supernet sub-network with the nearest-neighbour anchor (k3 and k5 blocks)
        model = ResidualSR(scale, 8, (3, 5), anchor=True).eval()
    else:
        name, width, depth = TINY[family]
        model = build_sr_model(name, scale, width, depth).eval()
    with torch.no_grad():  # FSRCNN's deconvolution starts at std 0.001: make every layer matter in the comparison
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(1.0 if p.std() > 0.01 else 100.0)
    return model


def _frame(seed: int = 0, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).random((1, *shape), dtype=np.float32)


# --------------------------------------------------------------------------- deconvolution as sub-pixel conv


@pytest.mark.parametrize("scale,kernel,pad", [(2, 9, 4), (3, 9, 4), (4, 9, 4), (2, 4, 1), (3, 5, 2)])
def test_subpixel_conv_equals_transposed_conv(scale, kernel, pad):
    torch.manual_seed(1)
    deconv = nn.ConvTranspose2d(5, 3, kernel, stride=scale, padding=pad, output_padding=scale - kernel + 2 * pad)
    x = torch.rand(2, 5, 7, 9)
    sub = subpixel_from_deconv(deconv)
    with torch.no_grad():
        want, got = deconv(x), sub(x)
    assert got.shape == want.shape == (2, 3, 7 * scale, 9 * scale)
    assert float((got - want).abs().max()) < 1e-5
    assert sub[0].kernel_size[0] == sub[0].padding[0] * 2 + 1


def test_subpixel_refuses_other_deconvolutions():
    with pytest.raises(ConfigError, match="sub-pixel"):
        subpixel_from_deconv(nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1))  # output 2h - 1, not 2h
    with pytest.raises(ConfigError):
        subpixel_from_deconv(nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1, groups=2))


def test_lower_for_deploy_leaves_the_model_alone():
    model = _model("fsrcnn")
    lowered = lower_for_deploy(model)
    assert isinstance(model.deconv, nn.ConvTranspose2d)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in lowered.modules())
    x = torch.from_numpy(_frame())
    with torch.no_grad():
        assert float((lowered(x) - model(x)).abs().max()) < 1e-5


# --------------------------------------------------------------------------- block pruning


def test_block_pruning_masks_and_layer_choice():
    model = _model("edsr")
    names = sr_conv_names(model)
    assert "head" not in names and "tail" not in names and "body_end" in names
    pruned, masks = block_prune_sr(model, 0.5)
    assert masks.names() == names
    for name in names:
        w = pruned.get_submodule(name).weight.detach()
        assert bool((w[~masks[name]] == 0).all())
        kept = masks[name].reshape(w.shape[0], -1)
        for b in range(0, w.shape[0], 8):  # every row-block keeps the same columns for all its filters
            assert bool((kept[b:b + 8] == kept[b]).all())
    assert 0.45 <= masks.sparsity() <= 0.55
    assert not bool((model.get_submodule(names[0]).weight == 0).any())  # the input model is not modified
    # FSRCNN: the deconvolution writes the image, so its last conv is prunable; the deconvolution never is
    fsrcnn = _model("fsrcnn")
    assert sr_conv_names(fsrcnn)[-1] == "body.8" and "deconv" not in sr_conv_names(fsrcnn)
    with pytest.raises(ConfigError):
        block_prune_sr(model, 1.0)


# --------------------------------------------------------------------------- agreement with eager


@pytest.mark.parametrize("family", ["espcn", "fsrcnn", "edsr", "residual-nn"])
def test_onnx_agrees_with_eager(family, tmp_path):
    model = _model(family)
    pruned, _ = block_prune_sr(model, 0.5)
    x = _frame()
    for m in (model, pruned):
        want = eager_runtime(m).call(x)
        got = onnx_runtime(m, SHAPE, threads=1, workdir=tmp_path).call(x)
        assert got.shape == (1, 3, 48, 48)
        assert max_abs_diff(got, want) <= TOL


@pytest.mark.parametrize("family", ["espcn", "fsrcnn", "edsr", "residual-nn"])
def test_tvm_dense_and_block_sparse_agree_with_eager(family):
    model = _model(family)
    pruned, masks = block_prune_sr(model, 0.75)
    x = _frame()
    dense = tvm_runtime(model, SHAPE, sparse=False, measure=False)
    assert dense.info["sparse_layers"] == 0
    assert max_abs_diff(dense.call(x), eager_runtime(model).call(x)) <= TOL
    sparse = tvm_runtime(pruned, SHAPE, sparse=True, measure=False)
    assert sparse.info["sparse_layers"] == len(masks.names())  # every pruned conv through the compact kernel
    kept = {l["kernel"] for l in sparse.info["layers"]}
    assert kept <= {"sparse", "dense"}  # every conv (the sub-pixel form of FSRCNN's deconvolution too) is ours
    out = sparse.call(x)
    assert out.shape == (1, 3, 48, 48)
    assert max_abs_diff(out, eager_runtime(pruned).call(x)) <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("family", ["espcn", "fsrcnn", "edsr", "residual-nn"])
def test_tvm_x4_and_default_pipeline_agree_with_eager(family):
    """x4 (EDSR: two pixel-shuffle stages); TVM's own pipeline and its conv2d_transpose lowering agree too."""
    model = _model(family, scale=4)
    x = _frame(1, (3, 12, 16))
    want = eager_runtime(model).call(x)
    assert want.shape == (1, 3, 48, 64)
    ours = tvm_runtime(model, (3, 12, 16), sparse=False, measure=False)
    assert max_abs_diff(ours.call(x), want) <= TOL
    plain = tvm_runtime(model, (3, 12, 16), sparse=False, measure=False, schedule_elementwise=False,
                        lower_deconv=False)
    assert max_abs_diff(plain.call(x), want) <= TOL


def test_tanh_fast_math_is_accurate_over_its_range():
    """ESPCN's tanh as TVM's fast approximation: within 1e-6 of eager over [-20, 20] (the clamp of the rational fit)."""

    class Tanh(nn.Module):
        scale = 1

        def forward(self, x):
            return torch.tanh(40.0 * x - 20.0)

    x = np.linspace(0.0, 1.0, 3 * 24 * 24, dtype=np.float32).reshape(1, *SHAPE)
    rt = tvm_runtime(Tanh(), SHAPE, sparse=False, measure=False)
    assert rt.info["fast_math"] is True
    assert max_abs_diff(rt.call(x), eager_runtime(Tanh()).call(x)) <= 1e-6


# --------------------------------------------------------------------------- timing and evaluation faces


def test_time_interleaved_and_runtime_module():
    model = _model("espcn")
    calls = {"n": 0}

    def factory(shape):
        calls["n"] += 1
        return eager_runtime(model, name=f"eager{shape}")

    wrapped = RuntimeModule(factory, scale=2)
    x = torch.from_numpy(np.concatenate([_frame(0), _frame(1)]))
    with torch.no_grad():
        assert torch.allclose(wrapped(x), model(x), atol=1e-6)
        wrapped(x[:1])
    assert calls["n"] == 1  # one build per input shape
    timings = time_interleaved({"a": eager_runtime(model), "b": eager_runtime(model)}, _frame(), reps=3, warmup=1)
    assert set(timings) == {"a", "b"} and all(len(t["samples_ms"]) == 3 and t["median_ms"] > 0
                                              for t in timings.values())
    with pytest.raises(ConfigError):
        time_interleaved({"a": eager_runtime(model)}, _frame(), reps=0)
