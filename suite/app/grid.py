"""``python -m suite grid GRID.yaml``: run a product of run settings, resumably.

Every job runs in its own process (see :mod:`suite.core.executors`) and produces
one record exactly as ``suite run`` does.  The job writes into a hidden
staging directory and returns; the driver puts the record in place (see
:mod:`suite.app.gridstore` for the exactly-once argument).  Re-running a grid
skips the jobs already recorded; failed jobs are remembered with their error
and re-run only with ``--retry-failed``.

Exit status: 0 when every job of the grid is recorded, 1 when some job failed
(now or before), 2 for a bad grid file or setting, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

SUMMARY_KEYS = ("grid", "output_dir", "executor", "jobs", "already_recorded", "skipped_failed", "ran",
                "succeeded", "failed", "seconds")


# ------------------------------------------------------------------ the job
def run_job(item: dict[str, Any]) -> dict[str, Any]:
    """Run one grid job (in a worker process); returns what the driver needs to record it.

    item: ``{"job_id", "config": RunConfig.as_dict(), "staging": directory}``.
    Returns ``{"run_id", "staged" (run directory), "host", "pid", "result_json",
    "metrics", "seconds"}``.  Exceptions propagate (the executor reports them).
    """
    import dataclasses
    import socket

    os.environ.setdefault("TQDM_DISABLE", "1")
    from suite.app.gridspec import config_from_dict
    from suite.app.quiet import silence_known_library_warnings

    silence_known_library_warnings()
    from suite.app.pipeline import run

    started = time.perf_counter()
    cfg = dataclasses.replace(config_from_dict(item["config"]), output_dir=item["staging"], quiet=True)
    path, record = run(cfg)
    return {"run_id": record["run_id"], "staged": str(path), "host": socket.gethostname(), "pid": os.getpid(),
            "result_json": (path / "result.json").read_text(), "metrics": dict(record["metrics"]),
            "seconds": round(time.perf_counter() - started, 3)}


# ---------------------------------------------------------------- the driver
def default_threads(executor: str, jobs: int) -> int:
    """Threads per job when neither the grid nor ``--threads`` says: share the cores."""
    if executor == "ray":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, jobs))


def run_grid(grid, output_dir: str | os.PathLike, *, executor: str = "local", address: str | None = None,
             jobs: int = 1, retry_failed: bool = False, timeout: float | None = None, quiet: bool = False,
             cpus_per_job: float = 1.0, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the grid's jobs that are not recorded yet; returns a summary (``SUMMARY_KEYS``).

    grid: a :class:`suite.app.gridspec.GridSpec`.
    """
    import socket

    from tqdm import tqdm

    from suite.core.executors import make_executor
    from suite.app.gridspec import job_identity
    from suite.app.gridstore import GridStore
    from suite.core.record import utc_now

    say = log or (lambda m: print(f"[grid] {m}", file=sys.stderr, flush=True))
    started = time.perf_counter()
    out = Path(output_dir).expanduser().absolute()
    summary: dict[str, Any] = {"grid": grid.name, "output_dir": str(out), "executor": executor,
                               "jobs": len(grid.jobs), "already_recorded": 0, "skipped_failed": 0, "ran": 0,
                               "succeeded": 0, "failed": 0, "seconds": 0.0}
    with GridStore(out) as store:
        cleared = store.clear_staging()
        if cleared:
            say(f"removed {cleared} unfinished job(s) left in staging by an interrupted grid")
        state = store.scan(job_identity)
        for path, reason in state.unreadable:
            say(f"warning: skipping {path}: {reason}")
        for job_id, extra in state.duplicates.items():
            say(f"warning: job {job_id} is recorded more than once: {', '.join(str(p) for p in extra)}")
        for job_id in set(state.done) & set(state.failed):
            store.clear_failure(job_id)  # recorded after all: the failure entry is stale
            del state.failed[job_id]
        todo, skipped_failed = [], []
        for job in grid.jobs:
            if job.job_id in state.done:
                summary["already_recorded"] += 1
            elif job.job_id in state.failed and not retry_failed:
                skipped_failed.append(job)
            else:
                todo.append(job)
        summary["skipped_failed"] = len(skipped_failed)
        _write_manifest(store, grid)
        say(f"{grid.name}: {len(grid.jobs)} jobs ({grid.excluded} excluded, {grid.duplicates} duplicates); "
            f"{summary['already_recorded']} already recorded, {len(skipped_failed)} failed before "
            f"(skipped{'' if not skipped_failed else '; --retry-failed re-runs them'}), {len(todo)} to run "
            f"with --executor {executor}")
        if not todo:
            summary["seconds"] = round(time.perf_counter() - started, 3)
            return summary
        items = []
        for job in todo:
            items.append({"job_id": job.job_id, "config": job.config, "staging": str(store.new_staging(job.job_id))})
        driver_host = socket.gethostname()
        ex = make_executor(executor, jobs=jobs, address=address, timeout=timeout, cpus_per_job=cpus_per_job,
                           preload=("suite.app.pipeline",))
        bar = tqdm(total=len(items), unit="job", desc=f"grid {grid.name}", file=sys.stderr,
                   disable=True if quiet else None,
                   dynamic_ncols=True)
        try:
            with ex:
                for index, outcome in ex.map_unordered(run_job, items):
                    job, item = todo[index], items[index]
                    summary["ran"] += 1
                    info = {"grid": grid.name, "name": job.name, "labels": job.labels, "executor": executor,
                            "host": (outcome.value or {}).get("host", driver_host),
                            "seconds": round(outcome.seconds, 3), "finished_at": utc_now().isoformat()}
                    error = outcome.error
                    if outcome.ok:
                        try:
                            store.promote(job.job_id, outcome.value, info)
                            summary["succeeded"] += 1
                        except (OSError, ValueError, KeyError, TypeError) as err:
                            error = f"job finished but its record could not be put in place: " \
                                    f"{type(err).__name__}: {err}"
                    if error:
                        summary["failed"] += 1
                        store.record_failure(job.job_id, {**info, "error": error, "detail": outcome.detail[-4000:],
                                                          "config": job.config})
                        store.discard_staging(item["staging"])
                        bar.write(f"[grid] job {job.job_id} ({job.name}) failed: {error}", file=sys.stderr)
                    bar.update(1)
                    bar.set_postfix(ok=summary["succeeded"], failed=summary["failed"], refresh=False)
        finally:
            bar.close()
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def _write_manifest(store, grid) -> None:
    from suite.core.cache import atomic_write_text

    manifest = {"grid": grid.name, "jobs": [{"job_id": j.job_id, "name": j.name, "labels": j.labels}
                                            for j in grid.jobs]}
    atomic_write_text(store.state_dir / "grid.json", json.dumps(manifest, indent=1) + "\n")


# ---------------------------------------------------------------------- CLI
def add_command(sub: Any) -> Callable[[argparse.Namespace], int]:
    """Add the ``grid`` subcommand to ``sub``; returns its handler."""
    p = sub.add_parser("grid", help="run a grid of models x sources x schemes x ... (resumable)",
                       description="Run every job of a grid file once; re-running skips recorded jobs.")
    p.add_argument("grid_file", help="grid YAML (see suite/data/grids/smoke.yaml)")
    p.add_argument("--executor", default="local", help="local (default, no server) | ray")
    p.add_argument("--address", default=None, help="ray: address of a running cluster, e.g. HEAD:6379 "
                                                   "(default: start a private local instance)")
    p.add_argument("--jobs", type=int, default=1,
                   help="jobs in parallel (local; ray: CPUs of the private local instance)")
    p.add_argument("--output-dir", default=None, help="where records go (default: the grid's output_dir or runs)")
    p.add_argument("--cache-dir", default=None,
                   help="model/tuning cache shared by all jobs (default $SUITE_CACHE or ~/.cache/suite; "
                        "on a cluster: a shared filesystem path)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per job and CPUs a Ray task reserves (default: the grid's, else "
                        "cores/jobs locally, 1 on Ray)")
    p.add_argument("--retry-failed", action="store_true", help="re-run jobs that failed before")
    p.add_argument("--timeout", type=float, default=None, help="local: kill a job after this many seconds")
    p.add_argument("--dry-run", action="store_true", help="list the jobs (id and name) and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return cmd_grid


def cmd_grid(args: argparse.Namespace) -> int:
    from suite.core.errors import ConfigError
    from suite.core.executors import EXECUTORS
    from suite.app.gridspec import describe, load_grid

    if args.executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {args.executor!r} (choices: {', '.join(EXECUTORS)})")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    grid = load_grid(args.grid_file, cache_dir=args.cache_dir, threads=args.threads,
                     default_threads=default_threads(args.executor, args.jobs))
    if args.dry_run:
        print("\n".join(describe(grid.jobs)))
        return 0
    threads = {int(j.config.get("threads") or 1) for j in grid.jobs}
    output_dir = args.output_dir or grid.output_dir or "runs"
    try:
        summary = run_grid(grid, output_dir, executor=args.executor, address=args.address, jobs=args.jobs,
                           retry_failed=args.retry_failed, timeout=args.timeout, quiet=args.quiet,
                           cpus_per_job=float(max(threads)))
    except KeyboardInterrupt:
        print("interrupted: recorded jobs are kept; run the grid again to resume", file=sys.stderr)
        return 130
    print(json.dumps(summary))
    complete = summary["already_recorded"] + summary["succeeded"] == summary["jobs"]
    return 0 if complete else 1
