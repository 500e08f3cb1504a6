"""Grids: YAML expansion, exactly-once records under kill -9, failures, Ray parity.

The acceptance tests run a real 12-job smoke grid (tiny models, torch and
ONNX Runtime backends): locally with two kill -9 of the driver on the way,
then its seed-0 half (every compressor x backend cell) on a private local Ray
instance with its own cache, and compare the metrics job by job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from browser_check import needs_browser, render
from leaderboard_records import make_record
from suite.app.cli import main
from suite.core.errors import ConfigError, DataError, UnknownNameError
from suite.app.gridspec import config_from_dict, expand_grid, job_identity, load_grid
from suite.app.gridstore import GridStore
from suite.core.record import load_record

REPO = Path(__file__).resolve().parents[1]
SMOKE_GRID = REPO / "suite" / "data" / "grids" / "smoke.yaml"

# 12 jobs: 2 seeds x (dense, block@0.5, block@0.75 on torch; dense and nm 2:4 on torch and onnx)
ACCEPTANCE_GRID = {
    "name": "acceptance",
    "profile": "smoke",
    "models": ["resnet20"],
    "sources": ["digits16"],
    "compressors": ["none", "block", {"name": "nm", "sparsities": [0.5]}],
    "sparsities": [0.5, 0.75],
    "backends": ["torch", "onnx"],
    "seeds": [0, 1],
    "attacks": [],
    "fingerprints": [],
    "exclude": [{"compress": "block", "backend": "onnx"}],
    "settings": {"limit": 64, "epochs": 1, "threads": 1},
}


def _spec(**changes):
    spec = json.loads(json.dumps(ACCEPTANCE_GRID))
    spec.update(changes)
    return spec


# ------------------------------------------------------------- expansion
def test_packaged_smoke_grid_has_twelve_jobs():
    grid = load_grid(SMOKE_GRID, cache_dir="/tmp/c")
    assert grid.name == "smoke" and len(grid.jobs) == 12
    names = [j.name for j in grid.jobs]
    assert len(set(names)) == 12
    assert sum(j.labels["compress"] == "none" for j in grid.jobs) == 2  # sparsity does not multiply dense
    assert all(j.config["profile"] == "smoke" and j.config["threads"] == 1 for j in grid.jobs)
    assert all(j.config["attacks"] == [] and j.config["fingerprints"] == [] for j in grid.jobs)


def test_expansion_exclude_and_identity():
    grid = expand_grid(_spec(), cache_dir="/tmp/c")
    assert len(grid.jobs) == 12 and grid.excluded == 4
    assert not any(j.labels["compress"] == "block" and j.labels["backend"] == "onnx" for j in grid.jobs)
    assert {j.labels["sparsity"] for j in grid.jobs if j.labels["compress"] == "nm"} == {0.5}
    # identity ignores where and how fast a job runs, not what it computes
    other = expand_grid(_spec(), cache_dir="/elsewhere", threads=2)
    assert [j.job_id for j in other.jobs] == [j.job_id for j in grid.jobs]
    changed = expand_grid(_spec(settings={"limit": 64, "epochs": 2, "threads": 1}), cache_dir="/tmp/c")
    assert not {j.job_id for j in changed.jobs} & {j.job_id for j in grid.jobs}
    assert all(j.config["cache_dir"] == "/tmp/c" for j in grid.jobs)
    in_file = expand_grid(_spec(settings={"limit": 64, "cache_dir": "rel/cache"}))
    assert {j.config["cache_dir"] for j in in_file.jobs} == {str(Path("rel/cache").absolute())}
    # a job's config rebuilds the same RunConfig
    job = grid.jobs[3]
    rebuilt = config_from_dict(job.config).resolved().as_dict()
    assert job_identity(rebuilt) == job.job_id


def test_expansion_dedupes_and_axes():
    grid = expand_grid(_spec(seeds=[0, 0], attacks=[[], []]), cache_dir="/tmp/c")
    assert len(grid.jobs) == 6 and grid.duplicates == 18
    flat = expand_grid(_spec(fingerprints=[]), cache_dir="/tmp/c")
    assert all(j.labels["fingerprints"] == [] for j in flat.jobs)
    aliases = expand_grid(_spec(models=["resnet20"], compressors=["dense", "block-based"]), cache_dir="/tmp/c")
    assert {j.labels["compress"] for j in aliases.jobs} == {"none", "block"}


def test_attack_args_axis():
    spec = _spec(models=["resnet20"], compressors=["none"], backends=["torch"], seeds=[0],
                 attack_args=[{"eps": 0.0157}, {"eps": 0.0314}],
                 settings={"limit": 64, "attack_args": {"eval_limit": 32}})
    grid = expand_grid(spec, cache_dir="/tmp/c")
    assert [j.config["attack_args"] for j in grid.jobs] == [{"eval_limit": 32, "eps": 0.0157},
                                                          {"eval_limit": 32, "eps": 0.0314}]
    assert grid.jobs[0].job_id != grid.jobs[1].job_id and grid.jobs[1].name.endswith("/att:eps=0.0314")
    with pytest.raises(ConfigError, match="mapping"):
        expand_grid(_spec(attack_args=[0.1]), cache_dir="/tmp/c")


@pytest.mark.parametrize("change, error, match", [
    ({"modles": ["vgg16"]}, ConfigError, "unknown keys modles"),
    ({"models": ["vgg17"]}, UnknownNameError, "did you mean 'vgg16'"),
    ({"settings": {"limit": 64, "colour": "red"}}, ConfigError, "unknown keys colour"),
    ({"exclude": [{"colour": "red"}]}, ConfigError, "unknown keys colour"),
    ({"seeds": []}, ConfigError, "axis 'seeds' is empty"),
    ({"sparsities": [1.5]}, ConfigError, "sparsity must be in"),
    ({"attacks": ["a", ["b"]]}, ConfigError, "mixes names and lists"),
    ({"attacks": [["no-such-attack"]]}, UnknownNameError, "no-such-attack"),
    ({"exclude": [{"model": "resnet20"}]}, ConfigError, "every job was excluded"),
])
def test_bad_grids_fail_before_running(change, error, match):
    with pytest.raises(error, match=match):
        expand_grid(_spec(**change), cache_dir="/tmp/c")


def test_bad_grid_files(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [vgg16\n")
    with pytest.raises(DataError, match="not valid YAML"):
        load_grid(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(DataError, match="mapping"):
        load_grid(bad)
    assert main(["grid", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read grid file" in capsys.readouterr().err
    assert main(["grid", str(SMOKE_GRID), "--executor", "slurm"]) == 2
    assert "choices: local, ray" in capsys.readouterr().err


def test_dry_run_lists_jobs(capsys):
    assert main(["grid", str(SMOKE_GRID), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 12 and all(len(line.split()[0]) == 20 for line in lines)


# ------------------------------------------------- exactly-once bookkeeping
def _fake_outcome(store: GridStore, job_id: str, tmp_name: str = "r") -> dict:
    """What run_job returns, with a staged run directory as the pipeline leaves it."""
    record = make_record("resnet20", "block", 0.5, "torch", 0)
    record["run_id"] = f"20260101T000000Z-{tmp_name}"
    record["config"]["output_dir"] = "staging"
    staged = store.new_staging(job_id) / record["run_id"]
    (staged / "compressed").mkdir(parents=True)
    (staged / "compressed" / "model.pt").write_bytes(b"weights")
    text = json.dumps(record, indent=2) + "\n"
    (staged / "result.json").write_text(text)
    (staged / "config.yaml").write_text(yaml.safe_dump(record["config"]))
    return {"run_id": record["run_id"], "staged": str(staged), "host": "h", "result_json": text}


def test_promote_is_one_rename_and_crash_points_resume(tmp_path):
    identity = lambda config: "from-config"  # noqa: E731
    with GridStore(tmp_path / "out") as store:
        # crash after the job finished but before the driver promoted: nothing visible
        _fake_outcome(store, "job-a", "a")
        assert store.scan(identity).done == {}
        assert store.clear_staging() == 1 and not any(store.staging_dir.iterdir())
        # a failure, then a successful retry; a crash before the failure file is removed
        store.record_failure("job-b", {"error": "boom"})
        store.record_failure("job-b", {"error": "boom again"})
        assert json.loads((store.failed_dir / "job-b.json").read_text())["attempts"] == 2
        final = store.promote("job-b", _fake_outcome(store, "job-b", "b"), {"grid": "g"})
        store.record_failure("job-b", {"error": "stale"})  # as if killed between rename and unlink
        state = store.scan(identity)
        assert state.done == {"job-b": final} and "job-b" in state.failed
        rec = load_record(final)
        assert rec["config"]["output_dir"] == str(tmp_path / "out")
        assert json.loads((final / "job.json").read_text())["job_id"] == "job-b"
        assert (final / "compressed" / "model.pt").read_bytes() == b"weights"  # artifacts moved along
        assert not any(store.staging_dir.iterdir())
        # staged directory not visible here (another machine, no shared filesystem)
        remote = _fake_outcome(store, "job-c", "c")
        remote["staged"] = "/nonexistent/node7/staging/x"
        final_c = store.promote("job-c", remote, {"grid": "g"})
        assert load_record(final_c)["run_id"].endswith("-c")
        assert "node7" in json.loads((final_c / "job.json").read_text())["artifacts_left_at"]
        # a record written by `suite run` (no job.json) counts under the identity of its config
        plain = tmp_path / "out" / "plain-run"
        plain.mkdir()
        (plain / "result.json").write_text(json.dumps(make_record("vgg16", "none", 0.0, "torch", 0)))
        assert store.scan(identity).done["from-config"] == plain
        (tmp_path / "out" / "junk").mkdir()
        (tmp_path / "out" / "junk" / "result.json").write_text("{")
        assert [p.name for p, _ in store.scan(identity).unreadable] == ["junk"]


def test_second_driver_on_the_same_directory_is_refused(tmp_path):
    with GridStore(tmp_path):
        with pytest.raises(ConfigError, match="another grid is running"):
            GridStore(tmp_path).lock()
    with GridStore(tmp_path):  # released on exit
        pass


def test_failed_jobs_are_recorded_and_retried_on_request(tmp_path, capsys):
    spec = _spec(compressors=["none", {"name": "block", "args": {"no_such_setting": 1}}], sparsities=[0.5],
                 backends=["torch"], seeds=[0], exclude=[])
    grid_file = tmp_path / "g.yaml"
    grid_file.write_text(yaml.safe_dump(spec))
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["grid", str(grid_file), "--output-dir", str(out), "--cache-dir", str(cache), "--quiet"]
    assert main(args) == 1
    first = json.loads(capsys.readouterr().out)
    assert (first["ran"], first["succeeded"], first["failed"]) == (2, 1, 1)
    [failure] = list((out / ".grid" / "failed").glob("*.json"))
    info = json.loads(failure.read_text())
    assert "no_such_setting" in info["error"] and "\n" not in info["error"] and info["attempts"] == 1
    assert info["config"]["compress_args"] == {"no_such_setting": 1}
    assert main(args) == 1  # not retried without --retry-failed
    second = json.loads(capsys.readouterr().out)
    assert (second["ran"], second["already_recorded"], second["skipped_failed"]) == (0, 1, 1)
    assert main(args + ["--retry-failed"]) == 1
    third = json.loads(capsys.readouterr().out)
    assert (third["ran"], third["failed"]) == (1, 1)
    assert json.loads(failure.read_text())["attempts"] == 2
    records = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(records) == 1  # the good job, recorded once


# ------------------------------------------------------------- acceptance
def _records(out: Path) -> dict[str, dict]:
    """job_id -> record for every visible run directory (all must be complete and valid)."""
    found: dict[str, dict] = {}
    for d in sorted(out.iterdir()):
        if d.name.startswith("."):
            continue
        record = load_record(d)  # raises on a corrupt record
        job_id = json.loads((d / "job.json").read_text())["job_id"]
        assert job_id not in found, f"job {job_id} recorded twice"
        assert job_identity(record["config"]) == job_id
        found[job_id] = record
    return found


def _grid_cmd(grid_file: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "suite", "grid", str(grid_file), "--output-dir", str(out), "--cache-dir",
            str(cache), "--jobs", "2", "--quiet", *extra]


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"grid ended before the kill point (rc {proc.returncode})"
        assert time.time() < deadline, "kill point never reached"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory):
    """The acceptance grid run locally, with the driver killed -9 twice on the way."""
    base = tmp_path_factory.mktemp("grid-local")
    grid_file = base / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(ACCEPTANCE_GRID))
    out, cache = base / "runs", base / "cache"
    cmd = _grid_cmd(grid_file, out, cache)
    started = time.perf_counter()
    kills = []
    staging = out / ".grid" / "staging"
    visible = lambda: [d for d in out.iterdir() if not d.name.startswith(".")] if out.is_dir() else []  # noqa
    # kill 1: as soon as jobs are running, before any record exists
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: staging.is_dir() and any(staging.iterdir()))
    kills.append(len(visible()))
    # kill 2: part-way, with records written and jobs in flight
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: len(visible()) >= 5)
    kills.append(len(visible()))
    partial = _records(out)  # every visible record is complete and valid
    # resume to the end
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    return {"out": out, "cache": cache, "grid_file": grid_file, "summary": summary, "kills": kills,
            "partial": partial, "seconds": time.perf_counter() - started}


@pytest.mark.slow
def test_local_grid_survives_kill_9_with_every_job_recorded_once(local_grid):
    out = local_grid["out"]
    expected = {j.job_id for j in load_grid(local_grid["grid_file"], cache_dir=str(local_grid["cache"])).jobs}
    assert len(expected) == 12
    records = _records(out)
    assert set(records) == expected
    assert local_grid["kills"][1] >= 5 and local_grid["summary"]["already_recorded"] >= 5
    assert local_grid["summary"]["ran"] == 12 - local_grid["summary"]["already_recorded"]
    for job_id, rec in local_grid["partial"].items():  # records seen before the kill were kept as they were
        assert records[job_id]["run_id"] == rec["run_id"]
    assert not any((out / ".grid" / "staging").iterdir())
    assert not list((out / ".grid" / "failed").glob("*.json"))
    # records are what `suite run` writes: the artifacts came along
    onnx = [r for r in records.values() if r["deployment"]["backend"] == "onnx"]
    assert len(onnx) == 4 and all((out / r["run_id"] / "artifacts").is_dir() for r in onnx)
    # running it again finds nothing to do
    again = subprocess.run(_grid_cmd(local_grid["grid_file"], out, local_grid["cache"]), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and json.loads(again.stdout)["ran"] == 0
    assert _records(out).keys() == records.keys()


@pytest.mark.slow
def test_leaderboard_on_grid_records(local_grid, tmp_path):
    out = local_grid["out"]
    (out / "stray.json").write_text("{not json")
    board = tmp_path / "board"
    res = subprocess.run([sys.executable, "-m", "suite", "leaderboard", str(out), "-o", str(board)],
                         capture_output=True, text=True, timeout=300)
    (out / "stray.json").unlink()
    assert res.returncode == 0, res.stderr[-2000:]
    assert "stray.json" in res.stderr
    summary = json.loads(res.stdout)
    assert summary["records"] == 12 and summary["skipped"] == 1
    md = (board / "leaderboard.md").read_text()
    assert md.count("| resnet20") == 12  # compression view: every run (robustness, IP: no data yet)
    page = (board / "leaderboard.html").read_text()
    assert 'id="plot-accuracy_vs_sparsity"' in page and 'id="table-compression"' in page
    assert (board / "runs.csv").read_text().count("\n") == 13


@pytest.mark.slow
@pytest.mark.browser
@needs_browser
def test_grid_leaderboard_page_in_chromium(local_grid, tmp_path):
    from reports.cli import write_leaderboard

    write_leaderboard(local_grid["out"], tmp_path / "board", formats=("html",), warn=lambda m: None)
    page = render(tmp_path / "board" / "leaderboard.html", tmp_path)
    for view in ("compression", "robustness", "ip"):
        assert f'id="view-{view}"' in page.dom
    assert page.table_rows("table-compression") == 12
    # smoke records have no attack or fingerprint sections yet: those views say so
    assert 'id="table-robustness-nodata"' in page.dom and 'id="table-ip-nodata"' in page.dom
    [acc] = [p for p in page.plots if p["id"] == "plot-accuracy_vs_sparsity"]
    stddev, colours = page.plot_pixels(acc)
    assert acc["decoded"] and stddev > 15 and colours > 20


@pytest.mark.slow
def test_ray_grid_matches_local_metrics(local_grid, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e \".[cluster]\")")
    import ray

    out, cache = tmp_path / "runs", tmp_path / "cache"  # own cache: models are trained again
    # one seed of the acceptance grid: every compressor x backend cell (6 jobs, one model trained), each a
    # fresh Ray worker process; the seed axis is the local grid's business (12 jobs cost 12 worker starts)
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump({**ACCEPTANCE_GRID, "seeds": [0]}))
    expected = {j.job_id for j in load_grid(grid_file, cache_dir=str(cache)).jobs}
    assert len(expected) == 6
    started = time.perf_counter()
    res = subprocess.run(_grid_cmd(grid_file, out, cache, "--executor", "ray"),
                         capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    assert summary["executor"] == "ray" and summary["succeeded"] == 6
    assert not ray.is_initialized()
    ray_records, local_records = _records(out), _records(local_grid["out"])
    assert ray_records.keys() == expected and expected < local_records.keys()
    for job_id, rec in ray_records.items():
        local = local_records[job_id]
        assert rec["metrics"] == local["metrics"], job_id
        assert rec["model"]["sha256"] == local["model"]["sha256"]  # identical training, bit for bit
        assert rec["compression"].get("macs") == local["compression"].get("macs")
        assert rec["model"]["cache_hit"] is False or rec["model"]["cache_dir"].startswith(str(cache))
    print(f"\nlocal grid (with two kill -9 and resume): {local_grid['seconds']:.0f} s; ray grid: {seconds:.0f} s")
