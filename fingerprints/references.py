"""Reference models: independent models the owner trains itself, to keep fingerprints that only its copies share.

A fingerprint that an independent model also labels as intended is worth
nothing: it raises every negative's match rate, and the verification
threshold with it.  Owners can measure that before they ship: train a few
models of their own architecture from fresh initialisations on their own
train split (what an honest competitor would have), then steer the
characteristic examples away from them and drop the ones those models still
label as intended.  This is the "conferrable" idea of Lukas et al. (ICLR'21:
examples that transfer to surrogates of the owner but not to references);
here the surrogates are the RC/LTRC pruned copies and the references are
these models.

References steer the examples (a loss term pushes each one off its target),
so the ones they steered say little about transfer afterwards: every kept
example misses them by construction.  ``reference_holdout`` trains further
references that only filter, an unsteered estimate of which examples an
independent model still labels as intended.

The references are the owner's own: they are trained here from the owner's
architecture (a deep copy with every parameter re-initialised under its own
seed) on the source's train split, never taken from a suspect zoo, so the
zoo's negatives stay unseen by the generator.
"""

from __future__ import annotations

import copy

import torch

from suite.core.config import TrainRecipe
from suite.core.training import train_model

REFERENCE_SEED_OFFSET = 104_729
"""Added to the fingerprint seed: reference seeds stay far from the small seeds zoo negatives use."""


def reinitialised(owner: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A deep copy of ``owner`` with every parameter and BN statistic re-initialised under ``seed``.

    Modules without ``reset_parameters`` (activations, pools, containers)
    hold no parameters of their own; a parameter no module can reset is an
    error rather than a silently copied owner weight.
    """
    model = copy.deepcopy(owner).cpu()
    reset = set()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for mod in model.modules():
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()
                reset.update(id(p) for p in mod.parameters(recurse=False))
    leftover = [n for n, p in model.named_parameters() if id(p) not in reset]
    if leftover:
        raise ValueError(f"cannot re-initialise parameters {leftover[:3]} of {type(owner).__name__}: "
                         "their module has no reset_parameters()")
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def train_references(owner: torch.nn.Module, source, count: int, epochs: int, seed: int,
                     device: str) -> list[torch.nn.Module]:
    """``count`` models of the owner's architecture trained from scratch for ``epochs`` on ``source.train``.

    SGD with Nesterov momentum, peak lr 0.05, cosine schedule, random shifts
    (:func:`suite.core.training.train_model`); reference ``i`` is initialised
    and ordered by ``seed + REFERENCE_SEED_OFFSET + i``.  Returned in eval
    mode with gradients off.
    """
    recipe = TrainRecipe(epochs=epochs, batch_size=64, lr=0.05, augment="shift")
    out = []
    for i in range(count):
        s = seed + REFERENCE_SEED_OFFSET + i
        model = reinitialised(owner, s)
        train_model(model, source.train, None, recipe, seed=s, device=device, quiet=True,
                    desc=f"reference {i + 1}/{count}")
        for p in model.parameters():
            p.requires_grad_(False)
        out.append(model.eval())
    return out
