"""``python -m suite leaderboard DIR``: records -> Markdown, CSV and HTML leaderboards.

Files written into ``-o OUT`` (default ``DIR/leaderboard``): ``leaderboard.md``,
the CSVs of :mod:`reports.csvout`, ``leaderboard.html``.  Files below ``DIR``
that are not usable records are skipped with a warning naming them.  This
module imports nothing heavy at import time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

FORMATS = ("md", "csv", "html")


def add_command(sub: Any) -> Callable[[argparse.Namespace], int]:
    """Add the ``leaderboard`` subcommand to ``sub``; returns its handler."""
    p = sub.add_parser("leaderboard", help="leaderboards (Markdown, CSV, HTML) from a runs directory",
                       description="Read every record below DIR and write ranked leaderboards.")
    p.add_argument("runs_dir", metavar="DIR", help="runs directory (DIR/<run_id>/result.json)")
    p.add_argument("-o", "--output", default=None, help="output directory (default DIR/leaderboard)")
    p.add_argument("--format", default="md,csv,html", help="comma-separated: md, csv, html (default all)")
    p.add_argument("--sort", default=None,
                   help="rank every view that has this metric by it (METRIC, METRIC:asc or METRIC:desc); "
                        "default per view: clean_acc, uap_fooling_rate, U; the compression x robustness "
                        "view is ranked only by a metric given here")
    p.add_argument("--filter", default=None,
                   help="keep runs matching a pandas query on run columns, e.g. "
                        "\"backend == 'onnx' and sparsity >= 0.5\"")
    p.add_argument("--title", default="Leaderboard", help="page and document title")
    return cmd_leaderboard


def parse_formats(text: str) -> list[str]:
    from suite.core.errors import ConfigError

    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    formats = ["md" if f == "markdown" else f for f in formats]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"unknown --format {', '.join(bad) or text!r} (choices: {', '.join(FORMATS)})")
    return list(dict.fromkeys(formats))


def write_leaderboard(runs_dir: str | Path, out_dir: str | Path, *, formats: list[str] | tuple[str, ...] = FORMATS,
                      sort: str | None = None, filter_expr: str | None = None, title: str = "Leaderboard",
                      warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Load, rank and write; returns ``{"records", "skipped", "written"}``."""
    from suite.core.cache import atomic_write_text
    from suite.core.errors import ConfigError
    from suite.core.record import utc_now

    from reports.load import load_runs
    from reports.views import all_metrics, build_views, filter_runs, parse_sort

    say = warn or (lambda m: print(f"warning: {m}", file=sys.stderr))
    data = load_runs(runs_dir)
    for path, reason in data.skipped:
        say(f"skipping {path}: {reason}")
    data = filter_runs(data, filter_expr)
    views = build_views(data, sort)
    metric, _ = parse_sort(sort)
    if metric and metric not in all_metrics(views):
        raise ConfigError(f"unknown --sort metric {metric!r} (choices: {', '.join(sorted(all_metrics(views)))})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    generated = utc_now().strftime("%Y-%m-%d %H:%M UTC")
    written: list[Path] = []
    if "md" in formats:
        from reports.markdown import render

        written.append(out / "leaderboard.md")
        atomic_write_text(written[-1], render(views, data, title=title, generated=generated) + "\n")
    if "csv" in formats:
        from reports.csvout import write_csvs

        written.extend(write_csvs(views, data, out))
    if "html" in formats:
        from reports.html import render as render_html
        from reports.plots import make_plots

        written.append(out / "leaderboard.html")
        atomic_write_text(written[-1], render_html(views, data, make_plots(data), title=title, generated=generated))
    return {"records": len(data.records), "skipped": len(data.skipped), "written": [str(p) for p in written]}


def cmd_leaderboard(args: argparse.Namespace) -> int:
    formats = parse_formats(args.format)
    out = args.output or str(Path(args.runs_dir) / "leaderboard")
    summary = write_leaderboard(args.runs_dir, out, formats=formats, sort=args.sort, filter_expr=args.filter,
                                title=args.title)
    print(json.dumps(summary))
    return 0
