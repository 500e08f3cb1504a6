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
from importlib import resources
from typing import Callable

import numpy as np
import torch

from suite.core.errors import DataError
from suite.core.sources.composite import affine_colour, blend_over_photos, resize, to_uint8
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


def _make_digits16() -> tuple[np.ndarray, np.ndarray]:
    imgs, labels = _digits()
    up = resize(imgs[:, None], 16)
    return to_uint8(np.repeat(up, 3, axis=1)), labels


def _make_digits_photo32(seed: int = 101) -> tuple[np.ndarray, np.ndarray]:
    imgs, labels = _digits()
    return to_uint8(blend_over_photos(imgs, 32, np.random.default_rng(seed))), labels


def _make_digits_affine24(seed: int = 202) -> tuple[np.ndarray, np.ndarray]:
    imgs, labels = _digits()
    return to_uint8(affine_colour(imgs, 24, np.random.default_rng(seed))), labels


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
    return _build(name).first(limit)


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
