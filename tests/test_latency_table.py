"""The ``auto`` planner's latency table measured on our TVM kernels.

Real measurements on tiny layers: the table packs each candidate's real mask
the way the compiler does, so schemes whose zeros do not line up across a
row-block measure as dense and are never picked; a plan never holds a layer
scheme that measured slower than the layer's dense kernel; the cached table
reproduces the plan without re-measuring.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compression.layers import list_layers
from compression.mapping import AutoCompressor
from compression.schemes import make_scheme
from compression.tvm_backend.latency_table import GRID, TVMLatencyTable
from suite.core.sources.embedded import load_embedded

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def source():
    return load_embedded("digits16", limit=64)


class Tiny(nn.Module):
    """Three 3x3 convs (one stride 2) and a classifier: enough layers for a plan, quick to compile."""

    def __init__(self, channels: int = 3, classes: int = 10) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(channels, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.c3 = nn.Conv2d(32, 32, 3, padding=1, stride=2)
        self.c4 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = torch.relu(self.c3(x))
        x = torch.relu(self.c4(x))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def tiny(source):
    torch.manual_seed(0)
    return Tiny(source.shape[0]).eval()


def test_layer_info_carries_what_the_kernel_needs(tiny, source):
    layers = {l.name: l for l in list_layers(tiny, source.shape)}
    assert layers["c3"].stride == 2 and layers["c3"].padding == 1
    assert layers["c3"].in_hw == tuple(source.shape[1:]) and layers["c4"].in_hw == (source.shape[1] // 2,) * 2
    table = TVMLatencyTable(None)
    spec = table.kernel_spec(layers["c3"])
    assert (spec.ci, spec.co, spec.stride, spec.pad, spec.kk) == (32, 32, 2, 1, 32 * 9)
    assert table.kernel_spec(layers["fc"]) is None  # no row-block kernel for linear layers: dense time


def test_masks_are_packed_like_the_compiler_and_rounded_up_to_the_grid(tiny, source, tmp_path):
    layer = {l.name: l for l in list_layers(tiny, source.shape)}["c4"]
    weight = tiny.c4.weight.detach()
    table = TVMLatencyTable(str(tmp_path / "db.json"))
    block = make_scheme("block", r=8, c=16).mask(weight, 0.75)
    assert table.kept_columns(block) <= layer.cols // 4 + 16
    # 2:4 per filter: 8 filters of a row-block keep (almost) every column between them -> the dense kernel
    nm = make_scheme("nm", n=2, m=4).mask(weight, 0.5)
    assert table.kept_columns(nm) > 0.9 * layer.cols
    dense = table.dense_ms(layer)
    if table.kept_columns(nm) == layer.cols:
        assert table.measure(layer, "nm", 0.5, {"n": 2, "m": 4}, mask=nm) == dense
    grid = table.grid(layer)
    assert len(grid) == GRID and grid[-1] == layer.cols
    assert table.measure(layer, "block", 0.75, {"r": 8, "c": 16}, mask=block) > 0


def test_search_on_the_tvm_table_never_picks_a_scheme_slower_than_dense(tiny, source, tmp_path):
    db = str(tmp_path / "tuning.json")
    comp = AutoCompressor(0.6, mapping="search", latency_cache=db, ratios=(0.5, 0.75, 0.9), epochs=1)
    plan = comp.plan_for(tiny, source, seed=0, device="cpu")
    assert plan.search["latency_backend"] == "tvm-kernels"
    assert plan.search["predicted_sparsity"] >= 0.6 - 1e-9
    pruned = [l for l in plan.layers if l.scheme != "dense"]
    assert pruned, plan.as_dict()
    for l in pruned:
        assert l.latency_ms < l.dense_latency_ms, (l.name, l.scheme, l.latency_ms, l.dense_latency_ms)
    assert set(plan.search["not_accelerated"]) == {"c2", "c3", "c4"}
    # the table is cached in the tuning database: the same seed gives the same plan with nothing re-measured
    again = AutoCompressor(0.6, mapping="search", latency_cache=db, ratios=(0.5, 0.75, 0.9), epochs=1)
    plan2 = again.plan_for(tiny, source, seed=0, device="cpu")
    assert [(l.name, l.scheme, l.sparsity) for l in plan2.layers] == [(l.name, l.scheme, l.sparsity)
                                                                      for l in plan.layers]
    assert plan2.search["latency_seconds"] < plan.search["latency_seconds"]
    assert again.table.kernels_timed == 0


def test_an_unreachable_target_names_what_the_tvm_table_left_out(tiny, source, tmp_path):
    from suite.core.errors import ConfigError

    comp = AutoCompressor(0.97, mapping="search", latency_cache=str(tmp_path / "db.json"), ratios=(0.5,), epochs=1)
    with pytest.raises(ConfigError, match="best reachable sparsity"):
        comp.plan_for(tiny, source, seed=0, device="cpu")
