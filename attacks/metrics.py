"""Attack metrics, each under its own name (see ``../shared/NOTES.md`` section 3).

For clean inputs ``x`` with labels ``y``, clean predictions ``p = f(x)`` and
adversarial predictions ``q = f(clip(x + v))``:

fooling_rate            mean(q != p) over all images
asr                     attack success rate: mean(q != y) over images with p == y
misclassification_rate  mean(q != y) over all images
targeted_success        mean(q == t) over images with y != t (targeted only)
robust_acc              mean(q == y) (per-image attacks)
achieved_norm           max over images of the norm of the perturbation that
                        really reached the model: ``clip(x + v) - x``
"""

from __future__ import annotations

import torch

from attacks.norms import apply_perturbation, norms_of
from attacks.victim import Model, labels_of


def label_metrics(clean: torch.Tensor, adv: torch.Tensor, y: torch.Tensor,
                  target: int | None = None) -> dict[str, float]:
    """Metrics from clean / adversarial top-1 labels ``[N]`` and true labels ``[N]``."""
    n = max(1, len(y))
    correct = clean == y
    out = {
        "fooling_rate": float((adv != clean).sum()) / n,
        "asr": float((adv[correct] != y[correct]).sum()) / max(1, int(correct.sum())),
        "misclassification_rate": float((adv != y).sum()) / n,
        "clean_acc": float(correct.sum()) / n,
        "robust_acc": float((adv == y).sum()) / n,
        "n_images": float(len(y)),
    }
    if target is not None:
        eligible = y != target
        out["targeted_success"] = float((adv[eligible] == target).sum()) / max(1, int(eligible.sum()))
    return out


def evaluate_perturbation(model: Model, v: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *,
                          norm: str = "linf", target: int | None = None,
                          clean_labels: torch.Tensor | None = None) -> dict[str, float]:
    """Metrics of a universal perturbation ``v`` ``[C, H, W]`` on held-out ``(x, y)``.

    Queries ``model`` through labels only (works for black-box deployments).
    ``clean_labels`` may pass precomputed clean predictions to save queries.
    """
    with torch.no_grad():
        adv_x = apply_perturbation(x, v)
        clean = labels_of(model, x) if clean_labels is None else clean_labels
        adv = labels_of(model, adv_x)
        out = label_metrics(clean, adv, y, target)
        out["achieved_norm"] = float(norms_of(adv_x - x, norm).max()) if len(x) else 0.0
    return out
