"""Fingerprint benchmark: every generator against the default-profile suspect zoo, plus audits.

    python bench/bench_fingerprints.py --models vgg16,resnet18 [--negatives 20] [--threads 2]

(Not ``bench/fingerprints.py``: run as a script, that name would shadow the
``fingerprints`` package.)  For each owner (the default profile's dense model
on the default source, trained or loaded through the suite's model cache):

1. builds (or loads) its suspect zoo: pruned copies of every scheme at 0.3-0.9
   sparsity with and without fine-tuning, fine-tuned copies, TVM / ONNX
   deployments, and >= 20 independently trained models (executor jobs);
2. generates every registered fingerprint method (C, RC, LTRC, IPGuard,
   misclassified) from the owner, evaluates it on every zoo member through the
   predictor interface (label-only), calibrates the threshold on half of the
   negatives and counts false positives on the other half;
3. runs ``python -m suite audit`` (a fresh process, fingerprints cached) on
   suspects built *outside* the suite's zoo code: a hand-pruned copy (global
   magnitude pruning with torch.nn.utils.prune, BN re-estimated), a fine-tuned
   copy (all layers, 2 epochs, plain loop) and an independently trained model
   (same architecture, another seed, plain loop), each as a state_dict, an
   ``.onnx`` and a ``.pt2``; and the owner compiled by the TVM backend (artifact
   directory).

Writes ``bench/results/fingerprints.json`` and ``bench/results/fingerprints_roc.png``
and prints Markdown tables for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ("c-examples", "rc-examples", "ltrc-examples", "ipguard", "misclassified")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def owner_for(model: str, args):
    from suite.core.config import RunConfig
    from suite.app.pipeline import get_trained_model, load_source, setup_runtime

    from fingerprints.zoo import Owner

    cfg = RunConfig(model=model, profile="default", cache_dir=args.cache_dir, threads=args.threads, quiet=True,
                    attacks=(), fingerprints=()).resolved()
    setup_runtime(cfg)
    source = load_source(cfg)
    start = time.perf_counter()
    trained = get_trained_model(cfg, source)
    log(f"owner {trained.info['id']} ({'cached' if trained.info['cache_hit'] else 'trained'} in "
        f"{time.perf_counter() - start:.0f} s)")
    owner = Owner(model=trained.model, arch=model, width=float(cfg.width), sha256=trained.info["sha256"],
                  model_id=trained.info["id"], source=source,
                  source_args={"name": cfg.source, "data_root": None, "limit": None}, seed=cfg.seed,
                  profile="default")
    return owner, cfg, trained


def external_suspects(owner, cfg, out: Path, threads: int) -> list[dict]:
    """Suspects made without the zoo code: hand-pruned copy and an independent model, in three formats."""
    import torch
    import torch.nn.utils.prune as tprune

    from compression.backends.onnx_backend import export_onnx
    from fingerprints.bn import recalibrate_bn
    from suite.core import registries as reg
    from suite.core.config import TrainRecipe
    from suite.core.training import accuracy, train_model

    out.mkdir(parents=True, exist_ok=True)
    shape = owner.source.shape
    # derived: global magnitude pruning of 60% of the conv/linear weights (torch.nn.utils.prune), BN re-estimated
    derived = copy.deepcopy(owner.model).cpu().eval()
    params = [(m, "weight") for m in derived.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=0.6)
    for m, name in params:
        tprune.remove(m, name)
    recalibrate_bn(derived, owner.source, 512, 123)
    # derived: the owner fine-tuned on all layers for 2 epochs by a plain loop (another data order)
    finetuned = copy.deepcopy(owner.model).cpu()
    train_model(finetuned, owner.source.train, None, TrainRecipe(epochs=2, lr=0.01, warmup_epochs=0), seed=99,
                quiet=True)
    finetuned.eval()
    # independent: the same architecture trained from scratch with another seed by a plain loop
    torch.manual_seed(4242)
    independent = reg.models.build(owner.arch, num_classes=owner.source.num_classes, width=owner.width,
                                   in_channels=shape[0])
    start = time.perf_counter()
    train_model(independent, owner.source.train, None, TrainRecipe(epochs=6), seed=4242, quiet=True)
    independent.eval()
    log(f"external independent model trained in {time.perf_counter() - start:.0f} s "
        f"(acc {accuracy(independent, owner.source.test):.3f})")
    suspects = []
    for tag, model, truth in (("pruned60", derived, "derived"), ("finetuned", finetuned, "derived"),
                              ("independent", independent, "independent")):
        acc = accuracy(model, owner.source.test)
        sd = out / f"{tag}.pth"
        torch.save(model.state_dict(), sd)
        onnx_path = out / f"{tag}.onnx"
        export_onnx(model, shape, onnx_path)
        pt2 = out / f"{tag}.pt2"
        batch = torch.export.Dim("batch", min=1, max=1024)
        ep = torch.export.export(model, (torch.rand(2, *shape),), dynamic_shapes=({0: batch},))
        torch.export.save(ep, pt2)
        for fmt, path, extra in (("state_dict", sd, ["--arch", owner.arch]), ("onnx", onnx_path, []),
                                 ("pt2", pt2, [])):
            suspects.append({"name": f"{tag} ({fmt})", "path": str(path), "extra": extra, "truth": truth,
                             "accuracy": round(acc, 4)})
    return suspects


def run_audit(owner_entry: str, suspect: dict, args) -> dict:
    cmd = [sys.executable, "-m", "suite", "audit", "--owner", owner_entry, "--suspect", suspect["path"],
           *suspect["extra"], "--fingerprints", "ltrc-examples", "--cache-dir", args.cache_dir, "--json", "--quiet",
           "--threads", "2"]
    if args.negatives is not None:
        cmd += ["--negatives", str(args.negatives)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    row = {"suspect": suspect["name"], "truth": suspect["truth"], "accuracy": suspect.get("accuracy"),
           "exit": proc.returncode, "wall_seconds": round(wall, 2)}
    if proc.returncode == 0:
        r = json.loads(proc.stdout)
        row.update({"verdict": r["verdict"], "matches": r["matches"], "queries": r["queries"],
                    "threshold_matches": r["threshold_matches"], "p_value": r["p_value"],
                    "load_seconds": r["seconds"]["load_suspect"], "query_seconds": r["seconds"]["query"]})
    else:
        row["error"] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"
    log(f"audit {suspect['name']}: {row.get('verdict', row.get('error'))} in {wall:.1f} s")
    return row


def bench_owner(model: str, args, methods: tuple[str, ...]) -> dict:
    import torch

    from fingerprints.bank import get_evaluation, get_fingerprints
    from fingerprints.options import build_method
    from fingerprints.summary import summarize
    from fingerprints.zoo import get_zoo, make_spec, owner_zoo_key

    owner, cfg, trained = owner_for(model, args)
    zoo_args = {"jobs": args.jobs}
    spec = make_spec("default", args.negatives, **zoo_args)
    start = time.perf_counter()
    zoo = get_zoo(owner, spec, cache_dir=args.cache_dir, recipe=cfg.recipe.as_dict(), threads=args.threads, log=log)
    zoo_seconds = time.perf_counter() - start
    comp = zoo.composition()
    key = owner_zoo_key(owner, spec)
    entries = []
    for name in methods:
        method = build_method(name, "default", {})
        fps, bank, hit = get_fingerprints(method, owner.model, owner.source, owner_sha256=owner.sha256,
                                          cache_dir=args.cache_dir, seed=cfg.seed, log=log)
        ev = get_evaluation(fps, bank, zoo, key, seed=cfg.seed, log=log, fresh=args.fresh_eval)
        entry = summarize(fps, ev, None, None)
        entry["members"] = [{k: m[k] for k in ("id", "role", "rate", "accuracy")} for m in ev.members]
        entry["calibration_negatives"] = ev.calibration
        entry["fingerprints_cache_hit"] = hit
        entries.append(entry)
        log(f"{model} {name}: R={entry['R']:.3f} T={entry['T']:.3f} U={entry['U']:.3f} auc={entry['auc']:.3f} "
            f"tpr@1%={entry['tpr_at_1pct_fpr']:.3f} fp={entry['false_positives']}/{entry['n_evaluation_negatives']}"
            f" queries={entry['queries']} gen={entry['generation_seconds']:.0f}s")
    audits = []
    if not args.no_audit:
        suspects = external_suspects(owner, cfg, Path(args.work) / model, args.threads)
        tvm = next((m for m in zoo.positives() if m.id == "tvm:owner"), None)
        if tvm is not None:
            suspects.insert(0, {"name": "owner compiled by TVM (artifact dir)", "path": str(zoo.directory / tvm.artifact),
                                "extra": [], "truth": "derived", "accuracy": tvm.accuracy})
        for s in suspects:
            audits.append(run_audit(trained.info["cache_dir"], s, args))
    torch.set_num_threads(args.threads)
    return {"owner": trained.info["id"], "owner_acc_test": None, "zoo": comp, "zoo_seconds_this_call": round(zoo_seconds, 1),
            "methods": entries, "audits": audits}


def plot_roc(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 5), squeeze=False)
    for ax, res in zip(axes[0], results):
        for e in res["methods"]:
            ax.step(e["roc"]["fpr"], e["roc"]["tpr"], where="post",
                    label=f"{e['id']} (AUC {e['auc']:.3f}, U {e['U']:.2f})")
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
        ax.set_title(f"owner {res['owner']}\n{res['zoo']['positives']} positives, {res['zoo']['negatives']} negatives",
                     fontsize=9)
        ax.set_xlabel("false positive rate (independent models)")
        ax.set_ylabel("true positive rate (derived copies)")
        ax.legend(fontsize=7, loc="lower right")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(results: list[dict]) -> str:
    lines = []
    for res in results:
        lines.append(f"\nOwner `{res['owner']}`; zoo: {res['zoo']['positives']} positives "
                     f"({res['zoo']['positive_kinds']}), {res['zoo']['negatives']} negatives, "
                     f"{len(res['zoo']['excluded'])} positives excluded (accuracy < 0.5); zoo build "
                     f"{res['zoo']['build_seconds'].get('total', 0):.0f} s.\n")
        lines.append("| method | R | T | U | AUC | TPR@1%FPR | threshold | false pos. (held-out) | queries | "
                     "R min | T max | generation s |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for e in res["methods"]:
            lines.append(f"| {e['id']} | {e['R']:.3f} | {e['T']:.3f} | {e['U']:.3f} | {e['auc']:.3f} | "
                         f"{e['tpr_at_1pct_fpr']:.3f} | {e['threshold']:.2f} | {e['false_positives']}/"
                         f"{e['n_evaluation_negatives']} | {e['queries']} | {e['R_min']:.2f} | {e['T_max']:.2f} | "
                         f"{e['generation_seconds']:.0f} |")
        if res["audits"]:
            lines.append("\n| suspect | truth | verdict | matches | threshold | p-value | wall s (load + query) |")
            lines.append("|---|---|---|---|---|---|---|")
            for a in res["audits"]:
                if a["exit"] == 0:
                    lines.append(f"| {a['suspect']} | {a['truth']} | {a['verdict']} | {a['matches']}/{a['queries']} | "
                                 f"{a['threshold_matches']} | {a['p_value']:.2g} | {a['wall_seconds']:.1f} "
                                 f"({a['load_seconds']:.1f} + {a['query_seconds']:.2f}) |")
                else:
                    lines.append(f"| {a['suspect']} | {a['truth']} | error: {a.get('error')} | | | | "
                                 f"{a['wall_seconds']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    from suite.core.config import default_cache_dir

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="vgg16,resnet18")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--negatives", type=int, default=None, help="default: the profile's (20)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--jobs", type=int, default=2, help="negatives trained in parallel (executor jobs)")
    p.add_argument("--cache-dir", default=default_cache_dir())
    p.add_argument("--work", default=None, help="where suspects are written (default: CACHE/bench_suspects)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--no-audit", action="store_true")
    p.add_argument("--fresh-eval", action="store_true", help="re-query the zoo even if an evaluation is cached")
    args = p.parse_args()
    args.work = args.work or str(Path(args.cache_dir) / "bench_suspects")
    import torch

    torch.set_num_threads(args.threads)
    results = []
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for model in [m for m in args.models.split(",") if m]:
        results.append(bench_owner(model, args, tuple(m for m in args.methods.split(",") if m)))
        payload = {"command": " ".join(sys.argv), "seconds": round(time.perf_counter() - started, 1),
                   "results": results}
        (out / "fingerprints.json").write_text(json.dumps(payload, indent=1) + "\n")
        plot_roc(results, out / "fingerprints_roc.png")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
