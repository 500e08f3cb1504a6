"""Headless Chromium helpers for the HTML report tests.

``render(html_path, tmp_dir)`` runs the browser twice at the same width:
``--dump-dom`` (the DOM after scripts ran: table rows, and the page's own
report on ``<body data-plots=...>`` of where each plot image sits and whether
it was decoded) and ``--screenshot`` tall enough to hold every plot.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH = 1400


def chromium_path() -> str | None:
    env = os.environ.get("SUITE_CHROMIUM")
    if env:
        return env
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


needs_browser = pytest.mark.skipif(
    chromium_path() is None,
    reason="Chromium is not installed (apt-get install chromium; .ci/run installs it when it can; "
           "or set SUITE_CHROMIUM=/path/to/chrome)")


def _chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    cmd = [chromium_path() or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--no-first-run", "--disable-extensions", "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class Rendered:
    dom: str
    plots: list[dict[str, Any]]   # {"id", "decoded", "x", "y", "w", "h"}
    screenshot: Any               # PIL.Image (RGB)

    def table_rows(self, table_id: str) -> int:
        m = re.search(rf'<table[^>]*id="{table_id}".*?<tbody>(.*?)</tbody>', self.dom, re.S)
        return -1 if m is None else m.group(1).count("<tr>")

    def plot_pixels(self, plot: dict[str, Any]) -> tuple[float, int]:
        """(grey-level standard deviation, number of distinct colours) of a plot's screen area."""
        from PIL import ImageStat

        area = self.screenshot.crop((plot["x"], plot["y"], plot["x"] + plot["w"], plot["y"] + plot["h"]))
        colours = area.getcolors(maxcolors=1 << 16)
        return ImageStat.Stat(area.convert("L")).stddev[0], (1 << 16) if colours is None else len(colours)


def render(page: Path, tmp_dir: Path) -> Rendered:
    from PIL import Image

    url = page.resolve().as_uri()
    dom = _chromium(f"--window-size={WIDTH},1200", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'<body[^>]*data-plots="([^"]*)"', dom.stdout)
    assert m, "the page's script did not run"
    plots = json.loads(html.unescape(m.group(1)))
    height = max([p["y"] + p["h"] for p in plots] + [1000]) + 50
    shot = tmp_dir / "screenshot.png"
    res = _chromium(f"--window-size={WIDTH},{height}", f"--screenshot={shot}", url)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (WIDTH, height)
    return Rendered(dom.stdout, plots, image)
