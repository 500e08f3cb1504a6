"""Executors: every job in its own process; crashes become failed outcomes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from suite.core.errors import ConfigError
from suite.core.executors import JobOutcome, LocalExecutor, make_executor


# Job functions must be top-level (picklable by reference).
def _pid_square(x: int) -> dict:
    return {"x": x, "square": x * x, "pid": os.getpid()}


def _maybe_crash(x: int) -> dict:
    if x == 1:
        raise ValueError("bad item\nsecond line")
    if x == 2:
        os._exit(7)
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    if x == 4:
        os.kill(os.getpid(), signal.SIGSEGV)
    return {"x": x}


def _sleep(seconds: float) -> dict:
    time.sleep(seconds)
    return {"slept": seconds}


def _big(n: int) -> dict:
    return {"blob": "x" * n}


def _write_pid_and_sleep(path: str) -> dict:
    with open(path + ".tmp", "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(120)
    return {}


def test_unknown_kind_lists_choices():
    with pytest.raises(ConfigError, match="local, ray"):
        make_executor("slurm")


def test_local_runs_each_job_in_a_fresh_process():
    with make_executor("local", jobs=2) as ex:
        out = dict(ex.map_unordered(_pid_square, [0, 1, 2, 3]))
    assert sorted(out) == [0, 1, 2, 3]
    assert all(isinstance(o, JobOutcome) and o.ok and o.error == "" for o in out.values())
    assert [out[i].value["square"] for i in range(4)] == [0, 1, 4, 9]
    pids = {o.value["pid"] for o in out.values()}
    assert len(pids) == 4 and os.getpid() not in pids


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_local_crashes_become_failed_outcomes(start_method):
    with LocalExecutor(jobs=2, start_method=start_method) as ex:
        out = dict(ex.map_unordered(_maybe_crash, [0, 1, 2, 3, 4, 5]))
    assert out[0].ok and out[0].value == {"x": 0}
    assert out[5].ok and out[5].value == {"x": 5}
    assert not out[1].ok and out[1].error == "ValueError: bad item second line"
    assert "Traceback" in out[1].detail
    assert not out[2].ok and "exited with code 7" in out[2].error
    assert not out[3].ok and "SIGKILL" in out[3].error
    assert not out[4].ok and "SIGSEGV" in out[4].error
    for o in out.values():
        assert "\n" not in o.error


def test_local_parallelism_and_timeout():
    ex = LocalExecutor(jobs=2, timeout=5)
    start = time.perf_counter()
    out = dict(ex.map_unordered(_sleep, [1.0, 1.0, 60.0]))
    elapsed = time.perf_counter() - start
    ex.close()
    assert out[0].ok and out[1].ok
    assert not out[2].ok and "time limit" in out[2].error
    assert elapsed < 30


def test_local_large_result_does_not_deadlock():
    with make_executor("local") as ex:
        [(i, o)] = list(ex.map_unordered(_big, [5_000_000]))
    assert o.ok and len(o.value["blob"]) == 5_000_000


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_jobs_die_with_a_killed_driver(tmp_path):
    pidfile = tmp_path / "job.pid"
    driver = subprocess.Popen([sys.executable, "-c", (
        "import sys; sys.path.insert(0, %r); import test_executors as t\n"
        "from suite.core.executors import make_executor\n"
        "with make_executor('local') as ex:\n"
        "    list(ex.map_unordered(t._write_pid_and_sleep, [%r]))\n") % (str(Path(__file__).parent), str(pidfile))])
    try:
        deadline = time.time() + 60
        while not pidfile.exists() and time.time() < deadline:
            time.sleep(0.2)
        job_pid = int(pidfile.read_text())
        assert _alive(job_pid)
    finally:
        driver.kill()
        driver.wait()
    deadline = time.time() + 20
    while _alive(job_pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(job_pid), "the job outlived its killed driver"


def test_address_only_for_ray():
    with pytest.raises(ConfigError, match="--address"):
        make_executor("local", address="head:6379")


def test_ray_missing_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("no ray here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[cluster\]"'):
        make_executor("ray")


def test_ray_executor_runs_and_isolates_crashes(restore_signal_handlers):
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e \".[cluster]\")")
    import ray

    with make_executor("ray", jobs=2) as ex:
        out = dict(ex.map_unordered(_maybe_crash, [0, 1, 2, 5]))
        assert ray.is_initialized()
    assert not ray.is_initialized()  # the private instance it started is shut down
    assert out[0].ok and out[0].value == {"x": 0} and out[3].ok and out[3].value == {"x": 5}
    assert not out[1].ok and out[1].error == "ValueError: bad item second line"
    assert not out[2].ok and "\n" not in out[2].error and out[2].error


def test_ray_unreachable_address_fails_fast():
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e \".[cluster]\")")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="cannot reach the Ray cluster"):
        make_executor("ray", address="127.0.0.1:1")
    assert time.perf_counter() - start < 30


def test_many_quick_jobs_never_lose_a_result():
    # a child that sends its result and exits at once must not be mistaken for a crash
    with make_executor("local", jobs=4) as ex:
        out = dict(ex.map_unordered(_pid_square, list(range(40))))
    assert sorted(out) == list(range(40))
    assert all(o.ok and o.value["square"] == i * i for i, o in out.items()), \
        [o.error for o in out.values() if not o.ok]


def _nested(n: int) -> dict:
    with make_executor("local", jobs=2) as ex:
        out = dict(ex.map_unordered(_pid_square, list(range(n))))
    return {"squares": sorted(o.value["square"] for o in out.values() if o.ok), "pid": os.getpid()}


def test_jobs_may_use_an_executor_themselves():
    # e.g. a fingerprint stage building its suspect zoo inside a grid job
    with make_executor("local") as ex:
        [(_, outcome)] = list(ex.map_unordered(_nested, [3]))
    assert outcome.ok, outcome.error
    assert outcome.value["squares"] == [0, 1, 4]
