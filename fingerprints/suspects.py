"""Suspect runtimes: load a model found in the wild and answer ``predict`` (inside the suspect worker only).

Formats (``detect_format`` in the parent decides, before anything is loaded):

``state_dict``  ``.pt`` / ``.pth``: a torch ``state_dict`` (optionally under a
                ``"state_dict"`` or ``"model"`` key) for a zoo architecture
                named with ``--arch``; read with ``torch.load(weights_only=True)``.
                The width multiplier and class count are inferred from the
                tensor shapes (or ``--width``).
``pt2``         a ``torch.export`` archive, loaded with pickle refused
                (:mod:`fingerprints.safe_pt2`).
``onnx``        an ONNX model run by onnxruntime (CPU).
``artifact``    an artifact directory with ``manifest.json`` (TVM or ONNX
                deployments from ``suite run``), verified and loaded by
                :func:`compression.backends.artifact.load_predictor` (sha256 of
                every file, runtime restricted to ``compression.*``).

Every runtime exposes ``input_shape`` ``(C, H, W)``, ``num_classes``,
``details`` (JSON-ready facts) and ``predict(x [N, C, H, W] in [0, 1]) ->
logits [N, K]``.  Every load failure is a one-line
:class:`~suite.core.errors.ArtifactError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from fingerprints.onnx_suspect import OnnxSuspect, spec_input_hw
from fingerprints.onnx_suspect import first_line as _first_line, static_dim as _static
from suite.core.errors import ArtifactError

FORMATS = ("state_dict", "pt2", "onnx", "artifact")
STATE_DICT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
WIDTH_CANDIDATES = (1.0, 0.5, 0.25, 0.75, 0.125, 0.375, 0.625, 1.5, 2.0, 3.0, 4.0)


def detect_format(path: str | os.PathLike, arch: str | None = None) -> str:
    """Format of a suspect path from its type and name; ArtifactError when unknown or missing."""
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"suspect {p} does not exist")
    if p.is_dir():
        if not (p / "manifest.json").is_file():
            raise ArtifactError(f"suspect directory {p} has no manifest.json (expected a TVM/ONNX artifact "
                                f"directory from `suite run --backend tvm|onnx`)")
        return "artifact"
    suffix = p.suffix.lower()
    if suffix == ".pt2":
        return "pt2"
    if suffix == ".onnx":
        return "onnx"
    if suffix in STATE_DICT_SUFFIXES:
        if not arch:
            raise ArtifactError(f"suspect {p} looks like a torch state_dict: name its architecture with --arch "
                                f"(vgg16, resnet18, resnet20, mobilenetv2)")
        return "state_dict"
    raise ArtifactError(f"cannot tell the format of suspect {p} (expected a .pt/.pth state_dict with --arch, "
                        f"a .pt2 torch.export archive, an .onnx file or an artifact directory)")


# --------------------------------------------------------------- state_dict
def _unwrap_state(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                      for k, v in obj.items()):
        raise ArtifactError(f"suspect {path} is not a state_dict of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def _shapes_match(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    own = model.state_dict()
    return set(own) == set(state) and all(tuple(own[k].shape) == tuple(state[k].shape) for k in own)


class StateDictSuspect:
    """A zoo architecture with weights from an untrusted ``state_dict`` (``weights_only=True``)."""

    differentiable = False

    def __init__(self, path: str, arch: str, input_hw: tuple[int, int], width: float | None = None) -> None:
        from suite.core import registries as reg

        p = Path(path)
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - anything torch.load raises means: not a safe state_dict
            raise ArtifactError(f"suspect {p} is not a readable torch state_dict ({_first_line(err)})") from None
        state = _unwrap_state(obj, p)
        try:
            factory = reg.models.get(arch)
        except KeyError as err:
            raise ArtifactError(str(err)) from None
        matrices = [v for v in state.values() if v.dim() == 2]
        convs = [v for k, v in state.items() if v.dim() == 4 and k.endswith("weight")]
        if not matrices or not convs:
            raise ArtifactError(f"suspect {p} does not look like a {arch} state_dict (no conv or linear weights)")
        num_classes, in_channels = int(matrices[-1].shape[0]), int(convs[0].shape[1])
        widths = (width,) if width is not None else WIDTH_CANDIDATES
        model = None
        for w in widths:
            try:
                probe = factory(num_classes=num_classes, width=w, in_channels=in_channels)
            except Exception:  # noqa: BLE001 - a width this arch rejects
                continue
            if _shapes_match(probe, state):
                model, width = probe, w
                break
        if model is None:
            raise ArtifactError(f"suspect {p} does not fit architecture {arch} at any width "
                                f"{'(' + str(width) + ')' if width is not None else 'tried'}; wrong --arch?")
        model.load_state_dict(state, strict=True)
        self.model = model.eval()
        self.input_shape = (in_channels, int(input_hw[0]), int(input_hw[1]))
        self.num_classes = num_classes
        self.details = {"format": "state_dict", "arch": arch, "width": width, "tensors": len(state)}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(x.float())


# --------------------------------------------------------------------- pt2
class Pt2Suspect:
    """A ``torch.export`` program (graph + weights) loaded with pickle refused."""

    differentiable = False

    def __init__(self, path: str, input_hw: tuple[int, int]) -> None:
        from fingerprints.safe_pt2 import load_exported_program

        ep = load_exported_program(path)
        try:
            self.module = ep.module()
        except Exception as err:  # noqa: BLE001
            raise ArtifactError(f"suspect {path}: exported program does not build ({_first_line(err)})") from None
        shape = _placeholder_shape(ep)
        if shape is None:
            raise ArtifactError(f"suspect {path}: the exported program's input is not one image batch [N, C, H, W]")
        n, c, h, w = shape
        self.fixed_batch = n
        self.input_shape = (c, h if h is not None else int(input_hw[0]), w if w is not None else int(input_hw[1]))
        self.num_classes = _probe_classes(self, path)
        self.details = {"format": "pt2", "graph_nodes": len(ep.graph.nodes), "fixed_batch": n}

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self.module(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.fixed_batch is None:
            return self._run(x)
        outs = []
        for i in range(0, len(x), self.fixed_batch):  # exported with a static batch: pad the last chunk
            chunk = x[i:i + self.fixed_batch]
            pad = self.fixed_batch - len(chunk)
            if pad:
                chunk = torch.cat([chunk, chunk.new_zeros(pad, *chunk.shape[1:])])
            outs.append(self._run(chunk)[:len(chunk) - pad])
        return torch.cat(outs)


def _placeholder_shape(ep) -> tuple[int | None, int, int | None, int | None] | None:
    """``(N, C, H, W)`` of the single user input (N/H/W None when symbolic), or None."""
    names = list(ep.graph_signature.user_inputs)
    if len(names) != 1:
        return None
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name == names[0]:
            val = node.meta.get("val")
            shape = getattr(val, "shape", None)
            if shape is None or len(shape) != 4 or _static(shape[1]) is None:
                return None
            return _static(shape[0]), _static(shape[1]), _static(shape[2]), _static(shape[3])  # type: ignore[return-value]
    return None


def _probe_classes(runtime, path: str) -> int:
    """Class count from one probe query (the output must be logits [N, K])."""
    n = 2
    try:
        out = runtime.predict(torch.zeros(n, *runtime.input_shape))
    except Exception as err:  # noqa: BLE001
        raise ArtifactError(f"suspect {path} fails on an input {[n, *runtime.input_shape]} "
                            f"({_first_line(err)})") from None
    out = torch.as_tensor(out)
    if out.dim() != 2 or out.shape[0] != n:
        raise ArtifactError(f"suspect {path} returns {list(out.shape)} for {n} images; expected logits [N, K]")
    return int(out.shape[1])


# ---------------------------------------------------------------- artifact
class ArtifactSuspect:
    """A deployment directory with a verified manifest (TVM / ONNX from ``suite run``)."""

    differentiable = False

    def __init__(self, path: str) -> None:
        from compression.backends.artifact import load_predictor, read_manifest

        manifest = read_manifest(path)
        self.inner = load_predictor(path, isolated=False)
        self.input_shape = tuple(int(v) for v in self.inner.input_shape)
        self.num_classes = int(self.inner.num_classes)
        self.details = {"format": "artifact", "backend": manifest.get("backend"), "runtime": manifest.get("runtime")}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.predict(x)


def load_suspect(spec: dict[str, Any]):
    """Build the runtime for ``spec`` = {format, path, arch?, width?, input_hw [H, W], threads}."""
    fmt, path = spec["format"], spec["path"]
    hw = spec_input_hw(spec)
    if fmt == "state_dict":
        return StateDictSuspect(path, spec["arch"], hw, spec.get("width"))
    if fmt == "pt2":
        return Pt2Suspect(path, hw)
    if fmt == "onnx":
        return OnnxSuspect.from_spec(spec)
    if fmt == "artifact":
        return ArtifactSuspect(path)
    raise ArtifactError(f"unknown suspect format {fmt!r} (choices: {', '.join(FORMATS)})")
