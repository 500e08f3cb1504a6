"""The one place the zoo build reaches for an executor (the same as grids use).

:func:`run_jobs` maps a picklable top-level function over job dicts with
:func:`suite.core.executors.make_executor` (``local``: a fresh process per job,
``ray``: a Ray task per job, on a cluster when ``address`` is given) and
returns the outcomes in job order.  ``inline`` runs the jobs one after the
other in this process: only the smoke profile uses it, where starting the
executor's fork server (seconds) would cost more than the jobs.  A failed job raises
:class:`~suite.core.errors.SuiteError` naming it: a zoo with a missing member would
silently change every metric.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from suite.core.errors import SuiteError


def eta_text(elapsed: float, done: int, total: int) -> str:
    """``"; about 40 s left"`` from the wall time of the jobs done so far (parallel jobs included); "" when done."""
    if done <= 0 or done >= total:
        return ""
    return f"; about {elapsed / done * (total - done):.0f} s left"


def run_jobs(fn: Callable[[dict[str, Any]], dict[str, Any]], jobs: Sequence[dict[str, Any]], *,
             kind: str = "local", parallel: int = 1, address: str | None = None,
             log: Callable[[str], None] = lambda m: None) -> list[dict[str, Any]]:
    """``[fn(job) for job in jobs]``, each call in its own process, ``parallel`` at a time."""
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    if not jobs:
        return []
    if kind == "inline":
        import torch

        threads = torch.get_num_threads()
        try:
            for index, job in enumerate(jobs):
                try:
                    results[index] = fn(job)
                except SuiteError:
                    raise
                except Exception as err:  # noqa: BLE001 - same report as an executor failure
                    raise SuiteError(f"zoo job {job.get('id', index)} failed: {type(err).__name__}: {err}") from None
                log(f"zoo: {index + 1}/{len(jobs)} {job.get('id', index)} done (inline)")
        finally:
            torch.set_num_threads(threads)
        return [r for r in results if r is not None]
    from suite.core.executors import make_executor

    # the fork server imports the zoo's modules once, torch._dynamo included (the first optimizer a process
    # builds imports it: 3.5 s), so a job starts in well under a second instead of 4-8 s
    start = time.perf_counter()
    with make_executor(kind, jobs=max(1, parallel), address=address,
                       preload=("torch._dynamo", "fingerprints.zoo", "fingerprints.families",
                                "suite.core.training")) as ex:
        for done, (index, outcome) in enumerate(ex.map_unordered(fn, list(jobs)), start=1):
            if not outcome.ok:
                raise SuiteError(f"zoo job {jobs[index].get('id', index)} failed: {outcome.error}")
            results[index] = outcome.value
            log(f"zoo: {done}/{len(jobs)} {jobs[index].get('id', index)} done ({outcome.seconds:.1f} s"
                f"{eta_text(time.perf_counter() - start, done, len(jobs))})")
    return [r for r in results if r is not None]
