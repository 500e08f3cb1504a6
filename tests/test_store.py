"""suite.core.store: hits, misses, corrupt entries, and concurrent publishers of the same key."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from suite.core.files import json_digest, update_json
from suite.core.store import STORE_MANIFEST, Store

KEY = {"what": "entry", "n": 3, "shape": (1, 2)}


def _build_files(tmp: Path) -> str:
    (tmp / "a.bin").write_bytes(bytes(range(256)) * 4)
    (tmp / "sub").mkdir()
    (tmp / "sub" / "b.txt").write_text("hello")
    return "built"


def _load(entry: Path) -> bytes:
    return (entry / "a.bin").read_bytes() + (entry / "sub" / "b.txt").read_bytes()


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


def test_json_digest_matches_the_historical_cache_keys():
    import hashlib

    payload = {"b": [1, 2], "a": {"x": 1.5}}
    assert json_digest(payload) == hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    compact = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert json_digest(payload, compact=True) == compact


def test_miss_then_hit(tmp_path):
    store, builds = Store(tmp_path, "kind"), []

    def build(tmp):
        builds.append(1)
        return _build_files(tmp)

    first = store.get_or_build(KEY, build, _load)
    assert (first.value, first.hit) == ("built", False)
    assert first.path == tmp_path / "kind" / json_digest(KEY)[:24]
    manifest = json.loads((first.path / STORE_MANIFEST).read_text())
    assert set(manifest["files"]) == {"a.bin", "sub/b.txt"} and manifest["key"] == {"what": "entry", "n": 3,
                                                                                      "shape": [1, 2]}
    second = store.get_or_build(KEY, build, _load)
    assert second.hit and second.value == _load(first.path) and len(builds) == 1
    assert _leftovers(first.path.parent) == []


def test_named_entries_and_lock(tmp_path):
    store = Store(tmp_path, "models")
    got = store.get_or_build(KEY, _build_files, _load, name="arch/abc", lock=True)
    assert got.path == tmp_path / "models" / "arch" / "abc" and not got.hit
    assert store.get_or_build(KEY, _build_files, _load, name="arch/abc", lock=True).hit


def _flip(entry):
    data = bytearray((entry / "a.bin").read_bytes())
    data[10] ^= 0xFF
    (entry / "a.bin").write_bytes(bytes(data))


def _delete(entry):
    (entry / "sub" / "b.txt").unlink()


def _extra(entry):
    (entry / "sub" / "intruder.py").write_text("x = 1")


def _bad_manifest(entry):
    (entry / STORE_MANIFEST).write_text("{not json")


def _no_manifest(entry):
    (entry / STORE_MANIFEST).unlink()


def _other_key(entry):
    manifest = json.loads((entry / STORE_MANIFEST).read_text())
    manifest["key"]["n"] = 4
    (entry / STORE_MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("corrupt, reason", [(_flip, "a.bin sha256 mismatch"), (_delete, "sub/b.txt missing"),
                                             (_extra, "unexpected file sub/intruder.py"),
                                             (_bad_manifest, "unreadable"), (_no_manifest, "missing"),
                                             (_other_key, "key does not match")])
def test_corrupt_entry_is_reported_moved_aside_and_rebuilt(tmp_path, corrupt, reason):
    store, builds, warnings = Store(tmp_path, "kind"), [], []

    def build(tmp):
        builds.append(1)
        return _build_files(tmp)

    entry = store.get_or_build(KEY, build, _load).path
    good = _load(entry)
    corrupt(entry)
    got = store.get_or_build(KEY, build, _load, warn=lambda d, why: warnings.append((d, why)))
    assert not got.hit and len(builds) == 2 and got.value == "built"
    assert len(warnings) == 1 and warnings[0][0] == entry and reason in warnings[0][1]
    assert _load(entry) == good and _leftovers(entry.parent) == []
    assert store.get_or_build(KEY, build, _load).hit and len(builds) == 2


def test_load_failure_marks_corrupt_and_legacy_entries(tmp_path):
    store, warnings = Store(tmp_path, "kind"), []
    entry = store.get_or_build(KEY, _build_files, _load).path

    def picky(d):
        raise ValueError("does not parse\nsecond line")

    got = store.get_or_build(KEY, _build_files, picky, warn=lambda d, why: warnings.append(why))
    assert not got.hit and warnings == ["does not parse"]
    # an entry without a manifest (older writer) is accepted with legacy=True when load accepts it
    (entry / STORE_MANIFEST).unlink()
    assert store.get_or_build(KEY, _build_files, _load, legacy=True).hit


def test_failed_build_leaves_nothing(tmp_path):
    store = Store(tmp_path, "kind")

    def boom(tmp):
        _build_files(tmp)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.get_or_build(KEY, boom, _load)
    assert list((tmp_path / "kind").iterdir()) == []


def test_lost_race_loads_the_winner(tmp_path):
    """The final directory appears while this process builds: its copy is discarded, the winner's loaded."""
    store = Store(tmp_path, "kind")

    def build(tmp):
        (tmp / "a.bin").write_bytes(b"mine")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("")
        # another process publishes first
        store.publish(KEY, lambda d: _build_files(d))
        return "mine"

    got = store.get_or_build(KEY, build, _load)
    assert got.hit and got.value == _load(got.path) and got.value.startswith(bytes(range(8)))
    assert _leftovers(got.path.parent) == []


# ------------------------------------------------------------ concurrency
def _race_worker(root: str, barrier, out: str, index: int) -> None:
    store = Store(root, "race")

    def build(tmp):
        barrier.wait(timeout=60)  # every process is building at the same moment
        time.sleep(0.3)
        _build_files(tmp)
        (tmp / "who.txt").write_text("same content from every builder")
        return b"own"

    got = store.get_or_build(KEY, build, lambda d: _load(d) + (d / "who.txt").read_bytes(), lock=False)
    data = _load(got.path) + (got.path / "who.txt").read_bytes()
    Path(out, f"{index}.json").write_text(json.dumps({"hit": got.hit, "sha": json_digest(data.hex()),
                                                      "path": str(got.path)}))


def _compressed_worker(root: str, barrier, out: str, index: int) -> None:
    import torch

    from compression.base import CompressionResult
    from compression.cache import get_compressed

    def factory():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))

    def compress():
        barrier.wait(timeout=60)
        time.sleep(0.3)
        model = factory()
        with torch.no_grad():
            model[1].weight[:, :6] = 0.0
        return CompressionResult(model, {"scheme": "test", "sparsity": 0.5})

    workdir = Path(out) / f"run{index}" / "compressed"
    result = get_compressed(cache_dir=root, model_name="tiny", dense_sha256="ab" * 32, compress_name="test",
                            sparsity=0.5, settings={}, seed=0, profile="smoke", model_factory=factory,
                            compress=compress, workdir=workdir)
    weights = result.model[1].weight.detach().numpy().tobytes()
    Path(out, f"{index}.json").write_text(json.dumps({"hit": result.info["cache_hit"],
                                                      "sha": json_digest(weights.hex()),
                                                      "files": sorted(p.name for p in workdir.iterdir())}))


def _run_racers(target, root: Path, out: Path, n: int = 4) -> list[dict]:
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=target, args=(str(root), barrier, str(out), i)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * n
    return [json.loads((out / f"{i}.json").read_text()) for i in range(n)]


def test_concurrent_builders_of_one_key_all_succeed_without_the_lock(tmp_path):
    root, out = tmp_path / "cache", tmp_path / "out"
    out.mkdir()
    results = _run_racers(_race_worker, root, out, n=4)
    assert len({r["sha"] for r in results}) == 1 and len({r["path"] for r in results}) == 1
    assert sum(not r["hit"] for r in results) == 1  # exactly one published; the others loaded its entry
    # no temporary leftovers (lock files stay: .<name>.use.lock is the entry's reader lock)
    assert [p.name for p in (root / "race").iterdir() if not p.name.endswith(".lock")] == [json_digest(KEY)[:24]]
    assert Store(root, "race").verify(root / "race" / json_digest(KEY)[:24], KEY)


def test_concurrent_runs_publishing_one_compressed_model(tmp_path):
    """The old pipeline race: the loser's rename raised ENOTEMPTY and its run failed."""
    root, out = tmp_path / "cache", tmp_path / "out"
    out.mkdir()
    results = _run_racers(_compressed_worker, root, out, n=4)
    assert len({r["sha"] for r in results}) == 1 and sum(not r["hit"] for r in results) == 1
    assert all({"model.pt", "info.json", "manifest.json"} <= set(r["files"]) and STORE_MANIFEST not in r["files"]
               for r in results)
    parent = root / "compressed" / "tiny"
    assert len([p for p in parent.iterdir() if not p.name.endswith(".lock")]) == 1 and _leftovers(parent) == []


# ------------------------------------------------------------ single JSON files
def _merge_worker(path: str, barrier, index: int) -> None:
    barrier.wait(timeout=60)
    for j in range(20):
        update_json(path, lambda cur: {"entries": {**((cur or {}).get("entries") or {}), f"{index}-{j}": j}})


def test_update_json_concurrent_writers_merge(tmp_path):
    path = tmp_path / "db.json"
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_merge_worker, args=(str(path), barrier, i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 4
    assert len(json.loads(path.read_text())["entries"]) == 80
    assert sorted(os.listdir(tmp_path)) == [".db.json.lock", "db.json"]


def test_deployment_keys_carry_the_compiler_sources(tmp_path, monkeypatch):
    # a change to the TVM compiler's sources (a kernel template, a schedule) must build afresh, not reuse an
    # artifact the old compiler made: the key holds a digest of those sources
    import compression.cache as ccache

    args = dict(state_sha256="s", target="llvm", args={}, threads=2, shape=(1, 8, 8), tvm="0.27", ort="1.2")
    tvm_key = ccache.deployment_key(backend="tvm", **args)
    assert len(tvm_key["compiler"]) == 64 and tvm_key["compiler"] != ccache.compiler_digest("onnx")
    assert ccache.deployment_key(backend="torch", **args)["compiler"] is None
    fake = tmp_path / "tvm_backend"
    fake.mkdir()
    (fake / "kernels.py").write_text("TEMPLATE = 'a'\n")
    monkeypatch.setattr(ccache, "__file__", str(tmp_path / "cache.py"))
    ccache.compiler_digest.cache_clear()
    try:
        before = ccache.compiler_digest("tvm")
        (fake / "kernels.py").write_text("TEMPLATE = 'b'\n")
        ccache.compiler_digest.cache_clear()
        assert ccache.compiler_digest("tvm") != before
    finally:
        ccache.compiler_digest.cache_clear()
