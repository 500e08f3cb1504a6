"""Pruning-as-Search (compression.pas): STE gates, shared coupling gates, MAC target."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from compression.channel import apply_plan
from compression.pas import BinaryGate, attach_gates, pas_prune
from suite.core.errors import ConfigError
from suite.core.sources.embedded import load_embedded
from suite.core.zoo import build_model, layer_table

SHAPE = (3, 16, 16)
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one intra-op thread is fastest


def _model(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, 10, 0.25).eval()


@pytest.fixture(scope="module")
def digits():
    return load_embedded("digits16", limit=64)


def test_binary_gate_forward_is_binarised_and_ste_passes_gradient():
    gate = BinaryGate(4)
    assert isinstance(gate, nn.Conv2d) and gate.groups == 4 and gate.weight.shape == (4, 1, 1, 1)
    assert bool((gate.weight == 1).all())
    with torch.no_grad():
        gate.weight.view(-1).copy_(torch.tensor([0.7, 0.3, 0.5, 1.0]))
    x = torch.randn(2, 4, 3, 3)
    r = torch.randn(2, 4, 3, 3)
    y = gate(x)
    assert torch.equal(y, x * torch.tensor([1.0, 0.0, 1.0, 1.0]).view(1, 4, 1, 1))
    (y * r).sum().backward()
    assert gate.weight.grad is not None
    # straight-through: d/dw (x * b(w)) == x, also for the switched-off channel 1
    assert torch.allclose(gate.weight.grad.view(-1), (x * r).sum((0, 2, 3)))
    assert float(gate.weight.grad.view(-1)[1].abs()) > 0


def test_coupled_layers_share_one_gate_resnet20():
    model = _model("resnet20")
    gs = attach_gates(model, SHAPE)
    try:
        assert len(gs.gates) == len(gs.groups)
        hooked = [n for g in gs.groups for n in g.norms]
        assert len(hooked) == len(set(hooked))  # every BN has at most one gate
        stream = [g for g in gs.groups if "features.layer2.0.conv2" in g.out_layers]
        assert len(stream) == 1
        g = stream[0]
        assert {"features.layer2.0.shortcut.0", "features.layer2.1.conv2", "features.layer2.2.conv2"} <= set(g.out_layers)
        assert {"features.layer2.0.bn2", "features.layer2.0.shortcut.1", "features.layer2.2.bn2"} <= set(g.norms)
        # keep_first: the stem's residual stream (layer1) is not gated
        assert not any("features.layer1.0.conv2" in g.out_layers for g in gs.groups)
        dense = sum(r["macs"] for r in layer_table(model, SHAPE)
                    if r["name"] not in ("features.stem.0", "classifier"))
        assert gs.dense_macs == dense
    finally:
        gs.remove()


def test_mobilenet_depthwise_shares_the_expand_gate():
    model = _model("mobilenetv2")
    gs = attach_gates(model, SHAPE)
    gs.remove()
    g = next(g for g in gs.groups if "features.3.conv.0.0" in g.out_layers)
    assert "features.3.conv.1.0" in g.out_layers  # depth-wise conv, same channels
    assert {"features.3.conv.0.1", "features.3.conv.1.1"} <= set(g.norms)


@pytest.mark.parametrize("arch", ["resnet20", "mobilenetv2"])
def test_gated_network_equals_pruned_network(arch):
    """Switching gates off then removing those channels changes nothing (couplings are right)."""
    model = _model(arch)
    gs = attach_gates(model, SHAPE)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for g, gate in zip(gs.groups, gs.gates):
            off = torch.randperm(g.channels, generator=gen)[: g.channels // 2]
            gate.weight.view(-1)[off] = 0.2
    x = torch.rand(3, *SHAPE)
    with torch.no_grad():
        gated = model(x)
        gated_macs = float(gs.macs())
    gs.remove()
    plan = gs.plan([torch.zeros(g.channels, dtype=torch.float64) for g in gs.groups])
    assert all(len(plan[g.root]) == g.channels // 2 for g in gs.groups)
    apply_plan(model, SHAPE, plan, gs.graph)
    with torch.no_grad():
        assert torch.allclose(model(x), gated, atol=1e-5)
    pruned_macs = sum(r["macs"] for r in layer_table(model, SHAPE)
                      if r["name"] not in ("features.0.0", "features.stem.0", "classifier"))
    assert gated_macs == pruned_macs


def test_pas_lands_near_mac_target(digits):
    torch.manual_seed(0)
    model = build_model("resnet20", digits.num_classes, 0.25, in_channels=digits.shape[0])
    report = pas_prune(model, digits, digits.shape, 0.5, epochs=2, alpha=20.0, gate_lr=1.0, batch_size=8)
    dense = report.prunable_macs_before
    assert report.prunable_macs_target == round(0.5 * dense)
    assert abs(report.prunable_macs_after - report.prunable_macs_target) / dense <= 0.15
    assert report.prunable_macs_after < dense and report.macs_after < report.macs_before
    assert report.params_after < report.params_before
    assert report.seconds > 0 and math.isfinite(report.final_loss) and len(report.epoch_log) == 2
    assert any(after < before for before, after in report.widths.values())
    assert report.widths["classifier"] == [10, 10]
    with torch.no_grad():
        assert model(torch.rand(2, *digits.shape)).shape == (2, 10)
    d = report.as_dict()
    assert d["prunable_macs_after"] == report.prunable_macs_after


def test_pas_is_deterministic(digits):
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("resnet20", digits.num_classes, 0.25, in_channels=digits.shape[0])
        report = pas_prune(model, digits, digits.shape, 0.5, epochs=1, alpha=20.0, gate_lr=1.0,
                           batch_size=16, seed=3)
        states.append((report.widths, model.state_dict()))
    assert states[0][0] == states[1][0]
    assert all(torch.equal(v, states[1][1][k]) for k, v in states[0][1].items())


@pytest.mark.parametrize("kwargs", [dict(sparsity=1.0), dict(sparsity=-0.2), dict(epochs=0),
                                    dict(alpha=-1.0), dict(gate_lr=0.0), dict(batch_size=1)])
def test_pas_rejects_bad_settings(kwargs, digits):
    args = dict(sparsity=0.5)
    args.update(kwargs)
    sparsity = args.pop("sparsity")
    with pytest.raises(ConfigError):
        pas_prune(_model("resnet20"), digits, SHAPE, sparsity, **args)
