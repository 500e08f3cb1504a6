"""Batch-norm statistics re-estimation (what any pruner does before evaluating a pruned copy)."""

from __future__ import annotations

import numpy as np
import torch


def recalibrate_bn(model: torch.nn.Module, source, images: int, seed: int) -> torch.nn.Module:
    """Re-estimate every BatchNorm's running statistics on ``images`` train images of ``source``.

    In place, no weight changes; the model is returned in eval mode.  A
    network pruned past ~50% without this answers one class for everything,
    because its activations no longer match the stored statistics.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns or images <= 0:
        return model.eval()
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    idx = np.sort(np.random.default_rng(seed).permutation(len(source.train))[:images])
    x, _ = source.train.tensors(idx)
    device = next(model.parameters()).device
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 128):
            if len(x[i:i + 128]) > 1:
                model(x[i:i + 128].to(device))
    for m, momentum in saved:
        m.momentum = momentum
    return model.eval()
