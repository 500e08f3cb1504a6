"""The HTML leaderboard in a real browser: headless Chromium renders tables and plots.

Skipped where no Chromium is installed (``.ci/run`` installs Debian's
``chromium`` when it can).  Two runs of the browser at the same window width:
``--dump-dom`` gives the DOM after scripts ran (table rows, and where each
plot image sits and whether it was decoded), ``--screenshot`` gives pixels;
every plot's area of the screenshot must hold a real drawing.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess

import pytest

from leaderboard_records import GRID, write_runs
from reports.cli import write_leaderboard

pytestmark = pytest.mark.browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH = 1400


def _browser() -> str | None:
    env = os.environ.get("SUITE_CHROMIUM")
    if env:
        return env
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


BROWSER = _browser()
needs_browser = pytest.mark.skipif(
    BROWSER is None, reason="Chromium is not installed (apt-get install chromium; .ci/run installs it when it "
                            "can; or set SUITE_CHROMIUM=/path/to/chrome)")


def _chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           "--disable-extensions", "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


@needs_browser
def test_html_leaderboard_renders_in_chromium(tmp_path):
    from PIL import Image, ImageStat

    runs = tmp_path / "runs"
    write_runs(runs)
    out = tmp_path / "board"
    write_leaderboard(runs, out, formats=("html",), warn=lambda m: None)
    url = (out / "leaderboard.html").resolve().as_uri()

    dom = _chromium(f"--window-size={WIDTH},1200", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    # the three views with their tables and rows, in the DOM the browser built
    for view, rows in (("compression", len(GRID) + 1), ("robustness", len(GRID)), ("ip", 2 * len(GRID))):
        assert f'id="view-{view}"' in page
        m = re.search(rf'<table[^>]*id="table-{view}".*?<tbody>(.*?)</tbody>', page, re.S)
        assert m, f"table-{view} missing"
        assert m.group(1).count("<tr>") == rows
    # the page's own script reported every plot as decoded, with a size
    m = re.search(r'<body[^>]*data-plots="([^"]*)"', page)
    assert m, "the page script did not run"
    plots = json.loads(html.unescape(m.group(1)))
    assert {p["id"] for p in plots} == {"plot-accuracy_vs_sparsity", "plot-speedup_vs_sparsity",
                                        "plot-uap_vs_budget", "plot-transfer_heatmaps", "plot-roc_curves"}
    assert all(p["decoded"] and p["w"] > 200 and p["h"] > 150 for p in plots), plots

    height = max(p["y"] + p["h"] for p in plots) + 50
    shot = tmp_path / "shot.png"
    res = _chromium(f"--window-size={WIDTH},{height}", f"--screenshot={shot}", url)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (WIDTH, height)
    for p in plots:
        area = image.crop((p["x"], p["y"], p["x"] + p["w"], p["y"] + p["h"]))
        stat = ImageStat.Stat(area.convert("L"))
        colours = len(area.getcolors(maxcolors=1 << 16) or range(1 << 16))
        assert stat.stddev[0] > 15, f"{p['id']} looks blank (stddev {stat.stddev[0]:.1f})"
        assert colours > 50, f"{p['id']} has only {colours} colours"
    # and the page is not blank outside the plots either (tables drew text)
    top = image.crop((0, 0, WIDTH, 200)).convert("L")
    assert ImageStat.Stat(top).stddev[0] > 5
