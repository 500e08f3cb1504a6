"""Benchmark: the ``auto`` plan under a latency target against the uniform schemes' accuracy-latency front.

Exact command (the RESULTS.md run):

    python bench/bench_pareto.py --source fashion-mnist --model vgg16 --width 0.5 --limit 12000 --epochs 6 \\
        --recovery-epochs 2 --sparsities 0.5,0.7,0.8,0.9 --latency-targets 0.5,0.35,0.25 \\
        --out bench/results/pareto.json

Every point is one real ``python -m suite run`` (subprocess, so each is timed
in a fresh process): the dense model is trained once (cached), each point
prunes it, recovers accuracy with the run's recovery (oneshot masks + fine-
tuning on train; nothing is tuned on test), compiles it with the TVM
backend at batch 1, and records the test accuracy of the compressed model and
the deployment's *measured* latency (Python call path, median; the kernel-only
``time_evaluator`` figure beside it).  Uniform points: ``block`` at each
``--sparsities`` value.  Planned points: ``auto --mapping search
--latency-target T`` (T = the fraction of the dense latency of the prunable
layers on the planner's TVM latency table).  Attacks and fingerprints are
off (``--attacks none --fingerprints none``): this is the compression-
deployment trade-off only.

Each run's own latency is one sample taken in its own process, minutes apart
from the others; on a 1-ms call that is noisier than the gaps between points.
So after the runs, every point's compiled artifact (``model_b1.so``) is loaded
into *this* process and re-timed side by side (``--rounds`` interleaved rounds
of ``--repeat`` samples of 10 calls each, the Python call path, median):
``side_by_side_ms``.  The front and the verdicts use that figure; the run's
own figure stays beside it (``latency_ms``).  ``--retime-only`` re-times the
rows already in ``--out`` without running anything else; ``--redo planned``
runs the planned points again and keeps the uniform runs (their artifacts are
re-timed beside the new ones).

A planned point lies *on or above the uniform front* when no uniform point is
both at least as fast and more accurate; ``front_gap`` is its accuracy minus
the front's accuracy at its latency (the best uniform point no slower than it;
positive = above the front; empty when no uniform point is that fast).

Writes ``--out`` (JSON rows, atomically after each point; a rerun skips done
points unless ``--fresh``) and a plot ``<out>.png`` (accuracy vs measured
latency; the front as a step line).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _csv(text: str, cast=str) -> list:
    return [cast(t.strip()) for t in text.split(",") if t.strip()]


def run_point(args: argparse.Namespace, extra: list[str], out_dir: Path) -> dict[str, Any]:
    """One ``suite run``; returns the fields of its record this benchmark reports."""
    cmd = [sys.executable, "-m", "suite", "run", "--model", args.model, "--source", args.source,
           "--width", str(args.width), "--limit", str(args.limit), "--epochs", str(args.epochs),
           "--profile", args.profile, "--backend", "tvm", "--backend-args", "batch_sizes=1",
           "--attacks", "none", "--fingerprints", "none", "--output-dir", str(out_dir), "--quiet", "--json", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"suite run failed ({' '.join(extra)}): {proc.stderr.strip().splitlines()[-1:]}")
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    record = json.loads((Path(line["run_dir"]) / "result.json").read_text())
    comp, dep = record["compression"], record["deployment"]
    lat = dep["latency_ms"]
    plan_file = Path(line["run_dir"]) / str(comp.get("plan") or "compressed/plan.json")
    search = json.loads(plan_file.read_text()).get("search", {}) if plan_file.exists() else {}
    return {
        "command": " ".join(["python", "-m", "suite", *cmd[3:]]),
        "run_dir": line["run_dir"], "seconds": round(time.perf_counter() - start, 1),
        "test_acc": record["metrics"]["clean_acc"], "acc_dense": comp.get("acc_dense"),
        "achieved_sparsity": comp.get("achieved_sparsity"), "macs_ratio": comp.get("macs_ratio"),
        "latency_ms": lat["p50"], "kernel_ms": lat.get("kernel_ms"),
        "dense_latency_ms": dep.get("dense_latency_ms"), "best_dense_runtime": dep.get("best_dense_runtime"),
        "best_dense_latency_ms": dep.get("best_dense_latency_ms"),
        "speedup_vs_best_dense": dep.get("speedup_vs_best_dense"), "speedup_vs_dense": dep.get("speedup_vs_dense"),
        "agreement_top1": dep.get("agreement_top1"), "max_abs_logit_diff": dep.get("max_abs_logit_diff"),
        "sparse_layers": dep.get("sparse_layers"),
        "plan_search": {k: v for k, v in search.items() if k not in ("candidates_per_layer", "not_accelerated")},
        "load": [round(v, 2) for v in os.getloadavg()],
    }


def speed(row: dict) -> float:
    """The latency a row is compared on: the side-by-side re-timing when there is one, else the run's own."""
    return row.get("side_by_side_ms") or row["latency_ms"]


def retime_side_by_side(rows: list[dict], rounds: int, repeat: int) -> None:
    """Re-time every row's compiled batch-1 artifact in this process, interleaved; sets ``side_by_side_ms``."""
    import random

    import numpy as np

    from compression.tvm_backend.runtime import TVMPredictor

    loaded = []
    for r in rows:
        art = Path(r["run_dir"]) / "artifacts"
        manifest = art / "manifest.json"
        if manifest.exists():
            loaded.append((r, TVMPredictor(str(art), json.loads(manifest.read_text()))))
        else:
            print(f"note: {art} is gone; {r['kind']} {r.get('sparsity') or r.get('latency_target')} keeps its own timing")
    samples: dict[int, list[float]] = {id(r): [] for r, _ in loaded}

    def call_path_ms(predictor, n: int) -> list[float]:
        """``n`` samples of 10 calls each, numpy in, logits out (what the run's own latency times), ms per call."""
        x = np.random.default_rng(0).random((1, *predictor.input_shape), dtype=np.float32)
        out = []
        for _ in range(n):
            start = time.perf_counter()
            for _ in range(10):
                predictor._run(1, x)
            out.append((time.perf_counter() - start) * 100.0)
        return out

    for _, p in loaded:
        call_path_ms(p, 2)  # warm-up
    order = list(loaded)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for r, p in order:
            samples[id(r)] += call_path_ms(p, repeat)
    for r, _ in loaded:
        r["side_by_side_ms"] = round(float(np.median(samples[id(r)])), 4)
        r["side_by_side_samples"] = len(samples[id(r)])


def front_gaps(rows: list[dict]) -> None:
    """Set ``front_gap`` / ``on_or_above_front`` on every planned row (see the module docstring)."""
    uniform = [r for r in rows if r["kind"] == "uniform"]
    for r in rows:
        if r["kind"] != "planned":
            continue
        faster = [u for u in uniform if speed(u) <= speed(r)]
        r["dominated_by"] = [f"block {u['sparsity']}" for u in faster if u["test_acc"] > r["test_acc"]]
        r["on_or_above_front"] = not r["dominated_by"]
        r["front_gap"] = round(r["test_acc"] - max(u["test_acc"] for u in faster), 4) if faster else None


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    uniform = sorted((r for r in rows if r["kind"] == "uniform"), key=speed)
    front, best = [], -1.0
    for r in uniform:
        if r["test_acc"] > best:
            front.append(r)
            best = r["test_acc"]
    ax.scatter([speed(r) for r in uniform], [r["test_acc"] for r in uniform], label="block (uniform)", c="C0")
    for r in uniform:
        ax.annotate(f"{r['sparsity']}", (speed(r), r["test_acc"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    if front:
        ax.step([speed(r) for r in front], [r["test_acc"] for r in front], where="post", c="C0", alpha=0.5,
                label="uniform front")
    planned = [r for r in rows if r["kind"] == "planned"]
    ax.scatter([speed(r) for r in planned], [r["test_acc"] for r in planned], marker="*", s=120, c="C3",
               label="auto search (latency target)")
    for r in planned:
        ax.annotate(f"T={r['latency_target']}", (speed(r), r["test_acc"]), textcoords="offset points",
                    xytext=(4, -10), fontsize=8)
    ax.set_xlabel("TVM latency, batch 1, 2 threads, re-timed side by side (ms)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default="fashion-mnist")
    p.add_argument("--model", default="vgg16")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--limit", type=int, default=12000, help="images per split (train, val, test)")
    p.add_argument("--epochs", type=int, default=6, help="dense training epochs")
    p.add_argument("--profile", default="default")
    p.add_argument("--recovery-epochs", type=int, default=2, help="masked fine-tuning epochs of every point")
    p.add_argument("--sparsities", default="0.5,0.7,0.8,0.9")
    p.add_argument("--latency-targets", default="0.5,0.35,0.25")
    p.add_argument("--runs-dir", default=None, help="where the suite runs go (default: a temporary directory)")
    p.add_argument("--out", default="bench/results/pareto.json")
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds of the side-by-side re-timing")
    p.add_argument("--repeat", type=int, default=10, help="samples (of 10 calls) per point and round")
    p.add_argument("--retime-only", action="store_true", help="re-time the rows in --out side by side; run nothing")
    p.add_argument("--redo", choices=("uniform", "planned"), default=None,
                   help="run this kind of point again (e.g. after a planner change), keep the other kind's runs")
    args = p.parse_args()

    out = Path(args.out)
    runs_dir = Path(args.runs_dir or "/tmp/bench_pareto_runs")
    rows: list[dict] = []
    if out.exists() and not args.fresh:
        rows = [r for r in json.loads(out.read_text()).get("rows", []) if r["kind"] != args.redo]
    done = {(r["kind"], r.get("sparsity"), r.get("latency_target")) for r in rows}
    points = [("uniform", s, None) for s in _csv(args.sparsities, float)]
    points += [("planned", None, t) for t in _csv(args.latency_targets, float)]
    meta = {"command": " ".join(["python", *sys.argv]), "source": args.source, "model": args.model,
            "width": args.width, "limit": args.limit, "epochs": args.epochs, "profile": args.profile,
            "recovery_epochs": args.recovery_epochs}
    from suite.core.cache import atomic_write_text

    for kind, sparsity, target in ([] if args.retime_only else points):
        if (kind, sparsity, target) in done:
            continue
        extra = (["--compress", "block", "--sparsity", str(sparsity)] if kind == "uniform" else
                 ["--compress", "auto", "--mapping", "search", "--latency-target", str(target)])
        extra += ["--compress-args", f"epochs={args.recovery_epochs}"]
        row = {"kind": kind, "sparsity": sparsity, "latency_target": target, **run_point(args, extra, runs_dir)}
        rows.append(row)
        front_gaps(rows)
        atomic_write_text(out, json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        print(f"[{kind} {sparsity if sparsity is not None else 'T=' + str(target)}] acc {row['test_acc']:.4f} "
              f"latency {row['latency_ms']:.3f} ms (kernel {row['kernel_ms']}), sparsity "
              f"{row['achieved_sparsity']}, {row['speedup_vs_best_dense']}x vs {row['best_dense_runtime']}; "
              f"{row['seconds']} s; load {row['load']}", flush=True)
    retime_side_by_side(rows, args.rounds, args.repeat)
    front_gaps(rows)
    if args.retime_only and out.exists():
        meta = json.loads(out.read_text()).get("meta", meta)
    meta["side_by_side"] = {"rounds": args.rounds, "repeat": args.repeat, "calls_per_sample": 10,
                            "load": [round(v, 2) for v in os.getloadavg()]}
    atomic_write_text(out, json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    plot(rows, out.with_suffix(".png"), f"{args.model} w{args.width} on {args.source}: accuracy vs measured latency")
    from tabulate import tabulate

    cols = ["kind", "sparsity", "latency_target", "test_acc", "side_by_side_ms", "latency_ms", "kernel_ms",
            "achieved_sparsity", "speedup_vs_best_dense", "best_dense_runtime", "on_or_above_front", "front_gap"]
    print(tabulate([[r.get(c) for c in cols] for r in sorted(rows, key=speed)], headers=cols,
                   tablefmt="github"))
    planned = [r for r in rows if r["kind"] == "planned"]
    ok = sum(1 for r in planned if r.get("on_or_above_front"))
    print(f"\nTarget: auto (latency target) on or above the uniform front at >= 3 targets: {ok}/{len(planned)} "
          f"{'MET' if ok >= 3 else 'NOT MET'}")


if __name__ == "__main__":
    main()
