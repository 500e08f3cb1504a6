"""Standard threat models per source, eps defaulting to them, and the run's budget sweep."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attacks.budget import EpsOrigin, choose_budget
from attacks.sweep import DEFAULT_MULTIPLES, parse_multiples
from suite.core import registries as reg
from suite.core.budgets import ThreatModel
from suite.core.errors import ConfigError
from suite.core.sources.base import ImageSource, ImageSplit
from suite.core.sources.embedded import digits16
from suite.core.threat import generic_threat_model, threat_model_for
from test_blackbox import Tiny  # the same small CNN for [N, 3, 16, 16] inputs


def _fake_source(name: str, shape: tuple[int, int, int]) -> ImageSource:
    split = ImageSplit(np.zeros((2, *shape), np.uint8), np.zeros(2, np.int64), np.arange(2))
    return ImageSource(name, split, split, split, 10, tuple(str(i) for i in range(10)))


@pytest.mark.parametrize("name, linf, l2, derived", [
    ("fashion-mnist", 0.1, 1.5, False), ("mnist", 0.3, 2.0, False), ("cifar10", 8 / 255, 0.5, False),
    ("cifar100", 8 / 255, 0.5, False), ("svhn", 8 / 255, 0.5, False), ("stl10", 8 / 255, 0.5, False),
    ("digits16", 0.3, 1.979, True), ("digits-photo32", 8 / 255, 0.5, True), ("digits-affine24", 8 / 255, 0.375, True),
])
def test_standard_budgets_per_source(name, linf, l2, derived):
    tm = threat_model_for(_fake_source(name, (1, 8, 8)))
    assert (tm.linf, tm.l2, tm.derived) == (pytest.approx(linf), pytest.approx(l2), derived)
    assert tm.budget("linf") == tm.linf and tm.budget("l2") == tm.l2
    assert tm.reference.startswith("derived") == derived


def test_every_fixed_source_declares_one_and_folders_get_a_derived_one():
    for entry in reg.sources.entries():
        if entry.name != "imagefolder":
            assert isinstance(entry.tags.get("threat"), ThreatModel), entry.name
    tm = threat_model_for(_fake_source("imagefolder", (3, 64, 64)))
    assert tm == generic_threat_model((3, 64, 64))
    assert tm.derived and tm.linf == pytest.approx(8 / 255) and tm.l2 == pytest.approx(1.0)  # 0.5 * sqrt(4)
    # the derived L2 budgets follow the per-coordinate RMS rule from their references
    assert threat_model_for(digits16(None)).l2 == pytest.approx(2.0 * math.sqrt(3 * 16 * 16 / 784), abs=1e-3)


def test_threat_model_rejects_impossible_budgets():
    with pytest.raises(ValueError):
        ThreatModel(1.5, 1.0, "x")
    with pytest.raises(ValueError):
        ThreatModel(0.1, 0.0, "x")


def test_eps_defaults_to_the_standard_budget_of_the_norm():
    tm = ThreatModel(0.1, 1.5, "ref")
    settings, choice = choose_budget("pgd", {"seed": 0}, tm)
    assert settings["eps"] == 0.1 and choice.origin is EpsOrigin.STANDARD
    assert choice.fields() == {"eps_standard": 0.1, "eps_multiple": 1.0, "eps_origin": "standard",
                               "budget_reference": "ref"}
    settings, choice = choose_budget("pgd", {"norm": "l2"}, tm)
    assert settings["eps"] == 1.5 and choice.norm == "l2"
    settings, choice = choose_budget("cw", {}, tm)  # an L2 attack by default
    assert settings["eps"] == 1.5
    settings, choice = choose_budget("uap-pgd", {"eps": "0.05"}, tm)  # as --attack-args gives it
    assert float(settings["eps"]) == 0.05 and choice.eps == 0.05 and choice.origin is EpsOrigin.GIVEN and choice.fields()["eps_multiple"] == 0.5


def test_parse_multiples():
    assert parse_multiples(None) == DEFAULT_MULTIPLES and len(DEFAULT_MULTIPLES) >= 5
    assert parse_multiples("2:0.5:1") == (0.5, 1.0, 2.0)
    assert parse_multiples("none") == () and parse_multiples("") == ()
    for bad in ("a:1", "0:1", "-1"):
        with pytest.raises(ConfigError):
            parse_multiples(bad)


@pytest.fixture(scope="module")
def trained():
    source = digits16(None)
    torch.manual_seed(0)
    net = Tiny()
    x, y = source.train.tensors()
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return source, net.eval()


def test_stage_defaults_budgets_and_sweeps(trained, tmp_path):
    """Every entry at the source's standard budget (digits16: Linf 0.3), a sweep on sweepable headlines."""
    from attacks.stage import STAGE
    from compression.backends.torch_eager import TorchPredictor
    from suite.core.config import RunConfig
    from suite.core.runtime import Runtime
    from suite.core.stages import Role, StageInput, Subject, Subjects

    source, net = trained
    subjects = Subjects(Subject(Role.DENSE, TorchPredictor(net, (3, 16, 16), 10), net))
    cfg = RunConfig(model="resnet20", profile="smoke", attacks=("uap-pgd", "pgd", "autoattack"), seed=0,
                    attack_args={"sweep": "0.25:1:2:4", "eval_limit": 96, "uap-pgd.steps": 30,
                                 "autoattack.n_images": 8, "autoattack.steps": 2,
                                 "autoattack.square_queries": 10}).resolved()
    out = STAGE.run(StageInput(cfg, source, subjects, tmp_path, Runtime()))
    for e in out.attacks:
        assert e["eps"] == pytest.approx(0.3) and e["eps_origin"] == "standard" and e["eps_standard"] == 0.3
        assert e["budget_reference"].startswith("derived")
    heads = {e["attack"]: e for e in out.attacks}
    assert "sweep" not in heads["autoattack"]  # each point would be a full AutoAttack run
    for name in ("uap-pgd", "pgd"):
        sweep = heads[name]["sweep"]
        # 4 x 0.3 = 1.2 is no Linf budget for [0, 1] inputs: dropped
        assert [p["eps"] for p in sweep] == pytest.approx([0.075, 0.3, 0.6])
        at_standard = next(p for p in sweep if p["multiple"] == 1.0)
        key = "fooling_rate" if name == "uap-pgd" else "robust_acc"
        assert at_standard[key] == heads[name][key]  # the headline, not crafted twice
        assert all(0 <= p["noise_fooling_rate"] <= 1 and p["clean_acc"] == sweep[0]["clean_acc"] for p in sweep)
    uap = heads["uap-pgd"]["sweep"]
    assert uap[-1]["fooling_rate"] >= uap[0]["fooling_rate"]
    # at the standard budget the UAP clearly beats noise of the same budget
    assert uap[1]["fooling_rate"] > uap[1]["noise_fooling_rate"] + 0.1
    pgd = heads["pgd"]["sweep"]
    assert pgd[-1]["robust_acc"] <= pgd[0]["robust_acc"] <= pgd[0]["clean_acc"]


def test_given_eps_is_recorded_as_given(trained, tmp_path):
    from attacks.stage import STAGE
    from compression.backends.torch_eager import TorchPredictor
    from suite.core.config import RunConfig
    from suite.core.runtime import Runtime
    from suite.core.stages import Role, StageInput, Subject, Subjects

    source, net = trained
    subjects = Subjects(Subject(Role.DENSE, TorchPredictor(net, (3, 16, 16), 10), net))
    cfg = RunConfig(model="resnet20", profile="smoke", attacks=("pgd",), seed=0,
                    attack_args={"eps": "0.15", "sweep": "none", "eval_limit": 16}).resolved()
    out = STAGE.run(StageInput(cfg, source, subjects, tmp_path, Runtime()))
    (e,) = out.attacks
    assert e["eps"] == 0.15 and e["eps_origin"] == "given" and e["eps_multiple"] == 0.5 and "sweep" not in e


def test_sweep_none_from_the_command_line_turns_it_off():
    """``--attack-args sweep=none`` reaches the stage as None (the CLI's none): no sweep; unset: the default."""
    from attacks.stage import resolve_attack_args
    from attacks.sweep import DEFAULT_MULTIPLES, parse_multiples
    from suite.core.config import parse_kv

    def multiples(args, profile="default"):
        _, stage = resolve_attack_args(("uap-pgd",), args, profile)
        value = stage.get("sweep")
        return parse_multiples(value if value is not None else "none")

    assert multiples(parse_kv("sweep=none")) == ()
    assert multiples({}, "full") == DEFAULT_MULTIPLES  # five points
    assert multiples({}) == (0.5, 1.0, 1.5)  # the first run's three-point curve
    assert multiples(parse_kv("sweep=default")) == DEFAULT_MULTIPLES
    assert multiples(parse_kv("sweep=0.5:1")) == (0.5, 1.0)
