"""The pipeline's fingerprint stage: generate, build/load the suspect zoo, verify, record.

:data:`STAGE` implements :class:`suite.core.stages.Stage` (enabled
when ``config.fingerprints`` is non-empty):

1. the owner is the run's dense subject (``inp.subjects.dense``);
2. the owner's suspect zoo for the profile (``cfg.negatives`` and
   ``zoo.*`` fingerprint args override it) is loaded from the cache or built;
3. every method generates (or loads) its fingerprints from the owner only,
   queries every zoo member through the predictor interface and calibrates
   its threshold on half of the negatives;
4. the run's own compressed model and deployment, when they differ from the
   owner, are queried too and scored as extra positives (family ``this-run``),
   before the zoo is built; the deployment's worker process is then
   suspended (it restarts on the next query) so the zoo's workers have its memory.

Returns a :class:`~suite.core.stages.StageOutput` with ``fingerprints``
(entries), ``metrics`` (``fp_<method>_<field>``) and their directions; each entry is described in
:mod:`fingerprints.summary`.  Details per zoo member land in
``<run_dir>/fingerprints/<method>.json`` next to the fingerprints themselves.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

from fingerprints.bank import get_evaluations, get_fingerprints
from fingerprints.options import build_method, split_args
from fingerprints.summary import flat_metrics, summarize
from fingerprints.verify import match_scores
from fingerprints.zoo import Owner, get_zoo, make_spec, owner_zoo_key
from suite.core.cache import atomic_write_text
from suite.core.predictor import Predictor
from suite.core.stages import ListedStage, StageInput, StageOutput


def owner_from_input(inp: StageInput) -> Owner:
    """The owner is the run's dense trained model."""
    cfg = inp.config
    dense = inp.subjects.dense
    info = dense.info
    assert dense.module is not None and cfg.width is not None
    return Owner(model=dense.module, arch=cfg.model, width=float(cfg.width), sha256=info["sha256"],
                 model_id=info["id"], source=inp.source,
                 source_args={"name": cfg.source, "data_root": cfg.data_root, "limit": cfg.limit},
                 seed=cfg.seed, profile=cfg.profile)


def this_run_suspects(inp: StageInput) -> list[tuple[str, dict[str, Any], Predictor]]:
    """``(id, family, predictor)`` for the run's compressed model and deployment when they are not the owner."""
    cfg = inp.config
    subjects = inp.subjects
    out: list[tuple[str, dict[str, Any], Predictor]] = []
    compressed_info = subjects.compressed.info if subjects.compressed is not None else {}
    family = {"kind": "this-run", "scheme": cfg.compress, "sparsity": float(cfg.sparsity or 0.0),
              "finetune": str(compressed_info.get("recovery", "none")), "compiled": "eager"}
    if subjects.compressed is not None:
        out.append(("this-run:compressed", family, subjects.compressed.predictor))
    if subjects.deployed is not None:
        out.append((f"this-run:{cfg.backend}", {**family, "compiled": cfg.backend}, subjects.deployed.predictor))
    return out


def run_fingerprint_stage(inp: StageInput) -> StageOutput:
    """Generate each method's fingerprints from the owner, score them on the suspect zoo and this run."""
    cfg = inp.config
    rt = inp.runtime
    per_method, zoo_args, access = split_args(tuple(cfg.fingerprints), dict(cfg.fingerprint_args))
    methods = [build_method(name, cfg.profile, per_method[name]) for name in cfg.fingerprints]
    spec = make_spec(cfg.profile, cfg.negatives, **zoo_args)
    owner = owner_from_input(inp)
    assert cfg.recipe is not None
    generated = [get_fingerprints(method, owner.model, inp.source, owner_sha256=owner.sha256,
                                  cache_dir=rt.cache_dir, seed=cfg.seed, device=rt.device, log=inp.log)
                 for method in methods]
    # this run's own compressed model and deployment are scored first (afresh, every run); the deployment's
    # worker is then stopped, so its memory is free while the zoo's workers run
    extras = this_run_suspects(inp)
    extra_rows: list[list[dict[str, Any]]] = []
    for fps, _, _ in generated:
        rows = []
        for sid, family, predictor in extras:
            v = match_scores(predictor, fps, access)
            rows.append({"id": sid, "role": "positive", "family": family, "accuracy": None, "rate": round(v.rate, 6)})
        extra_rows.append(rows)
    for _, _, predictor in extras:
        if hasattr(predictor, "suspend"):
            predictor.suspend()
    zoo = get_zoo(owner, spec, cache_dir=rt.cache_dir, recipe=cfg.recipe.as_dict(), threads=rt.threads,
                  device=rt.device, log=inp.log)
    composition = zoo.composition()
    key = owner_zoo_key(owner, spec)
    entries = []
    out_dir = inp.run_dir / "fingerprints"
    out_dir.mkdir(parents=True, exist_ok=True)
    # every zoo member is opened once for all the methods (compiled members are worker processes)
    evaluations = get_evaluations([(fps, bank) for fps, bank, _ in generated], zoo, key, access=access,
                                  seed=cfg.seed, log=inp.log)
    for method, (fps, bank, hit), ev, extra_pos in zip(methods, generated, evaluations, extra_rows):
        entry = summarize(fps, ev, extra_pos, composition)
        entry["cache_hit"] = hit
        entry["details"] = f"fingerprints/{method.name}.json"
        entries.append(entry)
        inp.log(f"fingerprints: {method.name}: R={entry['R']:.3f} T={entry['T']:.3f} U={entry['U']:.3f} "
                f"auc={entry['auc']:.3f} tpr@1%fpr={entry['tpr_at_1pct_fpr']:.3f} "
                f"fp={entry['false_positives']}/{entry['n_evaluation_negatives']} queries={entry['queries']}")
        shutil.copytree(bank, out_dir / method.name, ignore=shutil.ignore_patterns("eval-*"), dirs_exist_ok=True)
        atomic_write_text(out_dir / f"{method.name}.json", json.dumps(
            {"method": method.name, "settings": fps.settings, "threshold": ev.threshold,
             "calibration_negatives": ev.calibration, "evaluation_negatives": ev.evaluation,
             "members": ev.members + extra_pos, "zoo": composition}, indent=1) + "\n")
    metrics, directions = flat_metrics(entries)
    return StageOutput(fingerprints=entries, metrics=metrics, higher_is_better=directions)


STAGE = ListedStage("fingerprint", "fingerprints", run_fingerprint_stage)
"""The run's fingerprint stage (:class:`suite.core.stages.Stage`): runs when ``config.fingerprints`` is not empty."""
