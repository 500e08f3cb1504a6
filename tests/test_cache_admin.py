"""``suite cache ls`` / ``suite cache prune``: sizes, last use, age and size bounds, entries in use kept."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from suite.core import cache_admin as admin
from suite.core.errors import ConfigError
from suite.core.store import STORE_MANIFEST, Store


def _put(root: Path, namespace: str, key: dict, size: int, *, age_s: float = 0.0) -> Path:
    def build(tmp: Path) -> None:
        (tmp / "blob.bin").write_bytes(os.urandom(size))

    got = Store(root, namespace).get_or_build(key, build, lambda p: None)
    stamp = time.time() - age_s
    os.utime(got.path / STORE_MANIFEST, (stamp, stamp))
    return got.path


@pytest.fixture
def cache(tmp_path):
    root = tmp_path / "cache"
    paths = {
        "old": _put(root, "models", {"m": "old"}, 4000, age_s=10 * 86400),
        "mid": _put(root, "compressed", {"c": "mid"}, 3000, age_s=2 * 86400),
        "new": _put(root, "artifacts", {"a": "new"}, 2000, age_s=60),
    }
    return root, paths


def test_ls_lists_entries_sizes_and_last_use(cache):
    root, paths = cache
    entries = admin.list_entries(root)
    assert [e.path for e in entries] == [paths["old"], paths["mid"], paths["new"]]  # least recently used first
    for e in entries:
        blob = e.path / "blob.bin"
        assert e.size_bytes == blob.stat().st_size + (e.path / STORE_MANIFEST).stat().st_size and e.files == 2
    assert {e.namespace for e in entries} == {"models", "compressed", "artifacts"}
    assert time.time() - entries[0].last_used == pytest.approx(10 * 86400, abs=60)


def test_a_hit_counts_as_use(cache):
    root, paths = cache
    Store(root, "models").get_or_build({"m": "old"}, lambda t: pytest.fail("rebuilt"), lambda p: None)
    assert admin.list_entries(root)[-1].path == paths["old"]


def test_prune_by_age_removes_whole_entries_only(cache):
    root, paths = cache
    dry = admin.prune(root, older_than_s=86400, dry_run=True)
    assert [e.path for e in dry.removed] == [paths["old"], paths["mid"]] and paths["old"].exists()
    report = admin.prune(root, older_than_s=86400)
    assert [e.path for e in report.removed] == [paths["old"], paths["mid"]]
    assert not paths["old"].exists() and not paths["mid"].exists() and paths["new"].exists()
    leftovers = [p for p in root.rglob("*") if ".trash-" in p.name or ".tmp-" in p.name]
    assert leftovers == []
    assert report.freed_bytes > 7000 and [e.path for e in admin.list_entries(root)] == [paths["new"]]


def test_prune_by_size_drops_least_recently_used_first(cache):
    root, paths = cache
    report = admin.prune(root, max_size_bytes=6000)  # without the oldest (4000 B + manifest) the rest fits
    kept = [e.path for e in admin.list_entries(root)]
    assert paths["old"] not in kept and paths["new"] in kept
    assert sum(e.size_bytes for e in admin.list_entries(root)) <= 6000
    assert report.kept_bytes == sum(e.size_bytes for e in admin.list_entries(root))


def test_an_entry_being_loaded_is_not_removed(cache):
    """A concurrent loader holds the entry's use lock: prune skips it and the load completes."""
    root, paths = cache
    loading, release = threading.Event(), threading.Event()
    result = {}

    def slow_load(path: Path) -> bytes:
        loading.set()
        assert release.wait(10)
        return (path / "blob.bin").read_bytes()

    def reader() -> None:
        got = Store(root, "models").get_or_build({"m": "old"}, lambda t: None, slow_load)
        result["hit"], result["size"] = got.hit, len(got.value)

    t = threading.Thread(target=reader)
    t.start()
    assert loading.wait(10)
    try:
        report = admin.prune(root, max_size_bytes=0)
    finally:
        release.set()
        t.join(10)
    assert [e.path for e in report.in_use] == [paths["old"]]
    assert paths["old"].exists() and not paths["mid"].exists() and not paths["new"].exists()
    assert result == {"hit": True, "size": 4000}


def test_fresh_temporaries_are_kept_abandoned_ones_removed(cache):
    root, _ = cache
    fresh = root / "models" / ".x.tmp-fresh"
    stale = root / "models" / ".y.tmp-stale"
    for d in (fresh, stale):
        d.mkdir()
        (d / "part").write_bytes(b"123")
    old = time.time() - 2 * 86400
    os.utime(stale, (old, old))
    report = admin.prune(root)
    assert report.removed == [] and report.temporaries == [stale]
    assert fresh.exists() and not stale.exists()


def test_attach_runs_ties_records_to_entries(cache, tmp_path):
    root, paths = cache
    manifest = json.loads((paths["old"] / STORE_MANIFEST).read_text())
    runs = tmp_path / "runs"
    (runs / "r1").mkdir(parents=True)
    (runs / "r1" / "result.json").write_text(json.dumps({"run_id": "r1", "model": {
        "sha256": manifest["files"]["blob.bin"]}, "deployment": {"artifact": str(paths["new"])}}))
    entries = admin.list_entries(root)
    admin.attach_runs(entries, runs)
    assert {e.path: e.used_by for e in entries} == {paths["old"]: ["r1"], paths["mid"]: [], paths["new"]: ["r1"]}


def test_parse_size_and_age():
    assert admin.parse_size("1G") == 1024 ** 3 and admin.parse_size("500MB") == 500 * 1024 ** 2
    assert admin.parse_size("2048") == 2048
    assert admin.parse_age("7d") == 7 * 86400 and admin.parse_age("90s") == 90
    for bad in ("1X", "", "G"):
        with pytest.raises(ConfigError):
            admin.parse_size(bad)
    with pytest.raises(ConfigError):
        admin.parse_age("7 days")


def test_cli(cache, capsys):
    from suite.app.cli import main

    root, paths = cache
    assert main(["cache", "ls", "--cache-dir", str(root), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed["entries"]) == 3 and listed["total_bytes"] > 9000
    assert main(["cache", "prune", "--cache-dir", str(root), "--older-than", "1d"]) == 0
    out = capsys.readouterr().out
    assert "removed 2 entries" in out and paths["new"].exists() and not paths["old"].exists()
    assert main(["cache", "prune", "--cache-dir", str(root), "--max-size", "1X"]) == 2
    assert "bad size" in capsys.readouterr().err
