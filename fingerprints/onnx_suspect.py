"""An ONNX suspect served with onnxruntime and numpy only.

The sandboxed worker that queries an ``.onnx`` suspect never imports torch
(:mod:`fingerprints.suspect_worker`): starting torch took about 2.5 s of an
8-10 s audit on our 2-core machines.  :meth:`OnnxSuspect.predict` (a torch
tensor in and out) imports torch only when called in a process that uses it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from suite.core.errors import ArtifactError


def first_line(err: BaseException) -> str:
    """``Class: first line`` of an exception's message (at most 200 characters of it)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return f"{err.__class__.__name__}: {lines[0][:200]}" if lines else err.__class__.__name__


def static_dim(v: Any) -> int | None:
    """A dimension that is a plain integer (not a symbol: ``int(SymInt)`` would specialise it), else None."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    return None


def spec_input_hw(spec: dict[str, Any]) -> tuple[int, int]:
    """``(H, W)`` a suspect spec asks for (the owner's input size; 32 x 32 when absent)."""
    return tuple(spec.get("input_hw") or (32, 32))  # type: ignore[return-value]


class OnnxSuspect:
    """An ONNX model in an onnxruntime CPU session."""

    differentiable = False

    def __init__(self, path: str, input_hw: tuple[int, int], threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001
            raise ArtifactError(f"suspect {path} is not a loadable ONNX model ({first_line(err)})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or static_dim(inputs[0].shape[1]) is None:
            raise ArtifactError(f"suspect {path}: expected one input [N, C, H, W], "
                                f"got {[list(i.shape) for i in inputs]}")
        self.input_name = inputs[0].name
        # an fp16 export (e.g. onnxruntime.transformers.float16 without keep_io_types) takes float16 images;
        # int8 exports (QDQ or QOperator) keep float32 inputs and outputs
        self.input_dtype = {"tensor(float16)": np.float16, "tensor(double)": np.float64}.get(inputs[0].type,
                                                                                             np.float32)
        if inputs[0].type not in ("tensor(float)", "tensor(float16)", "tensor(double)"):
            raise ArtifactError(f"suspect {path}: input type {inputs[0].type} is not a float image batch")
        shape = inputs[0].shape
        self.fixed_batch = static_dim(shape[0])
        h, w = static_dim(shape[2]), static_dim(shape[3])
        self.input_shape = (int(shape[1]), h if h is not None else int(input_hw[0]),
                            w if w is not None else int(input_hw[1]))
        self.num_classes = self._probe_classes(path, 2 if self.fixed_batch in (None, 2) else 1)
        self.details = {"format": "onnx", "input": [str(v) for v in shape], **onnx_precision(self.session, path)}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "OnnxSuspect":
        """From a suspect spec ``{format: "onnx", path, input_hw?, threads?}`` (see ``suspects.load_suspect``)."""
        return cls(spec["path"], spec_input_hw(spec), int(spec.get("threads") or 1))

    def _probe_classes(self, path: str, n: int) -> int:
        """Class count from one probe query of ``n`` images (the output must be logits ``[n, K]``)."""
        try:
            out = self.predict_array(np.zeros((n, *self.input_shape), np.float32))
        except Exception as err:  # noqa: BLE001
            raise ArtifactError(f"suspect {path} fails on an input {[n, *self.input_shape]} "
                                f"({first_line(err)})") from None
        if out.ndim != 2 or out.shape[0] != n:
            raise ArtifactError(f"suspect {path} returns {list(out.shape)} for {n} images; expected logits [N, K]")
        return int(out.shape[1])

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        """float32 logits ``[N, K]`` of images ``x`` (``[N, C, H, W]`` in [0, 1]); a fixed-batch export is padded."""
        arr = np.ascontiguousarray(np.asarray(x, np.float32).astype(self.input_dtype, copy=False))
        if self.fixed_batch is None:
            return np.asarray(self.session.run(None, {self.input_name: arr})[0], np.float32)
        outs = []
        for i in range(0, len(arr), self.fixed_batch):  # a fixed-batch export: pad the last chunk
            chunk = arr[i:i + self.fixed_batch]
            pad = self.fixed_batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            outs.append(np.asarray(self.session.run(None, {self.input_name: chunk})[0], np.float32)[:len(chunk) - pad])
        return np.concatenate(outs)

    def predict(self, x):
        """:meth:`predict_array` on a torch tensor, returning a torch tensor (imports torch)."""
        import torch

        return torch.from_numpy(self.predict_array(x.detach().cpu().float().numpy()))


QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
             "ConvInteger", "MatMulInteger", "QLinearAdd", "QGemm")


def onnx_precision(session, path: str | os.PathLike) -> dict[str, Any]:
    """``{"precision": "int8" | "fp16" | "fp32", "input_type", "quant_ops"}`` of an ONNX suspect.

    int8 when the graph holds quantization operators (QDQ pairs from static
    quantization, ``DynamicQuantizeLinear`` / ``ConvInteger`` / ``MatMulInteger``
    from dynamic quantization, QOperator ``QLinear*``); fp16 when its input is
    float16.  Runs in the sandboxed worker, on the file onnxruntime has loaded.
    """
    inp = session.get_inputs()[0].type
    out: dict[str, Any] = {"input_type": inp, "precision": "fp16" if inp == "tensor(float16)" else "fp32"}
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        ops = sorted({n.op_type for n in model.graph.node if n.op_type in QUANT_OPS})
        if ops:
            out["precision"] = "int8"
            out["quant_ops"] = ops
        out["producer"] = str(model.producer_name)[:60]
    except Exception:  # noqa: BLE001 - only a description; the session itself loaded
        pass
    return out
