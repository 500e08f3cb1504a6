"""Physical filter/channel pruning (compression.channel) on the zoo models."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from compression.channel import channel_plan_json, export_shapes, prune_channels, rebuild_pruned
from suite.core.errors import ConfigError
from suite.core.zoo import build_model, count_params

SHAPE = (3, 16, 16)
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one intra-op thread is fastest
ARCHS = ["resnet18", "resnet20", "mobilenetv2", "vgg16"]


def _model(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, 10, 0.25).eval()


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("arch", ARCHS)
def test_prune_shrinks_tensors_and_keeps_contract(arch):
    model = _model(arch)
    dense_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    params = count_params(model)
    first_out = _first_conv(model).out_channels
    x = torch.rand(3, *SHAPE)

    report = prune_channels(model, SHAPE, 0.5)

    assert abs(report.achieved_sparsity - 0.5) <= 0.03
    assert report.params_after == count_params(model) < params
    assert report.macs_after < report.macs_before
    shrunk = [k for k, v in model.state_dict().items() if k.endswith("weight") and tuple(v.shape) != dense_shapes[k]]
    assert len(shrunk) >= 5
    for k, v in model.state_dict().items():  # nothing grows
        assert all(a <= b for a, b in zip(v.shape, dense_shapes[k]))
    assert model.classifier.out_features == 10
    assert model.classifier.in_features == model.classifier.weight.shape[1]
    first = _first_conv(model)
    assert first.in_channels == 3 and first.out_channels == first_out  # keep_first
    with torch.no_grad():
        assert model(x).shape == (3, 10)
    # the report's per-layer widths agree with the modules
    mods = dict(model.named_modules())
    for row in report.layers:
        m = mods[row.name]
        assert row.out_after == (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
        assert row.out_after <= row.out_before
    plan = channel_plan_json(report)
    assert json.loads(json.dumps(plan)) == plan and plan["history"]


def test_depthwise_and_residual_stay_consistent():
    model = _model("mobilenetv2")
    prune_channels(model, SHAPE, 0.6)
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1:
            assert m.groups == m.in_channels == m.out_channels
            assert m.weight.shape[1] == 1
    model = _model("resnet20")
    prune_channels(model, SHAPE, 0.6)
    for block in model.features.layer2:  # residual stream: conv2 / shortcut widths agree
        assert block.conv2.out_channels == model.features.layer2[0].shortcut[0].out_channels
    with torch.no_grad():
        assert model(torch.rand(2, *SHAPE)).shape == (2, 10)


@pytest.mark.parametrize("importance", ["l2", "l1"])
def test_importance_keeps_planted_filter(importance):
    model = _model("vgg16")
    conv, bn = model.features[3][0], model.features[3][1]  # first conv of block 2
    with torch.no_grad():
        conv.weight[5].mul_(100.0)
        bn.weight[5] = 123.0
    prune_channels(model, SHAPE, 0.7, importance=importance)
    assert conv.out_channels < 32
    assert bool((bn.weight == 123.0).any())
    norms = conv.weight.detach().flatten(1).norm(dim=1)
    assert float(norms.max()) > 10 * float(norms.median())


def test_round_to_and_per_layer_ratio():
    model = _model("vgg16")
    prune_channels(model, SHAPE, 0.5, round_to=8)
    for m in model.features.modules():
        if isinstance(m, nn.Conv2d) and m is not model.features[0][0]:
            assert m.out_channels % 8 == 0
    model = _model("vgg16")
    report = prune_channels(model, SHAPE, 0.0, per_layer_ratio={"features.3.0": 0.5})
    assert model.features[3][0].out_channels == 16  # 32 -> 16
    assert model.features[4][0].in_channels == 16
    assert sum(r.out_after != r.out_before for r in report.layers) == 1
    assert report.channel_ratio is None


def test_keep_first_false_prunes_stem_outputs():
    model = _model("vgg16")
    prune_channels(model, SHAPE, 0.5, keep_first=False)
    first = _first_conv(model)
    assert first.in_channels == 3 and first.out_channels < 16


@pytest.mark.parametrize("arch", ARCHS)
def test_rebuild_and_reload_round_trip(arch, tmp_path):
    model = _model(arch)
    prune_channels(model, SHAPE, 0.5, importance="l1")
    with torch.no_grad():  # non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    (tmp_path / "shapes.json").write_text(json.dumps(export_shapes(model)))

    fresh = _model(arch, seed=1)
    rebuild_pruned(fresh, json.loads((tmp_path / "shapes.json").read_text()), SHAPE)
    fresh.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    fresh.eval()
    x = torch.rand(4, *SHAPE)
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))


def test_rebuild_rejects_foreign_shapes():
    from suite.core.errors import ArtifactError

    shapes = export_shapes(_model("resnet20"))
    with pytest.raises(ArtifactError):
        rebuild_pruned(_model("vgg16"), shapes, SHAPE)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, math.nan, "0.5", True])
def test_bad_sparsity_raises(bad):
    with pytest.raises(ConfigError):
        prune_channels(_model("vgg16"), SHAPE, bad)


def test_bad_settings_raise():
    with pytest.raises(ConfigError):
        prune_channels(_model("vgg16"), SHAPE, 0.5, importance="taylor")
    with pytest.raises(ConfigError):
        prune_channels(_model("vgg16"), SHAPE, 0.5, per_layer_ratio={"nope": 0.5})
    with pytest.raises(ConfigError):
        prune_channels(_model("vgg16"), SHAPE, 0.5, per_layer_ratio={"features.3.0": 1.0})
    with pytest.raises(ConfigError):
        prune_channels(_model("vgg16"), SHAPE, 0.5, round_to=0)


def test_plan_json_replays_with_torch_pruning():
    from compression.channel import build_graph

    model = _model("resnet20")
    plan = json.loads(json.dumps(channel_plan_json(prune_channels(model, SHAPE, 0.5))))
    fresh = _model("resnet20", seed=1)
    build_graph(fresh, SHAPE).load_pruning_history(plan["history"])
    assert export_shapes(fresh) == export_shapes(model)
    assert plan["widths"]["classifier"] == [10, 10]
