"""Parameter and multiply-accumulate (MAC) counting.

MACs are measured, not derived from the architecture description: the model
runs once in eval mode on a zero image ``[1, *input_shape]`` with forward
hooks on every ``Conv2d`` and ``Linear``.  Only those two layer types count
(``Conv2d``: ``out_elems * in_ch/groups * kh * kw``; ``Linear``:
``out_elems * in_features``); biases, BN, activations, pooling and residual
additions are ignored, which is the usual convention for published numbers.
Every module's ``training`` flag is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from suite.core.errors import ConfigError

__all__ = ["count_params", "count_macs", "layer_table", "module_macs"]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return int(total)


def module_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """MACs of one call of a ``Conv2d``/``Linear`` for the whole batch of ``out``."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return int(out.numel() * (module.in_channels // module.groups) * kh * kw)
    if isinstance(module, nn.Linear):
        return int(out.numel() * module.in_features)
    return 0


def _check_shape(input_shape: object) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)  # type: ignore[union-attr]
    except TypeError as exc:
        raise ConfigError(f"input_shape must be (C, H, W), got {input_shape!r}") from exc
    if len(shape) != 3 or any(s < 1 for s in shape):
        raise ConfigError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape!r}")
    return shape


def _probe_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every module in eval mode and restore each ``training`` flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _shape(t: object) -> tuple[int, ...] | None:
    if isinstance(t, torch.Tensor):
        return tuple(int(s) for s in t.shape[1:])
    if isinstance(t, (tuple, list)) and t and isinstance(t[0], torch.Tensor):
        return tuple(int(s) for s in t[0].shape[1:])
    return None


def _row(name: str, m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> dict:
    w = getattr(m, "weight", None)
    row: dict = {
        "name": name,
        "type": type(m).__name__,
        "weight_shape": tuple(int(s) for s in w.shape) if isinstance(w, torch.Tensor) else None,
        "input_shape": _shape(inp),
        "output_shape": _shape(out),
        "macs": module_macs(m, inp, out),
        "params": int(sum(p.numel() for p in m.parameters(recurse=False))),
    }
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        oh, ow = (int(s) for s in out.shape[-2:])
        row.update(
            in_channels=m.in_channels,
            out_channels=m.out_channels,
            kernel_size=(kh, kw),
            stride=tuple(m.stride),
            padding=m.padding if isinstance(m.padding, str) else tuple(m.padding),
            groups=m.groups,
            # im2col GEMM per group: [M x K] @ [K x N]
            gemm={"M": oh * ow, "N": m.out_channels // m.groups,
                  "K": (m.in_channels // m.groups) * kh * kw, "groups": m.groups},
        )
    elif isinstance(m, nn.Linear):
        rows = int(out.numel() // out.shape[-1]) if out.ndim > 1 else 1
        row.update(
            in_features=m.in_features,
            out_features=m.out_features,
            gemm={"M": rows, "N": m.out_features, "K": m.in_features, "groups": 1},
        )
    return row


def layer_table(model: nn.Module, input_shape: tuple[int, int, int], all_leaves: bool = False) -> list[dict]:
    """One row per ``Conv2d``/``Linear`` call (every leaf module if ``all_leaves``), in execution order.

    Each row has ``name`` (qualified module name), ``type``, ``weight_shape``
    (or ``None``), ``input_shape`` and ``output_shape`` (per image, batch
    dimension dropped), ``macs`` (one image) and ``params`` (the module's own).
    Conv rows add ``in_channels``, ``out_channels``, ``kernel_size``,
    ``stride``, ``padding``, ``groups``; Linear rows ``in_features`` and
    ``out_features``; both carry ``gemm = {M, N, K, groups}``, the im2col GEMM
    per group (``macs == M * N * K * groups``).
    """
    shape = _check_shape(input_shape)
    device, dtype = _probe_device_dtype(model)
    rows: list[dict] = []
    handles = []

    def make_hook(name: str):
        def hook(m: nn.Module, args: tuple, out: object) -> None:
            inp = args[0] if args else None
            if isinstance(out, torch.Tensor):
                rows.append(_row(name, m, inp, out))

        return hook

    for name, m in model.named_modules():
        is_compute = isinstance(m, (nn.Conv2d, nn.Linear))
        is_leaf = next(iter(m.children()), None) is None
        if is_compute or (all_leaves and is_leaf and m is not model):
            handles.append(m.register_forward_hook(make_hook(name)))
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros((1, *shape), device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    return rows


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of all ``Conv2d`` and ``Linear`` calls for ONE image of ``input_shape`` (C, H, W)."""
    return int(sum(r["macs"] for r in layer_table(model, input_shape)))
