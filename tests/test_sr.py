"""Super-resolution foundation: metrics, degradation, photo / folder sources, models, supernet, training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from suite.core.errors import ConfigError, DataError, UnknownNameError
from suite.core.sr import sr_models, sr_sources
from suite.core.sr.degrade import bicubic_down, bicubic_up, crop_to_multiple
from suite.core.sr.metrics import psnr_from_mse, psnr_y, rgb_to_y, ssim_y
from suite.core.sr.models import (SR_ZOO, EDSR, ESPCN, FSRCNN, ResidualSR, SRChoice, SRSupernet, build_sr_model)
from suite.core.sr.photos import PHOTO_FILES, PHOTO_SPLIT, load_photos, load_sr_folder
from suite.core.sr.train import SRTrainRecipe, evaluate, sample_batch, train_sr


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_photos():
    """x2 photo source: 6 patches of 48 px per train photo, 64 px centre crops for val / test."""
    return load_photos(scale=2, patch_size=48, patches_per_image=6, eval_size=64, seed=3)


def _grey(level: int, h: int = 16, w: int = 16) -> torch.Tensor:
    return torch.full((1, 3, h, w), level / 255.0)


# --------------------------------------------------------------------------- metrics


def test_rgb_to_y_bt601_range():
    black, white = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    assert torch.allclose(rgb_to_y(black), torch.full((1, 1, 2, 2), 16.0, dtype=torch.float64))
    assert torch.allclose(rgb_to_y(white), torch.full((1, 1, 2, 2), 235.0, dtype=torch.float64))
    red = torch.zeros(1, 3, 1, 1)
    red[:, 0] = 1.0
    assert float(rgb_to_y(red)) == pytest.approx(16.0 + 65.481)


def test_psnr_of_known_mse_by_hand():
    # Grey 100 vs grey 110 (8-bit levels): Y differs by 219 * 10 / 255 everywhere.
    diff = (65.481 + 128.553 + 24.966) * 10 / 255
    expected = 10 * math.log10(255**2 / diff**2)
    got = psnr_y(_grey(110), _grey(100), border=0)
    assert got.shape == (1,)
    assert float(got[0]) == pytest.approx(expected, abs=1e-9)
    assert psnr_from_mse(diff**2) == pytest.approx(expected, abs=1e-12)
    # Only a quarter of the pixels differ: MSE is a quarter, +10 log10(4) dB.
    sr = _grey(100).clone()
    sr[..., :8, :8] = 110 / 255
    assert float(psnr_y(sr, _grey(100), border=0)[0]) == pytest.approx(expected + 10 * math.log10(4), abs=1e-9)


def test_psnr_border_crop_and_identity():
    hr = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    sr = hr.clone()
    sr[..., :2, :] = 1.0 - sr[..., :2, :]  # damage only the 2-pixel top border
    assert torch.isinf(psnr_y(sr, hr, border=2)).all()
    assert torch.isfinite(psnr_y(sr, hr, border=1)).all()
    assert psnr_y(sr, hr, border=0).shape == (2,)


def test_ssim_of_identical_images_is_one():
    x = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(ssim_y(x, x, border=2), torch.ones(2, dtype=torch.float64), atol=1e-12)


def test_ssim_matches_skimage_on_the_y_channel():
    skm = pytest.importorskip("skimage.metrics")
    from suite.core.sr.photos import read_photo

    hr = torch.from_numpy(read_photo("chelsea")[:, 40:120, 60:156].copy()).float().unsqueeze(0) / 255
    noisy = (hr + 0.04 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    blurred = bicubic_up(bicubic_down(hr, 4), 4)
    for sr in (noisy, blurred):
        border = 4
        ours = float(ssim_y(sr, hr, border)[0])
        ys = rgb_to_y(sr)[0, 0, border:-border, border:-border].numpy()
        yh = rgb_to_y(hr)[0, 0, border:-border, border:-border].numpy()
        ref = skm.structural_similarity(ys, yh, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, data_range=255)
        assert abs(ours - ref) < 1e-6, (ours, ref)
        assert 0.0 < ours < 1.0


def test_metric_errors():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ConfigError, match="equal shapes"):
        psnr_y(x, torch.rand(1, 3, 16, 18), 2)
    with pytest.raises(ConfigError, match="too small"):
        psnr_y(x, x, 8)
    with pytest.raises(ConfigError, match="SSIM needs"):
        ssim_y(x, x, 4)


# --------------------------------------------------------------------------- degradation


def test_bicubic_down_and_up_shapes_and_range():
    hr = torch.rand(2, 3, 24, 36, generator=torch.Generator().manual_seed(0))
    for s in (2, 4):
        lr = bicubic_down(hr, s)
        assert lr.shape == (2, 3, 24 // s, 36 // s)
        assert lr.min() >= 0 and lr.max() <= 1
        assert torch.equal(lr, torch.round(lr * 255) / 255)  # 8-bit levels
        up = bicubic_up(lr, s)
        assert up.shape == hr.shape and up.min() >= 0 and up.max() <= 1
    flat = _grey(77, 8, 8)
    assert torch.allclose(bicubic_up(bicubic_down(flat, 2), 2), flat, atol=1e-6)
    with pytest.raises(ConfigError, match="multiple of the scale"):
        bicubic_down(torch.rand(1, 3, 10, 11), 2)
    with pytest.raises(ConfigError, match="scale must be"):
        bicubic_down(hr, 5)
    assert crop_to_multiple(torch.rand(1, 3, 10, 11), 4).shape == (1, 3, 8, 8)


# --------------------------------------------------------------------------- bundled photos


def test_photo_split_keeps_every_photo_on_one_side(tiny_photos):
    src = tiny_photos
    assert set(PHOTO_SPLIT) == set(PHOTO_FILES)
    sides = {s: set(src.split(s).photos) for s in ("train", "val", "test")}
    assert sides["train"] and sides["val"] and sides["test"]
    assert not (sides["train"] & sides["val"]) and not (sides["train"] & sides["test"])
    assert not (sides["val"] & sides["test"])
    assert sides["train"] | sides["val"] | sides["test"] == set(PHOTO_SPLIT)
    for s, names in sides.items():
        assert all(PHOTO_SPLIT[p] == s for p in names)
    assert "motorcycle_right" not in PHOTO_SPLIT  # stereo twin of motorcycle_left
    assert len(src.train) == 6 * len(sides["train"])
    assert {img.shape for img in src.train.images} == {(3, 48, 48)}
    for img in src.val.images + src.test.images:
        assert img.shape[1] % 2 == 0 and img.shape[2] % 2 == 0 and max(img.shape[1:]) <= 64


def test_photo_crops_reproducible_from_seed(tiny_photos):
    again = load_photos(scale=2, patch_size=48, patches_per_image=6, eval_size=64, seed=3)
    assert again.train.crops == tiny_photos.train.crops
    assert again.fingerprint() == tiny_photos.fingerprint()
    assert all(np.array_equal(a, b) for a, b in zip(again.train.images, tiny_photos.train.images))
    other = load_photos(scale=2, patch_size=48, patches_per_image=6, eval_size=64, seed=4)
    assert other.train.crops != tiny_photos.train.crops
    assert other.fingerprint() != tiny_photos.fingerprint()
    # The recorded crop is exactly where the patch came from.
    from suite.core.sr.photos import read_photo

    c = tiny_photos.train.crops[0]
    full = read_photo(c.photo)
    assert np.array_equal(tiny_photos.train.images[0], full[:, c.top:c.top + c.height, c.left:c.left + c.width])
    summary = tiny_photos.summary()
    assert summary["sizes"] == {"train": len(tiny_photos.train), "val": 1, "test": 2}
    assert summary["assignment"] == PHOTO_SPLIT


def test_photo_whole_images_cropped_to_scale():
    src = load_photos(scale=4, patch_size=48, patches_per_image=1, photos=["chelsea", "rocket"])
    chelsea = src.val.images[0]
    assert chelsea.shape == (3, 300, 448)  # 300 x 451 cropped to a multiple of 4
    assert src.val.crops[0].top == 0 and src.val.crops[0].left == 0
    assert len(src.train) == 0
    with pytest.raises(ConfigError, match="unknown photo"):
        load_photos(photos=["lena"])
    with pytest.raises(ConfigError, match="multiple of the scale"):
        load_photos(scale=4, patch_size=50)


# --------------------------------------------------------------------------- folder source


def _write_pngs(directory: Path, count: int, size: tuple[int, int] = (40, 52), seed: int = 0) -> list[Path]:
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        arr = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        p = directory / f"img{i:02d}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def test_folder_source_flat_layout(tmp_path):
    _write_pngs(tmp_path, 5)
    src = load_sr_folder(tmp_path, scale=2, patch_size=16, patches_per_image=3, val_fraction=0.2,
                         test_fraction=0.2, seed=1)
    assert (len(src.val), len(src.test)) == (1, 1)
    assert len(src.train) == 3 * 3
    sides = [set(src.split(s).photos) for s in ("train", "val", "test")]
    assert sum(len(s) for s in sides) == 5 and len(set().union(*sides)) == 5
    assert src.test.images[0].shape == (3, 40, 52)
    assert src.meta["layout"] == "flat"
    again = load_sr_folder(tmp_path, scale=2, patch_size=16, patches_per_image=3, val_fraction=0.2,
                           test_fraction=0.2, seed=1)
    assert again.fingerprint() == src.fingerprint()


def test_folder_source_set5_and_div2k_layouts(tmp_path):
    _write_pngs(tmp_path / "Set5" / "HR", 2)
    _write_pngs(tmp_path / "Set5" / "LR_bicubic" / "X2", 2, size=(20, 26))  # ignored: LR is made here
    set5 = load_sr_folder(tmp_path / "Set5", scale=2, patch_size=16)
    assert (len(set5.train), len(set5.val), len(set5.test)) == (0, 0, 2)
    assert set5.meta["layout"] == "hr"
    div2k = tmp_path / "DIV2K"
    _write_pngs(div2k / "DIV2K_train_HR", 4)
    _write_pngs(div2k / "DIV2K_valid_HR", 2, seed=1)
    src = load_sr_folder(div2k, scale=2, patch_size=16, patches_per_image=2, val_fraction=0.25)
    assert len(src.test) == 2 and all(p.startswith("DIV2K_valid_HR/") for p in src.test.photos)
    assert len(src.val) == 1 and len(src.train) == 3 * 2
    assert not set(src.train.photos) & set(src.val.photos)


def test_folder_source_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_sr_folder(tmp_path / "missing")
    with pytest.raises(DataError, match="needs --data-root"):
        load_sr_folder(None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_sr_folder(tmp_path / "empty")
    bad = tmp_path / "bad"
    _write_pngs(bad, 4)
    (bad / "img99.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read .*img99\.png") as err:
        load_sr_folder(bad, scale=2, patch_size=16, test_fraction=0.2, val_fraction=0.2)
    assert "\n" not in str(err.value)
    small = tmp_path / "small"
    _write_pngs(small, 3, size=(12, 12))
    with pytest.raises(DataError, match="smaller than the HR patch|evaluation images need"):
        load_sr_folder(small, scale=2, patch_size=16, val_fraction=0.3, test_fraction=0.3)
    with pytest.raises(DataError, match="too few"):
        load_sr_folder(small, val_fraction=0.5, test_fraction=0.45)
    with pytest.raises(ConfigError, match="val_fraction"):
        load_sr_folder(bad, val_fraction=1.5)


# --------------------------------------------------------------------------- models


TINY = {"espcn": (0.25, 1.0), "fsrcnn": (0.5, 0.5), "edsr": (0.25, 0.125), "sr-supernet": (0.25, 0.25)}


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("name", sorted(SR_ZOO))
def test_model_output_shape(name, scale):
    torch.manual_seed(0)
    width, depth = TINY[name]
    model = build_sr_model(name, scale, width, depth)
    assert model.scale == scale
    x = torch.rand(2, 3, 9, 13)
    y = model(x)
    assert y.shape == (2, 3, 9 * scale, 13 * scale) and y.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_full_size_models_match_the_papers():
    fsrcnn = build_sr_model("fsrcnn", 2)
    convs = [m for m in fsrcnn.body if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs] == [5, 1, 3, 3, 3, 3, 1]
    assert [c.out_channels for c in convs] == [56, 12, 12, 12, 12, 12, 56]
    assert fsrcnn.deconv.kernel_size == (9, 9) and fsrcnn.deconv.stride == (2, 2)
    espcn = build_sr_model("espcn", 3)
    assert [m.out_channels for m in espcn.body if isinstance(m, torch.nn.Conv2d)] == [64, 32, 27]
    edsr = build_sr_model("edsr", 2)
    assert edsr.channels == 64 and edsr.blocks == 16
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in edsr.modules())
    assert isinstance(build_sr_model("edsr", 4, 0.5, 0.5), EDSR)
    assert isinstance(espcn, ESPCN) and isinstance(fsrcnn, FSRCNN)


def test_sr_registries_are_separate_from_classification():
    from suite.core.registries import models

    assert {"espcn", "fsrcnn", "edsr", "sr-supernet"} <= set(sr_models.names())
    assert not any(n in models for n in ("espcn", "fsrcnn", "sr-supernet"))
    assert sr_models.build("espcn", 2).scale == 2
    assert set(sr_sources.names()) == {"photos", "srfolder"}
    with pytest.raises(UnknownNameError):
        build_sr_model("srcnn", 2)
    with pytest.raises(ConfigError):
        build_sr_model("edsr", 5)


def test_sr_package_imports_only_downward():
    forbidden = ("attacks", "compression", "fingerprints", "reports", "suite.app", "torchvision", "skimage")
    for path in Path(__file__).resolve().parents[1].joinpath("suite", "core", "sr").glob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")):
                module = stripped.split()[1]
                assert not module.startswith(forbidden), f"{path.name}: {stripped}"


# --------------------------------------------------------------------------- supernet


def test_supernet_extraction_is_exact():
    torch.manual_seed(0)
    net = SRSupernet(2, widths=(8, 12, 16), max_depth=4, kernel_sizes=(3, 5))
    with torch.no_grad():  # non-trivial means so the buffers are checked too
        net.sub_mean.mean.copy_(torch.tensor([0.3, 0.5, 0.4]).view(1, 3, 1, 1))
        net.add_mean.mean.copy_(net.sub_mean.mean)
    x = torch.rand(2, 3, 11, 9, generator=torch.Generator().manual_seed(1))
    rng = np.random.default_rng(0)
    choices = [net.max_choice(), net.min_choice(), SRChoice(12, (5, 3, 5)), SRChoice(16, (3,)),
               *(net.sample(rng) for _ in range(4))]
    net.eval()
    for choice in choices:
        sub = net.extract(choice)
        assert isinstance(sub, ResidualSR) and sub.choice == choice
        assert not any(p.data_ptr() == q.data_ptr() for p in sub.parameters() for q in net.parameters())
        with torch.no_grad():
            a, b = net(x, choice), sub(x)
        assert a.shape == (2, 3, 22, 18)
        assert (a - b).abs().max().item() <= 1e-6, choice
        n_sub = sum(p.numel() for p in sub.parameters())
        w, d = choice.width, choice.depth
        assert n_sub == (3 * w * 9 + w) + sum(2 * (w * w * k * k + w) for k in choice.kernels) + (w * w * 9 + w) \
            + (w * 12 * 9 + 12)
        assert d == len(sub.body)
    # The 3x3 kernel of a block is the centre of the stored 5x5 one.
    sub = net.extract(SRChoice(8, (3,)))
    assert torch.equal(sub.body[0].conv1.weight, net.blocks[0]["conv1"].weight[:8, :8, 1:4, 1:4])
    net.set_choice(SRChoice(8, (3,)))
    with torch.no_grad():
        assert (net(x) - sub(x)).abs().max().item() <= 1e-6
    with pytest.raises(ConfigError, match="width"):
        net.extract(SRChoice(10, (3,)))
    with pytest.raises(ConfigError, match="depth"):
        net.extract(SRChoice(8, (3,) * 5))


def test_supernet_shares_weights_across_choices():
    torch.manual_seed(0)
    net = SRSupernet(2, widths=(4, 8), max_depth=2)
    loss = net(torch.rand(1, 3, 8, 8), SRChoice(4, (3,))).abs().mean()
    loss.backward()
    grad = net.blocks[0]["conv1"].weight.grad
    assert grad[:4, :4, 1:4, 1:4].abs().sum() > 0
    assert grad[4:].abs().sum() == 0 and grad[:, :, 0].abs().sum() == 0
    assert net.blocks[1]["conv1"].weight.grad is None or net.blocks[1]["conv1"].weight.grad.abs().sum() == 0


# --------------------------------------------------------------------------- training and evaluation


def test_training_lowers_l1_loss(tiny_photos):
    torch.manual_seed(0)
    model = build_sr_model("espcn", 2, 0.5)
    pool = torch.from_numpy(tiny_photos.train.stack())
    held = sample_batch(pool, 16, 32, False, torch.Generator().manual_seed(99))
    lr_held = bicubic_down(held, 2)

    def held_loss() -> float:
        with torch.no_grad():
            return float(F.l1_loss(model(lr_held), held))

    before = held_loss()
    report = train_sr(model, tiny_photos.train, 2, SRTrainRecipe(steps=30, batch_size=8, patch_size=16, lr=2e-3),
                      seed=0, threads=1)
    after = held_loss()
    assert len(report.losses) == 30 and report.threads == 1
    assert after < 0.6 * before, (before, after)
    assert np.mean(report.losses[-5:]) < np.mean(report.losses[:5])


def test_training_reproducible_from_seed(tiny_photos):
    def run(seed: int) -> list[float]:
        torch.manual_seed(0)
        model = build_sr_model("espcn", 2, 0.25)
        return train_sr(model, tiny_photos.train, 2, SRTrainRecipe(steps=4, batch_size=4, patch_size=12),
                        seed=seed, threads=1).losses

    assert run(5) == run(5)
    assert run(5) != run(6)
    with pytest.raises(ConfigError, match="larger than"):
        train_sr(build_sr_model("espcn", 2, 0.25), tiny_photos.train, 2, SRTrainRecipe(steps=1, patch_size=40),
                 seed=0)


def test_evaluate_reports_model_and_bicubic(tiny_photos):
    class Bicubic(torch.nn.Module):
        scale = 2

        def forward(self, x):
            return bicubic_up(x, 2)

    out = evaluate(Bicubic(), tiny_photos, "test")
    assert out["images"] == 2 and len(out["per_image"]) == 2
    assert out["psnr_y"] == pytest.approx(out["bicubic_psnr_y"], abs=1e-9)
    assert out["ssim_y"] == pytest.approx(out["bicubic_ssim_y"], abs=1e-9)
    assert 20 < out["bicubic_psnr_y"] < 50 and 0 < out["bicubic_ssim_y"] < 1
    with pytest.raises(ConfigError, match="x4"):
        evaluate(build_sr_model("espcn", 4, 0.25), tiny_photos, "test")
