"""The run's attack stage: craft on white-box models, evaluate on dense, compressed and deployed.

Called by :func:`suite.app.pipeline.run_stages` with a
:class:`~suite.app.pipeline.StageContext`.  For each configured attack:

* universal attacks are crafted on the craft split (train; few-shot subset
  for the meta attacks) of each white-box model (the dense model and, when
  the run compresses, the compressed eager model) and evaluated on the
  held-out test split of every model: dense, compressed and the deployment
  (queried through its predictor only; compiled deployments give no
  gradients);
* per-image attacks (torchattacks) attack test images on each white-box
  model; their adversarial images are then also sent to the other models.

Settings: ``--attack-args`` keys apply to every attack that takes them
(``eps=0.0627``, ``norm=l2``); ``NAME.key=value`` to one attack
(``uap-pgd.steps=100``).  Stage keys: ``eval_limit`` (held-out images),
``few_shot`` (craft images of the meta attacks, default 32), ``sweep``
(colon-separated Linf budgets in /255 for a per-image eps sweep),
``task_models`` (colon-separated architectures of the meta-training tasks,
default ``resnet18``).

Returns ``{"attacks": [entry...], "transfer": {...}, "metrics": {...},
"higher_is_better": {...}}`` (see :func:`entry`).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from attacks.base import AttackResult
from attacks.data import AttackData
from attacks.metrics import evaluate_perturbation, label_metrics
from attacks.victim import Model, labels_of
from suite.core import registries as reg
from suite.core.errors import ConfigError

STAGE_KEYS = ("eval_limit", "few_shot", "sweep", "track_every", "task_models")
# The smoke profile makes every attack tiny (tests run the whole pipeline in seconds).
SMOKE_SETTINGS: dict[str, dict[str, Any]] = {
    "uap-pgd": {"steps": 10}, "uap-deepfool": {"passes": 1, "deepfool_steps": 10}, "pgd": {"steps": 3},
    "cw": {"steps": 10}, "uap-meta": {"steps": 3}, "uap-maml": {"steps": 3}, "uap-l2o": {"steps": 3},
}
SMOKE_STAGE = {"eval_limit": 64, "track_every": 5}
META_ATTACKS = {"uap-meta": "meta", "uap-maml": "maml", "uap-l2o": "l2o"}


def split_settings(names: tuple[str, ...], args: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Split ``--attack-args`` into per-attack settings and stage settings.

    Unknown keys (accepted by no configured attack) are a ConfigError.
    """
    stage = {k: args[k] for k in STAGE_KEYS if k in args}
    per: dict[str, dict[str, Any]] = {n: {} for n in names}
    for key, value in args.items():
        if key in STAGE_KEYS:
            continue
        if "." in key:
            name, sub = key.split(".", 1)
            name = reg.attacks.canonical(name)
            if name not in per:
                raise ConfigError(f"--attack-args {key}: attack {name!r} is not in this run's attacks")
            per[name][sub] = value
            continue
        takers = [n for n in names if key in inspect.signature(reg.attacks.get(n)).parameters]
        if not takers:
            raise ConfigError(f"--attack-args {key}: no configured attack takes it "
                              f"(stage keys: {', '.join(STAGE_KEYS)})")
        for n in takers:
            per[n][key] = value
    return per, stage


def build_attack(name: str, **settings: Any):
    """Build a registered attack; bad settings become a one-line ConfigError."""
    try:
        return reg.attacks.build(name, **settings)
    except TypeError as err:
        raise ConfigError(f"bad settings for attack {name}: {err}") from None


def cost_to(history: list[dict[str, float]], level: float) -> tuple[float | None, float | None]:
    """(grad_queries, seconds) at the first checkpoint whose fooling rate reaches ``level``."""
    for point in history:
        if point["fooling_rate"] >= level:
            return point["grad_queries"], point["seconds"]
    return None, None


def entry(result: AttackResult, metrics: dict[str, float], *, source: str, crafted_on: str, evaluated_on: str,
          craft_images: int) -> dict[str, Any]:
    """One record entry (floats; reports format them)."""
    out: dict[str, Any] = {
        "id": f"{result.attack}:{crafted_on}->{evaluated_on}",
        "attack": result.attack, "universal": result.perturbation is not None,
        "norm": result.norm, "eps": result.eps, "target": result.target, "source": source,
        "crafted_on": crafted_on, "evaluated_on": evaluated_on,
        "fooling_rate": metrics["fooling_rate"], "asr": metrics["asr"],
        "misclassification_rate": metrics["misclassification_rate"],
        "robust_acc": metrics["robust_acc"], "clean_acc": metrics["clean_acc"],
        "achieved_norm": metrics.get("achieved_norm", result.metrics.get("achieved_norm")),
        "steps": result.steps, "grad_queries": result.grad_queries, "seconds": round(result.seconds, 4),
        "converged": result.converged, "craft_images": craft_images, "eval_images": int(metrics["n_images"]),
    }
    if "targeted_success" in metrics:
        out["targeted_success"] = metrics["targeted_success"]
    if result.history:
        for level in (0.5, 0.8):
            q, s = cost_to(result.history, level)
            out[f"grad_queries_to_fr{int(level * 100)}"] = q
            out[f"seconds_to_fr{int(level * 100)}"] = s
    return out


def meta_state_for(ctx, name: str, settings: dict[str, Any], task_models: str | None = None):
    """The cached meta-trained state for a meta attack, meta-training it on a miss.

    Tasks: the ``task_models`` architectures (stage key, ``:``-separated;
    default :data:`attacks.tasks.DEFAULT_TASK_MODELS`) on every embedded
    source except the run's own (the run's source is the held-out one, so
    adaptation is few-shot on a source meta-training never saw).
    """
    from attacks.meta import MetaConfig, get_meta_state
    from attacks.tasks import DEFAULT_TASK_MODELS, build_tasks, other_sources, with_profile
    from suite.core import registries as reg

    cfg = ctx.cfg
    meta_kwargs = with_profile({"seed": cfg.seed}, cfg.profile)
    for key in ("norm", "eps"):
        if key in settings:
            meta_kwargs[key] = settings[key]
    mcfg = MetaConfig(variant=META_ATTACKS[name], **meta_kwargs).validate()
    sources = other_sources(cfg.source)
    archs = [reg.models.canonical(a) for a in str(task_models or "").split(":") if a] or \
        list(DEFAULT_TASK_MODELS)
    tasks = build_tasks(sources, archs, profile=cfg.profile, seed=cfg.seed, cache_dir=cfg.cache_dir,
                        threads=cfg.threads, quiet=cfg.quiet, log=ctx.log)
    state, path, hit = get_meta_state(tasks, mcfg, cfg.cache_dir, progress=not cfg.quiet, log=ctx.log)
    ctx.log(f"{name}: {'loaded' if hit else 'meta-trained'} attacker {path}")
    return state, {"meta_dir": str(path), "meta_cache_hit": hit, "meta_tasks": [t.name for t in tasks],
                   "held_out_source": ctx.source.name}


def run_attack_stage(ctx) -> dict[str, Any]:
    cfg = ctx.cfg
    names = tuple(cfg.attacks)
    per, stage = split_settings(names, dict(cfg.attack_args))
    if cfg.profile == "smoke":
        per = {n: {**SMOKE_SETTINGS.get(n, {}), **per[n]} for n in names}
        stage = {**SMOKE_STAGE, **stage}
    eval_limit = stage.get("eval_limit")
    few_shot = int(stage.get("few_shot", 32))
    track_every = int(stage.get("track_every", 5))
    data = AttackData.from_source(ctx.source, craft="train", evaluate="test",
                                  eval_limit=int(eval_limit) if eval_limit else None)
    xc, _ = data.craft_tensors()
    xe, ye = data.eval_tensors()

    white: dict[str, torch.nn.Module] = {"dense": ctx.trained.model.eval()}
    if cfg.compress != "none":
        white["compressed"] = ctx.compressed.model.eval()
    targets: dict[str, Model] = dict(white)
    if cfg.backend != "torch":
        targets["deployed"] = ctx.deployment.predictor
    clean = {name: labels_of(m, xe) for name, m in targets.items()}
    final = "deployed" if "deployed" in targets else ("compressed" if "compressed" in targets else "dense")
    nearest = "compressed" if "compressed" in white else "dense"

    entries: list[dict[str, Any]] = []
    transfer: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    hib: dict[str, bool] = {}
    out_dir = Path(ctx.run_dir) / "attacks"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        settings = {"seed": cfg.seed, **per[name]}
        extra: dict[str, Any] = {}
        if name in META_ATTACKS and "meta" not in settings:
            settings["meta"], extra = meta_state_for(ctx, name, settings, stage.get("task_models"))
        attack = build_attack(name, **settings)
        ctx.log(f"attack {name} ({attack.norm}, eps={attack.eps:.4f})")
        rows, values = [], []
        for crafted_on, model in white.items():
            if attack.universal:
                x_craft = xc
                if name in META_ATTACKS and few_shot < len(xc):
                    pick = torch.randperm(len(xc), generator=torch.Generator().manual_seed(cfg.seed))[:few_shot]
                    x_craft = xc[pick]
                track = (xe, clean[crafted_on]) if hasattr(attack, "track_every") else None
                if track is not None:
                    attack.track_every = min(attack.track_every, track_every)
                result = attack.craft(model, x_craft, track=track)
                torch.save({"perturbation": result.perturbation, "norm": attack.norm, "eps": attack.eps},
                           out_dir / f"{name}-{crafted_on}.pt")
                per_target = {t: evaluate_perturbation(m, result.perturbation, xe, ye, norm=attack.norm,
                                                       target=attack.target, clean_labels=clean[t])
                              for t, m in targets.items()}
                n_craft = len(x_craft)
            else:
                result = attack.craft(model, xe, ye)
                per_target = {}
                for t, m in targets.items():
                    adv = labels_of(m, result.adversarials)
                    per_target[t] = {**label_metrics(clean[t], adv, ye, attack.target),
                                     "achieved_norm": result.metrics["achieved_norm"]}
                n_craft = len(xe)
            row = []
            for evaluated_on, m in per_target.items():
                e = entry(result, m, source=ctx.source.name, crafted_on=crafted_on, evaluated_on=evaluated_on,
                          craft_images=n_craft)
                e.update(extra)
                entries.append(e)
                row.append(m["fooling_rate"])
            rows.append(crafted_on)
            values.append(row)
        transfer[name] = {"rows": rows, "cols": list(targets), "values": values, "metric": "fooling_rate",
                          "norm": attack.norm, "eps": attack.eps}
        slug = name.replace("-", "_")
        main = next(e for e in entries if e["attack"] == name and e["crafted_on"] == nearest
                    and e["evaluated_on"] == final)
        if attack.universal:
            metrics[f"{slug}_fooling_rate"] = main["fooling_rate"]
            hib[f"{slug}_fooling_rate"] = False  # the defender's view: lower is more robust
        else:
            metrics[f"{slug}_robust_acc"] = main["robust_acc"]
            hib[f"{slug}_robust_acc"] = True
        if not attack.universal and stage.get("sweep") and attack.norm == "linf":
            from attacks.perimage import eps_sweep

            budgets = [float(b) / 255 for b in str(stage["sweep"]).split(":")]
            sweep = eps_sweep(type(attack), white[nearest], xe, ye, budgets,
                              **{k: v for k, v in settings.items() if k != "eps"})
            main["sweep"] = sweep
    return {"attacks": entries, "transfer": transfer, "metrics": metrics, "higher_is_better": hib}
