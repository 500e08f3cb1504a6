"""The training recipe: gradient clipping bounds every step (the fix for VGG16's divergence on colour digits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from suite.core.config import TrainRecipe
from suite.core.errors import ConfigError
from suite.core.sources.base import ImageSplit
from suite.core.training import train_model


class Flat(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(x.flatten(1) * 1000.0)  # a huge input scale: enormous gradients


def _split(n: int = 8) -> ImageSplit:
    rng = np.random.default_rng(0)
    return ImageSplit(rng.integers(0, 256, (n, 3, 4, 4), dtype=np.uint8), np.arange(n) % 10, np.arange(n))


@pytest.mark.parametrize("clip", [0.5, 0.0])
def test_grad_clip_bounds_the_step(clip):
    torch.manual_seed(0)
    net = Flat()
    before = torch.cat([p.detach().flatten().clone() for p in net.parameters()])
    recipe = TrainRecipe(epochs=1, batch_size=8, lr=1.0, momentum=0.0, weight_decay=0.0, warmup_epochs=0,
                         augment="none", grad_clip=clip)
    train_model(net, _split(), None, recipe, seed=0, quiet=True)
    after = torch.cat([p.detach().flatten() for p in net.parameters()])
    # one step of plain SGD at lr 1: the parameter change is the (clipped) gradient
    moved = float((after - before).norm())
    if clip:
        assert moved <= clip + 1e-4
    else:
        assert moved > 10 * 0.5  # unclipped, the same step is far larger


def test_default_recipe_clips_and_bad_clip_is_refused():
    assert TrainRecipe().grad_clip > 0
    with pytest.raises(ConfigError, match="grad clip"):
        TrainRecipe(grad_clip=-1).validate()
