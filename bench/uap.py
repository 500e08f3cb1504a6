"""UAP benchmark: shipped meta-learned attackers on held-out dataset families, against validation-tuned baselines.

    python bench/uap.py --held-out digits16,fashion-mnist --victims vgg16,resnet18 --trials 3 --threads 1

Protocol (everything measured in this run, on this machine):

1. Attackers: the shipped ``uap-meta`` / ``uap-maml`` / ``uap-l2o`` states
   (``attacks/shipped``) whose meta-training never saw the held-out
   source's dataset family; their meta-training cost is read from their
   provenance.  VGG16 is never a meta-training architecture, so a VGG16
   victim is a held-out architecture too.
2. Victims: each of ``--victims`` trained (or loaded from the model cache)
   on the held-out source at ``--width`` / ``--epochs``; test accuracy
   recorded.  Fashion-MNIST is cut to ``--limit`` images per split.
3. Budget: the held-out source's standard Linf budget.
4. Tuning on validation: ``uap-pgd``'s step size (few-shot and full budget)
   and ``uap-zo``'s step size are chosen on the source's *val* split from
   craft images drawn from train (seeds other than the trials'); the tuner
   never receives test images.
5. Few-shot: per trial, the same ``--few-shot`` train images and
   ``--steps`` steps for every method; fooling rate on the test split.  The
   meta init alone (no step) and noise baselines are reported beside.
6. Cost: full-budget ``uap-pgd`` (validation-tuned step, ``--pgd-steps``
   steps of 32 images over ``--craft`` train images) gives the reference
   fooling rate F; gradient queries each method needs to reach 0.8 F.
7. Black box: the victim compiled with TVM (template kernels, batch 32);
   ``uap-zo`` (validation-tuned step) and ``uap-meta-zo`` with the same
   estimator and ``--zo-queries`` query budget, crafted on the deployment's
   logits only; fooling rate against queries.

Writes ``bench/results/uap.json`` and ``bench/results/uap_fewshot.png`` /
``bench/results/uap_zo.png``; ``--render-only`` prints the tables from the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from attacks.meta import start_point  # noqa: E402
from attacks.metrics import evaluate_perturbation  # noqa: E402
from attacks.shipped import pick_shipped  # noqa: E402
from attacks.stage import cost_to  # noqa: E402
from attacks.tuning import tune_on_validation  # noqa: E402
from attacks.victim import labels_of  # noqa: E402
from suite.core import registries as reg  # noqa: E402
from suite.core.config import TrainRecipe  # noqa: E402
from suite.core.models import ModelSpec, SourceSpec, get_trained_model, load_source  # noqa: E402
from suite.core.runtime import Runtime  # noqa: E402
from suite.core.threat import threat_model_for  # noqa: E402

META = ("uap-meta", "uap-maml", "uap-l2o")
PGD_GRID = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
ZO_GRID = (0.1, 0.25, 0.5, 1.0)
OUT = ROOT / "bench" / "results" / "uap.json"


def log(msg: str) -> None:
    print(f"[bench] {time.strftime('%H:%M:%S')} {msg}", flush=True)


def draw(n_pool: int, k: int, seed: int) -> torch.Tensor:
    return torch.randperm(n_pool, generator=torch.Generator().manual_seed(seed))[:k]


def fooling(model, v, xe, ye, clean) -> float:
    return evaluate_perturbation(model, v, xe, ye, norm="linf", clean_labels=clean)["fooling_rate"]


def mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def few_shot(model, states, eps, xc, xe, ye, clean, args, pgd_step) -> dict:
    runs: dict[str, list] = {}
    for trial in range(args.trials):
        x_few = xc[draw(len(xc), args.few_shot, 100 + trial)]
        attacks = {name: reg.attacks.build(name, meta=states[name], eps=eps, seed=trial, steps=args.steps,
                                           batch_size=args.few_shot, track_every=1) for name in META}
        attacks["uap-pgd (val-tuned)"] = reg.attacks.build(
            "uap-pgd", eps=eps, seed=trial, steps=args.steps, step_size=pgd_step, batch_size=args.few_shot,
            track_every=1)
        attacks["uap-pgd (default step)"] = reg.attacks.build(
            "uap-pgd", eps=eps, seed=trial, steps=args.steps, batch_size=args.few_shot, track_every=1)
        for name, attack in attacks.items():
            res = attack.craft(model, x_few, track=(xe, clean))
            runs.setdefault(name, []).append({"fr": fooling(model, res.perturbation, xe, ye, clean),
                                              "curve": [h["fooling_rate"] for h in res.history],
                                              "grad_queries": [h["grad_queries"] for h in res.history],
                                              "seconds": res.seconds})
        with torch.no_grad():
            v0 = start_point(states["uap-meta"], tuple(xe.shape[1:]), "linf", eps,
                             torch.Generator().manual_seed(trial))
        runs.setdefault("meta init (0 steps)", []).append({"fr": fooling(model, v0, xe, ye, clean)})
        for name in ("noise-uniform", "noise-checkerboard"):
            v = reg.attacks.build(name, eps=eps, seed=trial).craft(model, x_few).perturbation
            runs.setdefault(name, []).append({"fr": fooling(model, v, xe, ye, clean)})
    out = {}
    for name, rs in runs.items():
        frs = [r["fr"] for r in rs]
        row = {"fr": statistics.fmean(frs), "fr_std": statistics.pstdev(frs), "trials": frs}
        if "curve" in rs[0]:
            n = min(len(r["curve"]) for r in rs)
            row["curve"] = [statistics.fmean(r["curve"][i] for r in rs) for i in range(n)]
            row["grad_queries"] = rs[0]["grad_queries"][:n]
            row["seconds"] = statistics.fmean(r["seconds"] for r in rs)
        out[name] = row
    return out


def zo_runs(predictor, states, eps, xc, xe, clean, args, zo_step) -> dict:
    out: dict[str, list] = {}
    x_pool = xc[:args.craft]
    for trial in range(args.trials):
        attacks = {"uap-zo": reg.attacks.build("uap-zo", eps=eps, seed=trial, queries=args.zo_queries,
                                               step_size=zo_step, track_every=2),
                   "uap-meta-zo": reg.attacks.build("uap-meta-zo", meta=states["uap-meta"], eps=eps, seed=trial,
                                                    queries=args.zo_queries, track_every=2)}
        for name, attack in attacks.items():
            res = attack.craft(predictor, x_pool, track=(xe, clean))
            out.setdefault(name, []).append({"curve": [[h["queries"], h["fooling_rate"]] for h in res.history],
                                             "fr": res.history[-1]["fooling_rate"], "queries": res.queries,
                                             "seconds": res.seconds})
    return out


def queries_to(curve: list[list[float]], level: float) -> float | None:
    for q, fr in curve:
        if fr >= level:
            return q
    return None


def run_source(held: str, args, rt: Runtime, results: dict) -> None:
    from compression.tvm_backend.backend import TVMBackend

    states, shipped_info = {}, {}
    for name in META:
        found = pick_shipped(name.split("-")[1], "linf", held, "vgg16")
        if found is None:
            raise SystemExit(f"no shipped {name} attacker holds out {held}; run the meta-train commands in README")
        states[name] = found.load()
        info = states[name].info
        shipped_info[name] = {"name": found.name, "sha256": found.sha256, "families": sorted(found.families),
                              "archs": sorted(found.archs), "seconds": info.get("seconds"),
                              "meta_steps": info["config"]["meta_steps"],
                              "tasks_per_step": info["config"].get("tasks_per_step"),
                              "tasks": len(info["tasks"])}
    limit = args.limit if held.startswith("fashion") else None
    source = load_source(SourceSpec(held, None, limit))
    eps = threat_model_for(source).budget("linf")
    xc, _ = source.train.tensors()
    xv, _ = source.val.tensors()
    xe, ye = source.test.tensors()
    xv, xe, ye = xv[:args.val_images], xe[:args.eval_images], ye[:args.eval_images]
    entry: dict = {"eps": eps, "limit": limit, "shipped": shipped_info, "train_images": len(xc),
                   "val_images": len(xv), "test_images": len(xe), "victims": {}}
    log(f"{held}: Linf {eps:.4f}, shipped {[s['name'] for s in shipped_info.values()]}")
    for arch in args.victims.split(","):
        spec = ModelSpec(arch, args.width, 0, TrainRecipe(epochs=args.epochs))
        trained = get_trained_model(spec, source, rt, log=log)
        model = trained.model
        clean = labels_of(model, xe)
        acc = float((clean == ye).float().mean())
        v_out: dict = {"id": trained.info["id"], "test_acc": acc, "held_out_arch": arch not in
                       shipped_info["uap-meta"]["archs"]}
        log(f"{held}/{arch}: test accuracy {acc:.3f}")
        # --- validation tuning (craft draws with seeds 900+, never the trials' draws; val images only)
        tune_craft = [xc[draw(len(xc), args.few_shot, 900 + s)] for s in range(2)]
        t0 = time.perf_counter()
        tuned_fs = tune_on_validation(
            lambda **s: reg.attacks.build("uap-pgd", eps=eps, steps=args.steps, batch_size=args.few_shot, **s),
            model, tune_craft[0], xv, {"step_size": PGD_GRID}, seeds=(900,))
        v_out["pgd_few_shot_tuning"] = {"best": tuned_fs.best, "trials": tuned_fs.trials,
                                        "seconds": round(time.perf_counter() - t0, 1)}
        log(f"  uap-pgd few-shot step (val-tuned): {tuned_fs.best}")
        v_out["few_shot"] = few_shot(model, states, eps, xc, xe, ye, clean, args, tuned_fs.best["step_size"])
        log("  few-shot: " + ", ".join(f"{n}={r['fr']:.3f}" for n, r in v_out["few_shot"].items()))
        # --- full-budget uap-pgd (val-tuned step) and cost to 0.8 of its fooling rate
        x_full = xc[draw(len(xc), args.craft, 7)]
        tuned_full = tune_on_validation(
            lambda **s: reg.attacks.build("uap-pgd", eps=eps, steps=args.pgd_steps // 4, **s),
            model, x_full, xv, {"step_size": (0.05, 0.1, 0.25, 0.5)}, seeds=(901,))
        full = reg.attacks.build("uap-pgd", eps=eps, steps=args.pgd_steps, step_size=tuned_full.best["step_size"],
                                 track_every=5, seed=0).craft(model, x_full, track=(xe, clean))
        f_full = fooling(model, full.perturbation, xe, ye, clean)
        level = 0.8 * f_full
        cost = {"uap-pgd (full, val-tuned)": {"fr": f_full, "grad_queries": full.grad_queries,
                                              "to_level": cost_to(full.history, level)[0],
                                              "step_size": tuned_full.best["step_size"]}}
        for name, row in v_out["few_shot"].items():
            if "curve" in row:
                hit = next((q for q, fr in zip(row["grad_queries"], row["curve"]) if fr >= level), None)
                cost[name] = {"fr": row["fr"], "grad_queries": row["grad_queries"][-1], "to_level": hit}
        v_out["cost"] = {"level": level, "methods": cost}
        log(f"  full uap-pgd {f_full:.3f} ({full.grad_queries} grad queries); to 0.8x: "
            + ", ".join(f"{n}={c['to_level']}" for n, c in cost.items()))
        # --- black box on the TVM deployment
        if arch in args.zo_victims.split(","):
            backend = TVMBackend(batch_sizes=[32], tune=False, measure_dense=False, threads=args.threads,
                                 cache_dir=rt.cache_dir)
            dep = backend.deploy(model, source.shape, source.num_classes,
                                 workdir=str(Path(args.workdir) / f"{held}-{arch}"))
            pred = dep.predictor
            assert pred.differentiable is False
            xz, zc = xe[:args.zo_eval], labels_of(pred, xe[:args.zo_eval])
            tuned_zo = tune_on_validation(
                lambda **s: reg.attacks.build("uap-zo", eps=eps, queries=args.zo_queries // 2, **s),
                pred, xc[draw(len(xc), args.craft, 902)], xv[:args.zo_eval], {"step_size": ZO_GRID},
                seeds=(902,))
            runs = zo_runs(pred, states, eps, xc[draw(len(xc), args.craft, 8)], xz, zc, args,
                           tuned_zo.best["step_size"])
            noise = {n: mean([fooling(pred, reg.attacks.build(n, eps=eps, seed=t).craft(pred, xz[:8]).perturbation,
                                      xz, ye[:args.zo_eval], zc) for t in range(args.trials)])
                     for n in ("noise-uniform", "noise-checkerboard")}
            zo_final = mean([r["fr"] for r in runs["uap-zo"]])
            summary = {}
            for name, rs in runs.items():
                summary[name] = {"fr": mean([r["fr"] for r in rs]), "queries": mean([r["queries"] for r in rs]),
                                 "seconds": mean([r["seconds"] for r in rs]),
                                 "to_zo_final": mean([queries_to(r["curve"], zo_final) for r in rs]),
                                 "reached_zo_final": sum(queries_to(r["curve"], zo_final) is not None for r in rs),
                                 "to_fr": {str(lv): [queries_to(r["curve"], lv) for r in rs]
                                           for lv in (0.2, 0.3, 0.5)},
                                 "curves": [r["curve"] for r in rs]}
            v_out["black_box"] = {"backend": "tvm", "zo_step": tuned_zo.best, "zo_tuning": tuned_zo.trials,
                                  "query_budget": args.zo_queries, "eval_images": len(xz), "noise": noise,
                                  "methods": summary}
            log(f"  black box: " + ", ".join(f"{n} fr={s['fr']:.3f} to_zo_final={s['to_zo_final']}"
                                              for n, s in summary.items()) + f"; noise {noise}")
            close = getattr(pred, "close", None)
            if close:
                close()
        entry["victims"][arch] = v_out
        results["sources"][held] = entry
        OUT.write_text(json.dumps(results, indent=1))


def render(results: dict) -> str:
    commands = results.get("commands") or [results["command"]]
    lines = ["Commands: " + "; ".join(f"`{c}`" for c in commands), ""]
    for held, e in results["sources"].items():
        lines += [f"#### Held out: {held} (Linf {e['eps']:.4g}; few-shot {results['few_shot']} images, "
                  f"{results['steps']} steps, {results['trials']} trials; test images {e['test_images']})", ""]
        ship = e["shipped"]
        lines += ["Shipped attackers: " + "; ".join(
            f"{n} = `{s['name']}` ({', '.join(s['families'])} family, {s['tasks']} tasks, "
            f"archs {', '.join(s['archs'])})" for n, s in ship.items()), ""]
        for arch, v in e["victims"].items():
            fs = v["few_shot"]
            pgd = fs["uap-pgd (val-tuned)"]["fr"]
            best_abl = max(fs["uap-maml"]["fr"], fs["uap-l2o"]["fr"])
            lines += [f"Victim {arch} (test accuracy {v['test_acc']:.3f}; held-out architecture: "
                      f"{'yes' if v['held_out_arch'] else 'no'}); uap-pgd few-shot step chosen on val: "
                      f"{v['pgd_few_shot_tuning']['best']['step_size']}", "",
                      "| method | fooling rate (mean ± sd) | ratio to val-tuned uap-pgd |", "|---|---|---|"]
            for name, row in fs.items():
                lines.append(f"| {name} | {row['fr']:.3f} ± {row['fr_std']:.3f} | {row['fr'] / pgd:.2f}x |"
                             if pgd else f"| {name} | {row['fr']:.3f} | - |")
            lines += ["", f"uap-meta vs best ablation: {fs['uap-meta']['fr']:.3f} vs {best_abl:.3f}.", ""]
            c = v["cost"]
            lines += [f"Cost to 0.8 x full-budget uap-pgd (level {c['level']:.3f}):", "",
                      "| method | fooling rate | gradient queries spent | gradient queries to the level |",
                      "|---|---|---|---|"]
            for name, row in c["methods"].items():
                lines.append(f"| {name} | {row['fr']:.3f} | {row['grad_queries']} | "
                             f"{row['to_level'] if row['to_level'] is not None else 'not reached'} |")
            lines.append("")
            if "black_box" in v:
                bb = v["black_box"]
                lines += [f"Black box on the TVM deployment ({bb['query_budget']} queries, uap-zo step chosen "
                          f"on val: {bb['zo_step']['step_size']}; noise: "
                          + ", ".join(f"{k} {x:.3f}" for k, x in bb["noise"].items()) + "):", "",
                          "| method | fooling rate | queries | queries to uap-zo's final rate | runs reaching it |",
                          "|---|---|---|---|---|"]
                for name, row in bb["methods"].items():
                    to = row["to_zo_final"]
                    lines.append(f"| {name} | {row['fr']:.3f} | {row['queries']:.0f} | "
                                 f"{f'{to:.0f}' if to is not None else 'not reached'} | "
                                 f"{row['reached_zo_final']}/{results['trials']} |")
                lines.append("")
    lines += ["Meta-training cost (from the shipped states' provenance):", "",
              "| held out | variant | tasks | meta-steps x tasks/step | seconds | s per task-episode |",
              "|---|---|---|---|---|---|"]
    for held, e in results["sources"].items():
        for name, s in e["shipped"].items():
            episodes = s["meta_steps"] * (s["tasks_per_step"] or 1)
            lines.append(f"| {held} | {name} | {s['tasks']} | {s['meta_steps']} x {s['tasks_per_step']} | "
                         f"{s['seconds']:.0f} | {s['seconds'] / episodes:.2f} |")
    return "\n".join(lines)


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [(h, a, v) for h, e in results["sources"].items() for a, v in e["victims"].items()]
    fig, axes = plt.subplots(1, len(cells), figsize=(4 * len(cells), 3.2), squeeze=False)
    for ax, (held, arch, v) in zip(axes[0], cells):
        for name, row in v["few_shot"].items():
            if "curve" in row:
                ax.plot(range(len(row["curve"])), row["curve"], label=name)
            else:
                ax.axhline(row["fr"], ls="--", lw=0.8, label=name)
        ax.set_title(f"{held} / {arch}", fontsize=9)
        ax.set_xlabel("adaptation step")
        ax.set_ylabel("test fooling rate")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(OUT.parent / "uap_fewshot.png", dpi=110)
    cells = [(h, a, v) for h, a, v in cells if "black_box" in v]
    if cells:
        fig, axes = plt.subplots(1, len(cells), figsize=(4 * len(cells), 3.2), squeeze=False)
        for ax, (held, arch, v) in zip(axes[0], cells):
            for name, row in v["black_box"]["methods"].items():
                for i, curve in enumerate(row["curves"]):
                    ax.plot([q for q, _ in curve], [f for _, f in curve], lw=0.8,
                            color="C0" if name == "uap-zo" else "C1", label=name if i == 0 else None)
            for k, (n, fr) in enumerate(v["black_box"]["noise"].items()):
                ax.axhline(fr, ls="--", lw=0.8, color=f"C{k + 2}", label=n)
            ax.set_title(f"TVM {held} / {arch}", fontsize=9)
            ax.set_xlabel("queries")
            ax.set_ylabel("test fooling rate")
        axes[0][0].legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(OUT.parent / "uap_zo.png", dpi=110)


def main() -> None:
    global OUT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--held-out", default="digits16,fashion-mnist")
    ap.add_argument("--victims", default="vgg16,resnet18")
    ap.add_argument("--zo-victims", default="vgg16", help="victims also attacked as TVM deployments")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--limit", type=int, default=2000, help="images per split of Fashion-MNIST sources")
    ap.add_argument("--few-shot", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--craft", type=int, default=2000, help="train images of the full-budget and ZO runs")
    ap.add_argument("--pgd-steps", type=int, default=200)
    ap.add_argument("--val-images", type=int, default=1000)
    ap.add_argument("--eval-images", type=int, default=2000)
    ap.add_argument("--zo-queries", type=int, default=20000)
    ap.add_argument("--zo-eval", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default="/tmp/bench-uap")
    ap.add_argument("--out", default=str(OUT), help="results JSON (default bench/results/uap.json)")
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other held-out sources already in the JSON (run one source per invocation)")
    args = ap.parse_args()
    OUT = Path(args.out)
    if args.render_only:
        results = json.loads(OUT.read_text())
        print(render(results))
        plot(results)
        return
    torch.set_num_threads(args.threads)
    rt = Runtime(cache_dir=os.environ.get("SUITE_CACHE") or str(Path.home() / ".cache" / "suite"),
                 threads=args.threads, quiet=True)
    results = {"command": "python bench/uap.py " + " ".join(sys.argv[1:]), "few_shot": args.few_shot,
               "steps": args.steps, "trials": args.trials, "width": args.width, "epochs": args.epochs,
               "torch_threads": args.threads, "sources": {}}
    if args.merge and OUT.is_file():
        old = json.loads(OUT.read_text())
        same = all(old.get(k) == results[k] for k in ("few_shot", "steps", "trials", "width", "epochs"))
        if same:
            results["sources"] = old.get("sources", {})
            results["commands"] = [*old.get("commands", [old.get("command")]), results["command"]]
    started = time.perf_counter()
    for held in args.held_out.split(","):
        run_source(reg.sources.canonical(held), args, rt, results)
    results["seconds"] = round(time.perf_counter() - started, 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1))
    print(render(results))
    plot(results)


if __name__ == "__main__":
    main()
