"""Embedded image sources built from real images that ship with scikit-learn.

No download is ever needed: the pixels come from ``sklearn.datasets``'
``load_digits`` (1,797 labelled 8x8 handwritten digits) and
``load_sample_images`` (two 427x640 photos).  Three sources at three input
resolutions give the attack stage tasks that cannot share a perturbation
variable:

``digits16``        digits upsampled to 16x16, grey replicated to RGB.
``digits-photo32``  MNIST-M style: digits at 32x32 blended (absolute
                    difference) over crops of the sample photos.
``digits-affine24`` digits under a random affine warp at 24x24 with random
                    foreground/background colours and Gaussian pixel noise.

Every random choice is drawn from ``numpy.random.default_rng`` with a fixed
per-source seed (PCG64 streams are identical on every platform), resampling
runs in float64, and the split indices are written down in
``suite/data/splits/<name>.json``; the pixel sha256 of each source is recorded
with every result so a run on another machine can check it saw the same data.
"""

from __future__ import annotations

import functools
import json
import math
from importlib import resources
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from suite.core.errors import DataError
from suite.core.sources.base import ImageSource, ImageSplit
from suite.core.sources.splits import indices_digest, stratified_split

SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
DIGIT_NAMES = tuple(str(i) for i in range(10))


# ---------------------------------------------------------------- raw pixels
@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """``(images float64 [1797, 8, 8] in [0, 1], labels int64 [1797])``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images.astype(np.float64) / 16.0, d.target.astype(np.int64))


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """The two sample photos as float64 ``[3, 427, 640]`` arrays in [0, 1]."""
    from sklearn.datasets import load_sample_images

    return tuple(img.astype(np.float64).transpose(2, 0, 1) / 255.0 for img in load_sample_images().images)


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``[N, C, h, w]`` float64 to ``[N, C, size, size]``."""
    t = torch.from_numpy(x)
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False).numpy()


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _make_digits16() -> tuple[np.ndarray, np.ndarray]:
    imgs, labels = _digits()
    up = _resize(imgs[:, None], 16)
    return _to_uint8(np.repeat(up, 3, axis=1)), labels


def _make_digits_photo32(seed: int = 101) -> tuple[np.ndarray, np.ndarray]:
    imgs, labels = _digits()
    rng = np.random.default_rng(seed)
    masks = np.clip(_resize(imgs[:, None], 32), 0.0, 1.0)  # [N,1,32,32]
    # Downscale each photo 4x so a 32x32 crop holds visible structure.
    small = [F.interpolate(torch.from_numpy(p[None]), scale_factor=0.25, mode="bilinear",
                           align_corners=False, recompute_scale_factor=False)[0].numpy()
             for p in _photos()]
    out = np.empty((len(imgs), 3, 32, 32), np.float64)
    which = rng.integers(0, len(small), size=len(imgs))
    for i in range(len(imgs)):
        photo = small[which[i]]
        top = rng.integers(0, photo.shape[1] - 32 + 1)
        left = rng.integers(0, photo.shape[2] - 32 + 1)
        crop = photo[:, top:top + 32, left:left + 32]
        out[i] = np.abs(crop - masks[i])
    return _to_uint8(out), labels


def _make_digits_affine24(seed: int = 202) -> tuple[np.ndarray, np.ndarray]:
    imgs, labels = _digits()
    n = len(imgs)
    rng = np.random.default_rng(seed)
    angle = rng.uniform(-25, 25, n) * math.pi / 180
    scale = rng.uniform(0.85, 1.15, n)
    shear = rng.uniform(-0.2, 0.2, n)
    shift = rng.uniform(-0.12, 0.12, (n, 2))
    fg = rng.uniform(0.55, 1.0, (n, 3))
    bg = rng.uniform(0.0, 0.35, (n, 3))
    swap = rng.random(n) < 0.5  # half the images: dark digit on light background
    fg[swap], bg[swap] = 1.0 - fg[swap], 1.0 - bg[swap]
    noise = rng.normal(0.0, 0.03, (n, 3, 24, 24))
    # Inverse map output -> input coordinates (affine_grid convention).
    cos, sin = np.cos(angle), np.sin(angle)
    theta = np.zeros((n, 2, 3))
    theta[:, 0, 0] = cos / scale
    theta[:, 0, 1] = (-sin + shear) / scale
    theta[:, 1, 0] = sin / scale
    theta[:, 1, 1] = cos / scale
    theta[:, :, 2] = shift
    src = torch.from_numpy(_resize(imgs[:, None], 24))
    grid = F.affine_grid(torch.from_numpy(theta), [n, 1, 24, 24], align_corners=False)
    warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mask = np.clip(warped.numpy(), 0.0, 1.0)
    out = mask * fg[:, :, None, None] + (1.0 - mask) * bg[:, :, None, None] + noise
    return _to_uint8(out), labels


# ------------------------------------------------------------------ splits
def split_file(name: str) -> str:
    return f"{name}.json"


def compute_splits(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The seeded stratified 70/10/20 split used by every embedded source."""
    return stratified_split(labels, SPLIT_FRACTIONS, seed)


def load_split_indices(name: str) -> dict[str, np.ndarray]:
    """Read the written-down split indices of embedded source ``name``."""
    try:
        text = resources.files("suite.data").joinpath("splits", split_file(name)).read_text()
        data = json.loads(text)
        return {k: np.asarray(data["indices"][k], dtype=np.int64) for k in ("train", "val", "test")}
    except (FileNotFoundError, KeyError, ValueError, TypeError) as err:
        raise DataError(
            f"{name}: split file suite/data/splits/{split_file(name)} is missing or malformed ({err})"
        ) from None


# --------------------------------------------------------------- builders
_SPEC: dict[str, tuple[Callable[[], tuple[np.ndarray, np.ndarray]], int, str]] = {
    "digits16": (_make_digits16, 16, "sklearn digits upsampled to 16x16, grey as RGB (10 classes)"),
    "digits-photo32": (_make_digits_photo32, 32,
                       "MNIST-M style: digits blended over sample-photo crops, 32x32 RGB (10 classes)"),
    "digits-affine24": (_make_digits_affine24, 24,
                        "digits under random affine warps, colours and noise, 24x24 RGB (10 classes)"),
}
SPLIT_SEEDS = {"digits16": 11, "digits-photo32": 12, "digits-affine24": 13}
EMBEDDED_DESCRIPTIONS = {name: spec[2] for name, spec in _SPEC.items()}


@functools.lru_cache(maxsize=None)
def _build(name: str) -> ImageSource:
    make, res, desc = _SPEC[name]
    # Parallel float reductions in torch's resampling round differently with
    # the thread count; generate on one thread so the pixels (and every cache
    # key built on their sha256) are the same on every machine and setting.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        images, labels = make()
    finally:
        torch.set_num_threads(threads)
    splits = load_split_indices(name)
    parts = {k: ImageSplit(images[idx], labels[idx], idx) for k, idx in splits.items()}
    return ImageSource(
        name=name,
        train=parts["train"],
        val=parts["val"],
        test=parts["test"],
        num_classes=10,
        class_names=DIGIT_NAMES,
        description=desc,
        meta={"embedded": True, "resolution": res, "split_seed": SPLIT_SEEDS[name],
              "split_digest": indices_digest(splits)},
    )


def load_embedded(name: str, data_root: str | None = None, *, limit: int | None = None) -> ImageSource:
    """Build embedded source ``name``; ``data_root`` is accepted and ignored.

    limit: keep only the first ``limit`` images of each split (smoke runs).
    """
    src = _build(name)
    if limit is None:
        return src
    if limit <= 0:
        raise DataError(f"limit must be positive, got {limit}")
    return ImageSource(src.name, src.train.subset(limit), src.val.subset(limit), src.test.subset(limit),
                       src.num_classes, src.class_names, src.description, {**src.meta, "limit": limit})


def digits16(data_root: str | None = None, **kw) -> ImageSource:
    return load_embedded("digits16", data_root, **kw)


def digits_photo32(data_root: str | None = None, **kw) -> ImageSource:
    return load_embedded("digits-photo32", data_root, **kw)


def digits_affine24(data_root: str | None = None, **kw) -> ImageSource:
    return load_embedded("digits-affine24", data_root, **kw)


def write_split_files(directory: str) -> None:
    """Regenerate ``<directory>/<name>.json`` for every embedded source (maintainers only)."""
    import os

    labels = _digits()[1]
    for name, seed in SPLIT_SEEDS.items():
        splits = compute_splits(labels, seed)
        payload = {
            "source": name,
            "seed": seed,
            "fractions": SPLIT_FRACTIONS,
            "digest": indices_digest(splits),
            "indices": {k: v.tolist() for k, v in splits.items()},
        }
        with open(os.path.join(directory, split_file(name)), "w") as fh:
            json.dump(payload, fh, separators=(",", ":"))
            fh.write("\n")
