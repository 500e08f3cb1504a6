"""Peer baselines: a SAC-style sample-correlation fingerprint and a UAP-based fingerprint.

``sac-w`` / ``sac-m`` (in the spirit of SAC, Guan et al. NeurIPS'22; our
reading, not their code).  The owner's sample set is ``count`` inputs:
images the owner misclassifies (``sac-w``, drawn like :class:`Misclassified`)
or CutMix images (``sac-m``: a random box of one test image pasted into
another, area ``U(0.2, 0.6)``).  A model's *correlation matrix* over the set
is the cosine similarity of its output vectors ``o_i``:
``C[i, j] = <o_i, o_j> / (|o_i| |o_j|)``.  The suspect's score is::

    score = 1 - mean_{i != j} |C_suspect[i, j] - C_owner[i, j]|     in [0, 1]

Higher = more like the owner (derived), the same direction as every other
method's match rate; per-sample scores are the row means, so the rate is
their mean.  Outputs are nonnegative (softmax probabilities, or one-hot
labels), so every cosine lies in [0, 1] and so does the score.

* ``access=label`` (the default everywhere, and what a deployed app usually
  gives): ``o_i`` is the one-hot top-1 label, so ``C[i, j] = 1`` iff the two
  samples get the same label: SAC reduced to "which samples does the model
  group together".  The owner's reference needs only its labels ``y``.
* ``access=prob``: ``o_i`` is the softmax vector, SAC's own setting; the
  owner's probabilities are stored with the set (``meta["reference"]``).

The count of queries is ``count``.  The audit's beta-binomial p-value treats
``score * n`` as a match count, an approximation for a continuous score.

``uap`` (after Peng et al., CVPR'22, simplified: no contrastive encoder).
``uaps`` universal perturbations are crafted on the owner alone (sign-gradient
ascent of the owner's cross-entropy on its own labels, L-inf ``eps``, each on
its own seeded batch of train images).  Fingerprints are validation images
plus one of those UAPs that the owner's label *changes* on: the owner's
fooling pattern (which images a UAP flips, and to which class).  A suspect
matches a fingerprint when it gives the same perturbed label.  Universal
perturbations transfer between models trained on the same data, which is the
weakness this baseline is there to measure.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from fingerprints.base import COUNT, SPLIT, FingerprintMethod
from fingerprints.generators import Misclassified, owner_labels
from suite.core.settings import Field, SettingsSpec

SCORING_CORRELATION = "correlation"


# ----------------------------------------------------------- correlation
def correlation_matrix(outputs: torch.Tensor) -> torch.Tensor:
    """``[N, N]`` cosine similarity of the rows of ``outputs`` ``[N, K]`` (nonnegative rows -> values in [0, 1])."""
    o = outputs.float()
    o = o / o.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (o @ o.T).clamp(0.0, 1.0)


def correlation_scores(suspect_outputs: torch.Tensor, owner_outputs: torch.Tensor) -> list[float]:
    """Per-sample ``1 - mean_{j != i} |C_s[i, j] - C_o[i, j]|``; their mean is the SAC-style score in [0, 1]."""
    cs, co = correlation_matrix(suspect_outputs), correlation_matrix(owner_outputs)
    n = cs.shape[0]
    if n < 2:
        return [1.0] * n
    diff = (cs - co).abs()
    diff.fill_diagonal_(0.0)
    rows = 1.0 - diff.sum(1) / (n - 1)
    return [float(v) for v in rows.clamp(0.0, 1.0)]


def suspect_outputs(logits: torch.Tensor, access: str) -> torch.Tensor:
    """What the suspect reveals: one-hot top-1 labels (``label``) or softmax probabilities (``prob``)."""
    if access == "label":
        return F.one_hot(logits.argmax(1), logits.shape[1]).float()
    return torch.softmax(logits.float(), 1)


def owner_outputs(fps, access: str, num_classes: int) -> torch.Tensor:
    """The owner's side of the comparison: one-hot of ``fps.y`` or the stored probabilities."""
    if access == "label" or "reference" not in fps.meta:
        return F.one_hot(fps.y, num_classes).float()
    return torch.tensor(fps.meta["reference"], dtype=torch.float32)


class _Correlation(FingerprintMethod):
    """Shared by ``sac-w`` / ``sac-m``: store the owner's probabilities and mark the set for correlation scoring."""

    def _finish(self, owner, x: torch.Tensor, meta: dict[str, Any], device: str):
        with torch.no_grad():
            logits = torch.cat([owner(x[i:i + 256].to(device)).cpu() for i in range(0, len(x), 256)]) \
                if len(x) else torch.zeros(0, 1)
        probs = torch.softmax(logits, 1)
        meta = {**meta, "scoring": SCORING_CORRELATION, "num_classes": int(logits.shape[1]),
                "reference": [[round(float(v), 6) for v in row] for row in probs]}
        return x, logits.argmax(1), meta


class SACW(_Correlation, Misclassified):
    """SAC-w style: correlation of outputs over inputs the owner misclassifies (see the module docstring)."""

    name = "sac-w"
    SETTINGS = Misclassified.SETTINGS

    def _generate(self, owner, source, *, seed, device):
        x, _y, meta = Misclassified._generate(self, owner, source, seed=seed, device=device)
        return self._finish(owner, x, meta, device)


class SACM(_Correlation):
    """SAC-m style: correlation of outputs over CutMix images of a split (see the module docstring).

    count: samples; split: where the images come from; area: range of the pasted box's area fraction.
    """

    name = "sac-m"
    SETTINGS = SettingsSpec({
        "count": COUNT, "split": Field("test", str, choices=SPLIT),
        "area_min": Field(0.2, float, gt=0, lt=1), "area_max": Field(0.6, float, gt=0, le=1),
    }, profiles={"smoke": {"count": 16}})

    def _generate(self, owner, source, *, seed, device):
        gen = torch.Generator().manual_seed(seed)
        x_all, _ = source.split(self.split).tensors()
        n, (_, h, w) = self.count, x_all.shape[1:]
        a = x_all[torch.randint(0, len(x_all), (n,), generator=gen)]
        b = x_all[torch.randint(0, len(x_all), (n,), generator=gen)]
        out = a.clone()
        for i in range(n):
            area = self.area_min + (self.area_max - self.area_min) * float(torch.rand(1, generator=gen))
            bh, bw = max(1, int(round(h * math.sqrt(area)))), max(1, int(round(w * math.sqrt(area))))
            top = int(torch.randint(0, h - bh + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - bw + 1, (1,), generator=gen))
            out[i, :, top:top + bh, left:left + bw] = b[i, :, top:top + bh, left:left + bw]
        return self._finish(owner, out, {"requested": n, "kept": n, "split": self.split}, device)


# ------------------------------------------------------------------- UAP
def craft_uap(owner, x: torch.Tensor, eps: float, steps: int, step_size: float, batch_size: int,
              gen: torch.Generator, device: str) -> torch.Tensor:
    """One universal perturbation ``[C, H, W]`` (L-inf ``eps``) maximising the owner's loss on its own labels."""
    labels = owner_labels(owner, x.to(device)).cpu()
    delta = torch.zeros(x.shape[1:], device=device)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=gen)
        d = delta.clone().requires_grad_(True)
        loss = F.cross_entropy(owner((x[idx].to(device) + d).clamp(0.0, 1.0)), labels[idx].to(device))
        grad, = torch.autograd.grad(loss, d)
        delta = (delta + step_size * grad.sign()).clamp(-eps, eps)
    return delta.detach().cpu()


class UAPFingerprint(FingerprintMethod):
    """UAP-based fingerprint: the owner's UAP fooling pattern (see the module docstring).

    count: fingerprints (queries) requested; uaps: universal perturbations; eps: their L-inf bound;
    steps / step_size / batch_size: their crafting; craft_images: train images each UAP is crafted on;
    split: where the fingerprint images come from.
    """

    name = "uap"
    SETTINGS = SettingsSpec({
        "count": COUNT, "uaps": Field(5, int, ge=1, le=100), "eps": Field(0.2, float, gt=0, le=1),
        "steps": Field(150, int, ge=1), "step_size": Field(0.01, float, gt=0),
        "batch_size": Field(64, int, ge=2), "craft_images": Field(512, int, ge=8),
        "split": Field("val", str, choices=SPLIT),
    }, profiles={"smoke": {"count": 16, "uaps": 2, "steps": 20, "craft_images": 64}})

    def _generate(self, owner, source, *, seed, device):
        gen = torch.Generator().manual_seed(seed)
        x_train, _ = source.train.tensors()
        x_img, _ = source.split(self.split).tensors()
        clean = owner_labels(owner, x_img.to(device)).cpu()
        per = math.ceil(self.count / self.uaps)
        xs, ys, rates = [], [], []
        for k in range(self.uaps):
            pick = torch.randperm(len(x_train), generator=gen)[:self.craft_images]
            v = craft_uap(owner, x_train[pick], self.eps, self.steps, self.step_size, self.batch_size, gen, device)
            pert = (x_img + v).clamp(0.0, 1.0)
            lab = owner_labels(owner, pert.to(device)).cpu()
            fooled = torch.nonzero(lab != clean)[:, 0]
            rates.append(round(len(fooled) / max(1, len(x_img)), 4))
            chosen = fooled[torch.randperm(len(fooled), generator=gen)[:per]]
            xs.append(pert[chosen])
            ys.append(lab[chosen])
        x = torch.cat(xs)[:self.count]
        y = torch.cat(ys)[:self.count]
        return x, y, {"requested": self.count, "kept": int(len(y)), "uap_fooling_rates": rates,
                      "targets_per_class": torch.bincount(y, minlength=int(source.num_classes)).tolist()}
