"""Acceptance check of the README's Ray cluster story, on one machine.

Starts a two-node Ray cluster (a head and a second raylet, one CPU each, each
with its own temp dir), runs a small grid on it with ONE shared ``SUITE_CACHE``
(``--executor ray --address``), runs the same grid with ``--executor local``
and a fresh cache, then checks:

* both grid commands exit 0;
* every job of the grid (``--dry-run`` ids) is recorded exactly once in each
  output directory (one ``result.json`` per job id, none missing, no extras,
  no failure entries), and ``job.json``'s job id is the hash of the record's
  configuration;
* the metrics of every job are identical between Ray and local;
* the shared cache holds exactly one entry per key (no two entries with the
  same manifest key, no leftover ``.*.tmp-*`` / ``.*.trash-*`` directories)
  and the same entries as the local run's cache;
* both nodes ran jobs (Ray task events from the GCS: node id and worker pid of
  every ``_ray_call`` task; both nodes have the same hostname, so ``job.json``'s
  ``host`` cannot tell them apart).

The default grid pairs jobs that differ only in ``attack_args`` (no attacks
run, so the setting changes the job's identity but not its cache keys): the
two jobs of a pair build the same compressed model and the same ONNX artifact
at the same time, one on each node.  The summary lists, per shared entry, each
job's ``cache_hit`` and stage time (a job that lost the publish race spent the
build time, then loaded the winner's entry; it must not fail).

The cluster is always stopped at the end.  Not with ``ray stop``: that kills
every Ray process of the machine whatever its ``--temp-dir`` (other users'
instances included); each ``ray start`` runs in a new session and exactly the
processes of those sessions are stopped (SIGTERM, then SIGKILL).

    .venv/bin/python bench/ray_cluster.py --out /tmp/ray-check
    cp /tmp/ray-check/summary.json bench/results/ray_cluster.json

Exit status 0 when every check passes, 1 otherwise.  The JSON summary is
printed and written to ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

DEFAULT_GRID: dict[str, Any] = {
    "name": "ray-cluster-check",
    "profile": "smoke",
    "models": ["resnet20"],
    "sources": ["digits16"],
    "compressors": ["none", "block"],
    "sparsities": [0.5],
    "backends": ["torch", "onnx"],
    "seeds": [0],
    "attacks": [],
    "fingerprints": [],
    # two jobs per (compressor, backend): different identities, the same cache keys
    "attack_args": [{"eps": 0.0157}, {"eps": 0.0314}],
    "settings": {"limit": 96, "epochs": 2, "threads": 1},
}

# The smallest grid that still has two jobs building the same compressed model
# and ONNX artifact at once (used by tests/test_cluster.py).
TINY_GRID: dict[str, Any] = {**DEFAULT_GRID, "name": "ray-cluster-tiny", "compressors": ["block"],
                             "backends": ["onnx"]}

LEFTOVER = re.compile(r"^\..*\.(tmp|trash)-")
CACHE_NAMESPACES = ("models", "compressed", "artifacts")  # <ns>/<model or backend>/<entry>


def log(msg: str) -> None:
    print(f"[ray_cluster] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ cluster
def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free right now on 127.0.0.1."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _session_of(pid: int) -> tuple[int, str] | None:
    """(session id, state) of a process, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[3]), fields[0]


def session_pids(sids: set[int]) -> list[int]:
    """Live (not zombie) processes that belong to one of the sessions ``sids``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _session_of(int(entry))
            if info and info[0] in sids and info[1] != "Z":
                out.append(int(entry))
    return out


class Cluster:
    """A head node and ``workers`` more raylets on this machine, started with ``ray start``."""

    def __init__(self, root: Path, ray: str, workers: int = 1, cpus: int = 1, env: dict[str, str] | None = None):
        self.root = root
        self.ray = ray
        self.workers = workers
        self.cpus = cpus
        self.env = env or dict(os.environ)
        self.sessions: set[int] = set()
        self.port = 0
        self.logs: list[str] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _ray_start(self, args: list[str], name: str) -> None:
        cmd = [self.ray, "start", *args]
        log(" ".join(cmd))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env,
                                start_new_session=True)  # its daemons keep this session: we stop exactly them
        self.sessions.add(proc.pid)
        out, _ = proc.communicate(timeout=180)
        (self.root / f"ray-start-{name}.log").write_text(out)
        if proc.returncode != 0:
            raise RuntimeError(f"`ray start` ({name}) exited {proc.returncode}:\n{out[-3000:]}")

    def start(self) -> None:
        common = ["--num-cpus", str(self.cpus), "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
        # explicit free ports: defaults (8265, 52365, ...) may be taken by another Ray on this machine
        port, dash, *node_ports = free_ports(2 + 6 * (1 + self.workers))
        self.port = port
        for i in range(1 + self.workers):
            nm, om, agent, agent_grpc, metrics, renv = node_ports[6 * i:6 * i + 6]
            per_node = ["--temp-dir", str(self.root / f"n{i}"), "--node-manager-port", str(nm),
                        "--object-manager-port", str(om), "--dashboard-agent-listen-port", str(agent),
                        "--dashboard-agent-grpc-port", str(agent_grpc), "--metrics-export-port", str(metrics),
                        "--runtime-env-agent-port", str(renv)]
            if i == 0:
                self._ray_start(["--head", "--port", str(port), "--include-dashboard=false",
                                 "--dashboard-port", str(dash), *common, *per_node], "head")
            else:
                self._ray_start(["--address", self.address, *common, *per_node], f"worker{i}")

    def stop(self, grace: float = 10.0) -> dict[str, Any]:
        """SIGTERM, then SIGKILL, every process of the sessions the ``ray start`` calls created."""
        pids = session_pids(self.sessions)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and session_pids(self.sessions):
            time.sleep(0.2)
        killed = session_pids(self.sessions)
        for pid in killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
        return {"processes": len(pids), "sigkilled": len(killed), "left": len(session_pids(self.sessions))}


# -------------------------------------------------- queries (own Ray driver)
def query(address: str, what: str) -> Any:
    """Run in a separate process (``--query``): nodes or task events of the cluster at ``address``."""
    import ray

    ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        if what == "nodes":
            return [{"node_id": n["NodeID"], "alive": bool(n["Alive"]),
                     "head": "node:__internal_head__" in n.get("Resources", {}),
                     "cpus": n.get("Resources", {}).get("CPU", 0), "hostname": n.get("NodeManagerHostname"),
                     "raylet_socket": n.get("RayletSocketName")} for n in ray.nodes()]
        if what == "tasks":
            # no dashboard (aiohttp) needed: the GCS keeps task events of every job
            from ray._private.state import state
            from ray.core.generated.common_pb2 import TaskStatus

            tasks: dict[str, dict[str, Any]] = {}
            for ev in state._get_all_task_events():
                t = tasks.setdefault(ev.task_id.hex(), {"task_id": ev.task_id.hex(), "job_id": ev.job_id.hex()})
                info, upd = ev.task_info, ev.state_updates
                if info.func_or_class_name:
                    t["name"] = info.func_or_class_name
                if upd.node_id:
                    t["node_id"] = upd.node_id.hex()
                if upd.worker_pid:
                    t["worker_pid"] = upd.worker_pid
                for status, ns in upd.state_ts_ns.items():
                    t.setdefault("states", {})[TaskStatus.Name(status)] = ns / 1e9
            return list(tasks.values())
        raise ValueError(what)
    finally:
        ray.shutdown()


def run_query(python: str, address: str, what: str, env: dict[str, str]) -> Any:
    proc = subprocess.run([python, str(Path(__file__).resolve()), "--query", what, "--address", address],
                          capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"query {what} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def wait_for_nodes(python: str, address: str, count: int, env: dict[str, str], timeout: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = run_query(python, address, "nodes", env)
        alive = [n for n in nodes if n["alive"] and n["cpus"] > 0]
        if len(alive) >= count or time.monotonic() > deadline:
            return alive
        time.sleep(1)


def grid_tasks(python: str, address: str, env: dict[str, str], expected: int, timeout: float = 30) -> list[dict]:
    """The grid's ``_ray_call`` tasks (waits a little for their final events to reach the GCS)."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = [t for t in run_query(python, address, "tasks", env) if t.get("name") == "_ray_call"]
        done = [t for t in tasks if "FINISHED" in t.get("states", {}) and t.get("node_id")]
        if len(done) >= expected or time.monotonic() > deadline:
            return tasks
        time.sleep(2)


# ------------------------------------------------------------------- checks
def read_records(out: Path) -> dict[str, Any]:
    """job id -> list of (run dir, record, job.json) below a grid output directory."""
    from suite.app.gridspec import job_identity

    by_job: dict[str, list[dict[str, Any]]] = {}
    bad_identity = []
    for result in sorted(out.glob("*/result.json")):
        run_dir = result.parent
        record = json.loads(result.read_text())
        job = json.loads((run_dir / "job.json").read_text()) if (run_dir / "job.json").is_file() else {}
        job_id = job.get("job_id") or job_identity(record["config"])
        if job.get("job_id") and job_identity(record["config"]) != job["job_id"]:
            bad_identity.append(run_dir.name)
        by_job.setdefault(job_id, []).append({"run_dir": run_dir.name, "record": record, "job": job})
    failed = sorted(p.stem for p in (out / ".grid" / "failed").glob("*.json")) if (out / ".grid").is_dir() else []
    staging = sorted(p.name for p in (out / ".grid" / "staging").iterdir()) \
        if (out / ".grid" / "staging").is_dir() else []
    return {"by_job": by_job, "bad_identity": bad_identity, "failed": failed, "staging_left": staging}


def check_records(recs: dict[str, Any], expected: list[str]) -> dict[str, Any]:
    by_job = recs["by_job"]
    return {"result_json": sum(len(v) for v in by_job.values()), "jobs_recorded": len(by_job),
            "missing": sorted(set(expected) - set(by_job)), "extra": sorted(set(by_job) - set(expected)),
            "duplicates": sorted(j for j, v in by_job.items() if len(v) > 1),
            "identity_mismatch": recs["bad_identity"], "failed_entries": recs["failed"],
            "staging_left": recs["staging_left"]}


def scan_cache(root: Path) -> dict[str, Any]:
    """Entries (``<ns>/<group>/<name>``), their manifest keys, leftovers and other files of a cache."""
    entries, leftovers, keys = [], [], Counter()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if LEFTOVER.match(name):
                leftovers.append(str(Path(dirpath, name).relative_to(root)))
    for ns in CACHE_NAMESPACES:
        for group in sorted(p for p in (root / ns).glob("*") if p.is_dir() and not p.name.startswith(".")):
            for entry in sorted(p for p in group.iterdir() if p.is_dir() and not p.name.startswith(".")):
                rel = str(entry.relative_to(root))
                entries.append(rel)
                manifest = entry / "store-manifest.json"
                if manifest.is_file():
                    try:
                        key = json.loads(manifest.read_text()).get("key")
                    except (OSError, ValueError):
                        key = f"<unreadable manifest {rel}>"
                    keys[json.dumps(key, sort_keys=True, default=str)] += 1
    return {"entries": entries, "leftovers": sorted(leftovers),
            "duplicate_keys": sum(1 for c in keys.values() if c > 1), "with_manifest": sum(keys.values())}


def compare_metrics(ray_recs: dict[str, Any], local_recs: dict[str, Any]) -> dict[str, Any]:
    differ = {}
    compared = 0
    for job_id in sorted(set(ray_recs["by_job"]) & set(local_recs["by_job"])):
        a = ray_recs["by_job"][job_id][0]["record"]
        b = local_recs["by_job"][job_id][0]["record"]
        compared += 1
        if a["metrics"] != b["metrics"]:
            differ[job_id] = {k: [a["metrics"].get(k), b["metrics"].get(k)]
                              for k in sorted(set(a["metrics"]) | set(b["metrics"]))
                              if a["metrics"].get(k) != b["metrics"].get(k)}
    return {"compared": compared, "identical": compared > 0 and not differ, "differ": differ}


def shared_entries(recs: dict[str, Any]) -> dict[str, Any]:
    """Cache entries that several jobs needed: who built or loaded them, and how long it took.

    A job that lost a publish race loads the winner's entry and reports
    ``cache_hit: true`` although it spent the full build time; so a group where
    two jobs each spent at least half the longest stage time most likely built
    the entry concurrently.
    """
    groups: dict[str, list[tuple[bool | None, float]]] = {}
    for runs in recs["by_job"].values():
        r = runs[0]["record"]
        cfg, timings = r["config"], r.get("timings", {})
        if cfg["compress"] != "none":
            key = "compressed " + json.dumps([cfg["model"], cfg["compress"], cfg["sparsity"],
                                              cfg.get("compress_args"), cfg["seed"]])
            groups.setdefault(key, []).append((r.get("compression", {}).get("cache_hit"),
                                               float(timings.get("compress", 0.0))))
        if cfg["backend"] != "torch":
            key = "artifact " + json.dumps([cfg["model"], cfg["compress"], cfg["sparsity"], cfg["backend"],
                                            cfg.get("target")])
            groups.setdefault(key, []).append((r.get("deployment", {}).get("cache_hit"),
                                               float(timings.get("deploy", 0.0))))
    shared = {k: v for k, v in groups.items() if len(v) > 1}

    def concurrent(v: list[tuple[bool | None, float]]) -> bool:
        top = max(s for _, s in v)
        return top >= 1.0 and sum(1 for _, s in v if s >= 0.5 * top) >= 2

    return {"shared": len(shared), "likely_built_concurrently": sum(1 for v in shared.values() if concurrent(v)),
            "groups": {k: {"cache_hit": [h for h, _ in v], "stage_seconds": [round(s, 2) for _, s in v]}
                       for k, v in sorted(shared.items())}}


def overlaps(tasks: list[dict[str, Any]]) -> int:
    """Pairs of tasks on different nodes that ran at the same time."""
    spans = [(t["node_id"], t["states"]["RUNNING"], t["states"]["FINISHED"]) for t in tasks
             if t.get("node_id") and {"RUNNING", "FINISHED"} <= set(t.get("states", {}))]
    return sum(1 for i, (n1, s1, e1) in enumerate(spans) for n2, s2, e2 in spans[i + 1:]
               if n1 != n2 and s1 < e2 and s2 < e1)


# --------------------------------------------------------------------- main
def git_state() -> dict[str, Any]:
    """HEAD of the checkout and how many tracked files differ from it (the code the jobs ran)."""
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"head": head or None, "modified_tracked_files": len(dirty.splitlines()) if head else None}


def run_grid_cmd(python: str, grid: Path, out: Path, cache: Path, extra: list[str], log_file: Path,
                 timeout: float, base_env: dict[str, str] | None = None) -> dict[str, Any]:
    env = {**(base_env or os.environ), "SUITE_CACHE": str(cache), "TQDM_DISABLE": "1"}
    cmd = [python, "-m", "suite", "grid", str(grid), "--output-dir", str(out), "--quiet", *extra]
    log(f"SUITE_CACHE={cache} {' '.join(cmd)}")
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as err:
        rc, stdout, stderr = 124, err.stdout or "", err.stderr or ""
        stdout, stderr = [s.decode() if isinstance(s, bytes) else s for s in (stdout, stderr)]
    seconds = round(time.perf_counter() - started, 1)
    log_file.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    summary = None
    for line in reversed(stdout.strip().splitlines()):
        try:
            summary = json.loads(line)
            break
        except ValueError:
            continue
    errors = sorted({m.group(1) for m in re.finditer(r"failed: (.*)", stderr)})
    return {"cmd": cmd, "rc": rc, "seconds": seconds, "summary": summary, "job_errors": errors}


def main(out: str | os.PathLike, *, grid: dict[str, Any] | None = None, python: str | None = None,
         ray_cli: str | None = None, jobs: int = 2, timeout: float = 1200) -> dict[str, Any]:
    """Run the whole check; returns the summary (``summary["ok"]``: every check passed)."""
    import yaml

    started = time.perf_counter()
    python = python or sys.executable
    ray_cli = ray_cli or shutil.which("ray", path=str(Path(python).parent)) or shutil.which("ray")
    if not ray_cli:
        raise RuntimeError("the `ray` CLI is not installed next to this Python (pip install -e \".[cluster]\")")
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("ray", "local"):
        if (out / sub).exists():
            raise RuntimeError(f"{out / sub} exists: use a fresh --out")
    grid = grid or DEFAULT_GRID
    grid_file = out / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(grid, sort_keys=False))
    summary: dict[str, Any] = {"grid": grid["name"], "grid_file": str(grid_file), "out": str(out),
                               "host": socket.gethostname(), "cpus": os.cpu_count(), "git": git_state()}

    dry = subprocess.run([python, "-m", "suite", "grid", str(grid_file), "--dry-run"], capture_output=True,
                         text=True, cwd=REPO, check=True)
    expected = [line.split()[0] for line in dry.stdout.splitlines() if line.strip()]
    summary["grid_jobs"] = len(expected)

    with ExitStack() as stack:
        # short private paths: Ray's unix socket paths must stay under ~107 characters
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rc-", dir="/tmp")))
        caches = {"ray": tmp / "cache-ray", "local": tmp / "cache-local"}
        for c in caches.values():
            c.mkdir()
        # a private HOME: Ray reads ~/.ray/auth_token (left by other Ray sessions on this machine) and then
        # the second node fails to authenticate with the head; this cluster runs without token auth
        home = tmp / "home"
        home.mkdir()
        env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "disabled", "SUITE_CACHE": str(caches["ray"]),
               "RAY_USAGE_STATS_ENABLED": "0"}
        cluster = Cluster(tmp / "ray", ray_cli, workers=1, cpus=1, env=env)
        cluster.root.mkdir()
        try:
            t0 = time.perf_counter()
            cluster.start()
            nodes = wait_for_nodes(python, cluster.address, 2, env)
            summary["cluster"] = {"address": cluster.address, "start_seconds": round(time.perf_counter() - t0, 1),
                                  "alive_nodes": len(nodes),
                                  "nodes": [{k: n[k] for k in ("node_id", "head", "cpus", "hostname")}
                                            for n in nodes]}
            log(f"cluster at {cluster.address}: {len(nodes)} alive node(s)")
            if len(nodes) < 2:
                raise RuntimeError(f"expected 2 alive nodes, got {len(nodes)}: {nodes}")
            summary["ray_run"] = run_grid_cmd(python, grid_file, out / "ray", caches["ray"],
                                              ["--executor", "ray", "--address", cluster.address,
                                               "--jobs", str(jobs)], out / "ray.log", timeout, base_env=env)
            tasks = grid_tasks(python, cluster.address, env, len(expected))
            role = {n["node_id"]: ("head" if n["head"] else "worker") for n in nodes}
            per_node = Counter(role.get(t.get("node_id"), t.get("node_id") or "?") for t in tasks
                               if "FINISHED" in t.get("states", {}))
            summary["ray_tasks"] = {"tasks": len(tasks), "finished_per_node": dict(sorted(per_node.items())),
                                    "distinct_worker_pids": len({t.get("worker_pid") for t in tasks}),
                                    "cross_node_overlapping_pairs": overlaps(tasks)}
        except Exception as err:  # noqa: BLE001 - reported in the summary, checks fail
            summary["error"] = f"{type(err).__name__}: {err}"
            log(f"error: {summary['error']}")
        finally:
            summary["cluster_stop"] = cluster.stop()
            log(f"cluster stopped: {summary['cluster_stop']}")
        summary["local_run"] = run_grid_cmd(python, grid_file, out / "local", caches["local"],
                                            ["--executor", "local", "--jobs", str(jobs)], out / "local.log",
                                            timeout)
        recs = {k: read_records(out / k) for k in ("ray", "local")}
        summary["records"] = {k: check_records(v, expected) for k, v in recs.items()}
        summary["metrics"] = compare_metrics(recs["ray"], recs["local"])
        summary["shared_entries"] = {k: shared_entries(v) for k, v in recs.items()}
        scans = {k: scan_cache(c) for k, c in caches.items()}
        summary["cache"] = {k: {"entries": len(s["entries"]), "leftovers": s["leftovers"],
                                "duplicate_keys": s["duplicate_keys"], "with_manifest": s["with_manifest"]}
                            for k, s in scans.items()}
        summary["cache"]["same_entries"] = scans["ray"]["entries"] == scans["local"]["entries"]
        summary["cache"]["entry_names"] = scans["ray"]["entries"]
        summary["cache"]["only_in_ray"] = sorted(set(scans["ray"]["entries"]) - set(scans["local"]["entries"]))
        summary["cache"]["only_in_local"] = sorted(set(scans["local"]["entries"]) - set(scans["ray"]["entries"]))
        (out / "cache-listing.txt").write_text("".join(
            f"{k}: {e}\n" for k, s in scans.items() for e in s["entries"]))

    per_node = summary.get("ray_tasks", {}).get("finished_per_node", {})
    checks = {
        "two_alive_nodes": summary.get("cluster", {}).get("alive_nodes") == 2,
        "ray_grid_exit_0": summary.get("ray_run", {}).get("rc") == 0,
        "local_grid_exit_0": summary["local_run"]["rc"] == 0,
        "both_nodes_ran_jobs": len(per_node) == 2,
        "ray_tasks_equal_jobs": sum(per_node.values()) == len(expected),
        "every_job_recorded_once": all(
            r["result_json"] == len(expected) and not (r["missing"] or r["extra"] or r["duplicates"]
                                                      or r["identity_mismatch"] or r["failed_entries"]
                                                      or r["staging_left"])
            for r in summary["records"].values()),
        "metrics_identical": summary["metrics"]["identical"] and summary["metrics"]["compared"] == len(expected),
        "one_cache_entry_per_key": all(not summary["cache"][k]["leftovers"] and not summary["cache"][k]
                                       ["duplicate_keys"] for k in ("ray", "local"))
                                   and summary["cache"]["same_entries"],
    }
    summary["checks"] = checks
    summary["ok"] = all(checks.values())
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="output directory (records, logs, summary.json); must not hold ray/ or local/")
    p.add_argument("--tiny", action="store_true", help="2-job grid (block@0.5, onnx) instead of the 8-job one")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--timeout", type=float, default=1200, help="seconds per grid command")
    p.add_argument("--query", choices=("nodes", "tasks"), help=argparse.SUPPRESS)
    p.add_argument("--address", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.query:
        print(json.dumps(query(args.address, args.query), default=str))
        return 0
    if not args.out:
        p.error("--out is required")
    summary = main(args.out, grid=TINY_GRID if args.tiny else None, jobs=args.jobs, timeout=args.timeout)
    print(json.dumps(summary, indent=1))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(cli())
