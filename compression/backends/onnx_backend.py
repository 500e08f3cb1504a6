"""The ``onnx`` backend: export to ONNX, run with onnxruntime on CPU (black box).

``OnnxBackend().deploy(model, (C, H, W), K, workdir=DIR)`` writes
``DIR/model.onnx`` (input ``x`` ``[N, C, H, W]``, output ``logits`` ``[N, K]``,
dynamic ``N``) and ``DIR/manifest.json``, then serves the artifact through an
isolated worker process (:func:`~compression.backends.artifact.load_predictor`).
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compression.backends.artifact import MANIFEST_NAME, load_predictor, write_manifest
from suite.core.errors import ArtifactError
from suite.core.predictor import Deployment
from suite.core.settings import Configurable, Field, SettingsSpec

MODEL_FILE = "model.onnx"
RUNTIME = "compression.backends.onnx_backend:OnnxPredictor"
DEFAULT_THREADS = 2


def _one_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return f"{err.__class__.__name__}: {lines[0]}" if lines else err.__class__.__name__


def export_onnx(model: torch.nn.Module, input_shape: tuple[int, int, int], path: str | os.PathLike,
                opset: int = 17) -> str:
    """Export an eval-mode CPU copy of ``model`` to ``path``; return the exporter used.

    Tries the TorchScript exporter (``dynamo=False``) first, then the
    ``torch.export``-based one (needs ``onnxscript``).  ``model`` is not modified.
    """
    model = copy.deepcopy(model).to("cpu").eval()
    example = (torch.rand(2, *input_shape),)
    kwargs = dict(input_names=["x"], output_names=["logits"], opset_version=opset,
                  dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    errors = []
    for exporter, extra in (("torchscript", {"dynamo": False}), ("dynamo", {"dynamo": True})):
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, example, str(path), **kwargs, **extra)
            return exporter
        except Exception as err:  # noqa: BLE001 - fall back to the other exporter, report both
            errors.append(f"{exporter}: {_one_line(err)}")
    raise ArtifactError(f"ONNX export to {path} failed ({'; '.join(errors)})")


class OnnxPredictor:
    """onnxruntime CPU session over ``artifact_dir/model.onnx`` (constructed by the artifact loader).

    manifest keys used: ``input_shape``, ``num_classes``, ``model_file``
    (default ``model.onnx``, must be sha256-listed), ``threads`` (intra-op
    threads, default 2), ``batch_size`` (default 256).
    """

    differentiable = False

    def __init__(self, artifact_dir: str, manifest: dict[str, Any]) -> None:
        import onnxruntime as ort

        self.input_shape = tuple(manifest["input_shape"])
        self.num_classes = int(manifest["num_classes"])
        self.batch_size = int(manifest.get("batch_size") or 256)
        name = manifest.get("model_file", MODEL_FILE)
        if name not in manifest["files"]:
            raise ArtifactError(f"artifact {Path(artifact_dir) / MANIFEST_NAME} does not list its model file {name!r}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(manifest.get("threads") or DEFAULT_THREADS)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        path = Path(artifact_dir) / name
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ArtifactError(f"artifact {path} does not load in onnxruntime ({_one_line(err)})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ArtifactError(f"artifact {path} has {len(inputs)} inputs; expected one image batch")
        self.input_name = inputs[0].name

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` float32 (CPU) for ``x`` ``[N, C, H, W]``; no gradients."""
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outs = [self.session.run(None, {self.input_name: arr[i:i + self.batch_size]})[0]
                for i in range(0, len(arr), self.batch_size)]
        logits = np.concatenate(outs) if outs else np.zeros((0, self.num_classes), np.float32)
        return torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))


class OnnxBackend(Configurable):
    """Settings-only backend; the model is supplied to :meth:`deploy`.

    opset: ONNX opset for the export.
    threads: onnxruntime intra-op threads (None: 2).
    timeout: seconds per predict request to the worker process.
    verify: after deploying, compare the deployment with eager torch on two
        random inputs and refuse (ArtifactError) a mismatch above
        ``1e-3 * max(1, max |logit|)``; the measured difference goes into info.
    """

    name = "onnx"
    SETTINGS = SettingsSpec({
        "opset": Field(17, int, ge=7, le=30), "threads": Field(None, int, optional=True, ge=1, doc="None: 2"),
        "timeout": Field(60.0, float, gt=0, doc="seconds per predict request"), "verify": Field(True, bool)})

    def deploy(self, model: torch.nn.Module, input_shape: tuple[int, int, int], num_classes: int,
               *, workdir: str, device: str = "cpu") -> Deployment:
        """Export ``model`` into ``workdir`` and serve it; ``device`` is ignored (onnxruntime CPU)."""
        import onnx
        import onnxruntime

        directory = Path(workdir)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MANIFEST_NAME).unlink(missing_ok=True)  # never leave a manifest over a new model
        start = time.perf_counter()
        exporter = export_onnx(model, input_shape, directory / MODEL_FILE, self.opset)
        export_seconds = time.perf_counter() - start
        try:
            onnx.checker.check_model(str(directory / MODEL_FILE))
        except Exception as err:  # noqa: BLE001
            raise ArtifactError(f"artifact {directory / MODEL_FILE} fails the ONNX checker ({_one_line(err)})") from None
        write_manifest(directory, {
            "backend": self.name, "runtime": RUNTIME, "input_shape": list(input_shape),
            "num_classes": int(num_classes), "files": {MODEL_FILE: None}, "model_file": MODEL_FILE,
            "opset": self.opset, "threads": self.threads, "exporter": exporter,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
        })
        predictor = load_predictor(str(directory), isolated=True, timeout=self.timeout)
        info: dict[str, Any] = {"backend": self.name, "artifact": str(directory), "target": "onnxruntime-cpu",
                                "device": "cpu", "differentiable": False, "export_seconds": round(export_seconds, 3),
                                "exporter": exporter, "opset": self.opset, "onnxruntime": onnxruntime.__version__}
        if self.verify:
            try:
                info["verify_max_abs_diff"] = _verify(model, predictor, input_shape)
            except BaseException:
                predictor.close()
                raise
        return Deployment(predictor, info)


def _verify(model: torch.nn.Module, predictor, input_shape: tuple[int, int, int]) -> float:
    """Max |logit difference| between eager ``model`` and ``predictor`` on 2 seeded random inputs."""
    x = torch.rand(2, *input_shape, generator=torch.Generator().manual_seed(0))
    eager = copy.deepcopy(model).to("cpu").eval()
    with torch.no_grad():
        want = eager(x).float()
    got = predictor.predict(x)
    diff = float((got - want).abs().max())
    if not diff <= 1e-3 * max(1.0, float(want.abs().max())):
        raise ArtifactError(f"deployment {predictor.artifact_dir} disagrees with the eager model "
                            f"(max |logit diff| {diff:.3g})")
    return diff
