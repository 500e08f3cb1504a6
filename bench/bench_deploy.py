"""Benchmark: deployed latency of compressed models, TVM vs torch eager vs ONNX Runtime, side by side.

Exact command (full run; ``--quick`` = vgg16, block, sparsity 0.8, batch 1 only):

    python bench/bench_deploy.py --models vgg16,resnet18 --sparsities 0.5,0.7,0.8,0.9 \\
        --schemes block,auto --batches 1,32 --resolution 32 --repeats 30 --out bench/results/deploy.json

Everything runs in ONE process on the CPU with 2 threads (``TVM_NUM_THREADS=2``,
``torch.set_num_threads(2)``, ORT ``intra_op_num_threads=2``).  Models are
``suite.core.zoo`` builds (10 classes, 3 input channels, width 1.0) with random
weights and slightly randomised BatchNorm statistics (so BN folding is not a
no-op); latency needs no training.  Compressed models are the same weights with
masks applied in place: ``block`` = ``make_scheme("block", r=8, c=16)`` on
every prunable layer (first conv and classifier stay dense); ``auto`` =
``AutoCompressor(s, mapping="search")`` plan (made on ``digits-photo32``, sensitivities on
64 validation images: the weights are random, so only the latency side of the plan means anything),
each planned layer masked with its own scheme and settings.

Timing: after compile and warm-up, the five variants of a row are timed in
``--rounds`` interleaved blocks (runner order shuffled every round, so they
see the same machine load; before each block 50 ms idle + one untimed call so
the previous runtime's spinning worker threads do not steal the 2 cores).
Each sample is the mean of ``--number`` consecutive calls (default 5 at batch
1, else 1) timed with ``perf_counter`` around the Python call; a column is the
median of ``>= --repeats`` samples.  TVM is also timed with
``vm.time_evaluator`` (JSON ``*_te_ms``) as a cross-check, and torch dense
with 1 thread (JSON ``torch_dense_1thread_ms``: libgomp at 2 threads degrades
badly when the cores are shared with other processes); JSON rows also hold
p90s, per-layer kernel choices, achieved sparsity and the load average.

Columns:
  model, batch, scheme, sparsity   what was run (sparsity = target fraction of prunable weights removed)
  torch_dense_ms     torch eager, dense model (ms per call of ``batch`` images)
  ort_dense_ms       ONNX Runtime (CPUExecutionProvider, opset 17), dense model
  tvm_dense_ms       TVM Relax, dense model, every conv on the dense version of our kernel
                     template (``compile_model(..., allow_sparse=False)``, same tuning effort)
  tvm_ms_dense_ms    TVM Relax, dense model, MetaSchedule-tuned (database from
                     ``bench/tune_metaschedule.py``; empty when no database is stored: never tuned here)
  tvm_sparse_ms      TVM Relax, compressed model (row-block gather kernel where it wins)
  best_dense         the fastest of the four dense runtimes in this row
  speedup_vs_best_dense  best dense ms / tvm_sparse_ms
  speedup_vs_tvm_dense   tvm_dense_ms / tvm_sparse_ms (equal schedule effort)
  ideal              1 / (1 - sparsity), the MAC-count bound
  peak_fraction      2 x MACs the compressed model runs (kept columns only) / its kernel-only time
                     (``time_evaluator``) / the calibrated FP32 peak (``compression/tvm_backend/peak.py``,
                     measured at the start and end of the run, in the JSON meta)
  sparse_layers      convs that got the compact kernel / layers lowered to our kernels
  max_abs_diff       max |logit difference| TVM compressed vs torch eager compressed on a random batch

JSON rows add ``torch_sparse_ms``, ``agreement_top1``, the per-layer kernel
choices and ``roofline``: per layer, the MACs run, its kernel ms, its fraction
of peak, and whether moving its data at the measured read bandwidth
(``memory``) or its MACs at the peak (``compute``) is its floor -- where the
gap to the peak goes.

Rows are saved to ``--out`` (JSON, written atomically after every row); a rerun
skips rows already there for the same (model, batch, scheme, sparsity,
resolution) unless ``--fresh`` (which re-measures them, keeping other rows).  Also printed: whether the issue's targets
are met (vgg16 block 0.8: batch 1 >= 2.0x TVM dense and >= 1.5x torch dense,
batch 32 faster than both; TVM compressed never slower than TVM dense).
"""

from __future__ import annotations

import os

os.environ["TVM_NUM_THREADS"] = "2"  # must precede ``import tvm``

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

THREADS = 2
COLUMNS = ["model", "batch", "scheme", "sparsity", "torch_dense_ms", "ort_dense_ms", "tvm_dense_ms",
           "tvm_ms_dense_ms", "tvm_sparse_ms", "best_dense", "speedup_vs_best_dense", "speedup_vs_tvm_dense",
           "ideal", "peak_fraction", "sparse_layers", "max_abs_diff"]
DENSE_RUNNERS = {"torch_dense": "torch", "ort_dense": "onnxruntime", "tvm_dense": "tvm-dense",
                 "tvm_ms_dense": "tvm-metaschedule"}  # runner -> the dense runtime's name in records


def _csv(text: str, cast=str) -> list:
    return [cast(t.strip()) for t in text.split(",") if t.strip()]


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


# --------------------------------------------------------------------------- models


def build(arch: str, seed: int = 0) -> torch.nn.Module:
    from suite.core.zoo import build_model

    torch.manual_seed(seed)
    model = build_model(arch, num_classes=10, width=1.0, in_channels=3)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(1.0 + 0.5 * torch.rand(n, generator=gen))
                if m.weight is not None:
                    m.weight.copy_(0.75 + 0.5 * torch.rand(n, generator=gen))
                    m.bias.copy_(0.1 * torch.randn(n, generator=gen))
    return model.eval()


def block_masks(model: torch.nn.Module, shape, sparsity: float) -> dict[str, torch.Tensor]:
    from compression.layers import get_weight, prunable_layers
    from compression.schemes import make_scheme

    scheme = make_scheme("block", r=8, c=16)
    out = {}
    for layer in prunable_layers(model, shape):
        weight = get_weight(model, layer.name).detach()
        try:
            out[layer.name] = scheme.mask(weight, sparsity)
        except Exception as err:  # noqa: BLE001 - scheme not applicable to this layer: keep dense
            print(f"  [block] {layer.name} kept dense: {str(err).splitlines()[0]}", file=sys.stderr)
    return out


_SOURCE = None
_TABLES: dict[str, Any] = {}
_TUNING_DB: str | None = None  # the run's tuning database (the planner's TVM latency table is kept there too)


def auto_masks(model: torch.nn.Module, sparsity: float) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from compression import mapping
    from compression.layers import get_weight
    from compression.mapping import AutoCompressor
    from compression.schemes import make_scheme
    from suite.core.config import default_cache_dir
    from suite.core.sources.embedded import load_embedded

    global _SOURCE
    if _SOURCE is None:
        _SOURCE = load_embedded("digits-photo32")
    from compression.tvm_backend.backend import tuning_db_path

    cache = _TUNING_DB or tuning_db_path(default_cache_dir())  # the planner's TVM latency table lives there
    start = time.perf_counter()
    # The candidate table (per-layer latency + sensitivity of every scheme/ratio) does not depend on the
    # target sparsity and is deterministic for fixed weights and data: compute it once per model and let
    # plan_for reuse it at every sparsity.  Planning runs torch with 1 thread (not timed; faster on a busy box).
    original = mapping.measure_candidates

    def memo(*a, **kw):
        if _TABLES.get("model") is not model:
            _TABLES.update(model=model, table=original(*a, **kw))
        return _TABLES["table"]

    threads = torch.get_num_threads()
    mapping.measure_candidates, _ = memo, torch.set_num_threads(1)
    try:
        plan = AutoCompressor(sparsity, mapping="search", latency_cache=cache, sensitivity_images=64,
                              trial_images=0).plan_for(
            model, _SOURCE, seed=0, device="cpu")
    finally:
        mapping.measure_candidates = original
        torch.set_num_threads(threads)
    out, used = {}, {}
    for lp in plan.layers:
        if lp.dense:
            continue
        weight = get_weight(model, lp.name).detach()
        out[lp.name] = make_scheme(lp.scheme, **lp.settings).mask(weight, lp.sparsity)
        used[lp.name] = {"scheme": lp.scheme, "sparsity": lp.sparsity, "settings": lp.settings}
    return out, {"plan_layers": used, "plan_seconds": round(time.perf_counter() - start, 2),
                 "plan_search": {k: v for k, v in plan.search.items() if k != "candidates_per_layer"}}


def apply_masks(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> torch.nn.Module:
    from compression.layers import get_weight

    sparse = copy.deepcopy(model)
    with torch.no_grad():
        for name, mask in masks.items():
            get_weight(sparse, name).mul_(mask.to(torch.float32))
    return sparse.eval()


def achieved_sparsity(model: torch.nn.Module, masks: dict[str, torch.Tensor], shape) -> float:
    from compression.layers import prunable_layers

    total = kept = 0
    for layer in prunable_layers(model, shape):
        total += layer.numel
        kept += int(masks[layer.name].sum()) if layer.name in masks else layer.numel
    return 1.0 - kept / total if total else 0.0


def conv_names(model: torch.nn.Module, shape) -> list[str]:
    from compression.tvm_backend.backend import kernel_layer_names

    return kernel_layer_names(model, shape)


def layer_roofline(model: torch.nn.Module, shape, batch: int, layers: list, peak) -> tuple[list[dict], float]:
    """Per compiled layer: MACs run (kept columns only), kernel ms, fraction of peak, and what bounds it.

    ``layers``: the compiler's per-layer choices (kernel-only ``time_evaluator``
    times from its tile search).  A layer is ``memory`` bound when moving its
    input, weights and output once at the measured read bandwidth takes longer
    than its MACs at the calibrated peak; otherwise the gap to the peak is
    schedule and gather overhead.  Returns the rows and the MACs run in total.
    """
    from compression.layers import list_layers
    from compression.tvm_backend.peak import achieved_fraction

    info = {l.name: l for l in list_layers(model, shape)}
    out, total = [], 0.0
    for l in layers:
        layer = info.get(l.name)
        ms = l.sparse_ms if l.kernel == "sparse" else l.dense_ms
        if layer is None or not ms or ms != ms:
            continue
        kept = l.kept_columns / max(1, l.total_columns)
        macs = layer.macs * batch * kept
        total += macs
        bytes_moved = 4.0 * batch * (layer.in_hw[0] * layer.in_hw[1] * layer.weight_shape[1]
                                     + layer.spatial * layer.rows) + 4.0 * layer.numel * kept
        compute_ms = 2.0 * macs / (peak.gflops * 1e9) * 1e3
        memory_ms = bytes_moved / ((peak.stream_gbytes or float("inf")) * 1e9) * 1e3
        out.append({"name": l.name, "kernel": l.kernel, "macs": int(macs), "ms": round(ms, 5),
                    "peak_fraction": round(achieved_fraction(macs, ms, peak), 4),
                    "bound": "memory" if memory_ms > compute_ms else "compute",
                    "floor_ms": round(max(memory_ms, compute_ms), 5)})
    return out, total


# --------------------------------------------------------------------------- runners


def torch_runner(model: torch.nn.Module, x: np.ndarray) -> Callable[[], Any]:
    xt = torch.from_numpy(x)

    def run():
        with torch.inference_mode():
            return model(xt)
    return run


def ort_runner(model: torch.nn.Module, x: np.ndarray, workdir: str) -> Callable[[], Any]:
    import onnxruntime as ort

    path = os.path.join(workdir, f"model_{id(model)}.onnx")
    with torch.no_grad():
        torch.onnx.export(model, (torch.from_numpy(x),), path, dynamo=False, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
                          opset_version=17)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feed = {"x": x}
    return lambda: sess.run(None, feed)


class TVMRun:
    def __init__(self, exe, x: np.ndarray) -> None:
        import tvm
        from tvm import relax

        self.vm = relax.VirtualMachine(exe, tvm.cpu())
        self.fn = self.vm["main"]
        self.x = tvm.runtime.tensor(x)

    def __call__(self):
        return self.fn(self.x)

    def logits(self, x: np.ndarray) -> np.ndarray:
        import tvm

        out = self.fn(tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32)))
        if not hasattr(out, "numpy"):
            out = out[0]
        return out.numpy()

    def time_evaluator_ms(self, repeats: int, number: int) -> float:
        import tvm

        ev = self.vm.time_evaluator("main", tvm.cpu(), number=number, repeat=repeats, min_repeat_ms=0)
        return statistics.median(ev(self.x).results) * 1e3


def time_interleaved(runners: dict[str, Callable[[], Any]], repeats: int, number: int, rounds: int = 3,
                     warmup: int = 3, seed: int = 0) -> dict[str, list[float]]:
    """Per-sample ms per call of each runner, ``>= repeats`` samples each.

    The samples are taken in ``rounds`` blocks per runner, the runner order
    shuffled every round, so slow drifts of the machine load hit all runners
    alike.  Inside a block one runner runs alone: before each block the
    process idles 50 ms and makes one untimed call, so the spinning worker
    threads of the previous runtime (OpenMP, ORT, TVM pools) have gone to
    sleep and do not steal the 2 cores from the runner being timed.
    """
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    rounds = max(1, min(rounds, repeats))
    per_block = -(-repeats // rounds)
    samples: dict[str, list[float]] = {k: [] for k in runners}
    rng = np.random.default_rng(seed)
    names = list(runners)
    for _ in range(rounds):
        for i in rng.permutation(len(names)):
            fn = runners[names[i]]
            time.sleep(0.05)
            fn()
            for _ in range(per_block):
                start = time.perf_counter()
                for _ in range(number):
                    fn()
                samples[names[i]].append((time.perf_counter() - start) / number * 1e3)
    return samples


# --------------------------------------------------------------------------- results


def row_key(row: dict) -> tuple:
    return (row["model"], int(row["batch"]), row["scheme"], float(row["sparsity"]), int(row["resolution"]))


def load_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    try:
        return list(json.loads(path.read_text()).get("rows", []))
    except (OSError, ValueError, AttributeError):
        return []


def save_rows(path: Path, rows: list[dict], meta: dict) -> None:
    from suite.core.cache import atomic_write_text

    atomic_write_text(path, json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"
    return v


def print_table(rows: list[dict]) -> None:
    from tabulate import tabulate

    rows = sorted(rows, key=lambda r: (r["model"], r["batch"], r["scheme"], r["sparsity"]))
    print(tabulate([[_fmt(r.get(c)) for c in COLUMNS] for r in rows], headers=COLUMNS, tablefmt="github",
                   disable_numparse=True))


def print_targets(rows: list[dict], tolerance: float) -> None:
    """The compiler issue's targets, each MET / NOT MET / NOT RUN with the measured figure."""
    by = {(r["model"], r["batch"], r["scheme"], round(r["sparsity"], 6)): r for r in rows}

    def check(label: str, key: tuple, field: str, bound: float) -> None:
        r = by.get(key)
        if r is None:
            print(f"  {label}: NOT RUN")
            return
        value = r[field]
        print(f"  {label}: {value:.2f}x (vs {r.get('best_dense', 'tvm-dense') if 'best' in field else 'tvm-dense'}, "
              f">= {bound}): {'MET' if value >= bound else 'NOT MET'}")

    print("\nTargets (compiler issue):")
    for arch in ("vgg16", "resnet18"):
        check(f"{arch} block 0.8 batch 1, vs the best dense runtime", (arch, 1, "block", 0.8),
              "speedup_vs_best_dense", 2.5)
        check(f"{arch} block 0.8 batch 32, vs the best dense runtime", (arch, 32, "block", 0.8),
              "speedup_vs_best_dense", 2.0)
    check("mobilenetv2 block 0.8 batch 1, vs the best dense runtime", ("mobilenetv2", 1, "block", 0.8),
          "speedup_vs_best_dense", 1.5)
    for arch in ("vgg16", "resnet18"):
        for batch in (1, 32):
            check(f"{arch} block 0.9 batch {batch}, within 50% of ideal 10x vs our dense template",
                  (arch, batch, "block", 0.9), "speedup_vs_tvm_dense", 5.0)
    if not rows:
        return
    slower = [r for r in rows if r["speedup_vs_best_dense"] < 1.0]
    within = [r for r in slower if r["speedup_vs_best_dense"] >= 1.0 - tolerance]
    desc = ", ".join(f"{r['model']}/b{r['batch']}/{r['scheme']}/{r['sparsity']}: {r['speedup_vs_best_dense']:.2f}x "
                     f"vs {r['best_dense']}" for r in slower)
    print(f"  never slower than the best dense runtime ({len(rows)} rows): "
          f"{'MET' if not slower else 'NOT MET (' + desc + ')'}"
          + ("" if not slower else f"; {len(within)} of them within {tolerance:.0%} timing noise"))
    agree = max(r["max_abs_diff"] for r in rows)
    top1 = min(r.get("agreement_top1", float("nan")) for r in rows)
    print(f"  agreement with eager on every row: max |logit diff| {agree:.2e} (<= 1e-3), top-1 {top1:.3f} (= 1): "
          f"{'MET' if agree <= 1e-3 and top1 == 1.0 else 'NOT MET'}")


# --------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="vgg16,resnet18")
    p.add_argument("--sparsities", default="0.5,0.7,0.8,0.9")
    p.add_argument("--schemes", default="block,auto", help="block and/or auto")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--repeats", type=int, default=30, help="timing samples per variant (median reported)")
    p.add_argument("--number", type=int, default=None, help="calls per sample (default 5 at batch 1, else 1)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved blocks the samples are split into")
    p.add_argument("--out", default="bench/results/deploy.json")
    p.add_argument("--quick", action="store_true", help="vgg16, sparsity 0.8, block, batch 1")
    p.add_argument("--fresh", action="store_true", help="re-measure rows already in --out (other rows are kept)")
    p.add_argument("--tolerance", type=float, default=0.03, help="timing noise allowed in the no-slowdown check")
    p.add_argument("--tuning-db", default=None,
                   help="kernel tuning database (default: the suite cache's); a new file makes every per-layer "
                        "kernel choice and the planner's latency table on this run's machine state")
    p.add_argument("--report", action="store_true", help="print the table and targets of the rows in --out; measure nothing")
    args = p.parse_args()
    if args.report:
        rows = load_rows(Path(args.out))
        print_table(rows)
        print_targets(rows, args.tolerance)
        return
    if args.quick:
        args.models, args.sparsities, args.schemes, args.batches = "vgg16", "0.8", "block", "1"
    models, sparsities = _csv(args.models), _csv(args.sparsities, float)
    schemes, batches = _csv(args.schemes), _csv(args.batches, int)
    for s in schemes:
        if s not in ("block", "auto"):
            p.error(f"unknown scheme {s!r} (block, auto)")

    torch.set_num_threads(THREADS)
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
    import tvm

    from compression.tvm_backend.backend import tuning_db_path
    from compression.tvm_backend.compile import compile_model
    from compression.tvm_backend.metaschedule import compile_dense_tuned, default_db_root
    from compression.tvm_backend.peak import achieved_fraction, measure_peak, peak_gflops
    from compression.tvm_backend.target import host_target_dict
    from compression.tvm_backend.tuning import BATCH_ORDERS, CONV_TEMPLATE, TuningDB

    shape = (3, args.resolution, args.resolution)
    target = host_target_dict(THREADS)
    db = TuningDB(args.tuning_db or tuning_db_path(None))
    out = Path(args.out)
    rows = load_rows(out)
    done = set() if args.fresh else {row_key(r) for r in rows}
    wanted = {(m, b, s, float(sp), args.resolution) for m in models for b in batches for s in schemes
              for sp in sparsities}
    meta = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]), "threads": THREADS,
            "tvm": tvm.__version__, "torch": torch.__version__, "target": target, "tuning_db": db.path}
    peak = peak_gflops(target, THREADS)
    meta["peak"] = peak.as_dict()
    print(f"# {meta['command']}\n# load at start: {_load()}  target: {target}\n# calibrated peak {peak.gflops} "
          f"GFLOP/s FP32 ({THREADS} threads), read bandwidth {peak.stream_gbytes} GB/s", flush=True)
    workdir = tempfile.mkdtemp(prefix="bench_deploy_")
    t_all = time.perf_counter()

    for arch in models:
        todo = [k for k in sorted(wanted) if k[0] == arch and k not in done]
        if not todo:
            continue
        model = build(arch)
        names = conv_names(model, shape)
        mask_cache: dict[tuple, tuple] = {}
        global _TUNING_DB
        _TUNING_DB = db.path
        for batch in batches:
            todo_b = [k for k in todo if k[1] == batch]
            if not todo_b:
                continue
            number = args.number or (5 if batch == 1 else 1)
            x = np.random.default_rng(batch).standard_normal((batch, *shape)).astype(np.float32)
            t0 = time.perf_counter()
            torch_dense = torch_runner(model, x)
            ort_dense = ort_runner(model, x, workdir)
            dense_res = compile_model(model, shape, target, batch=batch, db=db, allow_sparse=False, names=names)
            tvm_dense = TVMRun(dense_res.executable, x)
            ms_exe = compile_dense_tuned(model, shape, batch, target, db_dir=default_db_root())
            tvm_ms_dense = TVMRun(ms_exe, x) if ms_exe is not None else None  # None: not tuned (bench/tune_metaschedule.py)
            print(f"[{arch} b{batch}] dense baselines ready in {time.perf_counter() - t0:.1f}s "
                  f"(TVM dense tuning {dense_res.tuning_seconds:.1f}s; MetaSchedule database: "
                  f"{'yes' if tvm_ms_dense else 'none'})", flush=True)
            with torch.inference_mode():
                ref = model(torch.from_numpy(x)).numpy()
            dense_diff = float(np.abs(tvm_dense.logits(x) - ref).max())
            for _, _, scheme, sparsity, _ in sorted(todo_b, key=lambda k: (k[2], k[3])):
                t1 = time.perf_counter()
                if (scheme, sparsity) not in mask_cache:
                    extra: dict[str, Any] = {}
                    if scheme == "block":
                        masks = block_masks(model, shape, sparsity)
                    else:
                        masks, extra = auto_masks(model, sparsity)
                    mask_cache[(scheme, sparsity)] = (masks, extra)
                masks, extra = mask_cache[(scheme, sparsity)]
                sparse_model = apply_masks(model, masks)
                res = compile_model(sparse_model, shape, target, batch=batch, db=db, allow_sparse=True, names=names)
                tvm_sparse = TVMRun(res.executable, x)
                torch_sparse = torch_runner(sparse_model, x)
                with torch.inference_mode():
                    eager = sparse_model(torch.from_numpy(x)).numpy()
                compiled = tvm_sparse.logits(x)
                diff = float(np.abs(compiled - eager).max())
                top1 = float((compiled.argmax(1) == eager.argmax(1)).mean())
                load_before = _load()
                runners = {"torch_dense": torch_dense, "ort_dense": ort_dense, "tvm_dense": tvm_dense,
                           "tvm_sparse": tvm_sparse, "torch_sparse": torch_sparse}
                if tvm_ms_dense is not None:
                    runners["tvm_ms_dense"] = tvm_ms_dense
                samples = time_interleaved(runners, args.repeats, number, args.rounds)
                ms = {k: statistics.median(v) for k, v in samples.items()}
                best = min((k for k in DENSE_RUNNERS if k in ms), key=ms.get)
                te_reps = max(5, args.repeats // 3)
                te = {"tvm_dense_te_ms": tvm_dense.time_evaluator_ms(te_reps, number),
                      "tvm_sparse_te_ms": tvm_sparse.time_evaluator_ms(te_reps, number)}
                # reference only: torch eager with ONE thread (libgomp at 2 threads collapses when the
                # 2 cores are shared with other processes; this number shows how much of torch_dense is that)
                torch.set_num_threads(1)
                te["torch_dense_1thread_ms"] = statistics.median(
                    time_interleaved({"t": torch_dense}, te_reps, number, rounds=1)["t"])
                torch.set_num_threads(THREADS)
                n_sparse = sum(1 for l in res.layers if l.kernel == "sparse")
                roofline, macs_run = layer_roofline(sparse_model, shape, batch, res.layers, peak)
                row = {
                    "model": arch, "batch": batch, "scheme": scheme, "sparsity": sparsity,
                    "torch_dense_ms": ms["torch_dense"], "ort_dense_ms": ms["ort_dense"],
                    "tvm_dense_ms": ms["tvm_dense"], "tvm_sparse_ms": ms["tvm_sparse"],
                    "torch_sparse_ms": ms["torch_sparse"], "tvm_ms_dense_ms": ms.get("tvm_ms_dense"),
                    "best_dense": DENSE_RUNNERS[best],
                    "best_dense_ms": ms[best], "speedup_vs_best_dense": ms[best] / ms["tvm_sparse"],
                    "peak_fraction": achieved_fraction(macs_run, te["tvm_sparse_te_ms"], peak),
                    "speedup_vs_tvm_dense": ms["tvm_dense"] / ms["tvm_sparse"],
                    "speedup_vs_torch_dense": ms["torch_dense"] / ms["tvm_sparse"],
                    "speedup_vs_ort": ms["ort_dense"] / ms["tvm_sparse"],
                    "ideal": 1.0 / (1.0 - sparsity),
                    "sparse_layers": f"{n_sparse}/{len(res.layers)}",
                    "max_abs_diff": diff, "agreement_top1": top1,
                    # extras (JSON only)
                    "resolution": args.resolution, "threads": THREADS, "repeats": args.repeats, "number": number,
                    **te, "p90_ms": {k: float(np.percentile(v, 90)) for k, v in samples.items()},
                    "logit_scale": float(np.abs(eager).max()), "tvm_dense_max_abs_diff": dense_diff,
                    "achieved_sparsity": round(achieved_sparsity(model, masks, shape), 4),
                    "compile_seconds": round(res.compile_seconds, 2), "tuning_seconds": round(res.tuning_seconds, 2),
                    "layers": [{"name": l.name, "kernel": l.kernel, "kept": l.kept_columns, "total": l.total_columns,
                                "tile": l.tile, "params": l.params, "fused": l.fused, "sparse_ms": l.sparse_ms,
                                "dense_ms": l.dense_ms, "reason": l.reason}
                               for l in res.layers],
                    # rows without it were measured before the row tiles; "+im2": batches tried the image-major order
                    "conv_template": CONV_TEMPLATE + (f"+{BATCH_ORDERS}" if batch > 1 else ""),
                    "roofline": roofline, "macs_run": int(macs_run),
                    "kernels_ms": round(sum(r["ms"] for r in roofline), 4),
                    "load_before": load_before, "load_after": _load(), **extra,
                }
                rows = [r for r in rows if row_key(r) != row_key(row)] + [row]
                save_rows(out, rows, meta)
                print(f"[{arch} b{batch} {scheme} {sparsity}] tvm {ms['tvm_sparse']:.3f} ms vs best dense "
                      f"{row['best_dense']} {ms[best]:.3f} ms ({row['speedup_vs_best_dense']:.2f}x); our dense "
                      f"{ms['tvm_dense']:.3f} ms ({row['speedup_vs_tvm_dense']:.2f}x), torch {ms['torch_dense']:.3f}, "
                      f"ort {ms['ort_dense']:.3f}, metaschedule {ms.get('tvm_ms_dense')}; "
                      f"{row['peak_fraction']:.2f} of peak; sparse layers {row['sparse_layers']}; diff {diff:.2e}; "
                      f"load {row['load_after']}; {time.perf_counter() - t1:.1f}s", flush=True)
                del tvm_sparse, res, sparse_model
            del tvm_dense, dense_res, ort_dense, tvm_ms_dense
    db.save()
    meta["peak_end"] = measure_peak(target, THREADS).as_dict()  # the machine's limit again, after the rows

    shown = [r for r in rows if row_key(r) in wanted]
    print(f"\n# load at end: {_load()}  total {time.perf_counter() - t_all:.1f}s  results: {out}\n")
    print_table(shown)
    print_targets(shown, args.tolerance)


if __name__ == "__main__":
    main()
