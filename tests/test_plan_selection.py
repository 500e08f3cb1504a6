"""Rival plans of the ``auto`` search: priced on the same latency table, fitted to the same target, tried on
validation data (never test), the best kept."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from compression import plan_selection as sel
from compression.decisions import LayerDecision
from compression.layers import list_layers
from compression.mapping import AutoCompressor, rule_plan, uniform_plan
from compression.recovery import RecoveryConfig
from suite.core.sources.base import ImageSplit
from suite.core.sources.embedded import load_embedded


class Net(nn.Module):
    def __init__(self, channels: int = 3, classes: int = 10) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(channels, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.c3 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = torch.relu(self.c3(x))
        return self.fc(x.mean(dim=(2, 3)))


class FakeTable:
    """A latency table with known answers: dense = weights x 1 us; a block mask pays its kept fraction + 5%;
    ``pattern`` never pays (as on the TVM table, where its zeros do not line up across a row-block)."""

    backend = "fake"
    drops_unaccelerated = True

    def __init__(self) -> None:
        self.calls = 0

    def measure(self, layer, scheme, sparsity, settings, repeats=5, *, mask=None):
        self.calls += 1
        dense = layer.numel * 1e-3
        if scheme == "dense" or mask is None:
            return dense
        if scheme == "pattern":
            return dense * 1.2
        return dense * (float(mask.float().mean()) + 0.05)

    def save(self) -> None:
        pass


class PoisonedSplit(ImageSplit):
    def tensors(self, idx=None):
        raise AssertionError("the test split was read")


@pytest.fixture(scope="module")
def source():
    src = load_embedded("digits16", limit=96)
    return dataclasses.replace(src, test=PoisonedSplit(src.test.images, src.test.labels, src.test.indices))


@pytest.fixture(scope="module")
def net(source):
    torch.manual_seed(0)
    return Net(source.shape[0]).eval()


def _prunable(net, source):
    layers = list_layers(net, source.shape)
    return layers, {l.name for l in layers if not l.first and not l.classifier}


def test_pricing_plans_unaccelerated_layers_dense_and_sums_the_table(net, source):
    layers, prunable = _prunable(net, source)
    table = FakeTable()
    pricer = sel.PlanPricer(net, layers, sorted(prunable), table)
    plan = uniform_plan(layers, prunable, "pattern", {"entries": 4}, 0.5)
    priced, fraction, sparsity = pricer.price(plan)
    assert all(l.decision is LayerDecision.DENSE_BY_SEARCH for l in priced.layers if l.name in prunable)
    assert fraction == pytest.approx(1.0) and sparsity == 0.0
    block = uniform_plan(layers, prunable, "block", {"r": 8, "c": 16}, 0.75)
    priced, fraction, sparsity = pricer.price(block)
    assert sparsity == pytest.approx(0.75, abs=0.02)
    assert fraction == pytest.approx(1 - sparsity + 0.05, abs=1e-6)
    for l in priced.pruned():
        assert l.latency_ms < l.dense_latency_ms


@pytest.mark.parametrize("target", [{"latency_target": 0.4}, {"sparsity": 0.6}])
def test_a_rival_is_the_least_pruning_that_meets_the_target(net, source, target):
    layers, prunable = _prunable(net, source)
    pricer = sel.PlanPricer(net, layers, sorted(prunable), FakeTable())

    def build(s):
        return uniform_plan(layers, prunable, "block", {"r": 8, "c": 16}, s)

    rival = sel.fit_rival("uniform-block", build, pricer, sparsity=target.get("sparsity"),
                          latency_target=target.get("latency_target"))
    assert rival is not None and rival.knob is not None
    if "latency_target" in target:
        assert rival.latency_fraction <= 0.4
        _, looser, _ = pricer.price(build(rival.knob - 0.02))
        assert looser > 0.4  # a little less pruning misses the target
    else:
        assert rival.sparsity >= 0.6
        _, _, looser = pricer.price(build(rival.knob - 0.02))
        assert looser < 0.6
    # an impossible target: no rival
    assert sel.fit_rival("uniform-block", build, pricer, sparsity=None, latency_target=0.01) is None


def test_trials_keep_the_best_on_validation_and_are_reproducible(net, source):
    layers, prunable = _prunable(net, source)
    pricer = sel.PlanPricer(net, layers, sorted(prunable), FakeTable())
    rivals = []
    for name, s in (("light", 0.3), ("heavy", 0.95)):
        plan, fraction, sparsity = pricer.price(uniform_plan(layers, prunable, "block", {"r": 8, "c": 16}, s))
        rivals.append(sel.RivalPlan(name, plan, s, fraction, sparsity))
    rivals.append(sel.RivalPlan("rule", pricer.price(rule_plan(layers, prunable, 0.5))[0], 0.5, 1.0, 0.5))
    cfg = RecoveryConfig(lr=0.05, batch_size=32)
    best = sel.run_trials(rivals, net, source, cfg, images=64, seed=3)  # the poisoned test split is never read
    accs = [r.val_acc for r in rivals]
    assert all(a is not None and 0.0 <= a <= 1.0 for a in accs)
    assert best.val_acc == max(accs) and best is rivals[accs.index(max(accs))]
    again = [dataclasses.replace(r, val_acc=None) for r in rivals]
    sel.run_trials(again, net, source, cfg, images=64, seed=3)
    assert [r.val_acc for r in again] == accs
    assert net.c2.weight.abs().min() > 0  # the model itself is never pruned


def test_auto_search_records_its_rivals_and_keeps_the_best(net, source):
    comp = AutoCompressor(0.0, mapping="search", latency_target=0.5, ratios=(0.5, 0.75, 0.9), trial_images=64,
                          epochs=1)
    comp.latency_table = FakeTable  # known latencies: the plan does not depend on this machine's timings
    plan = comp.plan_for(net, source, seed=0, device="cpu")
    rivals = plan.search["rivals"]
    assert rivals[0]["family"] == "search" and {r["family"] for r in rivals} <= set(sel.FAMILIES)
    assert len(rivals) >= 2
    assert plan.search["chosen"] in {r["family"] for r in rivals}
    chosen = next(r for r in rivals if r["family"] == plan.search["chosen"])
    assert chosen["val_acc"] == max(r["val_acc"] for r in rivals)
    assert plan.search["predicted_latency_fraction"] == chosen["predicted_latency_fraction"]
    for r in rivals:
        assert r["predicted_latency_fraction"] <= 0.5 + 1e-9
    # trial_images=0: the search's plan as is, no rivals
    off = AutoCompressor(0.0, mapping="search", latency_target=0.5, ratios=(0.5, 0.75, 0.9), trial_images=0,
                         epochs=1)
    off.latency_table = FakeTable
    assert "rivals" not in off.plan_for(net, source, seed=0, device="cpu").search


def test_a_search_plan_of_an_older_planner_is_not_reused_from_the_cache():
    from compression.cache import compressed_key

    search = AutoCompressor(0.5, mapping="search")
    assert search.algorithm_version is not None and AutoCompressor(0.5).algorithm_version is None
    base = dict(dense_sha256="ab" * 32, compress="auto", sparsity=0.5, args={"mapping": "search"}, seed=0,
                profile="default")
    assert compressed_key(**base, algorithm=search.algorithm_version) != compressed_key(**base)
    assert "algorithm" not in compressed_key(**base)  # other compressors keep their existing cache keys
