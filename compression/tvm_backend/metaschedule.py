"""TVM dense with MetaSchedule: the dense model compiled by TVM with a tuned schedule database.

This is a *baseline*, not a deployment: it is what a user who knows TVM would
deploy instead of our compressed model (every op of the dense model scheduled
by MetaSchedule, TVM's own auto-scheduler), so our kernels are timed against
TVM at its best, not only against our own dense template.

Flow (the same import as :func:`compression.tvm_backend.compile.export_relax`):
``torch.export`` -> ``from_exported_program`` -> ``FoldBatchnormToConv2D`` ->
``FoldConstant`` -> :func:`prepare_for_tuning` (library dispatch,
``LegalizeOps``, ``AnnotateTIROpPattern``, ``FoldConstant``, ``FuseOps``,
``FuseTIR``: exactly the preparation that
``meta_schedule.relax_integration.compile_relax`` applies before
``MetaScheduleApplyDatabase``, so the tuned functions are the ones it looks up).

Databases live on disk, one directory per key (:func:`database_key`):

    <db_root>/<key[:24]>/
        database_workload.json        MetaSchedule JSONDatabase (workloads)
        database_tuning_record.json   MetaSchedule JSONDatabase (measured records)
        meta.json                     the full key, its parts, tuning budget and time

The key is a sha256 of (the op workloads: structural hashes of the fused TIR
functions, tensor contents skipped, so weights never matter; the canonical
target JSON; the TVM and tvm-ffi versions).  A pruned model whose weights are
run densely has the same workloads as its dense original and shares its
database.  A directory appears only complete: tuning writes into a staging
directory that is renamed into place after ``meta.json`` is written.

Policy: :func:`compile_dense_tuned` never tunes.  No directory for the key ->
``None``.  A directory that exists but cannot be read (a missing or
unparseable file, a ``meta.json`` for another key, records that point at no
workload) -> :class:`MetaScheduleDatabaseError` naming the directory: a
damaged baseline is an error to fix (delete the directory, tune again), not
something to drop silently, since dropping it would make our deployment look
faster than it is against the user's best alternative.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from suite.core.errors import ArtifactError

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
META_FILE = "meta.json"
KEY_DIGITS = 24
FORMAT = 1  # bump when the directory layout or the key recipe changes


class MetaScheduleDatabaseError(ArtifactError):
    """A MetaSchedule database directory exists for a key but cannot be used (corrupt or mismatched)."""


@dataclass
class TuneSummary:
    """What one :func:`tune_dense` call did (JSON-ready with :func:`dataclasses.asdict`).

    key: full database key; directory: where the database lives;
    reused: True when a database for the key existed and nothing was tuned;
    trial_budget: the requested total trials; trials: measured records in
    the database; tasks: tuning tasks (fused TIR functions);
    tuning_seconds: MetaSchedule wall time (0 when reused);
    prepare_seconds: export + preparation + key.
    """

    key: str
    directory: str
    reused: bool
    trial_budget: int
    trials: int
    tasks: int
    task_names: list[str]
    tuning_seconds: float
    prepare_seconds: float
    target: dict[str, Any]
    versions: dict[str, str]
    input_shape: list[int]
    batch: int
    extra: dict[str, Any] = field(default_factory=dict)


def tvm_versions() -> dict[str, str]:
    """``{"tvm": ..., "tvm_ffi": ...}`` of the installed packages (both shape the database format)."""
    import tvm

    try:
        import tvm_ffi

        ffi = str(getattr(tvm_ffi, "__version__", "unknown"))
    except ImportError:  # pragma: no cover - tvm 0.27 always ships with tvm_ffi
        ffi = "none"
    return {"tvm": str(tvm.__version__), "tvm_ffi": ffi}


def canonical_target(target: dict[str, Any] | str) -> dict[str, Any]:
    """The target as TVM canonicalises it (defaults filled in), as a plain JSON dict."""
    import tvm

    return json.loads(str(tvm.target.Target(target)))


def prepare_for_tuning(mod: Any, target: dict[str, Any] | str) -> Any:
    """Legalize and fuse a Relax module the way ``compile_relax`` does before applying a database.

    Returns the module whose ``tirx.PrimFunc`` s are the tuning workloads.
    """
    import tvm
    from tvm import relax
    from tvm.relax import pipeline

    tgt = tvm.target.Target(target)
    try:
        dispatch = list(pipeline.library_dispatch_passes(tgt))
    except (ValueError, AttributeError):
        dispatch = []
    seq = tvm.transform.Sequential([
        *dispatch,
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ])
    with tgt, tvm.transform.PassContext(opt_level=3):
        return seq(mod)


def workload_hashes(prepared: Any) -> list[str]:
    """Sorted structural hashes (hex, tensor contents skipped) of the prepared module's TIR functions."""
    import tvm
    import tvm_ffi

    out = []
    for _, func in prepared.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            out.append(f"{tvm_ffi.structural_hash(func, skip_tensor_content=True):016x}")
    return sorted(out)


def database_key(workloads: list[str], target: dict[str, Any] | str, versions: dict[str, str] | None = None) -> str:
    """sha256 hex of (workloads, canonical target, TVM versions): the name of a database directory.

    ``versions`` defaults to :func:`tvm_versions` (tests pass others).
    """
    payload = {"format": FORMAT, "workloads": sorted(workloads), "target": canonical_target(target),
               "versions": dict(versions if versions is not None else tvm_versions())}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def database_dir(db_root: str | os.PathLike, key: str) -> Path:
    """The directory of ``key`` under ``db_root``."""
    return Path(db_root) / key[:KEY_DIGITS]


def default_db_root(cache_dir: str | None = None) -> Path:
    """``<suite cache>/tvm/metaschedule``."""
    from suite.core.config import default_cache_dir

    return Path(cache_dir or default_cache_dir()) / "tvm" / "metaschedule"


def export_dense(model: torch.nn.Module, input_shape: tuple[int, int, int], batch: int) -> Any:
    """The dense Relax import of ``model`` (``compile.export_relax``: BN folded, constants folded)."""
    from compression.tvm_backend.compile import export_relax

    return export_relax(model, tuple(input_shape), int(batch))


def dense_key(model: torch.nn.Module, input_shape: tuple[int, int, int], batch: int,
              target: dict[str, Any]) -> tuple[str, Any, Any]:
    """``(key, exported module, prepared module)`` of ``model`` at ``batch`` for ``target``."""
    mod = export_dense(model, input_shape, batch)
    prepared = prepare_for_tuning(mod, target)
    return database_key(workload_hashes(prepared), target), mod, prepared


def _read_lines(path: Path) -> list[Any]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            value = json.loads(line)
            if not isinstance(value, list):
                raise ValueError(f"line {number} is not a JSON list")
            rows.append(value)
    return rows


def check_database(directory: str | os.PathLike, key: str) -> dict[str, Any]:
    """Validate a database directory for ``key``; returns its ``meta.json``.

    Raises :class:`MetaScheduleDatabaseError` (the message names the
    directory and the fix) when a file is missing or unparseable, ``meta.json``
    belongs to another key, or a record points at no workload.
    """
    directory = Path(directory)
    fix = "delete the directory and tune again (bench/tune_metaschedule.py)"
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("meta.json is not a JSON object")
        workloads = _read_lines(directory / WORKLOAD_FILE)
        records = _read_lines(directory / RECORD_FILE)
    except (OSError, ValueError) as err:
        raise MetaScheduleDatabaseError(
            f"MetaSchedule database {directory} is unreadable ({type(err).__name__}: {err}); {fix}") from None
    if meta.get("key") != key:
        raise MetaScheduleDatabaseError(
            f"MetaSchedule database {directory} belongs to key {str(meta.get('key'))[:16]}..., "
            f"not {key[:16]}...; {fix}")
    for number, rec in enumerate(records, 1):
        if not rec or not isinstance(rec[0], int) or not 0 <= rec[0] < len(workloads):
            raise MetaScheduleDatabaseError(
                f"MetaSchedule database {directory}: record {number} points at no workload "
                f"({len(workloads)} workloads); {fix}")
    return meta


def load_database(db_root: str | os.PathLike, key: str) -> Any:
    """The ``JSONDatabase`` stored for ``key`` under ``db_root``, or ``None`` when there is none.

    Raises :class:`MetaScheduleDatabaseError` for a directory that exists but is damaged.
    """
    from tvm.s_tir import meta_schedule as ms

    directory = database_dir(db_root, key)
    if not directory.exists():
        return None
    check_database(directory, key)
    try:
        return ms.database.JSONDatabase(str(directory / WORKLOAD_FILE), str(directory / RECORD_FILE),
                                        allow_missing=False)
    except Exception as err:  # noqa: BLE001 - TVM raises its own error types from C++
        raise MetaScheduleDatabaseError(
            f"MetaSchedule database {directory} could not be loaded by TVM "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}); "
            "delete the directory and tune again") from None


def _make_build() -> Callable[[Any, Any, Any], Any]:
    """A MetaSchedule build function for the builder's worker processes, without the slow import.

    TVM's ``default_build`` imports ``tvm.s_tir.tensor_intrin`` in every
    build worker; that import alone takes about a minute on 2 cores, and the
    builder restarts its workers for every batch, so every candidate hit the
    30 s build timeout (all trials recorded as failures).  This one does the
    rest of ``default_build`` (drop the weight-layout-rewrite blocks, build).
    A closure, so cloudpickle sends it by value: the worker does not have to
    import this module (or torch).
    """

    def build(mod: Any, target: Any, _params: Any) -> Any:
        from tvm.driver import build as tvm_build
        from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

        mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
        return tvm_build(mod, target=target)

    return build


def _num_trials_per_iter(trials: int, tasks: int) -> int:
    """Trials per search iteration: the budget spread over the tasks, between 4 and 64."""
    return max(4, min(64, trials // max(1, tasks)))


def tune_dense(model: torch.nn.Module, input_shape: tuple[int, int, int], batch: int, target: dict[str, Any], *,
               trials: int, work_dir: str | os.PathLike, retune: bool = False, seed: int = 0,
               population_size: int = 256, max_workers: int | None = None,
               build_timeout: float = 120.0, run_timeout: float = 60.0,
               log: Callable[[str], None] | None = None) -> TuneSummary:
    """Tune the dense ``model`` with MetaSchedule (``trials`` in total) and store the database under ``work_dir``.

    ``work_dir`` is the database root (e.g. :func:`default_db_root`); the
    database goes to ``database_dir(work_dir, key)``.  When a database for the
    key exists already it is reused (``reused=True``, nothing tuned) unless
    ``retune``; a damaged one raises :class:`MetaScheduleDatabaseError`
    (``retune=True`` replaces it).  The search runs MetaSchedule's evolutionary search with
    ``population_size`` candidates (TVM's default of 512 costs more search
    time than measuring on 2 cores), the gradient task scheduler, the XGBoost
    cost model and the local builder and runner (``max_workers`` build
    processes, default: all CPUs; ``build_timeout`` / ``run_timeout`` seconds
    per candidate, generous because each build batch starts fresh worker
    processes that import TVM).  Expensive: minutes per 100 trials on 2
    cores.  Never call it from tests.
    """
    import tvm
    from tvm.s_tir import meta_schedule as ms

    say = log or (lambda _msg: None)
    if int(trials) < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    t0 = time.perf_counter()
    key, _, prepared = dense_key(model, input_shape, batch, target)
    root = Path(work_dir)
    final = database_dir(root, key)
    versions = tvm_versions()
    tgt = tvm.target.Target(target)
    tasks = ms.relax_integration.extract_tasks(prepared, tgt)
    task_names = [t.task_name for t in tasks]
    prepare_seconds = time.perf_counter() - t0
    base = dict(key=key, directory=str(final), trial_budget=int(trials), tasks=len(tasks), task_names=task_names,
                prepare_seconds=round(prepare_seconds, 3), target=canonical_target(target), versions=versions,
                input_shape=[int(v) for v in input_shape], batch=int(batch))
    if final.exists() and not retune:
        meta = check_database(final, key)
        say(f"database exists for key {key[:12]}: {final} (not tuned again)")
        return TuneSummary(**base, reused=True, trials=int(meta.get("trials", 0)), tuning_seconds=0.0,
                           extra={"stored": meta})

    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{key[:KEY_DIGITS]}.tuning-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            extracted_tasks=tasks, work_dir=str(staging),
            strategy=ms.search_strategy.EvolutionarySearch(population_size=int(population_size)), seed=seed)
        per_iter = _num_trials_per_iter(int(trials), len(contexts))
        say(f"tuning {len(contexts)} tasks, {trials} trials ({per_iter} per iteration), key {key[:12]}")
        database = ms.database.JSONDatabase(work_dir=str(staging))
        t_tune = time.perf_counter()
        ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(staging),
                      max_trials_global=int(trials), num_trials_per_iter=per_iter,
                      builder=ms.builder.LocalBuilder(max_workers=max_workers, timeout_sec=build_timeout,
                                                      f_build=_make_build()),
                      runner=ms.runner.LocalRunner(timeout_sec=run_timeout),
                      database=database, cost_model="xgb", task_scheduler="gradient")
        tuning_seconds = time.perf_counter() - t_tune
        measured = len(_read_lines(staging / RECORD_FILE)) if (staging / RECORD_FILE).exists() else 0
        meta = {**base, "format": FORMAT, "trials": measured, "tuning_seconds": round(tuning_seconds, 3),
                "seed": seed, "population_size": int(population_size), "trials_per_iter": per_iter,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        ready = root / f".{key[:KEY_DIGITS]}.ready-{os.getpid()}"
        shutil.rmtree(ready, ignore_errors=True)
        ready.mkdir()
        for name in (WORKLOAD_FILE, RECORD_FILE):
            src = staging / name
            if src.exists():
                shutil.copyfile(src, ready / name)
            else:
                (ready / name).write_text("", encoding="utf-8")
        (ready / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(ready, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"tuned {measured} trials in {tuning_seconds:.1f}s -> {final}")
    return TuneSummary(**base, reused=False, trials=measured, tuning_seconds=round(tuning_seconds, 3))


def compile_dense_tuned(model: torch.nn.Module, input_shape: tuple[int, int, int], batch: int,
                        target: dict[str, Any], *, db_dir: str | os.PathLike) -> Any:
    """The dense ``model`` compiled with its MetaSchedule database applied, or ``None`` when none is stored.

    Never tunes.  ``db_dir`` is the database root (as given to
    :func:`tune_dense`).  Returns a Relax executable (run it with
    ``relax.VirtualMachine(exe, tvm.cpu())``).  Raises
    :class:`MetaScheduleDatabaseError` when the key's directory is damaged.
    Functions the database does not cover (a task that got no trial) are
    compiled unscheduled, as ``compile_relax`` does.
    """
    import tvm
    from tvm.s_tir import meta_schedule as ms

    key, mod, _ = dense_key(model, input_shape, batch, target)
    database = load_database(db_dir, key)
    if database is None:
        return None
    return ms.relax_integration.compile_relax(database, mod, tvm.target.Target(target), params=None)


def summary_dict(summary: TuneSummary) -> dict[str, Any]:
    """:class:`TuneSummary` as a JSON-ready dict."""
    return asdict(summary)
