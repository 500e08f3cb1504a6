"""Benchmark (first version): small SR models at x2 on the bundled photos, against bicubic.

Exact command (the recorded run):

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sr.py --threads 1 --out bench/results/sr.json

Trains ESPCN, FSRCNN(56, 12, 4) and a small EDSR-baseline (32 features, 4
residual blocks) for x2 on the train photos of ``suite.core.sr.photos``
(astronaut, china, coffee, motorcycle_left: 64 HR patches of 96 px each,
seed 0) with L1 loss, Adam and a cosine schedule, each for a fixed number of
steps (printed; ``--budget`` scales them all), then scores each on the val
photo (chelsea) and the held-out test photos (flower, rocket; whole images)
by PSNR / SSIM on Y with a 2-pixel border crop, beside bicubic upsampling.
Latency: one 360p -> 720p frame (input ``[1, 3, 360, 640]``, output
``[1, 3, 720, 1280]``) in torch eager, the models timed interleaved in one
process (round-robin, so load changes hit all alike), 2 warm-up calls each,
median of ``--reps`` calls.  Writes ``--out`` (JSON) and prints a table.

Deployment table (``--deploy``; issue 18 point 5, :mod:`compression.sr_deploy`):
each trained model is also block-pruned (``block`` scheme, r = 8, c = 16,
``--sparsity`` of every conv but the first / the image-writing one) and
fine-tuned ``--ft-steps`` with the masks fixed; then, per model, torch eager,
ONNX Runtime, TVM dense (our conv template on every conv; FSRCNN's
deconvolution as its sub-pixel conv) and TVM sparse (the pruned model, compact
kernel where it measures faster) are timed side by side in one process,
interleaved, on the user's call path (numpy frame in, conversion + call +
output copy, numpy out): 360p -> 720p (x2, input 640x360) and 180p -> 720p
(x4, input 320x180), ``--deploy-threads`` threads for torch, ONNX Runtime and
TVM, 2 warm-up calls, median of ``--reps``.  The frame is a real photo: a
360 x 640 crop of the test photo ``rocket`` (and its bicubic x2 reduction for
x4).  Max |pixel difference| of every deployment against eager of the same
weights on that frame, and test PSNR-Y of every deployment on the whole test
photos (TVM / ONNX rebuilt per photo shape without tile timing).  The rows
of the scale the zoo was not trained at (``--scale``, default 2: the x4 rows)
use the same architectures with seeded *untrained* weights (latency and
agreement only; no PSNR).  ``--scale 4`` trains and scores the zoo at x4
(bicubic x4 degradation, the 180p -> 720p frame) instead.  Tile timings go to the shared tuning
database, so a rerun does not search again.

    OMP_NUM_THREADS=1 TVM_NUM_THREADS=2 .venv/bin/python bench/bench_sr.py --threads 1 --deploy \
        --deploy-threads 2 --out bench/results/sr.json

Compiler-aware search (``--search``; issue 18 point 4, :mod:`compression.sr_search`;
runs only this section): a weight-sharing supernet (widths 16 / 24 / 32, 1-4
residual blocks, kernels 3 / 5) is trained once with the sandwich rule
(``--supernet-steps``, batch 16, LR patch 32; its sub-networks carry the
nearest-neighbour anchor, ``sr-supernet-nn``), then searched at three latency
targets -- ``--search-fractions`` (0.25, 0.5, 1.0) x FSRCNN's dense 720p frame
*predicted on the same TVM latency table* (a loaded machine moves targets and
predictions alike); the zoo's PSNR is the recorded zoo run's (``--search-zoo``,
default ``bench/results/sr.json``, read at the end, so that run may go alongside):
architecture + per-conv scheme by evolution (``--population``,
``--generations``), per-conv block ratios greedily, ``--search-ft-steps``
masked fine-tuning per target.  Scored on val (chelsea) only; test PSNR / SSIM
afterwards.  The table times every conv at the 360 x 640 frame itself (``--search-tile HxW``: at a smaller
LR tile, scaled by pixels).  Each target's choice is then checked in a closed loop (``--verify-rounds``, default
4): the chosen masked model is built with TVM at the full frame and timed (``--reps``); if over the target, the
prediction is rescaled up by measured / predicted, and if under ``--verify-grow-below`` x the target (default
0.75), rescaled down (never so far that a plan measured over comes back), and the architecture and ratios are
chosen again (at most 4 builds; the met plan with the best one-shot val PSNR is kept; every round's predicted
and measured ms in ``info.verify``).  ``--supernet-cache FILE`` reuses a
trained supernet (same space, steps, seed; nothing measured changes).  At the end every searched model
(TVM sparse build) and the zoo's dense architectures (TVM dense, untrained
weights: latency only; their PSNR is the recorded run's) are built at the full
frame and timed interleaved in one process.  Writes ``--search-out``
(``bench/results/sr_search.json``, with every scored candidate) and
``sr_search_front.png`` beside it.  Budget: 2000 supernet steps (4 sub-networks
each; 400 left the candidates' one-shot scores flatter and missed +1.5 dB at the
smallest target), 2000 fine-tuning steps per target (the chosen sub-network,
masks held), 8 x (1 + 3 generations) candidates per target; about 27 min on 2
cores (16 of them the supernet; a cached one skips that).

    OMP_NUM_THREADS=1 TVM_NUM_THREADS=2 .venv/bin/python bench/bench_sr.py --search --threads 1 --reps 5 \
        --fresh-table --search-targets-ms 118.98,237.97,475.93 --supernet-steps 2000 \
        --supernet-cache ~/.cache/suite/sr_search_supernet_2000.pt

(the recorded run: the second run's targets in absolute ms, the table timed in the run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from suite.core.errors import ConfigError  # noqa: E402
from suite.core.files import atomic_write_text  # noqa: E402
from suite.core.sr import scaled_lr  # noqa: E402
from suite.core.sr.degrade import bicubic_up  # noqa: E402
from suite.core.sr.models import build_sr_model  # noqa: E402
from suite.core.sr.photos import load_photos  # noqa: E402
from suite.core.sr.train import SRTrainRecipe, evaluate, torch_threads, train_sr  # noqa: E402

SCALE = 2
# label, zoo name, width multiplier, depth multiplier, steps, batch, LR patch, Adam lr (times the model's
# registered lr_scale, as `suite run --task sr` trains it: suite.core.sr.scaled_lr)
# Steps: bench/bench_sr_recipe.py measured ESPCN's val PSNR-Y +0.08 dB from 1500 to 4500 steps; 3000 / 1000 give
# the zoo a training budget comparable to a searched model's fine-tuning (2000 steps).
MODELS = (
    ("espcn", "espcn", 1.0, 1.0, 3000, 16, 32, 1e-3),
    ("fsrcnn", "fsrcnn", 1.0, 1.0, 3000, 16, 32, 1e-3),  # x its registered lr_scale (6: 35.47 dB val vs 35.00 at 1e-3)
    ("edsr-32x4", "edsr", 0.5, 0.25, 1000, 16, 32, 5e-4),
)


class Bicubic(torch.nn.Module):
    """The bicubic upsampling baseline as a module (for the latency table)."""

    def __init__(self, scale: int = SCALE) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bicubic_up(x, self.scale)


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


@torch.inference_mode()
def time_interleaved(models: dict[str, torch.nn.Module], x: torch.Tensor, reps: int, warmup: int = 2) -> dict:
    """Per-model wall times in ms of ``model(x)``, round-robin over the models, after ``warmup`` calls each."""
    for m in models.values():
        m.eval()
        for _ in range(warmup):
            m(x)
    samples: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(reps):
        for name, m in models.items():
            t0 = time.perf_counter()
            m(x)
            samples[name].append((time.perf_counter() - t0) * 1e3)
    return samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads for training, evaluation and timing")
    p.add_argument("--budget", type=float, default=1.0, help="multiplies every model's training steps")
    p.add_argument("--scale", type=int, default=SCALE, choices=(2, 4),
                   help="upscaling factor of the zoo (and of --deploy's trained rows; the other scale's rows use "
                        "untrained weights); the search is x2")
    p.add_argument("--reps", type=int, default=10, help="timed 720p frames per model (median reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/results/sr.json")
    p.add_argument("--deploy", action="store_true", help="add the deployment table (eager / ONNX / TVM dense / sparse)")
    p.add_argument("--deploy-threads", type=int, default=2, help="threads of torch, ONNX Runtime and TVM in it")
    p.add_argument("--sparsity", type=float, default=0.75, help="block-pruning sparsity of the sparse rows")
    p.add_argument("--ft-steps", type=int, default=300, help="masked fine-tuning steps of the pruned models")
    p.add_argument("--search", action="store_true",
                   help="only the compiler-aware search section (issue 18 point 4; see the module docstring)")
    p.add_argument("--search-out", default="bench/results/sr_search.json")
    p.add_argument("--search-zoo", default="bench/results/sr.json",
                   help="recorded zoo run (test PSNR, TVM 720p ms) the search is compared against")
    p.add_argument("--search-fractions", default="0.25,0.5,1.0",
                   help="latency targets as fractions of FSRCNN's TVM-dense 720p frame predicted on the table")
    p.add_argument("--search-targets-ms", default=None,
                   help="absolute latency targets, ms per 720p frame (comma-separated), instead of --search-fractions")
    p.add_argument("--search-tile", default="frame",
                   help="LR tile HxW the table times convs at (scaled by pixels to the frame); 'frame': the 360x640 "
                        "frame itself (no scaling)")
    p.add_argument("--supernet-steps", type=int, default=2000, help="sandwich-rule supernet steps (once, at the first target)")
    p.add_argument("--search-ft-steps", type=int, default=2000, help="masked fine-tuning steps per target")
    p.add_argument("--search-refresh-zoo", action="store_true",
                   help="only re-read the zoo PSNR (--search-zoo) into --search-out and redo its comparisons and plot "
                        "(no training, no timing): for a zoo run that finished after the search read it")
    p.add_argument("--verify-rounds", type=int, default=4,
                   help="closed measured check per target: at most this many full-frame TVM builds of the chosen "
                        "model, re-choosing on a rescaled prediction while over the target or far under it "
                        "(0: trust the table)")
    p.add_argument("--verify-grow-below", type=float, default=0.75,
                   help="a checked frame under this fraction of the target re-chooses a larger model (0: never)")
    p.add_argument("--fresh-table", action="store_true",
                   help="the latency table times every conv in this run (in-memory database) instead of reusing "
                        "the shared tuning database's cached kernel times (the builds still use and fill it)")
    p.add_argument("--supernet-cache", default=None,
                   help="file of the trained supernet's weights: loaded (no supernet training) if it exists for the "
                        "same space, steps and seed, else written after training")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--generations", type=int, default=3)
    args = p.parse_args()
    if args.reps < 1 or args.budget <= 0:
        p.error("--reps must be >= 1 and --budget > 0")
    if args.search_refresh_zoo:
        refresh_zoo(Path(args.search_out), Path(args.search_zoo))
        return
    if args.search:
        search_main(args)
        return
    start = time.perf_counter()
    load_start = _load()
    scale = args.scale
    with torch_threads(args.threads):
        # HR patches of 48 LR px (96 at x2, as recorded; 192 at x4), so a 32-px LR training crop fits
        source = load_photos(scale=scale, patch_size=48 * scale, patches_per_image=64, seed=args.seed)
        print(f"source: {source.description}", flush=True)
        print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, load {load_start}", flush=True)
        trained: dict[str, torch.nn.Module] = {}
        rows = []
        for label, name, width, depth, steps, batch, patch, lr in MODELS:
            steps = max(1, int(round(steps * args.budget)))
            lr = scaled_lr(name, lr)
            recipe = SRTrainRecipe(steps=steps, batch_size=batch, patch_size=patch, lr=lr)
            torch.manual_seed(args.seed)
            model = build_sr_model(name, scale, width, depth)
            params = sum(p.numel() for p in model.parameters())
            print(f"[{label}] {params} params; budget {steps} steps x batch {batch} x LR patch {patch} "
                  f"(HR {patch * scale}), Adam lr {lr:g} cosine", flush=True)
            report = train_sr(model, source.train, scale, recipe, seed=args.seed, threads=args.threads,
                              log=lambda m, label=label: print(f"  [{label}] {m}", flush=True),
                              log_every=max(1, steps // 5))
            val = evaluate(model, source, "val", threads=args.threads)
            test = evaluate(model, source, "test", threads=args.threads)
            print(f"  [{label}] trained in {report.seconds:.0f} s; test PSNR-Y {test['psnr_y']:.2f} dB "
                  f"(bicubic {test['bicubic_psnr_y']:.2f}), SSIM-Y {test['ssim_y']:.4f} "
                  f"(bicubic {test['bicubic_ssim_y']:.4f})", flush=True)
            trained[label] = model
            rows.append({"model": label, "zoo_name": name, "width": width, "depth": depth, "params": params,
                         "recipe": {"steps": steps, "batch_size": batch, "patch_size": patch, "lr": lr,
                                    "loss": "L1", "optimizer": "Adam", "schedule": "cosine to 0"},
                         "train": report.as_dict(), "val": val, "test": test})
        print("timing 360p -> 720p frames ...", flush=True)
        x = torch.rand(1, *FRAMES[scale], generator=torch.Generator().manual_seed(0))
        samples = time_interleaved({"bicubic": Bicubic(scale), **trained}, x, args.reps)
    latency = {k: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v), "samples_ms": v}
               for k, v in samples.items()}
    for row in rows:
        row["latency_720p"] = latency[row["model"]]
    bic = rows[0]["test"]
    result = {
        "meta": {"command": " ".join(["python", *sys.argv]), "scale": scale, "threads": args.threads,
                 "torch": torch.__version__, "cpu": _cpu(), "cores": os.cpu_count(), "load_start": load_start,
                 "load_end": _load(), "seconds": round(time.perf_counter() - start, 1),
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "latency": f"torch eager, input [1, {FRAMES[scale][0]}, {FRAMES[scale][1]}, {FRAMES[scale][2]}] -> [1, 3, 720, 1280], interleaved, 2 warm-up "
                            f"calls, median of {args.reps}",
                 "metrics": "PSNR / SSIM on BT.601 Y, 2-pixel border, 8-bit rounding, mean over images"},
        "source": {k: v for k, v in source.summary().items()},
        "bicubic": {"test": {k: bic[k] for k in ("bicubic_psnr_y", "bicubic_ssim_y")},
                    "latency_720p": latency["bicubic"]},
        "rows": rows,
    }
    if args.deploy:
        result["deployment"] = deployment_table(trained, source, args, scale)
        result["meta"]["seconds"] = round(time.perf_counter() - start, 1)
        result["meta"]["load_end"] = _load()
    atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    header = ("| model | params | train steps (s) | test PSNR-Y dB | vs bicubic | test SSIM-Y | val PSNR-Y dB "
              f"| 720p x{scale} frame ms (median) |")
    print()
    print(header)
    print("|---|---|---|---|---|---|---|---|")
    print(f"| bicubic | 0 | - | {bic['bicubic_psnr_y']:.2f} | +0.00 | {bic['bicubic_ssim_y']:.4f} | "
          f"{rows[0]['val']['bicubic_psnr_y']:.2f} | {latency['bicubic']['median_ms']:.1f} |")
    for row in rows:
        t = row["test"]
        print(f"| {row['model']} | {row['params']} | {row['recipe']['steps']} ({row['train']['seconds']:.0f}) | "
              f"{t['psnr_y']:.2f} | {t['psnr_y'] - t['bicubic_psnr_y']:+.2f} | {t['ssim_y']:.4f} | "
              f"{row['val']['psnr_y']:.2f} | {row['latency_720p']['median_ms']:.1f} |")
    print(f"\n{args.threads} thread(s), {os.cpu_count()} cores, load {load_start} -> {_load()}; "
          f"wrote {args.out} in {result['meta']['seconds']:.0f} s")
    if args.deploy:
        print_deployment(result["deployment"])


# --------------------------------------------------------------------------- deployment table

FRAMES = {2: (3, 360, 640), 4: (3, 180, 320)}  # LR inputs of a 1280x720 output frame


def real_frames(seed_photo: str = "rocket") -> dict[int, "np.ndarray"]:
    """LR frames from a real test photo: a 360x640 crop (x2 input) and its bicubic x2 reduction (x4 input)."""
    import numpy as np

    from suite.core.sr.degrade import bicubic_down
    from suite.core.sr.photos import read_photo

    img = torch.from_numpy(np.ascontiguousarray(read_photo(seed_photo))).float().div_(255.0).unsqueeze(0)
    h, w = FRAMES[2][1:]
    if img.shape[-2] < h or img.shape[-1] < w:
        raise SystemExit(f"photo {seed_photo} is {tuple(img.shape[-2:])}, smaller than a {h}x{w} frame")
    top, left = (img.shape[-2] - h) // 2, (img.shape[-1] - w) // 2
    x2 = img[..., top:top + h, left:left + w].contiguous()
    return {2: x2.numpy(), 4: bicubic_down(x2, 2).contiguous().numpy()}


def deployment_table(trained: dict[str, torch.nn.Module], source, args, trained_scale: int = SCALE) -> dict:
    """Time / compare / score eager, ONNX Runtime, TVM dense and TVM sparse per model (see the module docstring)."""
    from compression.sr_deploy import (RuntimeModule, block_prune_sr, eager_runtime, fine_tune_masked, max_abs_diff,
                                       onnx_runtime, time_interleaved, tvm_runtime)
    from compression.tvm_backend.backend import tuning_db_path
    from compression.tvm_backend.runtime import tvm_threads
    from compression.tvm_backend.target import host_target_dict
    from compression.tvm_backend.tuning import TuningDB

    threads = args.deploy_threads
    target = host_target_dict(threads)
    db = TuningDB(tuning_db_path(None))
    frames = real_frames()
    out: dict = {"meta": {"threads": threads, "target": target, "sparsity": args.sparsity, "ft_steps": args.ft_steps,
                          "block": {"scheme": "block", "r": 8, "c": 16, "balance": "row-block"},
                          "frames": {str(s): list(FRAMES[s]) for s in FRAMES}, "frame_photo": "rocket",
                          "timing": f"interleaved in one process, numpy in / numpy out, 2 warm-up calls, median of "
                                    f"{args.reps}", "tuning_db": db.path},
                 "models": {}}
    spec = {label: (name, width, depth, batch, patch, scaled_lr(name, lr))
            for label, name, width, depth, _, batch, patch, lr in MODELS}
    for label, model in trained.items():
        name, width, depth, batch, patch, lr = spec[label]
        print(f"[deploy {label}] pruning at {args.sparsity} + {args.ft_steps} masked fine-tuning steps", flush=True)
        pruned, masks = block_prune_sr(model, args.sparsity)
        report = None
        if args.ft_steps > 0:
            report = fine_tune_masked(pruned, masks, source.train, trained_scale,
                                      SRTrainRecipe(steps=args.ft_steps, batch_size=batch, patch_size=patch, lr=lr / 2),
                                      seed=args.seed, threads=args.threads)
        entry: dict = {"pruned_layers": masks.names(), "mask_sparsity": round(masks.sparsity(), 4),
                       "fine_tune_seconds": None if report is None else round(report.seconds, 1), "scales": {}}
        with tvm_threads(threads), torch_threads(threads):
            for scale, shape in FRAMES.items():
                if scale == trained_scale:
                    dense_m, sparse_m = model, pruned
                else:  # same architecture at the other scale, seeded untrained weights, same pruning
                    torch.manual_seed(args.seed)
                    dense_m = build_sr_model(name, scale, width, depth).eval()
                    sparse_m, _ = block_prune_sr(dense_m, args.sparsity)
                print(f"[deploy {label} x{scale}] building for input {shape} ...", flush=True)
                rts = {"eager": eager_runtime(dense_m), "onnxruntime": onnx_runtime(dense_m, shape, threads=threads),
                       "tvm-dense": tvm_runtime(dense_m, shape, target=target, db=db, sparse=False),
                       "eager-pruned": eager_runtime(sparse_m, name="eager-pruned"),
                       "tvm-sparse": tvm_runtime(sparse_m, shape, target=target, db=db, sparse=True)}
                x = frames[scale]
                ref_dense, ref_sparse = rts["eager"].call(x), rts["eager-pruned"].call(x)
                diffs = {k: max_abs_diff(rt.call(x), ref_sparse if k in ("eager-pruned", "tvm-sparse") else ref_dense)
                         for k, rt in rts.items()}
                diffs["eager-pruned"] = None  # the reference of the sparse row
                timing = time_interleaved(rts, x, reps=args.reps)
                entry["scales"][str(scale)] = {
                    "input": list(shape), "output": [3, shape[1] * scale, shape[2] * scale], "trained": scale == trained_scale,
                    "rows": {k: {"median_ms": round(timing[k]["median_ms"], 2), "samples_ms":
                                 [round(v, 2) for v in timing[k]["samples_ms"]], "max_abs_diff": diffs[k],
                                 **({"info": rts[k].info} if k.startswith("tvm") else {})} for k in rts}}
                print("  " + ", ".join(f"{k} {timing[k]['median_ms']:.1f} ms" for k in rts), flush=True)
        # PSNR of every deployment on the whole test photos (the trained scale); rebuilt per photo shape, no tile timing
        print(f"[deploy {label}] test PSNR of each deployment ...", flush=True)
        one = host_target_dict(1)
        faces = {"eager": model, "eager-pruned": pruned,
                 "onnxruntime": RuntimeModule(lambda sh, m=model: onnx_runtime(m, sh, threads=1), trained_scale),
                 "tvm-dense": RuntimeModule(lambda sh, m=model: tvm_runtime(m, sh, target=one, sparse=False,
                                                                            measure=False), trained_scale),
                 "tvm-sparse": RuntimeModule(lambda sh, m=pruned: tvm_runtime(m, sh, target=one, sparse=True,
                                                                              measure=False), trained_scale)}
        entry["test"] = {k: {m: v for m, v in evaluate(f, source, "test", threads=args.threads).items()
                             if m != "per_image"} for k, f in faces.items()}
        out["models"][label] = entry
    db.save()
    return out


def print_deployment(dep: dict) -> None:
    rows = ("eager", "onnxruntime", "tvm-dense", "eager-pruned", "tvm-sparse")
    meta = dep["meta"]
    print(f"\nDeployment ({meta['threads']} threads; sparse = block r8 c16 at {meta['sparsity']}; {meta['timing']})")
    trained = next(s for s, v in next(iter(dep["models"].values()))["scales"].items() if v["trained"])
    print("| model | deployment | x2 720p frame ms | x2 vs eager | x4 720p frame ms | x4 vs eager "
          f"| max abs diff x2 / x4 | test PSNR-Y x{trained} dB | compact-kernel convs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, entry in dep["models"].items():
        for k in rows:
            cells = []
            for s in ("2", "4"):
                sc = entry["scales"][s]["rows"]
                cells.append((sc[k]["median_ms"], sc["eager"]["median_ms"] / sc[k]["median_ms"], sc[k]["max_abs_diff"]))
            diff = " / ".join("ref" if c[2] is None else f"{c[2]:.1e}" for c in cells)
            info = entry["scales"][trained]["rows"][k].get("info")
            kern = "-" if info is None else f"{info['sparse_layers']} / {len(info['layers'])}"
            print(f"| {label} | {k} | {cells[0][0]:.1f} | {cells[0][1]:.2f}x | {cells[1][0]:.1f} | {cells[1][1]:.2f}x "
                  f"| {diff} | {entry['test'][k]['psnr_y']:.2f} | {kern} |")


# --------------------------------------------------------------------------- compiler-aware search (--search)

SUPERNET = {"widths": (16, 24, 32), "max_depth": 4, "min_depth": 1, "kernel_sizes": (3, 5)}


def search_main(args) -> None:
    """Search SR models under latency targets (fractions of FSRCNN's predicted TVM-dense frame); compare with the zoo.

    Targets are fractions of FSRCNN's dense frame *predicted on the same table* (so a loaded machine moves
    targets and predictions alike); at the end the searched models and the zoo's dense architectures are
    built with TVM at the full frame and timed interleaved in one process (same load for all).
    """
    from compression.sr_deploy import time_interleaved as time_runtimes
    from compression.sr_deploy import measure_tvm_frame, tvm_runtime
    from compression.sr_search import SRLatencyModel, SRSearchSettings, default_table, search_sr
    from compression.tvm_backend.backend import tuning_db_path
    from compression.tvm_backend.runtime import tvm_threads
    from compression.tvm_backend.target import host_target_dict
    from compression.tvm_backend.tuning import TuningDB
    from suite.core.sr.models import SRSupernet

    start = time.perf_counter()
    load_start = _load()
    fractions = [float(v) for v in args.search_fractions.split(",")]
    tvm_threads_n = args.deploy_threads
    if args.fresh_table:
        from compression.tvm_backend.latency_table import TVMLatencyTable

        table = TVMLatencyTable(None, threads=tvm_threads_n)
    else:
        table = default_table(tvm_threads_n)
    target = host_target_dict(tvm_threads_n)
    db = TuningDB(tuning_db_path(None))
    frame = real_frames()[2]
    shape = FRAMES[2]
    tile = tuple(shape[1:]) if args.search_tile == "frame" else tuple(int(v) for v in args.search_tile.split("x"))
    source = load_photos(scale=SCALE, patch_size=96, patches_per_image=64, seed=args.seed)
    print(f"source: {source.description}", flush=True)
    # the zoo's convs predicted on the same table
    zoo_rows, zoo_models = [], {}
    for label, name, width, depth, *_ in MODELS:
        torch.manual_seed(args.seed)
        m = build_sr_model(name, SCALE, width, depth).eval()
        zoo_models[label] = m  # untrained: latency only (PSNR from the recorded run, read at the end)
        lat = SRLatencyModel(table, shape[1:], tile)
        zoo_rows.append({"model": label, "predicted_dense_ms": round(lat.model_ms(lat.layers(m), {}), 2)})
        print(f"[zoo {label}] {zoo_rows[-1]['predicted_dense_ms']} ms predicted now (convs, table)", flush=True)
    fsrcnn_pred = next(z for z in zoo_rows if z["model"] == "fsrcnn")["predicted_dense_ms"]
    targets = [round(f * fsrcnn_pred, 2) for f in fractions]
    if args.search_targets_ms:  # absolute targets (e.g. an earlier run's, to compare with it)
        targets = [float(v) for v in args.search_targets_ms.split(",")]
        fractions = [round(t / fsrcnn_pred, 4) for t in targets]
    print(f"targets (ms per 720p frame, {', '.join(map(str, fractions))} x FSRCNN predicted TVM dense "
          f"{fsrcnn_pred} ms): {targets}", flush=True)
    torch.manual_seed(args.seed)
    supernet = SRSupernet(SCALE, **SUPERNET)
    cache_key = {"supernet": {k: list(v) if isinstance(v, tuple) else v for k, v in SUPERNET.items()},
                 "steps": args.supernet_steps, "seed": args.seed, "scale": SCALE}
    supernet_from = None
    if args.supernet_cache and Path(args.supernet_cache).exists():
        saved = torch.load(args.supernet_cache, map_location="cpu", weights_only=True)
        if saved.get("key") == json.dumps(cache_key, sort_keys=True):
            supernet.load_state_dict(saved["state_dict"])
            supernet_from = args.supernet_cache
            print(f"supernet weights from {args.supernet_cache} (no training)", flush=True)
    results, chosen = [], {}
    trained = supernet_from is not None or args.supernet_steps == 0
    for i, t in enumerate(targets):
        # the supernet is trained by the first search that gets to stage 1 (a target found infeasible before
        # it leaves the supernet untrained for the next one)
        before = next(supernet.parameters()).detach().clone()
        settings = SRSearchSettings(latency_target_ms=t, frame_lr=shape[1:], table_tile=tile,
                                    supernet_steps=0 if trained else args.supernet_steps,
                                    population=args.population, generations=args.generations,
                                    finetune_steps=args.search_ft_steps, threads=args.threads, seed=args.seed,
                                    verify_rounds=args.verify_rounds, verify_reps=args.reps,
                                    verify_grow_below=args.verify_grow_below)
        print(f"\n[search {t} ms] ...", flush=True)
        try:
            res = search_sr(supernet, SCALE, source, settings, table=table,
                            log=lambda m: print(f"  {m}", flush=True),
                            # the verify rounds build and time exactly as the final measurement below does
                            measure=lambda m: measure_tvm_frame(m, shape, threads=tvm_threads_n, target=target, db=db,
                                                                reps=args.reps, seed=args.seed))
        except ConfigError as exc:
            print(f"  infeasible: {exc}", flush=True)
            results.append({"target_ms": t, "fraction_of_fsrcnn_dense": fractions[i], "infeasible": str(exc)})
            res = None
        if not trained and not torch.equal(before, next(supernet.parameters()).detach()):  # trained just now
            trained = True
            if args.supernet_cache:
                torch.save({"key": json.dumps(cache_key, sort_keys=True), "state_dict": supernet.state_dict()},
                           args.supernet_cache)
        if res is None:
            continue
        test = evaluate(res.model, source, "test", threads=args.threads)
        val = evaluate(res.model, source, "val", threads=args.threads)
        print(f"  chosen {res.choice['architecture']}, plan {res.choice['plan']}: val PSNR {val['psnr_y']:.2f}, "
              f"test PSNR {test['psnr_y']:.2f} (bicubic {test['bicubic_psnr_y']:.2f}, "
              f"{test['psnr_y'] - test['bicubic_psnr_y']:+.2f}); predicted {res.predicted_ms:.1f} ms; "
              f"{res.seconds}", flush=True)
        label = f"search@{t}"
        chosen[label] = res.model
        results.append({
            "label": label, "target_ms": t, "fraction_of_fsrcnn_dense": fractions[i], "choice": res.choice,
            "predicted_ms": round(res.predicted_ms, 2),
            "params": sum(int(p.numel()) for p in res.model.parameters()),
            "mask_sparsity": round(res.masks.sparsity(), 4) if res.masks.names() else 0.0,
            "val": {k: v for k, v in val.items() if k != "per_image"},
            "test": {k: v for k, v in test.items() if k != "per_image"},
            "seconds": res.seconds, "info": {k: v for k, v in res.info.items() if k != "settings"},
            "settings": res.info["settings"], "history": res.history})
    print(f"\nbuilding TVM for {shape} and timing interleaved (searched + zoo dense) ...", flush=True)
    rts = {}
    with tvm_threads(tvm_threads_n), torch_threads(tvm_threads_n):
        for label, m in chosen.items():
            rts[label] = tvm_runtime(m, shape, target=target, db=db, sparse=True)
        for label, m in zoo_models.items():
            rts[f"{label}-dense"] = tvm_runtime(m, shape, target=target, db=db, sparse=False)
        timing = time_runtimes(rts, frame, reps=args.reps)
    db.save()
    # the zoo's recorded PSNR, read only now: a zoo run (bench_sr.py without --search) may finish meanwhile
    zoo = json.loads(Path(args.search_zoo).read_text())
    dep = zoo.get("deployment", {}).get("models", {})  # absent in a zoo run without --deploy
    for z in zoo_rows:
        row = next(r for r in zoo["rows"] if r["model"] == z["model"])
        d = dep.get(z["model"])
        z.update({"test_psnr_y": row["test"]["psnr_y"], "test_ssim_y": row["test"]["ssim_y"],
                  "val_psnr_y": row["val"]["psnr_y"], "train_steps": row["recipe"]["steps"],
                  "recorded_tvm_dense_ms": None if d is None else d["scales"]["2"]["rows"]["tvm-dense"]["median_ms"],
                  "recorded_tvm_sparse_ms": None if d is None else d["scales"]["2"]["rows"]["tvm-sparse"]["median_ms"],
                  "tvm_sparse_test_psnr_y": None if d is None else d["test"]["tvm-sparse"]["psnr_y"]})
    for r in results:
        if "label" not in r:
            continue
        tm = timing[r["label"]]
        r.update({"measured_ms": round(tm["median_ms"], 2), "measured_samples_ms": [round(v, 2) for v in tm["samples_ms"]],
                  "predicted_over_measured": round(r["predicted_ms"] / tm["median_ms"], 3),
                  "compiled_conv_kernels_ms": _kernels_ms(rts[r["label"]].info["layers"]),
                  "tvm": {k: rts[r["label"]].info[k] for k in ("sparse_layers", "compile_seconds", "tuning_seconds",
                                                               "layers")}})
    for z in zoo_rows:
        tm = timing[f"{z['model']}-dense"]
        z.update({"tvm_dense_ms": round(tm["median_ms"], 2), "tvm_dense_samples_ms": [round(v, 2) for v in tm["samples_ms"]],
                  "predicted_over_measured": round(z["predicted_dense_ms"] / tm["median_ms"], 3),
                  "compiled_conv_kernels_ms": _kernels_ms(rts[f"{z['model']}-dense"].info["layers"])})
    bic = next(r["test"]["bicubic_psnr_y"] for r in results if "test" in r) if chosen else None
    out = {"meta": {"command": " ".join(["python", *sys.argv]), "scale": SCALE, "torch_threads": args.threads,
                    "tvm_threads": tvm_threads_n, "target": target, "tuning_db": db.path, "cpu": _cpu(),
                    "cores": os.cpu_count(), "load_start": load_start, "load_end": _load(),
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "seconds": round(time.perf_counter() - start, 1),
                    "supernet": {k: list(v) if isinstance(v, tuple) else v for k, v in SUPERNET.items()},
                    "supernet_from": supernet_from or "trained in this run",
                    "verify_rounds": args.verify_rounds, "verify_grow_below": args.verify_grow_below,
                    "table_db": "in-memory, timed in this run" if args.fresh_table else "shared tuning database",
                    "budget": {"supernet_steps": args.supernet_steps, "finetune_steps": args.search_ft_steps,
                               "population": args.population, "generations": args.generations,
                               "batch_size": 16, "patch_size": 32},
                    "frame": {"lr": list(shape), "photo": "rocket (360x640 centre crop)", "output": [3, 720, 1280]},
                    "timing": f"TVM builds at the full frame (searched: sparse, compact kernel where faster; zoo: "
                              f"dense, untrained weights), interleaved in one process, numpy in / out, 2 warm-up "
                              f"calls, median of {args.reps}",
                    "prediction": f"sum over convs of the TVM latency table at a {tile[0]}x{tile[1]} LR tile x "
                                  f"{shape[1] * shape[2] / (tile[0] * tile[1]):g} (pixel ratio); non-conv operators "
                                  "not included; with --verify-rounds the search builds and times its choice at the "
                                  "full frame and rescales the prediction by measured / predicted while over the "
                                  "target or far under it (info.verify: every round); predicted_ms is the chosen round's (rescaled) "
                                  "prediction; compiled_conv_kernels_ms: the full-frame build's own per-conv kernel "
                                  "timings summed (tuning database), to split the gap into tile scaling vs the rest",
                    "targets_from": (f"--search-targets-ms {args.search_targets_ms} (FSRCNN dense predicted on the "
                                     f"table now: {fsrcnn_pred} ms)") if args.search_targets_ms else
                                    f"FSRCNN dense predicted on the table now, {fsrcnn_pred} ms, x {fractions}",
                    "zoo_from": args.search_zoo},
           "bicubic_test_psnr_y": bic, "zoo": zoo_rows, "results": results}
    _zoo_comparisons(out)  # best zoo dense model within each target / each searched model's measured ms
    atomic_write_text(Path(args.search_out), json.dumps(out, indent=1) + "\n")
    if chosen:
        _plot_front(out, Path(args.search_out).with_name("sr_search_front.png"))
    print("\n| model | target ms | architecture | plan | val PSNR | test PSNR | vs bicubic | test SSIM | predicted ms "
          "| full-frame conv kernels ms | measured ms | met | verify rounds (measured ms) | best zoo dense within target |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "measured_ms" not in r:
            print(f"| search | {r['target_ms']} | infeasible | | | | | | | | | | | |")
            continue
        v = r["info"].get("verify")
        rounds_cell = "-" if not v else (f"{len(v['rounds'])} ("
                                         + ", ".join(f"{x['measured_ms']:.0f}" for x in v["rounds"]) + ")")
        a = r["choice"]["architecture"]
        z = r["best_zoo_dense_within_target"]
        zoo_cell = "-" if z is None else f"{z['model']} {z['test_psnr_y']:.2f} dB"
        print(f"| search | {r['target_ms']} | w{a['width']} k{''.join(map(str, a['kernels']))} | {r['choice']['plan']} "
              f"| {r['val']['psnr_y']:.2f} | {r['test']['psnr_y']:.2f} | {r['test']['psnr_y'] - bic:+.2f} "
              f"| {r['test']['ssim_y']:.4f} | {r['predicted_ms']:.1f} | {r['compiled_conv_kernels_ms']:.1f} "
              f"| {r['measured_ms']:.1f} | {'yes' if r['measured_ms'] <= r['target_ms'] else 'no'} | {rounds_cell} "
              f"| {zoo_cell} |")
    for z in zoo_rows:
        print(f"| {z['model']} (dense, recorded PSNR) | - | - | - | {z['val_psnr_y']:.2f} | {z['test_psnr_y']:.2f} "
              f"| {z['test_psnr_y'] - (bic or 0):+.2f} | {z['test_ssim_y']:.4f} | {z['predicted_dense_ms']:.1f} "
              f"| {z['compiled_conv_kernels_ms']:.1f} | {z['tvm_dense_ms']:.1f} | - | - | - |")
    print(f"\nwrote {args.search_out} in {out['meta']['seconds']:.0f} s; load {load_start} -> {_load()}")


def _zoo_comparisons(out: dict) -> None:
    """Per searched model: the best zoo dense model (test PSNR) whose measured TVM frame is within the target,
    and within the searched model's own measured frame (equal measured latency)."""
    zoo = out["zoo"]
    for r in out["results"]:
        if "measured_ms" not in r:
            continue
        for key, limit in (("best_zoo_dense_within_target", r["target_ms"]),
                           ("best_zoo_dense_within_measured", r["measured_ms"])):
            within = [(z["test_psnr_y"], z["model"], z["tvm_dense_ms"]) for z in zoo if z["tvm_dense_ms"] <= limit]
            best = max(within) if within else None
            r[key] = None if best is None else {"model": best[1], "test_psnr_y": best[0], "measured_ms": best[2]}


def refresh_zoo(search_path: Path, zoo_path: Path) -> None:
    """Re-read the zoo's recorded PSNR from ``zoo_path`` into the search result ``search_path`` (no measurement)."""
    out = json.loads(search_path.read_text())
    zoo = json.loads(zoo_path.read_text())
    for z in out["zoo"]:
        row = next(r for r in zoo["rows"] if r["model"] == z["model"])
        z.update({"test_psnr_y": row["test"]["psnr_y"], "test_ssim_y": row["test"]["ssim_y"],
                  "val_psnr_y": row["val"]["psnr_y"], "train_steps": row["recipe"]["steps"]})
    _zoo_comparisons(out)
    out["meta"]["zoo_psnr_refreshed"] = {"from": str(zoo_path), "zoo_run_date": zoo["meta"]["date"],
                                         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    atomic_write_text(search_path, json.dumps(out, indent=1) + "\n")
    _plot_front(out, search_path.with_name("sr_search_front.png"))
    bic = out["bicubic_test_psnr_y"]
    for r in out["results"]:
        if "measured_ms" in r:
            print(f"{r['label']}: test {r['test']['psnr_y']:.2f} ({r['test']['psnr_y'] - bic:+.2f}), measured "
                  f"{r['measured_ms']:.1f} ms; best zoo within target {r['best_zoo_dense_within_target']}; within "
                  f"its measured ms {r['best_zoo_dense_within_measured']}")
    for z in out["zoo"]:
        print(f"zoo {z['model']} ({z['train_steps']} steps): test {z['test_psnr_y']:.2f} ({z['test_psnr_y'] - bic:+.2f}), "
              f"TVM dense {z['tvm_dense_ms']:.1f} ms")
    print(f"updated {search_path}")


def _kernels_ms(layers: list[dict]) -> float:
    """Sum of the compiler's own full-frame kernel times of a build (the kernel it kept per conv)."""
    from compression.sr_deploy import conv_kernels_ms

    return round(conv_kernels_ms(layers), 2)


def _plot_front(out: dict, path: Path) -> None:
    """PSNR (test) vs measured TVM ms per 720p frame: searched models, zoo dense / sparse, bicubic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.axhline(out["bicubic_test_psnr_y"], color="grey", ls="--", label="bicubic")
    for z in out["zoo"]:
        ax.scatter([z["tvm_dense_ms"]], [z["test_psnr_y"]], marker="s", color="tab:blue")
        ax.annotate(f"{z['model']} dense", (z["tvm_dense_ms"], z["test_psnr_y"]), fontsize=7)
    res = [r for r in out["results"] if "measured_ms" in r]
    ax.plot([r["measured_ms"] for r in res], [r["test"]["psnr_y"] for r in res], "o-", color="tab:green",
            label="searched (measured)")
    ax.scatter([r["predicted_ms"] for r in res], [r["test"]["psnr_y"] for r in res], marker="x", color="tab:green",
               label="searched (predicted)")
    for r in res:
        ax.axvline(r["target_ms"], color="tab:green", alpha=0.2)
    ax.scatter([], [], marker="s", color="tab:blue", label="zoo TVM dense (measured in the same run)")
    ax.set_xlabel("TVM ms per 720p frame (x2, 360x640 LR input)")
    ax.set_ylabel("test PSNR-Y (dB)")
    ax.set_title("Compiler-aware SR search: PSNR vs latency")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
