"""Training-recipe study for the SR models (issue 18): validation PSNR against steps, data and design.

Exact command (the recorded run):

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sr_recipe.py --threads 1 --out bench/results/sr_recipe.json

Each run trains one x2 model from seed 0 on the train photos of :func:`suite.core.sr.photos.load_photos`
(astronaut, china, coffee, motorcycle_left) with L1 loss, Adam and a cosine schedule
(:func:`suite.core.sr.train.train_sr`), then scores it on the **val** photo (chelsea, whole image) by
PSNR-Y with a 2-pixel border beside bicubic.  The test photos are never read here: this study picks the
recipes that ``bench/bench_sr.py`` then reports on test.  A run is a spec string::

    MODEL@STEPS[/key=value...]

MODEL: ``espcn``, ``fsrcnn``, ``edsr-32x4`` (EDSR width 0.5, depth 0.25) or ``rsr-wW-kKK[-plain]`` (a
:class:`~suite.core.sr.models.ResidualSR` of width W, one residual block per kernel digit; ``-plain``:
without the nearest-neighbour anchor).  Keys: ``ppi`` (HR patches per train photo, default 64), ``hr``
(their side in px, 96), ``lrpatch`` (LR training patch side, 32), ``batch`` (16), ``lr`` (peak Adam
learning rate, 1e-3), ``deconv`` (learning-rate multiplier of FSRCNN's deconvolution), ``dstd`` (FSRCNN
deconvolution init: normal std, 0 = torch's default init), ``zooms`` (train zooms, e.g. ``1-0.8-0.6``: the
train photos also resized, patches cut from every copy), ``rot`` (1: random transposes too, all 8
rotations / reflections).  Writes ``--out`` (JSON, one row per run,
appended run by run so an interrupted study keeps its rows) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from suite.core.errors import ConfigError  # noqa: E402
from suite.core.files import atomic_write_text  # noqa: E402
from suite.core.sr.models import ResidualSR, build_sr_model  # noqa: E402
from suite.core.sr.photos import load_photos  # noqa: E402
from suite.core.sr.train import SRTrainRecipe, evaluate, train_sr  # noqa: E402

SCALE = 2
DEFAULT_RUNS = (
    # steps curves
    "espcn@500", "espcn@1500", "espcn@4500",
    "rsr-w32-k3@500", "rsr-w32-k3@1500", "rsr-w32-k3@4500",
    # anchor
    "rsr-w32-k3-plain@1500",
    # data: more / larger patches, larger LR training patches
    "rsr-w32-k3@1500/ppi=256", "rsr-w32-k3@1500/lrpatch=48",
    # FSRCNN: the paper's 10x smaller deconvolution learning rate; torch's default deconvolution init
    "fsrcnn@1500/deconv=0.1", "fsrcnn@1500/dstd=0",
)
KEYS = {"ppi": int, "hr": int, "lrpatch": int, "batch": int, "lr": float, "deconv": float, "dstd": float,
        "zooms": str, "rot": int}


def parse_spec(spec: str) -> tuple[str, int, dict]:
    """``MODEL@STEPS[/k=v...]`` -> (model, steps, options); ConfigError on a malformed spec."""
    try:
        head, *opts = spec.split("/")
        model, steps = head.split("@")
        options = {}
        for o in opts:
            k, v = o.split("=")
            options[k] = KEYS[k](v)
        return model, int(steps), options
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"bad run spec {spec!r} ({exc}); see the module docstring") from None


def build(model: str, options: dict) -> torch.nn.Module:
    """The model of a spec, seeded (``torch.manual_seed(0)``)."""
    torch.manual_seed(0)
    if model.startswith("rsr-"):
        parts = model.split("-")
        width, kernels = int(parts[1][1:]), tuple(int(c) for c in parts[2][1:])
        return ResidualSR(SCALE, width, kernels, anchor="plain" not in parts[3:])
    if model == "edsr-32x4":
        return build_sr_model("edsr", SCALE, 0.5, 0.25)
    net = build_sr_model(model, SCALE)
    if "dstd" in options:
        if options["dstd"] > 0:
            torch.nn.init.normal_(net.deconv.weight, std=options["dstd"])
        else:
            net.deconv.reset_parameters()
    return net


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", default=",".join(DEFAULT_RUNS), help="comma-separated run specs (module docstring)")
    p.add_argument("--out", default="bench/results/sr_recipe.json")
    args = p.parse_args()
    specs = [parse_spec(s) for s in args.runs.split(",") if s]
    out_path = Path(args.out)
    rows: list[dict] = []
    sources: dict[tuple[int, int], object] = {}
    start = time.perf_counter()
    for model, steps, opts in specs:
        zooms = tuple(float(z) for z in opts.get("zooms", "1").split("-"))
        key = (opts.get("hr", 96), opts.get("ppi", 64), zooms)
        if key not in sources:
            sources[key] = load_photos(scale=SCALE, patch_size=key[0], patches_per_image=key[1], seed=0,
                                       train_zooms=zooms)
        source = sources[key]
        net = build(model, opts)
        recipe = SRTrainRecipe(steps=steps, batch_size=opts.get("batch", 16), patch_size=opts.get("lrpatch", 32),
                               lr=opts.get("lr", 1e-3), transpose=bool(opts.get("rot", 0)),
                               lr_scales=(("deconv", opts["deconv"]),) if "deconv" in opts else ())
        load0 = os.getloadavg()
        report = train_sr(net, source.train, SCALE, recipe, seed=0, threads=args.threads)
        val = evaluate(net, source, "val", threads=args.threads)
        row = {"model": model, "arch": getattr(net, "arch", model), "steps": steps, "options": opts,
               "params": sum(p.numel() for p in net.parameters()),
               "recipe": {k: (list(v) if isinstance(v, tuple) else v) for k, v in recipe.__dict__.items()},
               "source": {"hr_patch": key[0], "patches_per_image": key[1], "train_zooms": list(zooms),
                          "train_patches": len(source.train)},
               "val_psnr_y": round(val["psnr_y"], 3), "val_bicubic_psnr_y": round(val["bicubic_psnr_y"], 3),
               "val_vs_bicubic": round(val["psnr_y"] - val["bicubic_psnr_y"], 3),
               "train": report.as_dict(), "load": [round(v, 2) for v in load0]}
        rows.append(row)
        print(f"{model}@{steps} {opts}: val {row['val_psnr_y']:.2f} dB ({row['val_vs_bicubic']:+.2f} vs bicubic), "
              f"last L1 {row['train']['last_loss']}, {report.seconds:.0f} s", flush=True)
        meta = {"command": " ".join(["python", *sys.argv]), "threads": args.threads, "torch": torch.__version__,
                "cores": os.cpu_count(), "seconds": round(time.perf_counter() - start, 1),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "split": "val (chelsea, whole image); test never read",
                "metrics": "PSNR on BT.601 Y, 2-pixel border, 8-bit rounding"}
        atomic_write_text(out_path, json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print("\n| run | params | val PSNR-Y | vs bicubic | last L1 | s |\n|---|---|---|---|---|---|")
    for r in rows:
        opts = "".join(f"/{k}={v}" for k, v in r["options"].items())
        print(f"| {r['model']}@{r['steps']}{opts} | {r['params']} | {r['val_psnr_y']:.2f} | {r['val_vs_bicubic']:+.2f} "
              f"| {r['train']['last_loss']} | {r['train']['seconds']:.0f} |")


if __name__ == "__main__":
    main()
