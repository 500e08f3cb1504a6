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
photos (TVM / ONNX rebuilt per photo shape without tile timing).  x4 rows
use the same architectures at x4 with seeded *untrained* weights (latency
and agreement only; no PSNR).  Tile timings go to the shared tuning
database, so a rerun does not search again.

    OMP_NUM_THREADS=1 TVM_NUM_THREADS=2 .venv/bin/python bench/bench_sr.py --threads 1 --deploy \
        --deploy-threads 2 --out bench/results/sr.json
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

from suite.core.files import atomic_write_text  # noqa: E402
from suite.core.sr.degrade import bicubic_up  # noqa: E402
from suite.core.sr.models import build_sr_model  # noqa: E402
from suite.core.sr.photos import load_photos  # noqa: E402
from suite.core.sr.train import SRTrainRecipe, evaluate, torch_threads, train_sr  # noqa: E402

SCALE = 2
# label, zoo name, width multiplier, depth multiplier, steps, batch, LR patch, Adam lr
MODELS = (
    ("espcn", "espcn", 1.0, 1.0, 1500, 16, 32, 1e-3),
    ("fsrcnn", "fsrcnn", 1.0, 1.0, 1500, 16, 32, 1e-3),
    ("edsr-32x4", "edsr", 0.5, 0.25, 500, 16, 32, 5e-4),
)


class Bicubic(torch.nn.Module):
    """The bicubic upsampling baseline as a module (for the latency table)."""

    scale = SCALE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bicubic_up(x, SCALE)


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
    p.add_argument("--reps", type=int, default=10, help="timed 720p frames per model (median reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/results/sr.json")
    p.add_argument("--deploy", action="store_true", help="add the deployment table (eager / ONNX / TVM dense / sparse)")
    p.add_argument("--deploy-threads", type=int, default=2, help="threads of torch, ONNX Runtime and TVM in it")
    p.add_argument("--sparsity", type=float, default=0.75, help="block-pruning sparsity of the sparse rows")
    p.add_argument("--ft-steps", type=int, default=300, help="masked fine-tuning steps of the pruned models")
    args = p.parse_args()
    if args.reps < 1 or args.budget <= 0:
        p.error("--reps must be >= 1 and --budget > 0")
    start = time.perf_counter()
    load_start = _load()
    with torch_threads(args.threads):
        source = load_photos(scale=SCALE, patch_size=96, patches_per_image=64, seed=args.seed)
        print(f"source: {source.description}", flush=True)
        print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, load {load_start}", flush=True)
        trained: dict[str, torch.nn.Module] = {}
        rows = []
        for label, name, width, depth, steps, batch, patch, lr in MODELS:
            steps = max(1, int(round(steps * args.budget)))
            recipe = SRTrainRecipe(steps=steps, batch_size=batch, patch_size=patch, lr=lr)
            torch.manual_seed(args.seed)
            model = build_sr_model(name, SCALE, width, depth)
            params = sum(p.numel() for p in model.parameters())
            print(f"[{label}] {params} params; budget {steps} steps x batch {batch} x LR patch {patch} "
                  f"(HR {patch * SCALE}), Adam lr {lr:g} cosine", flush=True)
            report = train_sr(model, source.train, SCALE, recipe, seed=args.seed, threads=args.threads,
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
        x = torch.rand(1, 3, 360, 640, generator=torch.Generator().manual_seed(0))
        samples = time_interleaved({"bicubic": Bicubic(), **trained}, x, args.reps)
    latency = {k: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v), "samples_ms": v}
               for k, v in samples.items()}
    for row in rows:
        row["latency_720p"] = latency[row["model"]]
    bic = rows[0]["test"]
    result = {
        "meta": {"command": " ".join(["python", *sys.argv]), "scale": SCALE, "threads": args.threads,
                 "torch": torch.__version__, "cpu": _cpu(), "cores": os.cpu_count(), "load_start": load_start,
                 "load_end": _load(), "seconds": round(time.perf_counter() - start, 1),
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "latency": f"torch eager, input [1, 3, 360, 640] -> [1, 3, 720, 1280], interleaved, 2 warm-up "
                            f"calls, median of {args.reps}",
                 "metrics": "PSNR / SSIM on BT.601 Y, 2-pixel border, 8-bit rounding, mean over images"},
        "source": {k: v for k, v in source.summary().items()},
        "bicubic": {"test": {k: bic[k] for k in ("bicubic_psnr_y", "bicubic_ssim_y")},
                    "latency_720p": latency["bicubic"]},
        "rows": rows,
    }
    if args.deploy:
        result["deployment"] = deployment_table(trained, source, args)
        result["meta"]["seconds"] = round(time.perf_counter() - start, 1)
        result["meta"]["load_end"] = _load()
    atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    header = ("| model | params | train steps (s) | test PSNR-Y dB | vs bicubic | test SSIM-Y | val PSNR-Y dB "
              "| 720p x2 frame ms (median) |")
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


def deployment_table(trained: dict[str, torch.nn.Module], source, args) -> dict:
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
    spec = {label: (name, width, depth, batch, patch, lr) for label, name, width, depth, _, batch, patch, lr in MODELS}
    for label, model in trained.items():
        name, width, depth, batch, patch, lr = spec[label]
        print(f"[deploy {label}] pruning at {args.sparsity} + {args.ft_steps} masked fine-tuning steps", flush=True)
        pruned, masks = block_prune_sr(model, args.sparsity)
        report = None
        if args.ft_steps > 0:
            report = fine_tune_masked(pruned, masks, source.train, SCALE,
                                      SRTrainRecipe(steps=args.ft_steps, batch_size=batch, patch_size=patch, lr=lr / 2),
                                      seed=args.seed, threads=args.threads)
        entry: dict = {"pruned_layers": masks.names(), "mask_sparsity": round(masks.sparsity(), 4),
                       "fine_tune_seconds": None if report is None else round(report.seconds, 1), "scales": {}}
        with tvm_threads(threads), torch_threads(threads):
            for scale, shape in FRAMES.items():
                if scale == SCALE:
                    dense_m, sparse_m = model, pruned
                else:  # same architecture at x4, seeded untrained weights, same pruning
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
                    "input": list(shape), "output": [3, shape[1] * scale, shape[2] * scale], "trained": scale == SCALE,
                    "rows": {k: {"median_ms": round(timing[k]["median_ms"], 2), "samples_ms":
                                 [round(v, 2) for v in timing[k]["samples_ms"]], "max_abs_diff": diffs[k],
                                 **({"info": rts[k].info} if k.startswith("tvm") else {})} for k in rts}}
                print("  " + ", ".join(f"{k} {timing[k]['median_ms']:.1f} ms" for k in rts), flush=True)
        # PSNR of every deployment on the whole test photos (x2, trained); rebuilt per photo shape, no tile timing
        print(f"[deploy {label}] test PSNR of each deployment ...", flush=True)
        one = host_target_dict(1)
        faces = {"eager": model, "eager-pruned": pruned,
                 "onnxruntime": RuntimeModule(lambda sh, m=model: onnx_runtime(m, sh, threads=1), SCALE),
                 "tvm-dense": RuntimeModule(lambda sh, m=model: tvm_runtime(m, sh, target=one, sparse=False,
                                                                            measure=False), SCALE),
                 "tvm-sparse": RuntimeModule(lambda sh, m=pruned: tvm_runtime(m, sh, target=one, sparse=True,
                                                                              measure=False), SCALE)}
        entry["test"] = {k: {m: v for m, v in evaluate(f, source, "test", threads=args.threads).items()
                             if m != "per_image"} for k, f in faces.items()}
        out["models"][label] = entry
    db.save()
    return out


def print_deployment(dep: dict) -> None:
    rows = ("eager", "onnxruntime", "tvm-dense", "eager-pruned", "tvm-sparse")
    meta = dep["meta"]
    print(f"\nDeployment ({meta['threads']} threads; sparse = block r8 c16 at {meta['sparsity']}; {meta['timing']})")
    print("| model | deployment | x2 720p frame ms | x2 vs eager | x4 720p frame ms | x4 vs eager "
          "| max abs diff x2 / x4 | test PSNR-Y x2 dB | compact-kernel convs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, entry in dep["models"].items():
        for k in rows:
            cells = []
            for s in ("2", "4"):
                sc = entry["scales"][s]["rows"]
                cells.append((sc[k]["median_ms"], sc["eager"]["median_ms"] / sc[k]["median_ms"], sc[k]["max_abs_diff"]))
            diff = " / ".join("ref" if c[2] is None else f"{c[2]:.1e}" for c in cells)
            info = entry["scales"]["2"]["rows"][k].get("info")
            kern = "-" if info is None else f"{info['sparse_layers']} / {len(info['layers'])}"
            print(f"| {label} | {k} | {cells[0][0]:.1f} | {cells[0][1]:.2f}x | {cells[1][0]:.1f} | {cells[1][1]:.2f}x "
                  f"| {diff} | {entry['test'][k]['psnr_y']:.2f} | {kern} |")


if __name__ == "__main__":
    main()
