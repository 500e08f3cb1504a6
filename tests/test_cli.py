"""CLI behaviour: listing, errors with exit code 2, end-to-end smoke runs, records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from suite.app.cli import main
from suite.core.record import REQUIRED_KEYS, SCHEMA_VERSION, load_record

SMOKE = ["--profile", "smoke", "--quiet"]


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_ls_models_and_sources(capsys):
    code, out, _ = run_cli(["ls", "models"], capsys)
    assert code == 0
    for name in ("vgg16", "resnet18", "resnet20", "mobilenetv2"):
        assert f"  {name} " in out
    code, out, _ = run_cli(["ls", "sources"], capsys)
    for name in ("digits16", "digits-photo32", "digits-affine24", "cifar10", "cifar100", "svhn", "stl10",
                 "imagefolder"):
        assert f"  {name} " in out
    code, out, _ = run_cli(["ls"], capsys)
    assert code == 0 and all(f"{k}:" in out for k in ("models", "sources", "compressors", "backends",
                                                        "attacks", "fingerprints"))


@pytest.mark.parametrize("args, needle", [
    (["run", "--model", "vgg17"], "did you mean 'vgg16'"),
    (["run", "--source", "digits17"], "unknown source 'digits17'"),
    (["run", "--compress", "blok"], "unknown compressor 'blok'"),
    (["run", "--backend", "tvvm"], "unknown backend"),
    (["run", "--sparsity", "1.2"], "sparsity must be in [0, 1), got 1.2"),
    (["run", "--sparsity", "-0.1"], "sparsity must be in [0, 1)"),
    (["run", "--epochs", "-1"], "epochs must be >= 0"),
    (["run", "--batch-size", "0"], "batch size must be > 0"),
    (["run", "--width", "0"], "width must be in (0, 4]"),
    (["run", "--profile", "huge"], "unknown profile 'huge'"),
    (["run", "--device", "tpu"], "unknown device 'tpu'"),
    (["run", "--compress-args", "r8"], "expected key=value"),
    (["run", "--source", "cifar10"], "pass --data-root"),
    (["ls", "modles"], "did you mean 'models'"),
])
def test_bad_input_exits_2_with_one_line(args, needle, capsys, tmp_path, cache_dir):
    code, out, err = run_cli(args + ["--output-dir", str(tmp_path / "runs")] if args[0] == "run" else args,
                             capsys)
    assert code == 2
    assert needle in err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_missing_data_root_names_expected_files(capsys, tmp_path, cache_dir):
    code, _, err = run_cli(["run", "--source", "cifar10", "--data-root", str(tmp_path / "nope"), *SMOKE,
                            "--output-dir", str(tmp_path / "runs")], capsys)
    assert code == 2 and "cifar10" in err and "nope" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error path")
def test_cuda_requested_without_gpu(capsys, tmp_path, cache_dir):
    code, _, err = run_cli(["run", "--device", "cuda", *SMOKE, "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and "no CUDA device" in err


def test_argparse_type_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--sparsity", "lots"])
    assert info.value.code == 2


def test_smoke_run_record_schema_and_cache_reuse(capsys, tmp_path, cache_dir):
    out_dir = tmp_path / "runs"
    args = ["run", "--model", "vgg16", "--compress", "none", *SMOKE, "--output-dir", str(out_dir), "--json"]
    code, out, _ = run_cli(args, capsys)
    assert code == 0
    first = json.loads(out)
    code, out, _ = run_cli(args, capsys)
    second = json.loads(out)
    runs = sorted(p for p in out_dir.iterdir())
    assert len(runs) == 2 and not any(p.name.startswith(".") for p in runs)  # one new dir per run
    r1, r2 = (load_record(p) for p in runs)
    assert r1["run_id"] != r2["run_id"]
    for key in REQUIRED_KEYS:
        assert key in r1
    assert r1["schema_version"] == SCHEMA_VERSION
    assert 0.0 <= r1["metrics"]["clean_acc"] <= 1.0
    assert r1["metrics"]["clean_acc"] == r2["metrics"]["clean_acc"] == first["clean_acc"] == second["clean_acc"]
    assert (r1["model"]["cache_hit"], r2["model"]["cache_hit"]) in {(False, True), (True, False)}
    assert r1["model"]["sha256"] == r2["model"]["sha256"]
    for key in ("id", "arch", "width", "source", "params", "macs", "sha256"):
        assert key in r1["model"]
    assert r1["model"]["params"] > 0 and r1["model"]["macs"] > 0
    for key in ("python", "torch", "tvm", "cpu", "threads", "device"):
        assert key in r1["env"]
    for stage in ("source", "model", "compress", "deploy", "evaluate", "total"):
        assert r1["timings"][stage] >= 0
    assert r1["higher_is_better"]["clean_acc"] is True
    assert set(r1["higher_is_better"]) <= set(r1["metrics"])
    assert r1["seeds"]["run"] == 0
    cfg = yaml.safe_load((runs[0] / "config.yaml").read_text())
    assert cfg == r1["config"] and cfg["profile"] == "smoke" and cfg["model"] == "vgg16"


def test_interrupted_run_leaves_no_record(monkeypatch, capsys, tmp_path, cache_dir):
    import suite.app.pipeline

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(suite.app.pipeline, "evaluate_clean", interrupt)
    out_dir = tmp_path / "runs"
    code, _, err = run_cli(["run", *SMOKE, "--output-dir", str(out_dir)], capsys)
    assert code == 130 and "no record" in err
    assert list(out_dir.iterdir()) == []  # not even the hidden temporary directory


def test_crash_leaves_no_record(monkeypatch, tmp_path, cache_dir):
    import suite.app.pipeline

    def crash(*a, **k):
        raise RuntimeError("backend exploded")

    monkeypatch.setattr(suite.app.pipeline, "evaluate_clean", crash)
    out_dir = tmp_path / "runs"
    with pytest.raises(RuntimeError):
        main(["run", *SMOKE, "--output-dir", str(out_dir)])
    assert list(out_dir.iterdir()) == []


def test_run_on_disk_cifar10(capsys, tmp_path, cache_dir):
    from test_disk_loaders import write_cifar10

    write_cifar10(tmp_path / "data", per_batch=20)
    code, out, err = run_cli(["run", "--source", "cifar10", "--data-root", str(tmp_path / "data"),
                              "--model", "resnet20", *SMOKE, "--output-dir", str(tmp_path / "runs"), "--json"],
                             capsys)
    assert code == 0, err
    rec = load_record(json.loads(out)["run_dir"])
    assert rec["source"]["name"] == "cifar10" and rec["source"]["shape"] == [3, 32, 32]


@pytest.mark.parametrize("model, source", [("resnet20", "digits-affine24"), ("mobilenetv2", "digits-photo32"),
                                           ("resnet18", "digits16")])
def test_train_command_other_models_and_sources(model, source, capsys, tmp_path, cache_dir):
    code, out, err = run_cli(["train", "--model", model, "--source", source, *SMOKE, "--epochs", "1"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["cache_hit"] is False and Path(info["path"]).is_dir()
    code, out, _ = run_cli(["train", "--model", model, "--source", source, *SMOKE, "--epochs", "1"], capsys)
    assert json.loads(out)["cache_hit"] is True


def test_python_m_suite_subprocess(tmp_path):
    """The real entry point: ``python -m suite`` in a fresh interpreter."""
    env = {**os.environ, "SUITE_CACHE": str(tmp_path / "cache"), "TQDM_DISABLE": "1"}
    bad = subprocess.run([sys.executable, "-m", "suite", "run", "--model", "vgg17"], capture_output=True,
                         text=True, env=env)
    assert bad.returncode == 2 and "vgg16" in bad.stderr
    ok = subprocess.run([sys.executable, "-m", "suite", "run", "--model", "resnet20", "--profile", "smoke",
                         "--output-dir", str(tmp_path / "runs"), "--json"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    rec = load_record(json.loads(ok.stdout.strip().splitlines()[-1])["run_dir"])
    assert rec["model"]["arch"] == "resnet20"


def test_known_library_warnings_are_silenced_unless_asked(monkeypatch):
    import warnings

    from suite.app.quiet import silence_known_library_warnings

    def emitted() -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            silence_known_library_warnings()
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use TreeSpec", FutureWarning)
            warnings.warn("a warning of our own", UserWarning)
        return [str(w.message) for w in caught]

    monkeypatch.delenv("SUITE_SHOW_WARNINGS", raising=False)
    assert emitted() == ["a warning of our own"]
    monkeypatch.setenv("SUITE_SHOW_WARNINGS", "1")
    assert len(emitted()) == 2
