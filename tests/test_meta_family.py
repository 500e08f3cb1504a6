"""Meta-learned UAPs: the task family, leave-one-family-out, shipped attackers, validation tuning, ZO variants."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from attacks.meta import MetaConfig, Task, meta_train, save_state
from attacks.metrics import evaluate_perturbation
from attacks.shipped import SHIPPED_DIR, pick_shipped, ship, shipped, verify
from attacks.tasks import DEFAULT_TASK_MODELS, TASK_SOURCES, family_of, meta_training_sources
from attacks.tuning import tune_on_validation
from attacks.victim import labels_of
from suite.core import registries as reg
from suite.core.errors import ArtifactError, ConfigError, DataError
from suite.core.sources.embedded import digits16, digits_affine24

from test_attacks import BlackBox, _train


def _fashion_available() -> bool:
    try:
        reg.sources.get("fashion-mnist")(None, limit=1)
        return True
    except DataError:
        return False


needs_fashion = pytest.mark.skipif(not _fashion_available(), reason="Fashion-MNIST IDX files not installed")


@pytest.fixture(scope="module")
def source():
    return digits16(None)


@pytest.fixture(scope="module")
def victim(source):
    return _train(source.train)


@pytest.fixture(scope="module")
def tiny_state():
    other = digits_affine24(None)
    task = Task("digits-affine24/tiny", "digits-affine24", _train(other.train, 2, 2), other.train, "m",
                arch="tiny", family="digits", eps=8 / 255)
    return meta_train([task], MetaConfig(variant="meta", eps=0.3, meta_steps=3, inner_steps=2, support=8, query=8,
                                         tasks_per_step=1), progress=False)


# ------------------------------------------------------------------ task family
def test_families_leave_a_whole_dataset_out():
    assert family_of("digits16") == family_of("digits-photo32") == family_of("mnist") == "digits"
    assert family_of("fashion-mnist") == family_of("fashion-affine24") == "fashion"
    assert family_of("cifar10") is None
    assert set(meta_training_sources("digits16")) == set(TASK_SOURCES["fashion"])
    assert set(meta_training_sources("mnist")) == set(TASK_SOURCES["fashion"])
    assert set(meta_training_sources("fashion-photo32")) == set(TASK_SOURCES["digits"])
    assert set(meta_training_sources("cifar10")) == set(TASK_SOURCES["digits"]) | set(TASK_SOURCES["fashion"])
    assert sum(len(v) for v in TASK_SOURCES.values()) >= 6 and len(DEFAULT_TASK_MODELS) >= 3
    assert "vgg16" not in DEFAULT_TASK_MODELS  # the held-out architecture of the shipped attackers


@needs_fashion
def test_fashion_variants_reproducible_and_split_by_official_split():
    from suite.core.sources import fashion_variants as fv

    base = reg.sources.get("fashion-mnist")(None, limit=fv.BASE_LIMIT)
    shapes = set()
    for name in ("fashion-photo32", "fashion-affine24"):
        a = fv.load_variant(name, limit=40)
        fv._build.cache_clear()
        b = fv.load_variant(name, limit=40)
        assert np.array_equal(a.train.images, b.train.images) and np.array_equal(a.test.images, b.test.images)
        assert a.train.images.shape[1] == 3
        shapes.add(a.shape[1])
        # train / val from the official training images, test from the official test images, in order
        for split in ("train", "val", "test"):
            assert np.array_equal(getattr(a, split).indices, getattr(base, split).indices[:40])
            assert np.array_equal(getattr(a, split).labels, getattr(base, split).labels[:40])
        assert not set(a.train.indices.tolist()) & set(a.val.indices.tolist())
        from suite.core.threat import threat_model_for
        assert threat_model_for(a).derived and threat_model_for(a).linf == pytest.approx(8 / 255)
    assert shapes == {32, 24}


# ------------------------------------------------------------------ shipped attackers
def test_shipped_attackers_load_and_never_saw_their_held_out_family():
    states = shipped()
    assert {s.variant for s in states} >= {"meta", "maml", "l2o"}
    for s in states:
        verify(s.path)  # SHA256SUMS covers state.pt and meta.json
        meta = json.loads((s.path / "meta.json").read_text())
        assert hashlib.sha256((s.path / "state.pt").read_bytes()).hexdigest() == meta["sha256"] == s.sha256
        state = s.load()  # weights_only=True inside
        info = state.info
        held = info["held_out_source"]
        assert family_of(held) not in s.families and held not in s.sources
        assert "vgg16" not in s.archs and len(s.archs) >= 3 and len(s.sources) >= 3
        assert len({tuple(t["shape"]) for t in info["tasks"]}) >= 3  # three resolutions
        assert info["command"].startswith("python -m suite meta-train") and "--ship" in info["command"]
        assert all(t["eps"] > 0 for t in info["tasks"])
    digits = pick_shipped("meta", "linf", "digits16", "vgg16")
    fashion = pick_shipped("meta", "linf", "fashion-mnist", "vgg16")
    assert digits is not None and digits.families == frozenset({"fashion"})
    assert fashion is not None and fashion.families == frozenset({"digits"})


def test_tampered_shipped_attacker_is_refused(tmp_path):
    root = tmp_path / "shipped"
    shutil.copytree(SHIPPED_DIR, root)
    found = pick_shipped("meta", "linf", "digits16", directory=root)
    blob = bytearray((found.path / "state.pt").read_bytes())
    blob[-5] ^= 0xFF
    (found.path / "state.pt").write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="sha256"):
        found.load()


def test_ship_then_pick(tmp_path, tiny_state):
    save_state(tiny_state, tmp_path / "trained")
    root = tmp_path / "shipped"
    ship(tmp_path / "trained", "meta-linf-test", {"command": "python -m suite meta-train --ship meta-linf-test",
                                                  "held_out_source": "fashion-mnist"}, directory=root)
    got = pick_shipped("meta", "linf", "fashion-mnist", directory=root)
    assert got is not None and got.families == frozenset({"digits"})
    verify(got.path)
    assert got.load().info["held_out_source"] == "fashion-mnist"
    assert pick_shipped("meta", "linf", "digits16", directory=root) is None  # saw the digit family
    assert pick_shipped("meta", "l2", "fashion-mnist", directory=root) is None


# ------------------------------------------------------------------ validation tuning
class Recorder(torch.nn.Module):
    """Wraps a victim and keeps every image it is queried on (to prove which images a tuner read)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.net(x)


def test_validation_tuning_never_reads_test_images(source, victim):
    rec = Recorder(victim)
    xc, _ = source.train.tensors()
    xv, _ = source.val.tensors()
    xt, _ = source.test.tensors()
    build = lambda **s: reg.attacks.build("uap-pgd", eps=0.3, steps=4, **s)  # noqa: E731
    tuned = tune_on_validation(build, rec, xc[:64], xv, {"step_size": [0.05, 0.5]})
    assert tuned.best["step_size"] in (0.05, 0.5) and len(tuned.trials) == 2
    assert all(0 <= t["val_fooling_rate"] <= 1 for t in tuned.trials)
    test_rows = {row.numpy().tobytes() for row in xt}
    for batch in rec.seen:  # the tuner saw craft images, perturbed craft images and validation images only
        clean_or_perturbed = batch.clamp(0, 1)
        assert not any(r.numpy().tobytes() in test_rows for r in clean_or_perturbed)
    with pytest.raises(ConfigError):
        tune_on_validation(build, rec, xc[:8], xv[:0], {"step_size": [0.1]})


# ------------------------------------------------------------------ derivative-free variants
def test_uap_zo_spends_its_query_budget_without_gradients(source, victim):
    box = BlackBox(victim)
    xc, _ = source.train.tensors()
    xe, _ = source.test.tensors()
    clean = labels_of(victim, xe)
    for name in ("uap-zo",):
        attack = reg.attacks.build(name, eps=0.3, queries=3000, directions=10, batch_size=16, step_size=0.5)
        res = attack.craft(box, xc[:200], track=(xe, clean))
        assert res.grad_queries == 0 and 0 < res.queries <= 3000
        assert float(res.perturbation.abs().max()) <= 0.3 + 1e-6
        assert [h["queries"] for h in res.history] == sorted(h["queries"] for h in res.history)
        assert res.history[-1]["fooling_rate"] > res.history[0]["fooling_rate"]  # it learned from queries


def test_uap_meta_zo_attacks_a_tvm_deployment(source, victim, tiny_state, tmp_path):
    from compression.tvm_backend.backend import TVMBackend

    backend = TVMBackend(batch_sizes=[32], tune=False, measure_dense=False, threads=1,
                         cache_dir=str(tmp_path / "cache"))
    dep = backend.deploy(victim, (3, 16, 16), 10, workdir=str(tmp_path / "tvm"))
    assert dep.predictor.differentiable is False
    xc, _ = source.train.tensors()
    xe, ye = source.test.tensors()
    attack = reg.attacks.build("uap-meta-zo", meta=tiny_state, eps=0.3, queries=1500, directions=5, batch_size=8)
    res = attack.craft(dep.predictor, xc[:64], track=(xe[:64], labels_of(dep.predictor, xe[:64])))
    assert res.grad_queries == 0 and 0 < res.queries <= 1500 and res.steps >= 5
    assert float(res.perturbation.abs().max()) <= 0.3 + 1e-6
    m = evaluate_perturbation(dep.predictor, res.perturbation, xe, ye, norm="linf")
    assert 0 <= m["fooling_rate"] <= 1
    with pytest.raises(ConfigError, match="meta-trained"):
        reg.attacks.build("uap-meta-zo", eps=0.3)


def test_stage_crafts_zo_uaps_on_every_subject(source, victim, tmp_path):
    """uap-zo / uap-meta-zo are black boxes: the stage crafts them on each subject's predictor, deployment included."""
    import copy

    from attacks.stage import STAGE
    from compression.backends.torch_eager import TorchPredictor
    from suite.core.config import RunConfig
    from suite.core.runtime import Runtime
    from suite.core.stages import Role, StageInput, Subject, Subjects

    comp = copy.deepcopy(victim).eval()
    eager = lambda m: TorchPredictor(m, (3, 16, 16), 10)  # noqa: E731
    subjects = Subjects(Subject(Role.DENSE, eager(victim), victim), Subject(Role.COMPRESSED, eager(comp), comp),
                        Subject(Role.DEPLOYED, BlackBox(comp), None))
    cfg = RunConfig(model="vgg16", profile="smoke", attacks=("uap-zo", "uap-meta-zo"), seed=0,
                    attack_args={"eval_limit": 64, "craft_limit": 64, "queries": 600, "directions": 4,
                                 "batch_size": 8, "sweep": "none"}).resolved()
    out = STAGE.run(StageInput(cfg, source, subjects, tmp_path, Runtime()))
    for name in ("uap-zo", "uap-meta-zo"):
        assert out.transfer[name]["rows"] == ["dense", "compressed", "deployed"]
        mine = [e for e in out.attacks if e["attack"] == name]
        assert all(e["black_box"] and e["grad_queries"] == 0 and 0 < e["queries"] <= 600 for e in mine)
        assert f"{name.replace('-', '_')}_fooling_rate" in out.metrics
    meta = next(e for e in out.attacks if e["attack"] == "uap-meta-zo")
    assert meta["meta_origin"] == "shipped" and meta["held_out_source"] == "digits16"
    assert "digits16" not in meta["meta_task_sources"] and meta["held_out_arch"] is True
