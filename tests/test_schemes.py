"""Weight-level pruning schemes: invariants, granularity, compact round trips."""

from __future__ import annotations

import json
import re
import math

import pytest
import torch

from compression.schemes import SCHEMES, accepted_settings, make_scheme
from compression.schemes.base import gemm_view
from compression.schemes.pattern import select_library
from compression.schemes.unstructured import global_masks
from suite.core.errors import ConfigError, UnknownNameError

SHAPES = [(16, 8, 3, 3), (24, 16, 3, 3), (20, 12, 3, 3), (32, 64), (16, 8, 1, 1)]
SPARSITIES = [0.3, 0.5, 0.75, 0.9]
CONFIGS = [
    ("unstructured", {}),
    ("block", {}),
    ("block", {"balance": "block"}),
    ("block", {"r": 4, "c": 8, "balance": "block"}),
    ("block-punched", {}),
    ("block-punched", {"r": 8, "c": 3}),  # ragged channel blocks (Ci = 8, 12, 16)
    ("pattern", {}),
    ("pattern", {"connectivity": False}),
    ("nm", {}),
    ("nm", {"n": 1, "m": 4}),
]


def weight(shape: tuple[int, ...], seed: int = 0,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def achieved(mask: torch.Tensor) -> float:
    return 1.0 - mask.double().mean().item()


def pattern_entries(scheme, sparsity: float) -> int:
    return max(scheme.entries, math.ceil(9 * (1 - sparsity) - 1e-9))


def tolerance(scheme, shape: tuple[int, ...], sparsity: float) -> float:
    """Half the documented granularity of ``scheme`` on ``shape`` (plus float slack)."""
    n_cols = math.prod(shape[1:])
    if scheme.name == "unstructured":
        step = 1 / math.prod(shape)
    elif scheme.name == "block":
        step = 1 / (scheme.c if scheme.balance == "block" else n_cols)
    elif scheme.name == "block-punched":
        step = 1 / (shape[2] * shape[3])
    elif scheme.name == "pattern":
        step = pattern_entries(scheme, sparsity) / (9 * shape[0] * shape[1])
    else:
        step = 0.0
    return step / 2 + 1e-9


def contract_cases() -> list:
    """(name, settings, shape, sparsity) for every config; nm only at its own sparsity."""
    cases = []
    for name, settings in CONFIGS:
        scheme = make_scheme(name, **settings)
        for shape in SHAPES:
            for sparsity in SPARSITIES:
                if name == "nm" and abs(sparsity - scheme.sparsity) > 1e-6:
                    continue  # nm's fixed sparsity is tested separately
                case_id = f"{name}-{json.dumps(settings)}-{'x'.join(map(str, shape))}-{sparsity}"
                cases.append(pytest.param(name, settings, shape, sparsity, id=case_id))
    return cases


# ---------------------------------------------------------------- common contract


@pytest.mark.parametrize("name,settings,shape,sparsity", contract_cases())
def test_contract(name, settings, shape, sparsity):
    scheme = make_scheme(name, **settings)
    reason = scheme.check_applicable(shape)
    w = weight(shape)
    if reason is not None:
        assert isinstance(reason, str) and "\n" not in reason
        with pytest.raises(ConfigError, match=re.escape(reason)):
            scheme.mask(w, sparsity)
        return
    before = w.clone()
    mask = scheme.mask(w, sparsity)
    assert torch.equal(w, before), "mask must not touch the weight"
    assert mask.dtype == torch.bool and mask.shape == w.shape
    scheme.verify(mask)
    if name == "pattern" and not scheme.connectivity:
        assert achieved(mask) == pytest.approx(1 - pattern_entries(scheme, sparsity) / 9)
    else:
        assert abs(achieved(mask) - sparsity) <= tolerance(scheme, shape, sparsity)
    assert torch.equal(scheme.mask(w, sparsity), mask), "mask must be deterministic"
    assert torch.equal(scheme.project(w, sparsity), w * mask)
    compact = scheme.to_compact(w, mask)
    assert compact.scheme == name and compact.shape == shape
    json.dumps(compact.meta)
    restored = scheme.from_compact(compact)
    assert restored.dtype == w.dtype and torch.equal(restored, w * mask)


@pytest.mark.parametrize("name", list(SCHEMES))
@pytest.mark.parametrize("sparsity", [1.0, 1.2, -0.1, float("nan"), "0.5", True])
def test_bad_sparsity(name, sparsity):
    with pytest.raises(ConfigError):
        make_scheme(name).mask(weight((16, 8, 3, 3)), sparsity)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_settings_json_round_trip(name):
    scheme = make_scheme(name)
    settings = json.loads(json.dumps(scheme.settings()))
    assert make_scheme(name, **settings).settings() == scheme.settings()
    assert set(settings) <= set(accepted_settings(name))


@pytest.mark.parametrize("name,settings", [
    ("block", {"r": 0}), ("block", {"c": -1}), ("block", {"balance": "rows"}),
    ("block", {"r": 2.5}),
    ("block-punched", {"r": 0}), ("block-punched", {"c": -1}),
    ("pattern", {"entries": 10}), ("pattern", {"entries": 0}), ("pattern", {"library_size": 0}),
    ("pattern", {"connectivity": "maybe"}), ("pattern", {"library": [[4, 9]]}),
    ("pattern", {"library": [[0, 4], [1, 2, 4]]}), ("pattern", {"library": [[0, 4]], "entries": 3}),
    ("pattern", {"library": [3, 5, 6], "library_size": 2}),
    ("nm", {"n": 5, "m": 4}), ("nm", {"n": 4, "m": 4}), ("nm", {"n": 0}), ("nm", {"m": 1000}),
])
def test_bad_settings(name, settings):
    with pytest.raises(ConfigError) as err:
        make_scheme(name, **settings)
    assert "\n" not in str(err.value)


def test_unknown_setting_and_scheme():
    with pytest.raises(ConfigError, match=r"unknown setting.*rr.*accepted: r, c, balance"):
        make_scheme("block", rr=4)
    with pytest.raises(ConfigError, match="accepted: none"):
        make_scheme("unstructured", r=4)
    with pytest.raises(UnknownNameError, match="choices"):
        make_scheme("channel")


def test_settings_from_strings():
    assert make_scheme("block", r="4", c="8").settings()["r"] == 4
    assert make_scheme("pattern", connectivity="false").connectivity is False


def test_weight_with_grad():
    w = weight((16, 8, 3, 3)).requires_grad_()
    for name in SCHEMES:
        scheme = make_scheme(name)
        mask = scheme.mask(w, 0.5)
        assert not mask.requires_grad
        scheme.to_compact(w, mask)


# ---------------------------------------------------------------- unstructured


def test_unstructured_keeps_largest():
    w = weight((16, 8, 3, 3))
    w[3, 2, 1, 1] = 100.0
    w[5, 0, 0, 2] = 0.0
    mask = make_scheme("unstructured").mask(w, 0.9)
    assert mask[3, 2, 1, 1] and not mask[5, 0, 0, 2]
    assert w.abs()[mask].min() >= w.abs()[~mask].max()


def test_unstructured_ties_by_index():
    mask = make_scheme("unstructured").mask(torch.ones(4, 4), 0.5)
    assert mask.flatten().tolist() == [True] * 8 + [False] * 8


def test_unstructured_verify_catches():
    scheme = make_scheme("unstructured")
    with pytest.raises(AssertionError, match="bool"):
        scheme.verify(torch.ones(4, 4))
    with pytest.raises(AssertionError, match="dims"):
        scheme.verify(torch.ones(4, dtype=torch.bool))


def test_global_masks_rank_together():
    small = weight((16, 8, 3, 3)).clamp(-1, 1) * 1e-3
    large = weight((32, 64), seed=1)
    large += large.sign()  # |large| >= 1 > |small|
    masks = global_masks({"a": small, "b": large}, 0.36)  # keeps 2048 = all of b
    total = small.numel() + large.numel()
    assert sum(int(m.sum()) for m in masks.values()) == round(total * 0.64)
    assert int(masks["a"].sum()) == 0 and bool(masks["b"].all())
    with pytest.raises(ConfigError):
        global_masks({"a": small}, 1.0)


# ---------------------------------------------------------------- block


def block_gather(compact, x: torch.Tensor) -> torch.Tensor:
    """``Y[b*r+i, n] = sum_k values[b,i,k] * X[col_idx[b,k], n]`` from a compact layer."""
    values = torch.from_numpy(compact.arrays["values"])
    col_idx = torch.from_numpy(compact.arrays["col_idx"]).long()
    nb, r, _ = values.shape
    y = torch.einsum("bik,bkn->bin", values, x[col_idx])
    return y.reshape(nb * r, -1)[: compact.shape[0]]


@pytest.mark.parametrize("name,settings", [("block", {}), ("block", {"balance": "block", "c": 4}),
                                           ("block", {"r": 3}), ("block-punched", {}),
                                           ("block-punched", {"c": 5})])
@pytest.mark.parametrize("shape", [(20, 12, 3, 3), (24, 16, 3, 3)])
def test_row_block_gather_computes_gemm(name, settings, shape):
    scheme = make_scheme(name, **settings)
    w = weight(shape, dtype=torch.float64)
    mask = scheme.mask(w, 0.6)
    compact = scheme.to_compact(w, mask)
    x = torch.randn(math.prod(shape[1:]), 7, dtype=torch.float64)
    expected = gemm_view(w * mask) @ x
    assert torch.allclose(block_gather(compact, x), expected, atol=1e-10, rtol=0)
    col_idx = compact.arrays["col_idx"]
    assert col_idx.dtype.name == "int32" and (col_idx[:, 1:] > col_idx[:, :-1]).all()
    assert compact.arrays["values"].shape == (math.ceil(shape[0] / scheme.r), scheme.r,
                                             compact.meta["K_keep"])


def test_block_ragged_last_row_block_padded():
    scheme = make_scheme("block")
    w = weight((20, 12, 3, 3))
    compact = scheme.to_compact(w, scheme.mask(w, 0.5))
    values = compact.arrays["values"]
    assert values.shape == (3, 8, 54)
    assert (values[2, 4:] == 0).all() and (values[2, :4] != 0).any()


def test_block_keeps_largest_columns():
    scheme = make_scheme("block")
    w = weight((24, 16, 3, 3))
    w2 = gemm_view(w)
    w2[0:8, 37] = 50.0      # strong column in row-block 0
    w2[8:16, 5] = 1e-6      # weak column in row-block 1
    mask = gemm_view(scheme.mask(w, 0.9))
    assert mask[0:8, 37].all() and not mask[8:16, 5].any()


def test_block_balance_block_counts():
    scheme = make_scheme("block", c=16, balance="block")
    w = weight((24, 16, 3, 3))  # K = 144 = 9 blocks of 16
    keep = gemm_view(scheme.mask(w, 0.75))[::8]  # one row per row-block
    assert (keep.reshape(3, 9, 16).sum(dim=2) == 4).all()


def test_block_row_block_may_differ_per_column_block():
    scheme = make_scheme("block", c=16)
    w = weight((8, 64))
    w[:, :16] *= 100  # all strength in the first column-block
    keep = scheme.mask(w, 0.75)[0]
    assert keep[:16].all() and not keep[16:].any()


def test_block_verify_catches():
    scheme = make_scheme("block", r=8, c=16, balance="block")
    w = weight((24, 16, 3, 3))
    good = gemm_view(scheme.mask(w, 0.5)).clone()
    scheme.verify(good.reshape(w.shape))

    partial = good.clone()
    partial[3, int(torch.nonzero(partial[3])[0])] = False  # one row of a block-column
    with pytest.raises(AssertionError, match="block-column invariant"):
        scheme.verify(partial)

    unbalanced = good.clone()
    unbalanced[8:16, int(torch.nonzero(unbalanced[8])[0])] = False  # whole column, row-block 1
    with pytest.raises(AssertionError, match="balance invariant.*row-blocks"):
        scheme.verify(unbalanced)

    moved = good.clone()  # same count per row-block, but block 0 has one more than block 1
    kept0 = int(torch.nonzero(moved[0, :16])[0])
    pruned1 = 16 + int(torch.nonzero(~moved[0, 16:32])[0])
    moved[0:8, kept0], moved[0:8, pruned1] = False, True
    make_scheme("block", balance="row-block").verify(moved)
    with pytest.raises(AssertionError, match="balance=block invariant"):
        scheme.verify(moved)


def test_block_applicability():
    scheme = make_scheme("block", c=16, balance="block")
    reason = scheme.check_applicable((16, 8, 3, 3))  # K = 72
    assert reason is not None and "c=16" in reason and "K=72" in reason
    with pytest.raises(ConfigError, match="c=16"):
        scheme.mask(weight((16, 8, 3, 3)), 0.5)
    assert make_scheme("block").check_applicable((16, 8, 3, 3)) is None
    assert make_scheme("block").check_applicable((16,)) is not None


# ---------------------------------------------------------------- block-punched


def test_punched_keeps_largest_positions():
    scheme = make_scheme("block-punched")
    w = weight((16, 8, 3, 3))
    w[0:8, 0:4, 0, 2] = 30.0    # block (0, 0), position 2
    w[8:16, 4:8, 1, 2] = 1e-6   # block (1, 1), position 5
    mask = scheme.mask(w, 0.9)
    assert mask[0:8, 0:4, 0, 2].all() and not mask[8:16, 4:8, 1, 2].any()
    assert int(mask[0, 0].sum()) == 1


def test_punched_compact_layout():
    scheme = make_scheme("block-punched")
    w = weight((20, 12, 3, 3))
    mask = scheme.mask(w, 0.5)  # P_keep = round(4.5) = 5
    compact = scheme.to_compact(w, mask)
    assert compact.meta["P_keep"] == 5 and compact.meta["K_keep"] == 12 * 5
    positions = compact.arrays["positions"]
    assert positions.shape == (3, 3, 5) and positions.dtype.name == "int32"
    for b in range(3):
        for cb in range(3):
            kernel = mask[b * 8, cb * 4].flatten()
            assert torch.nonzero(kernel).flatten().tolist() == positions[b, cb].tolist()


def test_punched_verify_catches():
    scheme = make_scheme("block-punched")
    w = weight((16, 8, 3, 3))
    good = scheme.mask(w, 0.5)
    partial = good.clone()
    partial[0, 0] = ~partial[0, 0]
    with pytest.raises(AssertionError, match="punched-position invariant"):
        scheme.verify(partial)
    unbalanced = good.clone()
    y, x = divmod(int(torch.nonzero(unbalanced[8, 4].flatten())[0]), 3)
    unbalanced[8:16, 4:8, y, x] = False
    with pytest.raises(AssertionError, match="balance invariant"):
        scheme.verify(unbalanced)
    with pytest.raises(AssertionError, match="shape invariant"):
        scheme.verify(torch.ones(16, 8, 1, 1, dtype=torch.bool))


def test_punched_inapplicable():
    scheme = make_scheme("block-punched")
    reason = scheme.check_applicable((16, 8, 1, 1))
    assert reason == "block-punched needs kernels larger than 1x1; use block"
    assert "use block" in scheme.check_applicable((32, 64))
    with pytest.raises(ConfigError, match="larger than 1x1"):
        scheme.mask(weight((16, 8, 1, 1)), 0.5)


# ---------------------------------------------------------------- pattern


def test_pattern_keeps_strong_kernel_and_removes_weak():
    scheme = make_scheme("pattern")
    w = weight((16, 8, 3, 3))
    w[2, 3] *= 100.0
    w[7, 1] = 1e-6
    mask = scheme.mask(w, 0.75)
    assert mask[2, 3].sum() == 4 and not mask[7, 1].any()


def test_pattern_assigns_best_library_pattern():
    scheme = make_scheme("pattern", connectivity=False)
    w = weight((16, 8, 3, 3))
    mask = scheme.mask(w, 0.6)
    kernels = mask.reshape(-1, 9)
    library = torch.unique(kernels, dim=0).double()
    assert library.shape[0] <= 8 and (library[:, 4] == 1).all()
    energy = w.reshape(-1, 9).double().square()
    kept = (energy * kernels).sum(dim=1)
    assert (kept[:, None] >= energy @ library.T - 1e-12).all()


def test_pattern_fixed_library_and_planted_pattern():
    library = [[0, 1, 2, 4], [4, 6, 7, 8], 0b000111010, 0b010110010]
    scheme = make_scheme("pattern", library=library)
    assert scheme.entries == 4 and scheme.library_size == 4
    w = weight((16, 8, 3, 3))
    w[1, 1] = torch.tensor([[9.0, 9, 9], [0, 9, 0], [0, 0, 0]])
    mask = scheme.mask(w, 0.75)
    assert mask[1, 1].flatten().tolist() == [True, True, True, False, True] + [False] * 4
    compact = scheme.to_compact(w, mask)
    assert compact.arrays["library"].shape == (4, 9)
    assert compact.arrays["pattern_id"][1, 1] == 0
    assert compact.arrays["values"][1, 1].tolist() == [9.0, 9.0, 9.0, 9.0]
    with pytest.raises(ConfigError, match="needs entries >= 7"):
        scheme.mask(w, 0.3)


def test_select_library_shared_across_layers():
    layers = [weight((16, 8, 3, 3), seed=1), weight((24, 16, 3, 3), seed=2)]
    library = select_library(layers, entries=4, library_size=6)
    assert len(library) == 6 and all(len(p) == 4 and 4 in p for p in library)
    assert select_library(layers, entries=4, library_size=6) == library
    scheme = make_scheme("pattern", library=library)
    for w in layers:
        compact = scheme.to_compact(w, scheme.mask(w, 0.8))
        assert compact.arrays["library"].astype(bool).tolist() == [
            [p in pat for p in range(9)] for pat in library]
    with pytest.raises(ConfigError, match="3x3"):
        select_library([weight((16, 8, 1, 1))])


def test_pattern_library_votes():
    w = torch.zeros(10, 1, 3, 3)
    w.view(10, 9)[:7, [0, 1, 4]] = 1.0   # 7 votes for {0, 1, 4}
    w.view(10, 9)[7:, [4, 7, 8]] = 1.0   # 3 votes for {4, 7, 8}
    assert select_library([w], entries=3, library_size=2) == [[0, 1, 4], [4, 7, 8]]


def test_pattern_raises_entries_for_low_sparsity():
    scheme = make_scheme("pattern")
    w = weight((16, 8, 3, 3))
    mask = scheme.mask(w, 0.3)
    compact = scheme.to_compact(w, mask)
    assert compact.meta["entries"] == 7
    assert abs(achieved(mask) - 0.3) <= 7 / (18 * 128)


def test_pattern_verify_catches():
    scheme = make_scheme("pattern", library_size=4)
    w = weight((16, 8, 3, 3))
    good = scheme.mask(w, 0.75)
    scheme.verify(good)
    extra = good.clone()
    alive = int(torch.nonzero(extra.reshape(-1, 9).any(dim=1))[0])
    extra.reshape(-1, 9)[alive] = True
    with pytest.raises(AssertionError, match="pattern-size invariant"):
        scheme.verify(extra)
    too_many = torch.zeros(16, 8, 3, 3, dtype=torch.bool)
    for i, pattern in enumerate([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 4, 5], [4, 5, 6]]):
        too_many[0, i].view(9)[pattern] = True
    with pytest.raises(AssertionError, match="library invariant"):
        make_scheme("pattern", entries=3, library_size=4).verify(too_many)
    no_centre = torch.zeros(16, 8, 3, 3, dtype=torch.bool)
    no_centre[0, 0].view(9)[[0, 1, 2, 3]] = True
    with pytest.raises(AssertionError, match="centre invariant"):
        scheme.verify(no_centre)
    outside = make_scheme("pattern", library=[[0, 1, 2, 4]])
    with pytest.raises(AssertionError, match="fixed library"):
        outside.verify(good)
    removed = make_scheme("pattern", connectivity=False)
    with pytest.raises(AssertionError, match="connectivity invariant"):
        removed.verify(good)


def test_pattern_inapplicable():
    scheme = make_scheme("pattern")
    assert scheme.check_applicable((16, 8, 1, 1)) == "pattern needs 3x3 kernels, got 1x1"
    assert scheme.check_applicable((16, 8, 5, 5)) == "pattern needs 3x3 kernels, got 5x5"
    assert "3x3" in scheme.check_applicable((32, 64))
    with pytest.raises(ConfigError, match="pattern needs 3x3 kernels, got 1x1"):
        scheme.mask(weight((16, 8, 1, 1)), 0.5)


# ---------------------------------------------------------------- N:M


def test_nm_keeps_largest_in_group():
    scheme = make_scheme("nm")
    w = weight((32, 64))
    w[3, 8:12] = torch.tensor([0.0, 5.0, -0.1, -7.0])
    mask = scheme.mask(w, 0.5)
    assert mask[3, 8:12].tolist() == [False, True, False, True]
    compact = scheme.to_compact(w, mask)
    assert compact.arrays["idx"][3, 4:6].tolist() == [1, 3]
    assert compact.arrays["values"][3, 4:6].tolist() == [5.0, -7.0]
    assert compact.arrays["idx"].dtype.name == "uint8"


def test_nm_sparsity_is_fixed():
    scheme = make_scheme("nm")
    w = weight((32, 64))
    assert torch.equal(scheme.mask(w, 0.0), scheme.mask(w, 0.5))
    with pytest.raises(ConfigError) as err:
        scheme.mask(w, 0.75)
    assert str(err.value) == ("nm 2:4 has sparsity 0.5; choose n and m (compress-args n=1,m=4) "
                              "instead of --sparsity 0.75")
    assert achieved(make_scheme("nm", n=1, m=4).mask(w, 0)) == 0.75


def test_nm_verify_and_applicability():
    scheme = make_scheme("nm")
    good = scheme.mask(weight((16, 8, 3, 3)), 0.5)
    bad = good.clone()
    bad.view(16, -1)[2, 5] = ~bad.view(16, -1)[2, 5]
    with pytest.raises(AssertionError, match="N:M invariant violated: row 2, group 1"):
        scheme.verify(bad)
    reason = scheme.check_applicable((8, 3, 3, 3))
    assert reason == "nm 2:4 needs m=4 to divide the GEMM columns K=27"
    with pytest.raises(ConfigError, match="K=27"):
        scheme.mask(weight((8, 3, 3, 3)), 0.5)
