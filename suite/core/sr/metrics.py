"""PSNR and SSIM on the Y channel, computed the way the super-resolution literature does.

Protocol (EDSR, RCAN, SwinIR, BasicSR, ...):

* both images are RGB in ``[0, 1]``; by default they are first rounded to 8-bit
  levels (``round(255 x) / 255``), as if the SR output had been saved as a PNG;
* they are converted to luma with ITU-R BT.601 (studio swing):
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for ``R, G, B`` in ``[0, 1]``,
  so ``Y`` is in ``[16, 235]`` in ``[0, 255]`` units (not rounded, as BasicSR);
* ``border`` pixels (the scale factor, by convention) are cropped on every side;
* PSNR is ``10 log10(255^2 / MSE)`` in dB per image, SSIM is Wang et al. (2004)
  with an 11x11 Gaussian window (sigma 1.5), ``K1 = 0.01``, ``K2 = 0.03``,
  ``L = 255``, averaged over the positions where the window fits entirely
  (MATLAB's ``ssim_index`` with ``filter2(..., 'valid')``; the same number as
  ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255)``).

Scores are per image (shape ``[N]``); a data set's score is the mean of its
per-image scores, never the PSNR of the pooled MSE.  Everything is computed in
float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from suite.core.errors import ConfigError

#: BT.601 luma weights for R, G, B in [0, 1] giving Y in [0, 255] units, plus the offset 16.
Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0
PEAK = 255.0

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(sr: torch.Tensor, hr: torch.Tensor, border: int) -> None:
    if sr.ndim != 4 or sr.shape[1] != 3:
        raise ConfigError(f"SR metrics need images [N, 3, H, W], got {tuple(sr.shape)}")
    if sr.shape != hr.shape:
        raise ConfigError(f"SR metrics need equal shapes, got {tuple(sr.shape)} and {tuple(hr.shape)}")
    if isinstance(border, bool) or not isinstance(border, int) or border < 0:
        raise ConfigError(f"border must be a non-negative integer, got {border!r}")
    if sr.shape[2] <= 2 * border or sr.shape[3] <= 2 * border:
        raise ConfigError(f"images {tuple(sr.shape[2:])} are too small for a border crop of {border}")


def rgb_to_y(x: torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
    """BT.601 luma of RGB images.

    x: ``[N, 3, H, W]`` RGB in ``[0, 1]`` (clamped to it here).
    quantize: round to 8-bit levels first (``round(255 x) / 255``), as the
        literature scores images saved as 8-bit PNGs.
    Returns float64 ``[N, 1, H, W]``, ``Y`` in ``[16, 235]`` ([0, 255] units).
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ConfigError(f"rgb_to_y needs images [N, 3, H, W], got {tuple(x.shape)}")
    x = x.detach().to(torch.float64).clamp(0.0, 1.0)
    if quantize:
        x = torch.round(x * 255.0) / 255.0
    w = torch.tensor(Y_WEIGHTS, dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True) + Y_OFFSET


def _crop(y: torch.Tensor, border: int) -> torch.Tensor:
    return y[..., border:y.shape[-2] - border, border:y.shape[-1] - border] if border else y


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, border: int, *, quantize: bool = True) -> torch.Tensor:
    """PSNR in dB on the Y channel, per image.

    sr, hr: ``[N, 3, H, W]`` RGB in ``[0, 1]`` (same shape).
    border: pixels cropped on every side before scoring (the scale factor).
    quantize: see :func:`rgb_to_y`.
    Returns float64 ``[N]`` in dB; ``inf`` where the Y channels are identical.
    """
    _check_pair(sr, hr, border)
    ys = _crop(rgb_to_y(sr, quantize=quantize), border)
    yh = _crop(rgb_to_y(hr, quantize=quantize), border)
    mse = (ys - yh).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(PEAK**2 / mse)


def psnr_from_mse(mse: float, peak: float = PEAK) -> float:
    """``10 log10(peak^2 / mse)`` in dB (``mse`` in squared ``peak`` units); ``inf`` for 0."""
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def gaussian_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian ``[size]`` (float64); its outer product is MATLAB's ``fspecial('gaussian')``."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(r**2) / (2.0 * sigma**2))
    return g / g.sum()


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 2-D Gaussian ``[1, 1, size, size]`` (float64), MATLAB's ``fspecial('gaussian')``."""
    g = gaussian_1d(size, sigma)
    return torch.outer(g, g).view(1, 1, size, size)


def _filter_valid(x: torch.Tensor) -> torch.Tensor:
    """Gaussian filtering of ``[M, 1, H, W]`` over the positions where the window fits (separable)."""
    g = gaussian_1d().to(x.device)
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    return F.conv2d(x, g.view(1, 1, -1, 1))


def ssim_map(x: torch.Tensor, y: torch.Tensor, *, peak: float = PEAK) -> torch.Tensor:
    """SSIM map of single-channel images over the positions where the window fits.

    x, y: ``[N, 1, H, W]`` in ``[0, peak]`` units, ``H, W >= 11``.
    Returns float64 ``[N, 1, H - 10, W - 10]``.
    """
    if x.shape[-2] < SSIM_WINDOW or x.shape[-1] < SSIM_WINDOW:
        raise ConfigError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} after the border crop, "
                          f"got {tuple(x.shape[-2:])}")
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    n = x.shape[0]
    c1 = (SSIM_K1 * peak) ** 2
    c2 = (SSIM_K2 * peak) ** 2
    # One filtering pass over the five maps: x, y, x^2, y^2, xy.
    stats = _filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=0))
    mu_x, mu_y, xx, yy, xy = stats.split(n, dim=0)
    var_x = xx - mu_x**2
    var_y = yy - mu_y**2
    cov = xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return num / den


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, border: int, *, quantize: bool = True) -> torch.Tensor:
    """SSIM on the Y channel, per image (Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03, L 255).

    sr, hr: ``[N, 3, H, W]`` RGB in ``[0, 1]`` (same shape).
    border: pixels cropped on every side before scoring (the scale factor).
    quantize: see :func:`rgb_to_y`.
    Returns float64 ``[N]``, unitless, at most 1 (1 for identical Y channels).
    """
    _check_pair(sr, hr, border)
    ys = _crop(rgb_to_y(sr, quantize=quantize), border)
    yh = _crop(rgb_to_y(hr, quantize=quantize), border)
    return ssim_map(ys, yh).mean(dim=(1, 2, 3))
