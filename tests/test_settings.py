"""The settings model (suite.core.settings) and its use by attacks, fingerprint methods, compressors, backends."""

from __future__ import annotations

import pytest

from suite.core import registries as reg
from suite.core.errors import ConfigError
from suite.core.settings import Configurable, Field, FrozenSettingsError, Group, Settings, SettingsSpec, route

SPEC = SettingsSpec({
    "eps": Field(10 / 255, float, gt=0, le=1), "steps": Field(20, int, gt=0), "seed": Field(0, int),
    "limit": Field(None, int, optional=True, ge=0), "fast": Field(False, bool),
    "split": Field("val", str, choices=("train", "val", "test")), "meta": Field(None, object, optional=True),
}, owner="toy", profiles={"smoke": {"steps": 3, "fast": True}})


class Toy(Configurable):
    name = "toy"
    SETTINGS = SPEC

    def validate(self) -> None:
        if self.fast and self.steps > 100:
            raise ConfigError("toy: fast runs take at most 100 steps")


def test_defaults_and_coercion():
    s = SPEC.resolve()
    assert dict(s) == {"eps": 10 / 255, "steps": 20, "seed": 0, "limit": None, "fast": False, "split": "val",
                       "meta": None}
    s = SPEC.resolve({"eps": "48/255", "steps": 4.0, "limit": "none", "fast": "yes", "seed": "3"})
    assert s.eps == pytest.approx(48 / 255) and s.steps == 4 and type(s.steps) is int
    assert s.limit is None and s.fast is True and s.seed == 3
    assert type(SPEC.resolve({"eps": 1}).eps) is float  # ints accepted for floats
    assert SPEC.resolve({"eps": "0.1"}).eps == 0.1
    assert SPEC.coerce_given({"steps": "7"}) == {"steps": 7}


@pytest.mark.parametrize("values, message", [
    ({"eps": 0}, "toy eps must be in (0, 1], got 0"),
    ({"eps": 2.5}, "toy eps must be in (0, 1], got 2.5"),
    ({"steps": 0}, "toy steps must be > 0, got 0"),
    ({"steps": 1.5}, "toy steps must be an integer, got 1.5"),
    ({"steps": True}, "toy steps must be an integer"),
    ({"eps": "much"}, "toy eps must be a number"),
    ({"limit": -1}, "toy limit must be >= 0, got -1"),
    ({"fast": 3}, "toy fast must be true or false, got 3"),
    ({"split": "dev"}, "toy split must be one of train, val, test, got 'dev'"),
    ({"steps": None}, "toy steps must be an integer, got None"),
])
def test_validation_errors_are_one_line(values, message):
    with pytest.raises(ConfigError) as err:
        SPEC.resolve(values)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_key_suggests_and_lists():
    with pytest.raises(ConfigError, match=r"unknown setting 'stpes' for toy; did you mean 'steps'\? "
                                          r"\(settings: eps, fast, limit, meta, seed, split, steps\)"):
        SPEC.resolve({"stpes": 3})
    with pytest.raises(ConfigError, match="unknown setting 'zzz' for toy \\(settings"):
        Toy(zzz=1)


def test_frozen_after_construction():
    toy = Toy(steps=5)
    assert toy.steps == 5 and toy.settings["steps"] == 5 and isinstance(toy.settings, Settings)
    with pytest.raises(FrozenSettingsError, match="frozen"):
        toy.steps = 6
    with pytest.raises(AttributeError):
        toy.settings = {}
    with pytest.raises(AttributeError):
        toy.settings.steps = 6
    with pytest.raises(TypeError):
        toy.settings["steps"] = 6  # type: ignore[index]
    toy.scratch = 1  # non-settings attributes stay writable
    with pytest.raises(ConfigError, match="at most 100"):
        Toy(fast=True, steps=200)


def test_profile_overrides_sit_under_given_values():
    assert SPEC.resolve(profile="smoke").steps == 3 and SPEC.resolve(profile="smoke").fast is True
    assert SPEC.resolve({"steps": 9}, profile="smoke").steps == 9
    assert SPEC.resolve(profile="default") == SPEC.resolve()
    assert Toy.with_profile("smoke", seed=2).settings == {**SPEC.defaults(), "steps": 3, "fast": True, "seed": 2}
    child = SPEC.extend(owner="child", drop=("fast",), extra=Field(1, int), profiles={"smoke": {"extra": 2}})
    assert child.profile("smoke") == {"steps": 3, "extra": 2}
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        SettingsSpec({"steps": Field(1, int)}, owner="bad", profiles={"smoke": {"step": 1}})
    with pytest.raises(ConfigError, match="bad steps must be > 0"):
        SettingsSpec({"steps": Field(1, int, gt=0)}, owner="bad", profiles={"smoke": {"steps": 0}})


A = SettingsSpec({"steps": Field(1, int), "eps": Field(0.1, float), "kappa": Field(1.0, float)})
B = SettingsSpec({"steps": Field(1, int), "eps": Field(0.1, float), "passes": Field(1, int)})
STAGE = SettingsSpec({"eval_limit": Field(None, int, optional=True), "track_every": Field(5, int)})


def _route(args, components=None, groups=None):
    return route(args, components if components is not None else {"a": A, "b": B},
                 groups=groups if groups is not None else
                 [Group.of("stage", STAGE), Group("zoo", ("negatives", "jobs"), bare=False)],
                 canonical=lambda n: {"alias-a": "a"}.get(n, n), flag="--x-args", kind="thing")


def test_router_bare_keys_named_keys_and_groups():
    out = _route({"steps": 4, "kappa": 2, "b.passes": 3, "alias-a.eps": 0.2, "eval_limit": 8,
                  "stage.track_every": 2, "zoo.jobs": 4})
    assert out == {"a": {"steps": 4, "kappa": 2, "eps": 0.2}, "b": {"steps": 4, "passes": 3},
                   "stage": {"eval_limit": 8, "track_every": 2}, "zoo": {"jobs": 4}}
    # a bare key a group owns goes to the group only, even if a component declares it too
    both = SettingsSpec({"track_every": Field(1, int)})
    assert _route({"track_every": 3}, {"a": both}) == {"a": {}, "stage": {"track_every": 3}, "zoo": {}}


@pytest.mark.parametrize("args, message", [
    ({"stpes": 1}, "--x-args stpes: no selected thing has a setting 'stpes'; did you mean 'steps'?"),
    ({"bogus": 1}, "(selected: a, b; keys: eps, eval_limit, kappa, passes, steps, track_every, zoo.KEY)"),
    ({"negatives": 3}, "did you mean 'zoo.negatives'?"),
    ({"c.steps": 1}, "--x-args c.steps: c is not among the selected things (a, b)"),
    ({"a.passes": 1}, "unknown setting 'passes' for thing a"),
    ({"zoo.negativs": 1}, "unknown setting 'negativs' for --x-args group 'zoo'; did you mean 'negatives'?"),
    ({"stage.few": 1}, "unknown setting 'few' for --x-args group 'stage'"),
])
def test_router_errors(args, message):
    with pytest.raises(ConfigError) as err:
        _route(args)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_attack_settings_and_stage_routing():
    from attacks.stage import STAGE_SETTINGS as ATTACK_STAGE
    from attacks.stage import resolve_attack_args, split_settings, with_tracking

    attack = reg.attacks.build("uap-pgd", eps="8/255", steps="10")
    assert attack.eps == pytest.approx(8 / 255) and attack.steps == 10 and attack.norm == "linf"
    assert reg.attacks.build("pgd", norm="inf").norm == "linf"
    with pytest.raises(FrozenSettingsError):
        attack.track_every = 1
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        reg.attacks.build("uap-pgd", stepz=3)
    with pytest.raises(ConfigError, match="Linf budget above 1"):
        reg.attacks.build("uap-pgd", eps=2)
    per, stage = resolve_attack_args(("uap-pgd", "uap-deepfool"), {"steps": 4, "eval_limit": 32}, "smoke")
    assert per == {"uap-pgd": {"steps": 4}, "uap-deepfool": {"passes": 1, "deepfool_steps": 10}}
    assert stage.eval_limit == 32 and stage.track_every == 5 and stage.few_shot == 32
    assert ATTACK_STAGE.resolve().eval_limit is None
    # the stage's tracking period caps the attack's at construction (no mutation of a built attack)
    assert with_tracking("uap-pgd", {}, 2) == {"track_every": 2}
    assert with_tracking("uap-deepfool", {}, 5) == {"track_every": 1}
    assert with_tracking("uap-pgd", {"track_every": 3}, 5) == {"track_every": 3}
    assert with_tracking("pgd", {"steps": 2}, 1) == {"steps": 2}
    with pytest.raises(ConfigError, match="not among the selected attacks"):
        split_settings(("uap-pgd",), {"pgd.steps": 2})


def test_fingerprint_profiles_are_declared_by_each_method():
    from fingerprints.options import build_method, split_args

    m = build_method("ltrc", "smoke", {"count": 3})
    assert m.settings == {**reg.fingerprints.get("ltrc-examples").SETTINGS.defaults(), "count": 3, "steps": 15,
                          "confidence": 1.0, "batch_size": 16, "k": 2, "noise": 0.5,
                          "references": 0}
    assert build_method("misclassified", "smoke", {}).max_rounds == 5
    assert build_method("ipguard", "default", {}).settings == reg.fingerprints.build("ipguard").settings
    with pytest.raises(FrozenSettingsError):
        m.count = 4
    with pytest.raises(ConfigError, match="access must be one of label, prob"):
        split_args(("misclassified",), {"access": "logits"})
    with pytest.raises(ConfigError, match="did you mean 'zoo.negatives'"):
        split_args(("misclassified",), {"negatives": 3})


def test_compressors_and_backends_declare_settings():
    from compression.backends.onnx_backend import OnnxBackend

    comp = reg.compressors.build("block", sparsity="0.75", r="8")
    assert comp.sparsity == 0.75 and comp.keep_first is True and comp.scheme_settings == {"r": "8"}  # scheme parses r
    with pytest.raises(ConfigError, match="unknown setting 'rr' for block; did you mean 'r'"):
        reg.compressors.build("block", sparsity=0.5, rr=8)
    with pytest.raises(ConfigError, match="block epochs must be >= 0"):
        reg.compressors.build("block", sparsity=0.5, epochs=-1)
    with pytest.raises(ConfigError, match="did you mean 'importance'"):
        reg.compressors.build("filter", sparsity=0.5, importanc="l1")
    with pytest.raises(ConfigError, match="did you mean 'ratios'"):
        reg.compressors.build("auto", sparsity=0.5, ratoos="0.5:0.9")
    filt = reg.compressors.build("filter", sparsity=0.5, epochs="2")
    assert filt.epochs == 2 and filt.settings["importance"] == "l2"
    with pytest.raises(FrozenSettingsError):
        filt.sparsity = 0.9
    with pytest.raises(ConfigError, match="takes no --sparsity"):
        reg.compressors.build("none", sparsity=0.5)
    assert OnnxBackend(threads="2").threads == 2
    with pytest.raises(ConfigError, match="onnx opset must be in \\[7, 30\\]"):
        OnnxBackend(opset=3)
    with pytest.raises(ConfigError, match="unknown setting 'x' for torch"):
        reg.backends.build("torch", x=1)
