"""CSV files with stable column names (raw floats, no formatting, no arrows).

``runs.csv``: every record, identity and facts first (``reports.load``'s
``IDENTITY`` + ``RUN_FACTS``), then metrics in name order.  One file per view
(``compression.csv``, ``robustness.csv``, ``ip_protection.csv``) with the
view's fixed columns, plus ``attacks.csv`` and ``fingerprints.csv`` (every
entry; ROC points stay in the records).
"""

from __future__ import annotations

from pathlib import Path

from reports.load import IDENTITY, RUN_FACTS
from reports.views import View, attack_details

VIEW_FILES = {"compression": "compression.csv", "robustness": "robustness.csv", "ip": "ip_protection.csv"}


def runs_columns(runs) -> list[str]:
    fixed = list(IDENTITY) + list(RUN_FACTS)
    return fixed + sorted(c for c in runs.columns if c not in fixed)


def write_csvs(views: list[View], data, out_dir: Path) -> list[Path]:
    """Write the CSV files into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    runs = data.runs.reindex(columns=runs_columns(data.runs))
    written.append(_write(runs, out_dir / "runs.csv"))
    for view in views:
        written.append(_write(view.table[["rank", "run_id", *view.identity, *view.metrics]],
                              out_dir / VIEW_FILES[view.key]))
    written.append(_write(attack_details(data), out_dir / "attacks.csv"))
    fps = data.fingerprints.drop(columns=["roc"], errors="ignore")
    written.append(_write(fps, out_dir / "fingerprints.csv"))
    return written


def _write(df, path: Path) -> Path:
    from suite.core.cache import atomic_write_text

    atomic_write_text(path, df.to_csv(index=False))
    return path
