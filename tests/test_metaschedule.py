"""TVM dense with MetaSchedule: database keys, lookups that never tune, damaged databases, the runtime entry.

Nothing here tunes (a MetaSchedule trial costs seconds); a database is
written by hand where one is needed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("tvm")

SHAPE = (3, 8, 8)


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 8 * 8, 10)).eval()


@pytest.fixture(scope="module")
def target() -> dict:
    from compression.tvm_backend.target import host_target_dict

    return host_target_dict(1)


@pytest.fixture(scope="module")
def tiny_key(target) -> str:
    from compression.tvm_backend.metaschedule import dense_key

    return dense_key(_tiny(), SHAPE, 1, target)[0]


def _no_tuning(monkeypatch) -> None:
    from tvm.s_tir import meta_schedule as ms

    from compression.tvm_backend import metaschedule

    def refuse(*_a, **_k):
        raise AssertionError("tuned")

    monkeypatch.setattr(ms, "tune_tasks", refuse)
    monkeypatch.setattr(metaschedule, "tune_dense", refuse)


def test_key_changes_with_shape_batch_target_and_version(target, tiny_key):
    from compression.tvm_backend.metaschedule import database_key, dense_key, tvm_versions, workload_hashes

    key, _, prepared = dense_key(_tiny(), SHAPE, 1, target)
    assert key == tiny_key  # deterministic
    workloads = workload_hashes(prepared)
    assert workloads and database_key(workloads, target) == key
    other_weights = _tiny()
    with torch.no_grad():
        for p in other_weights.parameters():
            p.mul_(0.5)
    assert dense_key(other_weights, SHAPE, 1, target)[0] == key  # weights do not matter
    assert dense_key(_tiny(), SHAPE, 2, target)[0] != key
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 10 * 10, 10)).eval()
    assert dense_key(model, (3, 10, 10), 1, target)[0] != key
    assert database_key(workloads, {**target, "mcpu": "skylake-avx512"}) != key
    assert database_key(workloads, {**target, "num-cores": 4}) != key
    assert database_key(workloads, target, {**tvm_versions(), "tvm": "0.28.0"}) != key
    assert database_key(workloads, target, {**tvm_versions(), "tvm_ffi": "0.1.15"}) != key


def test_no_database_returns_none_and_never_tunes(tmp_path, target, monkeypatch):
    from compression.tvm_backend.metaschedule import compile_dense_tuned

    _no_tuning(monkeypatch)
    assert compile_dense_tuned(_tiny(), SHAPE, 1, target, db_dir=tmp_path) is None
    assert compile_dense_tuned(_tiny(), SHAPE, 1, target, db_dir=tmp_path / "absent") is None
    assert list(tmp_path.iterdir()) == []


def _write_db(directory, key, *, meta=None, workloads="", records="") -> None:
    from compression.tvm_backend.metaschedule import META_FILE, RECORD_FILE, WORKLOAD_FILE

    directory.mkdir(parents=True)
    (directory / META_FILE).write_text(json.dumps(meta if meta is not None else {"key": key}))
    (directory / WORKLOAD_FILE).write_text(workloads)
    (directory / RECORD_FILE).write_text(records)


@pytest.mark.parametrize("damage", ["meta-garbage", "meta-other-key", "no-records-file", "records-garbage",
                                    "record-without-workload", "workload-undecodable"])
def test_a_damaged_database_is_a_clear_error(tmp_path, target, tiny_key, monkeypatch, damage):
    from compression.tvm_backend.metaschedule import (RECORD_FILE, MetaScheduleDatabaseError, compile_dense_tuned,
                                                      database_dir)

    _no_tuning(monkeypatch)
    directory = database_dir(tmp_path, tiny_key)
    if damage == "meta-garbage":
        _write_db(directory, tiny_key)
        (directory / "meta.json").write_text("{not json")
    elif damage == "meta-other-key":
        _write_db(directory, tiny_key, meta={"key": "0" * 64})
    elif damage == "no-records-file":
        _write_db(directory, tiny_key)
        (directory / RECORD_FILE).unlink()
    elif damage == "records-garbage":
        _write_db(directory, tiny_key, records="[0, [[], [1e-5]]\n")
    elif damage == "record-without-workload":
        _write_db(directory, tiny_key, records='[3, [[], [1e-5]]]\n')
    else:  # parseable JSON that TVM cannot decode
        _write_db(directory, tiny_key, workloads='["123", "not-a-module"]\n')
    with pytest.raises(MetaScheduleDatabaseError, match=str(directory)):
        compile_dense_tuned(_tiny(), SHAPE, 1, target, db_dir=tmp_path)


def test_an_empty_database_compiles_untuned_and_runs(tmp_path, target, tiny_key, monkeypatch):
    import tvm
    from tvm import relax

    from compression.tvm_backend.metaschedule import compile_dense_tuned, database_dir

    _no_tuning(monkeypatch)
    _write_db(database_dir(tmp_path, tiny_key), tiny_key)
    exe = compile_dense_tuned(_tiny(), SHAPE, 1, target, db_dir=tmp_path)
    assert exe is not None
    vm = relax.VirtualMachine(exe, tvm.cpu())
    x = np.random.default_rng(0).random((1, *SHAPE), dtype=np.float32)
    out = vm["main"](tvm.runtime.tensor(x))
    out = out if hasattr(out, "numpy") else out[0]
    with torch.no_grad():
        ref = _tiny()(torch.from_numpy(x)).numpy()
    assert np.abs(out.numpy() - ref).max() < 1e-4


def test_tune_dense_reuses_an_existing_database_without_tuning(tmp_path, target, tiny_key, monkeypatch):
    from tvm.s_tir import meta_schedule as ms

    from compression.tvm_backend.metaschedule import database_dir, tune_dense

    monkeypatch.setattr(ms, "tune_tasks", lambda *_a, **_k: pytest.fail("tuned"))
    _write_db(database_dir(tmp_path, tiny_key), tiny_key, meta={"key": tiny_key, "trials": 7})
    summary = tune_dense(_tiny(), SHAPE, 1, target, trials=8, work_dir=tmp_path)
    assert summary.reused and summary.trials == 7 and summary.key == tiny_key and summary.tasks >= 1


def test_dense_runtimes_time_a_metaschedule_vm(target):
    import tvm
    from tvm import relax

    from compression.runtimes import best_dense, time_dense_runtimes
    from compression.tvm_backend.compile import export_relax

    model = _tiny()
    exe = tvm.compile(export_relax(model, SHAPE, 2), target=tvm.target.Target(target))
    vm = relax.VirtualMachine(exe, tvm.cpu())
    got = time_dense_runtimes(model, SHAPE, 2, threads=1, tvm_metaschedule_vm=vm)
    assert set(got) == {"torch", "onnxruntime", "tvm-metaschedule"}
    entry = got["tvm-metaschedule"]
    assert 0 < entry["p50"] <= entry["p90"] and entry["kernel_ms"] > 0
    assert best_dense(got)[1] == min(t["p50"] for t in got.values())


def test_the_tvm_backend_times_a_stored_metaschedule_build_and_skips_it_when_none(tmp_path, tiny_key, monkeypatch):
    from compression.tvm_backend.backend import TVMBackend
    from compression.tvm_backend.metaschedule import database_dir, default_db_root

    _no_tuning(monkeypatch)
    backend = TVMBackend(threads=1, cache_dir=str(tmp_path))
    assert backend._metaschedule_vm(_tiny(), SHAPE, 1) is None  # nothing stored: no export, no tuning
    _write_db(database_dir(default_db_root(str(tmp_path)), tiny_key), tiny_key)
    vm = backend._metaschedule_vm(_tiny(), SHAPE, 1)
    assert vm is not None
    from compression.runtimes import time_dense_runtimes

    runtimes = time_dense_runtimes(_tiny(), SHAPE, 1, threads=1, tvm_metaschedule_vm=vm)
    assert runtimes["tvm-metaschedule"]["p50"] > 0
