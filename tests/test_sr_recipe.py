"""SR design and recipe options: the nearest-neighbour anchor, learning-rate multipliers, train zooms, transposes.

The anchor of ResidualSR / SRSupernet (:func:`suite.core.sr.models.nearest_anchor`): its channel order
matches PixelShuffle (the anchor alone is nearest-neighbour upsampling), supernet extraction stays exact
with it, the architecture name says whether it is there.  Export agreement (ONNX / TVM) is in
tests/test_sr_deploy.py (family ``residual-nn``).  Recipe: per-module learning-rate multipliers (FSRCNN's
deconvolution), resized copies of the train photos (``train_zooms``), random transposes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from suite.core.errors import ConfigError
from suite.core.sr.models import ResidualSR, SRChoice, SRSupernet, build_sr_model, nearest_anchor
from suite.core.sr.photos import load_photos, zoom_image
from suite.core.sr.train import SRTrainRecipe, param_groups, sample_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_anchor_in_pixel_shuffle_order_is_nearest_upsampling(scale):
    x = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    a = nearest_anchor(x, scale)
    assert a.shape == (2, 3 * scale * scale, 5, 7)
    for c in range(3):
        for k in range(scale * scale):
            assert torch.equal(a[:, c * scale * scale + k], x[:, c])
    up = torch.nn.PixelShuffle(scale)(a)
    assert torch.equal(up, F.interpolate(x, scale_factor=scale, mode="nearest"))


def test_anchored_net_with_a_zero_tail_is_nearest_upsampling():
    torch.manual_seed(0)
    net = ResidualSR(2, 8, (3,), anchor=True).eval()
    with torch.no_grad():
        net.tail.weight.zero_()
        net.tail.bias.zero_()
    x = torch.rand(1, 3, 9, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = net(x)
    assert (got - F.interpolate(x, scale_factor=2, mode="nearest")).abs().max().item() <= 1e-6
    plain = ResidualSR(2, 8, (3,), anchor=False).eval()
    plain.load_state_dict(net.state_dict())  # same parameter names: only the arch name (cache key) tells them apart
    with torch.no_grad():
        assert (plain(x) - plain.add_mean.mean).abs().max().item() <= 1e-6  # no anchor: the mean image only


def test_architecture_names_say_whether_the_anchor_is_there():
    assert ResidualSR(2, 8, (3,)).arch == "residual-sr-nn"
    assert ResidualSR(2, 8, (3,), anchor=False).arch == "residual-sr"
    assert SRSupernet(2, widths=(4, 8), max_depth=2).arch == "sr-supernet-nn"
    assert SRSupernet(2, widths=(4, 8), max_depth=2, anchor=False).arch == "sr-supernet"
    assert build_sr_model("sr-supernet", 2, 0.25, 0.25).arch == "sr-supernet-nn"


@pytest.mark.parametrize("anchor", [True, False])
def test_supernet_extraction_is_exact_with_and_without_the_anchor(anchor):
    torch.manual_seed(0)
    net = SRSupernet(2, widths=(8, 16), max_depth=3, kernel_sizes=(3, 5), anchor=anchor).eval()
    x = torch.rand(2, 3, 10, 13, generator=torch.Generator().manual_seed(2))
    rng = np.random.default_rng(0)
    for choice in (net.max_choice(), net.min_choice(), SRChoice(8, (5, 3)), *(net.sample(rng) for _ in range(3))):
        sub = net.extract(choice)
        assert sub.anchor is anchor and sub.arch == ("residual-sr-nn" if anchor else "residual-sr")
        with torch.no_grad():
            assert (net(x, choice) - sub(x)).abs().max().item() <= 1e-6, choice


def test_lr_scales_make_parameter_groups_and_are_validated():
    torch.manual_seed(0)
    model = build_sr_model("fsrcnn", 2, 0.5, 0.5)
    groups = param_groups(model, (("deconv", 0.1),))
    by_scale = {g["lr_scale"]: g["params"] for g in groups}
    assert set(by_scale) == {1.0, 0.1}
    assert {id(p) for p in by_scale[0.1]} == {id(model.deconv.weight), id(model.deconv.bias)}
    assert sum(len(ps) for ps in by_scale.values()) == len(list(model.parameters()))
    assert len(param_groups(model, ())) == 1
    with pytest.raises(ConfigError, match="name no parameter"):
        param_groups(model, (("nope", 0.1),))
    for bad in ((("deconv", 0.0),), (("deconv", -1.0),), (("", 0.1),), (("deconv",),)):
        with pytest.raises(ConfigError, match="lr_scales"):
            SRTrainRecipe(lr_scales=bad).validate()


def test_train_zooms_add_resized_patches_and_leave_the_rest_alone():
    kw = dict(scale=2, patch_size=32, patches_per_image=3, eval_size=48, photos=["astronaut", "chelsea", "rocket"])
    plain = load_photos(**kw)
    zoomed = load_photos(**kw, train_zooms=(1.0, 0.5))
    assert len(zoomed.train) == 2 * len(plain.train)
    assert [c.zoom for c in zoomed.train.crops] == [1.0] * 3 + [0.5] * 3
    assert "zoom" not in plain.train.crops[0].as_dict() and zoomed.train.crops[3].as_dict()["zoom"] == 0.5
    assert all(c.top + 32 <= 256 and c.left + 32 <= 256 for c in zoomed.train.crops[3:])  # 512 px photo at 0.5
    assert np.array_equal(zoomed.train.images[0], plain.train.images[0])  # zoom 1 first: same positions
    for s in ("val", "test"):
        assert all(np.array_equal(a, b) for a, b in zip(zoomed.split(s).images, plain.split(s).images))
    assert zoomed.fingerprint() != plain.fingerprint()
    assert load_photos(**kw, train_zooms=(1.0,)).fingerprint() == plain.fingerprint()
    img = np.random.default_rng(0).integers(0, 256, (3, 40, 30), dtype=np.uint8)
    assert zoom_image(img, 1.0) is img and zoom_image(img, 0.5).shape == (3, 20, 15)
    for bad in ((), (0.0,), (1.5,), (0.5, 0.5)):
        with pytest.raises(ConfigError, match="train_zooms"):
            load_photos(**kw, train_zooms=bad)


def test_transpose_keeps_the_flip_stream_and_swaps_axes():
    pool = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).reshape(2, 3, 8, 8).to(torch.uint8)
    a = sample_batch(pool, 32, 8, True, torch.Generator().manual_seed(0))
    b = sample_batch(pool, 32, 8, True, torch.Generator().manual_seed(0), transpose=True)
    same = [(b[i] == a[i]).all().item() for i in range(32)]
    swapped = [(b[i] == a[i].transpose(-1, -2)).all().item() for i in range(32)]
    assert all(s or t for s, t in zip(same, swapped)) and 0 < sum(swapped) < 32
    assert SRTrainRecipe(transpose=True).validate().transpose
