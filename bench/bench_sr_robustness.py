"""Benchmark: robustness (UAP) and IP protection (fingerprint audit) of an SR model, x2 on the bundled photos.

Exact command (the recorded run):

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sr_robustness.py --threads 1 \
        --out bench/results/sr_robustness.json

Owner: ESPCN x2 trained as ``bench/bench_sr.py`` does (L1, Adam, cosine, batch
16, LR patch 32, the train photos' 64 HR patches of 96 px each, seed 0) but
for ``--steps`` (default 600, not 1500) steps.  Every other model of the zoo
gets the same recipe (FSRCNN the same steps, the EDSR 32x4 a third of them).

UAP (:mod:`attacks.sr_uap`): Linf 8/255 on the LR input, a 32x32 tile crafted
on 256 LR crops (32 px) of the *train* photos against the dense owner; the
step size is chosen on the *val* photo among eps/16, eps/8, eps/4 (by UAP
PSNR-Y drop); reported on the *test* photos (whole images), beside random-sign
noise of the same Linf norm, against: the dense owner (white box), its
block-pruned copies (0.5 / 0.75, masked fine-tune) -- transfer -- and the ONNX
Runtime deployments of the dense and the 0.75-pruned model (black boxes:
transfer).  A +-eps checkerboard tile (structured baseline) is scored beside
them.  A UAP crafted on the pruned model itself is the white-box
reference for the transfer gap.  Also eps 4/255 and 16/255 on the owner.

Fingerprint (:mod:`fingerprints.sr`): 32 LR queries (32 px crops of the val
photo), variants ``crops`` / ``optimised`` x baseline ``bicubic`` /
``references`` (2 reference models the owner trains itself with the owner's
architecture and recipe: ESPCN seeds 100 and 101; never suspects; a first run
with an ESPCN + FSRCNN pair is described in the report), each scored by residual correlation and by PSNR
between outputs.  Zoo: positives = pruned 0.5 / 0.75 + masked fine-tune,
fine-tuned on other photos (all weights; scikit-image's ihc, hubble, retina,
brick, grass, gravel -- never in the owner's data), pruned 0.5 + masked
fine-tune on other photos, fp16, ONNX Runtime export of the owner and of the
0.75-pruned copy; negatives = independently trained models: ESPCN (4 seeds),
ESPCN trained on the other photos (2 seeds), FSRCNN (2 seeds), EDSR 32x4
(2 seeds); half of each family calibrates the threshold (1 % FPR target ->
their maximum), the other half is held out: AUC, TPR@1%FPR and false
positives are on the held-out half only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attacks.sr_uap import SRUAP, SRUAPSettings, evaluate as uap_evaluate, lr_crops  # noqa: E402
from fingerprints.sr import (HalfSRPredictor, SRFingerprinter, fine_tuned_copy, onnx_predictor,  # noqa: E402
                             pruned_copy, zoo_report)
from suite.core.files import atomic_write_text  # noqa: E402
from suite.core.sr.models import build_sr_model  # noqa: E402
from suite.core.sr.photos import Crop, SRSplit, _package_dir, _patches, _read_image, load_photos  # noqa: E402
from suite.core.sr.predictor import ModuleSRPredictor  # noqa: E402
from suite.core.sr.train import SRTrainRecipe, evaluate, torch_threads, train_sr  # noqa: E402

SCALE = 2
OTHER_PHOTOS = ("ihc.png", "hubble_deep_field.jpg", "retina.jpg", "brick.png", "grass.png", "gravel.png")
# family -> (zoo name, width, depth, steps multiplier, Adam lr)
FAMILIES = {"espcn": ("espcn", 1.0, 1.0, 1.0, 1e-3), "fsrcnn": ("fsrcnn", 1.0, 1.0, 1.0, 1e-3),
            "edsr": ("edsr", 0.5, 0.25, 1 / 3, 5e-4)}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def other_photos_split(patch: int, count: int, seed: int) -> SRSplit:
    """HR patches of scikit-image photos outside the owner's data (greys as RGB): the 'other photos'."""
    rng = np.random.default_rng(seed)
    parts: list[tuple[np.ndarray, Crop]] = []
    for f in OTHER_PHOTOS:
        img = _read_image(_package_dir("skimage") / "data" / f, "other-photos")
        parts += _patches("other-photos", f.split(".")[0], img, patch, count, rng, f"photo {f!r}")
    return SRSplit(tuple(p[0] for p in parts), tuple(p[1] for p in parts))


def train_model(family: str, seed: int, split: SRSplit, steps: int, threads: int) -> tuple[torch.nn.Module, dict]:
    name, width, depth, mult, lr = FAMILIES[family]
    n = max(1, int(round(steps * mult)))
    torch.manual_seed(seed)
    m = build_sr_model(name, SCALE, width, depth)
    rep = train_sr(m, split, SCALE, SRTrainRecipe(steps=n, batch_size=16, patch_size=32, lr=lr), seed=seed,
                   threads=threads)
    return m.eval(), {"family": family, "seed": seed, "steps": n, "lr": lr, "train_seconds": round(rep.seconds, 1),
                      "last_loss": rep.as_dict()["last_loss"]}


def pairs(split) -> tuple[list, list, list]:
    ps = list(split.pairs(SCALE))
    return [p[0] for p in ps], [p[1] for p in ps], [c.photo for c in split.crops]


def brief(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "per_image"} | {"per_image": r["per_image"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=600, help="training steps of the owner and of every ESPCN / FSRCNN")
    p.add_argument("--ft-steps", type=int, default=200, help="fine-tuning steps of the derived copies")
    p.add_argument("--uap-steps", type=int, default=150)
    p.add_argument("--queries", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/results/sr_robustness.json")
    args = p.parse_args()
    t_start = time.perf_counter()
    load_start = list(os.getloadavg())
    th = args.threads
    with torch_threads(th):
        source = load_photos(scale=SCALE, patch_size=96, patches_per_image=64, seed=args.seed)
        other = other_photos_split(96, 48, seed=args.seed)
        log(f"source: {source.description}; other photos: {len(other)} patches of {', '.join(other.photos)}")
        models: dict[str, torch.nn.Module] = {}
        info: dict[str, dict] = {}

        def add(label, family, seed, split=source.train):
            m, meta = train_model(family, seed, split, args.steps, th)
            meta["train_photos"] = "owner's" if split is source.train else "other"
            meta["test"] = {k: round(v, 3) for k, v in evaluate(m, source, "test", threads=th).items()
                            if k in ("psnr_y", "bicubic_psnr_y")}
            models[label], info[label] = m, meta
            log(f"trained {label}: {meta}")

        add("owner", "espcn", args.seed)
        owner = models["owner"]
        ft = SRTrainRecipe(steps=args.ft_steps, batch_size=16, patch_size=32, lr=5e-4)
        derived: dict[str, torch.nn.Module] = {}
        for sp in (0.5, 0.75):
            derived[f"pruned-{sp}-ft"] = pruned_copy(owner, sp, source.train, SCALE, ft, seed=args.seed + 1,
                                                     threads=th)
        for k, m in derived.items():
            info[k] = {"derived": True, "test": {kk: round(v, 3) for kk, v in
                                                 evaluate(m, source, "test", threads=th).items()
                                                 if kk in ("psnr_y", "bicubic_psnr_y")}}
            log(f"derived {k}: {info[k]}")

        # ------------------------------------------------------------------ UAP
        eps = 8 / 255
        craft_lr = lr_crops(source.train, SCALE, 32, 256, seed=args.seed + 11)
        val_lr, val_hr, val_names = pairs(source.val)
        test_lr, test_hr, test_names = pairs(source.test)
        owner_p = ModuleSRPredictor(owner, SCALE)
        tuning = []
        for frac in (1 / 16, 1 / 8, 1 / 4):
            s = SRUAPSettings(eps=eps, steps=args.uap_steps, step_size=eps * frac, batch=16, patch=32, seed=args.seed)
            r = SRUAP(s).craft(owner, craft_lr)
            v = uap_evaluate(owner_p, r.delta, val_lr, val_hr, SCALE, noise_seed=1)
            tuning.append({"step_size_over_eps": frac, "val_uap_drop_db": v["uap"]["drop_db"],
                           "val_noise_drop_db": v["noise"]["drop_db"], "craft": r.as_dict(), "delta": r.delta})
            log(f"UAP tuning alpha=eps*{frac:g}: val drop {v['uap']['drop_db']} dB (noise {v['noise']['drop_db']})")
        best = max(tuning, key=lambda t: t["val_uap_drop_db"])
        delta, frac = best["delta"], best["step_size_over_eps"]
        targets = {"owner-dense (white box)": owner_p,
                   **{f"{k} (transfer)": ModuleSRPredictor(m, SCALE) for k, m in derived.items()},
                   "onnx-dense (black box, transfer)": onnx_predictor(owner, SCALE),
                   "onnx-pruned-0.75-ft (black box, transfer)": onnx_predictor(derived["pruned-0.75-ft"], SCALE)}
        uap_test = {}
        for name, pred in targets.items():
            uap_test[name] = brief(uap_evaluate(pred, delta, test_lr, test_hr, SCALE, noise_seed=2, names=test_names))
            log(f"UAP test on {name}: drop {uap_test[name]['uap']['drop_db']} dB vs noise "
                f"{uap_test[name]['noise']['drop_db']} dB")
        # structured baseline (NOTES section 3): a +-eps checkerboard tile of the same norm, on every target
        yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
        checker = (((yy + xx) % 2) * 2 - 1).float().expand(1, 3, 32, 32) * eps
        for name, pred in targets.items():
            ev = uap_evaluate(pred, checker, test_lr, test_hr, SCALE, noise_seed=2, names=test_names)
            uap_test[name]["checkerboard"] = ev["uap"]
        log("checkerboard drops: " + ", ".join(f"{k} {v['checkerboard']['drop_db']}" for k, v in uap_test.items()))
        # white-box reference on the pruned model
        wb = SRUAP(eps=eps, steps=args.uap_steps, step_size=eps * frac, batch=16, patch=32,
                   seed=args.seed).craft(derived["pruned-0.75-ft"], craft_lr)
        uap_test["pruned-0.75-ft (its own UAP, white box)"] = brief(uap_evaluate(
            ModuleSRPredictor(derived["pruned-0.75-ft"], SCALE), wb.delta, test_lr, test_hr, SCALE, noise_seed=2,
            names=test_names))
        eps_sweep = {}
        for e in (4 / 255, 16 / 255):
            r = SRUAP(eps=e, steps=args.uap_steps, step_size=e * frac, batch=16, patch=32,
                      seed=args.seed).craft(owner, craft_lr)
            ev = uap_evaluate(owner_p, r.delta, test_lr, test_hr, SCALE, noise_seed=2, names=test_names)
            eps_sweep[f"{round(e * 255)}/255"] = {k: ev[k] for k in ("clean_psnr_hr", "uap", "noise",
                                                                       "uap_minus_noise_drop_db")}
            log(f"UAP eps {e * 255:.0f}/255 on owner: drop {ev['uap']['drop_db']} vs noise {ev['noise']['drop_db']}")
        uap = {"eps": eps, "tile": 32, "craft_crops": list(craft_lr.shape), "craft_split": "train",
               "tuning_split": "val", "test_split": "test", "chosen_step_size_over_eps": frac,
               "tuning": [{k: v for k, v in t.items() if k != "delta"} for t in tuning],
               "test": uap_test, "eps_sweep_owner": eps_sweep}

        # ------------------------------------------------------------------ fingerprint zoo
        ft_other = SRTrainRecipe(steps=args.ft_steps, batch_size=16, patch_size=32, lr=5e-4)
        derived["ft-other-photos"] = fine_tuned_copy(owner, other, SCALE, ft_other, seed=args.seed + 2, threads=th)
        derived["pruned-0.5-ft-other-photos"] = pruned_copy(owner, 0.5, other, SCALE, ft_other, seed=args.seed + 3,
                                                            threads=th)
        for k in ("ft-other-photos", "pruned-0.5-ft-other-photos"):
            info[k] = {"derived": True, "test": {kk: round(v, 3) for kk, v in
                                                 evaluate(derived[k], source, "test", threads=th).items()
                                                 if kk in ("psnr_y", "bicubic_psnr_y")}}
            log(f"derived {k}: {info[k]}")
        positives = {k: ModuleSRPredictor(m, SCALE) for k, m in derived.items()}
        positives["fp16"] = HalfSRPredictor(owner, SCALE)
        positives["onnx"] = onnx_predictor(owner, SCALE)
        positives["onnx-pruned-0.75-ft"] = onnx_predictor(derived["pruned-0.75-ft"], SCALE)

        add("ref-espcn-s100", "espcn", 100)
        add("ref-espcn-s101", "espcn", 101)
        cal_names, held_names = [], []
        for fam, seeds, split, tag in (("espcn", (1, 2, 3, 4), source.train, ""), ("espcn", (1, 2), other, "-other"),
                                       ("fsrcnn", (1, 2), source.train, ""), ("edsr", (1, 2), source.train, "")):
            for i, sd in enumerate(seeds):
                label = f"{fam}{tag}-s{sd}"
                add(label, fam, sd, split)
                (cal_names if i % 2 == 0 else held_names).append(label)
        refs = [models["ref-espcn-s100"], models["ref-espcn-s101"]]
        cal = {k: ModuleSRPredictor(models[k], SCALE) for k in cal_names}
        held = {k: ModuleSRPredictor(models[k], SCALE) for k in held_names}
        start_q = lr_crops(source.val, SCALE, 32, args.queries, seed=args.seed + 21)
        variants = {"noise+bicubic": dict(mode="noise", refs=False),
                    "crops+bicubic": dict(mode="crops", refs=False), "crops+references": dict(mode="crops", refs=True),
                    "optimised+bicubic": dict(mode="optimised", refs=False),
                    "optimised+references": dict(mode="optimised", refs=True),
                    "optimised+references+weight-noise": dict(mode="optimised", refs=True, weight_noise=0.05)}
        fps = {}
        for vname, v in variants.items():
            fp = SRFingerprinter(mode=v["mode"], steps=40, weight_noise=v.get("weight_noise", 0.0),
                                 seed=args.seed).generate(owner, start_q, SCALE, refs if v["refs"] else ())
            rep = zoo_report(fp, positives, cal, held)
            fps[vname] = {"fingerprint": fp.as_dict(), **rep}
            log(f"fingerprint {vname}: " + "; ".join(
                f"{k}: AUC {rep[k]['auc']:.3f} TPR@1%FPR {rep[k]['tpr_at_1pct_fpr']:.2f} held-out FP "
                f"{rep[k]['heldout_false_positives']}/{rep[k]['heldout_negatives']}" for k in ("residual_corr", "psnr")))
    result = {
        "meta": {"command": " ".join(["python", *sys.argv]), "scale": SCALE, "threads": th,
                 "torch": torch.__version__, "cores": os.cpu_count(), "load_start": load_start,
                 "load_end": list(os.getloadavg()), "seconds": round(time.perf_counter() - t_start, 1),
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "budget": {"steps": args.steps, "ft_steps": args.ft_steps, "uap_steps": args.uap_steps,
                            "queries": args.queries, "note": "owner 600 steps (bench_sr.py: 1500)"},
                 "metrics": "PSNR-Y (BT.601), 2-pixel border, 8-bit rounding, mean over images"},
        "source": source.summary(), "other_photos": list(other.photos), "models": info,
        "uap": uap, "fingerprint": {"calibration_negatives": cal_names, "heldout_negatives": held_names,
                                    "positives": list(positives), "references": ["ref-espcn-s100", "ref-espcn-s101"],
                                    "variants": fps},
    }
    atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    log(f"wrote {args.out} in {result['meta']['seconds']:.0f} s")
    print("\n| UAP target (test photos, eps 8/255) | clean PSNR-Y | UAP drop dB | noise drop dB | checkerboard drop dB "
          "| UAP PSNR vs clean |")
    print("|---|---|---|---|---|---|")
    for k, r in uap_test.items():
        cb = r.get("checkerboard", {}).get("drop_db")
        print(f"| {k} | {r['clean_psnr_hr']:.2f} | {r['uap']['drop_db']:.2f} | {r['noise']['drop_db']:.2f} | "
              f"{'-' if cb is None else f'{cb:.2f}'} | {r['uap']['psnr_vs_clean']:.2f} |")
    print("\n| fingerprint variant | score | AUC | TPR@1%FPR | held-out FP | TPR at threshold |")
    print("|---|---|---|---|---|---|")
    for k, r in fps.items():
        for kind in ("residual_corr", "psnr"):
            print(f"| {k} | {kind} | {r[kind]['auc']:.3f} | {r[kind]['tpr_at_1pct_fpr']:.2f} | "
                  f"{r[kind]['heldout_false_positives']}/{r[kind]['heldout_negatives']} | "
                  f"{r[kind]['tpr_at_threshold']:.2f} |")


if __name__ == "__main__":
    main()
