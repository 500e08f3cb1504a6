"""Leaderboard side of the field's protocol: standard budgets, budget sweeps, black-box headlines and the
compression x robustness view.

Records are written by hand here (``leaderboard_records.make_record`` for the run sections, attack entries
in the shape ``attacks.stage`` writes with ``eps_standard`` / ``eps_multiple`` / ``eps_origin`` /
``budget_reference`` and ``sweep`` on headline entries): the report is under test.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest

from leaderboard_records import make_record
from reports.load import tables

STANDARD = 0.1  # the source's standard Linf budget (as for fashion-mnist)
MULTIPLES = (0.25, 0.5, 0.75, 1.0, 1.5)
PNG = b"\x89PNG\r\n\x1a\n"
DECOY = 0.99  # every non-headline entry: a value no correct pick returns


def entry(attack: str, crafted: str, evaluated: str, value: float, *, universal: bool = False,
          black_box: bool = False, eps: float = STANDARD, origin: str | None = "standard") -> dict:
    """An attack entry; ``value`` is the fooling rate (universal) or the robust accuracy (per image)."""
    robust = 1.0 - value if universal else value
    e = {"id": f"{attack}:{crafted}->{evaluated}", "attack": attack, "universal": universal, "norm": "linf",
         "eps": eps, "target": None, "source": "digits16", "crafted_on": crafted, "evaluated_on": evaluated,
         "fooling_rate": value if universal else 1.0 - value, "asr": 0.5, "misclassification_rate": 1.0 - robust,
         "robust_acc": robust, "clean_acc": 0.9, "achieved_norm": eps, "steps": 10, "grad_queries": 100,
         "seconds": 1.0}
    if origin is not None:  # newer records only
        e.update({"eps_standard": STANDARD, "eps_multiple": eps / STANDARD, "eps_origin": origin,
                  "budget_reference": "derived: test budget"})
    if black_box:
        e.update({"black_box": True, "feedback": "scores", "queries": 800, "queries_per_image": 50.0,
                  "query_budget": 100})
    return e


def sweep(universal: bool, at_standard: float, noise: float | None = None, *, base: float = STANDARD,
          multiple: bool = True) -> list[dict]:
    """Points at MULTIPLES x ``base`` (the attack's eps), as ``attacks.sweep`` writes them; the value (fooling
    rate or robust accuracy) is ``at_standard`` at eps == STANDARD."""
    points = []
    for m in MULTIPLES:
        eps = round(m * base, 6)
        v = min(1.0, at_standard * eps / STANDARD) if universal else max(0.0, at_standard - 2 * (eps - STANDARD))
        p = {"eps": eps, "robust_acc": 1.0 - v if universal else v, "clean_acc": 0.9, "seconds": 2.0}
        if multiple:  # older sweeps (attacks.perimage.eps_sweep) lack these
            p.update({"multiple": m, "fooling_rate": v if universal else 1.0 - v,
                      "noise_fooling_rate": None if noise is None else noise * eps / STANDARD})
        points.append(p)
    return points


def run(compress: str, sparsity: float, *, seed: int = 0, pgd: float, uap: float, square: float,
        noise: float | None = None, backend: str = "onnx", pgd_origin: str | None = "standard",
        pgd_sweep: float | None = None, uap_sweep_noise: float | None = None) -> dict:
    """A schema-1.1 record of resnet20 with pgd, uap-pgd, square (black box) and optionally noise-uniform."""
    rec = make_record("resnet20", compress, sparsity, backend, seed, fingerprint_methods=())
    white = ["dense"] + ([] if compress == "none" else ["compressed"])
    targets = white + ["deployed"]
    nearest, final = white[-1], "deployed"
    attacks = []
    specs = [("pgd", pgd, False, pgd_origin), ("uap-pgd", uap, True, "standard")]
    if noise is not None:
        specs.append(("noise-uniform", noise, True, "standard"))
    for name, value, universal, origin in specs:
        for c in white:
            for t in targets:
                head = (c, t) == (nearest, final)
                e = entry(name, c, t, value if head else DECOY, universal=universal, origin=origin,
                          eps=2 * STANDARD if origin == "given" else STANDARD)
                if head and name == "pgd" and pgd_sweep is not None:
                    e["sweep"] = sweep(False, pgd_sweep, base=e["eps"])  # multiples of the user's eps
                if head and name == "uap-pgd":
                    e["sweep"] = sweep(True, value, uap_sweep_noise)
                attacks.append(e)
    for c in targets:  # black box: every subject is attacked through its predictor
        for t in targets:
            attacks.append(entry("square", c, t, square if (c, t) == (final, final) else DECOY, black_box=True))
    rec["attacks"], rec["transfer"], rec["fingerprints"] = attacks, {}, []
    rec["metrics"] = {"clean_acc": rec["metrics"]["clean_acc"], "test_images": 360.0,
                      "pgd_robust_acc": DECOY if pgd_origin == "given" else pgd,  # at the run's eps
                      "uap_pgd_fooling_rate": uap, "square_robust_acc": square, "square_queries": 50.0}
    rec["higher_is_better"] = {"clean_acc": True, "pgd_robust_acc": True, "uap_pgd_fooling_rate": False,
                               "square_robust_acc": True}
    rec["run_id"] += f"-{compress}{sparsity}-{seed}"
    return rec


def grid() -> list[dict]:
    """Two schemes x two sparsities plus the dense run; block@0.75 has two seeds."""
    return [
        run("none", 0.0, pgd=0.30, uap=0.40, square=0.50, noise=0.05),
        run("block", 0.5, pgd=0.25, uap=0.45, square=0.45, noise=0.06),
        run("block", 0.75, pgd=0.20, uap=0.50, square=0.40, noise=0.08),
        run("block", 0.75, seed=1, pgd=0.10, uap=0.60, square=0.30, noise=0.10),
        # a user-set budget: only the sweep's standard point counts; the noise baseline comes from the sweep
        run("pattern", 0.5, pgd=0.05, uap=0.55, square=0.35, pgd_origin="given", pgd_sweep=0.22,
            uap_sweep_noise=0.07),
        # an older record: no budget fields, the stage's headline metric counts
        run("pattern", 0.75, pgd=0.12, uap=0.65, square=0.20, noise=0.09, pgd_origin=None),
    ]


def test_black_box_entries_are_headline_on_what_ships():
    data = tables([run("block", 0.5, pgd=0.25, uap=0.45, square=0.45)])
    att = data.attacks
    heads = att[att["headline"]]
    assert sorted(heads["id"]) == ["pgd:compressed->deployed", "square:deployed->deployed",
                                   "uap-pgd:compressed->deployed"]
    assert heads.groupby("attack").size().max() == 1
    square = heads[heads["attack"] == "square"].iloc[0]
    assert square["black_box"] is True or square["black_box"] == True  # noqa: E712 (numpy bool)
    assert square["feedback"] == "scores" and square["queries_per_image"] == 50.0
    pgd = heads[heads["attack"] == "pgd"].iloc[0]
    assert not pgd["black_box"] and not isinstance(pgd["feedback"], str) and math.isnan(pgd["queries_per_image"])
    assert pgd["eps_standard"] == STANDARD and pgd["eps_multiple"] == pytest.approx(1.0)
    assert pgd["eps_origin"] == "standard" and pgd["budget_reference"] == "derived: test budget"
    # older records: the new columns exist, empty; the white-box rule is unchanged
    old = tables([make_record("resnet20", "block", 0.5, "onnx", 0)]).attacks
    assert old["eps_standard"].isna().all() and old["eps_origin"].isna().all() and not old["black_box"].any()
    assert set(old[old["headline"]]["id"]) == {"uap-pgd:compressed->deployed", "pgd:compressed->deployed"}


def test_sweeps_table_and_budget_plots():
    from reports.budget_plots import headline_points, robust_acc_vs_budget, uap_vs_budget
    from reports.plots import make_plots

    recs = grid()
    recs[1]["attacks"][0]["sweep"] = sweep(False, 0.3)  # a non-headline entry's sweep: kept, not plotted
    data = tables(recs)
    sw = data.sweeps
    assert len(sw) == 5 * (len(recs) + 2) and set(sw["multiple"].round(6)) == set(MULTIPLES)
    assert sw["headline"].sum() == 5 * (len(recs) + 1)
    uap = headline_points(sw, universal=True, column="fooling_rate")
    assert set(uap["attack"]) == {"uap-pgd"} and len(uap) == 5 * len(recs)
    assert set(headline_points(sw, universal=False, column="robust_acc")["run_id"]) == {recs[4]["run_id"]}
    given = sw[(sw["run_id"] == recs[4]["run_id"]) & (sw["attack"] == "pgd")]
    assert list(given["multiple"]) == list(MULTIPLES)  # of the user's eps, twice the standard budget
    assert list(given["standard_multiple"]) == pytest.approx([2 * m for m in MULTIPLES])
    for png in (uap_vs_budget(data.attacks, data.sweeps), robust_acc_vs_budget(data.attacks, data.sweeps)):
        assert png and png.startswith(PNG)
    # an older sweep (eps_sweep: no multiple): multiple from the entry's standard budget
    head = next(e for e in recs[4]["attacks"] if e["id"] == "pgd:compressed->deployed")
    head["sweep"] = sweep(False, 0.22, base=head["eps"], multiple=False)
    old_sweep = tables(recs).sweeps
    old_sweep = old_sweep[(old_sweep["run_id"] == recs[4]["run_id"]) & (old_sweep["attack"] == "pgd")]
    assert list(old_sweep["multiple"]) == pytest.approx(MULTIPLES) and old_sweep["fooling_rate"].isna().all()
    # old records: no sweeps -> the plots fall back to the entries; nothing crashes
    old = tables([make_record("resnet20", "block", 0.5, "onnx", 0),
                  make_record("resnet20", "nm", 0.5, "torch", 1, version="1.0")])
    assert len(old.sweeps) == 0
    plots = make_plots(old)
    assert plots["uap_vs_budget"].startswith(PNG) and plots["robust_acc_vs_budget"].startswith(PNG)
    bare = make_plots(tables([make_record("resnet20", "nm", 0.5, "torch", 1, version="1.0")]))
    assert bare["uap_vs_budget"] is None and bare["robust_acc_vs_budget"] is None
    assert bare["robustness_vs_sparsity"] is None


def test_compression_robustness_table():
    from reports.tradeoff import TRADEOFF_IDENTITY, TRADEOFF_METRICS, tradeoff_table
    from reports.views import build_views

    recs = grid()
    data = tables(recs)
    table = tradeoff_table(data)
    assert list(table.columns) == [*TRADEOFF_IDENTITY, *TRADEOFF_METRICS, "pgd_robust_acc",
                                   "dense_pgd_robust_acc", "square_robust_acc", "dense_square_robust_acc",
                                   "uap_pgd_fooling_rate", "uap_pgd_noise_fooling_rate",
                                   "dense_uap_pgd_fooling_rate"]
    assert [(r.compress, r.sparsity) for r in table.itertuples()] == \
        [("block", 0.5), ("block", 0.75), ("none", 0.0), ("pattern", 0.5), ("pattern", 0.75)]
    rows = {(r["compress"], r["sparsity"]): r for r in table.to_dict("records")}
    expect = {  # pgd, square, uap, noise baseline, runs
        ("none", 0.0): (0.30, 0.50, 0.40, 0.05, 1),
        ("block", 0.5): (0.25, 0.45, 0.45, 0.06, 1),
        ("block", 0.75): (0.15, 0.35, 0.55, 0.09, 2),  # mean over the two seeds
        ("pattern", 0.5): (0.22, 0.35, 0.55, 0.07, 1),  # given eps: the sweep's point at the standard eps
        ("pattern", 0.75): (0.12, 0.20, 0.65, 0.09, 1),  # no budget fields: the stage's metric
    }
    for key, (pgd, square, uap, noise, n) in expect.items():
        row = rows[key]
        assert row["pgd_robust_acc"] == pytest.approx(pgd), key
        assert row["square_robust_acc"] == pytest.approx(square), key
        assert row["uap_pgd_fooling_rate"] == pytest.approx(uap), key
        assert row["uap_pgd_noise_fooling_rate"] == pytest.approx(noise), key
        assert row["n_runs"] == n
        # the dense model beside every row
        assert (row["dense_pgd_robust_acc"], row["dense_square_robust_acc"], row["dense_uap_pgd_fooling_rate"]) \
            == pytest.approx((0.30, 0.50, 0.40)), key
        assert row["dense_clean_acc"] == pytest.approx(0.9)
    seeds = [r["metrics"]["clean_acc"] for r in recs[2:4]]
    assert rows[("block", 0.75)]["clean_acc"] == pytest.approx(sum(seeds) / 2)
    # without the dense run: dense clean accuracy from acc_dense, no dense attack values
    no_dense = tradeoff_table(tables(recs[1:]))
    assert (no_dense["dense_clean_acc"] == 0.9).all() and no_dense["dense_pgd_robust_acc"].isna().all()
    # a user-set budget without a standard sweep point is missing, never a value at another budget
    given = tradeoff_table(tables([run("block", 0.5, pgd=0.05, uap=0.5, square=0.4, pgd_origin="given")]))
    assert math.isnan(given.iloc[0]["pgd_robust_acc"]) and given.iloc[0]["square_robust_acc"] == 0.4
    # the view: identity + fixed metrics, unranked by default, ranked by --sort
    views = {v.key: v for v in build_views(data)}
    view = views["compression_robustness"]
    assert view.identity == list(TRADEOFF_IDENTITY) and view.sort_by is None and view.table["rank"].isna().all()
    ranked = {v.key: v for v in build_views(data, "pgd_robust_acc")}["compression_robustness"].table
    assert ranked["pgd_robust_acc"].iloc[0] == pytest.approx(0.30) and ranked["rank"].iloc[0] == 1
    # runs without attacks: an empty view
    assert len(tradeoff_table(tables([make_record("resnet20", "nm", 0.5, "torch", 1, version="1.0")]))) == 0


def test_leaderboard_cli_writes_protocol_outputs(tmp_path):
    runs_dir, out = tmp_path / "runs", tmp_path / "board"
    for rec in grid() + [make_record("resnet20", "nm", 0.5, "torch", 1, version="1.0")]:
        (runs_dir / rec["run_id"]).mkdir(parents=True)
        (runs_dir / rec["run_id"] / "result.json").write_text(json.dumps(rec))
    proc = subprocess.run([sys.executable, "-m", "suite", "leaderboard", str(runs_dir), "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["records"] == 7
    with open(out / "compression_robustness.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:9] == ["rank", "model", "source", "compress", "sparsity", "n_runs",
                                 "achieved_sparsity", "clean_acc", "dense_clean_acc"]
    assert len(rows) == 5 and {r["compress"] for r in rows} == {"none", "block", "pattern"}
    block = next(r for r in rows if r["compress"] == "block" and float(r["sparsity"]) == 0.75)
    assert float(block["pgd_robust_acc"]) == pytest.approx(0.15) and float(block["dense_pgd_robust_acc"]) == 0.3
    with open(out / "sweeps.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 5 * 7  # five uap-pgd sweeps and one pgd sweep
    with open(out / "attacks.csv") as fh:
        header = next(csv.reader(fh))
    for col in ("eps_standard", "eps_multiple", "eps_origin", "black_box", "feedback", "queries_per_image",
                "headline"):
        assert col in header
    md = (out / "leaderboard.md").read_text()
    assert "## Compression x robustness" in md and "dense_pgd_robust_acc" in md
    page = (out / "leaderboard.html").read_text()
    assert 'id="view-compression_robustness"' in page and 'id="table-compression_robustness"' in page
    for plot in ("robustness_vs_sparsity", "robust_acc_vs_budget", "uap_vs_budget"):
        assert f'<figure class="plot" id="plot-{plot}"><img' in page, plot
