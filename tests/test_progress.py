"""One progress line per stage: ``[k/N] name: X s (run T s)`` when it finishes."""

from __future__ import annotations

from suite.app.pipeline import Timer, count_stages
from suite.core.config import RunConfig


def test_timer_prints_one_numbered_line_per_finished_stage():
    lines: list[str] = []
    timer = Timer(say=lines.append, total=2)
    with timer.stage("model"):
        pass
    with timer.stage("attack"):
        pass
    assert len(lines) == 2
    assert lines[0].startswith("[1/2] model: ") and lines[1].startswith("[2/2] attack: ")
    assert set(timer.seconds) == {"model", "attack"}
    try:
        with timer.stage("fingerprint"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert len(lines) == 2 and "fingerprint" in timer.seconds  # a failed stage prints no progress line
    quiet = Timer()
    with quiet.stage("model"):
        pass
    assert "model" in quiet.seconds


def test_stage_count_follows_the_config():
    full = RunConfig(model="resnet20", profile="smoke").resolved()
    none = RunConfig(model="resnet20", profile="smoke", attacks=(), fingerprints=()).resolved()
    assert count_stages(full) == count_stages(none) + 2 == 7


def test_zoo_jobs_report_time_left_from_the_jobs_done():
    from fingerprints.executor import eta_text

    assert eta_text(30.0, 3, 9) == "; about 60 s left"  # 10 s of wall time per finished job, 6 to go
    assert eta_text(30.0, 9, 9) == "" and eta_text(0.0, 0, 9) == ""
