"""Fingerprint generators, the high-pass projection, metrics and calibration, the suspect zoo and the run stage."""

from __future__ import annotations

import json

import pytest
import torch

from fingerprints.bank import evaluate_on_zoo
from fingerprints.base import FingerprintSet
from fingerprints.frequency import highpass, highpass_mask, lowfreq_energy_fraction
from fingerprints.generators import jittered_keep, project, pruned_copies
from fingerprints.metrics import (auc, calibrate_threshold, p_value, p_value_empirical, roc_curve,
                                  split_negatives, tpr_at_fpr)
from suite.core import registries as reg
from suite.core.config import TrainRecipe
from suite.core.errors import ConfigError
from suite.core.training import accuracy, train_model

FAST = {"count": 20, "steps": 40, "step_size": 0.02, "confidence": 3.0, "batch_size": 20}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def digits():
    return reg.sources.build("digits16", None)


@pytest.fixture(scope="session")
def owner(digits):
    """A tiny but real owner: VGG16 at width 0.25, 4 epochs on digits16 (~97% test accuracy)."""
    torch.manual_seed(0)
    model = reg.models.build("vgg16", num_classes=10, width=0.25, in_channels=3)
    train_model(model, digits.train, None, TrainRecipe(epochs=4, lr=0.05), seed=0, quiet=True)
    model.eval()
    assert accuracy(model, digits.test) > 0.85
    return model


# ------------------------------------------------------------ frequency
@pytest.mark.parametrize("shape", ["circle", "square", "gaussian"])
def test_highpass_removes_low_frequencies(shape):
    delta = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert lowfreq_energy_fraction(delta, 0.4, shape) > 0.05  # white noise has plenty of low frequencies
    out = highpass(delta, 0.4, shape)
    assert out.shape == delta.shape and out.dtype == delta.dtype
    if shape == "gaussian":  # soft roll-off: DC exactly gone, low band strongly attenuated
        assert lowfreq_energy_fraction(out, 0.4, shape) < 0.25 * lowfreq_energy_fraction(delta, 0.4, shape)
        assert float(out.mean(dim=(-2, -1)).abs().max()) < 1e-5
    else:
        assert lowfreq_energy_fraction(out, 0.4, shape) < 1e-10
        assert torch.allclose(highpass(out, 0.4, shape), out, atol=1e-5)  # a projection
    assert torch.equal(highpass(delta, 0.0, shape), delta)


def test_highpass_mask_layout_and_errors():
    m = highpass_mask(16, 16, 0.3)
    assert m[0, 0] == 0 and m[8, 8] == 1 and m.shape == (16, 16)
    assert float(m.mean()) > 0.5
    with pytest.raises(ValueError):
        highpass_mask(8, 8, 0.3, "triangle")


def test_project_keeps_box_eps_and_high_frequencies():
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(3, 3, 16, 16, generator=g)
    delta = torch.randn(3, 3, 16, 16, generator=g)
    out = project(delta, x0, eps=0.2, radius=0.4, rounds=5)
    assert float(out.abs().max()) <= 0.2 + 1e-6
    assert float((x0 + out).min()) >= 0 and float((x0 + out).max()) <= 1
    assert lowfreq_energy_fraction(out, 0.4) < 0.1 * lowfreq_energy_fraction(delta.clamp(-0.2, 0.2), 0.4)


# ------------------------------------------------------------ generators
@pytest.mark.parametrize("shape", [(10, 6, 3, 3), (7, 20)])
def test_structured_jittered_keep_drops_whole_block_columns(shape):
    g = torch.Generator().manual_seed(4)
    w = torch.randn(*shape, generator=g)
    keep = jittered_keep(w, 0.75, True, g, rows=4)
    cols = keep.reshape(shape[0], -1)
    for start in range(0, shape[0], 4):  # within a block of 4 filters every column is kept or dropped whole
        block = cols[start:start + 4]
        assert torch.equal(block, block[:1].expand_as(block))
    blocks = -(-shape[0] // 4)
    dropped = blocks * cols.shape[1] - int(sum(cols[s].sum() for s in range(0, shape[0], 4)))
    assert dropped == int(0.75 * blocks * cols.shape[1])
    loose = jittered_keep(w, 0.75, False, g)  # unstructured: exactly the fraction of single weights
    assert int((loose == 0).sum()) == int(0.75 * w.numel())
    assert torch.equal(jittered_keep(w, 0.0, True, g), torch.ones_like(w))


def test_mixed_pruned_copies_alternate_single_weights_and_block_columns(owner, digits):
    copies = pruned_copies(owner, digits, 2, 0.8, seed=0, device="cpu", structure="mixed")
    name = "features.3.weight" if "features.3.weight" in copies[0][0] else sorted(
        n for n in copies[0][0] if n.endswith(".weight") and copies[0][0][n].dim() == 4)[1]
    first, second = copies[0][0][name], copies[1][0][name]
    assert 0.35 < float((first == 0).float().mean()) < 0.45  # copy 1: 0.4 of single weights
    cols = (second != 0).reshape(second.shape[0], -1)[:4]
    assert 0.75 < float((second == 0).float().mean()) < 0.85 and torch.equal(cols, cols[:1].expand_as(cols))


def test_finetuned_pruned_copies_keep_their_zeros_and_move_the_kept_weights(owner, digits):
    before = {n: p.detach().clone() for n, p in owner.named_parameters()}
    plain = pruned_copies(owner, digits, 2, 0.8, seed=0, device="cpu")
    tuned = pruned_copies(owner, digits, 2, 0.8, seed=0, device="cpu", finetune_steps=3)
    name = sorted(n for n in plain[1][0] if n.endswith(".weight") and plain[1][0][n].dim() == 4)[1]
    assert torch.equal(plain[0][0][name], tuned[0][0][name])  # copy 1 (0.4 sparsity) is not fine-tuned
    a, b = plain[1][0][name], tuned[1][0][name]  # copy 2 (0.8): same mask, other kept weights
    assert torch.equal(a == 0, b == 0) and not torch.equal(a, b)
    assert all(torch.equal(p, before[n]) for n, p in owner.named_parameters())  # the owner is untouched


@pytest.mark.parametrize("name,settings", [
    ("c-examples", FAST),
    ("rc-examples", {**FAST, "k": 2, "noise": 0.5}),
    ("ltrc-examples", {**FAST, "k": 2, "noise": 0.5, "references": 0}),
    ("ltrc-examples", {**FAST, "k": 2, "noise": 0.5, "prune_structure": "mixed", "references": 0}),
    ("ipguard", {"count": 20, "steps": 30, "batch_size": 20}),
    ("misclassified", {"count": 20}),
])
def test_generators_give_unit_range_inputs_the_owner_labels_as_intended(name, settings, owner, digits):
    method = reg.fingerprints.build(name, **settings)
    fps = method.generate(owner, digits, seed=3)
    assert len(fps) >= 10, fps.meta  # most requested fingerprints survive
    assert fps.x.shape[1:] == (3, 16, 16) and fps.x.dtype == torch.float32
    assert float(fps.x.min()) >= 0.0 and float(fps.x.max()) <= 1.0
    with torch.no_grad():
        assert torch.equal(owner(fps.x).argmax(1), fps.y)
    assert fps.generation_seconds > 0 and fps.meta["kept"] == len(fps)
    if name.endswith("-examples"):  # targets spread over the classes
        assert len(set(fps.y.tolist())) >= 5
    if name == "misclassified":  # the owner gets every one of them wrong
        assert fps.meta["rounds"] >= 1 and fps.meta["wrong"] == len(fps)
    if name in ("c-examples", "misclassified"):  # same seed, same fingerprints
        again = reg.fingerprints.build(name, **settings).generate(owner, digits, seed=3)
        assert torch.equal(again.x, fps.x) and torch.equal(again.y, fps.y)


def test_reinitialised_copy_keeps_the_architecture_and_replaces_every_weight(owner):
    from fingerprints.references import reinitialised

    fresh, again = reinitialised(owner, 5), reinitialised(owner, 5)
    own = dict(owner.named_parameters())
    for name, p in fresh.named_parameters():
        assert p.shape == own[name].shape and p.requires_grad
        if p.dim() > 1:  # conv / linear weights: new draws, the same for the same seed
            assert not torch.equal(p, own[name]) and torch.equal(p, dict(again.named_parameters())[name])
    assert all(not torch.equal(b, owner.get_buffer(n)) for n, b in fresh.named_buffers() if n.endswith("running_mean"))


def test_ltrc_trains_two_references_by_default_and_rc_none():
    """The zoo's same-recipe rivals are what references steer away from: LTRC's default, not RC's, not smoke's."""
    from fingerprints.options import build_method

    assert reg.fingerprints.build("ltrc-examples").settings["references"] == 2
    assert build_method("ltrc-examples", "default", {}).settings["references"] == 2
    assert build_method("ltrc-examples", "smoke", {}).settings["references"] == 0
    assert build_method("rc-examples", "default", {}).settings["references"] == 0


def test_references_steer_examples_off_independent_models_and_drop_what_they_share(owner, digits):
    from fingerprints.references import train_references

    settings = {**FAST, "k": 2, "noise": 0.5, "references": 2, "reference_epochs": 2}
    fps = reg.fingerprints.build("ltrc-examples", **settings).generate(owner, digits, seed=3)
    assert fps.meta["references"]["count"] == 2 and len(fps) >= 5, fps.meta
    assert min(fps.meta["references"]["val_acc"]) > 0.5  # real independent models, not noise
    with torch.no_grad():
        assert torch.equal(owner(fps.x).argmax(1), fps.y)
    # the same references, rebuilt from the same seed, label none of the kept examples as intended
    for ref in train_references(owner, digits, 2, 2, seed=3, device="cpu"):
        with torch.no_grad():
            assert not bool((ref(fps.x).argmax(1) == fps.y).any())


def test_held_out_references_only_filter_and_the_kept_examples_miss_them_all(owner, digits):
    from fingerprints.references import train_references

    base = {**FAST, "k": 2, "noise": 0.5, "references": 1, "reference_epochs": 2}
    steered = reg.fingerprints.build("ltrc-examples", **base).generate(owner, digits, seed=3)
    checked = reg.fingerprints.build("ltrc-examples", **base, reference_holdout=2).generate(owner, digits, seed=3)
    held = checked.meta["reference_holdout"]
    assert held["count"] == 2 and min(held["val_acc"]) > 0.5, checked.meta
    # the held-out references never enter the gradient: the same examples, minus the ones they label as intended
    assert len(checked) == len(steered) - held["dropped"]
    assert all(any(torch.equal(c, s) for s in steered.x) for c in checked.x)
    refs = train_references(owner, digits, 3, 2, seed=3, device="cpu")  # the steering one, then the two held out
    with torch.no_grad():
        for ref in refs:
            assert not bool((ref(checked.x).argmax(1) == checked.y).any())
        shared = torch.stack([ref(steered.x).argmax(1) == steered.y for ref in refs[1:]]).any(0)
    assert int(shared.sum()) == held["dropped"]


def test_a_query_budget_keeps_the_examples_most_robust_to_the_simulated_copies(owner, digits):
    from fingerprints.generators import robustness

    settings = {**FAST, "k": 2, "noise": 0.5, "references": 0}
    every = reg.fingerprints.build("ltrc-examples", **settings).generate(owner, digits, seed=4)
    capped = reg.fingerprints.build("ltrc-examples", **settings, budget=6).generate(owner, digits, seed=4)
    assert len(every) > 6 and len(capped) == 6 and capped.meta["over_budget"]["kept_before"] == len(every)
    copies = pruned_copies(owner, digits, 2, 0.5, 4, "cpu")  # the generator's own simulated copies
    score = robustness(owner, copies, every.x, every.y)
    chosen = torch.tensor([any(torch.equal(c, e) for c in capped.x) for e in every.x])
    assert int(chosen.sum()) == 6  # a subset of the same run's examples ...
    assert float(score[chosen].min()) >= float(score[~chosen].max())  # ... the most robust ones


def test_ltrc_perturbation_is_high_frequency(owner, digits):
    method = reg.fingerprints.build("ltrc-examples", **{**FAST, "k": 2, "noise": 0.5, "radius": 0.5, "references": 0})
    fps = method.generate(owner, digits, seed=4)
    assert fps.meta["lowfreq_energy_fraction"] < 0.02


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="did you mean 'radius'"):
        reg.fingerprints.build("ltrc-examples", radiuss=0.3)
    with pytest.raises(ConfigError, match="unknown setting 'radius'"):
        reg.fingerprints.build("c-examples", radius=0.3)  # C-examples have no filter
    with pytest.raises(ConfigError):
        reg.fingerprints.build("rc-examples", k=0)
    with pytest.raises(ConfigError):
        reg.fingerprints.build("ltrc-examples", filter_shape="hexagon")
    with pytest.raises(ConfigError):
        reg.fingerprints.build("misclassified", count="many")
    m = reg.fingerprints.build("ltrc", count=7)
    assert m.name == "ltrc-examples" and m.settings["count"] == 7 and m.digest() != \
        reg.fingerprints.build("ltrc", count=8).digest()


def test_fingerprint_set_roundtrip_and_corruption(tmp_path):
    fps = FingerprintSet("c-examples", {"count": 2}, torch.rand(2, 3, 16, 16), torch.tensor([1, 2]), 0.5, {"kept": 2})
    fps.save(tmp_path / "fp")
    back = FingerprintSet.load(tmp_path / "fp")
    assert torch.equal(back.x, fps.x) and torch.equal(back.y, fps.y) and back.settings == {"count": 2}
    (tmp_path / "fp" / "fingerprints.npz").write_bytes(b"junk")
    from suite.core.errors import ArtifactError

    with pytest.raises(ArtifactError, match="corrupt"):
        FingerprintSet.load(tmp_path / "fp")


# ------------------------------------------------------------ metrics
def test_roc_auc_tpr():
    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auc([0.5], [0.5]) == 0.5
    assert auc([0.1], [0.9]) == 0.0
    fpr, tpr, _ = roc_curve([0.9, 0.3], [0.1, 0.5])
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert tpr_at_fpr([0.9, 0.3], [0.1, 0.5], 0.01) == 0.5
    assert tpr_at_fpr([0.9, 0.8], [0.1, 0.2], 0.01) == 1.0


def test_threshold_and_p_values():
    neg = [0.0, 0.02, 0.05, 0.01]
    t = calibrate_threshold(neg, 100, 0.01)
    assert t > max(neg) and t < 0.5
    assert p_value(0.9, 100, neg) < 1e-10 < p_value(0.02, 100, neg)
    assert p_value(0.0, 100, neg) == 1.0
    assert p_value_empirical(0.9, neg) == pytest.approx(1 / 5)
    assert p_value_empirical(0.0, neg) == 1.0


def test_negative_split_is_disjoint_seeded_and_order_free():
    ids = [f"neg-{i}" for i in range(21)]
    cal, ev = split_negatives(ids, seed=0)
    assert not set(cal) & set(ev) and set(cal) | set(ev) == set(ids) and len(cal) == 10
    assert split_negatives(list(reversed(ids)), seed=0) == (cal, ev)
    assert split_negatives(ids, seed=1) != (cal, ev)


def test_negative_split_stratified_by_origin():
    """Every origin with two or more negatives lands on both sides; sizes and order-freedom as unstratified."""
    origins = {f"neg-{i:02d}": o for i, o in enumerate(["seed"] * 5 + ["same-recipe"] * 2 + ["foreign"] * 4
                                                       + ["transfer"] * 1 + ["subset"] * 9)}
    ids = list(origins)
    for seed in range(5):
        cal, ev = split_negatives(ids, seed, origins)
        assert not set(cal) & set(ev) and set(cal) | set(ev) == set(ids) and len(cal) == len(ids) // 2
        for o in set(origins.values()):
            members = {i for i in ids if origins[i] == o}
            if len(members) >= 2:
                assert members & set(cal) and members & set(ev), (seed, o)
        assert split_negatives(list(reversed(ids)), seed, origins) == (cal, ev)


class _ConstPredictor:
    """Answers label ``answer[i]`` for the i-th fingerprint (by position in the batch)."""

    differentiable = False

    def __init__(self, answers, k=10):
        self.answers, self.num_classes, self.input_shape = answers, k, (3, 4, 4)

    def predict(self, x):
        out = torch.zeros(len(x), self.num_classes)
        out[torch.arange(len(x)), self.answers[:len(x)]] = 1.0
        return out


class _FakeZoo:
    """A zoo whose members answer fixed labels (enough to exercise calibration)."""

    def __init__(self, members):
        self.members = members

    class _M:
        def __init__(self, id, role, answers):
            self.id, self.role, self.family, self.accuracy, self.answers = id, role, {"kind": role}, None, answers

    import contextlib

    @contextlib.contextmanager
    def predictor(self, m):
        yield _ConstPredictor(m.answers)


def test_calibration_never_sees_the_evaluation_half():
    n = 20
    y = torch.arange(n) % 10
    fps = FingerprintSet("c-examples", {}, torch.rand(n, 3, 4, 4), y, 0.1)
    ids = [f"neg-{i:02d}" for i in range(10)]
    cal, held = split_negatives(ids, seed=0)

    def zoo(held_matches: int):
        members = [_FakeZoo._M("pos", "positive", y.clone())]
        for i, nid in enumerate(ids):
            answers = (y + 1) % 10  # never the fingerprint label
            if nid in held:
                answers = answers.clone()
                answers[:held_matches] = y[:held_matches]
            elif i % 3 == 0:
                answers = answers.clone()
                answers[:2] = y[:2]
            members.append(_FakeZoo._M(nid, "negative", answers))
        return _FakeZoo(members)

    ev_low = evaluate_on_zoo(fps, zoo(0), seed=0)
    ev_high = evaluate_on_zoo(fps, zoo(20), seed=0)  # the held-out half now matches everything
    assert ev_low.calibration == cal and ev_low.evaluation == held
    assert ev_low.threshold == ev_high.threshold  # calibration saw none of it
    assert ev_low.threshold > 2 / n
    from fingerprints.summary import summarize

    assert summarize(fps, ev_low)["false_positives"] == 0
    assert summarize(fps, ev_high)["false_positives"] == len(held)


def test_many_sets_open_each_member_once_and_score_like_one_at_a_time():
    from fingerprints.bank import evaluate_many_on_zoo

    y = torch.arange(20) % 10
    a = FingerprintSet("c-examples", {}, torch.rand(20, 3, 4, 4), y, 0.1)
    b = FingerprintSet("misclassified", {}, torch.rand(12, 3, 4, 4), y[:12], 0.1)
    members = [_FakeZoo._M("pos", "positive", y.clone())]
    members += [_FakeZoo._M(f"neg-{i}", "negative", (y + i % 3) % 10) for i in range(6)]

    class Counting(_FakeZoo):
        opened = 0

        def predictor(self, m):
            Counting.opened += 1
            return super().predictor(m)

    zoo = Counting(members)
    together = evaluate_many_on_zoo([a, b], zoo, seed=0)
    assert Counting.opened == len(members)
    for fps, ev in zip((a, b), together):
        alone = evaluate_on_zoo(fps, _FakeZoo(members), seed=0)
        assert ev.method == fps.method and ev.queries == len(fps)
        assert [m["rate"] for m in ev.members] == [m["rate"] for m in alone.members]
        assert ev.threshold == alone.threshold and ev.calibration == alone.calibration


# ------------------------------------------------------------ zoo + stage
def _owner_obj(model, source, seed=0):
    from fingerprints.zoo import Owner
    from suite.app.pipeline import state_sha256

    return Owner(model=model, arch="vgg16", width=0.25, sha256=state_sha256(model), model_id="test-owner",
                 source=source, source_args={"name": "digits16", "data_root": None, "limit": 96}, seed=seed,
                 profile="smoke")


def test_smoke_zoo_builds_real_members_and_is_cached(owner, cache_dir):
    from fingerprints.zoo import get_zoo, load_member_model, make_spec, zoo_dir
    from suite.core.config import PROFILE_DEFAULTS

    source = reg.sources.build("digits16", None, limit=96)
    spec = make_spec("smoke", negatives=3)
    o = _owner_obj(owner, source)
    recipe = PROFILE_DEFAULTS["smoke"]["recipe"].as_dict()
    logs: list[str] = []
    zoo = get_zoo(o, spec, cache_dir=str(cache_dir), recipe=recipe, log=logs.append)
    assert not zoo.cache_hit
    comp = zoo.composition()
    assert comp["negatives"] == 3 and comp["positives"] == 3
    ids = {m.id for m in zoo.positives()}
    assert ids == {"prune-block-0.5", "prune-block-0.5-ft1", "copy-all-layers"}
    pruned = load_member_model(zoo, next(m for m in zoo.positives() if m.id == "prune-block-0.5"))
    w = dict(pruned.named_parameters())["features.3.0.weight"]
    assert 0.4 < float((w == 0).float().mean()) < 0.6  # really pruned
    negs = zoo.negatives()
    assert len({(m.arch, m.width, m.family["seed"]) for m in negs}) == 3
    assert all(m.family["kind"] == "independent" for m in negs)
    again = get_zoo(o, spec, cache_dir=str(cache_dir), recipe=recipe)
    assert again.cache_hit and [m.id for m in again.members] == [m.id for m in zoo.members]
    # a corrupt entry is detected and rebuilt
    (zoo_dir(str(cache_dir), o, spec) / "positives" / "prune-block-0.5.pt").write_bytes(b"junk")
    logs.clear()
    rebuilt = get_zoo(o, spec, cache_dir=str(cache_dir), recipe=recipe, log=logs.append)
    assert not rebuilt.cache_hit and any("unusable" in m for m in logs)


def test_zoo_negatives_go_through_the_executor(owner, cache_dir):
    """The default path: one fresh process per independent model (suite.core.executors, local)."""
    from fingerprints.zoo import get_zoo, make_spec
    from suite.core.config import PROFILE_DEFAULTS

    source = reg.sources.build("digits16", None, limit=96)
    spec = make_spec("smoke", negatives=2, executor="local", jobs=2, copies="none", finetune_sparsities="none")
    zoo = get_zoo(_owner_obj(owner, source), spec, cache_dir=str(cache_dir),
                  recipe=PROFILE_DEFAULTS["smoke"]["recipe"].as_dict())
    assert len(zoo.negatives()) == 2 and len(zoo.positives()) == 1
    for m in zoo.negatives():  # trained in child processes, into the suite's model cache
        assert m.file.startswith(str(cache_dir / "models")) and m.info["cache_hit"] is False


def test_zoo_spec_overrides_and_errors():
    from fingerprints.zoo import make_spec

    spec = make_spec("default", negatives=30, schemes="block:nm", compiled="tvm/owner:onnx/copy-all-layers")
    assert spec.negatives == 30 and spec.schemes == ("block", "nm")
    assert spec.compiled == (("tvm", "owner"), ("onnx", "copy-all-layers"))
    for profile in ("default", "full"):  # a calibrated threshold on >= 20 independent models
        spec = make_spec(profile)
        assert spec.negatives + len(spec.extra_negatives) >= 20
    with pytest.raises(ConfigError, match="did you mean 'negatives'"):
        make_spec("default", negatvies=3)
    with pytest.raises(ConfigError):
        make_spec("default", negatives=1)
    with pytest.raises(ConfigError):
        make_spec("default", compiled="tflite/owner")


def test_fingerprint_args_routing():
    from fingerprints.options import split_args

    per, zoo, access = split_args(("ltrc-examples", "misclassified"),
                                  {"count": 5, "radius": 0.3, "ltrc-examples.k": 2, "zoo.negatives": 4,
                                   "access": "prob"})
    assert per["ltrc-examples"] == {"count": 5, "radius": 0.3, "k": 2} and per["misclassified"] == {"count": 5}
    assert zoo == {"negatives": 4} and access == "prob"
    with pytest.raises(ConfigError, match="no selected fingerprint method"):
        split_args(("misclassified",), {"radius": 0.3})
    with pytest.raises(ConfigError, match="not among the selected"):
        split_args(("misclassified",), {"ipguard.steps": 3})


def test_run_records_fingerprints(tmp_path, cache_dir):
    """A smoke run with fingerprints: the record carries one entry per method with every field."""
    from suite.core.config import RunConfig
    from suite.app.pipeline import run

    cfg = RunConfig(model="vgg16", compress="block", profile="smoke", cache_dir=str(cache_dir),
                    output_dir=str(tmp_path / "runs"), quiet=True, threads=1,
                    recipe=TrainRecipe(epochs=3, batch_size=32, lr=0.05, warmup_epochs=0), attacks=(),
                    fingerprints=("ltrc-examples", "misclassified"), negatives=2,
                    fingerprint_args={"ltrc-examples.steps": 20, "ltrc-examples.radius": 0.3})
    path, record = run(cfg)
    entries = {e["id"]: e for e in record["fingerprints"]}
    assert set(entries) == {"ltrc-examples", "misclassified"}
    for e in entries.values():
        for key in ("id", "R", "T", "U", "auc", "tpr_at_1pct_fpr", "threshold", "false_positives", "n_positives",
                    "n_negatives", "queries", "generation_seconds", "by_family", "roc"):
            assert key in e, key
        assert e["n_negatives"] == 2 and e["n_positives"] == 4  # 3 zoo positives + this run's compressed model
        assert e["U"] == pytest.approx(e["R"] - e["T"], abs=1e-5)
        assert 0 <= e["auc"] <= 1 and e["queries"] <= 16
        assert "this-run" in e["by_family"]["kind"] and set(e["by_family"]) >= {"scheme", "sparsity", "finetune",
                                                                                 "compiled"}
        assert len(e["roc"]["fpr"]) == len(e["roc"]["tpr"])
    assert record["metrics"]["fp_ltrc-examples_auc"] == entries["ltrc-examples"]["auc"]
    assert record["higher_is_better"]["fp_ltrc-examples_T"] is False
    assert "fingerprint" in record["timings"]
    details = json.loads((path / "fingerprints" / "ltrc-examples.json").read_text())
    assert any(m["id"] == "this-run:compressed" for m in details["members"])
    assert (path / "fingerprints" / "ltrc-examples" / "fingerprints.npz").is_file()
