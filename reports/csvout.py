"""CSV files with stable column names (raw floats, no formatting, no arrows).

``runs.csv``: every record, identity and facts first (``reports.load``'s
``IDENTITY`` + ``RUN_FACTS``), then metrics in name order.  One file per view
(``compression.csv``, ``robustness.csv``, ``compression_robustness.csv``,
``ip_protection.csv``, and ``sr.csv`` when there are super-resolution runs) with the view's fixed columns (``run_id`` after
``rank`` where the view has one row per run), plus ``attacks.csv`` and
``fingerprints.csv`` (every classification entry; ROC points stay in the records;
the sr-uap / sr-outputs entries of SR runs are summarised per run in ``sr.csv``) and
``sweeps.csv`` (every budget point of every entry's sweep,
:data:`reports.sweeps.SWEEP_COLUMNS`; header only when no entry has one).
"""

from __future__ import annotations

from pathlib import Path

from reports.load import IDENTITY, RUN_FACTS
from reports.sweeps import empty_table
from reports.views import View, attack_details

VIEW_FILES = {"compression": "compression.csv", "robustness": "robustness.csv",
              "compression_robustness": "compression_robustness.csv", "ip": "ip_protection.csv",
              "sr": "sr.csv"}


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
        run_id = ["run_id"] if "run_id" in view.table.columns else []
        written.append(_write(view.table[["rank", *run_id, *view.identity, *view.metrics]],
                              out_dir / VIEW_FILES[view.key]))
    written.append(_write(attack_details(data), out_dir / "attacks.csv"))
    fps = data.fingerprints.drop(columns=["roc"], errors="ignore")
    written.append(_write(fps, out_dir / "fingerprints.csv"))
    written.append(_write(empty_table() if data.sweeps is None else data.sweeps, out_dir / "sweeps.csv"))
    return written


def _write(df, path: Path) -> Path:
    from suite.core.cache import atomic_write_text

    atomic_write_text(path, df.to_csv(index=False))
    return path
