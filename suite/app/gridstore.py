"""On-disk state of a grid: which jobs are recorded, which failed, and how a
finished job's record is put in place exactly once.

Layout of an output directory ``DIR``::

    DIR/<run_id>/result.json, config.yaml, job.json   records (as `suite run` writes them,
                                                      plus job.json: the grid job's identity)
    DIR/.grid/lock                                    held (flock) by the running driver
    DIR/.grid/staging/<job_id>.<token>/               where a job writes its record (hidden)
    DIR/.grid/failed/<job_id>.json                    last failure of a job: error, config

Exactly-once argument: a record becomes visible in ``DIR`` only by one
``rename`` of a complete directory that already contains ``job.json`` with
the job's identity, and only the driver, holding the lock, performs it.  A
kill at any moment leaves either no visible record (the job is re-run; its
staging leftovers are removed at the next start) or a complete one (the job
is skipped).  A failure file is advisory: a job with a record is done, and its
stale failure file is removed.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from suite.core.cache import atomic_write_text
from suite.core.errors import ConfigError
from suite.core.record import fsync_dir

STATE_DIR = ".grid"


@dataclass
class GridState:
    """What an output directory already holds, by job identity."""

    done: dict[str, Path] = field(default_factory=dict)     # job_id -> run directory
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)  # job_id -> failure entry
    duplicates: dict[str, list[Path]] = field(default_factory=dict)  # job_id -> extra run dirs
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # (path, reason)


class GridStore:
    """The grid's view of one output directory; use as a context manager (takes the lock)."""

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.root = Path(output_dir)
        self.state_dir = self.root / STATE_DIR
        self.staging_dir = self.state_dir / "staging"
        self.failed_dir = self.state_dir / "failed"
        self._lock_fd: int | None = None

    # ------------------------------------------------------------- locking
    def __enter__(self) -> "GridStore":
        self.lock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unlock()

    def lock(self) -> None:
        """Take the directory's lock; a second driver on the same directory is refused."""
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self.failed_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"another grid is running on {self.root} (lock {self.state_dir / 'lock'} is held)") \
                from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------- scanning
    def clear_staging(self) -> int:
        """Remove what interrupted jobs left in staging; returns how many entries."""
        if not self.staging_dir.is_dir():
            return 0
        count = 0
        for entry in self.staging_dir.iterdir():
            shutil.rmtree(entry, ignore_errors=True)
            count += 1
        return count

    def scan(self, identity: Callable[[dict[str, Any]], str]) -> GridState:
        """Find recorded and failed jobs.

        A run directory's job is the ``job_id`` in its ``job.json``; a record
        without one (made by ``suite run``) counts under ``identity(config)``.
        """
        state = GridState()
        if not self.root.is_dir():
            return state
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            job_id = self._job_id_of(entry, identity, state)
            if job_id is None:
                continue
            if job_id in state.done:
                state.duplicates.setdefault(job_id, []).append(entry)
            else:
                state.done[job_id] = entry
        if self.failed_dir.is_dir():
            for f in sorted(self.failed_dir.glob("*.json")):
                try:
                    info = json.loads(f.read_text())
                    state.failed[str(info["job_id"])] = info
                except (OSError, ValueError, KeyError, TypeError) as err:
                    state.unreadable.append((f, f"unreadable failure entry: {err}"))
        return state

    @staticmethod
    def _job_id_of(entry: Path, identity: Callable[[dict[str, Any]], str], state: GridState) -> str | None:
        job_file = entry / "job.json"
        try:
            if job_file.is_file():
                return str(json.loads(job_file.read_text())["job_id"])
            result = entry / "result.json"
            if result.is_file():
                return identity(json.loads(result.read_text())["config"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            state.unreadable.append((entry, f"{type(err).__name__}: {err}"))
        return None

    # --------------------------------------------------------------- writing
    def new_staging(self, job_id: str) -> Path:
        """A fresh, unique staging path for one attempt of a job (created by the job)."""
        return self.staging_dir / f"{job_id}.{secrets.token_hex(4)}"

    def promote(self, job_id: str, value: dict[str, Any], job_info: dict[str, Any]) -> Path:
        """Put a finished job's record in place; returns the run directory.

        ``value`` is the job's return value (see ``suite.app.grid.run_job``).  When
        the staged directory is visible here (same machine or shared
        filesystem) the whole run directory, artifacts included, is moved;
        otherwise the driver writes the record from the returned texts and
        ``job.json`` says where the artifacts stayed.
        """
        import yaml

        from suite.core.record import validate_record

        record = json.loads(value["result_json"])
        record["config"]["output_dir"] = str(self.root)  # as if `suite run --output-dir DIR` wrote it
        validate_record(record)
        config_text = yaml.safe_dump(record["config"], sort_keys=False)
        run_id = str(record["run_id"])
        final = self.root / run_id
        if final.exists():
            raise FileExistsError(f"run directory {final} already exists")
        staged = Path(value["staged"])
        info = {"job_id": job_id, **job_info}
        if staged.is_dir() and (staged / "result.json").is_file() and self._inside_staging(staged):
            atomic_write_text(staged / "result.json", json.dumps(record, indent=2) + "\n")
            atomic_write_text(staged / "config.yaml", config_text)
            atomic_write_text(staged / "job.json", json.dumps(info, indent=2) + "\n")
            os.rename(staged, final)
            fsync_dir(self.root)
            shutil.rmtree(staged.parent, ignore_errors=True)
        else:
            from suite.core.record import write_run_dir

            info["artifacts_left_at"] = f"{value.get('host', '?')}:{staged}"
            write_run_dir(self.root, record, record["config"],  # type: ignore[arg-type]
                          extra_files={"job.json": json.dumps(info, indent=2) + "\n"})
        self.clear_failure(job_id)
        return final

    def _inside_staging(self, path: Path) -> bool:
        try:
            path.resolve().relative_to(self.staging_dir.resolve())
        except ValueError:
            return False
        return True

    def record_failure(self, job_id: str, entry: dict[str, Any]) -> Path:
        """Write (atomically) the job's failure entry; attempts are counted across runs."""
        path = self.failed_dir / f"{job_id}.json"
        attempts = 0
        try:
            attempts = int(json.loads(path.read_text()).get("attempts", 0))
        except (OSError, ValueError, TypeError, AttributeError):
            pass
        self.failed_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"job_id": job_id, **entry, "attempts": attempts + 1}, indent=2) + "\n")
        return path

    def clear_failure(self, job_id: str) -> None:
        try:
            (self.failed_dir / f"{job_id}.json").unlink()
        except FileNotFoundError:
            pass

    def discard_staging(self, attempt_dir: str | os.PathLike) -> None:
        """Remove one attempt's staging directory (after a failure)."""
        path = Path(attempt_dir)
        if self._inside_staging(path):
            shutil.rmtree(path, ignore_errors=True)

