"""Image-source variants built by compositing: photo backgrounds and colour affine warps.

Both take grey images ``float64 [N, h, w]`` in [0, 1] (the foreground mask:
a digit, a garment) and a ``numpy`` generator, and return ``float64
[N, 3, size, size]`` in about [0, 1]; every random choice comes from the
generator, in a fixed order, ``chunk`` images at a time (the draws of a
chunk do not depend on later chunks, so a source is reproducible from its
seed and bounded in memory).  The digit variants (``digits-photo32``,
``digits-affine24``) and their Fashion-MNIST counterparts
(``fashion-photo32``, ``fashion-affine24``) share these two functions, so the
two dataset families differ only in their foregrounds.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

CHUNK = 2000


def resize(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``[N, C, h, w]`` float64 to ``[N, C, size, size]``."""
    t = torch.from_numpy(x)
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False).numpy()


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def sample_photos() -> tuple[np.ndarray, ...]:
    """scikit-learn's two sample photos as float64 ``[3, 427, 640]`` arrays in [0, 1]."""
    from sklearn.datasets import load_sample_images

    return tuple(img.astype(np.float64).transpose(2, 0, 1) / 255.0 for img in load_sample_images().images)


@functools.lru_cache(maxsize=1)
def _small_photos() -> tuple[np.ndarray, ...]:
    # Downscale each photo 4x so a 32x32 crop holds visible structure.
    return tuple(F.interpolate(torch.from_numpy(p[None]), scale_factor=0.25, mode="bilinear",
                               align_corners=False, recompute_scale_factor=False)[0].numpy()
                 for p in sample_photos())


def blend_over_photos(imgs: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """MNIST-M style: ``|photo crop - foreground|`` over random crops of the sample photos."""
    small = _small_photos()
    out = np.empty((len(imgs), 3, size, size), np.float64)
    for lo in range(0, len(imgs), CHUNK):
        part = imgs[lo:lo + CHUNK]
        masks = np.clip(resize(part[:, None], size), 0.0, 1.0)
        which = rng.integers(0, len(small), size=len(part))
        for i in range(len(part)):
            photo = small[which[i]]
            top = rng.integers(0, photo.shape[1] - size + 1)
            left = rng.integers(0, photo.shape[2] - size + 1)
            out[lo + i] = np.abs(photo[:, top:top + size, left:left + size] - masks[i])
    return out


def affine_colour(imgs: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random affine warp (rotation +-25 deg, scale, shear, shift), random colours, Gaussian noise."""
    out = np.empty((len(imgs), 3, size, size), np.float64)
    for lo in range(0, len(imgs), CHUNK):
        part = imgs[lo:lo + CHUNK]
        n = len(part)
        angle = rng.uniform(-25, 25, n) * math.pi / 180
        scale = rng.uniform(0.85, 1.15, n)
        shear = rng.uniform(-0.2, 0.2, n)
        shift = rng.uniform(-0.12, 0.12, (n, 2))
        fg = rng.uniform(0.55, 1.0, (n, 3))
        bg = rng.uniform(0.0, 0.35, (n, 3))
        swap = rng.random(n) < 0.5  # half the images: dark foreground on a light background
        fg[swap], bg[swap] = 1.0 - fg[swap], 1.0 - bg[swap]
        noise = rng.normal(0.0, 0.03, (n, 3, size, size))
        # Inverse map output -> input coordinates (affine_grid convention).
        cos, sin = np.cos(angle), np.sin(angle)
        theta = np.zeros((n, 2, 3))
        theta[:, 0, 0] = cos / scale
        theta[:, 0, 1] = (-sin + shear) / scale
        theta[:, 1, 0] = sin / scale
        theta[:, 1, 1] = cos / scale
        theta[:, :, 2] = shift
        src = torch.from_numpy(resize(part[:, None], size))
        grid = F.affine_grid(torch.from_numpy(theta), [n, 1, size, size], align_corners=False)
        warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        mask = np.clip(warped.numpy(), 0.0, 1.0)
        out[lo:lo + n] = mask * fg[:, :, None, None] + (1.0 - mask) * bg[:, :, None, None] + noise
    return out
