"""The first run a newcomer makes, measured: README command 1 cold, the run warm, peak memory, cache size.

    .venv/bin/python bench/first_run.py [--work DIR] [--python python3.11] [--skip-install]

Steps (each timed with ``/usr/bin/time -v`` and a psutil sampler of the
whole process tree, every 0.2 s):

1. ``git clone`` this repository's HEAD into ``WORK/clone`` (a fresh clone:
   no venv, no build outputs);
2. **cold**: README command 1 exactly as written (``python3.11 -m venv .venv
   && .venv/bin/pip install -e ".[test]" && .venv/bin/python -m suite run
   --model vgg16 --compress block --backend tvm``) with ``SUITE_CACHE``
   pointing at an empty ``WORK/cache``; ``--skip-install`` reuses the
   clone's venv if one exists (then "cold" means an empty cache only);
3. **warm**: the run part of the command again (every cache warm);
4. the cache's size (``du``) and ``suite cache ls``.

Peak memory is reported three ways: the largest single process (``time -v``'s
maximum resident set size), the largest sum of PSS over the process tree
(worker processes included, shared pages split between them: the run's real
footprint) and the largest plain RSS sum (shared pages counted in every
process that maps them, an upper bound).  Results go to
``bench/results/first_run.json``; the Markdown table is printed.  Run it on an
otherwise idle machine: the figures are wall-clock times.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RUN = ".venv/bin/python -m suite run --model vgg16 --compress block --backend tvm"
INSTALL = '{python} -m venv .venv && .venv/bin/pip install -e ".[test]"'


class TreeSampler:
    """Samples the summed memory of a process and all its descendants until stopped.

    ``peak``: the largest sum of RSS (pages shared between the processes, such
    as torch's libraries in fork-server children, count once per process);
    ``peak_pss``: the largest sum of PSS (shared pages split between their
    users: the tree's real footprint).
    """

    def __init__(self, pid: int, period: float = 0.2) -> None:
        self.pid, self.period, self.peak, self.peak_procs, self.peak_pss = pid, period, 0, 0, 0
        self.breakdown: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            total, pss, n = 0, 0, 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        info = p.memory_full_info()
                        total += info.rss
                        pss += getattr(info, "pss", info.rss)
                        n += 1
                    except psutil.Error:
                        pass
            except psutil.Error:
                break
            if total > self.peak:
                self.peak, self.peak_procs = total, n
            if pss > self.peak_pss:
                self.peak_pss = pss
                self.breakdown = self._breakdown(root)
            self._stop.wait(self.period)

    @staticmethod
    def _breakdown(root: "psutil.Process") -> list[dict]:
        """``[{"cmd", "pss_mb"}]`` of the tree's processes, largest first."""
        out = []
        for p in [root, *root.children(recursive=True)]:
            try:
                pss = getattr(p.memory_full_info(), "pss", 0)
                out.append({"cmd": " ".join(p.cmdline())[-90:], "pss_mb": round(pss / 2**20, 1)})
            except psutil.Error:
                pass
        return sorted(out, key=lambda d: -d["pss_mb"])

    def __enter__(self) -> "TreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def timed(command: str, cwd: Path, env: dict[str, str], log: Path) -> dict:
    """Run ``command`` under ``/usr/bin/time -v``; wall seconds, peak RSS (largest process, tree), exit code."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(["/usr/bin/time", "-v", "bash", "-c", command], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        with TreeSampler(proc.pid) as sampler:
            code = proc.wait()
    wall = time.perf_counter() - start
    text = log.read_text(errors="replace")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {"command": command, "exit_code": code, "wall_s": round(wall, 1),
            "max_rss_largest_process_mb": round(int(m.group(1)) / 1024, 1) if m else None,
            "peak_rss_process_tree_mb": round(sampler.peak / 2**20, 1), "processes_at_peak": sampler.peak_procs,
            "peak_pss_process_tree_mb": round(sampler.peak_pss / 2**20, 1), "at_peak_pss": sampler.breakdown,
            "log": str(log)}


def run_timings(runs_dir: Path) -> list[dict]:
    """Stage timings of every run under ``runs_dir``, oldest first."""
    out = []
    for rec in sorted(runs_dir.glob("*/result.json")):
        r = json.loads(rec.read_text())
        out.append({"run_id": r["run_id"], "timings": r.get("timings", {})})
    return out


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=None, help="working directory (default: a new temporary one)")
    p.add_argument("--python", default="python3.11")
    p.add_argument("--skip-install", action="store_true", help="reuse WORK/clone/.venv if present")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "first_run.json"))
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="suite-first-run-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    clone, cache = work / "clone", work / "cache"
    if not clone.exists():
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(clone / "runs", ignore_errors=True)
    env = {**os.environ, "SUITE_CACHE": str(cache)}
    env.pop("VIRTUAL_ENV", None)
    install = INSTALL.format(python=args.python)
    cold_cmd = RUN if args.skip_install and (clone / ".venv" / "bin" / "python").exists() else f"{install} && {RUN}"
    load = os.getloadavg()
    print(f"cold: {cold_cmd}", file=sys.stderr)
    cold = timed(cold_cmd, clone, env, work / "cold.log")
    if cold["exit_code"] != 0:
        print(f"the cold command failed (exit {cold['exit_code']}); see {cold['log']}", file=sys.stderr)
        return 1
    cache_after_cold = du(cache)
    print(f"warm: {RUN}", file=sys.stderr)
    warm = timed(RUN, clone, env, work / "warm.log")
    ls = subprocess.run(".venv/bin/python -m suite cache ls", shell=True, cwd=clone, env=env, capture_output=True,
                        text=True).stdout
    runs = run_timings(clone / "runs")
    result = {"git_sha": sha, "cpus": os.cpu_count(), "loadavg_before": [round(v, 2) for v in load],
              "install_included": cold_cmd != RUN, "cold": cold, "warm": warm,
              "cache_mb_after_cold": round(cache_after_cold / 2**20, 1),
              "cache_mb_after_warm": round(du(cache) / 2**20, 1), "run_timings": runs, "cache_ls": ls}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("| | wall | peak RSS, largest process | peak PSS, process tree | peak RSS sum, process tree |")
    print("|---|---|---|---|---|")
    for name, r in (("cold" + (" (install + run)" if result["install_included"] else " (run)"), cold),
                    ("warm (run)", warm)):
        print(f"| {name} | {r['wall_s'] / 60:.1f} min ({r['wall_s']:.0f} s) | {r['max_rss_largest_process_mb']:.0f} MB "
              f"| {r['peak_pss_process_tree_mb']:.0f} MB | {r['peak_rss_process_tree_mb']:.0f} MB |")
    print(f"\ncache after the cold run: {result['cache_mb_after_cold']:.0f} MB; stage timings: "
          + "; ".join(json.dumps(r["timings"]) for r in runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
