"""The HTML leaderboard in a real browser: headless Chromium renders tables and plots.

Skipped where no Chromium is installed (``.ci/run`` installs Debian's
``chromium`` when it can).  See ``browser_check`` for how the page is read
back: rows from the DOM the browser built, plot positions from the page's own
script, pixels from a screenshot.  ``test_grid`` runs the same check on the
page made from real grid records.
"""

from __future__ import annotations

import pytest
from PIL import ImageStat

from browser_check import needs_browser, render
from leaderboard_records import GRID, write_runs
from reports.cli import write_leaderboard

pytestmark = [pytest.mark.browser, needs_browser]

ALL_PLOTS = {"plot-accuracy_vs_sparsity", "plot-speedup_vs_sparsity", "plot-uap_vs_budget",
             "plot-robust_acc_vs_budget", "plot-robustness_vs_sparsity", "plot-transfer_heatmaps",
             "plot-roc_curves"}


def test_html_leaderboard_renders_in_chromium(tmp_path):
    runs = tmp_path / "runs"
    records = write_runs(runs)
    out = tmp_path / "board"
    write_leaderboard(runs, out, formats=("html",), warn=lambda m: None)
    page = render(out / "leaderboard.html", tmp_path)

    # the three views with their tables and rows, in the DOM the browser built
    for view, rows in (("compression", len(GRID) + 1), ("robustness", len(GRID)), ("ip", 2 * len(GRID))):
        assert f'id="view-{view}"' in page.dom
        assert page.table_rows(f"table-{view}") == rows, view
    assert page.table_rows("table-attacks") == sum(len(r["attacks"]) for r in records if "attacks" in r)
    # every plot decoded by the browser, and drawn: its screen area is not blank
    assert {p["id"] for p in page.plots} == ALL_PLOTS
    for p in page.plots:
        assert p["decoded"] and p["w"] > 200 and p["h"] > 150, p
        stddev, colours = page.plot_pixels(p)
        assert stddev > 15 and colours > 50, f"{p['id']} looks blank ({stddev:.1f}, {colours} colours)"
    # the page is not blank outside the plots either (title and tables drew text)
    top = page.screenshot.crop((0, 0, page.screenshot.size[0], 200)).convert("L")
    assert ImageStat.Stat(top).stddev[0] > 5
