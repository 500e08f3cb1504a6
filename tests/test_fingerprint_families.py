"""The thief's suspects (quantized, fp16, fine-pruned, channel-pruned, extraction students), the harder
negatives (foreign architectures, disjoint halves, transfer-learned) and the SAC-style / UAP baselines."""

from __future__ import annotations

import pytest
import torch

from suite.core import registries as reg
from suite.core.config import TrainRecipe
from suite.core.training import accuracy, train_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LIMIT = 300


@pytest.fixture(scope="module")
def source():
    return reg.sources.build("digits16", None, limit=LIMIT)


@pytest.fixture(scope="module")
def owner(source):
    torch.manual_seed(0)
    model = reg.models.build("resnet20", num_classes=10, width=0.25, in_channels=3)
    # 15 epochs: ~0.9 test accuracy.  A 4-epoch owner (~0.3) leaves the smoke LTRC profile no example that
    # reaches its target, which tests nothing about the families.
    train_model(model, source.train, None, TrainRecipe(epochs=15, batch_size=32, lr=0.05, warmup_epochs=0), seed=0,
                quiet=True)
    return model.eval()


def _owner_obj(model, source):
    from fingerprints.zoo import Owner
    from suite.app.pipeline import state_sha256

    return Owner(model=model, arch="resnet20", width=0.25, sha256=state_sha256(model), model_id="test-owner",
                 source=source, source_args={"name": "digits16", "data_root": None, "limit": LIMIT}, seed=0,
                 profile="smoke")


@pytest.mark.parametrize("arch", ["plaincnn", "wideshallow"])
def test_foreign_architectures_registered_and_exportable(arch, tmp_path):
    from compression.backends.onnx_backend import export_onnx

    model = reg.models.build(arch, num_classes=7, width=0.5, in_channels=1).eval()
    x = torch.rand(3, 1, 16, 16)
    assert model(x).shape == (3, 7) and model.classifier.out_features == 7
    export_onnx(model, (1, 16, 16), tmp_path / "m.onnx")
    from fingerprints.families import OnnxFilePredictor

    got = OnnxFilePredictor(tmp_path / "m.onnx", (1, 16, 16), 7).predict(x)
    assert torch.allclose(got, model(x), atol=1e-4)


@pytest.mark.parametrize("mode", ["int8-dynamic", "int8-static", "fp16"])
def test_quantized_onnx_copies_keep_the_owner(owner, source, tmp_path, mode):
    from compression.backends.onnx_backend import export_onnx
    from fingerprints.families import OnnxFilePredictor, quantize_onnx

    export_onnx(owner, tuple(source.shape), tmp_path / "fp32.onnx")
    info = quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "q.onnx", mode, source.train.tensors()[0][:64])
    assert "onnxruntime" in info["tool"]
    x, _ = source.test.tensors()
    pred = OnnxFilePredictor(tmp_path / "q.onnx", tuple(source.shape), 10)
    agree = float((pred.predict(x).argmax(1) == owner(x).argmax(1)).float().mean())
    assert agree > 0.9
    if mode == "fp16":
        assert pred.input_dtype.__name__ == "float16"


def test_fine_pruning_and_channel_pruning(owner, source):
    from fingerprints.families import channel_prune, fine_prune

    fp, info = fine_prune(owner, source, fraction=0.5, layers=2, epochs=1, lr=0.01, images=128, seed=0)
    assert sum(info["pruned_channels"].values()) > 0
    conv = [m for m in fp.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    dead = (conv.weight.flatten(1).abs().sum(1) == 0).sum()
    assert int(dead) == list(info["pruned_channels"].values())[-1]  # held at zero through the fine-tuning
    cp, info = channel_prune(owner, source, ratio=0.5, epochs=1, lr=0.01, seed=0)
    assert info["params_after"] < 0.5 * info["params_before"] and "torch-pruning" in info["tool"]
    assert cp(torch.rand(2, *source.shape)).shape == (2, 10)


@pytest.mark.parametrize("access", ["label", "prob"])
def test_extraction_student_learns_the_owner(owner, source, access):
    from fingerprints.families import train_student

    student, info = train_student(owner, source, arch="plaincnn", width=0.5, access=access, epochs=6, copies=3,
                                  seed=0)
    assert info["access"] == access and info["query_images"] == 4 * len(source.val)
    assert info["agreement_on_queries"] > 0.5 and accuracy(student, source.test) > 0.15  # 10% is chance


def test_disjoint_halves_and_transfer_adaptation(source):
    from fingerprints.families import adapt_first_conv, disjoint_half

    a, b = disjoint_half(source, 0, 1), disjoint_half(source, 1, 1)
    assert set(a.train.indices.tolist()).isdisjoint(b.train.indices.tolist())
    assert len(a.train) == len(b.train) == len(source.train) // 2
    m = adapt_first_conv(reg.models.build("plaincnn", num_classes=10, width=0.25, in_channels=3), 1)
    assert m(torch.rand(2, 1, 20, 20)).shape == (2, 10)


@pytest.fixture(scope="module")
def thief_zoo(owner, source, tmp_path_factory):
    """A smoke zoo with every new family (and the new negatives) built from the owner."""
    from fingerprints.zoo import get_zoo, make_spec
    from suite.core.config import PROFILE_DEFAULTS

    cache = tmp_path_factory.mktemp("cache")
    spec = make_spec("smoke", negatives=2, schemes="none", finetune_sparsities="none",
                     quantized="int8-dynamic/owner:int8-static/owner:fp16/owner:int8-static/tp-channel-0.5-ft1",
                     fine_prune="0.5", fine_prune_layers=2, channel_prune="0.5", channel_prune_epochs=1,
                     extraction="plaincnn/0.5/label:plaincnn/0.5/prob:resnet20/0.25/label",
                     extra_negatives="plaincnn/0.25/full:wideshallow/0.25/half0:plaincnn/0.25/half1:"
                                     "plaincnn/0.25/transfer", negative_epochs=2, same_recipe=2)
    zoo = get_zoo(_owner_obj(owner, source), spec, cache_dir=str(cache),
                  recipe=PROFILE_DEFAULTS["smoke"]["recipe"].as_dict())
    return zoo, cache


def test_zoo_builds_every_thief_family(thief_zoo):
    from fingerprints.zoo import load_zoo

    zoo, _ = thief_zoo
    kinds = {m.id: m.family["kind"] for m in zoo.members}
    assert kinds["fineprune-0.5-ft1"] == "fine-pruned"
    assert kinds["tp-channel-0.5-ft1"] == "channel-pruned"
    for q in ("int8-dynamic:owner", "int8-static:owner", "fp16:owner", "int8-static:tp-channel-0.5-ft1"):
        assert kinds[q] == "quantized", q
    ext = {m.id for m in zoo.extractions()}
    assert ext == {"extract-label-plaincnn-w0.5", "extract-prob-plaincnn-w0.5"}  # no resnet20 student (owner's arch)
    origins = [m.family["origin"] for m in zoo.negatives()]
    assert {"foreign", "disjoint", "transfer", "same-recipe"} <= set(origins) and len(origins) == 8
    rivals = [m for m in zoo.negatives() if m.family["origin"] == "same-recipe"]
    assert len(rivals) == 2 and all(m.arch == "resnet20" and m.width == 0.25 for m in rivals)
    assert {m.family["seed"] for m in rivals} == {3000, 3001} and all(m.family["subset"] == 1.0 for m in rivals)
    transfer = next(m for m in zoo.negatives() if m.family["origin"] == "transfer")
    assert transfer.info["related_source"] == "digits-affine24" and not transfer.file.startswith("/")
    again = load_zoo(zoo.directory)  # sha256 of every ONNX / state_dict checked
    assert [m.id for m in again.members] == [m.id for m in zoo.members]
    for m in zoo.members:  # every member answers through the predictor interface
        with zoo.predictor(m) as pred:
            assert pred.predict(torch.rand(3, *zoo.input_shape)).shape == (3, 10)


@pytest.mark.parametrize("method", ["ltrc-examples", "sac-w", "sac-m", "uap", "misclassified"])
def test_every_family_is_scored_and_extraction_reported_apart(thief_zoo, owner, source, method):
    from fingerprints.bank import evaluate_on_zoo
    from fingerprints.options import build_method
    from fingerprints.summary import summarize

    zoo, _ = thief_zoo
    fps = build_method(method, "smoke", {}).generate(owner, source, seed=0)
    assert len(fps) > 0
    ev = evaluate_on_zoo(fps, zoo)
    entry = summarize(fps, ev)
    assert {"fine-pruned", "channel-pruned", "quantized"} <= set(entry["by_family"]["kind"])
    assert "extraction" not in entry["by_family"]["kind"]  # never mixed into the copy families
    assert entry["extraction"]["n"] == 2 and set(entry["extraction"]["by_access"]) == {"label", "prob"}
    assert set(entry["T_by_origin"]) >= {"foreign", "disjoint", "transfer"}
    assert entry["n_negatives"] == 8 and entry["n_positives"] == len(zoo.positives())
    for m in ev.members:
        assert 0.0 <= m["rate"] <= 1.0
    # calibration never sees the held-out negatives
    assert set(ev.calibration).isdisjoint(ev.evaluation)
    assert set(ev.calibration) | set(ev.evaluation) == {m.id for m in zoo.negatives()}
    for origin in ("same-recipe", "disjoint"):  # stratified: each origin with two members sits on both sides
        ids = {m.id for m in zoo.negatives() if m.family["origin"] == origin}
        assert len(ids & set(ev.calibration)) == 1 and len(ids & set(ev.evaluation)) == 1, origin
    assert entry["threshold"] > max(m["rate"] for m in ev.members if m["id"] in set(ev.calibration)) - 1e-9 \
        or entry["threshold"] == 1.0


def test_calibration_ignores_the_held_out_negatives(thief_zoo, owner, source):
    """Changing every held-out negative's rate leaves the threshold unchanged."""
    from fingerprints.bank import Evaluation
    from fingerprints.metrics import calibrate_threshold

    zoo, _ = thief_zoo
    from fingerprints.bank import evaluate_on_zoo
    from fingerprints.options import build_method

    fps = build_method("sac-m", "smoke", {}).generate(owner, source, seed=0)
    ev = evaluate_on_zoo(fps, zoo)
    cal = [m["rate"] for m in ev.members if m["id"] in set(ev.calibration)]
    assert ev.threshold == calibrate_threshold(cal, len(fps))
    assert isinstance(ev, Evaluation)


def test_sac_scores_direction_and_range(owner, source):
    """Owner scores 1, a relabelled copy lower; label-only and probability access both stay in [0, 1]."""
    from compression.backends.torch_eager import TorchPredictor
    from fingerprints.options import build_method
    from fingerprints.verify import match_scores

    for name in ("sac-w", "sac-m"):
        fps = build_method(name, "smoke", {"count": 24}).generate(owner, source, seed=0)
        assert fps.meta["scoring"] == "correlation" and len(fps.meta["reference"]) == len(fps)
        for access in ("label", "prob"):
            same = match_scores(TorchPredictor(owner, tuple(source.shape), 10), fps, access)
            assert same.rate == pytest.approx(1.0, abs=1e-5)

            class Constant:
                def predict(self, x):
                    return torch.zeros(len(x), 10).index_fill_(1, torch.tensor([3]), 5.0)

            other = match_scores(Constant(), fps, access)
            assert 0.0 <= other.rate < same.rate and all(0.0 <= s <= 1.0 for s in other.scores)


def test_uap_fingerprints_are_the_owner_fooling_pattern(owner, source):
    from fingerprints.options import build_method

    fps = build_method("uap", "smoke", {}).generate(owner, source, seed=0)
    x_val, _ = source.val.tensors()
    assert len(fps) > 0 and len(fps.meta["uap_fooling_rates"]) == 2
    with torch.no_grad():
        assert torch.equal(owner(fps.x).argmax(1), fps.y)  # the owner gives exactly the stored labels


def test_same_recipe_negatives_copy_everything_but_the_seed(owner, source):
    """The nearest rival: the owner's architecture, width, whole train split and whole recipe; another seed."""
    from fingerprints.zoo import make_spec, negative_jobs, negative_origin

    recipe = TrainRecipe(epochs=12, batch_size=32, lr=0.05).as_dict()
    own = _owner_obj(owner, source)
    jobs = negative_jobs(own, make_spec("smoke", same_recipe=2, negative_epochs=2), "/tmp/unused", recipe)
    rivals = [j for j in jobs if j.get("mode") == "recipe"]
    others = [j for j in jobs if j.get("mode") != "recipe"]
    assert len(rivals) == 2 and len(others) == 4
    for j in rivals:
        assert (j["arch"], j["width"], j["subset"]) == ("resnet20", 0.25, 1.0)
        assert j["recipe"] == recipe and j["seed"] != own.seed  # the owner's epochs, not negative_epochs
        assert negative_origin(j, "resnet20") == "same-recipe"
    assert all(j["recipe"]["epochs"] == 2 for j in others)
    assert len({j["id"] for j in jobs}) == len(jobs)
    assert make_spec("default").same_recipe >= 2 and make_spec("full").same_recipe >= 2
    assert not negative_jobs(own, make_spec("smoke"), "/tmp/unused", recipe)[4:]  # smoke: none


def test_zoo_spec_thief_fields_and_errors():
    from fingerprints.zoo import make_spec
    from suite.core.errors import ConfigError

    spec = make_spec("full")
    assert len(spec.extra_negatives) >= 10 and spec.negatives + len(spec.extra_negatives) >= 30
    lean = make_spec("default")  # the first run's zoo keeps every family and 20 negatives
    assert lean.negatives + len(lean.extra_negatives) >= 20 and lean.quantized and lean.extraction
    assert lean.compiled and lean.fine_prune and lean.channel_prune and lean.copies
    assert {m for m, _ in spec.quantized} == {"int8-dynamic", "int8-static", "fp16"}
    assert {a for _, _, a in spec.extraction} == {"label", "prob"}
    smoke = make_spec("smoke")
    assert smoke.quantized == () and smoke.extraction == () and smoke.extra_negatives == ()
    s = make_spec("smoke", quantized="fp16/owner", extraction="plaincnn/0.5/prob", extra_negatives="wideshallow/1/half1",
                  fine_prune="0.3:0.6")
    assert s.quantized == (("fp16", "owner"),) and s.extraction == (("plaincnn", 0.5, "prob"),)
    assert s.extra_negatives == (("wideshallow", 1.0, "half1"),) and s.fine_prune == (0.3, 0.6)
    for bad in ({"quantized": "int4/owner"}, {"extraction": "plaincnn/0.5/logits"},
                {"extra_negatives": "plaincnn/1/quarter"}, {"channel_prune": "1.5"}, {"extraction": "plaincnn/x/label"},
                {"same_recipe": -1}):
        with pytest.raises(ConfigError):
            make_spec("smoke", **bad)


def test_nearest_members_reports_ties():
    from fingerprints.bank import nearest_members

    fam = lambda kind: {"kind": kind}  # noqa: E731
    members = [{"id": "a", "role": "positive", "family": fam("pruned"), "scores": "1111"},
               {"id": "b", "role": "positive", "family": fam("quantized"), "scores": "1111"},
               {"id": "c", "role": "extraction", "family": fam("extraction"), "scores": "0011"},
               {"id": "n", "role": "negative", "family": fam("independent"), "scores": "1111"},
               {"id": "old", "role": "positive", "family": fam("compiled")}]  # no scores: ignored
    near = nearest_members([1.0, 1.0, 1.0, 1.0], members)
    assert near["member"] == "a" and near["similarity"] == 1.0 and near["tied_kinds"] == ["pruned", "quantized"]
    assert near["by_kind"]["extraction"] == 0.5 and "independent" not in near["by_kind"]
    near = nearest_members([0.0, 0.0, 1.0, 1.0], members)
    assert near["kind"] == "extraction" and near["tied_kinds"] == ["extraction"]
    assert nearest_members([1.0], members) is None
