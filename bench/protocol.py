"""The field's protocol per source: clean and robust accuracy, UAP vs noise, budget curves, per scheme.

Runs the grids of one source (``bench/grids/<source>*.yaml``) with ``suite
grid`` into ``runs/bench/<grid name>/`` (resumable: recorded jobs are
skipped), then reads every record and writes ``bench/results/protocol_<source>.json``
and a Markdown table (stdout) per scheme and sparsity:

clean       test accuracy of what the run ships (``clean_acc``)
AA@std      AutoAttack robust accuracy at the standard budget (``autoattack_robust_acc``)
            on its fixed subset, beside AA clean accuracy on that subset
AA@small    AutoAttack at the small budget of the ``*_small_eps`` grid
PGD@std     PGD-20 robust accuracy at the standard budget
UAP@std     uap-pgd fooling rate at the standard budget, then noise-uniform and
            noise-checkerboard at the same budget
curve       PGD robust accuracy and uap-pgd fooling rate at each budget of the sweep

    python bench/protocol.py fashion-mnist [--jobs 1] [--threads N] [--render-only]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
GRIDS = ROOT / "bench" / "grids"


def grids_for(source: str) -> list[Path]:
    stem = source.replace("-", "_")
    return sorted(GRIDS.glob(f"{stem}*.yaml"))


def run_grids(source: str, jobs: int, out_root: Path, threads: int | None = None) -> None:
    for grid in grids_for(source):
        out = out_root / grid.stem
        cmd = [sys.executable, "-m", "suite", "grid", str(grid), "--jobs", str(jobs), "--output-dir", str(out)]
        if threads:
            cmd += ["--threads", str(threads)]
        print("$", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=False)


def _records(out_root: Path, source: str) -> list[tuple[str, dict]]:
    rows = []
    for grid in grids_for(source):
        for path in sorted((out_root / grid.stem).glob("*/result.json")):
            rows.append((grid.stem, json.loads(path.read_text())))
    return rows


def _headline(record: dict, attack: str) -> dict | None:
    shipped = "deployed" if any(e["evaluated_on"] == "deployed" for e in record["attacks"]) else \
        "compressed" if any(e["evaluated_on"] == "compressed" for e in record["attacks"]) else "dense"
    entries = [e for e in record["attacks"] if e["attack"] == attack and e["evaluated_on"] == shipped]
    if not entries:
        return None
    black = entries[0].get("black_box")
    crafted = shipped if black else ("compressed" if any(e["crafted_on"] == "compressed" for e in entries)
                                     else "dense")
    return next((e for e in entries if e["crafted_on"] == crafted), None)


def summarise(out_root: Path, source: str) -> list[dict]:
    table: dict[tuple, dict] = {}
    for grid, rec in _records(out_root, source):
        cfg = rec["config"]
        key = (cfg["model"], cfg["compress"], cfg.get("sparsity"), cfg["backend"])
        row = table.setdefault(key, {"model": cfg["model"], "width": cfg["width"], "scheme": cfg["compress"],
                                     "sparsity": cfg.get("sparsity"), "backend": cfg["backend"]})
        m = rec["metrics"]
        comp = rec.get("compression") or {}
        small = grid.endswith("small_eps")
        aa = _headline(rec, "autoattack")
        if small:
            if aa is not None:
                row.update({"aa_small_eps": aa["eps"], "aa_small_robust": aa["robust_acc"],
                            "aa_small_clean": aa["clean_acc"], "aa_small_seconds": aa["seconds"]})
            continue
        row.update({"clean_acc": m.get("clean_acc"), "acc_dense": m.get("acc_dense", comp.get("acc_dense")),
                    "achieved_sparsity": comp.get("achieved_sparsity"), "run_id": rec["run_id"],
                    "epochs": cfg.get("recipe", {}).get("epochs"),
                    "train_images": rec["source"]["sizes"]["train"], "seconds": rec["timings"].get("total")})
        if aa is not None:
            row.update({"eps_std": aa["eps"], "aa_robust": aa["robust_acc"], "aa_clean": aa["clean_acc"],
                        "aa_images": aa.get("subset_images"), "aa_seconds": aa["seconds"]})
        for name, slug in (("pgd", "pgd"), ("uap-pgd", "uap"), ("noise-uniform", "noise"),
                           ("noise-checkerboard", "checker"), ("square", "square"), ("rays", "rays")):
            e = _headline(rec, name)
            if e is None:
                continue
            row[f"{slug}_robust"] = e["robust_acc"]
            row[f"{slug}_fooling"] = e["fooling_rate"]
            if e.get("black_box"):
                row[f"{slug}_queries"] = e.get("queries_per_image")
            if e.get("sweep"):
                row[f"{slug}_curve"] = [(p["eps"], p["robust_acc"], p["fooling_rate"], p["noise_fooling_rate"])
                                        for p in e["sweep"]]
        if rec.get("transfer", {}).get("uap-pgd"):
            row["uap_transfer"] = rec["transfer"]["uap-pgd"]
    order = {"none": 0}
    return sorted(table.values(), key=lambda r: (r["model"], order.get(r["scheme"], 1), r["scheme"],
                                                 r["sparsity"] or 0, r["backend"]))


def _f(v, digits: int = 3):
    return "" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def render(rows: list[dict]) -> str:
    main = [[r["model"], r["scheme"], _f(r.get("sparsity"), 2), _f(r.get("achieved_sparsity")), r["backend"],
             _f(r.get("clean_acc")), f"{_f(r.get('aa_robust'))} / {_f(r.get('aa_clean'))}",
             f"{_f(r.get('aa_small_robust'))} / {_f(r.get('aa_small_clean'))}" if "aa_small_robust" in r else "",
             _f(r.get("pgd_robust")), _f(r.get("uap_fooling")), _f(r.get("noise_fooling")),
             _f(r.get("checker_fooling"))] for r in rows]
    heads = ["model", "scheme", "target", "achieved", "backend", "clean", "AA robust / clean @std",
             "AA robust / clean @small", "PGD-20 @std", "UAP-PGD FR @std", "noise FR", "checkerboard FR"]
    out = [tabulate(main, headers=heads, tablefmt="github")]
    curves = []
    for r in rows:
        for slug, metric, idx in (("pgd", "PGD robust acc", 1), ("uap", "UAP-PGD fooling (noise)", 2)):
            if r.get(f"{slug}_curve"):
                cells = [f"{p[idx]:.3f}" + (f" ({p[3]:.3f})" if slug == "uap" else "") for p in r[f"{slug}_curve"]]
                curves.append([r["scheme"], _f(r.get("sparsity"), 2), metric,
                               " / ".join(f"{p[0]:.4g}" for p in r[f"{slug}_curve"]), " / ".join(cells)])
    if curves:
        out.append(tabulate(curves, headers=["scheme", "target", "metric", "eps", "value at each eps"],
                            tablefmt="github"))
    deployed = []
    for r in rows:
        t = r.get("uap_transfer")
        if not t or "deployed" not in t["cols"]:
            continue
        cells = {(a, b): t["values"][i][j] for i, a in enumerate(t["rows"]) for j, b in enumerate(t["cols"])}
        deployed.append([r["scheme"], _f(r.get("sparsity"), 2), r["backend"],
                         " / ".join(_f(cells.get(("dense", c))) for c in t["cols"]),
                         " / ".join(_f(cells.get(("compressed", c))) for c in t["cols"]),
                         _f(r.get("pgd_robust")),
                         f"{_f(r.get('square_robust'))} ({_f(r.get('square_queries'), 0)} q)",
                         f"{_f(r.get('rays_robust'))} ({_f(r.get('rays_queries'), 0)} q)"])
    if deployed:
        out.append(tabulate(deployed, headers=[
            "scheme", "target", "backend", "UAP-PGD from dense -> dense / compressed / deployed",
            "UAP-PGD from compressed -> dense / compressed / deployed", "PGD-20 (compressed -> deployed)",
            "Square on the deployment (queries/image)", "RayS on the deployment (queries/image)"],
            tablefmt="github"))
    return "\n\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="fashion-mnist | digits16 (grids bench/grids/<source>*.yaml)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch threads per job (default: cores / jobs)")
    p.add_argument("--runs", default=str(ROOT / "runs" / "bench"))
    p.add_argument("--render-only", action="store_true", help="only read the records already there")
    args = p.parse_args()
    out_root = Path(args.runs)
    if not grids_for(args.source):
        raise SystemExit(f"no grids for {args.source!r} under {GRIDS}")
    if not args.render_only:
        run_grids(args.source, args.jobs, out_root, args.threads)
    rows = summarise(out_root, args.source)
    dest = ROOT / "bench" / "results" / f"protocol_{args.source.replace('-', '_')}.json"
    dest.write_text(json.dumps({"source": args.source, "rows": rows}, indent=1))
    print(render(rows))


if __name__ == "__main__":
    main()
