"""Compiler-aware SR search (issue 18, point 4): :mod:`compression.sr_search`.

Tiny supernets / models, tiny photo crops, a few steps, one thread.  A stub
latency table (milliseconds proportional to MACs and to the kept columns of
each row-block, the way the compiler packs a block mask) keeps the unit tests
free of TVM; one slow test runs the search on the real
:class:`~compression.tvm_backend.latency_table.TVMLatencyTable` at a tiny frame.
"""

from __future__ import annotations

import copy

import pytest
import torch

from compression.sr_search import SRLatencyModel, SRSearchSettings, search_sr
from suite.core.errors import ConfigError
from suite.core.sr.models import SRChoice, SRSupernet, build_sr_model
from suite.core.sr.photos import load_photos

SCALE = 2


class StubTable:
    """ms = MACs / 1e8 dense; a row-block kernel costs ``0.1 + dense * kept / K`` (faster only when it pays)."""

    def __init__(self) -> None:
        self.calls = 0

    def dense_ms(self, layer, repeats: int = 5) -> float:
        self.calls += 1
        return layer.macs / 1e8

    def sparse_ms(self, layer, kept: int, repeats: int = 5) -> float:
        return 0.1 * self.dense_ms(layer) + self.dense_ms(layer) * kept / layer.cols

    def kept_columns(self, mask: torch.Tensor) -> int:
        m = mask.reshape(mask.shape[0], -1)
        rows = -(-m.shape[0] // 8)
        return max(int(m[i * 8:(i + 1) * 8].any(0).sum()) for i in range(rows))


class NoTestSource:
    """An SRSource whose test split cannot be read (the search must never touch it)."""

    def __init__(self, source) -> None:
        self._source = source
        self.scale = source.scale
        self.name = source.name

    def split(self, name: str):
        if name == "test":
            raise AssertionError("the search read the test split")
        return self._source.split(name)

    def __getattr__(self, name: str):
        if name == "test":
            raise AssertionError("the search read the test split")
        return getattr(self._source, name)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def source():
    src = load_photos(scale=SCALE, patch_size=32, patches_per_image=4, eval_size=48,
                      photos=["astronaut", "chelsea", "rocket"])
    return NoTestSource(src)


def _supernet(seed: int = 0) -> SRSupernet:
    torch.manual_seed(seed)
    return SRSupernet(SCALE, widths=(8, 16), max_depth=2, min_depth=1, kernel_sizes=(3, 5))


def _settings(target: float, **kw) -> SRSearchSettings:
    base = dict(latency_target_ms=target, frame_lr=(64, 64), table_tile=(16, 16), supernet_steps=3,
                population=3, generations=1, finetune_steps=3, batch_size=4, patch_size=16, val_crop=16,
                threads=1, seed=0)
    base.update(kw)
    return SRSearchSettings(**base)


def _space_ms(table, frame=(64, 64), tile=(16, 16)):
    """(smallest, largest) predicted ms of the tiny supernet's space on ``table``."""
    net = _supernet()
    lat = SRLatencyModel(table, frame, tile)
    small, large = net.extract(net.min_choice()), net.extract(net.max_choice())
    names = ["body.0.conv1", "body.0.conv2", "body_end"]
    lo = lat.model_ms(lat.layers(small), {n: 0.875 for n in names})
    hi = lat.model_ms(lat.layers(large), {})
    return lo, hi


def _predicted(result, table, scale_model) -> float:
    lat = SRLatencyModel(table, (64, 64), (16, 16))
    ratios = {n: v["ratio"] for n, v in result.choice["layers"].items()}
    return lat.model_ms(lat.layers(scale_model), ratios)


def test_supernet_search_reproducible_meets_target_and_masks_hold(source):
    table = StubTable()
    lo, hi = _space_ms(table)
    target = lo + 0.3 * (hi - lo)
    runs = []
    for _ in range(2):
        net = _supernet()
        res = search_sr(net, SCALE, source, _settings(target), table=StubTable(), log=lambda m: None)
        runs.append((net, res))
    (net, res), (_, res2) = runs
    assert res.choice == res2.choice
    assert res.predicted_ms == pytest.approx(res2.predicted_ms)
    assert res.val_psnr == pytest.approx(res2.val_psnr, abs=1e-5)
    arch = res.choice["architecture"]
    assert arch is not None and res.choice["base"] == "sr-supernet"
    # meets the target, and the prediction is the table's for the returned model
    assert res.predicted_ms <= target
    assert _predicted(res, table, res.model) == pytest.approx(res.predicted_ms, rel=1e-6)
    # masks applied and kept zero after fine-tuning; eval mode
    assert not res.model.training
    for name in res.masks.names():
        w = res.model.get_submodule(name).weight
        assert torch.all(w[~res.masks[name].bool()] == 0)
    pruned = {n for n, v in res.choice["layers"].items() if v["scheme"] == "block"}
    assert pruned == set(res.masks.names())
    # history: every scored candidate, JSON-ready
    import json

    json.dumps(res.history)
    json.dumps(res.choice)
    assert any(h["stage"] == "arch" for h in res.history)
    assert {"supernet", "arch_search", "ratio_search", "finetune"} <= set(res.seconds)
    # the chosen sub-network extracted equals the supernet's forward at that choice
    choice = SRChoice(arch["width"], tuple(arch["kernels"]))
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        assert torch.equal(net.extract(choice).eval()(x), net(x, choice))


def test_returned_model_is_the_masked_subnetwork_without_fine_tuning(source):
    table = StubTable()
    lo, hi = _space_ms(table)
    net = _supernet(1)
    res = search_sr(net, SCALE, source, _settings(lo + 0.5 * (hi - lo), finetune_steps=0, supernet_steps=2),
                    table=table, log=lambda m: None)
    arch = res.choice["architecture"]
    sub = net.extract(SRChoice(arch["width"], tuple(arch["kernels"]))).eval()
    res.masks.apply(sub)
    x = torch.rand(1, 3, 11, 13)
    with torch.no_grad():
        assert torch.allclose(sub(x), res.model(x), atol=0, rtol=0)


def test_fixed_model_search_prunes_to_target(source):
    torch.manual_seed(0)
    model = build_sr_model("espcn", SCALE, 0.25, 1.0).eval()
    before = copy.deepcopy(model.state_dict())
    table = StubTable()
    lat = SRLatencyModel(table, (64, 64), (16, 16))
    dense = lat.model_ms(lat.layers(model), {})
    res = search_sr(model, SCALE, source, _settings(dense * 0.9, finetune_steps=2), table=table,
                    log=lambda m: None)
    assert res.choice["architecture"] is None and res.choice["base"] == "espcn"
    assert res.predicted_ms <= dense * 0.9
    assert set(res.choice["layers"]) == {"body.2"}  # first and image-writing convs stay dense
    assert res.masks.names() == ["body.2"]
    w = res.model.get_submodule("body.2").weight
    assert torch.all(w[~res.masks["body.2"].bool()] == 0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the base is not modified
    assert "arch_search" not in res.seconds and "supernet" not in res.seconds


def test_impossible_target_raises_with_smallest_latency(source):
    table = StubTable()
    lo, _ = _space_ms(table)
    with pytest.raises(ConfigError, match="smallest predicted latency"):
        search_sr(_supernet(), SCALE, source, _settings(lo * 0.5), table=table, log=lambda m: None)
    torch.manual_seed(0)
    with pytest.raises(ConfigError, match="smallest predicted latency"):
        search_sr(build_sr_model("espcn", SCALE, 0.25, 1.0), SCALE, source, _settings(1e-6), table=table,
                  log=lambda m: None)


@pytest.mark.parametrize("bad", [dict(latency_target_ms=0.0), dict(latency_target_ms=float("nan")),
                                 dict(frame_lr=(0, 4)), dict(ratios=(0.5, 1.0)), dict(ratios=()),
                                 dict(population=0), dict(supernet_steps=-1), dict(val_crop=2),
                                 dict(threads=0)])
def test_settings_validate(bad):
    with pytest.raises(ConfigError):
        _settings(1.0, **bad).validate()


@pytest.mark.slow
def test_search_on_real_tvm_table(source):
    pytest.importorskip("tvm")
    from compression.tvm_backend.latency_table import TVMLatencyTable

    table = TVMLatencyTable(None, threads=1)
    torch.manual_seed(0)
    model = build_sr_model("espcn", SCALE, 0.25, 1.0).eval()
    lat = SRLatencyModel(table, (32, 32), (16, 16))
    dense = lat.model_ms(lat.layers(model), {})
    assert dense > 0
    # the target is the dense prediction: always reachable, whether or not the compact kernels of this tiny
    # layer measure faster than dense on a loaded machine (a tighter target made the test depend on the load)
    settings = _settings(dense, frame_lr=(32, 32), finetune_steps=1)
    res = search_sr(model, SCALE, source, settings, table=table, log=lambda m: None)
    assert res.predicted_ms <= dense
    assert res.info["table"] == "TVMLatencyTable" and res.info["tile_scale_factor"] == pytest.approx(4.0)


# --------------------------------------------------------------------------- verify rounds (closed measured check)


class FrameClock:
    """A fake deployment clock: ``factor`` x the stub table's time of the masked model as the compiler runs it.

    Per conv: the dense time, or the row-block kernel's at the kept columns of the model's zeros where that
    is faster (what :func:`compression.sr_deploy.measure_tvm_frame` builds), summed; ``factor`` > 1 makes the
    table under-predict the "measured" frame by that much.  Records every call.
    """

    def __init__(self, factor: float, frame=(64, 64), tile=(16, 16)) -> None:
        self.factor, self.frame, self.tile = float(factor), frame, tile
        self.calls: list[float] = []

    def __call__(self, model) -> dict:
        table = StubTable()
        lat = SRLatencyModel(table, self.frame, self.tile)
        total = 0.0
        for layer in lat.layers(model):
            w = model.get_submodule(layer.name).weight.detach()
            dense = table.dense_ms(layer)
            kept = table.kept_columns(w != 0)
            total += (min(dense, table.sparse_ms(layer, kept)) if kept < layer.cols else dense) * lat.factor
        ms = self.factor * total
        self.calls.append(ms)
        return {"median_ms": ms, "samples_ms": [ms]}


def test_verify_rounds_off_by_default_and_validated(source):
    assert SRSearchSettings(latency_target_ms=1.0).verify_rounds == 0
    assert SRSearchSettings(latency_target_ms=1.0).table_tile is None  # the table times convs at the frame
    for bad in (dict(verify_rounds=-1), dict(verify_rounds=True), dict(verify_reps=0)):
        with pytest.raises(ConfigError):
            _settings(1.0, **bad).validate()


def test_verify_round_accepts_an_honest_prediction(source):
    table = StubTable()
    lo, hi = _space_ms(table)
    target = lo + 0.5 * (hi - lo)
    clock = FrameClock(1.0)
    res = search_sr(_supernet(), SCALE, source, _settings(target, verify_rounds=3), table=StubTable(),
                    log=lambda m: None, measure=clock)
    v = res.info["verify"]
    assert len(v["rounds"]) == 1 and len(clock.calls) == 1 and v["met"] and v["calibration"] == 1.0
    r = v["rounds"][0]
    assert r["round"] == 1 and r["measured_ms"] == pytest.approx(r["raw_predicted_ms"], rel=1e-6)
    assert r["measured_ms"] <= target and r["predicted_ms"] == pytest.approx(res.predicted_ms, abs=1e-3)
    assert "verify" in res.seconds
    # the same search without verification chooses the same model (round 1 is the plain search)
    plain = search_sr(_supernet(), SCALE, source, _settings(target), table=StubTable(), log=lambda m: None)
    assert plain.choice == res.choice and "verify" not in plain.info


@pytest.mark.parametrize("kind", ["supernet", "fixed"])
def test_verify_rounds_push_an_under_predicted_model_under_the_target(source, kind):
    """The table under-predicts the measured frame 2.5x: the rounds rescale the prediction until it is met."""
    table = StubTable()
    if kind == "supernet":
        lo, hi = _space_ms(table)
        base_fn, target = _supernet, lo * 2.5 * 1.3  # reachable when measured: 1.3 x the measured smallest plan
    else:
        torch.manual_seed(0)
        espcn = build_sr_model("espcn", SCALE, 0.5, 1.0).eval()
        lat = SRLatencyModel(table, (64, 64), (16, 16))
        dense = lat.model_ms(lat.layers(espcn), {})
        smallest = lat.model_ms(lat.layers(espcn), {"body.2": 0.875})
        # measured (2.5 x the table) the dense net is over, the most pruned one under
        base_fn, target = (lambda: copy.deepcopy(espcn)), 2.5 * (smallest + 0.3 * (dense - smallest))
    clock = FrameClock(2.5)
    res = search_sr(base_fn(), SCALE, source, _settings(target, verify_rounds=3, finetune_steps=1), table=StubTable(),
                    log=lambda m: None, measure=clock)
    v = res.info["verify"]
    rounds = v["rounds"]
    assert 2 <= len(rounds) <= 3 and len(clock.calls) == len(rounds)
    assert [r["round"] for r in rounds] == list(range(1, len(rounds) + 1))
    first, last = rounds[0], rounds[-1]
    assert not first["met"] and first["measured_ms"] > target and first["calibration"] == 1.0
    assert first["measured_over_raw"] == pytest.approx(2.5, rel=1e-6)
    # later rounds predict with the measured factor, and choose a model the table predicts faster
    assert rounds[1]["calibration"] == pytest.approx(2.5, rel=1e-6)
    assert last["raw_predicted_ms"] < first["raw_predicted_ms"]
    assert last["met"] and last["measured_ms"] <= target and v["met"]
    assert v["chosen_round"] == len(rounds) and v["measured_ms"] == last["measured_ms"]
    # the returned model is the last round's: its measured frame is the last round's
    assert clock(res.model)["median_ms"] == pytest.approx(last["measured_ms"], abs=1e-3)
    assert res.predicted_ms == pytest.approx(last["predicted_ms"], abs=1e-3) and res.predicted_ms <= target
    assert any(h.get("round") == 2 for h in res.history)
    import json

    json.dumps(res.info["verify"])


def test_verify_rounds_stop_at_the_bound_and_keep_the_fastest(source):
    """An unreachable measured target: every round is recorded, at most ``verify_rounds``, the fastest is kept."""
    table = StubTable()
    lo, hi = _space_ms(table)
    target = lo + 0.3 * (hi - lo)
    clock = FrameClock(100.0)  # nothing in the space measures under the target
    res = search_sr(_supernet(), SCALE, source, _settings(target, verify_rounds=2, finetune_steps=0),
                    table=StubTable(), log=lambda m: None, measure=clock)
    v = res.info["verify"]
    assert not v["met"] and 1 <= len(v["rounds"]) <= 2 and not any(r["met"] for r in v["rounds"])
    assert v["measured_ms"] == min(r["measured_ms"] for r in v["rounds"])


class DriftClock(FrameClock):
    """A :class:`FrameClock` whose factor changes from call to call (a host whose load moves), then stays."""

    def __init__(self, factors) -> None:
        super().__init__(factors[0])
        self.factors = list(factors)

    def __call__(self, model) -> dict:
        self.factor = self.factors[min(len(self.calls), len(self.factors) - 1)]
        return super().__call__(model)


def _espcn_space():
    """A fixed ESPCN (stages 3-4 only: the greedy ratios) and its (most pruned, dense) predicted ms."""
    torch.manual_seed(0)
    espcn = build_sr_model("espcn", SCALE, 0.5, 1.0).eval()
    lat = SRLatencyModel(StubTable(), (64, 64), (16, 16))
    return espcn, lat.model_ms(lat.layers(espcn), {"body.2": 0.875}), lat.model_ms(lat.layers(espcn), {})


def test_verify_rounds_grow_into_headroom(source):
    """The table over-predicts 2.5x: round 1 meets the target with most of it unused, so the loop rescales down
    and chooses a larger model that still meets it when measured; the better-scored met plan is kept."""
    espcn, smallest, dense = _espcn_space()
    target = smallest + 0.3 * (dense - smallest)
    clock = FrameClock(0.4)
    res = search_sr(copy.deepcopy(espcn), SCALE, source, _settings(target, verify_rounds=3, finetune_steps=0),
                    table=StubTable(), log=lambda m: None, measure=clock)
    v = res.info["verify"]
    rounds = v["rounds"]
    assert len(rounds) >= 2 and len(clock.calls) == len(rounds) and all(r["met"] for r in rounds)
    assert rounds[0]["measured_ms"] < 0.75 * target and rounds[0]["next"] == "grow"
    assert rounds[1]["calibration"] == pytest.approx(0.4, rel=1e-6)
    assert rounds[1]["raw_predicted_ms"] > rounds[0]["raw_predicted_ms"]  # a larger (less pruned) model
    assert rounds[-1]["next"].startswith("stop")
    chosen = rounds[v["chosen_round"] - 1]
    assert chosen["one_shot_val_psnr"] == max(r["one_shot_val_psnr"] for r in rounds)
    assert chosen["one_shot_val_psnr"] >= rounds[0]["one_shot_val_psnr"]
    assert clock(res.model)["median_ms"] == pytest.approx(chosen["measured_ms"], abs=1e-3)
    # growing off: the first met round is final
    off = search_sr(copy.deepcopy(espcn), SCALE, source,
                    _settings(target, verify_rounds=3, finetune_steps=0, verify_grow_below=0.0),
                    table=StubTable(), log=lambda m: None, measure=FrameClock(0.4))
    assert len(off.info["verify"]["rounds"]) == 1
    with pytest.raises(ConfigError):
        _settings(target, verify_grow_below=1.0).validate()


@pytest.mark.parametrize("kind", ["supernet", "fixed"])
def test_verify_growth_never_returns_to_a_plan_measured_over(source, kind):
    """Round 1 measures over (a loaded host), round 2 far under (the load went away): the rescaled-down
    prediction still keeps round 1's plan -- and anything the table predicts as large -- over the target."""
    if kind == "supernet":
        lo, _ = _space_ms(StubTable())
        base, target = _supernet(), lo * 2.5 * 1.3
    else:
        espcn, smallest, dense = _espcn_space()
        base, target = espcn, 2.5 * (smallest + 0.3 * (dense - smallest))
    clock = DriftClock([2.5, 0.3, 0.3, 0.3])
    res = search_sr(base, SCALE, source, _settings(target, verify_rounds=4, finetune_steps=0),
                    table=StubTable(), log=lambda m: None, measure=clock)
    rounds = res.info["verify"]["rounds"]
    assert not rounds[0]["met"] and rounds[1]["met"]
    for later in rounds[2:]:
        assert later["raw_predicted_ms"] < rounds[0]["raw_predicted_ms"]
    keys = [(json_key(r["architecture"]), json_key(r["layers"])) for r in rounds]
    assert len(set(keys)) == len(keys)  # no plan measured twice
    assert res.info["verify"]["met"] and res.info["verify"]["measured_ms"] <= target


def json_key(obj) -> str:
    import json

    return json.dumps(obj, sort_keys=True)


@pytest.mark.slow
def test_verify_round_measures_on_tvm(source):
    """The default measurement (the bench's TVM build at the frame) on a table that under-predicts 1000x."""
    pytest.importorskip("tvm")

    class Tiny(StubTable):
        def dense_ms(self, layer, repeats: int = 5) -> float:
            return super().dense_ms(layer) / 1000.0

    torch.manual_seed(0)
    model = build_sr_model("espcn", SCALE, 0.25, 1.0).eval()
    lat = SRLatencyModel(Tiny(), (32, 32), (16, 16))
    dense = lat.model_ms(lat.layers(model), {})
    settings = _settings(dense, frame_lr=(32, 32), finetune_steps=0, verify_rounds=2, verify_reps=2)
    res = search_sr(model, SCALE, source, settings, table=Tiny(), log=lambda m: None)
    rounds = res.info["verify"]["rounds"]
    assert 1 <= len(rounds) <= 2
    assert rounds[0]["measured_ms"] > 0 and rounds[0]["measure"]["compile_seconds"] > 0
    assert not rounds[0]["met"]  # a real frame takes far more than the 1000x-too-small prediction
    if len(rounds) == 2:
        assert rounds[1]["calibration"] > 1.0
