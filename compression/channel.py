"""Physical filter/channel pruning on top of torch-pruning's dependency graph.

Channels are *removed* (tensors shrink), not masked.  Coupled layers -- the
BatchNorm after a conv, every conv/BN feeding one residual sum, the
depth-wise conv of a MobileNetV2 block whose channels equal its input's, the
next layer's input channels and the classifier's input features -- are found
by :class:`torch_pruning.DependencyGraph`; we never track dependencies
ourselves.  One *coupling group* is one set of channels that must be removed
together; every group is pruned by the same fraction of its channels (or by
``per_layer_ratio``), and inside a group the channels of smallest group
importance (torch-pruning's :class:`MagnitudeImportance`, L2 or L1) go.

Vocabulary (all counts are for the whole layer, MACs for ONE image):

* *prunable layers*: every ``Conv2d``/``Linear`` except the first conv (when
  ``keep_first``) and the classifier (when ``keep_classifier``); the sparsity
  target and the achieved sparsity are measured on their weights.
* ``keep_first``: the first conv is never a pruning root, so its output
  channels -- and every channel coupled to them (ResNet's first residual
  stage, MobileNetV2's first depth-wise conv) -- are kept.  Its input
  channels (the image channels) are never touched either way.
* The classifier's output size is never changed.  Its *input* features shrink
  when the last feature layer loses channels (that is the torch-pruning
  convention for ignored layers); ``keep_classifier`` only decides whether the
  classifier counts as a prunable layer.

Saving a pruned model: store ``model.state_dict()`` and
:func:`export_shapes`; to load, build a fresh model of the same architecture,
call :func:`rebuild_pruned` with the shapes, then ``load_state_dict``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from numbers import Real
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from suite.core.errors import ArtifactError, ConfigError
from suite.core.zoo.profile import count_macs, count_params, eval_mode, layer_table

__all__ = [
    "ChannelPruneReport",
    "LayerWidth",
    "channel_plan_json",
    "export_shapes",
    "prune_channels",
    "rebuild_pruned",
]

IMPORTANCES = ("l2", "l1")
_COMPUTE = (nn.Conv2d, nn.Linear)


# ----------------------------------------------------------------------------
# report


@dataclass
class LayerWidth:
    """Widths of one ``Conv2d``/``Linear`` before and after pruning.

    ``out_*``/``in_*`` are output/input channels (features for Linear);
    ``weights_*`` the number of weight elements (bias excluded).
    """

    name: str
    out_before: int
    out_after: int
    in_before: int
    in_after: int
    weights_before: int
    weights_after: int
    prunable: bool


@dataclass
class ChannelPruneReport:
    """What :func:`prune_channels` did.

    target_sparsity / achieved_sparsity: fraction of the prunable layers'
        weights removed (requested / measured after pruning).
    channel_ratio: the uniform fraction of each group's channels removed that
        bisection settled on (``None`` with ``per_layer_ratio``).
    params_* : all parameters of the model; macs_*: MACs of one image of
        ``input_shape`` (Conv2d + Linear, :func:`suite.core.zoo.count_macs`).
    history: torch-pruning's pruning history ``[root_name, is_out, idxs]``.
    """

    target_sparsity: float
    achieved_sparsity: float
    channel_ratio: float | None
    importance: str
    input_shape: tuple[int, int, int]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    prunable: list[str] = field(default_factory=list)
    layers: list[LayerWidth] = field(default_factory=list)
    history: list[list[Any]] = field(default_factory=list)

    def widths(self) -> dict[str, tuple[int, int]]:
        """``{layer: (out_before, out_after)}``."""
        return {r.name: (r.out_before, r.out_after) for r in self.layers}

    def as_dict(self) -> dict:
        """JSON-ready summary (without the index-level history)."""
        return {
            "target_sparsity": round(self.target_sparsity, 6),
            "achieved_sparsity": round(self.achieved_sparsity, 6),
            "channel_ratio": None if self.channel_ratio is None else round(self.channel_ratio, 6),
            "importance": self.importance,
            "input_shape": list(self.input_shape),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "layers": [asdict(r) for r in self.layers],
        }


# ----------------------------------------------------------------------------
# dependency graph helpers (shared with compression.pas)


@dataclass
class GroupInfo:
    """One prunable coupling group of the dependency graph.

    root: name of the group's root layer (whose output channels are pruned);
    channels: number of coupled channels C.
    out_layers / in_layers: Conv2d/Linear names whose output / input channels
        are in the group (a depth-wise conv appears in ``out_layers``).
    norms: BatchNorm names in the group (where PaS puts its gates).
    """

    root: str
    channels: int
    out_layers: list[str]
    in_layers: list[str]
    norms: list[str]


def _device_of(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def build_graph(model: nn.Module, input_shape: Sequence[int]) -> tp.DependencyGraph:
    """Trace ``model`` on a zero image ``[1, *input_shape]`` in eval mode (BN stats untouched)."""
    example = torch.zeros((1, *input_shape), device=_device_of(model))
    with eval_mode(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tp.DependencyGraph().build_dependency(model, example_inputs=example)


def compute_layers(model: nn.Module, input_shape: Sequence[int]) -> list[dict]:
    """:func:`suite.core.zoo.layer_table` rows (Conv2d/Linear, execution order)."""
    return layer_table(model, tuple(input_shape))


def first_conv_name(rows: list[dict]) -> str | None:
    """Name of the first ``Conv2d`` called in the forward pass."""
    return next((r["name"] for r in rows if r["type"] == "Conv2d"), None)


def classifier_name(model: nn.Module, rows: list[dict]) -> str | None:
    """``"classifier"`` for zoo models, else the last ``Linear`` called."""
    if isinstance(getattr(model, "classifier", None), nn.Linear):
        return "classifier"
    lin = [r["name"] for r in rows if r["type"] == "Linear"]
    return lin[-1] if lin else None


def prunable_layer_names(model: nn.Module, rows: list[dict], keep_first: bool,
                         keep_classifier: bool) -> list[str]:
    """Conv2d/Linear names counted by the sparsity target (execution order)."""
    skip = set()
    if keep_first:
        skip.add(first_conv_name(rows))
    if keep_classifier:
        skip.add(classifier_name(model, rows))
    return [r["name"] for r in rows if r["name"] not in skip]


def _ignored_roots(model: nn.Module, rows: list[dict], keep_first: bool) -> list[nn.Module]:
    """Layers that may never be a pruning root (their output channels stay)."""
    mods = dict(model.named_modules())
    names = [classifier_name(model, rows)]
    if keep_first:
        names.append(first_conv_name(rows))
    return [mods[n] for n in names if n is not None]


def _describe_group(DG: tp.DependencyGraph, group: Any, names: dict[nn.Module, str]) -> GroupInfo:
    out_layers: list[str] = []
    in_layers: list[str] = []
    norms: list[str] = []
    root_mod = group[0].dep.target.module
    channels = len(group[0].idxs)
    for item in group:
        mod, handler = item.dep.target.module, item.dep.handler
        name = names.get(mod) if isinstance(mod, nn.Module) else None
        if name is None:
            continue
        is_out = DG.is_out_channel_pruning_fn(handler)
        if len(item.idxs) != channels or list(item.idxs) != list(item.root_idxs):
            raise NotImplementedError(f"layer {name}: non-identity channel mapping in a coupling group")
        if isinstance(mod, _COMPUTE):
            (out_layers if is_out else in_layers).append(name)
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm) and is_out:
            norms.append(name)
    return GroupInfo(names[root_mod], channels, sorted(set(out_layers)), sorted(set(in_layers)),
                     sorted(set(norms)))


def prunable_groups(model: nn.Module, DG: tp.DependencyGraph, ignored: list[nn.Module]) -> list[tuple[Any, GroupInfo]]:
    """All coupling groups whose root is not (coupled to) an ignored layer.

    Returns ``(tp group with full indices, GroupInfo)`` pairs in graph order.
    """
    names = {m: n for n, m in model.named_modules()}
    out = []
    for group in DG.get_all_groups(ignored_layers=list(ignored), root_module_types=_COMPUTE):
        out.append((group, _describe_group(DG, group, names)))
    return out


def make_importance(kind: str) -> tp.importance.Importance:
    """torch-pruning magnitude importance: ``"l2"`` (p=2) or ``"l1"`` (p=1), group mean."""
    if kind not in IMPORTANCES:
        raise ConfigError(f"unknown channel importance {kind!r}; choose one of: {', '.join(IMPORTANCES)}")
    return tp.importance.MagnitudeImportance(p=2 if kind == "l2" else 1)


def group_scores(group: Any, importance: tp.importance.Importance) -> torch.Tensor:
    """Per-channel importance ``[C]`` (float64, CPU) of a full-index group."""
    with torch.no_grad():
        imp = importance(group)
    if imp is None:
        return torch.zeros(len(group[0].idxs), dtype=torch.float64)
    return imp.detach().double().cpu()


def lowest(scores: torch.Tensor, n_prune: int) -> list[int]:
    """Indices of the ``n_prune`` smallest scores (stable: ties go to the lower index), sorted."""
    if n_prune <= 0:
        return []
    order = torch.sort(scores, stable=True).indices[:n_prune]
    return sorted(int(i) for i in order)


def apply_plan(model: nn.Module, input_shape: Sequence[int], plan: dict[str, list[int]],
               DG: tp.DependencyGraph | None = None) -> list[list[Any]]:
    """Remove channels in place: ``plan = {root layer name: output channel indices to drop}``.

    Every root's indices are channel positions of the *unpruned* model; each
    group is pruned once, with all its coupled layers, by torch-pruning.
    ``DG``: a graph of this (still unpruned) model to reuse instead of tracing.
    Returns torch-pruning's pruning history.
    """
    if DG is None:
        DG = build_graph(model, input_shape)
    mods = dict(model.named_modules())
    for root, idxs in plan.items():
        if not idxs:
            continue
        layer = mods[root]
        pruner = DG.get_pruner_of_module(layer)
        group = DG.get_pruning_group(layer, pruner.prune_out_channels, list(idxs))
        if not DG.check_pruning_group(group):
            raise ConfigError(f"cannot remove {len(idxs)} channels of {root!r} (would leave none)")
        group.prune()
    return [[name, bool(is_out), [int(i) for i in idxs]] for name, is_out, idxs in DG.pruning_history()]


# ----------------------------------------------------------------------------
# sparsity bookkeeping


def weight_counts(model: nn.Module) -> dict[str, int]:
    """``{name: weight.numel()}`` of every Conv2d/Linear."""
    return {n: int(m.weight.numel()) for n, m in model.named_modules() if isinstance(m, _COMPUTE)}


def weight_sparsity(before: dict[str, int], after: dict[str, int], names: Sequence[str]) -> float:
    """Fraction of the weights of ``names`` removed (0 when ``names`` hold no weights)."""
    total = sum(before[n] for n in names)
    return 0.0 if total == 0 else 1.0 - sum(after[n] for n in names) / total


def keep_count(channels: int, ratio: float, round_to: int | None) -> int:
    """Channels kept when removing ``ratio`` of ``channels``: >= 1, a multiple of ``round_to`` if given."""
    keep = max(1, int(round(channels * (1.0 - ratio))))
    if round_to:
        keep = min(channels, int(math.ceil(keep / round_to)) * round_to)
    return min(channels, keep)


def _check_sparsity(sparsity: object) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, Real) or not math.isfinite(float(sparsity)):
        raise ConfigError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    s = float(sparsity)
    if not 0.0 <= s < 1.0:
        raise ConfigError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return s


def _check_ratios(per_layer_ratio: dict[str, float], known: set[str]) -> dict[str, float]:
    out = {}
    for name, r in per_layer_ratio.items():
        if name not in known:
            raise ConfigError(f"per_layer_ratio names unknown layer {name!r}")
        out[name] = _check_sparsity(r)
    return out


def _layer_rows(model: nn.Module, before: dict[str, tuple[int, int, int]],
                prunable: set[str]) -> list[LayerWidth]:
    rows = []
    for n, m in model.named_modules():
        if not isinstance(m, _COMPUTE):
            continue
        o, i = (m.out_channels, m.in_channels) if isinstance(m, nn.Conv2d) else (m.out_features, m.in_features)
        ob, ib, wb = before[n]
        rows.append(LayerWidth(n, ob, int(o), ib, int(i), wb, int(m.weight.numel()), n in prunable))
    return rows


def _widths(model: nn.Module) -> dict[str, tuple[int, int, int]]:
    out = {}
    for n, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            out[n] = (m.out_channels, m.in_channels, int(m.weight.numel()))
        elif isinstance(m, nn.Linear):
            out[n] = (m.out_features, m.in_features, int(m.weight.numel()))
    return out


# ----------------------------------------------------------------------------
# public API


def _uniform_plan(groups: list[tuple[GroupInfo, torch.Tensor]], ratio: float,
                  round_to: int | None) -> dict[str, list[int]]:
    return {g.root: lowest(s, g.channels - keep_count(g.channels, ratio, round_to)) for g, s in groups}


def predict_weights(model: nn.Module, groups: Sequence[GroupInfo], kept: Sequence[int]) -> dict[str, int]:
    """``{layer: weight elements}`` after every group ``i`` keeps ``kept[i]`` channels (no pruning done).

    Conv weights are ``[out, in/groups, kh, kw]``; a depth-wise conv
    (``groups == in == out``) keeps ``[c, 1, kh, kw]``.  Exact for convs with
    ``groups`` 1 or depth-wise and for Linear layers.
    """
    out_k = {n: k for g, k in zip(groups, kept) for n in g.out_layers}
    in_k = {n: k for g, k in zip(groups, kept) for n in g.in_layers}
    pred = {}
    for n, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            o, i = out_k.get(n, m.out_channels), in_k.get(n, m.in_channels)
            k = m.kernel_size[0] * m.kernel_size[1]
            dw = m.groups > 1 and m.groups == m.in_channels == m.out_channels
            pred[n] = o * k if dw else o * (i // m.groups) * k
        elif isinstance(m, nn.Linear):
            pred[n] = out_k.get(n, m.out_features) * in_k.get(n, m.in_features)
    return pred


def _bisect_ratio(model: nn.Module, groups: list[tuple[GroupInfo, torch.Tensor]], target: float,
                  round_to: int | None, before: dict[str, int], names: Sequence[str],
                  iters: int = 24, tol: float = 0.002) -> tuple[float, dict[str, list[int]]]:
    """Uniform channel ratio whose weight sparsity over ``names`` is closest to ``target``.

    The sparsity of a candidate ratio is predicted exactly from the coupling
    groups (:func:`predict_weights`) without pruning anything.
    """
    infos = [g for g, _ in groups]

    def measure(ratio: float) -> tuple[float, dict[str, list[int]]]:
        plan = _uniform_plan(groups, ratio, round_to)
        kept = [g.channels - len(plan[g.root]) for g in infos]
        return weight_sparsity(before, predict_weights(model, infos, kept), names), plan

    lo, hi = 0.0, 1.0
    best_got, best_ratio, best_plan = math.inf, 0.0, {}
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        got, plan = measure(mid)
        if abs(got - target) < abs(best_got - target):
            best_got, best_ratio, best_plan = got, mid, plan
        if abs(got - target) <= tol:
            break
        lo, hi = (mid, hi) if got < target else (lo, mid)
    if abs(best_got - target) > 0.02:
        warnings.warn(f"channel pruning reached weight sparsity {best_got:.3f}, not {target:.3f}"
                      " (channel granularity / coupling)", stacklevel=3)
    return best_ratio, best_plan


def prune_channels(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    sparsity: float,
    *,
    importance: str = "l2",
    keep_first: bool = True,
    keep_classifier: bool = True,
    round_to: int | None = None,
    per_layer_ratio: dict[str, float] | None = None,
) -> ChannelPruneReport:
    """Remove whole filters/channels of ``model`` in place.

    input_shape: ``(C, H, W)`` of one image (used to trace the graph and count MACs).
    sparsity: target fraction in ``[0, 1)`` of the prunable layers' weights to
        remove.  Every coupling group loses the same fraction of its channels;
        that fraction is found by bisection on the exact sparsity predicted
        from the coupling groups (removing a fraction p of channels removes
        about ``1 - (1 - p)^2`` of a layer's weights); the report carries the
        sparsity measured after pruning.
    importance: ``"l2"`` or ``"l1"`` group magnitude (torch-pruning); the
        least important channels of each group are removed.
    round_to: keep a multiple of this many channels per group (``None``: any).
    per_layer_ratio: ``{layer name: fraction of its output channels to remove}``;
        replaces the uniform ratio (and the bisection).  A group takes the
        smallest ratio among its named output layers; groups with no named
        layer are left alone; ratios of layers coupled to a kept layer
        (e.g. the first conv) are ignored.

    Raises :class:`ConfigError` for a sparsity/ratio outside ``[0, 1)``, an
    unknown importance or layer name, or a bad ``round_to``.
    """
    target = _check_sparsity(sparsity)
    make_importance(importance)
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1):
        raise ConfigError(f"round_to must be a positive integer or None, got {round_to!r}")
    shape = tuple(int(s) for s in input_shape)
    rows = compute_layers(model, shape)
    prunable = prunable_layer_names(model, rows, keep_first, keep_classifier)
    ratios = None
    if per_layer_ratio is not None:
        ratios = _check_ratios(per_layer_ratio, {r["name"] for r in rows})
    widths_before = _widths(model)
    w_before = weight_counts(model)
    params_before, macs_before = count_params(model), int(sum(r["macs"] for r in rows))

    DG = build_graph(model, shape)
    scorer = make_importance(importance)
    groups = [(info, group_scores(g, scorer))
              for g, info in prunable_groups(model, DG, _ignored_roots(model, rows, keep_first))]

    ratio: float | None
    if ratios is not None:
        ratio = None
        plan = {}
        for info, s in groups:
            named = [ratios[n] for n in info.out_layers if n in ratios]
            r = min(named) if named else 0.0
            plan[info.root] = lowest(s, info.channels - keep_count(info.channels, r, round_to)) if r > 0 else []
    elif target == 0.0:
        ratio, plan = 0.0, {}
    else:
        ratio, plan = _bisect_ratio(model, groups, target, round_to, w_before, prunable)

    kept = [info.channels - len(plan.get(info.root, [])) for info, _ in groups]
    predicted = predict_weights(model, [info for info, _ in groups], kept)
    history = apply_plan(model, shape, plan, DG)
    w_after = weight_counts(model)
    if predicted != w_after:  # would mean a coupling the predictor does not model
        warnings.warn("channel pruning: predicted and actual layer sizes differ", stacklevel=2)
    return ChannelPruneReport(
        target_sparsity=target,
        achieved_sparsity=weight_sparsity(w_before, w_after, prunable),
        channel_ratio=ratio,
        importance=importance,
        input_shape=shape,  # type: ignore[arg-type]
        params_before=params_before,
        params_after=count_params(model),
        macs_before=macs_before,
        macs_after=count_macs(model, shape),
        prunable=prunable,
        layers=_layer_rows(model, widths_before, set(prunable)),
        history=history,
    )


def channel_plan_json(report: ChannelPruneReport) -> dict:
    """torch-pruning-style plan, JSON ready.

    ``history`` is torch-pruning's pruning history (``[root layer, is output
    pruning, removed channel indices of the unpruned layer]``; replay with
    ``DependencyGraph.load_pruning_history`` on a freshly traced unpruned
    model); ``widths`` maps every Conv2d/Linear to ``[out_before, out_after]``.
    """
    return {
        "format": "torch-pruning-history",
        "torch_pruning_version": getattr(tp, "__version__", "unknown"),
        "input_shape": list(report.input_shape),
        "importance": report.importance,
        "target_sparsity": round(report.target_sparsity, 6),
        "achieved_sparsity": round(report.achieved_sparsity, 6),
        "channel_ratio": None if report.channel_ratio is None else round(report.channel_ratio, 6),
        "history": [[str(n), bool(o), [int(i) for i in idx]] for n, o, idx in report.history],
        "widths": {r.name: [r.out_before, r.out_after] for r in report.layers},
    }


# ----------------------------------------------------------------------------
# saving / loading pruned models


def export_shapes(model: nn.Module) -> dict[str, list[int]]:
    """``{state_dict key: shape}`` -- store it beside the state dict of a pruned model."""
    return {k: [int(s) for s in v.shape] for k, v in model.state_dict().items()}


def _default_input_shape(model: nn.Module) -> tuple[int, int, int]:
    norm = getattr(model, "normalize", None)
    if norm is not None and hasattr(norm, "num_channels"):
        return (int(norm.num_channels), 32, 32)
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ConfigError("cannot infer the input shape; pass input_shape")
    return (int(conv.in_channels), 32, 32)


def rebuild_pruned(model: nn.Module, shapes: dict[str, list[int]],
                   input_shape: tuple[int, int, int] | None = None) -> nn.Module:
    """Prune a freshly built (unpruned) ``model`` in place to ``shapes``; returns it.

    shapes: from :func:`export_shapes` of the pruned model.  Every coupling
    group keeps its first ``n`` channels (``[0, n)``); the weights are
    meaningless until the saved state dict is loaded, e.g.
    ``model.load_state_dict(torch.load(path, weights_only=True))``.
    input_shape: ``(C, H, W)`` used for tracing (default ``(in_channels, 32, 32)``).

    Raises :class:`ArtifactError` if the shapes do not belong to this
    architecture (missing keys, a group wider than the model's, or shapes that
    differ after pruning).
    """
    shape = tuple(input_shape) if input_shape is not None else _default_input_shape(model)
    DG = build_graph(model, shape)
    names = {m: n for n, m in model.named_modules()}
    plan: dict[str, list[int]] = {}
    for group in DG.get_all_groups(ignored_layers=[], root_module_types=_COMPUTE):
        root = group[0].dep.target.module
        name = names[root]
        key = f"{name}.weight"
        if key not in shapes:
            raise ArtifactError(f"saved shapes lack {key!r}; not a pruned model of this architecture")
        have, want = len(group[0].idxs), int(shapes[key][0])
        if want > have or want < 1:
            raise ArtifactError(f"{key}: saved {want} output channels, model has {have}")
        plan[name] = list(range(want, have))
    apply_plan(model, shape, plan, DG)
    got = export_shapes(model)
    for key, want_shape in shapes.items():
        if got.get(key) != list(want_shape):
            raise ArtifactError(f"{key}: rebuilt shape {got.get(key)} != saved {list(want_shape)}")
    return model
