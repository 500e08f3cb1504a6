"""The pipeline's fingerprint stage: generate, build/load the suspect zoo, verify, record.

``run_fingerprint_stage(ctx)`` (called by :func:`suite.app.pipeline.run_stages`
when ``cfg.fingerprints`` is non-empty):

1. the owner is the run's dense trained model (``ctx.trained``);
2. the owner's suspect zoo for the profile (``cfg.negatives`` and
   ``zoo.*`` fingerprint args override it) is loaded from the cache or built;
3. every method generates (or loads) its fingerprints from the owner only,
   queries every zoo member through the predictor interface and calibrates
   its threshold on half of the negatives;
4. the run's own compressed model and deployment, when they differ from the
   owner, are queried too and scored as extra positives (family ``this-run``).

Returns ``{"fingerprints": [entry...], "metrics": {fp_<method>_<field>: float},
"higher_is_better": {...}}``; each entry is described in
:mod:`fingerprints.summary`.  Details per zoo member land in
``<run_dir>/fingerprints/<method>.json`` next to the fingerprints themselves.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

from fingerprints.bank import get_evaluation, get_fingerprints
from fingerprints.options import build_method, split_args
from fingerprints.summary import flat_metrics, summarize
from fingerprints.verify import match_scores
from fingerprints.zoo import Owner, get_zoo, make_spec, owner_zoo_key
from suite.core.cache import atomic_write_text


def owner_from_context(ctx) -> Owner:
    cfg = ctx.cfg
    info = ctx.trained.info
    return Owner(model=ctx.trained.model, arch=cfg.model, width=float(cfg.width), sha256=info["sha256"],
                 model_id=info["id"], source=ctx.source,
                 source_args={"name": cfg.source, "data_root": cfg.data_root, "limit": cfg.limit},
                 seed=cfg.seed, profile=cfg.profile)


def this_run_suspects(ctx) -> list[tuple[str, dict[str, Any], Any]]:
    """``(id, family, predictor)`` for the run's compressed model and deployment when they are not the owner."""
    cfg = ctx.cfg
    out: list[tuple[str, dict[str, Any], Any]] = []
    family = {"kind": "this-run", "scheme": cfg.compress, "sparsity": float(cfg.sparsity or 0.0),
              "finetune": str((ctx.compressed.info or {}).get("recovery", "none")), "compiled": "eager"}
    if cfg.compress != "none":
        from compression.backends.torch_eager import TorchPredictor

        out.append(("this-run:compressed", family,
                    TorchPredictor(ctx.compressed.model, ctx.source.shape, ctx.source.num_classes)))
    runnable = ctx.deployment.info.get("runnable", True)
    if cfg.backend != "torch" and runnable:
        out.append((f"this-run:{cfg.backend}", {**family, "compiled": cfg.backend}, ctx.deployment.predictor))
    return out


def run_fingerprint_stage(ctx) -> dict[str, Any]:
    cfg = ctx.cfg
    per_method, zoo_args, access = split_args(tuple(cfg.fingerprints), dict(cfg.fingerprint_args))
    methods = [build_method(name, cfg.profile, per_method[name]) for name in cfg.fingerprints]
    spec = make_spec(cfg.profile, cfg.negatives, **zoo_args)
    owner = owner_from_context(ctx)
    assert cfg.recipe is not None
    zoo = get_zoo(owner, spec, cache_dir=cfg.cache_dir, recipe=cfg.recipe.as_dict(), threads=cfg.threads or 1,
                  device=cfg.device, log=ctx.log)
    composition = zoo.composition()
    key = owner_zoo_key(owner, spec)
    extras = this_run_suspects(ctx)
    entries = []
    out_dir = ctx.run_dir / "fingerprints"
    out_dir.mkdir(parents=True, exist_ok=True)
    for method in methods:
        fps, bank, hit = get_fingerprints(method, owner.model, ctx.source, owner_sha256=owner.sha256,
                                          cache_dir=cfg.cache_dir, seed=cfg.seed, device=cfg.device, log=ctx.log)
        ev = get_evaluation(fps, bank, zoo, key, access=access, seed=cfg.seed, log=ctx.log)
        extra_pos = []
        for sid, family, predictor in extras:
            v = match_scores(predictor, fps, access)
            extra_pos.append({"id": sid, "role": "positive", "family": family, "accuracy": None, "rate": round(v.rate, 6)})
        entry = summarize(fps, ev, extra_pos, composition)
        entry["cache_hit"] = hit
        entry["details"] = f"fingerprints/{method.name}.json"
        entries.append(entry)
        ctx.log(f"fingerprints: {method.name}: R={entry['R']:.3f} T={entry['T']:.3f} U={entry['U']:.3f} "
                f"auc={entry['auc']:.3f} tpr@1%fpr={entry['tpr_at_1pct_fpr']:.3f} "
                f"fp={entry['false_positives']}/{entry['n_evaluation_negatives']} queries={entry['queries']}")
        shutil.copytree(bank, out_dir / method.name, ignore=shutil.ignore_patterns("eval-*"), dirs_exist_ok=True)
        atomic_write_text(out_dir / f"{method.name}.json", json.dumps(
            {"method": method.name, "settings": fps.settings, "threshold": ev.threshold,
             "calibration_negatives": ev.calibration, "evaluation_negatives": ev.evaluation,
             "members": ev.members + extra_pos, "zoo": composition}, indent=1) + "\n")
    metrics, directions = flat_metrics(entries)
    return {"fingerprints": entries, "metrics": metrics, "higher_is_better": directions}
