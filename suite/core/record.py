"""The result record: one schema, written atomically, one directory per run.

``DIR/<run_id>/`` holds ``result.json`` (schema below) and ``config.yaml``
(the resolved configuration).  The directory is assembled under a hidden
temporary name and renamed into place as the last step, so an interrupted run
(Ctrl-C, SIGTERM, crash) leaves no record at all rather than a half-written one
(SIGKILL leaves the hidden ``.<run_id>.tmp-*`` directory, never a record).

Schema (``schema_version`` "1.1"; "1.0" records lack the attacks, transfer
and fingerprints sections and still load), documented here and in the README:

=================  ==========================================================
key                meaning
=================  ==========================================================
schema_version     "1.1"
run_id             ``<UTC time>-<model>-<compress>-<source>-s<seed>-<hex>``
created_at         ISO 8601 UTC timestamp of the record
suite_version      version of the installed ``suite`` package
git_sha            commit of the checkout the run came from (or null)
task               ``classification`` (absent: classification) or ``sr``; an ``sr``
                   record (:mod:`suite.app.sr_pipeline`) fills the same keys with
                   PSNR / SSIM metrics, per-frame latency and ``per_image`` scores
env                python, torch, tvm, onnxruntime, numpy, platform, cpu,
                   threads, device
config             the resolved :class:`~suite.core.config.RunConfig`
seeds              ``{"run", "model_init", "data_order", "split"}``
source             name, shape, num_classes, split sizes, sha256, split digest
model              id, arch, width, source, params, macs (per image), sha256
                   of the cached state_dict, cache_hit, train report
compression        scheme, sparsity and scheme-specific facts
deployment         backend and backend-specific facts
metrics            ``clean_acc`` (fraction in [0, 1]) and later stages' metrics
attacks            list of attack entries (id, norm, eps, source, crafted_on,
                   evaluated_on, fooling_rate, asr, ...); see ``attacks.stage``
transfer           transfer matrices: name -> {rows, cols, values, metric}
fingerprints       list of fingerprint entries (id, R, T, U, auc, ...); see
                   ``fingerprints.stage``
timings            seconds per stage (source, model, compress, deploy,
                   evaluate, attack, fingerprint, total)
higher_is_better   metric name -> bool (direction for leaderboards), for each
                   ranked metric of ``metrics``, from :mod:`suite.core.metrics`
=================  ==========================================================
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import secrets
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, TypedDict

import yaml

from suite.core.files import atomic_write_text, fsync_dir  # noqa: F401 (fsync_dir re-exported)

SCHEMA_VERSION = "1.1"
SUPPORTED_SCHEMA_VERSIONS = ("1.0", "1.1")


class EnvInfo(TypedDict):
    python: str
    torch: str | None
    tvm: str | None
    onnxruntime: str | None
    numpy: str | None
    platform: str
    cpu: str
    threads: int
    device: str


class ModelInfo(TypedDict):
    id: str
    arch: str
    width: float
    source: str
    params: int
    macs: int
    sha256: str
    cache_hit: bool
    train: dict[str, Any]


class ResultRecord(TypedDict):
    schema_version: str
    run_id: str
    created_at: str
    suite_version: str
    git_sha: str | None
    env: EnvInfo
    config: dict[str, Any]
    seeds: dict[str, int]
    source: dict[str, Any]
    model: ModelInfo
    compression: dict[str, Any]
    deployment: dict[str, Any]
    metrics: dict[str, float]
    attacks: list[dict[str, Any]]
    transfer: dict[str, Any]
    fingerprints: list[dict[str, Any]]
    timings: dict[str, float]
    higher_is_better: dict[str, bool]


REQUIRED_KEYS = tuple(ResultRecord.__annotations__)
SECTIONS_SINCE_1_1 = ("attacks", "transfer", "fingerprints")


def package_version(name: str) -> str | None:
    """Installed version of ``name`` without importing it (None if absent)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env_info(threads: int, device: str) -> EnvInfo:
    return EnvInfo(
        python=platform.python_version(),
        torch=package_version("torch"),
        tvm=package_version("apache-tvm"),
        onnxruntime=package_version("onnxruntime"),
        numpy=package_version("numpy"),
        platform=platform.platform(),
        cpu=cpu_name(),
        threads=threads,
        device=device,
    )


def record_head(run_id: str, config: dict, *, seed: int, split_seed: int, source: dict, threads: int,
                device: str, suite_version: str, task: str | None = None) -> dict:
    """The identity keys every record starts with (schema_version ... source), in schema order.

    seed: the run's seed (also the model-init and data-order seed); split_seed: the source's split seed;
    task: written only when given (classification records leave it out, as before the key existed).
    """
    head: dict = {"schema_version": SCHEMA_VERSION, "run_id": run_id}
    if task is not None:
        head["task"] = task
    head.update({
        "created_at": utc_now().isoformat(),
        "suite_version": suite_version,
        "git_sha": git_sha(),
        "env": env_info(threads, device),
        "config": config,
        "seeds": {"run": seed, "model_init": seed, "data_order": seed, "split": int(split_seed)},
        "source": source,
    })
    return head


def git_sha() -> str | None:
    """Commit of the source checkout of this package, if it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else None


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def new_run_id(model: str, compress: str, source: str, seed: int, now: _dt.datetime | None = None) -> str:
    now = now or utc_now()
    return f"{now:%Y%m%dT%H%M%SZ}-{model}-{compress}-{source}-s{seed}-{secrets.token_hex(3)}"


def validate_record(record: dict[str, Any]) -> None:
    """Raise ValueError if ``record`` lacks a schema key or has a bad metric."""
    if not isinstance(record, dict):
        raise ValueError(f"a record is a JSON object, got {type(record).__name__}")
    version = record.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise ValueError(f"unsupported schema_version {version!r} "
                         f"(supported: {', '.join(SUPPORTED_SCHEMA_VERSIONS)})")
    required = [k for k in REQUIRED_KEYS if version != "1.0" or k not in SECTIONS_SINCE_1_1]
    missing = [k for k in required if k not in record]
    if missing:
        raise ValueError(f"record lacks keys: {', '.join(missing)}")
    acc = record["metrics"].get("clean_acc")
    if acc is not None and not 0.0 <= acc <= 1.0:
        raise ValueError(f"metrics.clean_acc must be a fraction in [0, 1], got {acc}")


class PendingRunDir:
    """A run directory under construction: hidden until :meth:`commit`.

    ``path`` is a hidden temporary sibling of the final directory; stages may
    write artifacts into it.  :meth:`commit` writes ``result.json`` and
    ``config.yaml`` and renames the directory to ``output_dir/<run_id>``;
    :meth:`abort` (or leaving the ``with`` block by an exception, including
    KeyboardInterrupt and the CLI's SIGTERM exception) removes it, so no
    half-written record survives.
    """

    def __init__(self, output_dir: str | os.PathLike, run_id: str) -> None:
        self.output_dir = Path(output_dir)
        self.run_id = run_id
        self.final = self.output_dir / run_id
        if self.final.exists():
            raise FileExistsError(f"run directory {self.final} already exists")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(dir=self.output_dir, prefix=f".{run_id}.tmp-"))
        self.committed = False
        try:
            os.chmod(self.path, 0o755)  # mkdtemp makes it private; records are meant to be shared
        except BaseException:  # an interrupt before the ``with`` block owns the directory
            self.abort()
            raise

    def commit(self, record: ResultRecord, config: dict[str, Any],
               extra_files: dict[str, str] | None = None) -> Path:
        validate_record(dict(record))
        atomic_write_text(self.path / "result.json", json.dumps(record, indent=2, sort_keys=False) + "\n")
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        for name, text in (extra_files or {}).items():
            atomic_write_text(self.path / name, text)
        os.rename(self.path, self.final)
        fsync_dir(self.output_dir)
        self.committed = True
        return self.final

    def abort(self) -> None:
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "PendingRunDir":
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


def write_run_dir(output_dir: str | os.PathLike, record: ResultRecord, config: dict[str, Any],
                  extra_files: dict[str, str] | None = None) -> Path:
    """Create ``output_dir/<run_id>/`` with ``result.json`` and ``config.yaml`` atomically."""
    with PendingRunDir(output_dir, record["run_id"]) as pending:
        return pending.commit(record, config, extra_files)


def load_record(path: str | os.PathLike) -> ResultRecord:
    """Read and validate ``result.json`` (``path`` may be the run directory)."""
    p = Path(path)
    if p.is_dir():
        p = p / "result.json"
    record = json.loads(p.read_text())
    validate_record(record)
    for key in SECTIONS_SINCE_1_1:  # upgrade 1.0 records in memory: empty sections
        record.setdefault(key, {} if key == "transfer" else [])
    return record  # type: ignore[return-value]
