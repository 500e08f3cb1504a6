"""TVM backend: kernel correctness per scheme, whole-model agreement, artifacts, fallbacks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

tvm = pytest.importorskip("tvm")

from compression.backends.artifact import load_predictor  # noqa: E402
from compression.decisions import LayerDecision  # noqa: E402
from compression.schemes import make_scheme  # noqa: E402
from compression.tvm_backend.backend import TVMBackend  # noqa: E402
from compression.tvm_backend.compile import choices_as_dicts, compile_model  # noqa: E402
from compression.tvm_backend.kernels import ConvSpec, conv_kernel, pack_weights, row_block_columns  # noqa: E402
from compression.tvm_backend.target import host_target_dict  # noqa: E402
from compression.tvm_backend.tuning import TuningDB, best_tile, compile_prim  # noqa: E402
from suite.core.errors import ArtifactError  # noqa: E402
from suite.core.zoo import build_model  # noqa: E402

TARGET = host_target_dict(2)
SCHEMES = {
    "block": dict(r=8, c=16),
    "block-punched": dict(r=8, c=4),
    "pattern": dict(),
    "nm": dict(n=2, m=4),
    "unstructured": dict(),
}


def run_kernel(weight: np.ndarray, bias: np.ndarray, x: np.ndarray, pad: int, stride: int, relu: bool,
               sparse: bool, tp: int = 16) -> np.ndarray:
    co, ci, kh, kw = weight.shape
    cols = row_block_columns(weight, 8) if sparse else None
    kk = cols.shape[1] if cols is not None else ci * kh * kw
    spec = ConvSpec(x.shape[0], ci, x.shape[2], x.shape[3], co, kh, kw, pad, stride, 8, kk, relu)
    values, off, b = pack_weights(weight, bias, spec, cols)
    lib = compile_prim(conv_kernel(spec, tp), TARGET)
    pp = -(-spec.positions() // tp) * tp
    args = [x, values, off, b, np.zeros((spec.n, spec.scratch_len(tp)), np.float32),
            np.zeros((spec.n, spec.nb * spec.r, pp), np.float32), np.zeros((spec.n, co, spec.ho, spec.wo), np.float32)]
    tensors = [tvm.runtime.tensor(a) for a in args]
    lib["main"](*tensors)
    return tensors[-1].numpy()


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@pytest.mark.parametrize("shape, pad, stride", [((20, 8, 3, 3), 1, 1), ((16, 12, 3, 3), 1, 2),
                                                ((16, 16, 1, 1), 0, 1)])
def test_compact_kernel_matches_torch(scheme, shape, pad, stride):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(*shape, generator=gen)
    sch = make_scheme(scheme, **SCHEMES[scheme])
    if sch.check_applicable(tuple(shape)) is not None:
        pytest.skip(f"{scheme} does not apply to {shape}")
    sparsity = 0.5 if scheme == "nm" else 0.75
    w = (w * sch.mask(w, sparsity)).numpy()
    bias = torch.randn(shape[0], generator=gen).numpy()
    x = torch.rand(2, shape[1], 7, 9, generator=gen).numpy()
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(bias), stride=stride, padding=pad)
    for relu in (True, False):
        out = run_kernel(w, bias, x, pad, stride, relu, sparse=True, tp=8)
        expect = ref.relu() if relu else ref
        np.testing.assert_allclose(out, expect.numpy(), atol=1e-4, rtol=1e-4)
    if scheme in ("block", "block-punched"):  # row-block structure really shrinks the gather
        assert row_block_columns(w, 8).shape[1] < w[0].size


def test_row_block_columns_is_balanced_and_covers_nonzeros():
    w = np.zeros((12, 4, 3, 3), np.float32)
    w[0, 0, 0, 0] = 1.0
    w[9, 3, 2, 2] = 2.0
    w[10, 1, 1, 1] = 3.0
    cols = row_block_columns(w, 8)
    assert cols.shape == (2, 2)
    assert 0 in cols[0] and 35 in cols[1] and 13 in cols[1]


def tiny_pruned(arch="resnet20", sparsity=0.75, seed=0):
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=10, width=0.25, in_channels=3).eval()
    for m in model.modules():  # non-trivial BN so folding matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    from compression.layers import prunable_layers

    sch = make_scheme("block", r=8, c=16)
    with torch.no_grad():
        for layer in prunable_layers(model, (3, 16, 16)):
            w = model.get_submodule(layer.name).weight
            if sch.check_applicable(tuple(w.shape)) is None:
                w.mul_(sch.mask(w, sparsity))
    return model


@pytest.mark.parametrize("arch", ["resnet20", pytest.param("vgg16", marks=pytest.mark.slow),
                                  pytest.param("mobilenetv2", marks=pytest.mark.slow)])
def test_whole_model_agrees_with_eager(arch):
    model = tiny_pruned(arch)
    result = compile_model(model, (3, 16, 16), TARGET, batch=2, measure=False)
    assert any(c.kernel == "sparse" for c in result.layers) or arch == "mobilenetv2"
    vm = tvm.relax.VirtualMachine(result.executable, tvm.cpu())
    x = torch.rand(2, 3, 16, 16)
    out = vm["main"](tvm.runtime.tensor(x.numpy()))
    out = (out if hasattr(out, "numpy") else out[0]).numpy()
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(out - ref).max() < 1e-4
    assert (out.argmax(1) == ref.argmax(1)).all()


def test_dense_fallback_when_compact_kernel_does_not_pay():
    model = tiny_pruned("resnet20", sparsity=0.1)  # 10% sparsity: the rule keeps layers dense
    result = compile_model(model, (3, 16, 16), TARGET, batch=1, measure=False)
    convs = [c for c in result.layers if c.op == "conv"]  # the classifier runs the linear kernel
    assert convs and all(c.kernel == "dense" for c in convs)
    assert [c.kernel for c in result.layers if c.op == "linear"] == ["linear"]
    assert any("dense" in c.reason for c in result.layers)
    assert any(c.decision is LayerDecision.TOO_DENSE for c in result.layers)
    assert all(d["decision"] in {x.value for x in LayerDecision} for d in choices_as_dicts(result.layers))


def test_tuning_measures_once_and_caches(tmp_path):
    db = TuningDB(str(tmp_path / "tuning.json"))
    spec = ConvSpec(1, 8, 8, 8, 16, 3, 3, 1, 1, 8, 20, True)
    first = best_tile(spec, TARGET, db, sparse=True, candidates=(8, 16))
    db.save()
    again = best_tile(spec, TARGET, TuningDB(str(tmp_path / "tuning.json")), sparse=True, candidates=(8, 16))
    assert first.tp == again.tp and first.ms == again.ms and first.ms > 0


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    model = tiny_pruned("resnet20")
    out = tmp_path_factory.mktemp("tvm_artifact")
    backend = TVMBackend(batch_sizes=(1, 4), tune=False, measure_dense=False, timeout=60)
    dep = backend.deploy(model, (3, 16, 16), 10, workdir=str(out))
    yield model, out, dep
    dep.predictor.close()


def test_suspended_worker_restarts_on_the_next_query(deployed):
    model, out, dep = deployed
    x = torch.rand(2, 3, 16, 16)
    before = dep.predictor.predict(x)
    first = dep.predictor.worker_pid
    dep.predictor.suspend()  # frees the worker's memory; the predictor stays usable
    assert dep.predictor.worker_pid is None
    assert torch.equal(dep.predictor.predict(x), before)
    assert dep.predictor.worker_pid not in (None, first)


def test_artifact_predictor_is_black_box_and_agrees(deployed):
    model, out, dep = deployed
    assert dep.predictor.differentiable is False
    assert {"latency_ms", "compile_seconds", "tuning", "layers", "target"} <= set(dep.info)
    x = torch.rand(11, 3, 16, 16)  # uses both compiled batch sizes
    with torch.no_grad():
        ref = model(x)
    got = dep.predictor.predict(x)
    assert torch.allclose(got, ref, atol=1e-4)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tvm"] == tvm.__version__ and manifest["backend"] == "tvm"
    assert {"model_b1.so", "model_b4.so"} <= set(manifest["files"])
    decisions = {l["name"]: LayerDecision(l["decision"]) for l in manifest["layers"]}
    assert all((d is LayerDecision.SPARSE_KERNEL) == (l["kernel"] == "sparse")
               for d, l in zip(decisions.values(), manifest["layers"]))
    assert dep.info["dense_fallback_layers"] == [n for n, d in decisions.items() if d.fallback]


def test_artifact_loads_in_a_fresh_process(deployed):
    model, out, _ = deployed
    code = ("import torch, json; from compression.backends.artifact import load_predictor; "
            f"p = load_predictor({str(out)!r}, isolated=False); torch.manual_seed(1); "
            "x = torch.rand(3, 3, 16, 16); print(json.dumps(p.predict(x).tolist()))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))
    torch.manual_seed(1)
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(got, model(x), atol=1e-4)


def test_corrupt_or_mismatched_artifact_is_refused(deployed, tmp_path):
    import shutil

    _, out, _ = deployed
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    data = bytearray((bad / "model_b1.so").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model_b1.so").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load_predictor(bad)
    with load_predictor(out, isolated=True, timeout=60) as pred:
        with pytest.raises(ValueError):
            pred.predict(torch.rand(2, 3, 24, 24))


def test_mobile_target_exports_object_archive(tmp_path):
    try:
        tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-android", "mattr": ["+neon"]})
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"this TVM build has no aarch64 LLVM backend: {err}")
    model = tiny_pruned("resnet20")
    dep = TVMBackend(target="android-arm64", measure_dense=False).deploy(model, (3, 16, 16), 10,
                                                                        workdir=str(tmp_path))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert (tmp_path / "model_b1.tar").stat().st_size > 0
    assert manifest["runnable_here"] is False and manifest["target"]["mtriple"].startswith("aarch64")
    assert any(l["kernel"] == "sparse" for l in manifest["layers"])
    with pytest.raises(Exception):
        dep.predictor.predict(torch.rand(1, 3, 16, 16))


@pytest.mark.parametrize("backend, extra", [("tvm", ["--backend-args", "batch_sizes=1,tune=false"]),
                                            ("onnx", [])])
def test_run_with_compiled_backend_records_deployment(backend, extra, tmp_path, cache_dir, capsys):
    import os

    from suite.app.cli import main
    from suite.core.record import load_record

    cores = os.sched_getaffinity(0)
    code = main(["run", "--model", "resnet20", "--compress", "block", "--backend", backend, *extra,
                 "--profile", "smoke", "--quiet", "--output-dir", str(tmp_path / "runs"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    # TVM's pool must not pin this process to one core (the second run's default --threads would drop)
    assert os.sched_getaffinity(0) == cores
    run_dir = tmp_path / "runs" / json.loads(out)["run_dir"].split("/")[-1]
    dep = load_record(run_dir)["deployment"]
    assert dep["backend"] == backend and dep["agreement_top1"] == 1.0 and dep["max_abs_logit_diff"] <= 1e-3
    assert (run_dir / dep["artifact"] / "manifest.json").exists()
    if backend == "tvm":
        for key in ("target", "latency_ms", "dense_latency_ms", "speedup_vs_dense", "compile_seconds", "tuning",
                    "best_dense_runtime", "speedup_vs_best_dense"):
            assert key in dep, key
        assert {"p50", "p90", "kernel_ms", "batch", "threads"} <= set(dep["latency_ms"])
        # side by side in one process: torch eager, ONNX Runtime and TVM dense, the best one named
        runtimes = dep["dense_runtimes"]["1"]
        assert {"torch", "onnxruntime", "tvm-dense"} <= set(runtimes)
        assert dep["best_dense_latency_ms"] == min(r["p50"] for r in runtimes.values() if "p50" in r)
        assert dep["speedup_vs_best_dense"] == pytest.approx(dep["best_dense_latency_ms"] / dep["latency_ms"]["p50"],
                                                             rel=1e-2)
    # the recorded artifact answers queries from a fresh predictor
    with load_predictor(run_dir / dep["artifact"], isolated=True, timeout=60) as pred:
        assert pred.predict(torch.rand(2, 3, 16, 16)).shape == (2, 10)
    # a second identical run reuses the compressed model and the compiled artifact
    assert main(["run", "--model", "resnet20", "--compress", "block", "--backend", backend, *extra,
                 "--profile", "smoke", "--quiet", "--output-dir", str(tmp_path / "runs"), "--json"]) == 0
    again = load_record(json.loads(capsys.readouterr().out)["run_dir"])
    assert again["deployment"]["cache_hit"] is True and again["compression"]["cache_hit"] is True
    assert again["deployment"]["agreement_top1"] == 1.0
    if backend == "tvm":  # the artifact is reused, its timings never: every run times what it ships afresh
        first = load_record(run_dir)["deployment"]
        assert again["deployment"]["dense_runtimes"] != first["dense_runtimes"]
        assert again["deployment"]["latency_ms"] != first["latency_ms"]
    assert again["metrics"]["clean_acc"] == load_record(run_dir)["metrics"]["clean_acc"]


def test_bad_backend_settings_exit_2(tmp_path, cache_dir, capsys):
    from suite.app.cli import main

    for args in (["--backend", "tvm", "--target", "{not json"], ["--backend", "torch", "--target", "host"],
                 ["--backend", "tvm", "--backend-args", "bogus=1"]):
        code = main(["run", "--model", "resnet20", *args, "--profile", "smoke", "--quiet",
                     "--output-dir", str(tmp_path / "runs")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error:"), (args, err)
