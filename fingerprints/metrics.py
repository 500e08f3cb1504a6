"""Verification metrics over match rates: ROC, AUC, TPR at a fixed FPR, threshold calibration, p-values.

Scores are match rates in [0, 1] (higher = more like the owner).  A model is
flagged *derived* when its score is ``>= threshold``.

* :func:`roc_curve` / :func:`auc`: the usual ROC over positives and negatives;
  ties between a positive and a negative count one half (Mann-Whitney).
* :func:`tpr_at_fpr`: the largest TPR reachable with FPR <= ``max_fpr`` on the
  given negatives (with fewer than ``1 / max_fpr`` negatives that means: no
  negative may be flagged).
* :func:`split_negatives`: a seeded half/half split of the negatives
  (stratified by origin when origins are given); the threshold is calibrated
  on the first half only and false positives are counted on the second.
* :func:`calibrate_threshold`: the smallest match count ``k`` (out of ``n``
  queries) whose upper-tail probability under a beta-binomial fitted to the
  calibration negatives is ``<= target_fpr`` **and** that is above every
  calibration negative; returned as the rate ``k / n``.
* :func:`p_value`: probability that an independent model matches at least
  ``k`` of ``n`` fingerprints, under the beta-binomial fitted to the negatives
  (``p_value_empirical`` is the plain rank ``(1 + #{neg >= rate}) / (1 + #neg)``).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy import stats


def roc_curve(pos: Sequence[float], neg: Sequence[float]) -> tuple[list[float], list[float], list[float]]:
    """``(fpr, tpr, thresholds)``: one point per distinct score (flag when ``score >= t``), from (0, 0) to (1, 1)."""
    pos_a, neg_a = np.asarray(pos, float), np.asarray(neg, float)
    thresholds = sorted(set(pos_a.tolist()) | set(neg_a.tolist()), reverse=True)
    fpr, tpr, ths = [0.0], [0.0], [math.inf]
    for t in thresholds:
        fpr.append(float((neg_a >= t).mean()) if len(neg_a) else 0.0)
        tpr.append(float((pos_a >= t).mean()) if len(pos_a) else 0.0)
        ths.append(float(t))
    if fpr[-1] != 1.0 or tpr[-1] != 1.0:
        fpr.append(1.0)
        tpr.append(1.0)
        ths.append(-math.inf)
    return fpr, tpr, ths


def auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(score(pos) > score(neg)) + 0.5 P(equal); NaN when either side is empty."""
    pos_a, neg_a = np.asarray(pos, float), np.asarray(neg, float)
    if not len(pos_a) or not len(neg_a):
        return float("nan")
    greater = (pos_a[:, None] > neg_a[None, :]).sum()
    equal = (pos_a[:, None] == neg_a[None, :]).sum()
    return float((greater + 0.5 * equal) / (len(pos_a) * len(neg_a)))


def tpr_at_fpr(pos: Sequence[float], neg: Sequence[float], max_fpr: float = 0.01) -> float:
    """Largest TPR over thresholds whose FPR on ``neg`` is ``<= max_fpr``."""
    fpr, tpr, _ = roc_curve(pos, neg)
    return float(max(t for f, t in zip(fpr, tpr) if f <= max_fpr + 1e-12))


def split_negatives(ids: Sequence[str], seed: int = 0,
                    groups: Mapping[str, str] | None = None) -> tuple[list[str], list[str]]:
    """Seeded split of negative ids into (calibration, evaluation) halves.

    Sorting first makes the split independent of the order the zoo listed
    them in; the calibration half gets ``floor(n / 2)``.

    groups: id -> stratum (a negative's origin: seed, same-recipe, foreign...).
        When given, each stratum is shuffled on its own and the strata are
        dealt out alternately (evaluation first), so every origin with two or
        more members sits on both sides: the threshold is calibrated against
        each kind of independent model, and each kind is also held out.
    """
    ordered = sorted(ids)
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(len(ordered))
        half = len(ordered) // 2
        return [ordered[i] for i in perm[:half]], [ordered[i] for i in perm[half:]]
    dealt: list[str] = []
    for stratum in sorted({groups.get(i, "") for i in ordered}):
        members = [i for i in ordered if groups.get(i, "") == stratum]
        dealt.extend(members[j] for j in rng.permutation(len(members)))
    return dealt[1::2], dealt[0::2]


def fit_beta_binomial(rates: Sequence[float], n: int) -> tuple[float, float]:
    """Method-of-moments ``(alpha, beta)`` of a beta-binomial for match counts ``rate * n``.

    One pseudo-observation at rate 0.5 / n smooths an all-zero sample (so the
    fit never says a match is impossible); under-dispersed samples fall back to
    a nearly binomial fit (``alpha + beta = 1e4``).
    """
    r = np.asarray(list(rates) + [0.5 / max(1, n)], float)
    mean = float(np.clip(r.mean(), 1e-6, 1 - 1e-6))
    var = float(r.var(ddof=1)) if len(r) > 1 else 0.0
    binom_var = mean * (1 - mean) / max(1, n)
    # var of the rate = mean (1 - mean) / n * (1 + (n - 1) rho), rho = 1 / (alpha + beta + 1)
    if n <= 1 or var <= binom_var:
        total = 1e4
    else:
        rho = min(0.999, (var / binom_var - 1) / (n - 1))
        total = max(1e-3, 1.0 / rho - 1.0)
    return mean * total, (1 - mean) * total


def tail_probability(k: int, n: int, alpha: float, beta: float) -> float:
    """P(X >= k) for X ~ BetaBinomial(n, alpha, beta)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return float(stats.betabinom.sf(k - 1, n, alpha, beta))


def calibrate_threshold(calibration_rates: Sequence[float], n: int, target_fpr: float = 0.01) -> float:
    """Match-rate threshold from the calibration negatives only (see module docstring)."""
    if n <= 0:
        return 1.0
    a, b = fit_beta_binomial(calibration_rates, n)
    above = max((int(round(r * n)) for r in calibration_rates), default=-1) + 1
    for k in range(max(1, above), n + 1):
        if tail_probability(k, n, a, b) <= target_fpr:
            return k / n
    return 1.0


def p_value(rate: float, n: int, negative_rates: Sequence[float]) -> float:
    """P(an independent model matches >= rate * n of n fingerprints), beta-binomial fit to the negatives."""
    a, b = fit_beta_binomial(negative_rates, n)
    return tail_probability(int(round(rate * n)), n, a, b)


def p_value_empirical(rate: float, negative_rates: Sequence[float]) -> float:
    """``(1 + #{negatives with rate >= rate}) / (1 + #negatives)``."""
    neg = np.asarray(negative_rates, float)
    return float((1 + (neg >= rate - 1e-12).sum()) / (1 + len(neg)))
