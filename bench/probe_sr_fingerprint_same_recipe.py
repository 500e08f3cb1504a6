"""Probe: can an SR output fingerprint tell a pruned copy from independent models of the same recipe?

    OMP_NUM_THREADS=1 python bench/probe_sr_fingerprint_same_recipe.py

The owner is the default-profile ESPCN of ``suite run --task sr`` (x2, 1,500 steps, seed 0), the copy is that
run's block-0.75 compression (masked fine-tuning; and the same at 0.5), the negatives and references are the same recipe with seeds
1-4 and 1000-1001 (all from / into the SR model cache).  Prints the copy's score beside the negatives' for
every query mode x score x reference count.  Results: bench/RESULTS.md ("Super-resolution", fingerprints).
"""
import dataclasses, itertools, time
import torch
from suite.core.config import RunConfig
from suite.app.sr_pipeline import SR_PROFILES, get_dense_sr, load_sr_source, compress_sr, FRAME_720P
from suite.core.sr.photos import crop_side, lr_crops
from suite.core.sr.predictor import ModuleSRPredictor
from fingerprints.sr import SRFingerprinter, SRFingerprintSettings, score_suspect
torch.set_num_threads(1)
cfg = RunConfig(task="sr", source="photos", model="espcn", compress="block", sparsity=0.75, backend="torch", threads=1,
                attacks=(), fingerprints=()).resolved()
prof = SR_PROFILES["default"]
src = load_sr_source(cfg, prof)
owner, _ = get_dense_sr(cfg, src, prof)
neg = [get_dense_sr(dataclasses.replace(cfg, seed=s), src, prof)[0] for s in (1, 2, 3, 4)]
refs = [get_dense_sr(dataclasses.replace(cfg, seed=s), src, prof)[0] for s in (1000, 1001)]
t=time.time(); comp, info = compress_sr(cfg, owner, src, prof, FRAME_720P[2]); print("compress", time.time()-t)
size = crop_side(src.val, 2, None); q = lr_crops(src.val, 2, size, 32, seed=0)
P = lambda m: ModuleSRPredictor(m, 2)
comp50, _ = compress_sr(dataclasses.replace(cfg, sparsity=0.5), owner, src, prof, FRAME_720P[2])
for mode, score, nref in itertools.product(("crops", "optimised", "noise"), ("psnr", "residual_corr"), (0, 2)):
    st = SRFingerprintSettings(mode=mode, score=score).validate()
    fp = SRFingerprinter(st).generate(owner, q, 2, references=refs[:nref])
    pos = [round(score_suspect(fp, P(c)), 3) for c in (comp50, comp)]
    ng = [round(score_suspect(fp, P(n)), 3) for n in neg]
    print(f"{mode:9s} {score:13s} refs={nref}: pruned 0.5 / 0.75 {pos} negatives {ng}", flush=True)
