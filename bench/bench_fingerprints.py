"""Fingerprint benchmark: every method against the owner's suspect zoo (copies, thief families, hard negatives), plus audits.

    python bench/bench_fingerprints.py --models vgg16,resnet20 [--source digits16] [--negatives 20] [--threads 1]

(Not ``bench/fingerprints.py``: run as a script, that name would shadow the
``fingerprints`` package.)  For each owner (the ``--profile``'s dense model, ``full`` by default
on ``--source``, trained or loaded through the suite's model cache;
``--width`` / ``--epochs`` give a cheaper owner):

1. builds (or loads) its suspect zoo: pruned copies of every scheme at 0.3-0.9
   sparsity with and without fine-tuning, fine-tuned copies, TVM / ONNX
   deployments, the thief families (int8 dynamic / static and fp16 ONNX,
   fine-pruned, torch-pruning channel-pruned + fine-tuned, extraction
   students on labels and on probabilities), the template negatives and the
   harder ones (foreign architectures, disjoint train halves,
   transfer-learned, same-recipe rivals that differ from the owner only in
   their seed); ``--zoo-args KEY=V,...`` overrides zoo settings (a
   cheaper profile);
2. generates every method (C, RC, LTRC, IPGuard, misclassified, SAC-w,
   SAC-m, UAP) from the owner, evaluates it on every zoo member through the
   predictor interface (label-only; the SAC-style methods also with
   probabilities, rows ``<method>@prob``), calibrates the threshold on half of
   the negatives (each origin split between the halves) and counts false
   positives on the other half; AUC and TPR
   at 1% FPR per positive family kind against all negatives, extraction
   students in their own columns;
3. runs ``python -m suite audit`` (a fresh process, fingerprints cached) on
   suspects built *outside* the suite's zoo code: the owner int8-quantized
   with onnxruntime.quantization (static QDQ and dynamic) and converted to
   fp16, channel-pruned with torch-pruning and fine-tuned, a hand-pruned copy
   (torch.nn.utils.prune, BN re-estimated), a fine-tuned copy, two
   independently trained models of the owner's architecture (6 epochs, and
   the owner's whole recipe) and one of a foreign architecture (plaincnn); and the owner compiled by the TVM
   backend (artifact directory).

Writes ``bench/results/fingerprints[-<source>].json`` and
``bench/results/fingerprints[-<source>]_roc.png`` and prints Markdown tables
for bench/RESULTS.md.
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

METHODS = ("c-examples", "rc-examples", "ltrc-examples", "ipguard", "misclassified", "sac-w", "sac-m", "uap")
PROB_METHODS = ("sac-w", "sac-m")  # also evaluated with probability access (SAC's own setting)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def owner_for(model: str, args):
    from suite.core.config import RunConfig
    from suite.app.pipeline import get_trained_model, load_source, setup_runtime

    from fingerprints.zoo import Owner

    extra = {}
    if args.width is not None:
        extra["width"] = args.width
    if args.epochs is not None:
        from suite.core.config import TrainRecipe

        extra["recipe"] = TrainRecipe(epochs=args.epochs)
    if args.limit is not None:
        extra["limit"] = args.limit
    cfg = RunConfig(model=model, source=args.source, profile=args.profile, cache_dir=args.cache_dir,
                    threads=args.threads, quiet=True, attacks=(), fingerprints=(), **extra).resolved()
    setup_runtime(cfg)
    source = load_source(cfg)
    start = time.perf_counter()
    trained = get_trained_model(cfg, source)
    log(f"owner {trained.info['id']} ({'cached' if trained.info['cache_hit'] else 'trained'} in "
        f"{time.perf_counter() - start:.0f} s)")
    owner = Owner(model=trained.model, arch=model, width=float(cfg.width), sha256=trained.info["sha256"],
                  model_id=trained.info["id"], source=source,
                  source_args={"name": cfg.source, "data_root": cfg.data_root, "limit": cfg.limit}, seed=cfg.seed,
                  profile=args.profile)
    return owner, cfg, trained


def external_suspects(owner, cfg, out: Path, threads: int) -> list[dict]:
    """Suspects made without the zoo code, each as the file a thief would ship (ONNX, or a state_dict)."""
    import logging

    import onnx
    import torch
    import torch.nn.utils.prune as tprune
    import torch_pruning as tp
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from compression.backends.onnx_backend import export_onnx
    from fingerprints.bn import recalibrate_bn
    from suite.core import registries as reg
    from suite.core.config import TrainRecipe
    from suite.core.training import accuracy, train_model

    logging.getLogger().setLevel(logging.ERROR)
    out.mkdir(parents=True, exist_ok=True)
    shape = owner.source.shape
    suspects = []

    def add(tag: str, path: Path, truth: str, acc: float, extra=()) -> None:
        suspects.append({"name": tag, "path": str(path), "extra": list(extra), "truth": truth,
                         "accuracy": round(acc, 4)})

    def onnx_acc(path: Path) -> float:
        from fingerprints.families import OnnxFilePredictor
        from suite.core.predictor import predict_labels

        x, y = owner.source.test.tensors()
        return float((predict_labels(OnnxFilePredictor(path, shape, owner.source.num_classes), x) == y).float().mean())

    fp32 = out / "owner.onnx"
    export_onnx(owner.model, shape, fp32)
    # int8 with onnxruntime.quantization: static (QDQ, per-channel, calibrated on 256 train images) and dynamic
    calib = owner.source.train.tensors()[0][:256].numpy()
    name = onnx.load(str(fp32)).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: calib[i:i + 32]} for i in range(0, len(calib), 32)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp32), str(out / "int8_static.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True)
    add("owner int8 static (ORT QDQ) .onnx", out / "int8_static.onnx", "derived", onnx_acc(out / "int8_static.onnx"))
    quantize_dynamic(str(fp32), str(out / "int8_dynamic.onnx"), weight_type=QuantType.QInt8)
    add("owner int8 dynamic (ORT) .onnx", out / "int8_dynamic.onnx", "derived", onnx_acc(out / "int8_dynamic.onnx"))
    onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=False), str(out / "fp16.onnx"))
    add("owner fp16 .onnx", out / "fp16.onnx", "derived", onnx_acc(out / "fp16.onnx"))
    # channel pruning with torch-pruning (40% of the channels, L1 importance), 2 epochs of fine-tuning, int8 too
    cp = copy.deepcopy(owner.model).cpu().eval()
    tp.pruner.MagnitudePruner(cp, torch.rand(2, *shape), importance=tp.importance.MagnitudeImportance(p=1),
                              pruning_ratio=0.4, ignored_layers=[cp.classifier]).step()
    train_model(cp, owner.source.train, None, TrainRecipe(epochs=2, lr=0.01, warmup_epochs=0), seed=97, quiet=True)
    export_onnx(cp.eval(), shape, out / "tp_channel_ft.onnx")
    add("torch-pruning channels 0.4 + 2 ep fine-tuning .onnx", out / "tp_channel_ft.onnx", "derived",
        accuracy(cp, owner.source.test))
    # derived: global magnitude pruning of 60% of the conv/linear weights (torch.nn.utils.prune), BN re-estimated
    derived = copy.deepcopy(owner.model).cpu().eval()
    params = [(m, "weight") for m in derived.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=0.6)
    for m, pname in params:
        tprune.remove(m, pname)
    recalibrate_bn(derived, owner.source, 512, 123)
    torch.save(derived.state_dict(), out / "pruned60.pth")
    add("pruned60 (torch.nn.utils.prune) .pth", out / "pruned60.pth", "derived", accuracy(derived, owner.source.test),
        ["--arch", owner.arch])
    # derived: the owner fine-tuned on all layers for 2 epochs by a plain loop (another data order)
    finetuned = copy.deepcopy(owner.model).cpu()
    train_model(finetuned, owner.source.train, None, TrainRecipe(epochs=2, lr=0.01, warmup_epochs=0), seed=99,
                quiet=True)
    export_onnx(finetuned.eval(), shape, out / "finetuned.onnx")
    add("finetuned (all layers, 2 ep) .onnx", out / "finetuned.onnx", "derived", accuracy(finetuned, owner.source.test))
    # independent: the owner's architecture from scratch (another seed) on a short schedule and on the owner's
    # whole recipe (the nearest rival: the zoo's same-recipe negatives are the same kind), and a foreign one
    for tag, arch, width, seed, recipe in (
            ("independent", owner.arch, owner.width, 4242, TrainRecipe(epochs=6)),
            ("independent, owner's recipe", owner.arch, owner.width, 4444, cfg.recipe),
            ("independent foreign plaincnn", "plaincnn", 1.0, 4343, TrainRecipe(epochs=6))):
        torch.manual_seed(seed)
        model = reg.models.build(arch, num_classes=owner.source.num_classes, width=width, in_channels=shape[0])
        start = time.perf_counter()
        train_model(model, owner.source.train, None, recipe, seed=seed, quiet=True)
        model.eval()
        acc = accuracy(model, owner.source.test)
        log(f"external {tag} trained in {time.perf_counter() - start:.0f} s (acc {acc:.3f})")
        path = out / f"{''.join(c if c.isalnum() else '_' for c in tag)}.onnx"
        export_onnx(model, shape, path)
        add(f"{tag} .onnx", path, "independent", acc)
    return suspects


def run_audit(owner_entry: str, suspect: dict, args) -> dict:
    cmd = [sys.executable, "-m", "suite", "audit", "--owner", owner_entry, "--suspect", suspect["path"],
           *suspect["extra"], "--fingerprints", "ltrc-examples", "--cache-dir", args.cache_dir, "--json", "--quiet",
           "--threads", "2"]
    if args.negatives is not None:
        cmd += ["--negatives", str(args.negatives)]
    if args.limit is not None:
        cmd += ["--limit", str(args.limit)]
    if args.zoo_args:  # the audit must find the same (cheaper) zoo's evaluation in the cache
        cmd += ["--fingerprint-args", ",".join(f"zoo.{kv}" for kv in args.zoo_args.split(",") if kv)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    row = {"suspect": suspect["name"], "truth": suspect["truth"], "accuracy": suspect.get("accuracy"),
           "exit": proc.returncode, "wall_seconds": round(wall, 2)}
    if proc.returncode == 0:
        r = json.loads(proc.stdout)
        row.update({"verdict": r["verdict"], "matches": r["matches"], "queries": r["queries"],
                    "resembles": (r.get("resembles") or {}).get("kind"),
                    "resembles_member": (r.get("resembles") or {}).get("member"),
                    "precision": (r.get("suspect_details") or {}).get("precision"),
                    "threshold_matches": r["threshold_matches"], "p_value": r["p_value"],
                    "load_seconds": r["seconds"]["load_suspect"], "query_seconds": r["seconds"]["query"]})
    else:
        row["error"] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"
    log(f"audit {suspect['name']}: {row.get('verdict', row.get('error'))} in {wall:.1f} s")
    return row


def family_metrics(members: list[dict], threshold: float) -> dict:
    """Per positive family kind: AUC and TPR@1%FPR against all negatives, detected at the threshold, n, R."""
    from fingerprints.metrics import auc, tpr_at_fpr

    neg = [m["rate"] for m in members if m["role"] == "negative"]
    kinds: dict[str, list[float]] = {}
    for m in members:
        if m["role"] in ("positive", "extraction"):
            kinds.setdefault(m["family"].get("kind", "?") if m["role"] == "positive" else "extraction", []).append(m["rate"])
    return {k: {"n": len(v), "R": round(sum(v) / len(v), 4), "auc": round(auc(v, neg), 4),
                "tpr_at_1pct_fpr": round(tpr_at_fpr(v, neg, 0.01), 4),
                "detected_at_threshold": int(sum(r >= threshold for r in v))} for k, v in sorted(kinds.items())}


def bench_owner(model: str, args, methods: tuple[str, ...]) -> dict:
    import torch

    from fingerprints.bank import get_evaluation, get_fingerprints
    from fingerprints.options import build_method
    from fingerprints.summary import summarize
    from fingerprints.zoo import get_zoo, make_spec, owner_zoo_key
    from suite.core.config import parse_kv

    owner, cfg, trained = owner_for(model, args)
    zoo_args = {"jobs": args.jobs, **(parse_kv(args.zoo_args) if args.zoo_args else {})}
    spec = make_spec(args.profile, args.negatives, **zoo_args)
    start = time.perf_counter()
    zoo = get_zoo(owner, spec, cache_dir=args.cache_dir, recipe=cfg.recipe.as_dict(), threads=args.threads, log=log)
    zoo_seconds = time.perf_counter() - start
    comp = zoo.composition()
    key = owner_zoo_key(owner, spec)
    entries = []
    overrides: dict[str, dict] = {}
    for kv in (parse_kv(args.method_args) if args.method_args else {}).items():
        name, _, knob = kv[0].rpartition(".")
        overrides.setdefault(name, {})[knob] = kv[1]
    for name in methods:
        method = build_method(name, "default", overrides.get(name, {}))
        variant = "".join(f" {k}={v}" for k, v in sorted(overrides.get(name, {}).items()))
        fps, bank, hit = get_fingerprints(method, owner.model, owner.source, owner_sha256=owner.sha256,
                                          cache_dir=args.cache_dir, seed=cfg.seed, log=log)
        for access in ("label", "prob") if name in PROB_METHODS else ("label",):
            ev = get_evaluation(fps, bank, zoo, key, access=access, seed=cfg.seed, log=log, fresh=args.fresh_eval)
            entry = summarize(fps, ev, None, None)
            entry["id"] = (name if access == "label" else f"{name}@{access}") + variant
            entry["members"] = [{k: m[k] for k in ("id", "role", "rate", "accuracy")} for m in ev.members]
            entry["families"] = family_metrics(ev.members, ev.threshold)
            entry["calibration_negatives"] = ev.calibration
            entry["fingerprints_cache_hit"] = hit
            entries.append(entry)
            ext = entry.get("extraction") or {}
            log(f"{model} {entry['id']}: R={entry['R']:.3f} T={entry['T']:.3f} U={entry['U']:.3f} "
                f"auc={entry['auc']:.3f} tpr@1%={entry['tpr_at_1pct_fpr']:.3f} "
                f"fp={entry['false_positives']}/{entry['n_evaluation_negatives']} queries={entry['queries']} "
                f"gen={entry['generation_seconds']:.0f}s extraction auc={ext.get('auc')}")
    audits = []
    if not args.no_audit:
        suspects = external_suspects(owner, cfg, Path(args.work) / f"{args.source}-{model}", args.threads)
        tvm = next((m for m in zoo.positives() if m.id == "tvm:owner"), None)
        if tvm is not None:
            suspects.insert(0, {"name": "owner compiled by TVM (artifact dir)", "path": str(zoo.directory / tvm.artifact),
                                "extra": [], "truth": "derived", "accuracy": tvm.accuracy})
        for s in suspects:
            audits.append(run_audit(trained.info["cache_dir"], s, args))
    torch.set_num_threads(args.threads)
    return {"owner": trained.info["id"], "source": args.source, "zoo": comp,
            "zoo_seconds_this_call": round(zoo_seconds, 1), "zoo_spec": zoo.spec, "methods": entries,
            "audits": audits}


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


KIND_ORDER = ("pruned", "finetuned", "compiled", "quantized", "fine-pruned", "channel-pruned")


def markdown(results: list[dict]) -> str:
    lines = []
    for res in results:
        z = res["zoo"]
        lines.append(f"\nOwner `{res['owner']}` ({res['source']}); zoo: {z['positives']} positives "
                     f"({z['positive_kinds']}), {z.get('extraction', 0)} extraction students, {z['negatives']} "
                     f"negatives ({z.get('negative_origins')}), {len(z['excluded'])} positives excluded (accuracy < 0.5); "
                     f"zoo build {z['build_seconds'].get('total', 0):.0f} s ({ {k: round(v) for k, v in z['build_seconds'].items()} }).\n")
        kinds = [k for k in KIND_ORDER if any(k in e["families"] for e in res["methods"])]
        head = ["method", "AUC (all copies)", "TPR@1%FPR", "false pos. (held-out)", "queries", "threshold"]
        head += [f"{k} AUC / TPR" for k in kinds] + ["extraction AUC / TPR", "extraction detected",
                                                      "extraction R label / prob"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for e in res["methods"]:
            fam = e["families"]
            row = [e["id"], f"{e['auc']:.3f}", f"{e['tpr_at_1pct_fpr']:.3f}",
                   f"{e['false_positives']}/{e['n_evaluation_negatives']}", str(e["queries"]), f"{e['threshold']:.2f}"]
            row += [f"{fam[k]['auc']:.3f} / {fam[k]['tpr_at_1pct_fpr']:.2f} (n={fam[k]['n']})" if k in fam else ""
                    for k in kinds]
            ext = e.get("extraction")
            if ext:
                acc = ext["by_access"]
                row += [f"{ext['auc']:.3f} / {ext['tpr_at_1pct_fpr']:.2f}", f"{ext['detected']}/{ext['n']}",
                        f"{acc.get('label', float('nan')):.2f} / {acc.get('prob', float('nan')):.2f}"]
            else:
                row += ["", "", ""]
            lines.append("| " + " | ".join(row) + " |")
        origins = sorted({o for e in res["methods"] for o in e.get("T_by_origin", {})})
        if origins:
            lines.append("\nNegatives per origin: mean / highest rate (T).\n")
            lines.append("| method | R | T | U | " + " | ".join(origins) + " |")
            lines.append("|" + "---|" * (4 + len(origins)))
            for e in res["methods"]:
                lines.append(f"| {e['id']} | {e['R']:.3f} | {e['T']:.3f} | {e['U']:.3f} | " + " | ".join(
                    f"{e['T_by_origin'][o]:.2f} / {e['T_max_by_origin'][o]:.2f}" if o in e["T_by_origin"] else ""
                    for o in origins) + " |")
        if res["audits"]:
            lines.append("\n| suspect | truth | test acc | verdict | resembles | matches | threshold | p-value | "
                         "wall s (load + query) |")
            lines.append("|---|---|---|---|---|---|---|---|---|")
            for a in res["audits"]:
                if a["exit"] == 0:
                    lines.append(f"| {a['suspect']} | {a['truth']} | {a.get('accuracy')} | {a['verdict']} | "
                                 f"{a.get('resembles') or ''} | {a['matches']}/{a['queries']} | "
                                 f"{a['threshold_matches']} | {a['p_value']:.2g} | {a['wall_seconds']:.1f} "
                                 f"({a['load_seconds']:.1f} + {a['query_seconds']:.2f}) |")
                else:
                    lines.append(f"| {a['suspect']} | {a['truth']} | {a.get('accuracy')} | error: {a.get('error')} "
                                 f"| | | | | {a['wall_seconds']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    from suite.core.config import default_cache_dir

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="vgg16,resnet20")
    p.add_argument("--source", default="digits16")
    p.add_argument("--profile", default="full", choices=("default", "full"),
                   help="owner recipe and zoo: full (the benchmark's: width 1, the 32-negative zoo) or default "
                        "(the first run's)")
    p.add_argument("--width", type=float, default=None, help="owner width (default: the profile's)")
    p.add_argument("--epochs", type=int, default=None, help="owner epochs (default: the profile's recipe)")
    p.add_argument("--zoo-args", default="", help="zoo settings KEY=V,... (a cheaper profile)")
    p.add_argument("--limit", type=int, default=None, help="images per split of the source (a cheaper profile)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--method-args", default="",
                   help="method settings METHOD.KEY=V,... (rows named with them), e.g. ltrc-examples.k=6")
    p.add_argument("--negatives", type=int, default=None, help="default: the profile's")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--jobs", type=int, default=2, help="negatives trained in parallel (executor jobs)")
    p.add_argument("--cache-dir", default=default_cache_dir())
    p.add_argument("--work", default=None, help="where suspects are written (default: CACHE/bench_suspects)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--no-audit", action="store_true")
    p.add_argument("--fresh-eval", action="store_true", help="re-query the zoo even if an evaluation is cached")
    p.add_argument("--render", default=None, help="print the tables of a results JSON and exit")
    args = p.parse_args()
    if args.render:
        print(markdown(json.loads(Path(args.render).read_text())["results"]))
        return 0
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
        stem = "fingerprints" if args.source == "digits16" else f"fingerprints-{args.source}"
        (out / f"{stem}.json").write_text(json.dumps(payload, indent=1) + "\n")
        try:
            (out / f"{stem}.md").write_text(markdown(results) + "\n")
        except Exception as err:  # noqa: BLE001 - the JSON is written; --render redoes the tables
            log(f"markdown failed ({err!r}); rerun with --render {out / (stem + '.json')}")
        plot_roc(results, out / f"{stem}_roc.png")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
