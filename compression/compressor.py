"""Weight-level compressors: a scheme applied per layer, then accuracy recovery.

``WeightPruning`` is the object behind the ``unstructured``, ``block``,
``block-punched``, ``pattern`` and ``nm`` registry entries (and, with a
mapped plan, behind ``auto``).  It is built from settings only; the trained
model and the source arrive at :meth:`compress`.  The dense input model is
never modified (a copy is pruned).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import nn

from compression.base import CompressionResult
from compression.layers import LayerInfo, list_layers, prunable_layers
from compression.masks import MaskSet, weight_sparsity
from compression.plan import LayerPlan, Plan
from compression.recovery import METHODS as RECOVERY_METHODS
from compression.recovery import RecoveryConfig, admm, gradual, oneshot
from compression.schemes import make_scheme
from compression.schemes.base import CompactLayer
from suite.core.errors import ConfigError
from suite.core.settings import Field, SettingsSpec
from suite.core.sources.base import ImageSource
from suite.core.training import accuracy

RECOVERY_KEYS = {f for f in RecoveryConfig.__dataclass_fields__} - {"method"}
# The settings of a weight-level compressor; the scheme's own settings (r, c, n, m...) are added per
# scheme and checked by the scheme itself.  Recovery knobs left unset keep RecoveryConfig's/the profile's.
WEIGHT_PRUNING = SettingsSpec({
    "sparsity": Field(0.0, float, ge=0, lt=1, doc="fraction of the prunable layers' weights removed"),
    "recovery": Field("oneshot", str, choices=RECOVERY_METHODS),
    "keep_first": Field(True, bool), "keep_classifier": Field(True, bool),
    "scope": Field("layer", str, choices=("layer", "global")),
    "epochs": Field(None, int, optional=True, ge=0), "lr": Field(None, float, optional=True, gt=0),
    "batch_size": Field(None, int, optional=True, gt=0), "ramp": Field(None, float, optional=True, gt=0, le=1),
    "admm_epochs": Field(None, int, optional=True, ge=0), "rho": Field(None, float, optional=True, gt=0),
    "rho_growth": Field(None, float, optional=True, ge=1), "update_every": Field(None, int, optional=True, ge=1),
})


def weight_pruning_spec(scheme: str) -> SettingsSpec:
    """:data:`WEIGHT_PRUNING` plus scheme ``scheme``'s settings (values checked by the scheme)."""
    from compression.schemes import accepted_settings

    return WEIGHT_PRUNING.extend(owner=scheme, **{k: Field(None, object) for k in accepted_settings(scheme)})


PROFILE_EPOCHS = {"default": 10, "full": 10, "smoke": 1}
PROFILE_ADMM_EPOCHS = {"default": 6, "full": 6, "smoke": 1}


def split_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Split compress-args into (recovery settings, general settings, scheme settings)."""
    recovery = {k: settings[k] for k in settings if k in RECOVERY_KEYS or k == "recovery"}
    general_keys = {"keep_first", "keep_classifier", "scope"}
    general = {k: settings[k] for k in settings if k in general_keys}
    scheme = {k: v for k, v in settings.items() if k not in recovery and k not in general}
    return recovery, general, scheme


class WeightPruning:
    """Prune each prunable layer with one scheme (or follow a plan), then recover.

    sparsity: target fraction of the prunable layers' weights removed, in [0, 1).
    recovery: oneshot (default) | gradual | admm, with RecoveryConfig's knobs.
    keep_first / keep_classifier: keep the first conv / the classifier dense.
    scope: ``layer`` (every layer at the target) or ``global`` (unstructured
        only: one magnitude threshold across layers).
    Remaining settings go to the scheme (``r``, ``c``, ``entries``, ``n``...).
    """

    def __init__(self, scheme: str, sparsity: float = 0.0, *, recovery: str = "oneshot",
                 keep_first: bool = True, keep_classifier: bool = True, scope: str = "layer",
                 **settings: Any) -> None:
        settings = weight_pruning_spec(scheme).coerce_given(
            {"sparsity": sparsity, "recovery": recovery, "keep_first": keep_first, "keep_classifier": keep_classifier,
             "scope": scope, **{k: v for k, v in settings.items() if not (k in RECOVERY_KEYS and v is None)}})
        sparsity, recovery, keep_first, keep_classifier, scope = (
            settings.pop(k) for k in ("sparsity", "recovery", "keep_first", "keep_classifier", "scope"))
        if not 0.0 <= float(sparsity) < 1.0:
            raise ConfigError(f"sparsity must be in [0, 1), got {sparsity}")
        rec = {k: settings.pop(k) for k in list(settings) if k in RECOVERY_KEYS}
        self.recovery = RecoveryConfig(method=recovery, **rec)
        self.recovery.validate()
        self._epochs_set = "epochs" in rec
        self._admm_epochs_set = "admm_epochs" in rec
        if scope not in ("layer", "global"):
            raise ConfigError(f"scope must be 'layer' or 'global', got {scope!r}")
        if scope == "global" and scheme != "unstructured":
            raise ConfigError("scope=global is only defined for unstructured pruning")
        self.name = scheme
        self.scheme_name = scheme
        self.sparsity = float(sparsity)
        self.keep_first = bool(keep_first)
        self.keep_classifier = bool(keep_classifier)
        self.scope = scope
        self.scheme_settings = dict(settings)
        make_scheme(scheme, **self.scheme_settings)  # validate settings now, before any training

    # ------------------------------------------------------------- planning
    def uniform_plan(self, layers: list[LayerInfo], all_layers: list[LayerInfo]) -> Plan:
        from compression.mapping import uniform_plan

        return uniform_plan(all_layers, {l.name for l in layers}, self.scheme_name, self.scheme_settings,
                            self.sparsity)

    def plan_for(self, model: nn.Module, source: ImageSource, *, seed: int, device: str) -> Plan:
        layers = prunable_layers(model, source.shape, keep_first=self.keep_first,
                                 keep_classifier=self.keep_classifier)
        return self.uniform_plan(layers, list_layers(model, source.shape))

    # -------------------------------------------------------------- masking
    def mask_functions(self, model: nn.Module, plan: Plan, fraction: float = 1.0) -> dict[str, Any]:
        """Layer name -> ``f(weight) -> mask`` at ``fraction`` of each layer's target sparsity."""
        fns: dict[str, Any] = {}
        pruned = plan.pruned()
        if self.scope == "global" and pruned:
            from compression.schemes.unstructured import global_masks

            def global_fn(name: str):
                def fn(_w: torch.Tensor) -> torch.Tensor:
                    weights = {l.name: model.get_submodule(l.name).weight.detach() for l in pruned}
                    return global_masks(weights, self.sparsity * fraction)[name]
                return fn
            return {l.name: global_fn(l.name) for l in pruned}
        for l in pruned:
            scheme = make_scheme(l.scheme, **l.settings)
            if l.scheme == "nm" and fraction < 1.0:  # N:M has one fixed ratio: off until the ramp ends
                fns[l.name] = lambda w: torch.ones_like(w, dtype=torch.bool)
                continue
            fns[l.name] = (lambda s, t: (lambda w: s.mask(w, t)))(scheme, l.sparsity * fraction)
        return fns

    # ------------------------------------------------------------- compress
    def compress(self, model: nn.Module, source: ImageSource, *, seed: int, device: str = "cpu",
                 profile: str = "default", quiet: bool = True) -> CompressionResult:
        start = time.perf_counter()
        model = copy.deepcopy(model).to(device).eval()
        cfg = self.recovery
        if not self._epochs_set:
            cfg = RecoveryConfig(**{**cfg.__dict__, "epochs": PROFILE_EPOCHS.get(profile, cfg.epochs)})
        if not self._admm_epochs_set:
            cfg = RecoveryConfig(**{**cfg.__dict__, "admm_epochs": PROFILE_ADMM_EPOCHS.get(profile, cfg.admm_epochs)})
        plan = self.plan_for(model, source, seed=seed, device=device)
        acc_dense = accuracy(model, source.test, device=device)
        fns = self.mask_functions(model, plan)
        probe = copy.deepcopy(model)
        MaskSet({n: f(probe.get_submodule(n).weight.detach()) for n, f in fns.items()}).apply(probe)
        acc_before = accuracy(probe, source.test, device=device)
        del probe
        torch.manual_seed(seed)
        if cfg.method == "oneshot":
            masks, rec = oneshot(model, fns, source, cfg, seed=seed, device=device, quiet=quiet)
        elif cfg.method == "gradual":
            masks, rec = gradual(model, lambda frac: self.mask_functions(model, plan, frac), source, cfg,
                                 seed=seed, device=device, quiet=quiet)
        else:
            masks, rec = admm(model, fns, source, cfg, seed=seed, device=device, quiet=quiet)
        model.cpu().eval()
        compact = export_compact(model, plan, masks)
        info = summarize(model, source, plan, masks, self.sparsity, acc_dense, acc_before,
                         method=self.scheme_name, recovery=cfg, recovery_log=rec,
                         seconds=time.perf_counter() - start)
        return CompressionResult(model, info, plan=plan, masks=masks, compact=compact)


def export_compact(model: nn.Module, plan: Plan, masks: MaskSet) -> dict[str, CompactLayer]:
    """Compact form of every pruned layer, checked against its scheme's invariant."""
    out: dict[str, CompactLayer] = {}
    for l in plan.pruned():
        scheme = make_scheme(l.scheme, **l.settings)
        w = model.get_submodule(l.name).weight.detach().cpu()
        m = masks[l.name].cpu()
        scheme.verify(m)
        out[l.name] = scheme.to_compact(w, m)
    return out


def effective_macs(model: nn.Module, layers: list[LayerInfo]) -> int:
    """MACs per image counting only nonzero weights of conv/linear layers."""
    total = 0
    for l in layers:
        w = model.get_submodule(l.name).weight
        density = float((w != 0).sum()) / w.numel()
        total += int(round(l.macs * density))
    return total


def summarize(model: nn.Module, source: ImageSource, plan: Plan, masks: MaskSet, target: float,
              acc_dense: float, acc_before: float, *, method: str, recovery: RecoveryConfig,
              recovery_log: dict, seconds: float) -> dict[str, Any]:
    """The ``compression`` section of the result record."""
    from suite.core.zoo.profile import count_params

    all_layers = list_layers(model, source.shape)
    dense_macs = sum(l.macs for l in all_layers)
    eff_macs = effective_macs(model, all_layers)
    prunable = [l for l in plan.layers if l.decision.counts_toward_sparsity]
    scheme_layers = [l.name for l in plan.pruned()]
    zeros = sum(int((model.get_submodule(l.name).weight == 0).sum()) for l in all_layers)
    per_layer = []
    for l in plan.layers:
        w = model.get_submodule(l.name).weight
        per_layer.append({"name": l.name, "scheme": l.scheme, "block": _block_of(l),
                          "target_sparsity": round(l.sparsity, 6),
                          "sparsity": round(float((w == 0).sum()) / w.numel(), 6),
                          "decision": l.decision.value, "reason": l.reason, "latency_ms": l.latency_ms})
    return {
        "method": method,
        "scheme": method,
        "recovery": recovery.method,
        "recovery_settings": {k: v for k, v in recovery.__dict__.items()},
        "target_sparsity": target,
        "sparsity": target,
        "achieved_sparsity": round(weight_sparsity(model, [l.name for l in prunable]), 6),
        "achieved_sparsity_scheme_layers": round(weight_sparsity(model, scheme_layers), 6) if scheme_layers else 0.0,
        "fallback_layers": [l.name for l in plan.layers if l.decision.fallback],
        "params": count_params(model) - zeros,
        "params_dense": count_params(model),
        "macs": eff_macs,
        "macs_dense": dense_macs,
        "macs_ratio": round(eff_macs / dense_macs, 6) if dense_macs else 1.0,
        "acc_dense": acc_dense,
        "acc_pruned_before_finetune": acc_before,
        "recovery_log": recovery_log,
        "per_layer": per_layer,
        "schemes_used": plan.schemes_used(),
        "seconds": round(seconds, 3),
    }


def _block_of(l: LayerPlan) -> Any:
    s = l.settings
    if "r" in s and "c" in s:
        return [s["r"], s["c"]]
    if "n" in s and "m" in s:
        return f"{s['n']}:{s['m']}"
    if "entries" in s:
        return f"{s['entries']}/9"
    return None
