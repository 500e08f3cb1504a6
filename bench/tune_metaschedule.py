"""Tune the dense zoo models with TVM MetaSchedule and cache the databases (the "tvm-metaschedule" baseline).

Exact command (the modest run reported for issue 15):

    python bench/tune_metaschedule.py --models vgg16 --batches 1 --trials 128 --resolution 32 --compare

Models are ``suite.core.zoo.build_model(arch, num_classes=10, width=1.0,
in_channels=3)`` with their initial weights (latency does not depend on the
weights; the database key skips tensor contents).  Databases go to
``<suite cache>/tvm/metaschedule/<key>/`` (``--db-dir`` to change), keyed by
the op workloads, the target and the TVM version; a key that already has a
database is not tuned again (``--retune`` to force).  One process, 2 threads
(``TVM_NUM_THREADS=2`` set before ``import tvm``).

``--compare`` then times, in this process and interleaved (``--rounds``
rounds, runtime order shuffled every round, a short idle gap and one untimed
call before each block), per model and batch: torch eager, ONNX Runtime, TVM
dense with our kernel template (``compile_model(..., allow_sparse=False)``)
and TVM dense with the MetaSchedule database.  Each round is
``median_ms(repeat=--repeats)`` of the Python call; the figure is the
median over rounds, with TVM's kernel-only ``time_evaluator`` beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THREADS = 2
os.environ["TVM_NUM_THREADS"] = str(THREADS)  # must precede ``import tvm``
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def tune_models(models: list[str], batches: list[int], trials: int, resolution: int, db_dir: Path, *,
                retune: bool = False, population: int = 256) -> list[dict]:
    """Tune every (model, batch); returns one JSON-ready summary per pair and prints the tuning time."""
    from compression.tvm_backend.metaschedule import summary_dict, tune_dense
    from compression.tvm_backend.target import host_target_dict
    from suite.core.zoo import build_model

    target = host_target_dict(THREADS)
    out = []
    for arch in models:
        model = build_model(arch, num_classes=10, width=1.0, in_channels=3).eval()
        for batch in batches:
            t0 = time.perf_counter()
            summary = tune_dense(model, (3, resolution, resolution), batch, target, trials=trials, work_dir=db_dir,
                                 retune=retune, population_size=population,
                                 log=lambda msg, a=arch, b=batch: print(f"[{a} b{b}] {msg}", flush=True))
            row = {"model": arch, **summary_dict(summary), "wall_seconds": round(time.perf_counter() - t0, 1)}
            out.append(row)
            state = "reused" if summary.reused else f"tuned {summary.trials} trials in {summary.tuning_seconds:.1f}s"
            print(f"[{arch} b{batch}] {summary.tasks} tasks, {state} (wall {row['wall_seconds']}s) "
                  f"-> {summary.directory}", flush=True)
    return out


def compare(models: list[str], batches: list[int], resolution: int, db_dir: Path, *, rounds: int,
            repeats: int) -> list[dict]:
    """Interleaved latency of torch, ONNX Runtime, TVM template dense and TVM MetaSchedule dense."""
    import numpy as np
    import torch
    import tvm
    from tvm import relax

    from compression.runtimes import median_ms, onnxruntime_call, torch_eager_call, tvm_kernel_ms, tvm_vm_call
    from compression.tvm_backend.backend import tuning_db_path
    from compression.tvm_backend.compile import compile_model
    from compression.tvm_backend.metaschedule import compile_dense_tuned
    from compression.tvm_backend.target import host_target_dict
    from compression.tvm_backend.tuning import TuningDB
    from suite.core.zoo import build_model

    torch.set_num_threads(THREADS)
    target = host_target_dict(THREADS)
    shape = (3, resolution, resolution)
    rows = []
    tmp_dir = tempfile.TemporaryDirectory(prefix="tune_ms_")
    tmp = Path(tmp_dir.name)
    for arch in models:
        model = build_model(arch, num_classes=10, width=1.0, in_channels=3).eval()
        for batch in batches:
            x = np.random.default_rng(batch).standard_normal((batch, *shape)).astype(np.float32)
            calls = {"torch": torch_eager_call(model, x), "onnxruntime": onnxruntime_call(model, x, THREADS, tmp)}
            vms = {}
            template = compile_model(model, shape, target, batch=batch, db=TuningDB(tuning_db_path(None)),
                                     allow_sparse=False)
            vms["tvm-dense"] = relax.VirtualMachine(template.executable, tvm.cpu())
            exe = compile_dense_tuned(model, shape, batch, target, db_dir=db_dir)
            if exe is None:
                print(f"[{arch} b{batch}] no MetaSchedule database: run without --compare first", flush=True)
            else:
                vms["tvm-metaschedule"] = relax.VirtualMachine(exe, tvm.cpu())
            for name, vm in vms.items():
                calls[name] = tvm_vm_call(vm, x)
            with torch.inference_mode():
                ref = model(torch.from_numpy(x)).numpy()
            diffs = {name: float(np.abs(call() - ref).max()) for name, call in calls.items()}
            samples: dict[str, list[float]] = {name: [] for name in calls}
            kernel: dict[str, list[float]] = {name: [] for name in vms}
            for _ in range(rounds):
                order = list(calls)
                random.shuffle(order)
                for name in order:
                    time.sleep(0.05)
                    calls[name]()
                    samples[name].append(median_ms(calls[name], warmup=1, repeat=repeats)["p50"])
                    if name in vms:
                        kernel[name].append(tvm_kernel_ms(vms[name], x, repeat=repeats))
            row = {"model": arch, "batch": batch, "resolution": resolution, "load": _load(),
                   "ms": {n: round(statistics.median(v), 3) for n, v in samples.items()},
                   "kernel_ms": {n: round(statistics.median(v), 3) for n, v in kernel.items()},
                   "max_abs_diff_vs_torch": diffs}
            rows.append(row)
            print(json.dumps(row), flush=True)
    tmp_dir.cleanup()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="vgg16,resnet18,mobilenetv2")
    p.add_argument("--batches", default="1")
    p.add_argument("--trials", type=int, default=128, help="total MetaSchedule trial budget per (model, batch)")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--population", type=int, default=256, help="evolutionary search population")
    p.add_argument("--db-dir", default=None, help="database root (default: <suite cache>/tvm/metaschedule)")
    p.add_argument("--retune", action="store_true", help="tune again even when a database exists")
    p.add_argument("--no-tune", action="store_true", help="skip tuning (use with --compare)")
    p.add_argument("--compare", action="store_true", help="time the tuned model against the other dense runtimes")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default=None, help="write the JSON summaries here")
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    batches = [int(b) for b in args.batches.split(",") if b]

    from compression.tvm_backend.metaschedule import default_db_root

    db_dir = Path(args.db_dir) if args.db_dir else default_db_root()
    print(f"# {' '.join([os.path.basename(sys.executable), *sys.argv])}\n# load at start: {_load()}\n"
          f"# databases: {db_dir}", flush=True)
    result: dict = {"threads": THREADS}
    if not args.no_tune:
        result["tuning"] = tune_models(models, batches, args.trials, args.resolution, db_dir, retune=args.retune,
                                       population=args.population)
    if args.compare:
        result["latency"] = compare(models, batches, args.resolution, db_dir, rounds=args.rounds,
                                    repeats=args.repeats)
    print(f"# load at end: {_load()}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
