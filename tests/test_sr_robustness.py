"""SR robustness and IP protection (issue 18, point 6): UAP against SR models, SR fingerprint + audit.

Tiny ESPCNs trained for a few steps on small crops of the bundled photos, one thread.
"""

from __future__ import annotations

import pytest
import torch

from attacks.sr_uap import SRUAP, SRUAPSettings, apply_uap, evaluate, lr_crops, tile
from fingerprints.sr import (HalfSRPredictor, SRFingerprinter, SRFingerprintSettings, audit, calibrate_threshold,
                             onnx_predictor, pruned_copy, score_suspect, tpr_at_fpr, zoo_report)
from suite.core.errors import ConfigError
from suite.core.sr.models import build_sr_model
from suite.core.sr.photos import load_photos
from suite.core.sr.predictor import ModuleSRPredictor
from suite.core.sr.train import SRTrainRecipe, train_sr

SCALE = 2
RECIPE = SRTrainRecipe(steps=120, batch_size=8, patch_size=16, lr=2e-3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def source():
    return load_photos(scale=SCALE, patch_size=48, patches_per_image=8, eval_size=64, seed=0)


def _train(source, name="espcn", seed=0, width=0.25, recipe=RECIPE):
    torch.manual_seed(seed)
    m = build_sr_model(name, SCALE, width, 1.0 if name != "edsr" else 0.125)
    train_sr(m, source.train, SCALE, recipe, seed=seed, threads=1)
    return m.eval()


@pytest.fixture(scope="module")
def owner(source):
    return _train(source, seed=0)


@pytest.fixture(scope="module")
def crops(source):
    return lr_crops(source.train, SCALE, 16, 24, seed=0)


# --------------------------------------------------------------------------- UAP


def test_tile_covers_any_frame_and_repeats():
    d = torch.arange(2 * 3 * 3, dtype=torch.float32).view(1, 2, 3, 3)
    t = tile(d, 7, 5)
    assert t.shape == (1, 2, 7, 5)
    assert torch.equal(t[..., 3:6, 3:5], d[..., :, :2])
    assert torch.equal(t[..., 6:, :3], d[..., :1, :])


def test_settings_validate():
    with pytest.raises(ConfigError):
        SRUAPSettings(eps=0).validate()
    with pytest.raises(ConfigError):
        SRUAP(SRUAPSettings(), steps=3)
    assert SRUAPSettings(eps=8 / 255).alpha == pytest.approx(1 / 255)


def test_uap_inside_ball_and_range_and_seeded(owner, crops):
    s = SRUAPSettings(eps=8 / 255, steps=15, batch=8, patch=16, seed=3)
    r1, r2 = SRUAP(s).craft(owner, crops), SRUAP(s).craft(owner, crops)
    assert r1.delta.shape == (1, 3, 16, 16)
    assert float(r1.delta.abs().max()) <= s.eps + 1e-7
    assert torch.equal(r1.delta, r2.delta) and r1.losses == r2.losses
    r3 = SRUAP(s.__class__(**{**s.__dict__, "seed": 4})).craft(owner, crops)
    assert not torch.equal(r1.delta, r3.delta)
    x = torch.rand(2, 3, 21, 19)
    adv = apply_uap(x, r1.delta)
    assert adv.min() >= 0 and adv.max() <= 1
    assert float((adv - x).abs().max()) <= s.eps + 1e-6
    assert all(p.requires_grad for p in owner.parameters())


def test_uap_beats_same_norm_noise(owner, source, crops):
    res = SRUAP(eps=8 / 255, steps=40, batch=8, patch=16, seed=0).craft(owner, crops)
    assert res.losses[-1] > res.losses[0]
    pairs = list(source.test.pairs(SCALE))
    out = evaluate(ModuleSRPredictor(owner, SCALE), res.delta, [p[0] for p in pairs], [p[1] for p in pairs], SCALE)
    assert out["images"] == len(pairs)
    # measured: drop 0.43 dB vs noise 0.10 dB; PSNR vs the clean output 32.4 vs 42.5 dB
    assert out["uap"]["drop_db"] > out["noise"]["drop_db"] + 0.15
    assert out["uap"]["psnr_vs_clean"] < out["noise"]["psnr_vs_clean"] - 5
    assert out["uap_minus_noise_drop_db"] == pytest.approx(out["uap"]["drop_db"] - out["noise"]["drop_db"], abs=1e-3)
    import json
    json.dumps(out)  # JSON-ready


# --------------------------------------------------------------------------- fingerprint


def test_calibrate_threshold_and_tpr():
    assert calibrate_threshold([0.1, 0.5, 0.3]) == 0.5
    assert calibrate_threshold(list(range(200)), fpr=0.01) == 197.0  # 2 of 200 above
    assert tpr_at_fpr([0.9, 0.4], [0.1, 0.5]) == 0.5
    with pytest.raises(ConfigError):
        calibrate_threshold([])


def test_fingerprint_generation_seeded_and_bounded(owner, crops):
    settings = SRFingerprintSettings(mode="optimised", steps=5, eps=16 / 255, weight_noise=0.05, noise_copies=2, seed=1)
    a = SRFingerprinter(settings).generate(owner, crops[:4], SCALE)
    b = SRFingerprinter(settings).generate(owner, crops[:4], SCALE)
    assert torch.equal(a.x, b.x) and torch.equal(a.owner_out, b.owner_out)
    assert float((a.x - crops[:4]).abs().max()) <= 16 / 255 + 1e-6 and a.x.min() >= 0 and a.x.max() <= 1
    assert a.meta["baseline"] == "bicubic" and a.owner_out.shape == (4, 3, 32, 32)
    c = SRFingerprinter(mode="crops").generate(owner, crops[:4], SCALE)
    assert torch.equal(c.x, crops[:4])
    assert all(p.requires_grad for p in owner.parameters())


def test_noise_queries_are_seeded_binary_noise_of_the_crops_shape(owner, crops):
    a = SRFingerprinter(mode="noise", seed=3).generate(owner, crops[:5], SCALE)
    b = SRFingerprinter(mode="noise", seed=3).generate(owner, crops[:5], SCALE)
    c = SRFingerprinter(mode="noise", seed=4).generate(owner, crops[:5], SCALE)
    assert a.x.shape == crops[:5].shape and torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert set(torch.unique(a.x).tolist()) == {0.0, 1.0} and 0.4 < float(a.x.mean()) < 0.6
    assert not torch.equal(a.x, crops[:5]) and a.meta["queries_from"] == "binary noise (seeded)"
    assert score_suspect(a, ModuleSRPredictor(owner, SCALE), "psnr") == 100.0


def test_default_profile_fingerprints_with_noise_and_psnr():
    from types import SimpleNamespace

    from fingerprints.sr import sr_fingerprint_settings

    cfg = SimpleNamespace(fingerprint_args={}, profile="default", seed=0, negatives=None)
    settings, stage = sr_fingerprint_settings(cfg)
    assert settings.mode == "noise" and settings.score == "psnr" and stage["references"] == 0


def test_fingerprint_settings_validate():
    with pytest.raises(ConfigError):
        SRFingerprintSettings(mode="nope").validate()
    with pytest.raises(ConfigError):
        SRFingerprintSettings(score="nope").validate()


def test_fingerprint_verdicts_and_calibration(owner, source, crops):
    ref = _train(source, seed=50)
    negs = {f"espcn-s{s}": _train(source, seed=s) for s in (1, 2, 3)}
    fp = SRFingerprinter(mode="optimised", steps=10, seed=0).generate(owner, crops[:12], SCALE, references=[ref])
    assert fp.x.shape == (12, 3, 16, 16) and fp.x.min() >= 0 and fp.x.max() <= 1
    own = score_suspect(fp, ModuleSRPredictor(owner, SCALE))
    assert own == pytest.approx(1.0, abs=1e-6)  # the owner itself: residual correlation 1
    pruned = pruned_copy(owner, 0.5, source.train, SCALE, SRTrainRecipe(steps=30, batch_size=8, patch_size=16,
                                                                        lr=1e-3), seed=7, threads=1)
    cal = {k: ModuleSRPredictor(negs[k], SCALE) for k in ("espcn-s1", "espcn-s2")}
    held = {"espcn-s3": ModuleSRPredictor(negs["espcn-s3"], SCALE)}
    cal_scores = [score_suspect(fp, p) for p in cal.values()]
    thr = calibrate_threshold(cal_scores)
    for p in cal_scores + [score_suspect(fp, held["espcn-s3"])]:
        assert -1.0 <= p <= 1.0
    assert audit(fp, ModuleSRPredictor(pruned, SCALE), thr).verdict == "derived"
    pytest.importorskip("onnxruntime")
    assert audit(fp, onnx_predictor(owner, SCALE), thr).verdict == "derived"
    assert audit(fp, HalfSRPredictor(owner, SCALE), thr).verdict == "derived"
    # the psnr score: same direction (owner-derived copies closer to the owner's outputs)
    psnr_pruned = score_suspect(fp, ModuleSRPredictor(pruned, SCALE), "psnr")
    assert psnr_pruned > max(score_suspect(fp, p, "psnr") for p in [*cal.values(), *held.values()])
    assert score_suspect(fp, ModuleSRPredictor(owner, SCALE), "psnr") == 100.0  # identical outputs: the cap
    v = audit(fp, held["espcn-s3"], thr, cal_scores)
    assert v.verdict == "independent" and v.queries == 12 and v.threshold == thr and 0 < v.p_value <= 1

    # calibration sees only the calibration negatives: held-out negatives never change the threshold
    class Exploding:
        scale, differentiable = SCALE, False

        def upscale(self, x):
            raise AssertionError("queried")

    positives = {"pruned": ModuleSRPredictor(pruned, SCALE)}
    r1 = zoo_report(fp, positives, cal, held)
    r2 = zoo_report(fp, positives, cal, {"other": ModuleSRPredictor(owner, SCALE)})
    for kind in ("residual_corr", "psnr"):
        assert r1[kind]["threshold"] == r2[kind]["threshold"]
    assert r1["residual_corr"]["threshold"] == pytest.approx(thr, abs=1e-6)
    assert r1["residual_corr"]["auc"] == 1.0 and r1["residual_corr"]["heldout_false_positives"] == 0
    assert r2["residual_corr"]["heldout_false_positives"] == 1  # the owner posing as a negative is caught
    with pytest.raises(AssertionError, match="queried"):
        zoo_report(fp, positives, {"x": Exploding()}, held)
