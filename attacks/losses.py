"""Losses that universal attacks minimise, on logits ``[N, K]``."""

from __future__ import annotations

import torch


def margin_loss(logits: torch.Tensor, labels: torch.Tensor, target: int | None = None,
                kappa: float = 5.0) -> torch.Tensor:
    """Mean clamped logit margin to minimise (a scalar).

    Untargeted: ``z[label] - max_{j != label} z[j]`` (negative once fooled),
    clamped below at ``-kappa`` so already-fooled images stop dominating.
    Targeted: ``max_{j != t} z[j] - z[t]``, clamped the same way.
    ``labels`` are the clean *predictions* (fooling is relative to them).
    """
    k = logits.shape[1]
    if target is None:
        own = logits.gather(1, labels.view(-1, 1)).squeeze(1)
        others = logits.masked_fill(torch.nn.functional.one_hot(labels, k).bool(), float("-inf")).amax(1)
        margin = own - others
    else:
        own = logits[:, target]
        others = logits.clone()
        others[:, target] = float("-inf")
        margin = others.amax(1) - own
    return margin.clamp_min(-kappa).mean()

