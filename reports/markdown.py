"""Markdown leaderboard: one GitHub table per view (tabulate), arrows and ranks."""

from __future__ import annotations

from reports.metrics import TEXT_COLUMNS, cell, header
from reports.views import SR_ATTACK_METRICS, SR_FP_METRICS, SR_NOTE, View


def table_rows(df, columns: list[str]) -> list[list[str]]:
    """Formatted cells of ``df[columns]`` (floats become text only here)."""
    return [[cell(c, record[c]) for c in columns] for record in df[columns].to_dict("records")]


def render_table(df, columns: list[str], higher_is_better: dict[str, bool] | None = None) -> str:
    from tabulate import tabulate

    if len(df) == 0:
        return "_no data_"
    headers = [header(c, higher_is_better) for c in columns]
    align = ["left" if c in TEXT_COLUMNS else "right" for c in columns]
    return tabulate(table_rows(df, columns), headers=headers, tablefmt="github", disable_numparse=True,
                    colalign=align)


def render(views: list[View], data, *, title: str = "Leaderboard", generated: str = "") -> str:
    """The whole Markdown report."""
    hib = data.higher_is_better
    out = [f"# {title}", ""]
    out.append(f"{len(data.records)} records" + (f", {len(data.skipped)} files skipped" if data.skipped else "")
               + (f"; generated {generated}" if generated else "") + ".")
    out.append("Arrows: ↑ higher is better, ↓ lower is better; rank 1 is best on the sort metric.")
    out.append("")
    for view in views:
        out.append(f"## {view.title}")
        out.append("")
        if view.sort_by and not view.empty:
            order = "highest" if view.higher_is_better else "lowest"
            out.append(f"Ranked by `{view.sort_by}` ({order} first).")
            out.append("")
        if view.key == "compression_robustness":
            from reports.tradeoff import NOTE

            out.extend([NOTE, ""])
        if view.key == "sr" and any(m in view.metrics for m in SR_ATTACK_METRICS + SR_FP_METRICS):
            out.extend([SR_NOTE, ""])
        out.append(render_table(view.table, view.columns, hib))
        out.append("")
        if view.key == "robustness" and len(data.attacks):
            out.append(f"All {len(data.attacks)} attack entries (budgets, crafted on / evaluated on): "
                       "`attacks.csv` and the HTML page; budget sweeps: `sweeps.csv`.")
            out.append("")
    if data.failed_jobs:
        out.append("## Failed grid jobs")
        out.append("")
        from tabulate import tabulate

        out.append(tabulate([[j.get("name"), j.get("attempts"), j.get("error")] for j in data.failed_jobs],
                            headers=["job", "attempts", "error"], tablefmt="github"))
        out.append("")
    if data.skipped:
        out.append("## Skipped files")
        out.append("")
        out.extend(f"- `{path}`: {reason}" for path, reason in data.skipped)
        out.append("")
    return "\n".join(out)
