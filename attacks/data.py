"""Craft / evaluation data for attacks, kept apart by construction.

A UAP is crafted on one set of images and its fooling rate is measured on a
*disjoint* held-out set.  :class:`AttackData` holds both and refuses to be
built when they share an image (same source index, or identical pixels), so
the two cannot be crossed by accident.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from suite.core.errors import ConfigError
from suite.core.sources.base import ImageSource, ImageSplit


def _row_digests(images: np.ndarray) -> set[bytes]:
    return {hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in images}


@dataclass(frozen=True)
class AttackData:
    """Images to craft on and disjoint images to evaluate on.

    craft, evaluate: :class:`ImageSplit` (uint8 ``[N, C, H, W]``) of one source.
    source: the source name (records say where a perturbation lives).
    """

    source: str
    craft: ImageSplit
    evaluate: ImageSplit
    shared_indices: bool = True  # split indices index one pool (embedded sources); False for
    #                              on-disk datasets whose train and test files are numbered apart

    def __post_init__(self) -> None:
        if len(self.craft) == 0 or len(self.evaluate) == 0:
            raise ConfigError("attack data needs at least one craft and one evaluation image")
        if self.craft.images.shape[1:] != self.evaluate.images.shape[1:]:
            raise ConfigError("craft and evaluation images differ in shape: "
                              f"{self.craft.images.shape[1:]} vs {self.evaluate.images.shape[1:]}")
        shared = np.intersect1d(self.craft.indices, self.evaluate.indices) if self.shared_indices else []
        if len(shared):
            raise ConfigError(f"craft and evaluation sets share {len(shared)} images of {self.source!r} "
                              "(by index): a UAP must be evaluated on held-out images")
        dup = _row_digests(self.craft.images) & _row_digests(self.evaluate.images)
        if dup:
            raise ConfigError(f"craft and evaluation sets share {len(dup)} identical images of "
                              f"{self.source!r}: a UAP must be evaluated on held-out images")

    @classmethod
    def from_source(cls, source: ImageSource, *, craft: str = "train", evaluate: str = "test",
                    craft_limit: int | None = None, eval_limit: int | None = None,
                    seed: int | None = None) -> "AttackData":
        """Craft on ``craft`` split, evaluate on ``evaluate`` split (default train / test).

        ``craft_limit`` keeps a random (seeded) subset of the craft split: the
        few-shot setting (e.g. 32 images).
        """
        splits = {"train": source.train, "val": source.val, "test": source.test}
        for name in (craft, evaluate):
            if name not in splits:
                raise ConfigError(f"unknown split {name!r} (choices: train, val, test)")
        if craft == evaluate:
            raise ConfigError(f"craft and evaluation splits must differ, got {craft!r} for both")
        c, e = splits[craft], splits[evaluate]
        if craft_limit is not None and craft_limit < len(c):
            gen = np.random.default_rng(seed)
            pick = np.sort(gen.choice(len(c), size=craft_limit, replace=False))
            c = ImageSplit(c.images[pick], c.labels[pick], c.indices[pick])
        if eval_limit is not None:
            e = e.subset(eval_limit)
        return cls(source.name, c, e, shared_indices=bool(source.meta.get("embedded")))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.craft.images.shape[1:])  # type: ignore[return-value]

    def craft_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.craft.tensors()

    def eval_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.evaluate.tensors()
