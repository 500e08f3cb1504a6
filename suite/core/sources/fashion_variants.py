"""The Fashion-MNIST family: garments composited over photos (32x32) and under colour affine warps (24x24).

They mirror the digit variants (``digits-photo32``, ``digits-affine24``) with
Fashion-MNIST garments as foregrounds, so a second dataset family has sources
at three resolutions (28 grey, 24 and 32 colour) for the meta-learned UAP
tasks (leave one dataset family out).  The base images are the first
:data:`BASE_LIMIT` images of each split of the ``fashion-mnist`` source
(train and val from the official training images, test from the official
test images, so a test image never shares a garment with train); every
random choice (crop, warp, colours, noise) comes from one seeded ``numpy``
generator, split by split in a fixed order.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import torch

from suite.core.sources.base import ImageSource, ImageSplit
from suite.core.sources.composite import affine_colour, blend_over_photos, to_uint8
from suite.core.sources.idx import load_fashion_mnist

BASE_LIMIT = 8000
"""Base images per split taken from ``fashion-mnist`` (train 8,000, val 6,000: all of it, test 8,000)."""

_VARIANTS: dict[str, tuple[Callable[..., np.ndarray], int, int, str]] = {
    "fashion-photo32": (blend_over_photos, 32, 303,
                        "Fashion-MNIST garments blended (absolute difference) over sample-photo crops, 32x32 RGB"),
    "fashion-affine24": (affine_colour, 24, 404,
                         "Fashion-MNIST garments under random affine warps, colours and noise, 24x24 RGB"),
}


@functools.lru_cache(maxsize=4)
def _build(name: str, data_root: str | None) -> ImageSource:
    make, size, seed, desc = _VARIANTS[name]
    base = load_fashion_mnist(data_root, limit=BASE_LIMIT)
    rng = np.random.default_rng(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # resampling rounds the same on every machine on one thread
    try:
        parts = {}
        for split in ("train", "val", "test"):
            s = base.split(split)
            grey = s.images[:, 0].astype(np.float64) / 255.0
            parts[split] = ImageSplit(to_uint8(make(grey, size, rng)), s.labels, s.indices)
    finally:
        torch.set_num_threads(threads)
    return ImageSource(
        name=name, train=parts["train"], val=parts["val"], test=parts["test"], num_classes=base.num_classes,
        class_names=base.class_names,
        description=f"{desc}; from the first {BASE_LIMIT} images of each fashion-mnist split",
        meta={"resolution": size, "derived_from": "fashion-mnist", "base_limit": BASE_LIMIT, "seed": seed,
              "base": {k: v for k, v in base.meta.items() if k in ("dataset_dir", "split_seed")}})


def load_variant(name: str, data_root: str | None = None, *, limit: int | None = None) -> ImageSource:
    """Build variant ``name`` (``data_root``: as for ``fashion-mnist``); ``limit``: first images per split."""
    return _build(name, None if data_root is None else str(data_root)).first(limit)


def fashion_photo32(data_root: str | None = None, **kw) -> ImageSource:
    return load_variant("fashion-photo32", data_root, **kw)


def fashion_affine24(data_root: str | None = None, **kw) -> ImageSource:
    return load_variant("fashion-affine24", data_root, **kw)
