"""What was decided for one layer, as a value (the human ``reason`` text is only for people).

Every per-layer entry that explains itself -- a :class:`compression.plan.LayerPlan`
(``plan.json``), the ``per_layer`` rows of a record's compression section, and
the layers of a TVM deployment manifest -- carries ``decision`` (the enum's
string value in JSON) beside its free-text ``reason``.  Code decides from the
decision; the reason is never parsed, except once, in :func:`legacy_decision`,
for plans written before the field existed.

Plan-time decisions (made by the compressor / scheme mapping):

=====================  =======================================================
pruned                 the layer's scheme was applied
kept_dense_by_plan     first conv / classifier kept dense (keep_first,
                       keep_classifier): outside the prunable set, so it does
                       not count toward ``achieved_sparsity``
unsupported            the scheme cannot apply to the layer's shape (pattern
                       on 1x1, N:M when M does not divide K ...): a fallback
dense_by_rule          the rule mapper left it dense (depth-wise, too small)
dense_by_search        the search picked dense as the best candidate
no_candidate           prunable, but the search measured no candidate for it
=====================  =======================================================

Deployment-time decisions (made by the TVM compiler, per conv):

=====================  =======================================================
sparse_kernel          compiled with the compact (sparse) kernel
no_sparsity            dense weights: nothing to skip
too_dense              density rule without measurements: kept fraction too high
slower_than_dense      the compact kernel was not faster than dense: a fallback
default_lowering       depth-wise / linear layer: TVM's default lowering measured
                       faster than our kernel, so it keeps that (not a fallback)
=====================  =======================================================
"""

from __future__ import annotations

from enum import Enum


class LayerDecision(str, Enum):
    """One layer's decision (see the module docstring); the value is what JSON holds."""

    PRUNED = "pruned"
    KEPT_DENSE_BY_PLAN = "kept_dense_by_plan"
    UNSUPPORTED = "unsupported"
    DENSE_BY_RULE = "dense_by_rule"
    DENSE_BY_SEARCH = "dense_by_search"
    NO_CANDIDATE = "no_candidate"
    SPARSE_KERNEL = "sparse_kernel"
    NO_SPARSITY = "no_sparsity"
    TOO_DENSE = "too_dense"
    SLOWER_THAN_DENSE = "slower_than_dense"
    DEFAULT_LOWERING = "default_lowering"

    @property
    def counts_toward_sparsity(self) -> bool:
        """Whether the layer belongs to the prunable set ``achieved_sparsity`` is measured over."""
        return self is not LayerDecision.KEPT_DENSE_BY_PLAN

    @property
    def fallback(self) -> bool:
        """Whether the layer fell back to dense against the intent (scheme not applicable, or not faster)."""
        return self in (LayerDecision.UNSUPPORTED, LayerDecision.SLOWER_THAN_DENSE)

    def __str__(self) -> str:
        return self.value


def kept_dense_reason(first: bool) -> str:
    """The human reason of a :attr:`LayerDecision.KEPT_DENSE_BY_PLAN` layer."""
    return "first layer kept dense" if first else "classifier kept dense"


def legacy_decision(scheme: str, reason: str | None) -> LayerDecision:
    """LEGACY: the decision of a plan layer written before ``decision`` existed, from its reason text.

    The only place the reason text is read; used by :meth:`compression.plan.Plan.from_dict`
    for old ``plan.json`` files.  New code sets the decision where it decides.
    """
    text = reason or ""
    if scheme != "dense":
        return LayerDecision.PRUNED
    if text.endswith("kept dense"):
        return LayerDecision.KEPT_DENSE_BY_PLAN
    if text.startswith("fallback"):
        return LayerDecision.UNSUPPORTED
    if text.startswith("rule:"):
        return LayerDecision.DENSE_BY_RULE
    if text.startswith("search:"):
        return LayerDecision.DENSE_BY_SEARCH
    if text == "no applicable candidate":
        return LayerDecision.NO_CANDIDATE
    return LayerDecision.DENSE_BY_RULE  # some other dense layer of the prunable set: counted, not a fallback
