"""Attacks: budgets, no mutation, beats noise, split safety, black boxes, meta-learning, reproducibility."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from attacks.data import AttackData
from attacks.meta import MetaConfig, Task, get_meta_state, load_state, meta_train, save_state
from attacks.metrics import evaluate_perturbation, label_metrics
from attacks.norms import apply_perturbation, norms_of, project, resize_perturbation
from suite.core import registries as reg
from suite.core.errors import ArtifactError, ConfigError, UnknownNameError
from suite.core.sources.base import ImageSplit
from suite.core.sources.embedded import digits16, digits_affine24

EPS_LINF = 64 / 255
EPS_L2 = 2.0


class TinyNet(torch.nn.Module):
    """A small CNN for any resolution (global pooling), inputs [N, 3, H, W] in [0, 1]."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(128, classes))

    def forward(self, x):
        return self.body(x - 0.5)


def _train(split: ImageSplit, seed: int = 0, epochs: int = 6) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet()
    x, y = split.tensors()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def source():
    return digits16(None)


@pytest.fixture(scope="module")
def model(source):
    net = _train(source.train)
    x, y = source.test.tensors()
    with torch.no_grad():
        assert (net(x).argmax(1) == y).float().mean() > 0.8  # a real, trained victim
    return net


@pytest.fixture(scope="module")
def data(source):
    return AttackData.from_source(source, eval_limit=200)


class BlackBox:
    """A predictor without gradients (like a compiled deployment)."""

    differentiable = False

    def __init__(self, net, shape=(3, 16, 16)):
        self.net, self.input_shape, self.num_classes = net, shape, 10

    def predict(self, x):
        with torch.no_grad():
            return self.net(x).detach()


def _fast(name: str, norm: str, eps: float, meta_states=None):
    settings = {"norm": norm, "eps": eps, "seed": 1}
    if name == "uap-pgd":
        settings.update(steps=15)
    if name == "uap-deepfool":
        settings.update(passes=1, deepfool_steps=10)
    if name == "pgd":
        settings.update(steps=3)
    if name == "cw":
        settings.update(steps=5)
    if name in ("uap-meta", "uap-maml", "uap-l2o"):
        settings.update(meta=meta_states[name], steps=3)
    return reg.attacks.build(name, **settings)


@pytest.fixture(scope="module")
def tiny_tasks(source):
    other = digits_affine24(None)
    return [Task("digits16/tiny", "digits16", _train(source.train, 1, 2), source.train, "a"),
            Task("affine24/tiny", "digits-affine24", _train(other.train, 2, 2), other.train, "b")]


@pytest.fixture(scope="module")
def meta_states(tiny_tasks):
    out = {}
    for norm, eps in (("linf", EPS_LINF), ("l2", EPS_L2)):
        for variant in ("meta", "maml", "l2o"):
            cfg = MetaConfig(variant=variant, norm=norm, eps=eps, meta_steps=3, inner_steps=2, support=8,
                             query=8, seed=0)
            out[(norm, f"uap-{variant}")] = meta_train(tiny_tasks, cfg, progress=False)
    return out


ALL = ["uap-pgd", "uap-deepfool", "noise-uniform", "noise-checkerboard", "uap-meta", "uap-maml", "uap-l2o",
       "pgd", "fgsm", "cw"]


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ALL)
def test_budget_exact_and_input_untouched(name, norm, model, data, meta_states):
    if (name == "fgsm" and norm == "l2") or (name == "cw" and norm == "linf"):
        with pytest.raises(ConfigError):
            reg.attacks.build(name, norm=norm)
        return
    eps = EPS_LINF if norm == "linf" else EPS_L2
    states = {k[1]: v for k, v in meta_states.items() if k[0] == norm}
    attack = _fast(name, norm, eps, states)
    x, y = data.craft_tensors()
    x, y = x[:48], y[:48]
    before = x.clone()
    result = attack.craft(model, x) if attack.universal else attack.craft(model, x, y)
    assert torch.equal(x, before), "the input batch was modified"
    if attack.universal:
        v = result.perturbation
        assert v.shape == x.shape[1:]
        assert float(norms_of(v.unsqueeze(0), norm)) <= eps * (1 + 1e-5)
        applied = apply_perturbation(x, v)
    else:
        applied = result.adversarials
    assert applied.min() >= 0 and applied.max() <= 1
    assert float(norms_of(applied - x, norm).max()) <= eps * (1 + 1e-5)
    assert result.metrics["achieved_norm"] <= eps * (1 + 1e-5)
    assert result.seconds >= 0 and result.steps >= 0
    if attack.needs_gradients:
        assert result.grad_queries > 0
    else:
        assert result.grad_queries == 0


def test_uap_beats_noise_on_held_out_images(model, data):
    x, _ = data.craft_tensors()
    xe, ye = data.eval_tensors()
    rates = {}
    for name in ("uap-pgd", "noise-uniform", "noise-checkerboard"):
        attack = reg.attacks.build(name, eps=EPS_LINF, seed=0, **({"steps": 60} if name == "uap-pgd" else {}))
        v = attack.craft(model, x[:256]).perturbation
        rates[name] = evaluate_perturbation(model, v, xe, ye)["fooling_rate"]
    assert rates["uap-pgd"] >= 0.3
    assert rates["uap-pgd"] >= 3 * max(rates["noise-uniform"], rates["noise-checkerboard"], 0.02), rates


def test_uap_deepfool_beats_noise(model, data):
    x, _ = data.craft_tensors()
    xe, ye = data.eval_tensors()
    v = reg.attacks.build("uap-deepfool", eps=EPS_LINF, passes=1, seed=0).craft(model, x[:128]).perturbation
    noise = reg.attacks.build("noise-uniform", eps=EPS_LINF).craft(model, x[:8]).perturbation
    fr = evaluate_perturbation(model, v, xe, ye)["fooling_rate"]
    assert fr > 2 * evaluate_perturbation(model, noise, xe, ye)["fooling_rate"] and fr > 0.1


def test_per_image_pgd_lowers_accuracy(model, data):
    xe, ye = data.eval_tensors()
    res = reg.attacks.build("pgd", eps=EPS_LINF, steps=5).craft(model, xe[:64], ye[:64])
    assert res.metrics["robust_acc"] < res.metrics["clean_acc"] - 0.3


def test_craft_and_eval_sets_cannot_overlap(source):
    with pytest.raises(ConfigError, match="held-out"):
        AttackData("digits16", source.train, source.train.subset(10))
    copy = ImageSplit(source.train.images[:5], source.train.labels[:5], np.arange(10_000, 10_005))
    with pytest.raises(ConfigError, match="identical images"):
        AttackData("digits16", source.train, copy)
    with pytest.raises(ConfigError, match="must differ"):
        AttackData.from_source(source, craft="test", evaluate="test")
    few = AttackData.from_source(source, craft_limit=32, seed=3)
    assert len(few.craft) == 32 and not set(few.craft.indices) & set(few.evaluate.indices)


def test_black_box_refuses_gradients_but_evaluates_a_uap(model, data):
    box = BlackBox(model)
    x, _ = data.craft_tensors()
    xe, ye = data.eval_tensors()
    for name in ("uap-pgd", "pgd"):
        with pytest.raises(ConfigError, match="black box"):
            reg.attacks.build(name, eps=EPS_LINF).craft(box, x[:8]) if name == "uap-pgd" else \
                reg.attacks.build(name, eps=EPS_LINF).craft(box, x[:8], ye[:8])
    v = reg.attacks.build("uap-pgd", eps=EPS_LINF, steps=10).craft(model, x[:64]).perturbation
    white = evaluate_perturbation(model, v, xe, ye)
    black = evaluate_perturbation(box, v, xe, ye)
    assert white == black
    # noise needs no gradients: works on the black box directly
    assert reg.attacks.build("noise-uniform", eps=EPS_LINF).craft(box, x[:8]).grad_queries == 0


def test_onnx_deployment_is_a_black_box(model, tmp_path, data):
    backend = reg.backends.build("onnx")
    dep = backend.deploy(model, (3, 16, 16), 10, workdir=str(tmp_path / "onnx"))
    x, _ = data.craft_tensors()
    xe, ye = data.eval_tensors()
    with pytest.raises(ConfigError, match="gradients"):
        reg.attacks.build("uap-pgd").craft(dep.predictor, x[:4])
    v = reg.attacks.build("uap-pgd", eps=EPS_LINF, steps=10).craft(model, x[:64]).perturbation
    a = evaluate_perturbation(model, v, xe, ye)
    b = evaluate_perturbation(dep.predictor, v, xe, ye)
    assert abs(a["fooling_rate"] - b["fooling_rate"]) <= 0.02


def test_reproducible_from_seed(model, data, meta_states):
    x, _ = data.craft_tensors()
    for name in ("uap-pgd", "uap-meta", "noise-uniform"):
        states = {k[1]: v for k, v in meta_states.items() if k[0] == "linf"}
        a = _fast(name, "linf", EPS_LINF, states).craft(model, x[:32]).perturbation
        b = _fast(name, "linf", EPS_LINF, states).craft(model, x[:32]).perturbation
        assert torch.equal(a, b), name
    a = reg.attacks.build("uap-pgd", eps=EPS_LINF, steps=15, seed=1, random_init=True).craft(model, x[:32])
    b = reg.attacks.build("uap-pgd", eps=EPS_LINF, steps=15, seed=2, random_init=True).craft(model, x[:32])
    assert not torch.equal(a.perturbation, b.perturbation)  # the seed matters


def test_metrics_definitions():
    clean = torch.tensor([0, 1, 2, 3])
    y = torch.tensor([0, 1, 0, 0])      # images 0, 1 correctly classified
    adv = torch.tensor([5, 1, 2, 0])
    m = label_metrics(clean, adv, y, target=None)
    assert m["fooling_rate"] == 0.5          # images 0 and 3 changed
    assert m["asr"] == 0.5                   # of the 2 correct, image 0 now wrong
    assert m["misclassification_rate"] == 0.5
    t = label_metrics(clean, adv, y, target=0)
    assert t["targeted_success"] == 0.0      # image 1 (the only y != 0) is not at 0


def test_projection_and_resize_keep_budget():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(3, 16, 16, generator=gen)
    assert float(project(v, "linf", 0.1).abs().max()) <= 0.1 * (1 + 1e-6)  # float32
    assert float(project(v, "l2", 1.0).norm()) <= 1.0 + 1e-5
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        big = resize_perturbation(project(v, norm, eps), (32, 32), norm, eps)
        assert big.shape == (3, 32, 32)
        assert float(norms_of(big.unsqueeze(0), norm)) <= eps * (1 + 1e-5)


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError):
        reg.attacks.build("uap-pgd", eps=-1)
    with pytest.raises(ConfigError):
        reg.attacks.build("uap-pgd", norm="l7")
    with pytest.raises(ConfigError):
        reg.attacks.build("uap-pgd", steps=0)
    with pytest.raises(ConfigError, match="meta-train"):
        reg.attacks.build("uap-meta")


def test_meta_training_improves_and_round_trips(tiny_tasks, model, data, tmp_path):
    cfg = MetaConfig(variant="meta", eps=EPS_LINF, meta_steps=8, inner_steps=3, support=16, query=16)
    state, path, hit = get_meta_state(tiny_tasks, cfg, tmp_path, progress=False)
    assert not hit and (path / "state.pt").exists()
    again, path2, hit2 = get_meta_state(tiny_tasks, cfg, tmp_path, progress=False)
    assert hit2 and path2 == path
    x, _ = data.craft_tensors()
    xe, ye = data.eval_tensors()
    a = reg.attacks.build("uap-meta", meta=state, eps=EPS_LINF, steps=3).craft(model, x[:32]).perturbation
    b = reg.attacks.build("uap-meta", meta=str(path), eps=EPS_LINF, steps=3).craft(model, x[:32]).perturbation
    assert torch.allclose(a, b, atol=1e-6)
    fr = evaluate_perturbation(model, a, xe, ye)["fooling_rate"]
    assert 0.0 <= fr <= 1.0
    # a corrupt entry is detected and rebuilt
    blob = bytearray((path / "state.pt").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (path / "state.pt").write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="sha256"):
        load_state(path)
    msgs = []
    _, _, hit3 = get_meta_state(tiny_tasks, cfg, tmp_path, progress=False, log=msgs.append)
    assert not hit3 and any("meta-training again" in m for m in msgs)
    # variant mismatch is refused
    save_state(state, tmp_path / "copy")
    with pytest.raises(ConfigError, match="'maml'"):
        reg.attacks.build("uap-maml", meta=str(tmp_path / "copy"))


def test_meta_state_adapts_across_resolutions(meta_states, tiny_tasks):
    state = meta_states[("linf", "uap-meta")]
    for task in tiny_tasks:
        x, _ = task.images.tensors()
        res = reg.attacks.build("uap-meta", meta=state, eps=EPS_LINF, steps=2).craft(task.model, x[:16])
        assert res.perturbation.shape == x.shape[1:]


@pytest.mark.slow
def test_meta_train_cli_ships_a_held_out_state(tmp_path, cache_dir):
    from attacks.shipped import pick_shipped, verify

    out = subprocess.run([sys.executable, "-m", "suite", "meta-train", "--profile", "smoke", "--quiet",
                          "--variant", "meta", "--held-out", "fashion-mnist", "--models", "resnet20",
                          "--ship", "meta-linf-test", "--ship-dir", str(tmp_path / "shipped")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["variant"] == "meta" and len(info["tasks"]) == 3  # the digit family, one architecture
    got = pick_shipped("meta", "linf", "fashion-mnist", directory=tmp_path / "shipped")
    verify(got.path)
    assert got.families == frozenset({"digits"}) and got.archs == frozenset({"resnet20"})
    state = got.load()
    assert state.info["held_out_source"] == "fashion-mnist" and "--ship meta-linf-test" in state.info["command"]
    assert {t["eps"] for t in state.info["tasks"]} == {0.3, 8 / 255}  # each task at its source's budget
    assert pick_shipped("meta", "linf", "digits16", directory=tmp_path / "shipped") is None


@pytest.mark.slow
def test_run_adapts_the_shipped_attacker_smoke(tmp_path, cache_dir):
    out = subprocess.run([sys.executable, "-m", "suite", "run", "--profile", "smoke", "--compress", "block",
                          "--backend", "onnx", "--attacks", "uap-pgd,uap-meta,pgd", "--fingerprints", "none",
                          "--attack-args", "uap-pgd.steps=5,pgd.steps=2,eval_limit=32",
                          "--output-dir", str(tmp_path / "runs"), "--quiet"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    record = json.loads(next((tmp_path / "runs").glob("*/result.json")).read_text())
    ids = {e["id"] for e in record["attacks"]}
    for name in ("uap-pgd", "uap-meta", "pgd"):
        for crafted in ("dense", "compressed"):
            for evaluated in ("dense", "compressed", "deployed"):
                assert f"{name}:{crafted}->{evaluated}" in ids
    e = record["attacks"][0]
    for key in ("id", "norm", "eps", "source", "crafted_on", "evaluated_on", "fooling_rate", "asr",
                "misclassification_rate", "achieved_norm", "steps", "grad_queries", "seconds"):
        assert key in e
    meta_entry = next(e for e in record["attacks"] if e["attack"] == "uap-meta")
    assert meta_entry["meta_origin"] == "shipped"  # no meta-training in the run
    assert "digits16" not in meta_entry["meta_task_sources"] and meta_entry["held_out_source"] == "digits16"
    assert meta_entry["eps_origin"] == "standard" and meta_entry["craft_images"] == 32
    assert record["transfer"]["uap-pgd"]["cols"] == ["dense", "compressed", "deployed"]
    assert "uap_pgd_fooling_rate" in record["metrics"] and "pgd_robust_acc" in record["metrics"]


def test_unknown_attack_args_exit_2(tmp_path, cache_dir):
    out = subprocess.run([sys.executable, "-m", "suite", "run", "--profile", "smoke", "--attacks", "uap-pgd",
                          "--fingerprints", "none", "--attack-args", "bogus=1", "--output-dir",
                          str(tmp_path), "--quiet"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "bogus" in out.stderr
    out = subprocess.run([sys.executable, "-m", "suite", "run", "--attacks", "uap-pgdd", "--output-dir",
                          str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "uap-pgd" in out.stderr


def test_learned_optimizer_starts_as_cosine_sign_pgd_and_stretches():
    """Untrained: the update is a sign step of a_max * eps * cosine(t); the schedule is over relative progress."""
    from attacks.learned import LearnedOptimizer
    from attacks.uap import cosine_fraction

    opt = LearnedOptimizer(hidden=4, a_max=1.0)
    assert float(opt.step_size(0.0)) == pytest.approx(1.0, rel=1e-5)
    assert float(opt.step_size(1.0)) == pytest.approx(0.05, rel=1e-5)
    for t in (0.0, 0.25, 0.5, 0.9):
        assert float(opt.step_size(t)) == pytest.approx(cosine_fraction(t), rel=0.05)
    grad = torch.randn(3, 5, 5)
    v = torch.zeros(3, 5, 5)
    delta, _ = opt(grad, v, opt.init_state(v.numel()), 0.5, norm="linf", eps=0.2)
    assert torch.allclose(delta, -0.2 * float(opt.step_size(0.5)) * grad.sign(), atol=1e-6)
    with pytest.raises(ValueError, match="gate"):
        LearnedOptimizer(correction="mul")
    with pytest.raises(ConfigError, match="correction"):
        MetaConfig(correction="mul").validate()


def test_second_order_meta_training_runs(tiny_tasks):
    cfg = MetaConfig(variant="meta", eps=EPS_LINF, meta_steps=2, inner_steps=2, support=8, query=8,
                     second_order=True)
    state = meta_train(tiny_tasks, cfg, progress=False)
    assert len(state.info["meta_loss_last"]) == 2
    assert all(np.isfinite(state.info["meta_loss_last"]))


def test_tracking_time_is_not_attack_time(model, data):
    from attacks.base import Stopwatch

    watch = Stopwatch()
    with watch.paused():
        import time

        time.sleep(0.05)
    assert watch() < 0.05
    x, _ = data.craft_tensors()
    xe, ye = data.eval_tensors()
    res = reg.attacks.build("uap-pgd", eps=EPS_LINF, steps=4, track_every=1).craft(
        model, x[:32], track=(xe, model(xe).argmax(1)))
    assert [h["step"] for h in res.history] == [0, 1, 2, 3, 4]
    assert res.history[-1]["seconds"] <= res.seconds + 1e-6


def test_task_models_is_a_stage_key():
    from attacks.stage import split_settings
    from attacks.tasks import DEFAULT_TASK_MODELS

    per, stage = split_settings(("uap-meta", "uap-pgd"), {"task_models": "resnet18:vgg16", "steps": 4})
    assert stage == {"task_models": "resnet18:vgg16"}
    assert per["uap-meta"] == {"steps": 4} and per["uap-pgd"] == {"steps": 4}
    assert all(reg.models.canonical(m) == m for m in DEFAULT_TASK_MODELS)
    with pytest.raises(UnknownNameError, match="resnet18"):
        reg.models.canonical("resnet-eighteen")
