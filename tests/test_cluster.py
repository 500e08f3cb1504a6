"""Acceptance check of the Ray cluster story: bench/ray_cluster.py on its 2-job grid.

Starts a real two-node Ray cluster on this machine (``ray start`` twice), runs
the grid there with one shared cache and locally with another, and checks the
records, metrics and cache.  About 2 minutes on an idle 2-core machine; slow
tests are not deselected by default (``-m 'not slow'`` skips it).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "ray_cluster.py"


def _ray_cli() -> str | None:
    return shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")


def _load_script():
    spec = importlib.util.spec_from_file_location("bench_ray_cluster", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_two_node_cluster_matches_local(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[cluster]')")
    ray_cli = _ray_cli()
    if ray_cli is None:
        pytest.skip("the `ray` CLI is not installed")
    script = _load_script()
    # two jobs that differ only in attack_args: same compressed model, same ONNX artifact, built at once
    grid = script.TINY_GRID
    summary = script.main(tmp_path / "out", grid=grid, ray_cli=ray_cli, jobs=2, timeout=600)

    assert summary["cluster"]["alive_nodes"] == 2, summary.get("error")
    assert summary["cluster_stop"]["left"] == 0
    assert summary["ray_run"]["rc"] == 0, summary["ray_run"]["job_errors"]
    assert summary["local_run"]["rc"] == 0, summary["local_run"]["job_errors"]
    jobs = summary["grid_jobs"]
    assert jobs == 2
    # both nodes ran a job, and the two ran at the same time
    assert summary["ray_tasks"]["finished_per_node"] == {"head": 1, "worker": 1}
    assert summary["ray_tasks"]["cross_node_overlapping_pairs"] == 1
    for where in ("ray", "local"):
        rec = summary["records"][where]
        assert rec["result_json"] == rec["jobs_recorded"] == jobs, rec
        assert not (rec["missing"] or rec["extra"] or rec["duplicates"] or rec["identity_mismatch"]
                    or rec["failed_entries"] or rec["staging_left"]), rec
        cache = summary["cache"][where]
        assert cache["leftovers"] == [] and cache["duplicate_keys"] == 0, cache
        # both jobs needed the same compressed model and the same artifact
        assert summary["shared_entries"][where]["shared"] == 2
    assert summary["metrics"] == {"compared": jobs, "identical": True, "differ": {}}
    # one trained model, one compressed model, one ONNX artifact: the same keys in both caches
    assert summary["cache"]["same_entries"]
    assert sorted(e.split("/")[0] for e in summary["cache"]["entry_names"]) == ["artifacts", "compressed", "models"]
    assert summary["ok"], summary["checks"]
    assert (tmp_path / "out" / "summary.json").is_file()
