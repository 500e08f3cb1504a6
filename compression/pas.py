"""Pruning-as-Search (PaS): learn per-layer widths with binary channel gates.

1. After the BatchNorm of every prunable conv a :class:`BinaryGate` -- a
   depth-wise 1x1 conv, one weight per channel, initialised to 1 -- scales
   each channel by ``1[w >= 0.5]`` in the forward pass; the backward pass is a
   straight-through estimator (the gradient reaches ``w`` as if the gate were
   ``w`` itself).  Channels that torch-pruning's dependency graph couples
   (every conv/BN feeding one residual sum, MobileNetV2's expand conv and its
   depth-wise conv, ...) form one *coupling group* and share ONE gate, which
   is applied after every BatchNorm of the group, so the gated network
   computes exactly what the physically pruned network will.
2. Network and gates train together on ``loss = CE + alpha * ((MACs -
   target) / dense)^2`` where ``MACs`` is the MAC count of the prunable layers
   computed from the gates' channel counts (binarised values forward, STE
   backward): per conv ``kh*kw * (cin_kept/groups) * cout_kept * Hout*Wout``
   (a depth-wise conv costs ``kh*kw * c_kept * Hout*Wout``), per Linear
   ``in_kept * out``.  ``target = (1 - sparsity) * dense`` (``sparsity`` =
   fraction of the prunable layers' MACs to remove).
3. Each group keeps ``max(#gates >= 0.5, ceil(8 % of C), 1)`` channels -- those
   with the largest gate values, ties broken by L2 group magnitude -- the rest
   are removed physically by :mod:`compression.channel` (torch-pruning), and
   the gates are removed.  Just before, the gates are set to exactly that
   choice and the BatchNorm statistics re-estimated on the train split (they
   were gathered while the architecture kept changing).

Prunable layers are those of :func:`compression.channel.prune_channels`
(every Conv2d/Linear except the first conv and the classifier; the first
conv's output group is never gated).  The model is modified IN PLACE (trained
weights, then pruned); the report is JSON-ready and holds no tensors.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from compression.channel import (
    GroupInfo,
    _check_sparsity,
    _ignored_roots,
    apply_plan,
    build_graph,
    compute_layers,
    group_scores,
    make_importance,
    prunable_groups,
    prunable_layer_names,
)
from suite.core.errors import ConfigError
from suite.core.sources.base import ImageSource, ImageSplit
from suite.core.training import augment_batch, lr_at
from suite.core.zoo.profile import count_macs, count_params, layer_table

__all__ = ["BinaryGate", "GateSet", "PaSReport", "attach_gates", "pas_prune"]

MIN_KEEP_FRACTION = 0.08


# ----------------------------------------------------------------------------
# gates


class BinaryGate(nn.Conv2d):
    """Depth-wise 1x1 conv ``C -> C`` (weight ``[C, 1, 1, 1]``, init 1, no bias) with binarised weights.

    forward: ``x [N, C, H, W] -> x * b`` with ``b = 1[w >= 0.5]`` per channel
    (the depth-wise 1x1 conv with weight ``b``, computed as a broadcast
    product); backward: straight-through, ``d out / d w = d out / d b``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 1, groups=channels, bias=False)
        with torch.no_grad():
            self.weight.fill_(1.0)

    def binary(self) -> torch.Tensor:
        """``[C]`` gate values in {0, 1}; the gradient flows to ``weight`` unchanged."""
        w = self.weight.view(-1)
        hard = (w >= 0.5).to(w.dtype)
        return w + (hard - w).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.binary().view(1, -1, 1, 1)

    def count(self) -> torch.Tensor:
        """Scalar: kept channels (binarised sum, STE gradient 1 per gate)."""
        return self.binary().sum()


@dataclass
class _LayerCost:
    """MAC model of one prunable Conv2d/Linear (one image).

    macs = k * hw * cin * cout (``cin`` = input channels per group), or
    k * hw * cout for a depth-wise conv; ``*_group`` index the gate that
    sets the count, ``None`` for a fixed count (``*_fixed``).
    """

    name: str
    k: int
    hw: int
    depthwise: bool
    groups: int
    out_group: int | None
    out_fixed: int
    in_group: int | None
    in_fixed: int


class GateSet:
    """Gates of one model (one per coupling group), attached with forward hooks.

    Hooks are removed with :meth:`remove`; the gates are not submodules of the
    model, so its state dict is untouched.
    """

    def __init__(self, groups: list[GroupInfo], costs: list[_LayerCost], hooks: list[Any],
                 graph: Any = None) -> None:
        self.groups = groups
        self.graph = graph  # torch-pruning DependencyGraph of the unpruned model
        self.gates = nn.ModuleList([BinaryGate(g.channels) for g in groups])
        self.costs = costs
        self._hooks = hooks
        with torch.no_grad():
            self.dense_macs = float(self.macs())

    # -- MAC model ----------------------------------------------------------
    def _count(self, gid: int | None, fixed: int) -> torch.Tensor | float:
        return float(fixed) if gid is None else self.gates[gid].count()

    def macs(self) -> torch.Tensor:
        """Scalar: MACs (one image) of the prunable layers at the current gates, differentiable (STE)."""
        total: torch.Tensor | float = 0.0
        for c in self.costs:
            cout = self._count(c.out_group, c.out_fixed)
            if c.depthwise:
                total = total + c.k * c.hw * cout
            else:
                cin = self._count(c.in_group, c.in_fixed)
                total = total + c.k * c.hw * (cin / c.groups) * cout
        if not isinstance(total, torch.Tensor):
            total = torch.tensor(float(total))
        return total

    # -- outcome ---------------------------------------------------------------
    def kept_counts(self) -> list[int]:
        """Per group: ``max(#gates >= 0.5, ceil(8 % of C), 1)``."""
        out = []
        for g, gate in zip(self.groups, self.gates):
            on = int((gate.weight.detach().view(-1) >= 0.5).sum())
            out.append(min(g.channels, max(on, math.ceil(MIN_KEEP_FRACTION * g.channels), 1)))
        return out

    def plan(self, scores: list[torch.Tensor]) -> dict[str, list[int]]:
        """``{root: channels to remove}``: keep the largest gates (ties: largest ``scores``)."""
        plan = {}
        for g, gate, keep, s in zip(self.groups, self.gates, self.kept_counts(), scores):
            w = gate.weight.detach().view(-1).double().cpu()
            by_score = torch.sort(s, descending=True, stable=True).indices
            order = by_score[torch.sort(w[by_score], descending=True, stable=True).indices]
            plan[g.root] = sorted(int(i) for i in order[keep:])
        return plan

    def set_plan(self, plan: dict[str, list[int]]) -> None:
        """Set every gate to 1 except the channels ``plan`` removes (0)."""
        with torch.no_grad():
            for g, gate in zip(self.groups, self.gates):
                w = gate.weight.view(-1)
                w.fill_(1.0)
                w[list(plan.get(g.root, []))] = 0.0

    def remove(self) -> None:
        """Detach the gates from the model (the model computes as without gates)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []


def _gate_hook(gates: nn.ModuleList, gid: int):
    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        return gates[gid](out)

    return hook


def _layer_costs(rows: list[dict], prunable: list[str], groups: list[GroupInfo]) -> list[_LayerCost]:
    out_of = {n: i for i, g in enumerate(groups) for n in g.out_layers}
    in_of = {n: i for i, g in enumerate(groups) for n in g.in_layers}
    keep = set(prunable)
    costs = []
    for r in rows:
        if r["name"] not in keep:
            continue
        if r["type"] == "Conv2d":
            kh, kw = r["kernel_size"]
            oh, ow = r["output_shape"][-2:]
            cin, cout, grp = r["in_channels"], r["out_channels"], r["groups"]
            k, hw = kh * kw, oh * ow
        else:
            cin, cout, grp = r["in_features"], r["out_features"], 1
            k, hw = 1, int(np.prod(r["output_shape"][:-1] or (1,)))
        dw = grp > 1 and grp == cin == cout
        costs.append(_LayerCost(r["name"], int(k), int(hw), dw, grp, out_of.get(r["name"]), int(cout),
                                in_of.get(r["name"]), int(cin)))
    return costs


def attach_gates(model: nn.Module, input_shape: tuple[int, int, int], *, keep_first: bool = True,
                 keep_classifier: bool = True) -> GateSet:
    """Attach one :class:`BinaryGate` per prunable coupling group of ``model``.

    The gate of a group multiplies the output of every BatchNorm in the group
    (the group's output layers' outputs when it has no BatchNorm).
    """
    shape = tuple(int(s) for s in input_shape)
    rows = compute_layers(model, shape)
    prunable = prunable_layer_names(model, rows, keep_first, keep_classifier)
    DG = build_graph(model, shape)
    groups = [info for _, info in prunable_groups(model, DG, _ignored_roots(model, rows, keep_first))]
    costs = _layer_costs(rows, prunable, groups)
    gs = GateSet(groups, costs, [], DG)
    mods = dict(model.named_modules())
    for gid, g in enumerate(groups):
        for name in g.norms or g.out_layers:
            gs._hooks.append(mods[name].register_forward_hook(_gate_hook(gs.gates, gid)))
    return gs


# ----------------------------------------------------------------------------
# report


@dataclass
class PaSReport:
    """Outcome of :func:`pas_prune`.

    MACs are per image of ``input_shape``: ``macs_*`` for the whole model,
    ``prunable_macs_*`` for the prunable layers (what the target refers to;
    ``prunable_macs_target = (1 - sparsity) * prunable_macs_before``).
    ``search_macs``: prunable MACs of the gated network at the end of the
    search.  ``search_seconds``: wall time of the joint training;
    ``seconds``: the whole call (tracing, search, pruning).
    ``final_ce`` / ``final_mac_term``: last-epoch means of the cross-entropy
    and of ``((MACs - target) / dense)^2``; ``final_loss = final_ce + alpha *
    final_mac_term``.  ``widths``: ``{layer: [out_before, out_after]}`` of
    every Conv2d/Linear; ``epoch_log``: per-epoch means; ``history``:
    torch-pruning's pruning history (as in
    :func:`compression.channel.channel_plan_json`).
    """

    sparsity: float
    alpha: float
    epochs: int
    seconds: float
    search_seconds: float
    macs_before: int
    macs_after: int
    prunable_macs_before: int
    prunable_macs_target: int
    prunable_macs_after: int
    search_macs: int
    params_before: int
    params_after: int
    final_ce: float
    final_mac_term: float
    final_loss: float
    widths: dict[str, list[int]] = field(default_factory=dict)
    epoch_log: list[dict] = field(default_factory=list)
    history: list[list[Any]] = field(default_factory=list)

    @property
    def achieved_sparsity(self) -> float:
        """Fraction of the prunable layers' MACs removed."""
        return 1.0 - self.prunable_macs_after / max(1, self.prunable_macs_before)

    def as_dict(self) -> dict:
        """JSON-ready summary (without the index-level pruning history)."""
        d = {k: getattr(self, k) for k in (
            "sparsity", "alpha", "epochs", "macs_before", "macs_after", "prunable_macs_before",
            "prunable_macs_target", "prunable_macs_after", "search_macs", "params_before", "params_after")}
        d.update(seconds=round(self.seconds, 3), search_seconds=round(self.search_seconds, 3),
                 achieved_sparsity=round(self.achieved_sparsity, 6),
                 final_ce=round(self.final_ce, 6), final_mac_term=round(self.final_mac_term, 8),
                 final_loss=round(self.final_loss, 6), widths=self.widths, epoch_log=self.epoch_log)
        return d


# ----------------------------------------------------------------------------
# search


def _check_args(epochs: object, alpha: object, lr: object, gate_lr: object, batch_size: object) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"PaS epochs must be a positive integer, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise ConfigError(f"PaS batch_size must be an integer >= 2, got {batch_size!r}")
    for name, v, lo_ok in (("alpha", alpha, True), ("lr", lr, False), ("gate_lr", gate_lr, False)):
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(float(v)) or \
                float(v) < 0 or (float(v) == 0 and not lo_ok):
            raise ConfigError(f"PaS {name} must be a finite number {'>=' if lo_ok else '>'} 0, got {v!r}")


def _prunable_macs(model: nn.Module, shape: tuple[int, ...], names: set[str]) -> int:
    return int(sum(r["macs"] for r in layer_table(model, shape) if r["name"] in names))


def _weight_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                           lr=lr, momentum=0.9, nesterov=True)


def _search(model: nn.Module, gs: GateSet, split: ImageSplit, *, target: float, epochs: int, alpha: float,
            lr: float, gate_lr: float, batch_size: int, seed: int, device: torch.device, augment: str,
            quiet: bool) -> list[dict]:
    """Train ``model`` and the gates jointly; returns per-epoch means ``{ce, mac_term, macs}``."""
    gen = torch.Generator().manual_seed(seed)
    opt_w = _weight_optimizer(model, lr)
    opt_g = torch.optim.SGD(gs.gates.parameters(), lr=gate_lr, momentum=0.0)
    n = len(split)
    total = epochs * max(1, math.ceil(n / batch_size))
    dense = gs.dense_macs
    log, step = [], 0
    bar = tqdm(total=total, desc="pas", leave=False, unit="step", disable=True if quiet else None)
    try:
        for _ in range(epochs):
            model.train()
            order = torch.randperm(n, generator=gen).numpy()
            sums = {"ce": 0.0, "mac_term": 0.0, "macs": 0.0}
            seen = 0
            for i in range(0, n, batch_size):
                idx = np.sort(order[i:i + batch_size])
                if len(idx) < 2:  # batch norm needs two samples per channel
                    continue
                x, y = split.tensors(idx)
                x = augment_batch(x, augment, gen).to(device)
                y = y.to(device)
                for opt, peak in ((opt_w, lr), (opt_g, gate_lr)):
                    for group in opt.param_groups:
                        group["lr"] = lr_at(step, total, 0, peak)
                ce = F.cross_entropy(model(x), y)
                macs = gs.macs()
                mac_term = ((macs - target) / dense) ** 2
                loss = ce + alpha * mac_term
                opt_w.zero_grad(set_to_none=True)
                opt_g.zero_grad(set_to_none=True)
                loss.backward()
                opt_w.step()
                opt_g.step()
                with torch.no_grad():
                    for gate in gs.gates:
                        gate.weight.clamp_(0.0, 1.0)
                for k, v in (("ce", ce), ("mac_term", mac_term), ("macs", macs)):
                    sums[k] += float(v.detach())
                seen += 1
                step += 1
                bar.update(1)
            log.append({k: v / max(1, seen) for k, v in sums.items()})
            bar.set_postfix(ce=f"{log[-1]['ce']:.3f}", macs=f"{log[-1]['macs'] / dense:.3f}")
    finally:
        bar.close()
    return log


@torch.no_grad()
def recalibrate_bn(model: nn.Module, split: ImageSplit, *, device: torch.device, batch_size: int = 64,
                   max_images: int = 2048) -> int:
    """Re-estimate every BatchNorm's running mean/var on up to ``max_images`` train images.

    Uses a cumulative average (``momentum=None``) over the first images of
    ``split`` with the model in train mode and no gradient; the weights are
    untouched.  Needed after the search because the statistics were gathered
    while the gates kept changing the architecture.  Returns images used.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or len(split) < 2:
        return 0
    flags = [(m, m.training) for m in model.modules()]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    n = min(len(split), max_images)
    used = 0
    try:
        for i in range(0, n, batch_size):
            x, _ = split.tensors(slice(i, min(n, i + batch_size)))
            if len(x) < 2:
                break
            model(x.to(device))
            used += len(x)
    finally:
        for m, mom in zip(norms, momenta):
            m.momentum = mom
        for m, flag in flags:
            m.training = flag
    return used


def pas_prune(
    model: nn.Module,
    source: ImageSource | ImageSplit,
    input_shape: tuple[int, int, int],
    sparsity: float,
    *,
    epochs: int = 3,
    alpha: float = 5.0,
    lr: float = 0.01,
    gate_lr: float = 0.05,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "cpu",
    quiet: bool = True,
    augment: str = "none",
    keep_first: bool = True,
    keep_classifier: bool = True,
) -> PaSReport:
    """Search per-layer widths with PaS, then prune ``model`` IN PLACE to them.

    source: an :class:`ImageSource` (its ``train`` split is used) or a split.
    input_shape: ``(C, H, W)`` of one image (MAC counting and tracing).
    sparsity: fraction in ``[0, 1)`` of the prunable layers' MACs to remove.
    epochs / batch_size / lr: joint training (SGD, Nesterov momentum 0.9,
        weight decay 5e-4, cosine schedule); gate_lr: plain SGD on the gates
        (constant), gates clipped to ``[0, 1]`` after every step.
    alpha: weight of the MAC penalty ``((MACs - target) / dense)^2``.
    augment: ``"none"``, ``"shift"`` or ``"shift-flip"`` (see :func:`suite.core.training.augment_batch`).
    Deterministic given ``seed`` (batch order/augmentation from a private
    generator).  Returns a :class:`PaSReport`; ``model`` ends in eval mode.
    """
    target_frac = 1.0 - _check_sparsity(sparsity)
    _check_args(epochs, alpha, lr, gate_lr, batch_size)
    if augment not in ("none", "shift", "shift-flip"):
        raise ConfigError(f"PaS augment must be none, shift or shift-flip, got {augment!r}")
    split = source.train if isinstance(source, ImageSource) else source
    shape = tuple(int(s) for s in input_shape)
    dev = torch.device(device)
    model.to(dev)
    rows = compute_layers(model, shape)
    prunable = set(prunable_layer_names(model, rows, keep_first, keep_classifier))
    macs_before, params_before = count_macs(model, shape), count_params(model)
    widths_before = {r["name"]: int(r.get("out_channels", r.get("out_features", 0))) for r in rows}

    start = time.perf_counter()
    gs = attach_gates(model, shape, keep_first=keep_first, keep_classifier=keep_classifier)
    if not gs.groups or gs.dense_macs <= 0:
        gs.remove()
        raise ConfigError("PaS: the model has no prunable channel group")
    gs.gates.to(dev)
    target = target_frac * gs.dense_macs
    try:
        t0 = time.perf_counter()
        log = _search(model, gs, split, target=target, epochs=epochs, alpha=float(alpha), lr=float(lr),
                      gate_lr=float(gate_lr), batch_size=batch_size, seed=seed, device=dev,
                      augment=augment, quiet=quiet)
        search_seconds = time.perf_counter() - t0
        with torch.no_grad():
            search_macs = int(round(float(gs.macs())))
        DG = gs.graph  # same modules, trained weights: reuse the trace
        scorer = make_importance("l2")
        by_root = {info.root: group_scores(g, scorer)
                   for g, info in prunable_groups(model, DG, _ignored_roots(model, rows, keep_first))}
        plan = gs.plan([by_root[g.root] for g in gs.groups])
        gs.set_plan(plan)  # now the gated network computes exactly the pruned one
        recalibrate_bn(model, split, device=dev, batch_size=batch_size)
    finally:
        gs.remove()
    model.eval()
    history = apply_plan(model, shape, plan, DG)
    gs.graph = None
    seconds = time.perf_counter() - start

    rows_after = {r["name"]: r for r in compute_layers(model, shape)}
    widths = {n: [w, int(rows_after[n].get("out_channels", rows_after[n].get("out_features", 0)))]
              for n, w in widths_before.items()}
    last = log[-1] if log else {"ce": float("nan"), "mac_term": float("nan")}
    return PaSReport(
        sparsity=1.0 - target_frac, alpha=float(alpha), epochs=epochs, seconds=seconds,
        search_seconds=search_seconds,
        macs_before=macs_before, macs_after=count_macs(model, shape),
        prunable_macs_before=int(round(gs.dense_macs)), prunable_macs_target=int(round(target)),
        prunable_macs_after=_prunable_macs(model, shape, prunable), search_macs=search_macs,
        params_before=params_before, params_after=count_params(model),
        final_ce=last["ce"], final_mac_term=last["mac_term"],
        final_loss=last["ce"] + float(alpha) * last["mac_term"],
        widths=widths, epoch_log=[{k: round(v, 6) for k, v in e.items()} for e in log], history=history,
    )
