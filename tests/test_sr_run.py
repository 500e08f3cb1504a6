"""``suite run --task sr``: CLI, records, errors, interrupts and the sr leaderboard view (issue 18 point 1).

The runs use the smoke profile (30 training steps, 64-px eval crops, a 1/8 frame, untuned TVM builds) on
one torch thread; the dense model is trained once per module (shared cache directory) and reused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from suite.app.cli import main
from suite.app.sr_pipeline import format_sr_summary
from suite.core.record import REQUIRED_KEYS, load_record

SMOKE = ["--task", "sr", "--profile", "smoke", "--quiet", "--threads", "1"]
DENSE_RUNTIMES = ("eager", "onnxruntime", "tvm-dense")


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def sr_env(tmp_path_factory):
    """A shared cache and runs directory for the module (the dense smoke model is trained once)."""
    root = tmp_path_factory.mktemp("sr")
    mp = pytest.MonkeyPatch()
    mp.setenv("SUITE_CACHE", str(root / "cache"))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def sr_runs(sr_env, one_torch_thread):
    """Two real runs through ``main``: fsrcnn dense on torch, and block 0.75 on TVM."""
    runs = {}
    for label, extra in (("none", ["--compress", "none"]),
                         ("block", ["--compress", "block", "--sparsity", "0.75", "--backend", "tvm"])):
        code = main(["run", *SMOKE, "--model", "fsrcnn", *extra, "--output-dir", str(sr_env / "runs"),
                     "--cache-dir", str(sr_env / "cache"), "--json"])
        assert code == 0
        runs[label] = None
    records = [load_record(p) for p in sorted((sr_env / "runs").iterdir()) if not p.name.startswith(".")]
    for r in records:
        runs[r["compression"]["scheme"]] = r
    return runs


def check_sr_record(record, *, compress, backend, sparsity):
    assert set(REQUIRED_KEYS) <= set(record)
    assert record["task"] == "sr" and record["config"]["task"] == "sr"
    cfg = record["config"]
    assert cfg["model"] == "fsrcnn" and cfg["source"] == "photos" and cfg["scale"] == 2
    assert cfg["compress"] == compress and cfg["backend"] == backend and cfg["sparsity"] == sparsity
    assert cfg["attacks"] == [] and cfg["fingerprints"] == [] and cfg["threads"] == 1
    assert record["seeds"]["run"] == 0 and {"model_init", "data_order", "split"} <= set(record["seeds"])
    assert record["env"]["torch"] and record["timings"]["total"] > 0
    assert {"source", "model", "compress", "deploy", "evaluate"} <= set(record["timings"])
    m = record["metrics"]
    for k in ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y", "dense_psnr_y", "dense_ssim_y"):
        assert isinstance(m[k], float)
    assert 5 < m["psnr_y"] < 60 and 0 < m["ssim_y"] <= 1 and m["bicubic_psnr_y"] > 15
    assert record["higher_is_better"]["psnr_y"] is True and record["higher_is_better"]["latency_ms"] is False
    d = record["deployment"]
    assert d["backend"] == backend and set(d["latency"]) == {*DENSE_RUNTIMES, "deployed"}
    assert d["best_dense_runtime"] in DENSE_RUNTIMES
    assert d["latency_ms"] == m["latency_ms"] > 0
    assert d["speedup_vs_best_dense"] == pytest.approx(d["best_dense_ms"] / d["latency_ms"], rel=1e-2)
    assert d["max_abs_diff"] <= 1e-3 and all(v <= 1e-3 for v in d["dense_max_abs_diff"].values())
    assert d["frame"]["lr"][0] == 3 and d["frame"]["output"][1] == 2 * d["frame"]["lr"][1]
    assert record["model"]["arch"] == "fsrcnn" and len(record["model"]["sha256"]) == 64
    assert record["source"]["name"] == "photos" and record["source"]["scale"] == 2
    # FSRCNN trains at its registered lr_scale (6) x the profile's learning rate, and the record says so
    from suite.app.sr_pipeline import SR_PROFILES

    assert record["model"]["train"]["recipe"]["lr"] == pytest.approx(6 * SR_PROFILES["smoke"].lr)


def test_sr_none_and_block_records(sr_runs, sr_env):
    none, block = sr_runs["none"], sr_runs["block"]
    check_sr_record(none, compress="none", backend="torch", sparsity=0.0)
    check_sr_record(block, compress="block", backend="tvm", sparsity=0.75)
    assert none["metrics"]["psnr_y"] == pytest.approx(none["metrics"]["dense_psnr_y"])
    assert none["deployment"]["max_abs_diff"] == 0.0
    assert block["compression"]["achieved_sparsity"] == pytest.approx(0.75, abs=0.02)
    assert block["compression"]["pruned_layers"] and block["compression"]["fine_tune"]["steps"] > 0
    # the second run loaded the dense model the first one trained
    assert not none["model"]["cache_hit"] and block["model"]["cache_hit"]
    assert block["model"]["sha256"] == none["model"]["sha256"]
    assert block["deployment"]["runtime"]["backend"] == "tvm"
    run_dir = next(p for p in (sr_env / "runs").iterdir() if block["run_id"] == p.name)
    assert (run_dir / "config.yaml").is_file()


def test_sr_leaderboard_view(sr_runs, sr_env, tmp_path):
    from reports.cli import write_leaderboard
    from reports.load import load_runs
    from reports.views import build_views

    data = load_runs(sr_env / "runs")
    assert set(data.runs["task"]) == {"sr"}
    views = {v.key: v for v in build_views(data)}
    sr = views["sr"]
    assert len(sr.table) == 2 and sr.sort_by == "psnr_y" and sr.higher_is_better is True
    assert set(sr.table["backend"]) == {"torch", "tvm"} and sr.table["rank"].tolist()[0] == 1
    assert sr.table["latency_ms"].notna().all() and sr.table["ssim_y"].notna().all()
    assert views["compression"].empty  # SR runs are not classification rows
    summary = write_leaderboard(sr_env / "runs", tmp_path / "board")
    assert summary["records"] == 2 and summary["skipped"] == 0
    md = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "## Super-resolution" in md and "PSNR-Y dB ↑" in md
    assert (tmp_path / "board" / "sr.csv").read_text().count("\n") == 3
    page = (tmp_path / "board" / "leaderboard.html").read_text()
    assert 'id="view-sr"' in page and '<figure class="plot" id="plot-sr_psnr_vs_latency"><img' in page


def sr_record_with_entries(compress: str, sparsity: float, *, fingerprint_metrics: bool = True) -> dict:
    """A hand-made SR record with sr-uap attack / sr-outputs fingerprint entries, as the SR stages write them."""
    from leaderboard_records import make_record

    rec = make_record("espcn", compress, sparsity, "torch", 0)  # a valid record: its sections are replaced
    rec["run_id"] = f"20260101T000000Z-espcn-{compress}-photos-s0"
    rec["task"] = "sr"
    rec["config"].update({"task": "sr", "model": "espcn", "source": "photos", "scale": 2,
                          "attacks": ["sr-uap"], "fingerprints": ["sr-outputs"]})
    rec["source"] = {"name": "photos", "scale": 2}
    rec["model"].update({"arch": "espcn", "source": "photos"})
    rec["deployment"].update({"latency_ms": 150.0, "speedup_vs_best_dense": 0.02,
                              "best_dense_runtime": "onnxruntime", "max_abs_diff": 0.0})
    roles = ["dense"] + ([] if compress == "none" else ["compressed"])
    drops = {"dense": (0.8, 0.05), "compressed": (0.6, 0.04)}
    rec["attacks"] = [{"id": f"sr-uap:dense->{role}", "attack": "sr-uap", "method": "sr-uap", "task": "sr",
                       "universal": True, "norm": "linf", "eps": 8 / 255, "source": "photos",
                       "crafted_on": "dense", "evaluated_on": role, "shipped": role == roles[-1],
                       "black_box": False, "drop_db": drops[role][0], "noise_drop_db": drops[role][1],
                       "uap": {"drop_db": drops[role][0]}, "noise": {"drop_db": drops[role][1]}, "seconds": 2.0}
                      for role in roles]
    rec["transfer"] = {"sr-uap": {"metric": "drop_db", "rows": ["dense"], "cols": roles,
                                  "values": [[drops[r][0] for r in roles]]}}
    verdicts = {role: {"verdict": "derived", "score": 33.0, "threshold": 32.0} for role in roles}
    rec["fingerprints"] = [{"id": "sr-outputs", "method": "sr-outputs", "task": "sr", "owner": "dense",
                            "verdicts": verdicts, "threshold": 32.0, "heldout_false_positives": 1,
                            "n_heldout_negatives": 3, "false_positives": 1, "n_negatives": 3,
                            "n_positives": len(roles), "auc": None, "tpr_at_1pct_fpr": None, "queries": 8}]
    metrics = {"psnr_y": 21.0 + sparsity, "ssim_y": 0.5, "latency_ms": 150.0, "dense_psnr_y": 21.0,
               "dense_ssim_y": 0.5, "bicubic_psnr_y": 25.0, "bicubic_ssim_y": 0.79, "test_images": 4.0,
               "sr_uap_drop_db": drops[roles[-1]][0], "sr_uap_noise_drop_db": drops[roles[-1]][1]}
    if fingerprint_metrics:  # else the report reads the verdicts off the entry
        metrics["sr_fp_heldout_false_positives"] = 1.0
        if compress != "none":
            metrics.update({"sr_fp_compressed_derived": 1.0, "sr_fp_compressed_score": 33.0})
    rec["metrics"] = metrics
    rec["higher_is_better"] = {"psnr_y": True, "ssim_y": True, "latency_ms": False, "sr_uap_drop_db": False,
                               "sr_uap_noise_drop_db": False, "sr_fp_heldout_false_positives": False}
    return rec


def test_sr_view_shows_sr_attack_and_fingerprint_entries(tmp_path):
    """SR attack / fingerprint entries stay out of the classification tables and show in the sr view."""
    from leaderboard_records import make_record

    from reports.cli import write_leaderboard
    from reports.load import load_runs
    from reports.views import build_views, filter_runs

    cls = make_record("vgg16", "block", 0.5, "tvm", 0)
    records = [sr_record_with_entries("block", 0.1), sr_record_with_entries("none", 0.0, fingerprint_metrics=False),
               cls]
    for rec in records:
        (tmp_path / "runs" / rec["run_id"]).mkdir(parents=True)
        (tmp_path / "runs" / rec["run_id"] / "result.json").write_text(json.dumps(rec))
    data = load_runs(tmp_path / "runs")
    assert not data.skipped and len(data.records) == 3
    sr_ids = {r["run_id"] for r in records[:2]}
    # the classification tables hold the classification record's entries only
    assert set(data.attacks["run_id"]) == set(data.fingerprints["run_id"]) == {cls["run_id"]}
    assert len(data.attacks) == len(cls["attacks"]) and "sr-uap" not in set(data.attacks["attack"])
    assert {t["run_id"] for t in data.transfers} == {cls["run_id"]}
    assert len(data.sr_attacks) == 3 and len(data.sr_fingerprints) == 2 and len(data.sr_transfers) == 2
    views = {v.key: v for v in build_views(data)}
    for key in ("compression", "robustness", "ip"):
        assert set(views[key].table["run_id"]) == {cls["run_id"]}, key
        assert not views[key].table["model"].eq("espcn").any()
    assert not views["compression_robustness"].table["model"].eq("espcn").any()
    assert "sr-outputs" not in set(views["ip"].table["method"])
    assert not any(m.startswith("sr_") for v in views.values() if v.key != "sr" for m in v.metrics)
    sr = views["sr"]
    assert set(sr.table["run_id"]) == sr_ids
    for c in ("sr_uap_drop_db", "sr_uap_noise_drop_db", "sr_fp_verdict", "sr_fp_heldout_false_positives"):
        assert c in sr.metrics, c
    by = sr.table.set_index("compress")
    assert by.loc["block", "sr_uap_drop_db"] == pytest.approx(0.6)  # the shipped (compressed) subject
    assert by.loc["block", "sr_uap_noise_drop_db"] == pytest.approx(0.04)
    assert by.loc["none", "sr_uap_drop_db"] == pytest.approx(0.8)
    assert by.loc["block", "sr_fp_verdict"] == "compressed derived"
    assert by.loc["block", "sr_fp_heldout_false_positives"] == 1.0 == by.loc["none", "sr_fp_heldout_false_positives"]
    assert by.loc["block", "sr_fp_heldout_negatives"] == 3.0
    assert sr.higher_is_better is True and sr.sort_by == "psnr_y" and by.loc["block", "rank"] == 1
    # --filter keeps the SR entries of the runs it keeps
    only = filter_runs(data, "compress == 'none'")
    assert {e["run_id"] for e in only.sr_attacks} == {records[1]["run_id"]} and len(only.sr_fingerprints) == 1
    # every output
    write_leaderboard(tmp_path / "runs", tmp_path / "board")
    board = tmp_path / "board"
    for name in ("attacks.csv", "fingerprints.csv", "robustness.csv", "ip_protection.csv",
                 "compression_robustness.csv", "compression.csv", "sweeps.csv"):
        text = (board / name).read_text()
        assert "sr-uap" not in text and "sr-outputs" not in text and "espcn" not in text, name
    sr_csv = (board / "sr.csv").read_text().splitlines()
    assert len(sr_csv) == 3 and "sr_uap_drop_db,sr_uap_noise_drop_db,sr_fp_verdict" in sr_csv[0]
    assert any("compressed derived" in line for line in sr_csv[1:])
    md = (board / "leaderboard.md").read_text()
    sr_md = md[md.index("## Super-resolution"):]
    assert "UAP PSNR-Y drop dB ↓" in sr_md and "noise PSNR-Y drop dB ↓" in sr_md
    assert "fingerprint verdict" in sr_md and "compressed derived" in sr_md and "held-out false positives ↓" in sr_md
    assert "UAP PSNR-Y drop" not in md[:md.index("## Super-resolution")]
    page = (board / "leaderboard.html").read_text()
    sr_html = page[page.index('id="view-sr"'):]
    sr_html = sr_html[:sr_html.index("</section>")]
    assert 'id="table-sr"' in sr_html and 'data-col="sr_uap_drop_db"' in sr_html and "compressed derived" in sr_html
    details = page[page.index('id="table-attacks"'):]
    assert "sr-uap" not in details[:details.index("</table>")]


def test_no_sr_view_without_sr_runs():
    from reports.load import tables
    from reports.views import build_views

    assert "sr" not in {v.key for v in build_views(tables([]))}


def test_sr_auto_calls_search(sr_runs, sr_env, capsys, monkeypatch):
    """``--compress auto``: the search API is called with the target in ms and its choices are recorded."""
    search = pytest.importorskip("compression.sr_search")
    from compression.sr_deploy import block_prune_sr

    seen = {}

    def fake_search(base, scale, source, settings, *, table=None, log=print):
        seen.update(settings=settings, scale=scale, table=table)
        model, masks = block_prune_sr(base, 0.5)
        return search.SRSearchResult(model=model, masks=masks, choice={"base": "fsrcnn", "layers": {}},
                                     predicted_ms=12.5, val_psnr=20.0, history=[{"stage": "fake"}],
                                     seconds={"search": 0.1})

    monkeypatch.setattr(search, "search_sr", fake_search)
    code, out, err = run_cli(["run", *SMOKE, "--model", "fsrcnn", "--compress", "auto", "--latency-target", "40",
                              "--output-dir", str(sr_env / "auto"), "--cache-dir", str(sr_env / "cache")], capsys)
    assert code == 0, err
    assert seen["settings"].latency_target_ms == 40.0 and seen["settings"].frame_lr == (360, 640)
    assert seen["scale"] == 2 and seen["settings"].threads == 1
    record = load_record(next((sr_env / "auto").iterdir()))
    c = record["compression"]
    assert c["scheme"] == "auto" and c["latency_target_ms"] == 40.0 and c["predicted_ms"] == 12.5
    assert c["choice"]["base"] == "fsrcnn" and c["history"] == [{"stage": "fake"}]
    assert record["config"]["latency_target"] == 40.0 and "search: target 40 ms" in out
    assert record["model"]["cache_hit"]


def test_sr_interrupt_leaves_no_record(sr_runs, sr_env, capsys, monkeypatch):
    import suite.app.sr_pipeline as sp

    def interrupt(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sp, "compress_sr", interrupt)
    out_dir = sr_env / "interrupted"
    code, _, err = run_cli(["run", *SMOKE, "--output-dir", str(out_dir), "--cache-dir", str(sr_env / "cache")],
                           capsys)
    assert code == 130 and "no record" in err
    assert not out_dir.exists() or not any(out_dir.iterdir())


@pytest.mark.parametrize("args, needle", [
    (["--model", "vgg16"], "'vgg16' is a classification model; --task sr takes an SR model (choices: "),
    (["--model", "srcnnn"], "unknown SR model 'srcnnn'"),
    (["--source", "digits16"], "unknown SR source 'digits16' (choices: photos, srfolder)"),
    (["--latency-target", "50"], "--latency-target applies to --compress auto only"),
    (["--compress", "auto"], "needs --latency-target MS"),
    (["--compress", "auto", "--latency-target", "-3"], "milliseconds per 720p frame"),
    (["--scale", "3"], "--scale must be one of 2, 4"),
    (["--attacks", "pgd"], "attack 'pgd' is not an SR attack"),
    (["--fingerprints", "ltrc-examples"], "fingerprint 'ltrc-examples' is not an SR fingerprint"),
    (["--attacks", "sr-uap", "--attack-args", "foo=1"], "unknown --attack-args key 'foo' for sr-uap"),
    (["--fingerprints", "sr-outputs", "--fingerprint-args", "mode=magic"], "SR fingerprint mode must be one of"),
    (["--compress", "pattern"], "--compress pattern is not available for --task sr (choices: none, block, auto)"),
    (["--backend", "tvvm"], "unknown backend"),
    (["--epochs", "3"], "--epochs is a classification training setting"),
    (["--compress", "none", "--sparsity", "0.5"], "needs --compress block"),
    (["--device", "cuda"], "--task sr runs on the CPU only"),
])
def test_sr_bad_input_exits_2_with_one_line(args, needle, capsys, tmp_path, cache_dir):
    code, out, err = run_cli(["run", *SMOKE, *args, "--output-dir", str(tmp_path / "runs")], capsys)
    assert code == 2
    assert needle in err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("args, needle", [
    (["run", "--task", "segmentation"], "unknown task 'segmentation' (choices: classification, sr)"),
    (["run", "--scale", "2"], "--scale applies to --task sr only"),
    (["train", "--task", "sr"], "`suite train` trains classifiers"),
])
def test_task_errors(args, needle, capsys, tmp_path, cache_dir):
    code, _, err = run_cli(args, capsys)
    assert code == 2 and needle in err and err.count("\n") == 1


def test_classification_config_unchanged():
    """A classification config has no SR fields (its config.yaml and grid job identity stay as before)."""
    from suite.core.config import RunConfig, Task

    d = RunConfig(profile="smoke").resolved().as_dict()
    assert "task" not in d and "scale" not in d and "latency_target" not in d
    sr = RunConfig(task="sr", model="espcn", source="photos", profile="smoke").resolved()
    assert sr.task is Task.SR and sr.scale == 2 and sr.as_dict()["task"] == "sr"
    assert json.loads(json.dumps(sr.as_dict()))["task"] == "sr"


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["--backend", "onnx", "--compress", "block", "--model", "espcn"],
                                   ["--scale", "4", "--backend", "tvm", "--compress", "block"]])
def test_sr_more_backends_and_x4(extra, sr_env, tmp_path, capsys, one_torch_thread):
    code, out, err = run_cli(["run", *SMOKE, *extra, "--output-dir", str(tmp_path / "runs"),
                              "--cache-dir", str(sr_env / "cache"), "--json"], capsys)
    assert code == 0, err
    record = load_record(Path(json.loads(out)["run_dir"]))
    assert record["task"] == "sr" and record["deployment"]["max_abs_diff"] <= 1e-3
    assert set(record["deployment"]["latency"]) == {*DENSE_RUNTIMES, "deployed"}


# ------------------------------------------------------------------ SR stages: --attacks sr-uap, --fingerprints sr-outputs

def test_sr_uap_stage(sr_runs, sr_env, tmp_path, capsys):
    """``--attacks sr-uap``: crafted on dense, scored on dense and compressed beside same-norm noise."""
    code, out, err = run_cli(["run", *SMOKE, "--model", "fsrcnn", "--compress", "block", "--attacks", "sr-uap",
                              "--attack-args", "eps=8/255", "--output-dir", str(tmp_path / "runs"),
                              "--cache-dir", str(sr_env / "cache"), "--json"], capsys)
    assert code == 0, err
    record = load_record(Path(json.loads(out)["run_dir"]))
    assert record["config"]["attacks"] == ["sr-uap"] and "attack" in record["timings"]
    entries = {e["evaluated_on"]: e for e in record["attacks"]}
    assert set(entries) == {"dense", "compressed"} and entries["compressed"]["shipped"]
    for role, e in entries.items():
        assert e["id"] == f"sr-uap:dense->{role}" and e["attack"] == "sr-uap" and e["crafted_on"] == "dense"
        assert e["norm"] == "linf" and e["eps"] == pytest.approx(8 / 255) and e["settings"]["steps"] == 5
        assert e["eval_images"] == record["metrics"]["test_images"] and e["universal"]
        for key in ("uap", "noise"):
            assert np.isfinite(e[key]["drop_db"]) and np.isfinite(e[key]["psnr_hr"])
        assert e["drop_db"] == e["uap"]["drop_db"] >= 0 and e["noise_drop_db"] == e["noise"]["drop_db"]
    dense = entries["dense"]
    assert dense["drop_db"] > dense["noise_drop_db"]  # white box beats same-norm noise
    m = record["metrics"]
    assert m["sr_uap_drop_db"] == entries["compressed"]["drop_db"] >= 0
    assert np.isfinite(m["sr_uap_noise_drop_db"]) and record["higher_is_better"]["sr_uap_drop_db"] is False
    t = record["transfer"]["sr-uap"]
    assert t["rows"] == ["dense"] and t["values"][0][t["cols"].index("compressed")] == m["sr_uap_drop_db"]
    assert "sr-uap eps 8/255 crafted on dense" in format_sr_summary(Path(json.loads(out)["run_dir"]), record)
    # the reports keep the SR entries out of the classification tables and summarise them in the sr view
    from reports.cli import write_leaderboard

    summary = write_leaderboard(tmp_path / "runs", tmp_path / "board")
    assert summary["records"] == 1 and "sr-uap" not in (tmp_path / "board" / "attacks.csv").read_text()
    header, row = (tmp_path / "board" / "sr.csv").read_text().splitlines()
    assert "sr_uap_drop_db" in header.split(",") and "sr_uap_noise_drop_db" in header.split(",")


def test_sr_fingerprint_stage(sr_runs, sr_env, tmp_path, capsys):
    """``--fingerprints sr-outputs``: the compressed model is called derived; negatives are cached.

    The smoke models are barely trained (30 steps), so block pruning plus its fine-tune moves the owner about as
    far as another seed does at high sparsity; a light 0.1 sparsity keeps the copy recognisably derived here.
    """
    args = ["run", *SMOKE, "--model", "fsrcnn", "--compress", "block", "--sparsity", "0.1",
            "--fingerprints", "sr-outputs", "--cache-dir", str(sr_env / "cache"), "--json"]
    code, out, err = run_cli([*args, "--output-dir", str(tmp_path / "a")], capsys)
    assert code == 0, err
    record = load_record(Path(json.loads(out)["run_dir"]))
    (entry,) = record["fingerprints"]
    assert entry["method"] == "sr-outputs" and entry["owner"] == "dense" and entry["score"] == "psnr"
    assert entry["verdicts"]["compressed"]["verdict"] == "derived"
    assert entry["verdicts"]["dense"]["verdict"] == "derived"
    assert entry["negatives"]["calibration"] and entry["negatives"]["heldout"]
    assert entry["n_heldout_negatives"] == 1 and entry["auc"] is None
    assert record["metrics"]["sr_fp_compressed_derived"] == 1.0
    # a second run loads the negatives from the cache
    code, out, err = run_cli([*args, "--output-dir", str(tmp_path / "b")], capsys)
    assert code == 0, err
    again = load_record(Path(json.loads(out)["run_dir"]))["fingerprints"][0]
    assert all(n["cache_hit"] for n in again["negatives"]["models"])
    assert again["verdicts"] == entry["verdicts"]
