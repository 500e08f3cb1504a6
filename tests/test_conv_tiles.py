"""Conv template tiles (grid and row tiles) and the fused residual add, against torch."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

tvm = pytest.importorskip("tvm")

from compression.tvm_backend.compile import compile_model  # noqa: E402
from compression.tvm_backend.kernels import (  # noqa: E402
    ConvSpec,
    ConvTile,
    InputCopy,
    conv_kernel,
    conv_output_shapes,
    pack_weights,
    reads_input_directly,
    row_block_columns,
)
from compression.tvm_backend.target import host_target_dict  # noqa: E402
from compression.tvm_backend.tuning import TuningDB, best_tile, compile_prim, conv_tile_candidates  # noqa: E402

TARGET = host_target_dict(2)
TILES = [ConvTile.grid(8), ConvTile.grid(32), ConvTile(16, 1, True), ConvTile(16, 3), ConvTile(8, 2, True),
         ConvTile(8, 4, True), ConvTile(16, 2, True), ConvTile(4, 2, True),
         ConvTile(8, 3, False, 4), ConvTile(8, 2, True, 4), ConvTile(8, 1, True, 2), ConvTile(8, 2, False, 2),
         ConvTile(8, 2, True, 0, True), ConvTile(16, 3, False, 0, True), ConvTile(8, 3, False, 4, True),
         ConvTile(8, 2, True, 4, True)]
# even entries for dense weights, odd for sparse: grid and row tiles, whole row-blocks and filter groups in each,
# and (batches only) the image-major job order


def _conv(x, weight, bias, spec: ConvSpec, tile: ConvTile, cols, phased: bool, res=None) -> np.ndarray:
    values, off, b = pack_weights(weight, bias, spec, cols, phased=phased, copy=tile.input_copy)
    args = [x, values, off, b] + ([res] if res is not None else [])
    args += [np.zeros(s, np.float32) for s in conv_output_shapes(spec, tile, phased)]
    tensors = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in args]
    compile_prim(conv_kernel(spec, tile, phased=phased), TARGET)["main"](*tensors)
    return tensors[-1].numpy()


def _check_tiles(shape, act: str, residual: bool, tiles_of, phased: bool, seed: int) -> int:
    """Every tile of ``tiles_of(sparse)`` that fits, on a half-pruned random conv (dense and compact packing),
    against torch (conv, residual, activation); returns how many were checked."""
    n, ci, co, h, w, k, pad, stride = shape
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((co, ci, k, k)).astype(np.float32) * (rng.random((co, ci, k, k)) > 0.5)
    bias = rng.standard_normal(co).astype(np.float32)
    x = rng.random((n, ci, h, w)).astype(np.float32) * 2
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias), stride=stride,
                   padding=pad).numpy()
    res = rng.standard_normal(ref.shape).astype(np.float32) * 3 if residual else None
    expect = ref + (res if residual else 0)
    expect = {"relu": np.maximum(expect, 0), "relu6": np.clip(expect, 0, 6), "none": expect}[act]
    cols = row_block_columns(weight, 8)
    checked = 0
    for sparse in (False, True):
        kk = cols.shape[1] if sparse else ci * k * k
        spec = ConvSpec(n, ci, h, w, co, k, k, pad, stride, 8, kk, act != "none", act == "relu6", residual)
        for tile in tiles_of(sparse):
            if not tile.fits(spec):
                continue
            out = _conv(x, weight, bias, spec, tile, cols if sparse else None, phased, res)
            np.testing.assert_allclose(out, expect, atol=1e-4, rtol=1e-4, err_msg=f"{tile} sparse={sparse}")
            checked += 1
    return checked


@pytest.mark.parametrize("n, ci, co, h, w, k, pad, stride, phased", [
    (1, 8, 16, 8, 16, 3, 1, 1, False),   # row tiles of 16 and 8 lanes
    (2, 5, 12, 8, 8, 3, 1, 1, False),    # Co not a multiple of r=8: the last row-block is partly padding
    (2, 8, 16, 8, 8, 1, 0, 1, False),    # unpadded 1x1: row tiles read x directly (no copy), plane = one row
    (2, 8, 16, 4, 4, 1, 0, 1, False),    # flat 1x1 on a 4x4 map: 16-lane rows over the whole plane
    (1, 8, 16, 16, 16, 3, 1, 2, True),   # stride 2, stride-phase layout
    (2, 6, 8, 16, 16, 3, 1, 2, False),   # stride 2, strided loads
])
@pytest.mark.parametrize("act, residual", [("relu6", True), ("none", False)])
def test_every_tile_matches_torch(n, ci, co, h, w, k, pad, stride, phased, act, residual):
    # dense and sparse weights share the template: half the tiles each
    assert _check_tiles((n, ci, co, h, w, k, pad, stride), act, residual, lambda sparse: TILES[sparse::2],
                        phased, seed=0) >= 3


PART_TILES = [ConvTile(16, 2, True, parts=2), ConvTile(8, 1, True, parts=3), ConvTile(8, 2, True, 4, parts=2),
              ConvTile(16, 1, True, parts=5), ConvTile(4, 2, True, parts=2)]


@pytest.mark.parametrize("ci, co, h, w, k, pad", [
    (8, 16, 10, 16, 3, 1),   # 10 rows into 2, 3 or 5 parts: uneven parts, each with its halo rows
    (5, 12, 7, 8, 3, 1),     # Co not a multiple of r=8; odd rows
    (4, 8, 8, 16, 5, 2),     # 5x5, pad 2: two halo rows each side
])
@pytest.mark.parametrize("act, residual", [("relu", True), ("none", False)])
def test_row_part_tiles_match_torch(ci, co, h, w, k, pad, act, residual):
    # batch 1 only: every part copies the rows it reads into its own workspace, dense and sparse weights
    assert _check_tiles((1, ci, co, h, w, k, pad, 1), act, residual, lambda sparse: PART_TILES, False, seed=3) >= 4


IM2COL_TILES = [ConvTile(16, 1, im2col=True), ConvTile(4, 1, im2col=True), ConvTile(16, 4, im2col=True),
                ConvTile(8, 1, False, 4, im2col=True), ConvTile(4, 2, im2col=True), ConvTile(16, 2, False, 2, im2col=True)]


@pytest.mark.parametrize("ci, co, h, w, k, pad, stride", [
    (8, 16, 4, 4, 3, 1, 1),    # a 4x4 plane: one 16-lane vector, every lane a real output
    (5, 12, 2, 2, 3, 1, 1),    # 2x2 plane (4 lanes); Co not a multiple of r=8
    (6, 16, 8, 8, 3, 1, 1),    # 8x8 plane: 64 positions, up to 4 vectors
    (8, 16, 8, 8, 3, 1, 2),    # stride 2: 4x4 out, the copy does the striding
    (8, 8, 8, 8, 1, 0, 2),     # 1x1 stride-2 (a ResNet shortcut)
    (4, 8, 6, 6, 5, 2, 1),     # 5x5, pad 2, 6x6 plane (36: 4-lane vectors)
])
@pytest.mark.parametrize("act, residual", [("relu", True), ("none", False)])
def test_im2col_tiles_match_torch(ci, co, h, w, k, pad, stride, act, residual):
    # batch 1; dense and sparse packing share the padded layout's offsets, the copy scales them by Ho*Wo
    assert _check_tiles((1, ci, co, h, w, k, pad, stride), act, residual, lambda sparse: IM2COL_TILES, False,
                        seed=5) >= 2


SHIFTED_TILES = [ConvTile(16, 1, parts=2, shifted=True), ConvTile(4, 1, parts=2, shifted=True),
                 ConvTile(16, 4, parts=1, shifted=True), ConvTile(8, 1, False, 4, parts=2, shifted=True),
                 ConvTile(4, 2, parts=3, shifted=True), ConvTile(16, 2, False, 2, parts=2, shifted=True)]


@pytest.mark.parametrize("ci, co, h, w, k, pad, stride", [
    (8, 16, 4, 4, 3, 1, 1),    # a 4x4 plane: one 16-lane vector from the kx-shifted copies
    (5, 12, 2, 2, 3, 1, 1),    # 2x2 plane (4 lanes); Co not a multiple of r=8, 2 row-blocks over 2 and 3 parts
    (6, 16, 8, 8, 3, 1, 1),    # 8x8 plane: 64 positions, up to 4 vectors
    (4, 8, 6, 6, 5, 2, 1),     # 5x5, pad 2: five shifted copies per channel
    (8, 16, 6, 6, 3, 0, 1),    # unpadded 3x3: a 4x4 output read from 6x6 planes
    (8, 16, 8, 8, 3, 1, 2),    # stride 2: 4x4 out from two row phases of column-subsampled copies
    (6, 8, 16, 16, 3, 1, 2),   # stride 2 to an 8x8 plane (a ResNet stage's first conv)
    (8, 8, 8, 8, 1, 0, 2),     # 1x1 stride-2 (a ResNet shortcut): one plane per channel
    (4, 8, 7, 7, 3, 1, 2),     # odd input, stride 2: 4x4 out, the last row phase partly padding
])
@pytest.mark.parametrize("act, residual", [("relu", True), ("none", False), ("relu6", False)])
def test_shifted_tiles_match_torch(ci, co, h, w, k, pad, stride, act, residual):
    # batch 1; every part (thread) builds its own shifted copy and computes its share of the row-blocks
    assert _check_tiles((1, ci, co, h, w, k, pad, stride), act, residual, lambda sparse: SHIFTED_TILES, False,
                        seed=7) >= 2


def test_shifted_tiles_fit_batch_one_small_planes_and_are_offered_beside_im2col():
    small = ConvSpec(1, 512, 4, 4, 512, 3, 3, 1, 1, 8, 461, True)
    tile = ConvTile(16, 1, parts=2, shifted=True)
    assert tile.fits(small) and tile.label == "16x1sp2" and ConvTile.from_params(tile.params()) == tile
    assert tile.input_copy == InputCopy.SHIFTED and conv_output_shapes(small, tile) == [(1, 512, 4, 4)]
    assert not replace(tile, parts=0).fits(small)  # a part per thread is part of the tile
    assert not tile.fits(ConvSpec(2, 512, 4, 4, 512, 3, 3, 1, 1, 8, 461, True))  # batches: image lanes instead
    assert tile.fits(ConvSpec(1, 8, 8, 8, 8, 3, 3, 1, 2, 8, 72, True))  # stride 2: row phases in the copy
    assert not tile.fits(ConvSpec(1, 8, 8, 8, 8, 3, 3, 1, 2, 8, 72, True), phased=True)  # its own copy, not xp's
    assert not tile.fits(ConvSpec(1, 64, 16, 16, 64, 3, 3, 1, 1, 8, 576, True))  # 256 positions: row parts there
    assert tile.fits(ConvSpec(1, 64, 32, 32, 64, 3, 3, 1, 2, 8, 576, True))  # ... but strided convs have none
    assert not tile.fits(ConvSpec(1, 64, 64, 64, 64, 3, 3, 1, 2, 8, 576, True))  # 1024 positions: too large
    assert not tile.fits(ConvSpec(1, 8, 4, 4, 8, 1, 1, 0, 1, 8, 8, True))  # flat 1x1: row tiles read x itself
    cols = np.array([[0, 4, 8, 13]])  # (c, ky, kx) = (0,0,0), (0,1,1), (0,2,2), (1,1,1) of a 3x3 conv, Hp = Wo + 2
    assert small.column_offsets(cols, copy=InputCopy.SHIFTED).tolist() == [[0, 28, 56, 100]]
    strided = ConvSpec(1, 8, 8, 8, 8, 3, 3, 1, 2, 8, 72, True)  # 4x4 out; planes (c, kx, ky % 2) of 5 rows of 4
    assert strided.shifted_planes == (2, 5)
    assert strided.column_offsets(cols, copy=InputCopy.SHIFTED).tolist() == [[0, 60, 84, 180]]
    assert [t.label for t in conv_tile_candidates(small, 16, threads=2) if t.flat_plane] == ["16x1c", "16x1sp2"]
    assert [t.label for t in conv_tile_candidates(ConvSpec(1, 64, 8, 8, 64, 3, 3, 1, 1, 8, 576, True), 8)
            if t.shifted] == ["8x1sp1", "8x2sf4p1"]  # AVX2, one thread: one part


def test_im2col_tiles_fit_batch_one_small_planes_of_whole_vectors():
    small = ConvSpec(1, 512, 4, 4, 512, 3, 3, 1, 1, 8, 4608, True)
    tile = ConvTile(16, 1, im2col=True)
    assert tile.fits(small) and tile.label == "16x1c" and ConvTile.from_params(tile.params()) == tile
    assert conv_output_shapes(small, tile) == [(1, 512 * 9 * 16), (1, 512, 4, 4)]
    assert not reads_input_directly(small, tile)
    assert not tile.fits(ConvSpec(2, 512, 4, 4, 512, 3, 3, 1, 1, 8, 4608, True))  # batches: image lanes instead
    assert not tile.fits(ConvSpec(1, 64, 16, 16, 64, 3, 3, 1, 1, 8, 576, True))  # 256 positions: too large
    assert not ConvTile(16, 1, im2col=True).fits(ConvSpec(1, 8, 2, 2, 8, 3, 3, 1, 1, 8, 72, True))  # 4 positions
    assert not tile.fits(ConvSpec(1, 8, 8, 8, 8, 3, 3, 1, 2, 8, 72, True), phased=True)  # padded layout only
    assert not tile.fits(ConvSpec(1, 8, 4, 4, 8, 1, 1, 0, 1, 8, 8, True))  # flat 1x1: row tiles read x itself
    assert [t.label for t in conv_tile_candidates(small, 16) if t.im2col] == ["16x1c"]  # 2 vectors: 32 > 16
    assert [t.label for t in conv_tile_candidates(ConvSpec(1, 64, 8, 8, 64, 3, 3, 1, 1, 8, 576, True), 8)
            if t.im2col] == ["8x1c", "8x2cf4"]  # AVX2: at most 8 accumulators


def test_row_part_tiles_fit_batch_one_padded_stride_one_rows_only_and_are_offered_there():
    one = ConvSpec(1, 64, 32, 32, 64, 3, 3, 1, 1, 8, 115, True)
    tile = ConvTile(16, 2, True, parts=2)
    assert tile.fits(one) and tile.label == "16x2rp2" and ConvTile.from_params(tile.params()) == tile
    assert conv_output_shapes(one, tile) == [(1, 64, 32, 32)]  # no shared scratch: each thread has its own
    assert not ConvTile(16, 2, False, parts=2).fits(one)  # grid tiles are not cut
    assert not tile.fits(ConvSpec(2, 64, 32, 32, 64, 3, 3, 1, 1, 8, 115, True))  # batches: no
    assert not tile.fits(ConvSpec(1, 64, 32, 32, 64, 3, 3, 1, 2, 8, 115, True))  # stride 2: no
    assert not ConvTile(16, 1, True, parts=2).fits(ConvSpec(1, 8, 8, 16, 16, 1, 1, 0, 1, 8, 8, True))  # reads x
    assert not ConvTile(16, 2, True, parts=33).fits(one)  # more parts than row tiles
    assert "16x2rp2" in [t.label for t in conv_tile_candidates(one, 16, 2)]
    assert all(t.parts == 0 for t in conv_tile_candidates(one, 16, 1) if t.rows)  # one thread: nothing to cut
    heavy = ConvSpec(1, 256, 8, 8, 256, 3, 3, 1, 1, 8, 461, True)  # weights outweigh the input: offered too
    assert [t.label for t in conv_tile_candidates(heavy, 16, 2) if t.parts and t.rows] == ["8x2rp2"]
    assert all(t.parts == 0 for t in conv_tile_candidates(ConvSpec(2, 64, 32, 32, 64, 3, 3, 1, 1, 8, 115, True), 16, 2))


def test_row_tiles_fit_only_whole_row_segments_and_unpadded_convs_skip_the_copy():
    spec = ConvSpec(1, 8, 8, 12, 16, 3, 3, 1, 1, 8, 72, True)  # Wo = 12
    assert not ConvTile(8, 2, True).fits(spec) and ConvTile(4, 2, True).fits(spec)
    assert ConvTile.grid(48).fits(spec)
    assert [s[-1] for s in conv_output_shapes(spec, ConvTile(4, 2, True))] == [8 * 10 * 14, 12]
    assert ConvTile(16, 1, True).fits(ConvSpec(1, 8, 4, 4, 16, 1, 1, 0, 1, 8, 8, True))  # flat 1x1: one 16-wide row
    one = ConvSpec(1, 8, 8, 8, 16, 1, 1, 0, 1, 8, 8, True)
    assert reads_input_directly(one, ConvTile(8, 1, True)) and not reads_input_directly(one, ConvTile.grid(16))
    assert conv_output_shapes(one, ConvTile(8, 1, True)) == [(1, 16, 8, 8)]
    assert all(t.fits(spec) for t in conv_tile_candidates(spec))
    assert ConvTile.from_params(ConvTile(16, 2, True).params()) == ConvTile(16, 2, True)


def test_best_tile_records_the_winning_tile(tmp_path):
    spec = ConvSpec(1, 4, 8, 16, 8, 3, 3, 1, 1, 8, 36, True)
    db = TuningDB(str(tmp_path / "t.json"))
    best = best_tile(spec, TARGET, db, sparse=False, candidates=(ConvTile.grid(16), ConvTile(16, 1, True)))
    assert best.tile in (ConvTile.grid(16), ConvTile(16, 1, True)) and best.tp == 16
    db.save()
    again = best_tile(spec, TARGET, TuningDB(db.path), sparse=False,
                      candidates=(ConvTile.grid(16), ConvTile(16, 1, True)))
    assert again == best


class Residual(nn.Module):
    """A ResNet block with a conv shortcut (the add of two conv chains) and an identity one."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.short = nn.Conv2d(4, 8, 1)
        self.c = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        y = torch.relu(self.b(torch.relu(self.a(x))) + self.short(x))
        y = torch.relu(self.c(y) + y)
        return self.head(y.mean((2, 3)))


def test_residual_adds_are_fused_and_the_model_agrees_with_eager():
    torch.manual_seed(0)
    model = Residual().eval()
    x = torch.rand(2, 4, 8, 8)
    res = compile_model(model, (4, 8, 8), TARGET, batch=2, measure=False)
    fused = {c.name: c.fused for c in res.layers}
    assert sum("residual" in f for f in fused.values()) == 2, fused
    assert [c.index for c in res.layers] == list(range(len(res.layers)))
    assert [c.name for c in res.layers][:3] == ["conv0", "conv1", "conv2"]  # graph order kept despite deferral
    from tvm import relax

    vm = relax.VirtualMachine(res.executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x.numpy()))
    out = (out[0] if not hasattr(out, "numpy") else out).numpy()
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("n, c, h, w, k, pad, stride", [(2, 5, 8, 16, 3, 1, 1), (1, 4, 8, 8, 3, 1, 2),
                                                        (1, 3, 4, 4, 3, 1, 1), (2, 4, 6, 12, 5, 2, 2)])
def test_depthwise_row_tile_matches_torch(n, c, h, w, k, pad, stride):
    from compression.tvm_backend.kernels_layers import (
        DepthwiseSpec,
        depthwise_kernel,
        depthwise_output_shapes,
        depthwise_row_lanes,
        pack_depthwise,
    )

    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32) * 3
    weight = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    spec = DepthwiseSpec(n, c, h, w, k, pad, stride, "relu6")
    lanes = depthwise_row_lanes(spec)
    assert lanes is not None and spec.wo % lanes == 0
    tile = ConvTile(lanes, 1, True)
    wt, b = pack_depthwise(weight, bias)
    args = [x, wt, b] + [np.zeros(s, np.float32) for s in depthwise_output_shapes(spec, tile)]
    tensors = [tvm.runtime.tensor(a) for a in args]
    compile_prim(depthwise_kernel(spec, tile), TARGET)["main"](*tensors)
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias), stride=stride,
                   padding=pad, groups=c).clamp(0, 6).numpy()
    np.testing.assert_allclose(tensors[-1].numpy(), ref, atol=1e-4, rtol=1e-4)
    assert len(depthwise_output_shapes(spec, tile)) == 1  # y alone: the padded plane is per job


def test_tile_candidates_fit_the_register_file_of_the_isa():
    from compression.tvm_backend.target import MOBILE_TARGET, vector_registers
    from compression.tvm_backend.tuning import unmeasured_tile

    avx512 = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "emeraldrapids"}
    avx2 = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver3"}
    assert vector_registers(avx512) == (16, 32) and vector_registers(avx2) == (8, 16)
    assert vector_registers(MOBILE_TARGET) == (4, 32)
    for hw, k, pad in ((32, 3, 1), (8, 3, 1), (4, 1, 0), (2, 3, 1)):
        spec = ConvSpec(1, 64, hw, hw, 64, k, k, pad, 1, 8, 64 * k * k, True)
        narrow = conv_tile_candidates(spec, 8)
        assert narrow and all(t.fits(spec) and t.accumulators(spec, 8) <= 12 for t in narrow)
        assert any(t.filters == 4 for t in narrow)  # half a row-block per job: more vectors in 12 registers
        wide = conv_tile_candidates(spec, 16)
        assert all(t.accumulators(spec, 16) <= 28 for t in wide)
        for target, lanes in ((avx2, 8), (avx512, 16)):
            tile = unmeasured_tile(spec, target)
            assert tile.fits(spec) and tile.accumulators(spec, lanes) <= vector_registers(target)[1] - 4
    tile = ConvTile(8, 3, False, 4)
    assert tile.label == "8x3gf4" and ConvTile.from_params(tile.params()) == tile
    assert not tile.fits(ConvSpec(1, 8, 8, 8, 6, 3, 3, 1, 1, 6, 72, True))  # 4 filters do not divide r = 6


def test_image_major_order_is_a_batch_option_with_whole_images():
    one, batch = (ConvSpec(n, 8, 8, 8, 16, 3, 3, 1, 1, 8, 72, True) for n in (1, 3))
    tile = ConvTile(8, 2, True, 0, True)
    assert not tile.fits(one) and tile.fits(batch)
    assert not ConvTile(8, 3, True, 0, True).fits(batch)  # 8 row segments an image: 3 vectors a job straddle images
    assert ConvTile(8, 3, True).fits(batch)  # the other orders run segments over the whole batch (24 of them)
    assert tile.label == "8x2ri" and ConvTile.from_params(tile.params()) == tile
    # its scratch holds the one image being computed; the other orders' scratch holds the batch
    assert conv_output_shapes(batch, tile)[0][0] == 1 and conv_output_shapes(batch, ConvTile(8, 2, True))[0][0] == 3
    assert [s[0] for s in conv_output_shapes(batch, ConvTile(8, 1, False, 0, True))] == [1, 1, 3]  # xp, acc, y
    assert "image_major" not in ConvTile(8, 2, True).params()  # keys of the other orders are unchanged
    assert not any(t.image_major for t in conv_tile_candidates(one, 8))
    batched = conv_tile_candidates(batch, 8)
    assert {t for t in batched if not t.image_major} == {t for t in conv_tile_candidates(one, 8) if not t.flat_plane}
    assert any(t.image_major for t in batched)


# ------------------------------------------------------------------ image-lane tiles (lanes over the batch)
IMAGE_LANE_TILES = [ConvTile(8, 1, image_lanes=True), ConvTile(8, 2, filters=4, image_lanes=True),
                    ConvTile(16, 2, image_lanes=True), ConvTile(16, 4, filters=4, image_lanes=True)]


@pytest.mark.parametrize("n, ci, co, h, w, k, pad, stride", [
    (8, 5, 12, 4, 4, 3, 1, 1),     # small map, Co not a multiple of r=8
    (16, 8, 16, 2, 2, 3, 1, 1),    # 2x2 map: every lane a real output
    (8, 6, 8, 9, 9, 3, 1, 2),      # stride 2, odd map: contiguous loads without the phase layout
    (16, 8, 16, 4, 4, 1, 0, 1),    # 1x1
])
@pytest.mark.parametrize("act, residual", [("relu6", True), ("relu", False), ("none", False)])
def test_image_lane_tiles_match_torch(n, ci, co, h, w, k, pad, stride, act, residual):
    assert _check_tiles((n, ci, co, h, w, k, pad, stride), act, residual, lambda sparse: IMAGE_LANE_TILES,
                        False, seed=1) >= 2


def test_image_lane_tiles_fit_batches_only_and_never_the_phase_layout(tmp_path):
    one = ConvSpec(1, 8, 4, 4, 16, 3, 3, 1, 1, 8, 72, True)
    sixteen = ConvSpec(16, 8, 4, 4, 16, 3, 3, 1, 2, 8, 72, True)
    lanes = ConvTile(16, 2, image_lanes=True)
    assert not lanes.fits(one) and lanes.fits(sixteen)
    assert not ConvTile(16, 3, image_lanes=True).fits(ConvSpec(16, 8, 4, 4, 16, 3, 3, 1, 1, 8, 72, True))  # 16 % 3
    assert not any(t.image_lanes for t in conv_tile_candidates(one))
    assert any(t.image_lanes for t in conv_tile_candidates(sixteen))
    assert any(t.image_lanes for t in conv_tile_candidates(ConvSpec(8, 8, 4, 4, 16, 3, 3, 1, 1, 8, 72, True), 8))
    assert ConvTile.from_params(lanes.params()) == lanes and lanes.label == "16x2gn"
    assert not lanes.fits(sixteen, phased=True)
    with pytest.raises(ValueError, match="stride-phase layout"):
        conv_kernel(sixteen, lanes, phased=True)
    db = TuningDB(str(tmp_path / "t.json"))
    best = best_tile(sixteen, TARGET, db, sparse=False, candidates=(lanes, ConvTile.grid(16)), phased=True)
    assert not best.tile.image_lanes  # the phase layout's search never measures an image-lane tile


def test_a_batch_compiled_on_image_lane_tiles_agrees_with_eager(monkeypatch):
    import compression.tvm_backend.compile as compile_mod
    from compression.tvm_backend.tuning import Measured

    def lanes_first(spec, target, db, *, sparse, candidates=None, phased=False):
        tile = ConvTile(8, 1, image_lanes=True)
        return Measured(tile.tp, 1.0 if not phased and tile.fits(spec) else 2.0, tile if tile.fits(spec)
                        else ConvTile.grid(16))

    monkeypatch.setattr(compile_mod, "best_tile", lanes_first)
    torch.manual_seed(0)
    model = Residual().eval()
    x = torch.rand(8, 4, 8, 8)
    res = compile_model(model, (4, 8, 8), TARGET, batch=8)
    assert all(c.params.get("image_lanes") == 1 for c in res.layers if c.op == "conv"), [c.params for c in res.layers]
    from tvm import relax

    vm = relax.VirtualMachine(res.executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x.numpy()))
    out = (out[0] if not hasattr(out, "numpy") else out).numpy()
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), atol=1e-4, rtol=1e-4)


def test_the_tile_search_times_image_lane_tiles_wider_than_a_small_map(monkeypatch, tmp_path):
    import compression.tvm_backend.tuning as tuning

    timed = []
    monkeypatch.setattr(tuning, "time_kernel", lambda spec, tile, target, **kw: timed.append(tile) or 1.0 + len(timed))
    spec = ConvSpec(16, 8, 2, 2, 16, 3, 3, 1, 1, 8, 72, True)  # 2x2 map: 8 grid positions
    best_tile(spec, TARGET, TuningDB(str(tmp_path / "t.json")), sparse=False)
    assert ConvTile(16, 2, image_lanes=True) in timed and ConvTile.grid(32) not in timed


# ------------------------------------------------------------------ job blocks (batches, row-block outer)
@pytest.mark.parametrize("tiles", [
    [ConvTile.grid(16), ConvTile(8, 2, False, 4), ConvTile(4, 2, True)],   # position tiles, filter groups, rows
    IMAGE_LANE_TILES,
])
def test_batches_in_blocks_of_row_blocks_match_torch(monkeypatch, tiles):
    # weights outweigh the input (row-block outer) and a block holds 2-3 of the 12 row-blocks: every job order
    # level (block, tile, row-block in the block) is exercised, dense and sparse, with the input prefetch on
    import compression.tvm_backend.kernels as kernels
    from compression.tvm_backend.kernels_image_lanes import image_lanes_kernel

    shape = (16, 16, 96, 4, 4, 3, 1, 1)
    dense = ConvSpec(16, 16, 4, 4, 96, 3, 3, 1, 1, 8, 144, True)
    assert not kernels.tile_outer_order(dense) and kernels.INPUT_PREFETCH_COLUMNS > 0
    monkeypatch.setattr(kernels, "WEIGHT_BLOCK_BYTES", 2 * 144 * 9 * 4 + 1)
    assert kernels.job_block(dense, 8) == 2 and kernels.job_block(dense, 4) == 3
    assert kernels.job_block(replace(dense, n=1), 8) == 1  # batch 1: row-block outer
    conv_kernel.cache_clear(), image_lanes_kernel.cache_clear()
    try:
        assert _check_tiles(shape, "relu", True, lambda sparse: tiles, False, seed=5) >= 4
    finally:
        conv_kernel.cache_clear(), image_lanes_kernel.cache_clear()


class _TinyMap(nn.Module):
    """Convs down to a 1x1 map (VGG on 16x16 inputs ends so): 8 of each 3x3 kernel's 9 taps only read padding."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)
        self.c = nn.Conv2d(16, 16, 3, padding=1, stride=2)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        y = torch.relu(self.c(torch.relu(self.b(torch.relu(self.a(x))))))
        return self.head(y.flatten(1))


@pytest.mark.parametrize("measure", [False, True])
def test_taps_that_only_read_padding_are_never_run(measure, tmp_path):
    one = ConvSpec(1, 4, 1, 1, 8, 3, 3, 1, 1, 8, 36, True)
    assert one.live_columns().reshape(4, 9).sum(1).tolist() == [1] * 4 and one.live_columns().reshape(4, 9)[:, 4].all()
    assert ConvSpec(1, 4, 2, 2, 8, 3, 3, 1, 1, 8, 36, True).live_columns().all()  # each tap reads some position
    strided = ConvSpec(1, 4, 2, 2, 8, 3, 3, 1, 2, 8, 36, True)  # 2x2 -> 1x1 at stride 2: taps 1..2 of each axis
    assert strided.live_columns().reshape(4, 3, 3)[0].tolist() == [[False] * 3, [False, True, True], [False, True, True]]
    torch.manual_seed(0)
    model = _TinyMap().eval()
    with torch.no_grad():  # prune half of b's weights so that it may take the compact kernel too
        model.b.weight.mul_((torch.rand_like(model.b.weight) > 0.5).float())
    x = torch.rand(1, 3, 1, 1)
    db = TuningDB(str(tmp_path / "db.json")) if measure else None
    res = compile_model(model, (3, 1, 1), TARGET, batch=1, db=db, measure=measure)
    kept = {c.name: (c.kept_columns, c.total_columns) for c in res.layers if c.op == "conv"}
    assert kept["conv0"] == (3, 27) and kept["conv2"] == (16, 144), kept  # the centre tap of each input channel
    assert kept["conv1"][0] <= 16, kept
    from tvm import relax

    vm = relax.VirtualMachine(res.executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x.numpy()))
    out = (out[0] if not hasattr(out, "numpy") else out).numpy()
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), atol=1e-4, rtol=1e-4)
