"""Dense runtimes timed side by side: every runtime a user would deploy instead, the fastest one named."""

from __future__ import annotations

import pytest
import torch


def test_dense_runtimes_are_timed_and_the_best_is_named():
    from compression.runtimes import best_dense, time_dense_runtimes

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 8 * 8, 10)).eval()
    got = time_dense_runtimes(model, (3, 8, 8), 2, threads=1)
    assert set(got) == {"torch", "onnxruntime"}
    for t in got.values():
        assert 0 < t["p50"] <= t["p90"]
    name, ms = best_dense(got)
    assert ms == min(t["p50"] for t in got.values()) and got[name]["p50"] == ms


def test_a_failing_runtime_is_reported_not_fatal():
    from compression.runtimes import best_dense

    name, ms = best_dense({"torch": {"p50": 2.0, "p90": 2.5}, "onnxruntime": {"error": "export failed"}})
    assert (name, ms) == ("torch", 2.0)
    with pytest.raises(ValueError):
        best_dense({"onnxruntime": {"error": "export failed"}})
