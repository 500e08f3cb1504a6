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


if __name__ == "__main__":
    main()
