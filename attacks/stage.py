"""The run's attack stage: craft on white-box models, evaluate on dense, compressed and deployed.

:data:`STAGE` implements :class:`suite.core.stages.Stage`: it receives a
:class:`~suite.core.stages.StageInput` (typed subjects dense / compressed /
deployed) and returns a :class:`~suite.core.stages.StageOutput`.  For each
configured attack:

* universal attacks are crafted on the craft split (train; few-shot subset
  for the meta attacks) of each white-box model (the dense model and, when
  the run compresses, the compressed eager model) and evaluated on the
  held-out test split of every model: dense, compressed and the deployment
  (queried through its predictor only; compiled deployments give no
  gradients);
* per-image attacks (torchattacks) attack test images on each white-box
  model; their adversarial images are then also sent to the other models;
* black-box attacks (``attack.black_box``: ``square``, ``rays``) query forward
  passes only, so they attack *every* subject directly through its predictor,
  the deployment included; their adversarial images are sent to the other
  models too (a full transfer matrix) and their headline is the attack on what
  the run ships.  Entries add ``black_box``, ``feedback``, ``queries`` (total),
  ``queries_per_image`` and ``query_budget``.

Attacks with an ``n_images`` setting (``autoattack``, ``square``, ``rays``)
attack the first ``n_images`` held-out test images (after ``eval_limit``);
their entries record ``subset_images`` and ``subset_sha256`` (a digest of the
images' source indices), and the stage adds ``<attack>_clean_acc`` on that
subset beside ``<attack>_robust_acc`` (RobustBench style).

Budgets: an attack's ``eps`` defaults to the run source's standard budget
for its norm (:func:`suite.core.threat.threat_model_for`); every entry
records ``eps_standard``, ``eps_multiple``, ``eps_origin`` (standard | given)
and ``budget_reference`` (:mod:`attacks.budget`).  Budget sweep: attacks
whose class has ``sweepable`` (not AutoAttack or the query-budget black
boxes, where each point would be a full run) are re-crafted at each
``sweep`` multiple of their budget (default 0.25, 0.5, 0.75, 1, 1.5; smoke
profile 0.5, 1, 1.5) on their headline crafting model and scored on what the
run ships, beside uniform noise at the same budget; the points go to the
headline entry's ``sweep`` (:mod:`attacks.sweep`).

Settings: ``--attack-args`` keys apply to every attack that takes them
(``eps=0.0627``, ``norm=l2``); ``NAME.key=value`` to one attack
(``uap-pgd.steps=100``).  Stage keys: ``eval_limit`` (held-out images),
``few_shot`` (craft images of the meta attacks, default 32), ``craft_limit``
(craft images of the other universal attacks: a seeded random subset of the
train split, default 2000; 0 for all), ``sweep``
(colon-separated multiples of each attack's budget; see below),
``task_models`` (colon-separated architectures of the meta-training tasks,
default ``resnet18``).

Returns a :class:`~suite.core.stages.StageOutput` with ``attacks`` (entries,
see :func:`entry`), ``transfer``, ``metrics`` and their directions.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacks.base import AttackResult, canonical_norm
from attacks.budget import choose_budget
from attacks.craft_cache import cached_craft
from attacks.sweep import budget_sweep, parse_multiples
from attacks.data import AttackData
from attacks.metrics import evaluate_perturbation, label_metrics
from attacks.victim import Model, labels_of
from suite.core import registries as reg
from suite.core.errors import ConfigError
from suite.core.metrics import higher_is_better
from suite.core.settings import Field, Group, Settings, SettingsSpec, route
from suite.core.stages import ListedStage, StageInput, StageOutput
from suite.core.threat import threat_model_for

# The stage's own settings group: its bare keys belong to the stage (``stage.KEY`` works too).
# Each attack's smoke profile sits next to its class (``SETTINGS.profiles``).
STAGE_SETTINGS = SettingsSpec({
    "eval_limit": Field(None, int, optional=True, ge=0, doc="held-out images (0/None: all)"),
    "few_shot": Field(32, int, gt=0, doc="craft images of the meta attacks"),
    "craft_limit": Field(2000, int, optional=True, ge=0,
                         doc="craft images of universal attacks: a seeded random subset of the train split "
                             "(0/None: all of it)"),
    "sweep": Field("default", str, optional=True,
                   doc="budget sweep: colon-separated multiples of each attack's eps ('default': "
                       "0.25:0.5:0.75:1:1.5, the full profile's; the default profile sweeps 0.5:1:1.5; none: off)"),
    "track_every": Field(5, int, gt=0, doc="largest held-out tracking period of universal attacks"),
    "task_models": Field(None, str, optional=True, doc="colon-separated architectures of the meta tasks"),
    "meta_source": Field("shipped", str, doc="meta attacks: 'shipped' (a shipped attacker whose tasks never saw "
                                             "the run source's family, else meta-train) or 'train' (meta-train)"),
}, owner="attack stage", profiles={"smoke": {"eval_limit": 64, "track_every": 5, "sweep": "0.5:1:1.5"},
                                  # the first run: a three-point curve, held-out tracking every 10 steps
                                  "default": {"track_every": 10, "sweep": "0.5:1:1.5"}})
META_ATTACKS = {"uap-meta": "meta", "uap-maml": "maml", "uap-l2o": "l2o", "uap-meta-zo": "meta"}
FEW_SHOT = ("uap-meta", "uap-maml", "uap-l2o")  # adapt on ``few_shot`` craft images


def split_settings(names: tuple[str, ...], args: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Split ``--attack-args`` into per-attack settings and the (given) stage settings.

    One :func:`suite.core.settings.route` call: the stage keys are the
    ``stage`` group's; other bare keys go to every attack that declares them.
    Unknown keys (declared by no selected attack) are a ConfigError.
    """
    routed = route(args, {n: reg.attacks.get(n).SETTINGS for n in names},
                   groups=[Group.of("stage", STAGE_SETTINGS)], canonical=reg.attacks.canonical,
                   flag="--attack-args", kind="attack")
    stage = routed.pop("stage")
    return routed, stage


def resolve_attack_args(names: tuple[str, ...], args: dict[str, Any],
                        profile: str | None = None) -> tuple[dict[str, dict[str, Any]], Settings]:
    """Per-attack settings (the profile's overrides under the given ones) and the resolved stage settings."""
    per, stage = split_settings(names, args)
    per = {n: {**reg.attacks.get(n).SETTINGS.profile(profile), **per[n]} for n in names}
    return per, STAGE_SETTINGS.resolve(stage, profile=profile)


def with_tracking(name: str, settings: dict[str, Any], track_every: int) -> dict[str, Any]:
    """``settings`` with ``track_every = min(attack's value, stage's)`` for attacks that track (else as is)."""
    spec = reg.attacks.get(name).SETTINGS
    if "track_every" not in spec:
        return settings
    own = spec.resolve({"track_every": settings["track_every"]} if "track_every" in settings else {},
                       owner=name)["track_every"]
    return {**settings, "track_every": min(own, int(track_every))}


def build_attack(name: str, **settings: Any):
    """Build a registered attack; bad settings become a one-line ConfigError."""
    try:
        return reg.attacks.build(name, **settings)
    except TypeError as err:
        raise ConfigError(f"bad settings for attack {name}: {err}") from None


def cost_to(history: list[dict[str, float]], level: float, counter: str = "grad_queries"
            ) -> tuple[float | None, float | None]:
    """(``counter``, seconds) at the first checkpoint whose fooling rate reaches ``level``."""
    for point in history:
        if point["fooling_rate"] >= level:
            return point.get(counter), point["seconds"]
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
        "craft_cache_hit": result.cached,
    }
    if "targeted_success" in metrics:
        out["targeted_success"] = metrics["targeted_success"]
    if result.history:
        for level in (0.5, 0.8):
            q, s = cost_to(result.history, level)
            out[f"grad_queries_to_fr{int(level * 100)}"] = q
            out[f"seconds_to_fr{int(level * 100)}"] = s
            if "queries" in result.history[0]:  # black box: forward-only queries to the level
                out[f"queries_to_fr{int(level * 100)}"] = cost_to(result.history, level, "queries")[0]
    return out


def subset_digest(indices: Any) -> str:
    """A short sha256 of a test subset's source indices (int64), so records can tell subsets apart."""
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


def black_box_fields(result: AttackResult, attack: Any) -> dict[str, Any]:
    """The query accounting of a black-box attack's entry."""
    return {"black_box": True, "feedback": attack.feedback, "queries": result.queries,
            "queries_per_image": result.metrics.get("queries_per_image"), "query_budget": attack.queries}


def meta_state_for(inp: StageInput, name: str, settings: dict[str, Any], task_models: str | None = None,
                   meta_source: str = "shipped"):
    """The meta-trained state of a meta attack: a shipped one when one fits, else a cached or new one.

    ``meta_source="shipped"`` (stage key ``meta_source``) takes the shipped
    state (:mod:`attacks.shipped`) whose tasks never saw the run source's
    dataset family, preferring one that never saw the run's architecture.
    When none fits (or ``meta_source="train"``) the state is meta-trained
    (cached) on the task sources of the other dataset families times the
    ``task_models`` architectures (``:``-separated; default
    :data:`attacks.tasks.DEFAULT_TASK_MODELS`), each task at its source's
    standard budget; sources whose data is missing are skipped.
    """
    from attacks.meta import MetaConfig, get_meta_state
    from attacks.shipped import pick_shipped
    from attacks.tasks import DEFAULT_TASK_MODELS, build_tasks, meta_training_sources, with_profile

    cfg = inp.config
    variant = META_ATTACKS[name]
    norm = canonical_norm(settings.get("norm", "linf"))
    if meta_source not in ("shipped", "train"):
        raise ConfigError(f"unknown meta_source {meta_source!r} (choices: shipped, train)")
    if meta_source == "shipped":
        found = pick_shipped(variant, norm, inp.source.name, reg.models.canonical(cfg.model))
        if found is not None:
            state = found.load()
            inp.log(f"{name}: shipped attacker {found.name} (meta-trained on "
                    f"{', '.join(sorted(found.families or found.sources))}; "
                    f"architectures {', '.join(sorted(found.archs))})")
            return state, {"meta_origin": "shipped", "meta_name": found.name, "meta_sha256": found.sha256,
                           "meta_cache_hit": True, "meta_tasks": [t["name"] for t in state.info["tasks"]],
                           "meta_task_sources": sorted(found.sources), "meta_task_archs": sorted(found.archs),
                           "held_out_source": inp.source.name,
                           "held_out_arch": reg.models.canonical(cfg.model) not in found.archs}
        inp.log(f"{name}: no shipped {norm} attacker fits {inp.source.name}; meta-training one")
    meta_kwargs = with_profile({"seed": cfg.seed}, cfg.profile)
    meta_kwargs["norm"] = norm
    if "eps" in settings:
        meta_kwargs["eps"] = settings["eps"]
    mcfg = MetaConfig(variant=variant, **meta_kwargs).validate()
    sources = meta_training_sources(cfg.source)
    archs = [reg.models.canonical(a) for a in str(task_models or "").split(":") if a] or \
        list(DEFAULT_TASK_MODELS)
    rt = inp.runtime
    tasks = build_tasks(sources, archs, profile=cfg.profile, seed=cfg.seed, cache_dir=rt.cache_dir,
                        threads=rt.threads, quiet=rt.quiet, norm=norm, skip_missing=True, log=inp.log)
    state, path, hit = get_meta_state(tasks, mcfg, rt.cache_dir, progress=not rt.quiet, log=inp.log)
    inp.log(f"{name}: {'loaded' if hit else 'meta-trained'} attacker {path}")
    return state, {"meta_origin": "trained", "meta_dir": str(path), "meta_cache_hit": hit,
                   "meta_tasks": [t.name for t in tasks], "held_out_source": inp.source.name,
                   "held_out_arch": reg.models.canonical(cfg.model) not in archs}


def run_attack_stage(inp: StageInput) -> StageOutput:
    """Craft every configured attack on the white-box subjects, evaluate it on all of them."""
    cfg = inp.config
    names = tuple(cfg.attacks)
    per, stage = resolve_attack_args(names, dict(cfg.attack_args), cfg.profile)
    eval_limit = stage.eval_limit
    few_shot = stage.few_shot
    data = AttackData.from_source(inp.source, craft="train", evaluate="test",
                                  craft_limit=int(stage.craft_limit) if stage.craft_limit else None,
                                  eval_limit=int(eval_limit) if eval_limit else None, seed=cfg.seed)
    xc, _ = data.craft_tensors()
    xe, ye = data.eval_tensors()

    subjects = inp.subjects
    # white-box subjects are attacked through their eager modules, black boxes through their predictors
    white: dict[str, torch.nn.Module] = {n: s.module for n, s in subjects.white_box().items()
                                         if s.module is not None}
    targets: dict[str, Model] = {n: (s.module if s.module is not None else s.predictor)
                                 for n, s in subjects.all().items()}
    clean = {name: labels_of(m, xe) for name, m in targets.items()}
    final = subjects.shipped.name
    nearest = subjects.nearest_white_box.name

    entries: list[dict[str, Any]] = []
    transfer: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    hib: dict[str, bool] = {}
    out_dir = Path(inp.run_dir) / "attacks"
    out_dir.mkdir(parents=True, exist_ok=True)
    threat = threat_model_for(inp.source)
    # "none" on the command line arrives as None: no sweep; the unset key is "default"
    multiples = parse_multiples(stage.get("sweep") if stage.get("sweep") is not None else "none")
    for name in names:
        settings, budget = choose_budget(name, {"seed": cfg.seed, **per[name]}, threat)
        extra: dict[str, Any] = budget.fields()
        if name in META_ATTACKS and "meta" not in settings:
            settings["meta"], meta_extra = meta_state_for(inp, name, settings, stage.get("task_models"),
                                                          stage.get("meta_source", "shipped"))
            extra = {**extra, **meta_extra}
        attack = build_attack(name, **with_tracking(name, settings, stage.track_every))
        # the crafted tensors are cached artifacts (white-box crafts only); every score below is taken afresh
        identity = {"meta": extra.get("meta_sha256") or extra.get("meta_dir")} if "meta" in settings else None

        def craft(atk, model, x, y=None, track=None):
            return cached_craft(atk, model, x, y, track=track, cache_dir=inp.runtime.cache_dir, extra=identity,
                                warn=inp.log)

        inp.log(f"attack {name} ({attack.norm}, eps={attack.eps:.4f}, {budget.origin.value} budget)")
        x_att, y_att, clean_att = xe, ye, clean
        if "n_images" in attack.settings:  # a fixed subset: the first n_images of the held-out order
            n = min(int(attack.n_images), len(xe))
            x_att, y_att = xe[:n], ye[:n]
            clean_att = {t: c[:n] for t, c in clean.items()}
            extra = {**extra, "subset_images": n, "subset_sha256": subset_digest(data.evaluate.indices[:n])}
        # black boxes attack every subject through its predictor; the others craft on the white boxes
        crafters: dict[str, Model] = ({n: s.predictor for n, s in subjects.all().items()}
                                      if attack.black_box else dict(white))
        rows, values = [], []
        craft_sets: dict[str, torch.Tensor] = {}  # universal attacks: the images each one was crafted on
        for crafted_on, model in crafters.items():
            if attack.universal:
                x_craft = xc
                if name in FEW_SHOT and few_shot < len(xc):
                    pick = torch.randperm(len(xc), generator=torch.Generator().manual_seed(cfg.seed))[:few_shot]
                    x_craft = xc[pick]
                craft_sets[crafted_on] = x_craft
                track = (xe, clean[crafted_on]) if "track_every" in attack.settings else None
                result = craft(attack, model, x_craft, track=track)
                torch.save({"perturbation": result.perturbation, "norm": attack.norm, "eps": attack.eps},
                           out_dir / f"{name}-{crafted_on}.pt")
                per_target = {t: evaluate_perturbation(m, result.perturbation, xe, ye, norm=attack.norm,
                                                       target=attack.target, clean_labels=clean[t])
                              for t, m in targets.items()}
                n_craft = len(x_craft)
            else:
                result = craft(attack, model, x_att, y_att)
                per_target = {}
                for t, m in targets.items():
                    adv = labels_of(m, result.adversarials)
                    per_target[t] = {**label_metrics(clean_att[t], adv, y_att, attack.target),
                                     "achieved_norm": result.metrics["achieved_norm"]}
                n_craft = len(x_att)
            row = []
            for evaluated_on, m in per_target.items():
                e = entry(result, m, source=inp.source.name, crafted_on=crafted_on, evaluated_on=evaluated_on,
                          craft_images=n_craft)
                e.update(extra)
                if attack.black_box:
                    e.update(black_box_fields(result, attack))
                entries.append(e)
                row.append(m["fooling_rate"])
            rows.append(crafted_on)
            values.append(row)
        transfer[name] = {"rows": rows, "cols": list(targets), "values": values, "metric": "fooling_rate",
                          "norm": attack.norm, "eps": attack.eps}
        slug = name.replace("-", "_")
        # headline: crafted on the nearest white box (black boxes: on what ships), evaluated on what ships
        crafted_main = final if attack.black_box else nearest
        main = next(e for e in entries if e["attack"] == name and e["crafted_on"] == crafted_main
                    and e["evaluated_on"] == final)
        heads: dict[str, float] = {}
        if attack.universal:
            heads[f"{slug}_fooling_rate"] = main["fooling_rate"]
        else:
            heads[f"{slug}_robust_acc"] = main["robust_acc"]
        if "n_images" in attack.settings:
            heads[f"{slug}_clean_acc"] = main["clean_acc"]
        if attack.black_box:
            heads[f"{slug}_queries"] = float(main["queries_per_image"])
        metrics.update(heads)
        for key in heads:  # directions come from suite.core.metrics; neutral facts get none
            if higher_is_better(key) is not None:
                hib[key] = bool(higher_is_better(key))
        if multiples and attack.sweepable:
            x_ev, y_ev, clean_ev = (xe, ye, clean) if attack.universal else (x_att, y_att, clean_att)
            main["sweep"] = budget_sweep(
                lambda eps: build_attack(name, **{**settings, "eps": eps}), crafters[crafted_main], targets[final],
                norm=attack.norm, base_eps=attack.eps, multiples=multiples, x_craft=craft_sets.get(crafted_main, xc),
                x_eval=x_ev, y_eval=y_ev, clean_eval=clean_ev[final], seed=cfg.seed,
                base_point={k: main[k] for k in ("fooling_rate", "robust_acc", "clean_acc", "seconds")},
                craft=craft)
            budgets = ", ".join(f"{point['eps']:.4g}" for point in main["sweep"])
            inp.log(f"{name}: budget sweep at eps {budgets}")
    return StageOutput(attacks=entries, transfer=transfer, metrics=metrics, higher_is_better=hib)


STAGE = ListedStage("attack", "attacks", run_attack_stage)
"""The run's attack stage (:class:`suite.core.stages.Stage`): runs when ``config.attacks`` is not empty."""
