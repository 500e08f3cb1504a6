"""UAP benchmark: meta-learned few-shot UAPs vs PGD / DeepFool / noise, costs, and transfer.

    python bench/uap.py [--models vgg16,resnet18] [--held-out digits16] [--budgets linf:64,linf:10,l2:4]

Protocol (everything measured in this run, on this machine):

1. Victims: each of ``--models`` trained (or loaded from the cache) on the
   held-out source, and each of ``--task-models`` on every other embedded
   source (the meta-training tasks), at ``--width`` / ``--epochs``.  The
   held-out source is never seen by meta-training.
2. Per budget: meta-train ``uap-meta``, ``uap-maml``, ``uap-l2o`` (cached).
3. Few-shot on the held-out source: for ``--trials`` seeds, the same
   ``--few-shot`` train images and ``--steps`` steps for every method;
   fooling rate on the held-out test split after every step (curves).
   ``uap-pgd`` runs at its default step size and at the best of a small grid
   (reported separately: the grid is chosen on the test images, i.e. an
   optimistic baseline).
4. Cost to fooling rate 0.5 / 0.8, all methods streaming mini-batches of
   32 over the whole train split: the meta variants and ``uap-pgd`` at step
   1.0 run ``--long-steps`` steps; ``uap-pgd`` at its defaults
   (``--pgd-steps``); gradient queries and seconds.
5. Full-budget baselines: ``uap-pgd`` on the whole train split and
   ``uap-deepfool`` on ``--deepfool-images`` of it; noise baselines; time per
   model.
6. Transfer: model x model and source x source (UAPs resized), and dense ->
   block-pruned -> compiled (TVM, ONNX Runtime) on the held-out source.

Writes ``bench/results/uap.json``, ``bench/results/uap_curves.png`` (few-shot
fooling rate vs steps) and ``bench/results/uap_cost.png`` (fooling rate vs
gradient queries).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from attacks.data import AttackData  # noqa: E402
from attacks.meta import MetaConfig, get_meta_state  # noqa: E402
from attacks.metrics import evaluate_perturbation  # noqa: E402
from attacks.norms import resize_perturbation  # noqa: E402
from attacks.tasks import build_tasks, embedded_sources  # noqa: E402
from attacks.victim import labels_of  # noqa: E402
from suite.core import registries as reg  # noqa: E402
from suite.core.config import TrainRecipe  # noqa: E402

META = ("uap-meta", "uap-maml", "uap-l2o")


def parse_budgets(text: str) -> list[tuple[str, float, str]]:
    out = []
    for item in text.split(","):
        norm, value = item.split(":")
        eps = float(value) / 255 if norm == "linf" else float(value)
        out.append((norm, eps, f"{norm}:{value}" + ("/255" if norm == "linf" else "")))
    return out


def log(msg: str) -> None:
    print(f"[bench] {time.strftime('%H:%M:%S')} {msg}", flush=True)


def fr_curve(attack, model, x_craft, xe, clean) -> tuple[list[dict], dict]:
    res = attack.craft(model, x_craft, track=(xe, clean))
    return res.history, {"grad_queries": res.grad_queries, "seconds": round(res.seconds, 3), "steps": res.steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vgg16,resnet18", help="victims on the held-out source")
    ap.add_argument("--task-models", default="resnet18", help="victims of the meta-training tasks")
    ap.add_argument("--held-out", default="digits16")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--budgets", default="linf:64,linf:10,l2:4")
    ap.add_argument("--few-shot", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--long-steps", type=int, default=20)
    ap.add_argument("--pgd-steps", type=int, default=200)
    ap.add_argument("--meta-steps", type=int, default=150)
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-transfer", action="store_true")
    ap.add_argument("--deepfool-images", type=int, default=512, help="craft images of the uap-deepfool baseline")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "uap.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cache_dir = os.environ.get("SUITE_CACHE") or str(Path.home() / ".cache" / "suite")
    models = args.models.split(",")
    task_models = args.task_models.split(",")
    held = reg.sources.canonical(args.held_out)
    train_sources = [s for s in embedded_sources() if s != held]
    started = time.perf_counter()
    results: dict = {"command": "python bench/uap.py " + " ".join(sys.argv[1:]), "held_out": held,
                     "train_sources": train_sources, "models": models, "task_models": task_models, "width": args.width, "epochs": args.epochs,
                     "few_shot": args.few_shot, "steps": args.steps, "trials": args.trials, "budgets": {}}

    from attacks import tasks as tasks_mod

    tasks_mod.TASK_PROFILES["default"] = {"width": args.width, "recipe": TrainRecipe(epochs=args.epochs),
                                          "limit": None}
    log("training / loading victims")
    meta_tasks = build_tasks(train_sources, task_models, cache_dir=cache_dir, threads=args.threads, log=log)
    victims = {t.name.split("/")[1].split("-")[0]: t for t in build_tasks([held], models, cache_dir=cache_dir,
                                                                            threads=args.threads, log=log)}
    sources = {name: reg.sources.get(name)(None) for name in embedded_sources()}
    data = AttackData.from_source(sources[held], eval_limit=args.eval_limit)
    xc, _ = data.craft_tensors()
    xe, ye = data.eval_tensors()
    results["victim_acc"] = {}
    for arch, task in victims.items():
        results["victim_acc"][arch] = float((labels_of(task.model, xe) == ye).float().mean())
    for t in meta_tasks:
        x_t, y_t = sources[t.source].test.tensors()
        results["victim_acc"][t.name] = float((labels_of(t.model, x_t) == y_t).float().mean())
    log(f"victim accuracy: {results['victim_acc']}")

    meta_eps: dict[str, float] = {}
    for norm, eps, label in parse_budgets(args.budgets):
        log(f"budget {label}")
        b: dict = {"norm": norm, "eps": eps, "meta": {}, "few_shot": {}, "cost": {}, "full": {}}
        states = {}
        # one meta-training per norm (at that norm's first budget): the learned
        # parts work in budget units, so other budgets of the norm reuse them
        train_eps = meta_eps.setdefault(norm, eps)
        b["meta_trained_at_eps"] = train_eps
        for name in META:
            cfg = MetaConfig(variant=name.split("-")[1], norm=norm, eps=train_eps, meta_steps=args.meta_steps,
                             inner_steps=args.steps)
            state, path, hit = get_meta_state(meta_tasks, cfg, cache_dir, progress=True, log=log)
            states[name] = state
            b["meta"][name] = {"dir": str(path), "cache_hit": hit, "seconds": state.info.get("seconds"),
                               "loss_first": state.info.get("meta_loss_first"),
                               "loss_last": state.info.get("meta_loss_last")}
            log(f"  {name}: {'cached' if hit else 'meta-trained'} ({state.info.get('seconds')} s)")
        for arch, task in victims.items():
            model = task.model
            clean = labels_of(model, xe)
            fs: dict = {}
            for trial in range(args.trials):
                pick = torch.randperm(len(xc), generator=torch.Generator().manual_seed(100 + trial))[:args.few_shot]
                x_few = xc[pick]
                methods = {name: reg.attacks.build(name, meta=states[name], norm=norm, eps=eps, seed=trial,
                                                   steps=args.steps) for name in META}
                for ss in (0.1, 0.25, 0.5, 1.0):
                    methods[f"uap-pgd@{ss}"] = reg.attacks.build("uap-pgd", norm=norm, eps=eps, seed=trial,
                                                                 steps=args.steps, step_size=ss, track_every=1,
                                                                 batch_size=args.few_shot)
                for name, attack in methods.items():
                    hist, cost = fr_curve(attack, model, x_few, xe, clean)
                    fs.setdefault(name, []).append({"curve": [h["fooling_rate"] for h in hist], **cost})
                for name in ("noise-uniform", "noise-checkerboard"):
                    v = reg.attacks.build(name, norm=norm, eps=eps, seed=trial).craft(model, x_few).perturbation
                    fr = evaluate_perturbation(model, v, xe, ye, norm=norm, clean_labels=clean)["fooling_rate"]
                    fs.setdefault(name, []).append({"curve": [fr] * (args.steps + 1)})
            summary = {}
            for name, runs in fs.items():
                curves = torch.tensor([r["curve"][:args.steps + 1] for r in runs])
                summary[name] = {"final_fr": float(curves[:, -1].mean()), "final_fr_std": float(curves[:, -1].std()),
                                 "curve": curves.mean(0).tolist()}
            pgd_names = [n for n in summary if n.startswith("uap-pgd@")]
            best = max(pgd_names, key=lambda n: summary[n]["final_fr"])
            summary["uap-pgd(default)"] = summary["uap-pgd@0.1"]
            summary["uap-pgd(best-step)"] = {**summary[best], "step_size": float(best.split("@")[1])}
            b["few_shot"][arch] = summary
            log(f"  few-shot {arch}: " + ", ".join(f"{n}={s['final_fr']:.3f}" for n, s in summary.items()))

            # cost to reach fooling rate 0.5 / 0.8 on the held-out images, every
            # method streaming mini-batches of 32 over the whole train split
            from attacks.stage import cost_to

            runs = {name: reg.attacks.build(name, meta=states[name], norm=norm, eps=eps, steps=args.long_steps)
                    for name in META}
            runs["uap-pgd@1.0"] = reg.attacks.build("uap-pgd", norm=norm, eps=eps, steps=args.long_steps,
                                                    step_size=1.0, track_every=1)
            runs["uap-pgd(default)"] = reg.attacks.build("uap-pgd", norm=norm, eps=eps, steps=args.pgd_steps,
                                                         track_every=2)
            cost = {}
            for name, attack in runs.items():
                hist, total = fr_curve(attack, model, xc, xe, clean)
                row = {"total": total, "max_fr": max(h["fooling_rate"] for h in hist),
                       "curve": [[h["grad_queries"], h["fooling_rate"]] for h in hist]}
                for level in (0.5, 0.8):
                    q, s = cost_to(hist, level)
                    row[f"grad_queries_to_fr{int(level * 100)}"] = q
                    row[f"seconds_to_fr{int(level * 100)}"] = s
                cost[name] = row
            b["cost"][arch] = cost
            log(f"  cost {arch}: " + json.dumps({n: {k: v for k, v in c.items() if k != "curve"}
                                                 for n, c in cost.items()}))

            # full-budget baselines
            full = {}
            for name, settings, n_img in (("uap-pgd", {}, len(xc)), ("uap-deepfool", {"passes": 2}, args.deepfool_images)):
                res = reg.attacks.build(name, norm=norm, eps=eps, **settings).craft(model, xc[:n_img])
                m = evaluate_perturbation(model, res.perturbation, xe, ye, norm=norm, clean_labels=clean)
                full[name] = {"fooling_rate": m["fooling_rate"], "asr": m["asr"], "seconds": round(res.seconds, 2),
                              "craft_images": min(n_img, len(xc)),
                              "grad_queries": res.grad_queries, "steps": res.steps, "converged": res.converged}
                if name == "uap-pgd":
                    b.setdefault("uaps", {})[arch] = res.perturbation
            for name in ("noise-uniform", "noise-checkerboard"):
                v = reg.attacks.build(name, norm=norm, eps=eps).craft(model, xc[:8]).perturbation
                full[name] = {"fooling_rate": evaluate_perturbation(model, v, xe, ye, norm=norm,
                                                                    clean_labels=clean)["fooling_rate"]}
            b["full"][arch] = full
            log(f"  full {arch}: " + ", ".join(f"{n}={r['fooling_rate']:.3f}" for n, r in full.items()))

        # model x model on the held-out source (full-budget uap-pgd)
        uaps = b.pop("uaps", {})
        b["transfer_models"] = {"rows": list(uaps), "cols": list(victims), "values": [
            [evaluate_perturbation(victims[c].model, uaps[r], xe, ye, norm=norm)["fooling_rate"] for c in victims]
            for r in uaps]}
        results["budgets"][label] = b
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))

    if not args.skip_transfer:
        results["transfer"] = transfer_section(args, victims, meta_tasks, sources, held, cache_dir)
    results["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).write_text(json.dumps(results, indent=1))
    plot(results, Path(args.out).with_name("uap_curves.png"))
    plot_cost(results, Path(args.out).with_name("uap_cost.png"))
    log(f"done in {results['seconds']} s -> {args.out}")


def transfer_section(args, victims, meta_tasks, sources, held, cache_dir) -> dict:
    """Source x source (resized UAPs) and dense -> pruned -> compiled, at the first budget."""
    norm, eps, label = parse_budgets(args.budgets)[0]
    task_arch = next((a for a in victims if any(t.name.split("/")[1].startswith(a + "-") for t in meta_tasks)),
                     list(victims)[0])
    per_source = {held: victims[task_arch].model}
    for t in meta_tasks:
        if t.name.split("/")[1].startswith(task_arch + "-"):
            per_source[t.source] = t.model
    arch = list(victims)[0]
    uaps = {}
    for src, model in per_source.items():
        xs, _ = sources[src].train.tensors()
        uaps[src] = reg.attacks.build("uap-pgd", norm=norm, eps=eps).craft(model, xs).perturbation
    src_matrix = []
    for row in per_source:
        vals = []
        for col, model in per_source.items():
            x_t, y_t = sources[col].test.tensors()
            v = resize_perturbation(uaps[row], tuple(x_t.shape[-2:]), norm, eps)
            vals.append(evaluate_perturbation(model, v, x_t, y_t, norm=norm)["fooling_rate"])
        src_matrix.append(vals)
    log(f"source x source: {src_matrix}")

    # dense -> block-pruned -> compiled
    source = sources[held]
    dense = victims[arch].model
    comp = reg.compressors.build("block", sparsity=0.75).compress(dense, source, seed=0, profile="default",
                                                                  quiet=True)
    pruned = comp.model.eval()
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="bench-uap-"))
    deployments = {}
    tvm = reg.backends.build("tvm", threads=args.threads, cache_dir=cache_dir, batch_sizes=[1, 64])
    deployments["tvm"] = tvm.deploy(pruned, source.shape, source.num_classes,
                                    workdir=str(workdir / "tvm")).predictor
    deployments["onnx"] = reg.backends.build("onnx", threads=args.threads).deploy(
        pruned, source.shape, source.num_classes, workdir=str(workdir / "onnx")).predictor
    data = AttackData.from_source(source)
    xc, _ = data.craft_tensors()
    xe, ye = data.eval_tensors()
    crafted = {"dense": dense, "pruned": pruned}
    targets = {"dense": dense, "pruned": pruned, **deployments}
    rows, values = [], []
    for name in ("uap-pgd", "uap-meta"):
        for c_name, c_model in crafted.items():
            if name == "uap-pgd":
                v = reg.attacks.build("uap-pgd", norm=norm, eps=eps).craft(c_model, xc).perturbation
            else:
                cfg = MetaConfig(variant="meta", norm=norm, eps=eps, meta_steps=args.meta_steps,
                                 inner_steps=args.steps)
                state, _, _ = get_meta_state(meta_tasks, cfg, cache_dir, progress=False)
                v = reg.attacks.build("uap-meta", meta=state, norm=norm, eps=eps, steps=args.steps).craft(
                    c_model, xc[:args.few_shot]).perturbation
            rows.append(f"{name}:{c_name}")
            values.append([evaluate_perturbation(t, v, xe, ye, norm=norm)["fooling_rate"] for t in targets.values()])
    for p in deployments.values():
        getattr(p, "close", lambda: None)()
    out = {"budget": label, "sources_arch": task_arch, "deploy_arch": arch,
           "sources": {"rows": list(per_source), "cols": list(per_source), "values": src_matrix},
           "deploy": {"rows": rows, "cols": list(targets), "values": values,
                      "pruned_sparsity": comp.info.get("sparsity"),
                      "pruned_acc": float((labels_of(pruned, xe) == ye).float().mean())}}
    log(f"dense->pruned->compiled: {out['deploy']}")
    return out


def _panels(results: dict, path: Path, xlabel: str, draw) -> None:
    """One panel per (budget, victim); ``draw(ax, budget_entry, arch, label)`` fills it; saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = list(results["budgets"])
    archs = results["models"]
    fig, axes = plt.subplots(len(budgets), len(archs), figsize=(5 * len(archs), 3.6 * len(budgets)), squeeze=False)
    for i, label in enumerate(budgets):
        for j, arch in enumerate(archs):
            ax = axes[i][j]
            draw(ax, results["budgets"][label], arch, label)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("held-out fooling rate")
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(results: dict, path: Path) -> None:
    """Few-shot fooling rate vs adaptation steps."""
    def draw(ax, b, arch, label):
        summary = b["few_shot"].get(arch, {})
        for name in ("uap-meta", "uap-maml", "uap-l2o", "uap-pgd(default)", "uap-pgd(best-step)",
                     "noise-uniform", "noise-checkerboard"):
            if name in summary:
                ax.plot(range(len(summary[name]["curve"])), summary[name]["curve"], label=name,
                        linestyle="--" if name.startswith("noise") else "-")
        ax.set_title(f"{arch}, {label}, {results['few_shot']} images")

    _panels(results, path, "steps", draw)


def plot_cost(results: dict, path: Path) -> None:
    """Fooling rate vs gradient queries, streaming batches of 32."""
    def draw(ax, b, arch, label):
        for name, row in b["cost"].get(arch, {}).items():
            q, fr = zip(*row["curve"])
            ax.plot(q, fr, label=name)
        ax.axhline(0.8, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xscale("symlog", linthresh=32)
        ax.set_xlim(left=0)
        ax.set_title(f"{arch}, {label}, batches of 32 from the train split")

    _panels(results, path, "gradient queries (images)", draw)


def render(path: str) -> str:
    """Markdown tables of a ``uap.json`` (for bench/RESULTS.md): ``python bench/uap.py --render FILE``."""
    from tabulate import tabulate

    r = json.loads(Path(path).read_text())
    out = []
    for label, b in r["budgets"].items():
        for arch, summary in b["few_shot"].items():
            noise = max(summary[n]["final_fr"] for n in ("noise-uniform", "noise-checkerboard") if n in summary)
            rows = [[name, s["final_fr"], s.get("final_fr_std"), s.get("step_size"),
                     None if name.startswith("noise") or noise <= 0 else s["final_fr"] / noise]
                    for name, s in summary.items() if not name.startswith("uap-pgd@")]
            out.append(f"**{label}, {arch}, few-shot ({r['few_shot']} images, {r['steps']} steps, "
                       f"{r['trials']} trials), held-out fooling rate after the last step**\n")
            out.append(tabulate(rows, headers=["method", "fooling rate", "std", "pgd step", "x best noise"],
                                tablefmt="github", floatfmt=".3f"))
            cost = b["cost"].get(arch, {})
            if cost:
                crow = [[n, c["max_fr"], c.get("grad_queries_to_fr50"), c.get("seconds_to_fr50"),
                         c.get("grad_queries_to_fr80"), c.get("seconds_to_fr80"), c["total"]["grad_queries"]]
                        for n, c in cost.items()]
                out.append("\n" + tabulate(crow, headers=["method", "max FR", "queries to 0.5", "s to 0.5",
                                                          "queries to 0.8", "s to 0.8", "queries total"],
                                           tablefmt="github", floatfmt=".3f"))
            full = b["full"].get(arch, {})
            frow = [[n, f["fooling_rate"], f.get("seconds"), f.get("grad_queries"), f.get("converged")]
                    for n, f in full.items()]
            out.append("\n" + tabulate(frow, headers=["full budget", "fooling rate", "seconds", "grad queries",
                                                      "converged"], tablefmt="github", floatfmt=".3f") + "\n")
        m = b.get("transfer_models")
        if m and m["rows"]:
            out.append(f"**transfer (models, {label}, full-budget uap-pgd on {r['held_out']})**\n")
            out.append(tabulate([[row, *vals] for row, vals in zip(m["rows"], m["values"])],
                                headers=["crafted on \\ evaluated on", *m["cols"]], tablefmt="github",
                                floatfmt=".3f") + "\n")
    t = r.get("transfer")
    if t:
        for key in ("sources", "deploy"):
            m = t[key]
            out.append(f"**transfer ({key}, {t['budget']})**\n")
            out.append(tabulate([[row, *vals] for row, vals in zip(m["rows"], m["values"])],
                                headers=["crafted on \\ evaluated on", *m["cols"]], tablefmt="github",
                                floatfmt=".3f") + "\n")
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--render":
        print(render(sys.argv[2]))
    else:
        main()
