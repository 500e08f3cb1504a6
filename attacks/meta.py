"""Meta-learned universal perturbations: MAML + a learned optimizer, and the two ablations.

A *task* is an (image source, victim model) pair at the source's own
resolution.  Meta-training sees several tasks and learns, per variant:

``meta``  (``uap-meta``) a :class:`LearnedOptimizer` *and* a :class:`MetaInit`
          with the MAML outer loop: on each sampled task, ``K`` inner steps of
          the learned optimizer on ``support`` images from ``init + jitter``;
          the outer loss is the UAP loss of the adapted perturbation on
          *other* (query) images of the task, at several inner steps.
``maml``  (``uap-maml``) only the :class:`MetaInit`; the inner steps are
          plain sign-gradient (Linf) or normalised-gradient (L2) steps.
``l2o``   (``uap-l2o``) only the learned optimizer, trained the classic
          learning-to-optimise way: random start, loss summed along the
          trajectory on the *same* images it optimises (no support/query
          split, no outer loop over adaptation).

Meta-gradients are first order by default (the victim's input gradient is
treated as a constant, as Andrychowicz et al. do; ``second_order=True``
differentiates through it too); the path through the updates and the
projections is exact.  Victim weights never change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from attacks.base import Attack, AttackResult, positive
from attacks.learned import LearnedOptimizer, MetaInit
from attacks.losses import margin_loss
from attacks.norms import apply_perturbation, check_budget, project
from attacks.uap import CraftSession, cosine_fraction, gradient_step, random_start
from attacks.victim import Model, labels_of
from suite.core.errors import ArtifactError, ConfigError
from suite.core.files import json_digest
from suite.core.settings import Field
from suite.core.sources.base import ImageSplit
from suite.core.store import Store

VARIANTS = ("meta", "maml", "l2o")
FORMAT = 5


@dataclass
class Task:
    """One meta-training task: a victim model and the craft images of its source.

    images: the task's *craft* split (meta-training never sees its test split).
    arch / family: the victim's architecture and the source's dataset family
        (provenance: held-out checks read them from the trained state).
    eps: the task's budget (its source's standard one); None: the config's.
    """

    name: str
    source: str
    model: torch.nn.Module
    images: ImageSplit
    model_id: str = ""
    arch: str = ""
    family: str | None = None
    eps: float | None = None

    def budget(self, cfg: "MetaConfig") -> float:
        return float(self.eps) if self.eps is not None else cfg.eps

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.images.shape[1:])  # type: ignore[return-value]


@dataclass(frozen=True)
class MetaConfig:
    """Meta-training settings (part of the cache key).

    inner_steps: K adaptation steps unrolled per meta-iteration.
    support / query: images per task per meta-iteration (query: ``meta`` and
        ``maml`` only; drawn disjoint from the support images).
    meta_steps: outer iterations; tasks_per_step: tasks sampled per outer
        iteration (their meta-losses averaged: a meta-batch);
        lr: Adam learning rate of the meta-parameters.
    inner_step_size: ``maml`` first inner step, as a fraction of ``eps`` (cosine
        decay over the run, as ``uap-pgd``); also the learned optimizer's
        initial first step (``meta`` / ``l2o``).
    jitter: random start around the learned init, as a fraction of the budget.
    """

    variant: str = "meta"
    norm: str = "linf"
    eps: float = 10 / 255
    inner_steps: int = 10
    support: int = 32
    query: int = 32
    meta_steps: int = 150
    tasks_per_step: int = 2
    lr: float = 0.01
    hidden: int = 20
    base: int = 32
    inner_step_size: float = 1.0
    jitter: float = 0.25
    correction: str = "gate"
    second_order: bool = False
    kappa: float = 5.0
    seed: int = 0

    def validate(self) -> "MetaConfig":
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown meta variant {self.variant!r} (choices: {', '.join(VARIANTS)})")
        norm, eps = check_budget(self.norm, self.eps)
        for name in ("inner_steps", "support", "query", "meta_steps", "tasks_per_step", "hidden", "base"):
            positive(name, getattr(self, name), integer=True)
        for name in ("lr", "inner_step_size", "kappa"):
            positive(name, getattr(self, name))
        if self.correction not in LearnedOptimizer.CORRECTIONS:
            raise ConfigError(f"unknown correction {self.correction!r} "
                              f"(choices: {', '.join(LearnedOptimizer.CORRECTIONS)})")
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"jitter must be in [0, 1], got {self.jitter}")
        return dataclasses.replace(self, norm=norm, eps=eps)


@dataclass
class MetaState:
    """A meta-trained attacker: learned optimizer and/or init, plus how it was made."""

    config: MetaConfig
    optimizer: LearnedOptimizer | None
    init: MetaInit | None
    info: dict[str, Any] = field(default_factory=dict)

    def state_dict(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for prefix, module in (("optimizer.", self.optimizer), ("init.", self.init)):
            if module is not None:
                out.update({prefix + k: v.detach().clone() for k, v in module.state_dict().items()})
        return out


def _modules(cfg: MetaConfig) -> tuple[LearnedOptimizer | None, MetaInit | None]:
    opt = (LearnedOptimizer(cfg.hidden, a_max=cfg.inner_step_size, correction=cfg.correction)
           if cfg.variant in ("meta", "l2o") else None)
    init = MetaInit(3, cfg.base) if cfg.variant in ("meta", "maml") else None
    return opt, init


# -------------------------------------------------------------- inner loop
def start_point(state: MetaState, shape: tuple[int, int, int], norm: str, eps: float,
                gen: torch.Generator) -> torch.Tensor:
    """Where adaptation starts: the learned init plus jitter, or a random point (``l2o``)."""
    jitter = random_start(shape, norm, eps, gen, fraction=state.config.jitter if state.init else 1.0)
    if state.init is None:
        return jitter
    return project(state.init(shape, norm=norm, eps=eps) + jitter, norm, eps)


def inner_loop(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, labels: torch.Tensor,
               v: torch.Tensor, state: MetaState, *, steps: int, norm: str, eps: float,
               target: int | None = None, on_step: Callable[[int, torch.Tensor], None] | None = None,
               batch_size: int | None = None, gen: torch.Generator | None = None,
               second_order: bool = False) -> torch.Tensor:
    """``steps`` adaptation steps of ``v`` on ``(x, labels)``; keeps the graph to the meta-parameters.

    The input gradient at each step is taken at a detached copy of ``v``
    (first-order meta-gradients) unless ``second_order`` (then through the
    victim's Hessian-vector products, about 2.3x the time).  ``on_step(k, v)`` is called after step k.
    ``batch_size``: draw a mini-batch per step (seeded by ``gen``) if fewer
    than the images given.
    """
    cfg = state.config
    opt_state = state.optimizer.init_state(v.numel()) if state.optimizer is not None else None
    for k in range(steps):
        if batch_size is not None and batch_size < len(x):
            idx = torch.randperm(len(x), generator=gen)[:batch_size]
            xb, lb = x[idx], labels[idx]
        else:
            xb, lb = x, labels
        vd = v if second_order and v.requires_grad else v.detach().requires_grad_(True)
        loss = margin_loss(fn(apply_perturbation(xb, vd)), lb, target, cfg.kappa)
        (grad,) = torch.autograd.grad(loss, vd, create_graph=second_order)
        if state.optimizer is not None:
            delta, opt_state = state.optimizer(grad, v, opt_state, k / max(1, steps - 1), norm=norm, eps=eps)
            v = project(v + delta, norm, eps)
        else:
            v = gradient_step(v, grad, norm, eps,
                              cfg.inner_step_size * eps * cosine_fraction(k / max(1, steps - 1)))
        if on_step is not None:
            on_step(k + 1, v)
    return v


# ------------------------------------------------------------ meta-training
def _episode(task: Task, state: MetaState, cfg: MetaConfig, labels: torch.Tensor,
             gen: torch.Generator) -> torch.Tensor:
    """One task's meta-loss: adapt on support images, score the adapted UAP on query images (graph kept)."""
    x_all, _ = task.images.tensors()
    perm = torch.randperm(len(x_all), generator=gen)
    s_idx = perm[:cfg.support]
    x_s, l_s = x_all[s_idx], labels[s_idx]
    if cfg.variant == "l2o":
        x_q, l_q = x_s, l_s
    else:
        q_idx = perm[cfg.support:cfg.support + cfg.query]
        x_q, l_q = x_all[q_idx], labels[q_idx]
    terms: list[torch.Tensor] = []
    k_total = cfg.inner_steps
    checkpoints = set(range(1, k_total + 1)) if cfg.variant == "l2o" else {max(1, k_total // 2), k_total}

    def on_step(k: int, v: torch.Tensor) -> None:
        if k in checkpoints:
            terms.append((k / k_total) * margin_loss(task.model(apply_perturbation(x_q, v)), l_q,
                                                     None, cfg.kappa))

    eps = task.budget(cfg)
    v0 = start_point(state, task.shape, cfg.norm, eps, gen)
    inner_loop(task.model, x_s, l_s, v0, state, steps=k_total, norm=cfg.norm, eps=eps, on_step=on_step,
               second_order=cfg.second_order)
    return torch.stack(terms).sum() / sum(k / k_total for k in checkpoints)


def meta_train(tasks: list[Task], cfg: MetaConfig, *, progress: bool = True,
               desc: str = "meta-train") -> MetaState:
    """Meta-train the variant ``cfg.variant`` over ``tasks``; returns the trained state."""
    from tqdm import tqdm

    cfg = cfg.validate()
    if not tasks:
        raise ConfigError("meta-training needs at least one task")
    for t in tasks:
        need = cfg.support + (cfg.query if cfg.variant != "l2o" else 0)
        if len(t.images) < need:
            raise ConfigError(f"task {t.name} has {len(t.images)} craft images; meta-training needs {need}")
        t.model.eval()
    torch.manual_seed(cfg.seed)
    opt, init = _modules(cfg)
    state = MetaState(cfg, opt, init)
    params = [p for m in (opt, init) if m is not None for p in m.parameters()]
    adam = torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    clean_labels = {t.name: labels_of(t.model, t.images.tensors()[0]) for t in tasks}
    losses: list[float] = []
    started = time.perf_counter()
    bar = tqdm(range(cfg.meta_steps), desc=desc, disable=None if progress else True, leave=False)
    for it in bar:
        batch_losses = []
        for _ in range(cfg.tasks_per_step):
            task = tasks[int(torch.randint(len(tasks), (1,), generator=gen))]
            batch_losses.append(_episode(task, state, cfg, clean_labels[task.name], gen))
        meta_loss = torch.stack(batch_losses).mean()
        grads = torch.autograd.grad(meta_loss, params, allow_unused=True)
        for p, g in zip(params, grads):
            p.grad = torch.zeros_like(p) if g is None else g
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        adam.step()
        losses.append(float(meta_loss.detach()))
        if it % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    state.info = {"variant": cfg.variant, "tasks": [task_provenance(t, cfg) for t in tasks],
                  "meta_loss_first": losses[:10], "meta_loss_last": losses[-10:],
                  "seconds": round(time.perf_counter() - started, 3), "config": dataclasses.asdict(cfg)}
    return state


def task_provenance(task: Task, cfg: MetaConfig) -> dict[str, Any]:
    """What a trained state records about one of its tasks (held-out checks read ``source``, ``family``, ``arch``)."""
    return {"name": task.name, "source": task.source, "family": task.family, "arch": task.arch,
            "model": task.model_id, "shape": list(task.shape), "eps": task.budget(cfg),
            "images": len(task.images)}


# ------------------------------------------------------------------ caching
def meta_key_payload(cfg: MetaConfig, tasks: list[Task]) -> dict[str, Any]:
    """What determines a meta-trained state: the settings and each task's (source, model sha, shape, budget)."""
    return {"cfg": dataclasses.asdict(cfg), "format": FORMAT,
            "tasks": sorted([t.source, t.model_id, list(t.shape), t.budget(cfg)] for t in tasks)}


def save_state(state: MetaState, directory: Path) -> None:
    """Write ``state.pt`` (tensors only) and ``meta.json`` (config, info, sha256) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state.state_dict(), directory / "state.pt")
    digest = hashlib.sha256((directory / "state.pt").read_bytes()).hexdigest()
    (directory / "meta.json").write_text(json.dumps({"format": FORMAT, "config": dataclasses.asdict(state.config),
                                                     "info": state.info, "sha256": digest}, indent=1))


def load_state(directory: str | os.PathLike) -> MetaState:
    """Load a saved meta-trained state (``weights_only=True``); ArtifactError if corrupt."""
    d = Path(directory)
    try:
        meta = json.loads((d / "meta.json").read_text())
        blob = (d / "state.pt").read_bytes()
    except (OSError, ValueError) as err:
        raise ArtifactError(f"meta-trained attacker in {d} is unreadable: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"meta-trained attacker in {d}: unknown format")
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise ArtifactError(f"meta-trained attacker in {d}: state.pt does not match its sha256")
    try:
        cfg = MetaConfig(**meta["config"]).validate()
        import io

        tensors = torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")
        opt, init = _modules(cfg)
        for prefix, module in (("optimizer.", opt), ("init.", init)):
            if module is not None:
                module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    except (TypeError, KeyError, RuntimeError, ValueError) as err:
        raise ArtifactError(f"meta-trained attacker in {d} is corrupt: {str(err).splitlines()[0]}") from None
    return MetaState(cfg, opt, init, meta.get("info", {}))


def get_meta_state(tasks: list[Task], cfg: MetaConfig, cache_dir: str | os.PathLike, *, progress: bool = True,
                   log: Callable[[str], None] = lambda m: None) -> tuple[MetaState, Path, bool]:
    """Load the meta-trained state for ``(cfg, tasks)`` from the cache, training it on a miss.

    Returns ``(state, entry_dir, cache_hit)``.  Entries are published
    atomically; a corrupt entry is reported and retrained.
    """
    cfg = cfg.validate()
    payload = meta_key_payload(cfg, tasks)
    key = json_digest(payload)

    def load(entry: Path) -> MetaState:
        state = load_state(entry)
        state.info["key"] = key[:24]
        return state

    def build(tmp: Path) -> MetaState:
        state = meta_train(tasks, cfg, progress=progress, desc=f"meta-train uap-{cfg.variant}")
        state.info["key"] = key[:24]
        save_state(state, tmp)
        return state

    got = Store(cache_dir, "meta").get_or_build(
        payload, build, load, name=f"{cfg.variant}/{key[:24]}", corrupt=(ArtifactError,), legacy=True,
        warn=lambda entry, why: log(f"warning: meta-trained attacker in {entry} is corrupt ({why}); "
                                    "meta-training again"))
    return got.value, got.path, got.hit


# ------------------------------------------------------------------ attacks
def _meta_state(meta: Any) -> "MetaState":
    """The ``meta`` setting: a MetaState as is, a directory loaded (ArtifactError if corrupt)."""
    return meta if isinstance(meta, MetaState) else load_state(meta)


class MetaUAP(Attack):
    """Few-shot UAP adaptation with a meta-trained state (``uap-meta`` / ``uap-maml`` / ``uap-l2o``).

    meta: a :class:`MetaState` or the directory of a saved one (from
        ``suite meta-train`` or the run's cache).  Its norm is used; ``eps``
        may differ (features and steps are in budget units).
    steps: adaptation steps (default 10); batch_size: images per step (all
        given images if fewer).
    """

    variant = "meta"
    SETTINGS = Attack.SETTINGS.extend(
        meta=Field(None, object, optional=True, parse=_meta_state,
                   doc="a MetaState or the directory of a saved one (loaded at construction)"),
        steps=Field(10, int, gt=0, doc="adaptation steps"), batch_size=Field(32, int, gt=0),
        track_every=Field(1, int, gt=0, doc="held-out tracking period (steps)"),
        profiles={"smoke": {"steps": 3}})

    def validate(self) -> None:
        super().validate()
        if self.meta is None:
            raise ConfigError(f"{self.name} needs a meta-trained attacker: pass meta=DIR (see `suite meta-train`)")
        if self.meta.config.variant != self.variant:
            raise ConfigError(f"{self.name} needs a '{self.variant}' meta-trained state, "
                              f"got '{self.meta.config.variant}'")
        if self.meta.config.norm != self.norm:
            raise ConfigError(f"the meta-trained state is for {self.meta.config.norm}, not {self.norm}")

    def __repr__(self) -> str:
        shown = {**self.settings, "meta": self.meta.info.get("key", "<in memory>")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def craft(self, model: Model, x: torch.Tensor, *, track: tuple[torch.Tensor, torch.Tensor] | None = None
              ) -> AttackResult:
        session = CraftSession.open(self, model, x, track, self.track_every)
        counter, watch, gen, clean, tracker = (session.counter, session.watch, session.gen, session.clean,
                                               session.tracker)
        shape = tuple(int(s) for s in x.shape[1:])
        with torch.no_grad():
            v = start_point(self.meta, shape, self.norm, self.eps, gen)  # type: ignore[arg-type]
        tracker(v, 0, 0, watch())
        v = inner_loop(counter, x, clean, v, self.meta, steps=self.steps, norm=self.norm, eps=self.eps,
                       target=self.target, batch_size=self.batch_size, gen=gen,
                       on_step=lambda k, vk: tracker(vk.detach(), k, counter.grad_queries, watch()))
        return session.finish(self, x, v.detach(), steps=self.steps, converged=True)


class UAPMeta(MetaUAP):
    """MAML-meta-trained learned optimizer and initialisation (the suite's meta attack)."""

    name = "uap-meta"
    variant = "meta"


class UAPMAML(MetaUAP):
    """Ablation: MAML-learned initial perturbation, plain gradient steps."""

    name = "uap-maml"
    variant = "maml"


class UAPL2O(MetaUAP):
    """Ablation: learned optimizer trained without the MAML outer loop, random start."""

    name = "uap-l2o"
    variant = "l2o"
