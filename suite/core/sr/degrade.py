"""Bicubic degradation (HR -> LR) and the bicubic upsampling baseline.

Both use ``torch.nn.functional.interpolate(mode="bicubic", align_corners=False,
antialias=True)``.  With ``antialias=True`` PyTorch uses the Keys cubic kernel
with ``a = -0.5`` (the same kernel as MATLAB's ``imresize`` and Pillow's
BICUBIC; without antialiasing PyTorch uses ``a = -0.75``, OpenCV's), and when
shrinking it widens the kernel by the scale factor, as MATLAB does.

This is *not* MATLAB's ``imresize``, which the SR literature's LR images were
made with; what differs:

* borders: MATLAB extends the image by symmetric (mirror) padding, PyTorch drops
  the taps that fall outside and renormalises the remaining weights, so the
  outermost few pixels differ (the border crop of the metrics hides most of it);
* precision and rounding: MATLAB works on the uint8 image and rounds its output
  to uint8; here the output is float, clamped to ``[0, 1]`` and, with
  ``quantize=True`` (the default for the LR), rounded to 8-bit levels to mimic
  LR images stored as PNGs;
* the pixel grid is the same (half-pixel centres, ``align_corners=False``).

So PSNR numbers on the same HR photos are comparable to, but not identical
with, numbers computed on MATLAB-made LR images; the size of the difference
has not been measured here (no MATLAB / Octave reference is available).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from suite.core.errors import ConfigError

SCALES = (2, 3, 4)


def check_scale(scale: int) -> int:
    """``scale`` as an int if it is a supported SR factor (2, 3 or 4); ConfigError otherwise."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale not in SCALES:
        raise ConfigError(f"scale must be one of {', '.join(map(str, SCALES))}, got {scale!r}")
    return scale


def _quantize(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 255.0) / 255.0


def bicubic_down(hr: torch.Tensor, scale: int, *, quantize: bool = True) -> torch.Tensor:
    """Bicubic downscale by an integer factor (antialiased, a = -0.5).

    hr: float ``[N, 3, H, W]`` in ``[0, 1]`` with ``H`` and ``W`` multiples of ``scale``.
    quantize: round the result to 8-bit levels (``round(255 x) / 255``).
    Returns ``[N, 3, H / scale, W / scale]`` in ``[0, 1]`` (clamped), same dtype.
    """
    check_scale(scale)
    if hr.ndim != 4:
        raise ConfigError(f"bicubic_down needs images [N, C, H, W], got {tuple(hr.shape)}")
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ConfigError(f"HR size {h}x{w} is not a multiple of the scale {scale}")
    lr = F.interpolate(hr, size=(h // scale, w // scale), mode="bicubic", align_corners=False, antialias=True)
    lr = lr.clamp(0.0, 1.0)
    return _quantize(lr) if quantize else lr


def bicubic_up(lr: torch.Tensor, scale: int, *, quantize: bool = False) -> torch.Tensor:
    """Bicubic upsampling baseline by an integer factor (a = -0.5, MATLAB's kernel).

    lr: float ``[N, 3, h, w]`` in ``[0, 1]``.
    quantize: round the result to 8-bit levels (the metrics round anyway).
    Returns ``[N, 3, h * scale, w * scale]`` in ``[0, 1]`` (clamped), same dtype.
    """
    check_scale(scale)
    if lr.ndim != 4:
        raise ConfigError(f"bicubic_up needs images [N, C, H, W], got {tuple(lr.shape)}")
    h, w = lr.shape[-2:]
    sr = F.interpolate(lr, size=(h * scale, w * scale), mode="bicubic", align_corners=False, antialias=True)
    sr = sr.clamp(0.0, 1.0)
    return _quantize(sr) if quantize else sr


def crop_to_multiple(x: torch.Tensor, scale: int) -> torch.Tensor:
    """The top-left ``[..., H - H % scale, W - W % scale]`` part of ``x`` (a view)."""
    check_scale(scale)
    h, w = x.shape[-2:]
    return x[..., : h - h % scale, : w - w % scale]
