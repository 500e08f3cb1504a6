"""Tests for suite.core.zoo: shapes, determinism, width scaling, normalisation, profiling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from suite.core.errors import ConfigError, UnknownNameError
from suite.core.zoo import ZOO, Normalize, build_model, count_macs, count_params, layer_table

ARCHS = sorted(ZOO)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_zoo_registry():
    assert set(ZOO) == {"vgg16", "resnet18", "resnet20", "mobilenetv2"}
    for arch, (builder, desc) in ZOO.items():
        assert callable(builder)
        assert isinstance(desc, str) and desc and "\n" not in desc


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_logits_shape_and_finite(arch, in_channels):
    model = build_model(arch, num_classes=7, width=0.25, in_channels=in_channels)
    for size in (16, 24, 32):
        x = torch.rand(2, in_channels, size, size)
        model.train()
        y = model(x)
        assert y.shape == (2, 7)
        assert torch.isfinite(y).all()
        model.eval()
        with torch.no_grad():
            y = model(x)
        assert y.shape == (2, 7)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_non_square_and_odd_inputs(arch):
    model = build_model(arch, num_classes=5, width=0.25).eval()
    with torch.no_grad():
        for h, w in ((16, 24), (33, 17), (20, 20)):
            y = model(torch.rand(1, 3, h, w))
            assert y.shape == (1, 5) and torch.isfinite(y).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_eval_deterministic_and_seeded_init(arch):
    torch.manual_seed(123)
    a = build_model(arch, width=0.25).eval()
    torch.manual_seed(123)
    b = build_model(arch, width=0.25).eval()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        y1, y2, y3 = a(x), a(x), b(x)
    assert torch.equal(y1, y2)
    assert torch.equal(y1, y3)
    # a single image gives the same logits as inside a batch (no batch coupling in eval)
    with torch.no_grad():
        assert torch.allclose(a(x[:1]), y1[:1], atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_width_scales_params_quadratically(arch):
    p_half = count_params(build_model(arch, width=0.5))
    p_full = count_params(build_model(arch, width=1.0))
    ratio = p_full / p_half
    # exact 4x for pure convs; heads/rounding/min-channel rules pull it a bit lower
    assert 2.5 < ratio < 4.5, ratio


@pytest.mark.parametrize("arch", ARCHS)
def test_normalize_inside(arch):
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.4)
    model = build_model(arch, width=0.25, mean=mean, std=std)
    first_name, first = next(iter(model.named_children()))
    assert first_name == "normalize" and isinstance(first, Normalize)
    sd = model.state_dict()
    assert "normalize.mean" in sd and "normalize.std" in sd
    assert torch.allclose(sd["normalize.mean"].flatten(), torch.tensor(mean))
    assert torch.allclose(sd["normalize.std"].flatten(), torch.tensor(std))
    # defaults
    d = build_model(arch, width=0.25, in_channels=1).state_dict()
    assert d["normalize.mean"].shape == (1, 1, 1, 1)
    assert d["normalize.mean"].item() == 0.5 and d["normalize.std"].item() == 0.25
    # normalisation actually applies: (x - mean) / std
    x = torch.rand(2, 3, 8, 8)
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(model.normalize(x), expected, atol=1e-6)
    # state dict round-trips into a default-built model, including the buffers
    other = build_model(arch, width=0.25)
    other.load_state_dict(sd)
    assert torch.allclose(other.normalize.mean.flatten(), torch.tensor(mean))


def test_common_layout():
    for arch in ARCHS:
        model = build_model(arch, num_classes=4, width=0.25)
        names = [n for n, _ in model.named_children()]
        assert names == ["normalize", "features", "pool", "flatten", "classifier"]
        assert isinstance(model.classifier, nn.Linear) and model.classifier.out_features == 4
        emb = model.eval().forward_features(torch.rand(1, 3, 16, 16))
        assert emb.shape == (1, model.classifier.in_features)


def test_only_standard_modules():
    allowed = (
        Normalize, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d,
        nn.Flatten, nn.Linear, nn.Identity,
    )
    for arch in ARCHS:
        for name, m in build_model(arch, width=0.25).named_modules():
            if next(iter(m.children()), None) is None and name:
                assert isinstance(m, allowed), (arch, name, type(m))


def test_build_model_validation():
    with pytest.raises(UnknownNameError, match="resnet20"):
        build_model("alexnet")
    for bad in (0, -1.0, float("nan"), float("inf"), "1.0", True):
        with pytest.raises(ConfigError):
            build_model("resnet20", width=bad)
    with pytest.raises(ConfigError):
        build_model("resnet20", num_classes=0)
    with pytest.raises(ConfigError):
        build_model("vgg16", in_channels=0)
    with pytest.raises(ConfigError):
        build_model("vgg16", mean=(0.5, 0.5))  # 2 values for 3 channels
    with pytest.raises(ConfigError):
        build_model("vgg16", std=(0.2, 0.0, 0.2))
    # direct builders validate too
    builder, _ = ZOO["mobilenetv2"]
    with pytest.raises(ConfigError):
        builder(width=0)


def test_count_macs_hand_computed():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=1, padding=1),  # 8x8x8 out: 512 * 27 = 13824
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4),  # 4x4x8 out: 128 * 2*9 = 2304
        nn.Flatten(),
        nn.Linear(128, 10),  # 1280
    )
    assert count_macs(net, (3, 8, 8)) == 13824 + 2304 + 1280
    assert count_params(net) == (8 * 27 + 8) + (8 * 18 + 8) + (1280 + 10)
    rows = layer_table(net, (3, 8, 8))
    assert [r["name"] for r in rows] == ["0", "1", "3"]
    assert rows[1]["type"] == "Conv2d" and rows[1]["groups"] == 4
    assert rows[1]["weight_shape"] == (8, 2, 3, 3)
    assert rows[1]["output_shape"] == (8, 4, 4)
    assert rows[2]["output_shape"] == (10,)
    for r in rows:
        g = r["gemm"]
        assert g["M"] * g["N"] * g["K"] * g["groups"] == r["macs"]


def test_profile_restores_training_flags():
    model = build_model("resnet20", width=0.25)
    model.train()
    model.features.layer2.eval()  # mixed flags must survive
    before = {n: m.training for n, m in model.named_modules()}
    count_macs(model, (3, 16, 16))
    layer_table(model, (3, 16, 16), all_leaves=True)
    assert {n: m.training for n, m in model.named_modules()} == before
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ConfigError):
        count_macs(model, (3, 16))


def test_layer_table_covers_model():
    model = build_model("mobilenetv2", width=0.25)
    rows = layer_table(model, (3, 32, 32))
    assert sum(r["macs"] for r in rows) == count_macs(model, (3, 32, 32))
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(rows) == len(convs)
    assert any(r.get("groups", 1) > 1 for r in rows)  # depthwise convs present
    assert all(set(r) >= {"name", "type", "weight_shape", "output_shape", "macs", "params"} for r in rows)


def _close(value, ref, rel):
    return math.isclose(value, ref, rel_tol=rel)


def test_vgg16_reference_numbers():
    model = build_model("vgg16", width=1.0)
    macs = count_macs(model, (3, 32, 32))
    assert _close(macs, 313.7e6, 0.02), macs
    assert _close(count_params(model), 14.73e6, 0.02)


def test_resnet20_reference_numbers():
    model = build_model("resnet20", width=1.0)
    assert _close(count_params(model), 0.27e6, 0.05)
    assert _close(count_macs(model, (3, 32, 32)), 41e6, 0.05)


def test_resnet18_reference_numbers():
    model = build_model("resnet18", width=1.0)
    assert _close(count_params(model), 11.17e6, 0.02)
    assert _close(count_macs(model, (3, 32, 32)), 0.556e9, 0.02)


def test_mobilenetv2_reference_numbers():
    model = build_model("mobilenetv2", width=1.0)
    params = count_params(model)
    assert 2.2e6 <= params <= 2.3e6, params


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_torch_export(arch):
    model = build_model(arch, width=0.25).eval()
    x = torch.rand(2, 3, 32, 32)
    ep = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.allclose(ep.module()(x), model(x), atol=1e-5)
