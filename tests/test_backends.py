"""Artifact manifests, the isolated worker process and the ONNX backend."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import torch

from compression.backends._testing import write_fake_artifact
from compression.backends.artifact import IsolatedPredictor, load_predictor, read_manifest, write_manifest
from compression.backends.onnx_backend import OnnxBackend, OnnxPredictor, export_onnx
from suite.core.errors import ArtifactError
from suite.core.predictor import Predictor
from suite.core.zoo import build_model

SHAPE = (3, 16, 16)
ARCHS = ("vgg16", "resnet20", "mobilenetv2")


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.fixture(autouse=True)
def no_leaked_workers():
    """Every test stops the worker processes it starts."""
    before = _children()
    yield
    assert _children() <= before


def _model(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(arch, num_classes=10, width=0.25, in_channels=3).eval()


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """arch -> (eager model, Deployment) for the three zoo models, served by isolated workers."""
    before = _children()  # long-lived helpers an earlier module of this process left (a fork server, say)
    out = {}
    for arch in ARCHS:
        model = _model(arch)
        out[arch] = (model, OnnxBackend().deploy(model, SHAPE, 10, workdir=str(tmp_path_factory.mktemp(arch))))
    yield out
    for _, dep in out.values():
        dep.predictor.close()
    assert _children() <= before  # every worker this fixture started is gone


def _x(n: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_round_trip_matches_eager(deployed, arch):
    model, dep = deployed[arch]
    assert isinstance(dep.predictor, Predictor) and dep.predictor.differentiable is False
    assert dep.info["backend"] == "onnx" and dep.info["target"] == "onnxruntime-cpu"
    assert dep.info["differentiable"] is False and dep.info["export_seconds"] >= 0
    x = _x()
    with torch.no_grad():
        want = model(x)
    got = dep.predictor.predict(x)
    assert got.dtype == torch.float32 and got.shape == (5, 10)
    assert (got - want).abs().max() < 1e-4
    manifest = read_manifest(dep.info["artifact"])
    assert manifest["backend"] == "onnx" and manifest["input_shape"] == list(SHAPE)
    assert set(manifest["files"]) == {"model.onnx"}


def test_zeroed_model_in_process(tmp_path):
    model = _model("resnet20")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    export_onnx(model, SHAPE, tmp_path / "model.onnx")
    write_manifest(tmp_path, {"backend": "onnx", "runtime": "compression.backends.onnx_backend:OnnxPredictor",
                              "input_shape": list(SHAPE), "num_classes": 10})
    pred = load_predictor(tmp_path, isolated=False)
    assert isinstance(pred, OnnxPredictor)
    x = _x(7)
    with torch.no_grad():
        assert (pred.predict(x) - model(x)).abs().max() < 1e-4
    assert pred.predict(x[:0]).shape == (0, 10)


def test_isolated_agrees_with_in_process(deployed):
    _, dep = deployed["resnet20"]
    local = load_predictor(dep.info["artifact"], isolated=False)
    x = _x(300)  # more than one worker request (batch_size 256)
    torch.testing.assert_close(dep.predictor.predict(x), local.predict(x), atol=1e-6, rtol=0)
    assert dep.predictor.predict(x[:0]).shape == (0, 10)


def test_fresh_process_loads_artifact(deployed, tmp_path):
    _, dep = deployed["mobilenetv2"]
    x = _x(3)
    np.save(tmp_path / "x.npy", x.numpy())
    code = ("import json, sys, numpy as np, torch\n"
            "from compression.backends.artifact import load_predictor\n"
            "with load_predictor(sys.argv[1]) as p:\n"
            "    print(json.dumps(p.predict(torch.from_numpy(np.load(sys.argv[2]))).tolist()))\n")
    res = subprocess.run([sys.executable, "-c", code, dep.info["artifact"], str(tmp_path / "x.npy")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    got = torch.tensor(json.loads(res.stdout.strip().splitlines()[-1]))
    assert (got - dep.predictor.predict(x)).abs().max() < 1e-6


def test_tampered_model_is_refused(deployed, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(deployed["vgg16"][1].info["artifact"], art)
    data = bytearray((art / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (art / "model.onnx").write_bytes(bytes(data))
    for isolated in (False, True):
        with pytest.raises(ArtifactError, match="model.onnx does not match its sha256"):
            load_predictor(art, isolated=isolated)
    (art / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="model.onnx listed in manifest.json is missing"):
        read_manifest(art)


def _edit_manifest(art, **changes):
    m = json.loads((art / "manifest.json").read_text())
    m.update(changes)
    (art / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("runtime", ["os:system", "builtins:eval", "compressionx.evil:Cls", "suite.core.cache:ModelCache",
                                     "compression.backends._testing", "compression.backends._testing:os"])
def test_runtime_outside_our_packages_is_refused(tmp_path, runtime):
    write_fake_artifact(tmp_path)
    _edit_manifest(tmp_path, runtime=runtime)
    with pytest.raises(ArtifactError, match="runtime"):
        load_predictor(tmp_path, isolated=False)


@pytest.mark.parametrize("change, message", [
    ({"format": 2}, "has format 2"),
    ({"input_shape": [3, 8]}, "invalid input_shape"),
    ({"num_classes": 0}, "invalid num_classes"),
    ({"files": {"../x": "0" * 64}}, "outside the artifact directory"),
    ({"files": {"/etc/passwd": "0" * 64}}, "outside the artifact directory"),
    ({"files": {"x.bin": "nothex"}}, "invalid sha256"),
])
def test_malformed_manifest_fields(tmp_path, change, message):
    (tmp_path / "x.bin").write_bytes(b"x")
    write_fake_artifact(tmp_path)
    _edit_manifest(tmp_path, **change)
    with pytest.raises(ArtifactError, match=message):
        read_manifest(tmp_path)


def test_missing_or_broken_manifest(tmp_path):
    with pytest.raises(ArtifactError, match="manifest.json is missing"):
        load_predictor(tmp_path)
    with pytest.raises(ArtifactError, match="does not exist"):
        read_manifest(tmp_path / "nope")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="manifest.json is not valid JSON"):
        load_predictor(tmp_path)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="not a JSON object"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1}))
    with pytest.raises(ArtifactError, match="lacks required keys: backend, runtime"):
        read_manifest(tmp_path)


def test_write_manifest_lists_files(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"b")
    (tmp_path / ".hidden").write_bytes(b"h")
    m = write_fake_artifact(tmp_path)
    assert sorted(m["files"]) == ["a.bin", "sub/b.bin"] and m["format"] == 1 and m["created_at"].endswith("Z")
    with pytest.raises(ArtifactError, match="outside the allowed packages"):
        write_manifest(tmp_path, {"backend": "x", "runtime": "os:system", "input_shape": [1, 1, 1],
                                  "num_classes": 1})


def test_worker_startup_error_propagates(tmp_path):
    write_fake_artifact(tmp_path, runtime_class="Nope")
    start = time.monotonic()
    with pytest.raises(ArtifactError, match="has no runtime class Nope"):
        load_predictor(tmp_path)
    assert time.monotonic() - start < 60


def test_sleepy_runtime_times_out(tmp_path):
    write_fake_artifact(tmp_path, sleep=60)
    pred = load_predictor(tmp_path, timeout=1.0)
    pid = pred.worker_pid
    start = time.monotonic()
    with pytest.raises(ArtifactError, match=r"timed out after 1 s"):
        pred.predict(torch.rand(2, 3, 8, 8))
    assert time.monotonic() - start < 3.0
    assert pred.worker_pid is None and not psutil.pid_exists(pid)
    pred.close()


def test_crashing_runtime_reports_exit_code(tmp_path):
    write_fake_artifact(tmp_path, runtime_class="CrashingPredictor")
    with load_predictor(tmp_path, timeout=30.0) as pred:
        with pytest.raises(ArtifactError, match=r"exit code 3\).*crashing on purpose"):
            pred.predict(torch.rand(2, 3, 8, 8))


def test_killed_worker_is_reported_and_restarted(tmp_path):
    write_fake_artifact(tmp_path)
    pred = load_predictor(tmp_path)
    x = torch.rand(4, 3, 8, 8)
    want = x.flatten(1).mean(1, keepdim=True) * torch.arange(1, 5)
    torch.testing.assert_close(pred.predict(x), want)
    os.kill(pred.worker_pid, signal.SIGKILL)
    with pytest.raises(ArtifactError, match="SIGKILL"):
        pred.predict(x)
    torch.testing.assert_close(pred.predict(x), want)  # a fresh worker
    pred.close()
    with pytest.raises(ArtifactError, match="is closed"):
        pred.predict(x)


def test_bad_input_shape(deployed):
    pred = deployed["resnet20"][1].predictor
    assert isinstance(pred, IsolatedPredictor)
    for bad in (torch.rand(2, 3, 8, 8), torch.rand(3, 16, 16), torch.rand(2, 1, 16, 16)):
        with pytest.raises(ValueError, match=r"expected input \[N, 3, 16, 16\]"):
            pred.predict(bad)
    assert pred.predict(_x(1)).shape == (1, 10)  # the worker survived


def test_backend_settings_are_validated():
    from suite.core.errors import ConfigError

    with pytest.raises(ConfigError):
        OnnxBackend(opset=3)
    with pytest.raises(ConfigError):
        OnnxBackend(threads=0)
