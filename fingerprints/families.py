"""Suspects a model thief actually ships, built from the owner with the field's own tools.

Positive families (each its own ``kind`` in the zoo's ``by_family``):

* ``quantized``: the owner (or a pruned copy) exported to ONNX, then
  ``onnxruntime.quantization.quantize_dynamic`` (``int8-dynamic``: int8
  weights, activations quantized per batch at run time) or
  ``quantize_static`` (``int8-static``: QDQ format, per-channel int8 weights,
  activation ranges calibrated on ``calib_images`` train images); ``fp16``:
  every float tensor of the graph, inputs and outputs included, converted to
  float16 (``onnxruntime.transformers.float16``).  Queried as ONNX files
  through onnxruntime, exactly as a deployed app would run them.
* ``fine-pruned`` (Liu et al. 2018): the output channels of the last
  convolutions (``layers``) that are least active on clean train images are
  zeroed (a fraction ``fraction`` of them), then the copy is fine-tuned with
  the channels held at zero.
* ``channel-pruned``: structured channel pruning with ``torch-pruning``
  (``MagnitudePruner``, L2 group importance, the classifier kept whole) at
  ``ratio`` of the channels, then fine-tuned; the smaller network is exported
  to ONNX (its shapes differ from the owner's architecture).
* ``extraction`` (reported apart from the copy families): a student of
  another architecture trained from scratch on the owner's answers to
  same-distribution images the owner never trained on (the validation split
  plus shifted / noised variants of it): ``label`` = the owner's top-1 labels
  only, ``prob`` = its softmax probabilities (KL distillation).

Independent (negative) families: models of foreign architectures
(``plaincnn``, ``wideshallow``, :mod:`suite.core.zoo.foreign`), models on the
two disjoint halves of the train split, and transfer-learned models
(trained on a related source, the first conv adapted to the owner's channels,
then fine-tuned on the owner's task).  None of them ever sees the owner.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

QUANT_MODES = ("int8-dynamic", "int8-static", "fp16")
EXTRACTION_ACCESS = ("label", "prob")
#: related sources for transfer-learned negatives (source -> the related one it is pre-trained on)
RELATED_SOURCES = {"digits16": "digits-affine24", "digits-photo32": "digits-affine24",
                   "digits-affine24": "digits16", "fashion-mnist": "digits-affine24", "mnist": "digits-affine24",
                   "cifar10": "digits-photo32", "cifar100": "cifar10", "svhn": "digits-photo32"}


# ------------------------------------------------------------ quantization
def quantize_onnx(fp32_path: Path, out_path: Path, mode: str, calib: torch.Tensor | None = None) -> dict[str, Any]:
    """Write ``out_path``: ``fp32_path`` quantized with onnxruntime.quantization (or converted to fp16).

    calib: ``[N, C, H, W]`` images in [0, 1] for ``int8-static`` calibration.
    """
    import onnx

    if mode == "int8-dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8)
        return {"tool": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8"}
    if mode == "int8-static":
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)

        if calib is None or not len(calib):
            raise ValueError("int8-static quantization needs calibration images")
        name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter([{name: calib[i:i + 32].numpy().astype(np.float32)}
                                     for i in range(0, len(calib), 32)])

            def get_next(self):
                return next(self.batches, None)

        quantize_static(str(fp32_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax)
        return {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "per_channel": True,
                "calibration_images": int(len(calib))}
    if mode == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = onnx.load(str(fp32_path))
        half = convert_float_to_float16(model, keep_io_types=False)
        onnx.save(half, str(out_path))
        return {"tool": "onnxruntime.transformers.float16.convert_float_to_float16", "io": "float16"}
    raise ValueError(f"unknown quantization mode {mode!r} (choices: {', '.join(QUANT_MODES)})")


class OnnxFilePredictor:
    """A trusted ONNX file of the zoo (built by us) in an in-process onnxruntime session; float32 logits."""

    differentiable = False

    def __init__(self, path: str | Path, input_shape: tuple[int, int, int], num_classes: int,
                 threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.input_shape = tuple(input_shape)
        self.num_classes = int(num_classes)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().float().numpy().astype(self.input_dtype)
        out = self.session.run(None, {self.input_name: arr})[0]
        return torch.from_numpy(np.asarray(out, np.float32))

    def close(self) -> None:
        self.session = None


# ---------------------------------------------------------- fine-pruning
def _convs(model: torch.nn.Module) -> list[tuple[str, torch.nn.Conv2d]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]


def channel_activity(model: torch.nn.Module, conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Mean activation ``[C_out]`` of ``conv``'s channels after the next BN + ReLU (or of the conv itself) on ``x``."""
    follower: dict[str, torch.nn.Module] = {}
    mods = list(model.modules())
    idx = mods.index(conv)
    for m in mods[idx + 1:idx + 3]:
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and "bn" not in follower:
            follower["bn"] = m
    target = follower.get("bn", conv)
    acts: list[torch.Tensor] = []
    handle = target.register_forward_hook(lambda _m, _i, out: acts.append(F.relu(out).mean(dim=(0, 2, 3))))
    try:
        with torch.no_grad():
            for i in range(0, len(x), 128):
                model(x[i:i + 128])
    finally:
        handle.remove()
    return torch.stack(acts).mean(0)


def fine_prune(owner: torch.nn.Module, source, *, fraction: float, layers: int, epochs: int, lr: float,
               images: int, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Fine-pruning: zero the ``fraction`` least active channels of the last ``layers`` convs, then fine-tune."""
    import torch.nn.utils.prune as tprune

    from suite.core.config import TrainRecipe
    from suite.core.training import train_model

    model = copy.deepcopy(owner).cpu().eval()
    idx = np.sort(np.random.default_rng(seed).permutation(len(source.train))[:images])
    x, _ = source.train.tensors(idx)
    convs = [(n, c) for n, c in _convs(model) if c.groups == 1][-layers:]
    pruned = {}
    for name, conv in convs:
        act = channel_activity(model, conv, x)
        k = int(round(fraction * len(act)))
        drop = torch.argsort(act)[:k]
        mask = torch.ones_like(conv.weight)
        mask[drop] = 0
        tprune.custom_from_mask(conv, "weight", mask)
        pruned[name] = int(k)
    if epochs > 0:
        train_model(model, source.train, None, TrainRecipe(epochs=epochs, lr=lr, warmup_epochs=0), seed=seed,
                    quiet=True, desc="fine-pruning")
    for _, conv in convs:
        tprune.remove(conv, "weight")
    return model.eval(), {"pruned_channels": pruned, "layers": layers, "fraction": fraction}


# ------------------------------------------------------- channel pruning
def channel_prune(owner: torch.nn.Module, source, *, ratio: float, epochs: int, lr: float,
                  seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """torch-pruning ``MagnitudePruner`` (L2 group importance) at ``ratio`` of the channels, then fine-tuned."""
    import torch_pruning as tp

    from suite.core.config import TrainRecipe
    from suite.core.training import train_model

    model = copy.deepcopy(owner).cpu().eval()
    example = torch.rand(2, *source.shape)
    before = sum(p.numel() for p in model.parameters())
    importance = tp.importance.MagnitudeImportance(p=2)
    pruner = tp.pruner.MagnitudePruner(model, example, importance=importance, pruning_ratio=ratio,
                                       ignored_layers=[model.classifier])
    pruner.step()
    after = sum(p.numel() for p in model.parameters())
    if epochs > 0:
        train_model(model, source.train, None, TrainRecipe(epochs=epochs, lr=lr, warmup_epochs=0), seed=seed,
                    quiet=True, desc="channel-pruned fine-tuning")
    return model.eval(), {"tool": f"torch-pruning {tp.__version__} MagnitudePruner (L2)", "ratio": ratio,
                          "params_before": before, "params_after": after}


# ------------------------------------------------------------- extraction
def extraction_set(source, copies: int, seed: int) -> torch.Tensor:
    """Images the owner never trained on: the validation split plus ``copies`` shifted / noised variants of it."""
    from suite.core.training import augment_batch

    x, _ = source.val.tensors()
    gen = torch.Generator().manual_seed(seed)
    out = [x]
    for _ in range(copies):
        v = augment_batch(x, "shift", gen, max_shift=2)
        out.append((v + 0.05 * torch.randn(v.shape, generator=gen)).clamp(0.0, 1.0))
    return torch.cat(out)


def train_student(owner: torch.nn.Module, source, *, arch: str, width: float, access: str, epochs: int,
                  copies: int, seed: int, lr: float = 0.05, batch_size: int = 64) -> tuple[torch.nn.Module, dict]:
    """A model-extraction student: ``arch`` trained from scratch on the owner's labels or probabilities.

    The student never sees the owner's weights or the true labels: only the
    owner's answers (top-1 label for ``access=label``, softmax for ``prob``)
    on :func:`extraction_set` images.
    """
    from suite.core import registries as reg
    from suite.core.training import augment_batch, lr_at

    if access not in EXTRACTION_ACCESS:
        raise ValueError(f"extraction access must be label or prob, got {access!r}")
    x = extraction_set(source, copies, seed)
    with torch.no_grad():
        probs = torch.cat([torch.softmax(owner(x[i:i + 256]), 1) for i in range(0, len(x), 256)])
    target = probs if access == "prob" else F.one_hot(probs.argmax(1), probs.shape[1]).float()
    torch.manual_seed(seed)
    student = reg.models.build(arch, num_classes=int(source.num_classes), width=width,
                               in_channels=int(source.shape[0]))
    opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed + 1)
    n = len(x)
    steps = max(1, epochs * ((n + batch_size - 1) // batch_size))
    step = 0
    for _ in range(epochs):
        student.train()
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            b = order[i:i + batch_size]
            if len(b) < 2:
                continue
            for g in opt.param_groups:
                g["lr"] = lr_at(step, steps, 0, lr)
            xb = augment_batch(x[b], "shift", gen, max_shift=1)
            loss = -(target[b] * F.log_softmax(student(xb), 1)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    student.eval()
    with torch.no_grad():
        agree = float((torch.cat([student(x[i:i + 256]).argmax(1) for i in range(0, n, 256)]) ==
                       probs.argmax(1)).float().mean())
    return student, {"student": arch, "width": width, "access": access, "query_images": int(n),
                     "epochs": epochs, "agreement_on_queries": round(agree, 4)}


# ------------------------------------------------------------- negatives
def disjoint_half(source, half: int, seed: int):
    """``source`` with one of two disjoint halves (0 or 1) of its train split (seeded, stratified by nothing)."""
    from suite.core.sources.base import ImageSplit

    perm = np.random.default_rng(seed).permutation(len(source.train))
    n = len(perm) // 2
    idx = np.sort(perm[:n] if half == 0 else perm[n:2 * n])
    t = source.train
    return dataclasses.replace(source, train=ImageSplit(t.images[idx], t.labels[idx], t.indices[idx]),
                               meta={**source.meta, "train_half": half, "train_half_seed": seed})


def adapt_first_conv(model: torch.nn.Module, in_channels: int) -> torch.nn.Module:
    """Give a pre-trained model ``in_channels`` inputs: first conv weights summed / repeated, normalize reset."""
    from suite.core.zoo.common import make_normalize

    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    have = conv.in_channels
    if have == in_channels:
        return model
    w = conv.weight.detach()
    new_w = w.sum(1, keepdim=True) if in_channels == 1 else w.mean(1, keepdim=True).repeat(1, in_channels, 1, 1)
    new = torch.nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          bias=conv.bias is not None, groups=1)
    with torch.no_grad():
        new.weight.copy_(new_w)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    for name, m in model.named_modules():
        for child_name, child in m.named_children():
            if child is conv:
                setattr(m, child_name, new)
    model.normalize = make_normalize(in_channels)
    model.in_channels = in_channels
    return model
