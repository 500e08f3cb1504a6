"""The human-readable summary of ``suite run`` (suite/app/summary.py) and the ``--json`` line."""

from __future__ import annotations

import json

import pytest

from leaderboard_records import make_record
from suite.app.cli import main
from suite.app.summary import format_summary


def _line(text: str, start: str) -> str:
    found = [line for line in text.splitlines() if line.lstrip().startswith(start)]
    assert len(found) == 1, (start, text)
    return found[0]


def _compressed_record():
    record = make_record("resnet20", "block", 0.75, "tvm", 0)
    dense_to_deployed = [e for e in record["attacks"] if e["attack"] == "uap-pgd"
                         and e["crafted_on"] == "compressed" and e["evaluated_on"] == "deployed"]
    for base in dense_to_deployed:  # a noise baseline at the same budgets
        record["attacks"].append({**base, "attack": "noise-uniform", "id": base["id"].replace("uap-pgd", "noise"),
                                  "fooling_rate": 0.0123})
    record["metrics"]["noise_uniform_fooling_rate"] = 0.0123
    return record


def test_summary_of_a_compressed_deployed_run():
    record = _compressed_record()
    text = format_summary("runs/R1", record)
    metrics, comp, dep = record["metrics"], record["compression"], record["deployment"]
    assert text.splitlines()[0].split() == ["run", "runs/R1"]
    assert _line(text, "model").split()[1] == record["model"]["id"]
    assert _line(text, "source").split() == ["source", "digits16"]
    assert f"clean {metrics['clean_acc']:.3f} (dense {comp['acc_dense']:.3f})" in _line(text, "accuracy")
    assert _line(text, "compression").split(None, 1)[1] == (
        f"block: sparsity {comp['achieved_sparsity']:.3f} (target 0.750), MACs ratio {comp['macs_ratio']:.3f}")
    verdict = "faster than" if dep["speedup_vs_best_dense"] > 1 else "SLOWER than"
    assert _line(text, "deployment").split(None, 1)[1] == (
        f"tvm: latency p50 {dep['latency_ms']['p50']:.3f} ms, speedup {dep['speedup_vs_dense']:.2f}x vs dense, "
        f"{dep['speedup_vs_best_dense']:.2f}x vs the best dense runtime ({verdict} {dep['best_dense_runtime']} "
        f"at {dep['best_dense_latency_ms']:.3f} ms)")
    # each attack's headline (the record's metric), crafted on the nearest white box, evaluated on what ships
    uap = _line(text, "uap-pgd").split()
    assert uap[:2] == ["uap-pgd", "linf"] and uap[3:6] == ["compressed", "->", "deployed"]
    assert uap[6:8] == ["fooling_rate", f"{metrics['uap_pgd_fooling_rate']:.3f}"]
    assert _line(text, "pgd ").split()[6:8] == ["robust_acc", f"{metrics['pgd_robust_acc']:.3f}"]
    noise = _line(text, "noise-uniform")
    assert noise.split()[6:8] == ["fooling_rate", "0.012"] and noise.endswith("noise baseline")
    lines = text.splitlines()
    assert lines.index(noise) > lines.index(_line(text, "pgd "))  # baselines after the attacks
    for fp in record["fingerprints"]:
        assert _line(text, fp["id"]).split() == [fp["id"], f"{fp['auc']:.3f}", f"{fp['tpr_at_1pct_fpr']:.3f}",
                                                 f"{fp['false_positives']}/{fp['n_negatives']}"]
    assert _line(text, "method").split() == ["method", "AUC", "TPR@1%FPR", "false", "positives"]
    assert lines[-1].split() == ["total", "12.5", "s"]


def test_summary_of_an_uncompressed_run_and_of_a_schema_1_0_record():
    text = format_summary("runs/R2", make_record("resnet20", "none", 0.0, "torch", 0))
    assert "dense" not in _line(text, "accuracy")
    assert _line(text, "compression").split() == ["compression", "none"]
    assert _line(text, "deployment").split() == ["deployment", "torch"]
    assert _line(text, "uap-pgd").split()[3:6] == ["dense", "->", "dense"]
    assert "noise baseline" not in text and "note" not in text
    old = format_summary("runs/R3", make_record("resnet20", "nm", 0.5, "torch", 1, version="1.0"))
    assert "attacks" not in old and "fingerprints" not in old
    assert _line(old, "compression").split()[:2] == ["compression", "nm:"]


def test_summary_black_box_headline_is_on_what_ships():
    record = make_record("resnet20", "block", 0.5, "tvm", 0)
    for crafted in ("dense", "compressed", "deployed"):
        record["attacks"].append({"id": f"square:{crafted}->deployed", "attack": "square", "universal": False,
                                  "black_box": True, "norm": "linf", "eps": 8 / 255, "crafted_on": crafted,
                                  "evaluated_on": "deployed", "robust_acc": {"deployed": 0.25}.get(crafted, 0.5),
                                  "queries_per_image": 123.4})
    record["metrics"]["square_robust_acc"] = 0.25
    row = _line(format_summary("runs/R4", record), "square")
    assert row.split()[3:8] == ["deployed", "->", "deployed", "robust_acc", "0.250"]
    assert row.endswith("123 queries/image")


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_cli_run_prints_the_summary_or_the_json_line(extra, monkeypatch, capsys, tmp_path):
    import suite.app.pipeline

    record = _compressed_record()
    monkeypatch.setattr(suite.app.pipeline, "run", lambda cfg: (tmp_path / "runs" / record["run_id"], record))
    assert main(["run", "--model", "resnet20", "--profile", "smoke", "--output-dir", str(tmp_path), *extra]) == 0
    out = capsys.readouterr().out
    if extra:
        assert out.count("\n") == 1
        assert json.loads(out) == {"run_dir": str(tmp_path / "runs" / record["run_id"]),
                                   "model": record["model"]["id"], **record["metrics"], "seconds": 12.5}
    else:
        assert out == format_summary(tmp_path / "runs" / record["run_id"], record) + "\n"
        assert _line(out, "run").split() == ["run", str(tmp_path / "runs" / record["run_id"])]
