"""One progress line per stage: ``[k/N] name ...`` when it starts, ``done in X s`` when it ends."""

from __future__ import annotations

from suite.app.pipeline import Timer, count_stages
from suite.core.config import RunConfig


def test_timer_prints_one_numbered_line_per_stage_start_and_end():
    lines: list[str] = []
    timer = Timer(say=lines.append, total=2)
    with timer.stage("model"):
        pass
    with timer.stage("attack"):
        pass
    assert lines[0] == "[1/2] model ..." and lines[2] == "[2/2] attack ..."
    assert lines[1].startswith("[1/2] model done in ") and lines[3].startswith("[2/2] attack done in ")
    assert set(timer.seconds) == {"model", "attack"}
    quiet = Timer()
    with quiet.stage("model"):
        pass
    assert "model" in quiet.seconds


def test_stage_count_follows_the_config():
    full = RunConfig(model="resnet20", profile="smoke").resolved()
    none = RunConfig(model="resnet20", profile="smoke", attacks=(), fingerprints=()).resolved()
    assert count_stages(full) == count_stages(none) + 2 == 7
