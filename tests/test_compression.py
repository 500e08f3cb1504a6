"""Compressors end to end on tiny models: masks stay fixed, records, fallbacks, plans, artifacts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from compression.artifacts import load_compact, load_compression, save_compression
from compression.compressor import WeightPruning, summarize
from compression.decisions import LayerDecision, legacy_decision
from compression.layers import list_layers
from compression.mapping import (AutoCompressor, Candidate, rule_plan, search_plan, size_scaled_ratios)
from compression.plan import Plan
from compression.schemes import make_scheme
from suite.core.errors import ArtifactError, ConfigError
from suite.core.sources.embedded import load_embedded
from suite.core.zoo import build_model


@pytest.fixture(scope="module")
def source():
    return load_embedded("digits16", limit=64)


@pytest.fixture(scope="module")
def vgg(source):
    torch.manual_seed(0)
    return build_model("vgg16", num_classes=10, width=0.25, in_channels=3).eval()


FAST = dict(epochs=1, admm_epochs=1, batch_size=32)


@pytest.mark.parametrize("scheme", ["block", "block-punched", "pattern", "unstructured", "nm"])
@pytest.mark.parametrize("recovery", ["oneshot", "gradual", "admm"])
def test_pruned_weights_stay_exactly_zero_after_recovery(scheme, recovery, vgg, source):
    sparsity = 0.5 if scheme == "nm" else 0.75
    comp = WeightPruning(scheme, sparsity, recovery=recovery, **FAST)
    result = comp.compress(vgg, source, seed=0, profile="smoke")
    for name, mask in result.masks.masks.items():
        w = result.model.get_submodule(name).weight
        assert torch.all(w[~mask] == 0), name
        make_scheme(scheme, **result.plan.layer(name).settings).verify(mask)
    # the dense input model is untouched
    assert all(float((p == 0).float().mean()) < 0.05 for n, p in vgg.named_parameters() if n.endswith("weight"))
    info = result.info
    assert abs(info["achieved_sparsity"] - sparsity) <= (0.12 if scheme == "block-punched" else 0.01)
    for key in ("method", "target_sparsity", "achieved_sparsity", "params", "macs", "macs_ratio", "acc_dense",
                "acc_pruned_before_finetune", "per_layer"):
        assert key in info
    assert info["macs"] < info["macs_dense"] and 0 < info["macs_ratio"] < 1


def test_compact_export_rebuilds_the_pruned_weights(vgg, source):
    result = WeightPruning("block", 0.75, **FAST).compress(vgg, source, seed=0, profile="smoke")
    for name, compact in result.compact.items():
        dense = make_scheme("block", **result.plan.layer(name).settings).from_compact(compact)
        assert torch.equal(dense, result.model.get_submodule(name).weight.detach())


def test_first_and_classifier_dense_by_default_and_configurable(vgg, source):
    layers = list_layers(vgg, source.shape)
    comp = WeightPruning("block", 0.5, **FAST)
    plan = comp.plan_for(vgg, source, seed=0, device="cpu")
    assert plan.layer(layers[0].name).dense and plan.layer(layers[-1].name).dense
    for name in (layers[0].name, layers[-1].name):
        assert plan.layer(name).decision is LayerDecision.KEPT_DENSE_BY_PLAN
    comp = WeightPruning("unstructured", 0.5, keep_first=False, keep_classifier=False, **FAST)
    plan = comp.plan_for(vgg, source, seed=0, device="cpu")
    assert not plan.layer(layers[0].name).dense and not plan.layer(layers[-1].name).dense


def test_inapplicable_layers_fall_back_to_dense_with_reason(source):
    torch.manual_seed(0)
    mnet = build_model("mobilenetv2", num_classes=10, width=0.25, in_channels=3)
    plan = WeightPruning("pattern", 0.75, **FAST).plan_for(mnet, source, seed=0, device="cpu")
    fallbacks = [l for l in plan.layers if l.decision is LayerDecision.UNSUPPORTED]
    assert fallbacks and all("3x3" in l.reason or "pattern" in l.reason for l in fallbacks)
    assert all(l.dense and l.decision.fallback for l in fallbacks)
    assert any(not l.dense for l in plan.layers)  # the full 3x3 convs are patterned
    assert all(l.decision is LayerDecision.PRUNED for l in plan.layers if not l.dense)


def test_decisions_not_reasons_drive_accounting_and_json(vgg, source):
    """achieved_sparsity and fallback_layers follow ``decision``; the reason text is never read."""
    comp = WeightPruning("block", 0.5, **FAST)
    plan = comp.plan_for(vgg, source, seed=0, device="cpu")
    for l in plan.layers:  # reword every reason: nothing may change
        l.reason = "reworded" if l.reason else None
    unsupported = next(l for l in plan.layers if not l.dense)
    unsupported.scheme, unsupported.sparsity, unsupported.settings = "dense", 0.0, {}
    unsupported.decision = LayerDecision.UNSUPPORTED
    from compression.masks import MaskSet
    from compression.recovery import RecoveryConfig

    info = summarize(vgg, source, plan, MaskSet({}), 0.5, 0.9, 0.9, method="block",
                     recovery=RecoveryConfig(), recovery_log={}, seconds=0.0)
    assert info["fallback_layers"] == [unsupported.name]
    kept = [l.name for l in plan.layers if l.decision is LayerDecision.KEPT_DENSE_BY_PLAN]
    assert len(kept) == 2 and all(r["decision"] == "kept_dense_by_plan" for r in info["per_layer"]
                                  if r["name"] in kept)
    assert {r["decision"] for r in info["per_layer"]} == {"pruned", "kept_dense_by_plan", "unsupported"}
    data = json.loads(plan.to_json())
    assert all(isinstance(l["decision"], str) for l in data["layers"])
    again = Plan.from_dict(data)
    assert again.as_dict() == plan.as_dict() and not again.legacy_decisions


def test_old_plan_json_without_decisions_loads():
    old = {"version": 1, "method": "uniform", "target": {"sparsity": 0.5}, "seed": 0, "search": {}, "layers": [
        {"name": "conv0", "scheme": "dense", "sparsity": 0.0, "settings": {}, "reason": "first layer kept dense"},
        {"name": "conv1", "scheme": "block", "sparsity": 0.5, "settings": {"r": 4, "c": 4}, "reason": None},
        {"name": "conv2", "scheme": "dense", "sparsity": 0.0, "settings": {},
         "reason": "fallback to dense: pattern needs 3x3 kernels"},
        {"name": "conv3", "scheme": "dense", "sparsity": 0.0, "settings": {}, "reason": "search: dense is best"},
        {"name": "fc", "scheme": "dense", "sparsity": 0.0, "settings": {}, "reason": "classifier kept dense"}]}
    plan = Plan.from_dict(old)
    assert plan.legacy_decisions
    assert [l.decision for l in plan.layers] == [
        LayerDecision.KEPT_DENSE_BY_PLAN, LayerDecision.PRUNED, LayerDecision.UNSUPPORTED,
        LayerDecision.DENSE_BY_SEARCH, LayerDecision.KEPT_DENSE_BY_PLAN]
    assert legacy_decision("dense", "rule: depth-wise or too small to pay") is LayerDecision.DENSE_BY_RULE
    assert json.loads(plan.to_json())["layers"][2]["decision"] == "unsupported"
    with pytest.raises(ArtifactError):  # a dense layer must say why
        Plan.from_dict({**old, "layers": [{"name": "x", "scheme": "dense", "decision": None}]})


@pytest.mark.parametrize("kwargs", [dict(sparsity=1.0), dict(sparsity=1.2), dict(sparsity=-0.1),
                                    dict(sparsity=0.5, r=0), dict(sparsity=0.5, bogus=1),
                                    dict(sparsity=0.5, recovery="magic"), dict(sparsity=0.5, epochs=-1),
                                    dict(sparsity=0.5, scope="global")])
def test_bad_settings_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        WeightPruning("block", **kwargs)


def test_size_scaled_ratios_hit_target_and_favor_big_layers():
    sizes = [1000, 4000, 16000, 64000]
    ratios = size_scaled_ratios(sizes, 0.75, gamma=0.5, max_ratio=0.95)
    achieved = sum(r * s for r, s in zip(ratios, sizes)) / sum(sizes)
    assert abs(achieved - 0.75) < 1e-6
    assert ratios == sorted(ratios) and max(ratios) <= 0.95


def test_rule_plan_mixes_schemes(source):
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10, width=0.25, in_channels=3)
    layers = list_layers(model, source.shape)
    prunable = {l.name for l in layers if not l.first and not l.classifier}
    plan = rule_plan(layers, prunable, 0.75)
    used = set(plan.schemes_used()) - {"dense"}
    assert {"block-punched", "block"} <= used or {"pattern", "block-punched"} <= used
    mapped = [(l, next(x for x in layers if x.name == l.name)) for l in plan.layers if not l.dense]
    achieved = sum(l.sparsity * info.numel for l, info in mapped) / sum(info.numel for _, info in mapped)
    assert abs(achieved - 0.75) < 1e-3


def _synthetic_table():
    """Two layers: layer a is sensitive to pruning, b is not; block is faster than nm on a."""
    def cands(sens_scale, fast_scheme):
        out = [Candidate("dense", {}, 0.0, 0, 1.0, 0.0)]
        for s in (0.5, 0.75, 0.9):
            for scheme in ("block", "pattern"):
                lat = 1.0 - s * (0.9 if scheme == fast_scheme else 0.5)
                out.append(Candidate(scheme, {}, s, int(s * 1000), lat, sens_scale * s ** 2))
        return out
    return {"a": cands(10.0, "block"), "b": cands(0.1, "pattern")}


class _L:
    def __init__(self, name):
        self.name, self.numel, self.first, self.classifier = name, 1000, False, False


def test_search_prefers_insensitive_layers_and_meets_target():
    table = _synthetic_table()
    layers = [_L("a"), _L("b")]
    plan = search_plan(layers, {"a", "b"}, table, sparsity=0.6, latency_target=None, seed=0)
    a, b = plan.layer("a"), plan.layer("b")
    assert b.sparsity > a.sparsity  # prune the insensitive layer harder
    assert (a.sparsity * 1000 + b.sparsity * 1000) / 2000 >= 0.6
    assert plan.search["objective_final"] <= plan.search["objective_lagrangian"]
    again = search_plan(layers, {"a", "b"}, table, sparsity=0.6, latency_target=None, seed=0)
    assert again.as_dict() == plan.as_dict()
    fast = search_plan(layers, {"a", "b"}, table, sparsity=None, latency_target=0.4, seed=0)
    total_lat = fast.layer("a").latency_ms + fast.layer("b").latency_ms
    assert total_lat <= 0.4 * 2.0 + 1e-9
    with pytest.raises(ConfigError):
        search_plan(layers, {"a", "b"}, table, sparsity=0.99, latency_target=None, seed=0)


def test_auto_search_on_a_real_model_plan_json_and_reproducible(vgg, source, tmp_path):
    cache = str(tmp_path / "latency.json")
    comp = AutoCompressor(0.75, mapping="search", latency_cache=cache, ratios=(0.5, 0.75, 0.9),
                          latency_backend="torch-gemm-proxy", **FAST)  # the TVM table: tests/test_latency_table.py
    plan = comp.plan_for(vgg, source, seed=3, device="cpu")
    assert plan.search["predicted_sparsity"] >= 0.75 - 1e-9
    mapped = [l for l in plan.layers if l.latency_ms is not None]
    assert mapped and all(l.dense_latency_ms and l.dense_latency_ms > 0 for l in mapped)
    assert Plan.from_dict(json.loads(plan.to_json())).as_dict() == plan.as_dict()
    choices = [(l.name, l.scheme, l.sparsity) for l in plan.layers]
    again = AutoCompressor(0.75, mapping="search", latency_cache=cache, ratios=(0.5, 0.75, 0.9),
                           latency_backend="torch-gemm-proxy", **FAST).plan_for(vgg, source, seed=3, device="cpu")
    # same measured latency table (cached) + same seed -> the same plan
    assert choices == [(l.name, l.scheme, l.sparsity) for l in again.layers]


def test_auto_rejects_bad_settings():
    with pytest.raises(ConfigError):
        AutoCompressor(0.5, mapping="guess")
    with pytest.raises(ConfigError):
        AutoCompressor(0.5, mapping="rule", latency_target=0.5)
    with pytest.raises(ConfigError):
        AutoCompressor(0.0, mapping="search")
    with pytest.raises(ConfigError, match="tvm-kernels"):
        AutoCompressor(0.5, mapping="search", latency_backend="guess")


def test_artifacts_round_trip_and_tamper_detection(vgg, source, tmp_path):
    result = WeightPruning("block-punched", 0.75, **FAST).compress(vgg, source, seed=0, profile="smoke")
    fields = save_compression(result, tmp_path / "compressed", relative_to=tmp_path)
    assert fields["plan"] == "compressed/plan.json"

    def build():
        torch.manual_seed(123)
        return build_model("vgg16", num_classes=10, width=0.25, in_channels=3)

    model, plan, masks = load_compression(tmp_path / "compressed", build)
    x, _ = source.test.tensors(slice(0, 8))
    with torch.no_grad():
        assert torch.equal(model(x), result.model.eval()(x))
    assert plan.as_dict() == result.plan.as_dict()
    assert set(masks) == set(result.masks.names())
    compact = load_compact(tmp_path / "compressed")
    assert set(compact) == set(result.compact)
    for name in compact:
        np.testing.assert_array_equal(compact[name].arrays["values"], result.compact[name].arrays["values"])
    data = bytearray((tmp_path / "compressed" / "model.pt").read_bytes())
    data[-30] ^= 0xFF
    (tmp_path / "compressed" / "model.pt").write_bytes(bytes(data))
    with pytest.raises(ArtifactError):
        load_compression(tmp_path / "compressed", build)


@pytest.mark.parametrize("compress, extra", [
    ("block", []), ("filter", []), ("pas", []), ("auto", ["--mapping", "rule"]),
    # the proxy table here (tiny smoke layers time in microseconds on TVM); the TVM table: tests/test_latency_table.py
    ("auto", ["--mapping", "search", "--compress-args", "ratios=0.5:0.75:0.9,latency_backend=torch-gemm-proxy"]),
    ("nm", []),
])
def test_run_records_compression_and_reloads_artifacts(compress, extra, tmp_path, cache_dir, capsys):
    from suite.app.cli import main
    from suite.core.record import load_record

    code = main(["run", "--model", "resnet20", "--compress", compress, *extra, "--profile", "smoke", "--quiet",
                 "--output-dir", str(tmp_path / "runs"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    run_dir = tmp_path / "runs" / json.loads(out)["run_dir"].split("/")[-1]
    rec = load_record(run_dir)
    comp = rec["compression"]
    for key in ("method", "target_sparsity", "achieved_sparsity", "params", "macs", "macs_ratio", "acc_dense",
                "acc_pruned_before_finetune", "per_layer"):
        assert key in comp, key
    assert comp["macs_ratio"] < 1.0 and comp["params"] < comp["params_dense"]

    def build():
        return build_model("resnet20", num_classes=10, width=0.25, in_channels=3)

    model, plan, _ = load_compression(run_dir / "compressed", build)
    x, y = load_embedded("digits16", limit=96).test.tensors()
    with torch.no_grad():
        correct = int((model(x).argmax(1) == y).sum())
    assert correct / len(y) == rec["metrics"]["clean_acc"]  # the saved model is the evaluated one
    if compress in ("block", "nm", "auto"):
        assert (run_dir / comp["plan"]).exists()


def test_cli_bad_compression_settings_exit_2(tmp_path, cache_dir, capsys):
    from suite.app.cli import main

    for args, needle in [(["--compress", "block", "--sparsity", "1.0"], "sparsity"),
                         (["--compress", "block", "--compress-args", "r=0"], "r"),
                         (["--compress", "block", "--compress-args", "bogus=3"], "bogus"),
                         (["--compress", "nm", "--sparsity", "0.75"], "n"),
                         (["--compress", "auto", "--mapping", "magic"], "mapping"),
                         (["--compress", "block", "--recovery", "magic"], "recovery")]:
        code = main(["run", "--model", "resnet20", *args, "--profile", "smoke", "--quiet",
                     "--output-dir", str(tmp_path / "runs")])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and err.startswith("error:"), (args, err)


def test_compressed_model_cache_reuse_and_corruption(tmp_path, cache_dir, capsys):
    from suite.app.cli import main
    from suite.core.record import load_record

    args = ["run", "--model", "resnet20", "--compress", "block", "--profile", "smoke", "--quiet",
            "--output-dir", str(tmp_path / "runs"), "--json"]
    records = []
    for _ in range(2):
        assert main(args) == 0
        records.append(load_record(json.loads(capsys.readouterr().out)["run_dir"]))
    assert (records[0]["compression"]["cache_hit"], records[1]["compression"]["cache_hit"]) == (False, True)
    assert records[0]["metrics"] == records[1]["metrics"]
    entries = [p for p in (cache_dir / "compressed" / "resnet20").iterdir() if not p.name.endswith(".lock")]
    assert len(entries) == 1  # beside the entry's reader lock (.<name>.use.lock)
    (entries[0] / "model.pt").write_bytes(b"garbage")
    assert main(args) == 0
    third = load_record(json.loads(capsys.readouterr().out)["run_dir"])
    assert third["compression"]["cache_hit"] is False and third["metrics"] == records[0]["metrics"]
