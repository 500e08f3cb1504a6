"""AutoAttack and the black-box attacks (square, rays): budgets, no gradients, query counts, the stage."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from attacks.blackbox import BlackBoxQueries
from suite.core import registries as reg
from suite.core.errors import ConfigError
from suite.core.sources.embedded import digits16

EPS = {"linf": 32 / 255, "l2": 3.0}
N = 24


class Tiny(torch.nn.Module):
    """A small CNN for [N, 3, 16, 16] inputs in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(64, 10))

    def forward(self, x):
        return self.body(x - 0.5)


class NoGradBox:
    """A predictor without gradients, like a compiled deployment; records every backward through the net."""

    differentiable = False

    def __init__(self, net: torch.nn.Module) -> None:
        self.net, self.input_shape, self.num_classes = net, (3, 16, 16), 10
        self.backward_calls = 0
        self.grad_enabled_calls = 0
        net.register_full_backward_hook(self._on_backward)

    def _on_backward(self, *_):
        self.backward_calls += 1

    def predict(self, x):
        self.grad_enabled_calls += int(torch.is_grad_enabled())
        with torch.no_grad():
            return self.net(x).detach()


@pytest.fixture(scope="module")
def source():
    return digits16(None)


@pytest.fixture(scope="module")
def model(source):
    """A tiny net trained for a few steps (well above chance)."""
    torch.manual_seed(0)
    net = Tiny()
    x, y = source.train.tensors()
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    net.eval()
    xt, yt = source.test.tensors()
    with torch.no_grad():
        assert (net(xt).argmax(1) == yt).float().mean() > 0.4
    return net


@pytest.fixture(scope="module")
def batch(source):
    x, y = source.test.tensors()
    return x[:N], y[:N]


def _build(name: str, norm: str, **extra):
    fast = {"autoattack": {"steps": 3, "square_queries": 30}, "square": {"queries": 60}, "rays": {"queries": 200}}
    return reg.attacks.build(name, norm=norm, eps=EPS[norm], seed=1, **fast[name], **extra)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ["autoattack", "square", "rays"])
def test_budget_accuracy_and_input_untouched(name, norm, model, batch):
    if name == "rays" and norm == "l2":
        with pytest.raises(ConfigError, match="Linf"):
            _build(name, norm)
        return
    x, y = batch
    before = x.clone()
    attack = _build(name, norm)
    victim = model if name == "autoattack" else NoGradBox(model)
    result = attack.craft(victim, x, y)
    assert torch.equal(x, before), "the input batch was modified"
    adv = result.adversarials
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    delta = (adv - x).reshape(len(x), -1)
    if norm == "linf":
        assert float(delta.abs().max()) <= EPS[norm] + 1e-6
    else:
        assert float(delta.norm(dim=1).max()) <= EPS[norm] * (1 + 1e-5)
    m = result.metrics
    assert 0 <= m["robust_acc"] <= m["clean_acc"] <= 1 and m["n_images"] == N
    assert m["clean_acc"] > m["robust_acc"], "the attack fooled nothing at a large budget"
    if attack.black_box:
        assert result.grad_queries == 0 and 0 < result.queries <= attack.queries * N
        assert m["queries_per_image"] == pytest.approx(result.queries / N)
    else:
        assert result.grad_queries > 0


def test_structure_flags():
    for name in ("square", "rays"):
        cls = reg.attacks.get(name)
        assert cls.black_box and not cls.needs_gradients and not cls.universal
    assert reg.attacks.get("square").feedback == "logits" and reg.attacks.get("rays").feedback == "labels"
    for name in ("autoattack", "pgd", "uap-pgd", "noise-uniform"):
        assert not reg.attacks.get(name).black_box
    assert reg.attacks.canonical("aa") == "autoattack"
    with pytest.raises(ConfigError, match="untargeted"):
        reg.attacks.build("autoattack", target=3)
    with pytest.raises(ConfigError):
        reg.attacks.build("square", queries=2)
    smoke = {n: reg.attacks.get(n).SETTINGS.profile("smoke") for n in ("autoattack", "square", "rays")}
    assert all(s["n_images"] == 32 for s in smoke.values())
    assert reg.attacks.build("autoattack").n_images == 256


def test_black_box_attacks_only_query_forward(model, batch):
    """No backward pass, no grad-enabled predict call; counts > 0 and within the budget; reproducible."""
    x, y = batch[0][:12], batch[1][:12]
    box = NoGradBox(model)
    assert box.differentiable is False
    with pytest.raises(ConfigError, match="black box"):
        reg.attacks.build("autoattack", steps=2).craft(box, x, y)  # a white-box attack refuses it
    for name in ("square", "rays"):
        attack = _build(name, "linf")
        a = attack.craft(box, x, y)
        b = attack.craft(box, x, y)
        assert torch.equal(a.adversarials, b.adversarials) and a.queries == b.queries, name
        assert 0 < a.queries <= attack.queries * len(x) and a.grad_queries == 0
    assert box.backward_calls == 0 and box.grad_enabled_calls == 0


def test_query_counter_counts_every_image():
    net = Tiny().eval()
    oracle = BlackBoxQueries(net)
    out = oracle(torch.rand(5, 3, 16, 16, requires_grad=True))
    oracle.labels(torch.rand(3, 3, 16, 16))
    assert oracle.queries == 8 and oracle.grad_queries == 0 and not out.requires_grad


def test_rays_budget_is_per_image(model, batch):
    """With a tiny budget every image gets at most `queries` queries; misclassified ones only their clean check."""
    x, y = batch
    attack = reg.attacks.build("rays", eps=2 / 255, queries=12, search_steps=3, seed=0)
    result = attack.craft(NoGradBox(model), x, y)
    assert result.queries <= 12 * N
    assert result.metrics["robust_acc"] <= result.metrics["clean_acc"]


def test_onnx_deployment_matches_eager(model, batch, tmp_path):
    """Same seed, same images: a black-box attack on the ONNX deployment and on its eager model agree."""
    x, y = batch
    dep = reg.backends.build("onnx").deploy(model, (3, 16, 16), 10, workdir=str(tmp_path / "onnx"))
    try:
        assert dep.predictor.differentiable is False
        for name in ("square", "rays"):
            attack = _build(name, "linf")
            on_onnx = attack.craft(dep.predictor, x, y)
            on_eager = attack.craft(NoGradBox(model), x, y)
            assert abs(on_onnx.metrics["robust_acc"] - on_eager.metrics["robust_acc"]) <= 1 / N + 1e-9, name
            assert abs(on_onnx.metrics["clean_acc"] - on_eager.metrics["clean_acc"]) <= 1 / N + 1e-9, name
            assert on_onnx.queries > 0 and on_onnx.grad_queries == 0
    finally:
        close = getattr(dep.predictor, "close", None)
        if close is not None:
            close()


def test_stage_runs_black_boxes_on_every_subject(model, source, tmp_path):
    """square / rays attack dense, compressed and the deployment directly; autoattack on a recorded subset."""
    import copy

    from attacks.stage import STAGE, subset_digest
    from compression.backends.torch_eager import TorchPredictor
    from suite.core.config import RunConfig
    from suite.core.runtime import Runtime
    from suite.core.stages import Role, StageInput, Subject, Subjects

    comp = copy.deepcopy(model).eval()
    with torch.no_grad():
        comp.body[0].weight.mul_(0.9)  # a slightly different "compressed" model
    eager = lambda m: TorchPredictor(m, (3, 16, 16), 10)  # noqa: E731
    subjects = Subjects(Subject(Role.DENSE, eager(model), model), Subject(Role.COMPRESSED, eager(comp), comp),
                        Subject(Role.DEPLOYED, NoGradBox(comp), None))
    cfg = RunConfig(model="resnet20", profile="smoke", attacks=("square", "rays", "autoattack"), seed=0,
                    attack_args={"eps": "32/255", "n_images": 16, "square.queries": 40, "rays.queries": 40,
                                 "autoattack.steps": 2, "autoattack.square_queries": 20}).resolved()
    out = STAGE.run(StageInput(cfg, source, subjects, tmp_path, Runtime()))
    names = ["dense", "compressed", "deployed"]
    for name in ("square", "rays"):
        assert out.transfer[name]["rows"] == names and out.transfer[name]["cols"] == names
        mine = [e for e in out.attacks if e["attack"] == name]
        assert len(mine) == 9 and all(e["black_box"] and e["grad_queries"] == 0 for e in mine)
        direct = next(e for e in mine if e["crafted_on"] == e["evaluated_on"] == "deployed")
        assert out.metrics[f"{name}_robust_acc"] == direct["robust_acc"]
        assert out.metrics[f"{name}_clean_acc"] == direct["clean_acc"]
        assert 0 < out.metrics[f"{name}_queries"] == direct["queries_per_image"] <= 40
        assert direct["query_budget"] == 40 and direct["eval_images"] == 16
        assert f"{name}_queries" not in out.higher_is_better  # a neutral fact
    assert out.transfer["autoattack"]["rows"] == ["dense", "compressed"]  # white box: crafted on eager models
    aa = [e for e in out.attacks if e["attack"] == "autoattack"]
    assert all(e["subset_images"] == 16 and e["eval_images"] == 16 for e in aa)
    assert aa[0]["subset_sha256"] == subset_digest(source.test.indices[:16])
    assert out.metrics["autoattack_robust_acc"] <= out.metrics["autoattack_clean_acc"]
    assert out.higher_is_better["autoattack_robust_acc"] is True
    assert out.higher_is_better["autoattack_clean_acc"] is True


def test_leaderboard_robustness_view_shows_them():
    from leaderboard_records import make_record
    from reports.load import tables
    from reports.views import build_views
    from suite.core.metrics import LeaderboardView, higher_is_better, view_of

    for m in ("autoattack_robust_acc", "autoattack_clean_acc", "square_robust_acc", "square_queries",
              "rays_robust_acc", "rays_queries"):
        assert view_of(m) is LeaderboardView.ROBUSTNESS, m
    assert higher_is_better("square_robust_acc") is True and higher_is_better("square_queries") is None
    assert view_of("fp_ipguard_queries") is LeaderboardView.IP_PROTECTION
    rec = make_record("resnet20", "block", 0.5, "onnx", 0)
    rec["metrics"].update({"autoattack_robust_acc": 0.1, "autoattack_clean_acc": 0.9, "square_robust_acc": 0.2,
                           "square_queries": 37.5})
    rob = {v.key: v for v in build_views(tables([rec]))}["robustness"]
    row = rob.table.iloc[0]
    for m, v in (("autoattack_robust_acc", 0.1), ("autoattack_clean_acc", 0.9), ("square_queries", 37.5)):
        assert m in rob.metrics and row[m] == v


def test_smoke_run_end_to_end(tmp_path, cache_dir):
    """The CLI on resnet20 (smoke, about 30 s measured): square and autoattack on an ONNX deployment."""
    out = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "suite", "run", "--model", "resnet20", "--profile", "smoke",
                           "--compress", "block", "--backend", "onnx", "--attacks", "square,autoattack",
                           "--fingerprints", "none", "--output-dir", str(out)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(next(out.rglob("result.json")).read_text())
    m = record["metrics"]
    for key in ("square_robust_acc", "square_clean_acc", "square_queries", "autoattack_robust_acc",
                "autoattack_clean_acc"):
        assert key in m and not math.isnan(m[key]), key
    assert m["square_queries"] <= 100  # smoke budget per image
    square = [e for e in record["attacks"] if e["attack"] == "square"]
    assert {e["crafted_on"] for e in square} == {"dense", "compressed", "deployed"}
