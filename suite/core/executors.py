"""Executors: run many independent jobs, each in its own process.

Contract
--------
``make_executor(kind, *, jobs=1, address=None)`` returns an :class:`Executor`:

* ``"local"`` (default, no server): every call ``fn(item)`` runs in a fresh
  process, at most ``jobs`` at a time.  On Linux the process is forked from
  a clean fork server that has imported torch and the pipeline once (no
  state of the driver or of earlier jobs is inherited; only import time is
  saved); elsewhere it is started with ``spawn``.  A
  child that crashes (segfault, ``os._exit``, OOM kill, uncaught exception)
  becomes a failed :class:`JobOutcome` with a one-line error; the driver and
  the other jobs carry on.  Children die with the driver (``PR_SET_PDEATHSIG``
  on Linux), so a killed driver leaves no orphan writing results.
* ``"ray"``: every call is a Ray task (``max_calls=1``: a fresh worker process
  per job; ``max_retries=0``: a crashed job fails once, retries are the
  caller's choice).  ``address=None`` starts a private local Ray instance,
  otherwise ``ray.init(address=address)`` connects to a running cluster.
  :meth:`Executor.close` shuts down only what this executor started or
  connected; a cluster itself is never stopped.

``Executor.map_unordered(fn, items)`` yields ``(index, JobOutcome)`` as jobs
finish, in completion order; ``index`` is the position in ``items``.  ``fn``
must be a picklable top-level function taking one picklable item and
returning a JSON-able dict (the outcome's ``value``).

This module imports nothing heavy at import time (no torch, no ray).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterable, Iterator, Sequence

from suite.core.errors import ConfigError

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class JobOutcome:
    """What one job produced.

    ok: True when ``fn`` returned normally.
    value: ``fn``'s return value (None when not ok).
    error: one-line description of the failure ("" when ok).
    detail: the full traceback or crash description, for logs ("" when ok).
    seconds: wall-clock seconds of the job as seen by the driver.
    """

    ok: bool
    value: Any = None
    error: str = ""
    detail: str = ""
    seconds: float = 0.0


def one_line(text: str, limit: int = 500) -> str:
    """Collapse ``text`` to a single line of at most ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def describe_exit(exitcode: int | None) -> str:
    """Human description of a child's exit code (negative = killed by a signal)."""
    if exitcode is None:
        return "worker process vanished"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (killed: out of memory or by a user?)" if -exitcode == signal.SIGKILL else ""
        return f"worker process died with {name}{hint} before returning a result"
    return f"worker process exited with code {exitcode} before returning a result"


class Executor:
    """Base class; subclasses implement :meth:`map_unordered`."""

    kind: str = "?"
    jobs: int = 1

    def map_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, JobOutcome]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers and servers this executor started."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ local
def _set_parent_death_signal() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        pass


def _release_fork_server() -> None:
    """In a child of the fork server: drop the inherited "driver alive" pipe end.

    The fork server exits when every holder of that pipe's write end is gone;
    a job holding it would keep the server, and so itself, alive after the
    driver was killed.  Released, the server exits with the driver and the
    parent-death signal then kills the job.
    """
    from multiprocessing import forkserver

    server = forkserver._forkserver
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None and getattr(server, "_forkserver_pid", None) is None:
        try:
            os.close(fd)
        except OSError:
            pass
        server._forkserver_alive_fd = None


def _child_main(fn: Callable[[Any], Any], item: Any, conn: Connection, parent_pid: int | None) -> None:
    """Body of a local worker: run ``fn(item)`` and send ``(ok, payload)`` back.

    parent_pid: the driver's pid when the child was spawned by it directly
    (None for fork-server children, whose parent is the server).
    """
    _set_parent_death_signal()
    if parent_pid is not None and os.getppid() != parent_pid:  # the driver died before prctl took effect
        os._exit(1)
    _release_fork_server()
    try:
        value = fn(item)
        message: tuple[str, Any, str] = ("ok", value, "")
    except BaseException as err:  # noqa: BLE001 - everything becomes an outcome
        message = ("error", one_line(f"{type(err).__name__}: {err}"), traceback.format_exc())
    try:
        conn.send(message)
    except Exception as err:  # noqa: BLE001 - e.g. an unpicklable return value
        conn.send(("error", one_line(f"could not send the job's result back: {type(err).__name__}: {err}"),
                   traceback.format_exc()))
    conn.close()


@dataclass
class _Running:
    index: int
    process: Any  # multiprocessing.Process
    conn: Connection
    started: float
    message: tuple[str, Any, str] | None = None
    eof: bool = False


# Imported once by the fork server so that each job does not pay for them.
# Callers add the modules their jobs run (the grid preloads its pipeline).
FORKSERVER_PRELOAD = ("torch", "sklearn.datasets")


class LocalExecutor(Executor):
    """Runs each call in a fresh process, ``jobs`` at a time.

    timeout: optional seconds after which a job's process is killed and the
        job reported as failed.
    start_method: ``"forkserver"`` (default on Linux; preloads
        :data:`FORKSERVER_PRELOAD` plus ``preload``) or ``"spawn"``.
    preload: further module names the fork server imports once.
    """

    kind = "local"

    def __init__(self, jobs: int = 1, timeout: float | None = None, start_method: str | None = None,
                 preload: tuple[str, ...] = ()) -> None:
        if jobs < 1:
            raise ConfigError(f"jobs must be >= 1, got {jobs}")
        self.jobs = int(jobs)
        self.timeout = timeout
        if start_method is None:
            start_method = "forkserver" if sys.platform.startswith("linux") else "spawn"
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            self._ctx.set_forkserver_preload([*FORKSERVER_PRELOAD, *preload])
        self._running: dict[int, _Running] = {}

    def _start(self, fn: Callable[[Any], Any], index: int, item: Any) -> _Running:
        recv, send = self._ctx.Pipe(duplex=False)
        parent = None if self._ctx.get_start_method() == "forkserver" else os.getpid()
        proc = self._ctx.Process(target=_child_main, args=(fn, item, send, parent),
                                 name=f"suite-job-{index}")
        proc.start()
        send.close()  # the child holds the only write end: EOF means it is gone
        return _Running(index, proc, recv, time.perf_counter())

    def _finish(self, run: _Running, killed_for_timeout: bool = False) -> JobOutcome:
        run.process.join(30)
        if run.process.is_alive():  # sent its result but hangs on exit
            run.process.kill()
            run.process.join()
        if run.message is None and not run.eof and not killed_for_timeout:
            # it may have sent its result just before exiting, after our last look at the pipe
            try:
                if run.conn.poll():
                    run.message = run.conn.recv()
            except (EOFError, OSError):
                pass
        run.conn.close()
        seconds = time.perf_counter() - run.started
        if run.message is not None:
            status, payload, detail = run.message
            if status == "ok":
                return JobOutcome(True, payload, "", "", seconds)
            return JobOutcome(False, None, payload, detail, seconds)
        if killed_for_timeout:
            error = f"job exceeded its time limit of {self.timeout:g} s and was killed"
        else:
            error = describe_exit(run.process.exitcode)
        return JobOutcome(False, None, error, error, seconds)

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[int, JobOutcome]]:
        todo = list(enumerate(items))
        todo.reverse()
        try:
            while todo or self._running:
                while todo and len(self._running) < self.jobs:
                    index, item = todo.pop()
                    self._running[index] = self._start(fn, index, item)
                waitables: list[Any] = []
                for run in self._running.values():
                    waitables.append(run.process.sentinel)
                    if not run.eof:
                        waitables.append(run.conn)
                wait(waitables, timeout=self._wait_timeout())
                for index, run in list(self._running.items()):
                    if not run.eof and run.conn.poll():
                        try:
                            run.message = run.conn.recv()
                        except (EOFError, OSError):
                            pass
                        run.eof = True  # one message per child, then nothing
                    timed_out = (self.timeout is not None and run.message is None
                                 and time.perf_counter() - run.started > self.timeout)
                    if timed_out:
                        run.process.kill()
                    if run.message is not None or timed_out or not run.process.is_alive():
                        del self._running[index]
                        yield index, self._finish(run, killed_for_timeout=timed_out)
        finally:
            self._kill_running()

    def _wait_timeout(self) -> float | None:
        if self.timeout is None:
            return None
        now = time.perf_counter()
        left = min(self.timeout - (now - r.started) for r in self._running.values())
        return max(0.05, left)

    def _kill_running(self) -> None:
        for run in self._running.values():
            if run.process.is_alive():
                run.process.kill()
            run.process.join(5)
            run.conn.close()
        self._running.clear()

    def close(self) -> None:
        self._kill_running()


# -------------------------------------------------------------------- ray
def _import_ray():
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError('--executor ray needs Ray: pip install -e ".[cluster]"') from None
    return ray


def _ray_call(fn: Callable[[Any], Any], item: Any) -> tuple[str, Any, str, float]:
    """Runs inside a Ray worker: exceptions become a result, not a Ray error."""
    started = time.perf_counter()
    try:
        return ("ok", fn(item), "", time.perf_counter() - started)
    except BaseException as err:  # noqa: BLE001
        return ("error", one_line(f"{type(err).__name__}: {err}"), traceback.format_exc(),
                time.perf_counter() - started)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast when nothing listens at a ``HOST:PORT`` address (Ray itself retries for minutes)."""
    import socket

    if "://" in address or address == "auto" or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except ValueError:
        raise ConfigError(f"bad Ray address {address!r} (expected HOST:PORT, e.g. head-node:6379)") from None
    except OSError as err:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r} ({err.strerror or err}); "
                          f"is `ray start --head` running there?") from None


class RayExecutor(Executor):
    """Runs each call as a Ray task in a fresh worker process.

    jobs: CPUs of a private local instance (address None); on a cluster the
        cluster's resources decide the parallelism.
    cpus_per_job: ``num_cpus`` each task reserves (default 1).
    """

    kind = "ray"

    def __init__(self, jobs: int = 1, address: str | None = None, cpus_per_job: float = 1.0) -> None:
        if jobs < 1:
            raise ConfigError(f"jobs must be >= 1, got {jobs}")
        ray = _import_ray()
        self.jobs = int(jobs)
        self.address = address
        self.cpus_per_job = cpus_per_job
        self._ray = ray
        self._connected_here = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                                      "configure_logging": False}
            if address is None:
                kwargs["num_cpus"] = int(max(1, round(self.jobs * cpus_per_job)))
                # workers must import what the driver imports (tests, checkouts)
                kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(
                    p for p in sys.path if p and os.path.isdir(p))}}
            else:
                _check_reachable(address)
                kwargs["address"] = address
            try:
                ray.init(**kwargs)
            except Exception as err:  # noqa: BLE001 - Ray raises several kinds for a bad address
                where = f"connect to the Ray cluster at {address!r}" if address else "start a local Ray instance"
                raise ConfigError(f"cannot {where}: {one_line(f'{type(err).__name__}: {err}')}") from None
            self._connected_here = True
        self._remote = ray.remote(max_calls=1, max_retries=0, num_cpus=cpus_per_job)(_ray_call)

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[int, JobOutcome]]:
        ray = self._ray
        started = time.perf_counter()
        fn_ref = ray.put(fn)
        pending = {self._remote.remote(fn_ref, item): i for i, item in enumerate(items)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    index = pending.pop(ref)
                    try:
                        status, payload, detail, seconds = ray.get(ref)
                    except Exception as err:  # worker crash, OOM kill, cancellation
                        msg = one_line(f"{type(err).__name__}: {err}")
                        yield index, JobOutcome(False, None, msg, str(err), time.perf_counter() - started)
                        continue
                    if status == "ok":
                        yield index, JobOutcome(True, payload, "", "", seconds)
                    else:
                        yield index, JobOutcome(False, None, payload, detail, seconds)
        finally:
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort
                    pass

    def close(self) -> None:
        if self._connected_here and self._ray.is_initialized():
            self._ray.shutdown()  # stops a private instance; only disconnects from a cluster
        self._connected_here = False


def make_executor(kind: str = "local", *, jobs: int = 1, address: str | None = None,
                  timeout: float | None = None, cpus_per_job: float = 1.0,
                  preload: tuple[str, ...] = ()) -> Executor:
    """Build an executor by name (see the module docstring for the contract).

    Unknown ``kind`` raises :class:`~suite.core.errors.ConfigError` listing the
    choices; ``"ray"`` without Ray installed raises one naming the extra.
    ``timeout`` and ``preload`` (modules the local fork server imports once)
    apply to the local executor only.
    """
    if kind == "local":
        if address is not None:
            raise ConfigError("--address applies to --executor ray, not local")
        return LocalExecutor(jobs=jobs, timeout=timeout, preload=preload)
    if kind == "ray":
        return RayExecutor(jobs=jobs, address=address, cpus_per_job=cpus_per_job)
    raise ConfigError(f"unknown executor {kind!r} (choices: {', '.join(EXECUTORS)})")
