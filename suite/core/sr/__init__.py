"""Single-image super-resolution (task ``sr``): metrics, degradation, data, models, training.

Modules (each one job; import them directly, this package imports nothing heavy):

* :mod:`suite.core.sr.metrics` -- PSNR / SSIM on the BT.601 Y channel with the border crop;
* :mod:`suite.core.sr.degrade` -- bicubic HR -> LR and the bicubic upsampling baseline;
* :mod:`suite.core.sr.photos`  -- :class:`SRSource` from bundled photos or a folder of images;
* :mod:`suite.core.sr.models`  -- ESPCN, FSRCNN, EDSR-style, the weight-sharing supernet;
* :mod:`suite.core.sr.train`   -- L1 training loop and ``evaluate``.

SR models do not fit the classification ``models`` registry (whose factories
return logits), so they have their own lazy registries here.

Factory contracts
-----------------
sr_models:  ``f(scale, width=1.0, depth=1.0) -> torch.nn.Module`` mapping
            ``[N, 3, h, w]`` in [0, 1] to ``[N, 3, h*scale, w*scale]`` (not clamped).
sr_sources: ``f(data_root: str | None, *, scale, **kwargs) -> SRSource``.
"""

from __future__ import annotations

from suite.core.registry import Registry

sr_models = Registry("sr-models", "SR model")
sr_sources = Registry("sr-sources", "SR source")

sr_models.register("espcn", "suite.core.sr.models:build_espcn",
                   description="ESPCN (Shi et al. 2016): conv5x5 64, conv3x3 32, conv3x3 3s^2, pixel shuffle")
# lr_scale: multiplier of a profile's dense-training learning rate.  FSRCNN (PReLU, a deconvolution initialised
# at std 0.001) trains slowly at Adam 1e-3: on the val photo at 3000 steps, lr 1e-3 / 3e-3 / 6e-3 / 1.2e-2 gave
# 35.00 / 35.36 / 35.47 / 34.90 dB PSNR-Y (bicubic 35.26; bench/results/sr_recipe.json); ESPCN gained nothing at 3e-3.
sr_models.register("fsrcnn", "suite.core.sr.models:build_fsrcnn", lr_scale=6.0,
                   description="FSRCNN(56, 12, 4) (Dong et al. 2016): PReLU, 9x9 deconvolution with stride s")
sr_models.register("edsr", "suite.core.sr.models:build_edsr", aliases=("edsr-baseline",),
                   description="EDSR-baseline style: residual blocks without BN, pixel shuffle; width/depth multipliers")
sr_models.register("sr-supernet", "suite.core.sr.models:build_sr_supernet", aliases=("supernet",), supernet=True,
                   description="weight-sharing supernet over depth, width and kernel size (3/5)")

sr_sources.register("photos", "suite.core.sr.photos:load_photos", aliases=("sr-photos",), embedded=True,
                    description="[embedded] photos bundled with scikit-learn and scikit-image, split by image")
sr_sources.register("srfolder", "suite.core.sr.photos:load_sr_folder", aliases=("sr-folder",), needs_data_root=True,
                    description="HR images on disk: a flat folder, <set>/HR/ (Set5, Set14) or DIV2K_*_HR/")

DEFAULT_SR_SOURCE = "photos"

__all__ = ["sr_models", "sr_sources", "DEFAULT_SR_SOURCE"]


def scaled_lr(model: str, lr: float) -> float:
    """``lr`` times ``model``'s registered ``lr_scale`` tag (1 if none): its dense-training learning rate."""
    return float(lr) * float(sr_models.entry(model).tags.get("lr_scale", 1.0))
