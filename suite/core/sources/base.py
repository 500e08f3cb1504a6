"""Typed containers for image sources.

Images are stored as ``uint8`` arrays ``[N, C, H, W]`` (compact; CIFAR-10 is
150 MB this way instead of 600 MB as float32) and converted on demand to
float tensors in ``[0, 1]``, the input contract of every model in the suite.
Normalisation lives inside the models, never here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from suite.core.errors import DataError


@dataclass(frozen=True)
class ImageSplit:
    """One split of a source.

    images: ``uint8`` array ``[N, C, H, W]``.
    labels: ``int64`` array ``[N]`` with values in ``[0, num_classes)``.
    indices: positions of these samples in the source's full pool (for
        embedded sources) or in the file order of the dataset on disk; they
        are what the split files write down.
    """

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DataError(
                f"split images must be uint8 [N, C, H, W], got {self.images.dtype} {self.images.shape}"
            )
        if self.labels.ndim != 1 or len(self.labels) != len(self.images):
            raise DataError(
                f"split labels must be [N] with N={len(self.images)}, got shape {self.labels.shape}"
            )
        if len(self.indices) != len(self.images):
            raise DataError("split indices and images differ in length")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def tensors(self, idx: np.ndarray | slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x, y)``: ``x`` float32 ``[n, C, H, W]`` in ``[0, 1]``, ``y`` int64 ``[n]``."""
        sel = slice(None) if idx is None else idx
        x = torch.from_numpy(np.ascontiguousarray(self.images[sel])).float().div_(255.0)
        y = torch.from_numpy(np.ascontiguousarray(self.labels[sel])).long()
        return x, y

    def subset(self, n: int) -> "ImageSplit":
        """The first ``n`` samples (splits are already shuffled)."""
        return ImageSplit(self.images[:n], self.labels[:n], self.indices[:n])


@dataclass(frozen=True)
class ImageSource:
    """A labelled image source with fixed train/val/test splits.

    All images share one shape ``(channels, height, width)``; ``height`` is the
    source's input resolution.
    """

    name: str
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    num_classes: int
    class_names: tuple[str, ...]
    description: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def resolution(self) -> int:
        return self.shape[1]

    def split(self, name: str) -> ImageSplit:
        if name not in ("train", "val", "test"):
            raise DataError(f"unknown split {name!r}; choices: train, val, test")
        return getattr(self, name)

    def first(self, limit: int | None) -> "ImageSource":
        """This source with only the first ``limit`` images of each split (None: itself); ``limit`` > 0."""
        if limit is None:
            return self
        if limit <= 0:
            raise DataError(f"limit must be positive, got {limit}")
        return ImageSource(self.name, self.train.subset(limit), self.val.subset(limit), self.test.subset(limit),
                           self.num_classes, self.class_names, self.description, {**self.meta, "limit": limit})

    def fingerprint(self) -> str:
        """sha256 over the pixels, labels and split indices of all splits.

        Two machines that produce the same fingerprint trained and evaluated on
        byte-identical data; the model cache keys on it.
        """
        h = hashlib.sha256()
        h.update(self.name.encode())
        for split in (self.train, self.val, self.test):
            h.update(np.ascontiguousarray(split.images).tobytes())
            h.update(np.ascontiguousarray(split.labels.astype(np.int64)).tobytes())
            h.update(np.ascontiguousarray(split.indices.astype(np.int64)).tobytes())
        return h.hexdigest()

    def summary(self) -> dict:
        """JSON-ready description recorded in every result."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "num_classes": self.num_classes,
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "sha256": self.fingerprint(),
            **self.meta,
        }
