"""Frequency-domain high-pass projection of image perturbations (for LTRC-examples).

A perturbation ``delta`` ``[N, C, H, W]`` is transformed per channel with a 2-D
FFT, multiplied by a mask that is 0 on the low frequencies and 1 on the high
ones, and transformed back.  The result is real, has the same shape, and its
spectrum is exactly zero (up to float rounding) wherever the mask is 0.

Radius units: a fraction of the Nyquist frequency, so the same setting means
the same band at any resolution.  Frequency ``(fy, fx)`` in cycles per image
(``torch.fft.fftfreq(H) * H``, in ``[-H/2, H/2)``) is normalised to
``(2 * fy / H, 2 * fx / W)``, both in ``[-1, 1)``; its distance from DC is the
Euclidean norm (``circle``), the max-norm (``square``) or used in a smooth
Gaussian roll-off (``gaussian``: ``1 - exp(-d^2 / (2 r^2))``).  ``radius = 0``
keeps everything except nothing (identity); DC (the mean of each channel) is
removed whenever ``radius > 0``.
"""

from __future__ import annotations

import torch

SHAPES = ("circle", "square", "gaussian")


def frequency_distance(h: int, w: int, shape: str = "circle", device: torch.device | str = "cpu") -> torch.Tensor:
    """``[H, W]`` normalised distance of every FFT bin from DC (unshifted FFT layout)."""
    fy = torch.fft.fftfreq(h, device=device) * 2.0  # [-1, 1)
    fx = torch.fft.fftfreq(w, device=device) * 2.0
    gy, gx = torch.meshgrid(fy, fx, indexing="ij")
    if shape == "square":
        return torch.maximum(gy.abs(), gx.abs())
    return torch.sqrt(gy ** 2 + gx ** 2)


def highpass_mask(h: int, w: int, radius: float, shape: str = "circle",
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """``[H, W]`` float mask in [0, 1]: 0 inside ``radius`` (low frequencies), 1 outside.

    ``shape``: ``circle`` | ``square`` (hard masks, DC always removed when
    ``radius > 0``) or ``gaussian`` (soft roll-off, exactly 0 at DC).
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown filter shape {shape!r} (choices: {', '.join(SHAPES)})")
    if radius < 0:
        raise ValueError(f"filter radius must be >= 0, got {radius}")
    if radius == 0:
        return torch.ones(h, w, device=device)
    d = frequency_distance(h, w, shape, device)
    if shape == "gaussian":
        return 1.0 - torch.exp(-(d ** 2) / (2.0 * radius ** 2))
    return (d > radius).float()


def highpass(delta: torch.Tensor, radius: float, shape: str = "circle") -> torch.Tensor:
    """High-pass projection of ``delta`` ``[N, C, H, W]`` (or ``[C, H, W]``); same shape and dtype.

    The hard masks are projections: applying them twice changes nothing.
    """
    if radius == 0:
        return delta
    h, w = delta.shape[-2:]
    mask = highpass_mask(h, w, radius, shape, delta.device)
    spec = torch.fft.fft2(delta.float())
    return torch.fft.ifft2(spec * mask).real.to(delta.dtype)


def lowfreq_energy_fraction(x: torch.Tensor, radius: float, shape: str = "circle") -> float:
    """Fraction of the spectral energy of ``x`` ``[..., H, W]`` at normalised distance <= ``radius``.

    For ``gaussian`` the hard circle of the same radius is used.  Returns 0.0
    for an all-zero input.
    """
    h, w = x.shape[-2:]
    d = frequency_distance(h, w, "square" if shape == "square" else "circle", x.device)
    power = torch.fft.fft2(x.float()).abs() ** 2
    total = float(power.sum())
    if total == 0.0:
        return 0.0
    return float(power[..., d <= radius].sum()) / total
