"""Leaderboard: records -> ranked views -> Markdown, CSV and a self-contained HTML page.

Records here are made by hand (``leaderboard_records``): the report is under
test.  The grid tests run the leaderboard on real smoke-run records.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import subprocess
import sys

import pytest

from leaderboard_records import JUNK, make_record, write_runs
from reports.cli import write_leaderboard
from reports.load import IDENTITY, RUN_FACTS, load_runs
from reports.views import build_views, filter_runs
from suite.app.cli import main
from suite.core.errors import ConfigError, DataError


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    write_runs(root)
    return root


def test_load_skips_junk_with_reasons(runs_dir):
    data = load_runs(runs_dir)
    assert len(data.records) == 19  # 18 schema-1.1 + one 1.0 record
    skipped = {p.relative_to(runs_dir).as_posix(): reason for p, reason in data.skipped}
    assert set(skipped) == set(JUNK)  # hidden .grid/staging and artifacts' JSON are never read
    assert "not valid JSON" in skipped["truncated/result.json"]
    assert "9.0" in skipped["future/result.json"]
    assert "JSON object" in skipped["list.json"]
    assert "not a suite record" in skipped["notes.json"]
    assert "not a text file" in skipped["binary.json"]
    # schema 1.0 still loads, with empty later sections
    old = data.runs[data.runs["schema_version"] == "1.0"]
    assert len(old) == 1 and old.iloc[0]["compress"] == "nm"
    assert len(data.attacks) == sum(len(r["attacks"]) for r in data.records)
    assert len(data.fingerprints) == 18 * 2 and len(data.transfers) == 18 * 2  # a matrix per attack


def test_runs_table_keeps_floats_and_flattens_sections(runs_dir):
    runs = load_runs(runs_dir).runs
    row = runs[(runs["model"] == "vgg16") & (runs["compress"] == "block") & (runs["sparsity"] == 0.75)
               & (runs["backend"] == "tvm")].iloc[0]
    assert isinstance(row["clean_acc"], float) and isinstance(row["macs"], float)
    assert row["latency_ms"] == pytest.approx(2.0 / row["speedup"])
    assert row["speedup_vs_best_dense"] == pytest.approx(1.5 / row["latency_ms"])  # the honest ratio beside it
    assert row["best_dense_runtime"] == "onnxruntime"
    assert row["target"] == "llvm"
    dense = runs[(runs["model"] == "vgg16") & (runs["compress"] == "none")].iloc[0]
    assert dense["achieved_sparsity"] == 0.0 and dense["macs_ratio"] == 1.0
    assert dense["acc_dense"] == dense["clean_acc"]


def test_derivations_without_headline_metrics(runs_dir):
    """Entries alone (no stage metrics): worst UAP / PGD entry evaluated on what the run ships."""
    from reports.load import tables

    rec = make_record("resnet20", "block", 0.5, "onnx", 0)
    for key in ("uap_pgd_fooling_rate", "pgd_robust_acc"):
        del rec["metrics"][key]
    rec["transfer"] = {}
    row = {v.key: v for v in build_views(tables([rec]))}["robustness"].table.iloc[0]
    shipped = [a for a in rec["attacks"] if a["evaluated_on"] == "deployed"]
    assert row["uap_fooling_rate"] == max(a["fooling_rate"] for a in shipped if a["attack"] == "uap-pgd")
    assert row["pgd_robust_acc"] == min(a["robust_acc"] for a in shipped if a["attack"] == "pgd")
    assert math.isnan(row["transfer_fooling_rate"])


def test_attack_kinds_come_from_entry_fields_not_names():
    """UAP column: entries marked universal; PGD column: non-universal entries with attack == "pgd"."""
    from reports.load import tables

    rec = make_record("resnet20", "block", 0.5, "onnx", 0)
    for key in ("uap_pgd_fooling_rate", "pgd_robust_acc"):
        del rec["metrics"][key]
    rec["transfer"] = {}
    for a in rec["attacks"]:  # a universal attack whose name does not say "uap"
        if a["attack"] == "uap-pgd":
            a["attack"], a["id"] = "sga", a["id"].replace("uap-pgd", "sga")
    shipped = [a for a in rec["attacks"] if a["evaluated_on"] == "deployed"]
    decoy = {**shipped[0], "attack": "uap-lookalike", "id": "uap-lookalike:x", "universal": False,
             "fooling_rate": 1.0, "robust_acc": 0.0}  # per-image, though the name says "uap"
    apgd = {**decoy, "attack": "apgd", "id": "apgd:x"}  # per-image, not "pgd"
    rec["attacks"] += [decoy, apgd]
    row = {v.key: v for v in build_views(tables([rec]))}["robustness"].table.iloc[0]
    assert row["uap_fooling_rate"] == max(a["fooling_rate"] for a in shipped if a["attack"] == "sga")
    assert row["pgd_robust_acc"] == min(a["robust_acc"] for a in shipped if a["attack"] == "pgd")
    rec["metrics"]["sga_fooling_rate"] = 0.123  # the stage's headline metric of a universal attack wins
    row = {v.key: v for v in build_views(tables([rec]))}["robustness"].table.iloc[0]
    assert row["uap_fooling_rate"] == 0.123


def test_fingerprint_metrics_only_in_the_ip_view():
    """fp_<method>_* metrics belong to IP protection, even for a method named "misclassified"."""
    from reports.load import tables
    from suite.core.metrics import LeaderboardView, record_directions, view_of

    rec = make_record("resnet20", "block", 0.5, "tvm", 0, fingerprint_methods=("misclassified", "ipguard"))
    fp_metrics = [m for m in rec["metrics"] if m.startswith("fp_")]
    assert "fp_misclassified_auc" in fp_metrics and "fp_misclassified_false_positives" in fp_metrics
    assert all(view_of(m) is LeaderboardView.IP_PROTECTION for m in fp_metrics)
    assert record_directions(rec["metrics"]) == rec["higher_is_better"]  # one table, same directions
    views = {v.key: v for v in build_views(tables([rec]))}
    rob = views["robustness"]
    assert not [c for c in rob.metrics + list(rob.table.columns) if c.startswith("fp_")]
    assert "uap_pgd_fooling_rate" in rob.metrics and "pgd_robust_acc" in rob.metrics
    assert not [c for c in views["compression"].metrics if c.startswith("fp_")]
    assert set(views["ip"].table["method"]) == {"misclassified", "ipguard"}


def test_metric_table_is_the_one_source_of_directions():
    from fingerprints.summary import flat_metrics
    from reports.metrics import arrow, fmt
    from suite.core.metrics import Direction, direction_of, higher_is_better, record_directions

    assert higher_is_better("clean_acc") is True and higher_is_better("uap_pgd_fooling_rate") is False
    assert higher_is_better("pgd_robust_acc") is True and higher_is_better("cw_robust_acc") is True
    assert direction_of("test_images") is Direction.NEUTRAL and higher_is_better("no_such_metric") is None
    assert record_directions({"clean_acc": 0.9, "test_images": 96.0}) == {"clean_acc": True}
    entry = {"id": "misclassified", "auc": 0.9, "tpr_at_1pct_fpr": 0.5, "U": 0.4, "R": 0.8, "T": 0.4,
             "false_positives": 1, "queries": 20, "generation_seconds": 3.0}
    metrics, directions = flat_metrics([entry])
    assert directions == record_directions(metrics) and directions["fp_misclassified_T"] is False
    assert arrow("fp_misclassified_auc") == " ↑" and arrow("test_images") == ""
    assert fmt("fp_misclassified_auc", 0.91234) == "0.912" and fmt("speedup", 2.0) == "2.00x"


def test_views_rank_by_direction(runs_dir):
    views = {v.key: v for v in build_views(load_runs(runs_dir))}
    comp = views["compression"].table
    assert comp["rank"].iloc[0] == 1 and comp["clean_acc"].iloc[0] == comp["clean_acc"].max()
    assert list(comp["clean_acc"]) == sorted(comp["clean_acc"], reverse=True)
    rob = views["robustness"].table
    assert views["robustness"].sort_by == "uap_fooling_rate" and views["robustness"].higher_is_better is False
    assert list(rob["uap_fooling_rate"]) == sorted(rob["uap_fooling_rate"])
    # derived columns: the stage's headline metrics, and the worst dense -> shipped transfer cell
    r = rob[(rob["model"] == "resnet20") & (rob["compress"] == "block") & (rob["sparsity"] == 0.5)
            & (rob["backend"] == "tvm")].iloc[0]
    record = next(x for x in load_runs(runs_dir).records if x["run_id"] == r["run_id"])
    assert r["uap_fooling_rate"] == record["metrics"]["uap_pgd_fooling_rate"]
    assert r["pgd_robust_acc"] == record["metrics"]["pgd_robust_acc"]
    cells = [m["values"][m["rows"].index("dense")][m["cols"].index("deployed")] for m in record["transfer"].values()]
    assert r["transfer_fooling_rate"] == pytest.approx(max(cells))
    assert "uap_pgd_fooling_rate" in views["robustness"].metrics  # per-attack metrics are columns too
    ip = views["ip"].table
    assert views["ip"].sort_by == "U" and ip["U"].iloc[0] == ip["U"].max()
    assert set(ip["method"]) == {"ltrc-examples", "ipguard"}
    assert "attack_args" in views["robustness"].identity and "fingerprint_args" in views["ip"].identity
    # ties share a rank; ranks count positions (1, 1, 3, ...)
    ranks = list(comp["rank"])
    assert ranks == sorted(ranks) and ranks[0] == 1


def test_sort_and_filter(runs_dir):
    data = load_runs(runs_dir)
    views = {v.key: v for v in build_views(data, sort="latency_ms")}
    comp = views["compression"].table
    assert views["compression"].higher_is_better is False
    ranked = comp[comp["rank"].notna()]
    assert len(ranked) == 8 and list(ranked["latency_ms"]) == sorted(ranked["latency_ms"])
    assert comp["rank"].isna().sum() == len(comp) - 8  # runs without a latency are unranked, last
    assert views["robustness"].sort_by == "uap_fooling_rate"  # a view without that metric keeps its default
    asc = {v.key: v for v in build_views(data, sort="clean_acc:asc")}["compression"].table
    assert asc["clean_acc"].iloc[0] == asc["clean_acc"].min()
    only = filter_runs(data, "backend == 'tvm' and sparsity >= 0.75")
    assert len(only.runs) == 6 and set(only.runs["backend"]) == {"tvm"}
    assert set(only.attacks["run_id"]) == set(only.runs["run_id"])
    with pytest.raises(ConfigError, match="bad --filter"):
        filter_runs(data, "no_such_column > 1")


def test_writes_markdown_csv_html(runs_dir, tmp_path):
    out = tmp_path / "board"
    warnings = []
    summary = write_leaderboard(runs_dir, out, warn=warnings.append)
    assert summary["records"] == 19 and summary["skipped"] == len(JUNK)
    assert len(warnings) == len(JUNK) and all(str(runs_dir) in w for w in warnings)
    md = (out / "leaderboard.md").read_text()
    for title in ("## Compression", "## Robustness", "## IP protection", "## Skipped files"):
        assert title in md
    assert "clean acc ↑" in md and "UAP fooling rate ↓" in md and "| rank" in md.replace("|   rank", "| rank")
    assert "0.950" in md and re.search(r"\| +\d\.\d\dx \|", md)  # formatted only in reports

    with open(out / "runs.csv") as fh:
        rows = list(csv.DictReader(fh))
    header = list(rows[0])
    assert header[: len(IDENTITY) + len(RUN_FACTS)] == list(IDENTITY + RUN_FACTS)
    assert len(rows) == 19
    accs = sorted(float(r["clean_acc"]) for r in rows)
    assert accs[-1] == 0.95  # raw floats, not "0.950"
    comp_header = next(csv.reader(open(out / "compression.csv")))
    assert comp_header[:8] == ["rank", "run_id", "model", "source", "compress", "sparsity", "backend", "seed"]
    assert "↑" not in comp_header[8]

    page = (out / "leaderboard.html").read_text()
    assert "http://" not in page and "https://" not in page and "<link" not in page  # self-contained
    for view in ("view-compression", "view-robustness", "view-compression_robustness", "view-ip"):
        assert f'id="{view}"' in page
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(pngs) == 7
    from PIL import Image

    for b64 in pngs:
        img = Image.open(io.BytesIO(base64.b64decode(b64))).convert("L")
        lo, hi = img.getextrema()
        assert img.size[0] > 300 and hi - lo > 100  # a real drawing, not a blank frame
    assert page.count("<tr>") >= 19 + 18 + 36 + 400


def test_empty_and_partial_directories(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "o"
    summary = write_leaderboard(tmp_path / "empty", out, warn=lambda m: None)
    assert summary["records"] == 0
    md = (out / "leaderboard.md").read_text()
    assert md.count("_no data_") == 4
    page = (out / "leaderboard.html").read_text()
    assert page.count("no data") >= 4 + 7
    # a record with sections missing or odd still loads (only 1.0 keys)
    d = tmp_path / "partial" / "r1"
    d.mkdir(parents=True)
    rec = make_record("resnet20", "block", 0.5, "torch", 0, version="1.0")
    rec["compression"] = {}
    rec["deployment"] = {"backend": "onnx", "latency_ms": "fast"}
    (d / "result.json").write_text(json.dumps(rec))
    summary = write_leaderboard(tmp_path / "partial", tmp_path / "o2", warn=lambda m: None)
    assert summary["records"] == 1 and summary["skipped"] == 0
    runs = load_runs(tmp_path / "partial").runs
    assert math.isnan(runs.iloc[0]["latency_ms"]) and runs.iloc[0]["backend"] == "onnx"
    with pytest.raises(DataError, match="does not exist"):
        load_runs(tmp_path / "missing")


def test_cli(runs_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["leaderboard", str(runs_dir), "-o", str(out), "--format", "md,csv", "--sort", "speedup",
               "--filter", "model == 'vgg16'"])
    assert rc == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["records"] == 9 and summary["skipped"] == len(JUNK)
    assert "warning: skipping" in captured.err and "truncated/result.json" in captured.err
    assert (out / "leaderboard.md").exists() and (out / "runs.csv").exists()
    assert not (out / "leaderboard.html").exists()
    assert main(["leaderboard", str(runs_dir), "-o", str(out), "--format", "pdf"]) == 2
    assert "unknown --format" in capsys.readouterr().err
    assert main(["leaderboard", str(runs_dir), "-o", str(out), "--sort", "happiness"]) == 2
    assert "unknown --sort metric" in capsys.readouterr().err


def test_cli_module_imports_are_light():
    code = ("import sys, suite.app.cli, reports.cli, suite.app.grid; "
            "heavy = [m for m in ('pandas', 'ray', 'matplotlib', 'torch') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
