"""Filter reordering: similar supports grouped into row-blocks, fewer kept columns, outputs unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compression.tvm_backend.reorder import inverse, kept_columns, similar_rows_permutation

pytest.importorskip("tvm")


def _interleaved_support(co: int = 16, k: int = 64) -> np.ndarray:
    """Even filters use columns [0, k/2), odd ones [k/2, k): every block of 8 consecutive filters keeps all k."""
    s = np.zeros((co, k), dtype=bool)
    s[0::2, : k // 2] = True
    s[1::2, k // 2:] = True
    return s


def test_grouping_similar_filters_halves_the_kept_columns():
    s = _interleaved_support()
    assert kept_columns(s, 8) == 64
    perm = similar_rows_permutation(s, 8)
    assert sorted(perm.tolist()) == list(range(16))
    assert kept_columns(s[perm], 8) == 32
    assert np.array_equal(perm[inverse(perm)], np.arange(16))


def test_reordered_kernel_matches_eager_and_records_the_permutation():
    from compression.tvm_backend.compile import compile_model
    from compression.tvm_backend.target import host_target_dict
    import tvm
    from tvm import relax

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(16 * 8 * 8, 10)).eval()
    support = torch.from_numpy(np.repeat(_interleaved_support(16, 144)[:, :, None], 1, axis=2).reshape(16, 16, 3, 3))
    with torch.no_grad():
        model[2].weight.mul_(support)
        model[4].weight.mul_(support)
    res = compile_model(model, (3, 8, 8), host_target_dict(1), measure=False, reorder=True)
    convs = [c for c in res.layers if c.op == "conv" and c.kernel == "sparse"]
    assert len(convs) == 2
    for c in convs:
        assert c.row_permutation is not None and c.kept_columns == 72 and c.kept_before_reorder == 144
    x = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    vm = relax.VirtualMachine(res.executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x))
    out = (out if hasattr(out, "numpy") else out[0]).numpy()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(out - ref).max() < 1e-4
    plain = compile_model(model, (3, 8, 8), host_target_dict(1), measure=False)
    assert all(c.row_permutation is None for c in plain.layers)
