import subprocess
import sys

import pytest

from suite.core.errors import SuiteError, UnknownNameError
from suite.core.registry import Registry


def test_register_get_alias_and_decorator():
    reg = Registry("widgets", "widget")
    reg.register("alpha-one", lambda: 1, description="first", aliases=("a1", "alpha_1"))

    @reg.register("beta")
    def beta():
        """The second widget."""
        return 2

    assert reg.build("alpha-one") == 1
    assert reg.build("A1") == 1 and reg.build("alpha_one") == 1
    assert reg.canonical("alpha_1") == "alpha-one"
    assert reg.entry("beta").description == "The second widget."
    assert reg.names() == ["alpha-one", "beta"]
    assert "a1" in reg and "gamma" not in reg


def test_unknown_name_suggests_and_lists_choices():
    reg = Registry("models", "model")
    for name in ("vgg16", "resnet18", "resnet20"):
        reg.register(name, dict)
    with pytest.raises(UnknownNameError) as info:
        reg.get("vgg17")
    msg = str(info.value)
    assert "did you mean 'vgg16'" in msg
    assert "choices: resnet18, resnet20, vgg16" in msg
    assert "\n" not in msg


def test_duplicates_rejected():
    reg = Registry("x")
    reg.register("a", dict, aliases=("b",))
    with pytest.raises(SuiteError):
        reg.register("a", dict)
    with pytest.raises(SuiteError):
        reg.register("c", dict, aliases=("b",))


def test_lazy_target_imported_on_first_use():
    reg = Registry("x")
    reg.register("json-dumps", "json:dumps")
    entry = reg.entry("json-dumps")
    assert isinstance(entry.target, str)
    assert reg.build("json-dumps", [1]) == "[1]"
    assert callable(entry.target)


def test_import_suite_does_not_import_heavy_backends():
    code = ("import sys, suite, suite.core.registries, suite.app.cli; "
            "heavy = [m for m in ('tvm', 'onnxruntime', 'ray', 'torchvision') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_builtin_target_resolves():
    from suite.core.registries import REGISTRIES

    for registry in REGISTRIES.values():
        for entry in registry.entries():
            assert callable(entry.resolve()), (registry.kind, entry.name)
            assert entry.description and "\n" not in entry.description
