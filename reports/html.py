"""A single self-contained HTML leaderboard: no external files or network.

Plots are embedded as base64 PNG; tables sort by clicking a header (a few
lines of inline JavaScript; empty cells stay last).  After load the page
records, on ``<body data-plots=...>``, where each plot image sits and whether
the browser decoded it -- the browser test reads this back.

Element ids (stable, for tests and links): ``view-compression``,
``view-robustness``, ``view-compression_robustness``, ``view-ip``, ``view-sr``
(only with super-resolution runs); tables
``table-<view>`` and ``table-attacks``; plots ``plot-<name>`` (see
``reports.plots.PLOTS``).  The attack entries' budget and black-box columns
that no entry fills (older records) are left out of ``table-attacks``.
"""

from __future__ import annotations

import base64
import html

from reports.metrics import TEXT_COLUMNS, arrow, cell, header
from reports.plots import PLOTS
from reports.views import OPTIONAL_DETAIL, SR_ATTACK_METRICS, SR_FP_METRICS, SR_NOTE, View, attack_details

CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #1b1b1b; background: #fff; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 2px solid #ddd; padding-bottom: 4px; }
nav a { margin-right: 16px; }
.summary { color: #555; }
table.board { border-collapse: collapse; font-size: 13px; margin: 12px 0; }
table.board th, table.board td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
table.board td.txt, table.board th.txt { text-align: left; }
table.board th { background: #f3f3f3; cursor: pointer; user-select: none; white-space: nowrap; }
table.board th[data-order=asc]::after { content: " \\25B2"; }
table.board th[data-order=desc]::after { content: " \\25BC"; }
table.board tbody tr:nth-child(even) { background: #fafafa; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
figure.plot { margin: 0; border: 1px solid #eee; padding: 6px; }
figure.plot figcaption { font-size: 12px; color: #555; }
.nodata { color: #888; font-style: italic; padding: 8px 0; }
"""

JS = """
function sortTable(table, col, th) {
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const asc = th.dataset.order !== "asc";
  table.querySelectorAll("th").forEach(h => delete h.dataset.order);
  th.dataset.order = asc ? "asc" : "desc";
  rows.sort((a, b) => {
    const x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
    if (x === "" || y === "") return (x === "") - (y === "");
    const nx = parseFloat(x), ny = parseFloat(y);
    const c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
    return asc ? c : -c;
  });
  rows.forEach(r => body.appendChild(r));
}
document.querySelectorAll("table.sortable").forEach(table => {
  table.querySelectorAll("th").forEach((th, i) => th.addEventListener("click", () => sortTable(table, i, th)));
});
window.addEventListener("load", () => {
  const plots = [];
  document.querySelectorAll("figure.plot img").forEach(img => {
    const r = img.getBoundingClientRect();
    plots.push({id: img.closest("figure").id, decoded: img.complete && img.naturalWidth > 0,
                x: Math.round(r.left + window.scrollX), y: Math.round(r.top + window.scrollY),
                w: Math.round(r.width), h: Math.round(r.height)});
  });
  document.body.setAttribute("data-plots", JSON.stringify(plots));
});
"""

def _table(df, columns: list[str], table_id: str, hib: dict[str, bool]) -> str:
    if len(df) == 0:
        return f'<p class="nodata" id="{table_id}-nodata">no data</p>'
    head = "".join(
        f'<th class="{"txt" if c in TEXT_COLUMNS else "num"}" data-col="{html.escape(c)}" '
        f'title="{html.escape(c + arrow(c, hib))}">{html.escape(header(c, hib))}</th>' for c in columns)
    body = []
    for record in df[columns].to_dict("records"):
        cells = []
        for c in columns:
            v = record[c]
            raw = "" if v is None or (isinstance(v, float) and v != v) else str(v)
            cls = "txt" if c in TEXT_COLUMNS else "num"
            cells.append(f'<td class="{cls}" data-v="{html.escape(raw)}">{html.escape(cell(c, v))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="board sortable" id="{table_id}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _figure(name: str, png: bytes | None) -> str:
    title = PLOTS[name][0]
    if not png:
        return (f'<figure class="plot-empty" id="plot-{name}"><figcaption>{html.escape(title)}</figcaption>'
                f'<p class="nodata">no data</p></figure>')
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure class="plot" id="plot-{name}"><img alt="{html.escape(title)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(title)}</figcaption></figure>')


def render(views: list[View], data, plots: dict[str, bytes | None], *, title: str = "Leaderboard",
           generated: str = "") -> str:
    """The whole page as one string."""
    hib = data.higher_is_better
    parts = [f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
             f'<meta name="viewport" content="width=device-width, initial-scale=1">'
             f'<title>{html.escape(title)}</title><style>{CSS}</style></head><body>',
             f"<h1>{html.escape(title)}</h1>"]
    summary = f"{len(data.records)} records"
    if data.skipped:
        summary += f", {len(data.skipped)} files skipped"
    if generated:
        summary += f"; generated {generated}"
    parts.append(f'<p class="summary">{html.escape(summary)}. Arrows: ↑ higher is better, ↓ lower is better; '
                 f"click a column header to sort.</p>")
    parts.append("<nav>" + "".join(f'<a href="#view-{v.key}">{html.escape(v.title)}</a>' for v in views) + "</nav>")
    for view in views:
        parts.append(f'<section class="view" id="view-{view.key}"><h2>{html.escape(view.title)}</h2>')
        if view.sort_by and not view.empty:
            order = "highest" if view.higher_is_better else "lowest"
            parts.append(f'<p class="summary">Ranked by <code>{html.escape(view.sort_by)}</code> '
                         f"({order} first).</p>")
        if view.key == "compression_robustness":
            from reports.tradeoff import NOTE

            parts.append(f'<p class="summary">{html.escape(NOTE)}</p>')
        if view.key == "sr" and any(m in view.metrics for m in SR_ATTACK_METRICS + SR_FP_METRICS):
            parts.append(f'<p class="summary">{html.escape(SR_NOTE)}</p>')
        figs = [_figure(name, plots.get(name)) for name, (_, where) in PLOTS.items() if where == view.key]
        if figs:
            parts.append('<div class="plots">' + "".join(figs) + "</div>")
        parts.append(_table(view.table, view.columns, f"table-{view.key}", hib))
        if view.key == "robustness":
            details = attack_details(data)
            if len(details):
                parts.append(f"<details><summary>All {len(details)} attack entries</summary>")
                shown = [c for c in details.columns if c != "run_id"
                         and not (c in OPTIONAL_DETAIL and details[c].isna().all())]
                parts.append(_table(details, shown, "table-attacks", hib))
                parts.append("</details>")
        parts.append("</section>")
    if data.failed_jobs:
        import pandas as pd

        df = pd.DataFrame([{"job": j.get("name"), "attempts": j.get("attempts"), "error": j.get("error")}
                           for j in data.failed_jobs])
        parts.append('<section id="failed"><h2>Failed grid jobs</h2>'
                     + _table(df, ["job", "attempts", "error"], "table-failed", {}) + "</section>")
    if data.skipped:
        items = "".join(f"<li><code>{html.escape(str(p))}</code>: {html.escape(r)}</li>" for p, r in data.skipped)
        parts.append(f'<section id="skipped"><h2>Skipped files</h2><ul>{items}</ul></section>')
    parts.append(f"<script>{JS}</script></body></html>")
    return "\n".join(parts)

