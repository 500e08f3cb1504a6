"""Per-layer scheme mapping: choose (scheme, block size, ratio) for every layer.

Both mappers are our own design (the papers' exact rules and search are not
public).

``rule``: from layer type and shape only --
  * first conv / classifier: dense (keep-dense rules); depth-wise convs: dense
    (one weight row per channel: no GEMM to compress);
  * 3x3 convs with at least ``punch_min_channels`` input channels:
    ``block-punched`` 8x4 (a kernel position shared by 8 filters x 4 channels
    keeps SIMD lanes full); narrower 3x3 convs: ``pattern`` (4-entry library);
  * 1x1 convs and linear layers with K >= 16: ``block`` 8x16; else dense;
  * ratios scale with layer size (bigger layers prune more):
    ``keep_l ~ (P_l / mean P)^-gamma``, rescaled so the pruned weights add up to
    the target over the prunable layers, clipped to ``[0, max_ratio]``.

``search``: for every layer and candidate (scheme, settings, ratio) --
  * latency: measured per layer on the deployment's kernels -- by default our
    TVM kernels with the candidate's real mask packed as the compiler packs it
    (:mod:`compression.tvm_backend.latency_table`); ``latency_backend=
    "torch-gemm-proxy"`` uses the PyTorch proxy of :mod:`compression.latency`.
    On the TVM table a candidate that does not measure faster than the
    layer's dense kernel is dropped: the planner never picks a scheme the
    deployment would not accelerate (counted in ``search["not_accelerated"]``);
  * accuracy sensitivity: increase of validation cross-entropy when only that
    layer is pruned one-shot with that candidate (real masks, so the real
    granularity counts);
  then a Lagrangian relaxation picks, for a multiplier ``lam``, each layer's
  candidate minimising ``sensitivity + lam * cost`` (cost = -pruned weights
  for a sparsity target, latency for a latency target); ``lam`` is bisected to
  just meet the target, and a seeded evolutionary refinement (single-layer
  mutations, feasibility kept) lowers the summed sensitivity further.  A small
  latency term breaks ties towards faster kernels.  Deterministic given the seed.
  The plan is then checked against rival plans fitted to the same target on
  the same table (uniform block, the rule plan) by a short masked fine-tuning
  trial each, and the best on validation data is kept
  (:mod:`compression.plan_selection`; ``trial_images=0`` skips the check).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compression import latency as lat
from compression.decisions import LayerDecision, kept_dense_reason
from compression.layers import LayerInfo, list_layers
from compression.plan import LayerPlan, Plan
from compression.schemes import make_scheme
from suite.core.runtime import active as active_runtime
from suite.core.errors import ConfigError
from suite.core.sources.base import ImageSource

MAPPINGS = ("rule", "search")
LATENCY_BACKENDS = ("tvm-kernels", "torch-gemm-proxy")
PROFILE_LATENCY_GRID = {"smoke": 4}  # TVM table: kept columns timed at K/4 steps in smoke runs (K/16 otherwise)
DEFAULT_RATIOS = (0.5, 0.6, 0.7, 0.8, 0.875, 0.9, 0.95)
DEFAULT_CANDIDATES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("block", {"r": 8, "c": 16}),
    ("block-punched", {"r": 8, "c": 4}),
    ("pattern", {"entries": 4}),
    ("nm", {"n": 2, "m": 4}),
    ("nm", {"n": 1, "m": 4}),
)


@dataclass
class Candidate:
    """One option for one layer, with its measured scores."""

    scheme: str
    settings: dict[str, Any]
    sparsity: float
    pruned: int  # weights removed (from the real mask)
    latency_ms: float
    sensitivity: float


# ------------------------------------------------------------------ rule
def rule_plan(layers: list[LayerInfo], prunable: set[str], target: float, *, gamma: float = 0.5,
              max_ratio: float = 0.95, punch_min_channels: int = 16) -> Plan:
    """Rule-based plan at overall weight sparsity ``target`` over the mapped layers."""
    decisions: list[LayerPlan] = []
    mapped: list[tuple[LayerPlan, LayerInfo]] = []
    for l in layers:
        if l.name not in prunable:
            decisions.append(LayerPlan(l.name, "dense", reason=kept_dense_reason(l.first),
                                       decision=LayerDecision.KEPT_DENSE_BY_PLAN))
            continue
        choice = _rule_choice(l, punch_min_channels)
        if choice is None:
            decisions.append(LayerPlan(l.name, "dense", reason="rule: depth-wise or too small to pay",
                                       decision=LayerDecision.DENSE_BY_RULE))
            continue
        scheme, settings = choice
        reason = make_scheme(scheme, **settings).check_applicable(l.weight_shape)
        if reason:
            decisions.append(LayerPlan(l.name, "dense", reason=f"fallback to dense: {reason}",
                                       decision=LayerDecision.UNSUPPORTED))
            continue
        lp = LayerPlan(l.name, scheme, 0.0, settings=make_scheme(scheme, **settings).settings())
        decisions.append(lp)
        mapped.append((lp, l))
    ratios = size_scaled_ratios([l.numel for _, l in mapped], target, gamma, max_ratio)
    for (lp, l), s in zip(mapped, ratios):
        lp.sparsity = float(s)
        if lp.scheme == "nm":  # fixed ratio schemes are not used by the rules
            lp.sparsity = 0.5
    return Plan("rule", decisions, target={"sparsity": target})


def uniform_plan(layers: list[LayerInfo], prunable: set[str], scheme_name: str, settings: dict[str, Any],
                 sparsity: float) -> Plan:
    """One scheme at ratio ``sparsity`` on every prunable layer it applies to (the others dense, with why)."""
    scheme = make_scheme(scheme_name, **settings)
    out = []
    for l in layers:
        if l.name not in prunable:
            out.append(LayerPlan(l.name, "dense", 0.0, reason=kept_dense_reason(l.first),
                                 decision=LayerDecision.KEPT_DENSE_BY_PLAN))
            continue
        reason = scheme.check_applicable(l.weight_shape)
        if reason:
            out.append(LayerPlan(l.name, "dense", 0.0, reason=f"fallback to dense: {reason}",
                                 decision=LayerDecision.UNSUPPORTED))
        else:
            out.append(LayerPlan(l.name, scheme_name, float(sparsity), settings=scheme.settings()))
    return Plan("uniform", out, target={"sparsity": float(sparsity)})


def _rule_choice(l: LayerInfo, punch_min_channels: int) -> tuple[str, dict[str, Any]] | None:
    if l.depthwise:
        return None
    if l.kind == "conv" and l.kernel == (3, 3):
        cin = l.weight_shape[1]
        if cin >= punch_min_channels:
            return "block-punched", {"r": 8, "c": 4}
        return "pattern", {"entries": 4}
    if l.cols >= 16:
        return "block", {"r": 8, "c": 16}
    return None


def size_scaled_ratios(sizes: list[int], target: float, gamma: float, max_ratio: float) -> list[float]:
    """Per-layer sparsities, larger for larger layers, averaging to ``target`` by weight count."""
    if not sizes:
        return []
    sizes_a = np.asarray(sizes, dtype=np.float64)
    total = sizes_a.sum()
    base = (sizes_a / sizes_a.mean()) ** gamma  # relative pruning pressure
    lo, hi = 0.0, 10.0 / max(base.min(), 1e-9)
    for _ in range(80):  # bisection on the scale so that sum(s_l * P_l) = target * P
        mid = 0.5 * (lo + hi)
        s = np.clip(mid * base * target, 0.0, max_ratio)
        if (s * sizes_a).sum() < target * total:
            lo = mid
        else:
            hi = mid
    return [float(v) for v in np.clip(hi * base * target, 0.0, max_ratio)]


# ---------------------------------------------------------------- search
@torch.no_grad()
def _val_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(F.cross_entropy(model(x), y))


@torch.no_grad()
def measure_candidates(model: nn.Module, layers: list[LayerInfo], source: ImageSource, *,
                       candidates=DEFAULT_CANDIDATES, ratios=DEFAULT_RATIOS, max_images: int = 256,
                       repeats: int = 9, device: str = "cpu",
                       latency_cache: Any = None,
                       dropped: dict[str, int] | None = None) -> dict[str, list[Candidate]]:
    """Score every applicable (scheme, settings, ratio) of every layer.

    Latencies come from ``latency_cache`` (a :class:`compression.latency.LatencyCache`
    or :class:`compression.tvm_backend.latency_table.TVMLatencyTable`; measured on
    a miss); sensitivities are recomputed (deterministic for fixed weights and
    data).  When the table ``drops_unaccelerated`` (the TVM one), a candidate
    not faster than the layer's dense latency is left out (counted per layer
    in ``dropped`` when given).
    """
    cache = latency_cache or lat.LatencyCache(None)
    model = model.eval()
    x, y = source.val.tensors(slice(0, max_images))
    x, y = x.to(device), y.to(device)
    base = _val_loss(model, x, y)
    table: dict[str, list[Candidate]] = {}
    for l in layers:
        w = model.get_submodule(l.name).weight
        original = w.detach().clone()
        dense_ms = cache.measure(l, "dense", 0.0, {}, repeats)
        opts = [Candidate("dense", {}, 0.0, 0, dense_ms, 0.0)]
        slower = 0
        for scheme_name, settings in candidates:
            scheme = make_scheme(scheme_name, **settings)
            if scheme.check_applicable(l.weight_shape):
                continue
            fixed = _fixed_sparsity(scheme_name, settings)
            for s in ([fixed] if fixed is not None else ratios):
                mask = scheme.mask(original, s)
                ms = cache.measure(l, scheme_name, s, settings, repeats, mask=mask)
                if ms >= dense_ms and getattr(cache, "drops_unaccelerated", False):
                    slower += 1  # the deployment would run this layer dense: not a candidate
                    continue
                w.copy_(original * mask)
                sens = _val_loss(model, x, y) - base
                w.copy_(original)
                pruned = int((~mask).sum())
                opts.append(Candidate(scheme_name, scheme.settings(), s, pruned, ms, sens))
        table[l.name] = opts
        if dropped is not None:
            dropped[l.name] = slower
    cache.save()
    return table


def _fixed_sparsity(scheme: str, settings: dict[str, Any]) -> float | None:
    if scheme == "nm":
        return 1.0 - settings["n"] / settings["m"]
    return None


def search_plan(layers: list[LayerInfo], prunable: set[str], table: dict[str, list[Candidate]], *,
                sparsity: float | None, latency_target: float | None, seed: int, beta: float = 1e-3,
                generations: int = 400, latency_backend: str = lat.BACKEND,
                not_accelerated: dict[str, int] | None = None) -> Plan:
    """Pick one candidate per prunable layer under the target (see module docstring)."""
    if (sparsity is None) == (latency_target is None):
        raise ConfigError("search mapping needs exactly one of a sparsity target or --latency-target")
    names = [l.name for l in layers if l.name in prunable and l.name in table]
    total_w = sum(l.numel for l in layers if l.name in names)
    dense_lat = sum(table[n][0].latency_ms for n in names)
    if not names:
        raise ConfigError("no prunable layer to map")

    def cost(c: Candidate) -> float:
        if sparsity is not None:
            return -c.pruned / total_w
        return c.latency_ms / dense_lat

    def feasible(choice: list[int]) -> bool:
        picked = [table[n][i] for n, i in zip(names, choice)]
        if sparsity is not None:
            return sum(c.pruned for c in picked) >= sparsity * total_w - 1e-9
        return sum(c.latency_ms for c in picked) <= latency_target * dense_lat + 1e-12

    def objective(choice: list[int]) -> float:
        picked = [table[n][i] for n, i in zip(names, choice)]
        return sum(c.sensitivity for c in picked) + beta * sum(c.latency_ms for c in picked) / dense_lat

    def select(lam: float) -> list[int]:
        out = []
        for n in names:
            scores = [c.sensitivity + beta * c.latency_ms / dense_lat + lam * cost(c) for c in table[n]]
            out.append(int(np.argmin(scores)))
        return out

    lo, hi = 0.0, 1.0
    while not feasible(select(hi)) and hi < 1e9:
        hi *= 4
    if not feasible(select(hi)):
        if sparsity is not None:
            reach = sum(max(c.pruned for c in table[n]) for n in names) / total_w
        else:
            reach = sum(min(c.latency_ms for c in table[n]) for n in names) / dense_lat
        dropped = sum((not_accelerated or {}).values())
        raise ConfigError(f"target cannot be reached with the candidate schemes and ratios (sparsity={sparsity}, "
                          f"latency_target={latency_target}; best reachable "
                          f"{'sparsity' if sparsity is not None else 'latency fraction'} {reach:.3f}"
                          + (f"; {dropped} candidates left out as not faster than dense on {latency_backend}"
                             if dropped else "") + ")")
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if feasible(select(mid)):
            hi = mid
        else:
            lo = mid
    best = select(hi)
    best_obj = objective(best)
    lagrangian_obj = best_obj
    rng = np.random.default_rng(seed)
    for _ in range(generations):  # (1+1) evolutionary refinement, feasibility kept
        child = list(best)
        for _k in range(int(rng.integers(1, 3))):
            j = int(rng.integers(len(names)))
            child[j] = int(rng.integers(len(table[names[j]])))
        if feasible(child):
            obj = objective(child)
            if obj < best_obj - 1e-12:
                best, best_obj = child, obj
    chosen = {n: table[n][i] for n, i in zip(names, best)}
    decisions = []
    for l in layers:
        if l.name in chosen:
            c = chosen[l.name]
            dense_ms = table[l.name][0].latency_ms
            decisions.append(LayerPlan(l.name, c.scheme, c.sparsity, settings=c.settings,
                                       reason=None if c.scheme != "dense" else "search: dense is best",
                                       decision=LayerDecision.PRUNED if c.scheme != "dense"
                                       else LayerDecision.DENSE_BY_SEARCH,
                                       latency_ms=round(c.latency_ms, 5), dense_latency_ms=round(dense_ms, 5),
                                       sensitivity=round(c.sensitivity, 6)))
        elif l.name in prunable:
            decisions.append(LayerPlan(l.name, "dense", reason="no applicable candidate",
                                       decision=LayerDecision.NO_CANDIDATE))
        else:
            decisions.append(LayerPlan(l.name, "dense", reason=kept_dense_reason(l.first),
                                       decision=LayerDecision.KEPT_DENSE_BY_PLAN))
    picked = list(chosen.values())
    target = {"sparsity": sparsity} if sparsity is not None else {"latency_fraction": latency_target}
    return Plan("search", decisions, target=target, seed=seed, search={
        "latency_backend": latency_backend,
        "not_accelerated": dict(not_accelerated or {}),
        "objective_lagrangian": round(lagrangian_obj, 6),
        "objective_final": round(best_obj, 6),
        "lambda": hi,
        "predicted_sparsity": round(sum(c.pruned for c in picked) / total_w, 6),
        "predicted_latency_fraction": round(sum(c.latency_ms for c in picked) / dense_lat, 6),
        "candidates_per_layer": {n: len(table[n]) for n in names},
    })


class AutoCompressor:
    """``auto``: map a plan per layer (rule or search), then prune + recover like any scheme."""

    name = "auto"
    SEARCH_VERSION = 2  # 2: the searched plan is checked against rival plans (compression.plan_selection)

    @property
    def algorithm_version(self) -> str | None:
        """Part of the compressed-model cache key: a search plan of an older planner is not reused."""
        return f"search-{self.SEARCH_VERSION}" if self.mapping == "search" else None

    def __init__(self, sparsity: float = 0.0, *, mapping: str = "rule", latency_target: float | None = None,
                 latency_cache: str | None = None, latency_backend: str = "tvm-kernels", **settings: Any) -> None:
        from compression.compressor import WeightPruning

        if mapping not in MAPPINGS:
            raise ConfigError(f"unknown mapping {mapping!r} (choices: {', '.join(MAPPINGS)})")
        if latency_target is not None and not 0.0 < float(latency_target) <= 1.0:
            raise ConfigError(f"latency target must be a fraction of dense in (0, 1], got {latency_target}")
        if mapping == "rule" and latency_target is not None:
            raise ConfigError("--latency-target needs --mapping search")
        if latency_target is None and sparsity <= 0.0:
            raise ConfigError("auto needs --sparsity in (0, 1) or --latency-target")
        if latency_backend not in LATENCY_BACKENDS:
            raise ConfigError(f"unknown latency backend {latency_backend!r} (choices: {', '.join(LATENCY_BACKENDS)})")
        self.mapping = mapping
        self.latency_backend = latency_backend
        self.latency_cache = latency_cache
        self.latency_target = None if latency_target is None else float(latency_target)
        self.rule_settings = {k: settings.pop(k) for k in list(settings) if k in ("gamma", "max_ratio",
                                                                              "punch_min_channels")}
        self.search_settings = {k: settings.pop(k) for k in list(settings) if k in ("generations", "beta")}
        self.sensitivity_images = int(settings.pop("sensitivity_images", None) or 256)
        if self.sensitivity_images < 1:
            raise ConfigError(f"sensitivity_images must be >= 1, got {self.sensitivity_images}")
        trial_images = settings.pop("trial_images", None)
        self.trial_images = None if trial_images is None else int(trial_images)  # None: the profile's
        if self.trial_images is not None and self.trial_images < 0:
            raise ConfigError(f"trial_images must be >= 0 (0: no trials), got {self.trial_images}")
        ratios = settings.pop("ratios", None)
        if isinstance(ratios, str):
            ratios = [float(v) for v in ratios.split(":")]
        self.ratios = tuple(float(v) for v in ratios) if ratios else DEFAULT_RATIOS
        if any(not 0.0 < v < 1.0 for v in self.ratios):
            raise ConfigError(f"candidate ratios must be in (0, 1), got {self.ratios}")
        self.inner = WeightPruning("unstructured", sparsity, **settings)
        self.inner.plan_for = self.plan_for  # type: ignore[method-assign]
        self.inner.name = self.inner.scheme_name = f"auto-{mapping}"
        self.sparsity = float(sparsity)
        self.map_seconds = 0.0
        self.table: Any = None  # the latency table of the last search
        self.profile = "default"  # the run profile of the last compress() (sets the TVM table's grid)

    def plan_for(self, model: nn.Module, source: ImageSource, *, seed: int, device: str) -> Plan:
        start = time.perf_counter()
        layers = list_layers(model, source.shape)
        prunable = {l.name for l in layers if not (self.inner.keep_first and l.first)
                    and not (self.inner.keep_classifier and l.classifier)}
        if self.mapping == "rule":
            plan = rule_plan(layers, prunable, self.sparsity, **self.rule_settings)
        else:
            latencies = self.table = self.latency_table()
            dropped: dict[str, int] = {}
            table = measure_candidates(model, [l for l in layers if l.name in prunable], source, device=device,
                                       ratios=self.ratios, latency_cache=latencies, dropped=dropped,
                                       max_images=self.sensitivity_images)
            plan = search_plan(layers, prunable, table,
                               sparsity=None if self.latency_target else self.sparsity,
                               latency_target=self.latency_target, seed=seed, latency_backend=latencies.backend,
                               not_accelerated=dropped, **self.search_settings)
            plan = self.check_against_rivals(plan, model, layers, prunable, table, latencies, source, seed=seed,
                                             device=device)
            plan.search["latency_seconds"] = round(getattr(latencies, "seconds", 0.0), 3)
        self.map_seconds = time.perf_counter() - start
        plan.search["seconds"] = round(self.map_seconds, 3)
        return plan

    def check_against_rivals(self, plan: Plan, model: nn.Module, layers: list[LayerInfo], prunable: set[str],
                             table: dict[str, list[Candidate]], latencies: Any, source: ImageSource, *, seed: int,
                             device: str) -> Plan:
        """The search's plan or a rival meeting its target that trains better (:mod:`compression.plan_selection`)."""
        from compression import plan_selection as sel

        images = self.trial_images if self.trial_images is not None else sel.PROFILE_TRIAL_IMAGES.get(
            self.profile, sel.DEFAULT_TRIAL_IMAGES)
        if images == 0:
            return plan
        start = time.perf_counter()
        names = [l.name for l in layers if l.name in prunable and l.name in table]
        pricer = sel.PlanPricer(model, layers, names, latencies)
        priced, fraction, sparsity = pricer.price(plan)
        rivals = [sel.RivalPlan("search", priced, None, fraction, sparsity)]
        block, block_settings = sel.UNIFORM_BLOCK
        rule_settings = {k: v for k, v in self.rule_settings.items() if k != "max_ratio"}
        max_ratio = float(self.rule_settings.get("max_ratio", 0.95))
        builders = {"uniform-block": lambda s: uniform_plan(layers, prunable, block, block_settings, s),
                    "rule": lambda s: rule_plan(layers, prunable, s, max_ratio=max_ratio, **rule_settings)}
        for family, build in builders.items():
            rival = sel.fit_rival(family, build, pricer, sparsity=None if self.latency_target else self.sparsity,
                                  latency_target=self.latency_target, max_ratio=max_ratio)
            if rival is not None:
                rivals.append(rival)
        latencies.save()  # the rivals' kernels join the cached table
        best = sel.run_trials(rivals, model, source, self.inner.recovery, images=min(images, len(source.train)),
                              seed=seed, device=device)
        chosen = Plan(plan.method, best.plan.layers, target=plan.target, seed=plan.seed, search=dict(plan.search))
        chosen.search.update({
            "chosen": best.family, "rivals": [r.summary() for r in rivals], "trial_images": images,
            "trial_seconds": round(time.perf_counter() - start, 3),
            "predicted_sparsity": round(best.sparsity, 6),
            "predicted_latency_fraction": round(best.latency_fraction, 6)})
        return chosen

    def latency_table(self) -> Any:
        """The per-layer latency table the search scores candidates with (see ``latency_backend``)."""
        if self.latency_backend == "torch-gemm-proxy":
            return lat.LatencyCache(self.latency_cache)
        from compression.tvm_backend.latency_table import GRID, TVMLatencyTable

        return TVMLatencyTable(self.latency_cache, grid=PROFILE_LATENCY_GRID.get(self.profile, GRID))

    def compress(self, model: nn.Module, source: ImageSource, **kw: Any):
        import os

        self.profile = str(kw.get("profile", "default"))
        rt = active_runtime()  # inside a run: latency tables are cached in the run's cache directory
        cache_dir = kw.pop("cache_dir", None) or (rt.cache_dir if rt is not None else None)
        if self.latency_cache is None and cache_dir:
            if self.latency_backend == "torch-gemm-proxy":
                self.latency_cache = os.path.join(cache_dir, "latency", f"{lat.BACKEND}.json")
            else:  # the deployment's own tuning database: the compile reuses the dense tile search
                from compression.tvm_backend.backend import tuning_db_path

                self.latency_cache = tuning_db_path(cache_dir)
        result = self.inner.compress(model, source, **kw)
        result.info["mapping"] = self.mapping
        result.info["latency_backend"] = self.latency_backend
        result.info["latency_target"] = self.latency_target
        result.info["mapping_seconds"] = round(self.map_seconds, 3)
        return result
