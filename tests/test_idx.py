"""IDX files (MNIST family) and the fashion-mnist / mnist sources, on tiny files in the exact format."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from suite.core import registries as reg
from suite.core.errors import ConfigError
from suite.core.models import SourceSpec, load_source
from suite.core.sources import idx as idx_mod
from test_disk_loaders import assert_data_error
from suite.core.sources.idx import (
    FASHION_MNIST_CLASSES,
    IDX_FILES,
    IMAGES_MAGIC,
    LABELS_MAGIC,
    load_fashion_mnist,
    load_idx_pair,
    load_mnist,
    read_idx_images,
    read_idx_labels,
)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------- writers


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    """The exact IDX encoding of a uint8 array: big-endian magic, big-endian uint32 sizes, raw data."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    magic = (0x08 << 8 | arr.ndim) if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx(path: Path, arr: np.ndarray, *, gz: bool = False, magic: int | None = None) -> Path:
    data = idx_bytes(arr, magic)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_dataset(directory: Path, n_train: int = 40, n_test: int = 20, *, gz: bool = True, seed: int = 0
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four official files (``.gz`` names when gz); return split -> (images [N,28,28], labels)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images, gz=gz)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz=gz)
        out[split] = (images, labels.astype(np.int64))
    return out


# --------------------------------------------------------------------------- the format


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    images = np.random.default_rng(1).integers(0, 256, (5, 3, 4), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3, 1], dtype=np.uint8)
    ip = write_idx(tmp_path / "imgs", images, gz=gz)
    lp = write_idx(tmp_path / "labs", labels, gz=gz)
    assert ip.read_bytes()[:2] == (b"\x1f\x8b" if gz else b"\x00\x00")
    got = read_idx_images(ip)
    assert got.dtype == np.uint8 and got.shape == (5, 3, 4)
    np.testing.assert_array_equal(got, images)
    got_y = read_idx_labels(lp)
    assert got_y.dtype == np.int64
    np.testing.assert_array_equal(got_y, labels)
    x, y = load_idx_pair(ip, lp)
    assert x.shape == (5, 1, 3, 4)
    np.testing.assert_array_equal(x[:, 0], images)


def test_idx_header_is_big_endian(tmp_path):
    """Sizes 1 x 2 x 3 written by hand: 00 00 08 03 | 00 00 00 01 | 00 00 00 02 | 00 00 00 03 | 6 bytes."""
    raw = bytes.fromhex("00000803" "00000001" "00000002" "00000003") + bytes(range(6))
    (tmp_path / "f").write_bytes(raw)
    np.testing.assert_array_equal(read_idx_images(tmp_path / "f"), np.arange(6, dtype=np.uint8).reshape(1, 2, 3))


def test_gzip_detected_by_magic_not_name(tmp_path):
    images = np.full((2, 2, 2), 7, np.uint8)
    plain_named_gz = write_idx(tmp_path / "a.gz", images, gz=False)
    gz_named_plain = write_idx(tmp_path / "b", images, gz=True)
    np.testing.assert_array_equal(read_idx_images(plain_named_gz), images)
    np.testing.assert_array_equal(read_idx_images(gz_named_plain), images)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "case, needles",
    [
        ("empty", ["truncated", "0 bytes", "magic"]),
        ("short_magic", ["truncated", "3 bytes"]),
        ("short_header", ["truncated", "header needs 16"]),
        ("short_data", ["data is truncated", "47 bytes", "2 x 4 x 6 = 48"]),
        ("extra_data", ["data is oversized", "49 bytes", "= 48"]),
        ("labels_magic", ["magic 0x00000801", "labels file", "expected magic 0x00000803"]),
        ("two_dims", ["0x00000802", "2 dimensions", "expected magic 0x00000803"]),
        ("four_dims", ["0x00000804", "4 dimensions"]),
        ("float_type", ["0x00000d03", "expected magic 0x00000803"]),
    ],
)
def test_malformed_images_file(tmp_path, gz, case, needles):
    good = idx_bytes(np.zeros((2, 4, 6), np.uint8))
    data = {
        "empty": b"",
        "short_magic": good[:3],
        "short_header": good[:10],
        "short_data": good[:-1],
        "extra_data": good + b"\x00",
        "labels_magic": idx_bytes(np.zeros(5, np.uint8)),
        "two_dims": idx_bytes(np.zeros((2, 4), np.uint8)),
        "four_dims": idx_bytes(np.zeros((1, 2, 4, 6), np.uint8)),
        "float_type": bytes.fromhex("00000d03") + good[4:],
    }[case]
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if gz else data)
    assert_data_error(lambda: read_idx_images(path, name="mnist"), "mnist:", str(path), *needles)


def test_malformed_labels_file(tmp_path):
    path = tmp_path / "labels"
    write_idx(path, np.zeros((3, 28, 28), np.uint8))
    assert_data_error(lambda: read_idx_labels(path), "images file", "expected magic 0x00000801")
    write_idx(path, np.array([0, 10, 2], np.uint8))
    assert_data_error(lambda: read_idx_labels(path), str(path), "out of range", "0..10", "expected 0..9")
    path.write_bytes(idx_bytes(np.zeros(4, np.uint8))[:-2])
    assert_data_error(lambda: read_idx_labels(path), "truncated", "2 bytes", "expected 4")


def test_missing_and_corrupt_gzip(tmp_path):
    assert_data_error(lambda: read_idx_images(tmp_path / "nope"), str(tmp_path / "nope"), "not found")
    assert_data_error(lambda: read_idx_images(tmp_path), "is a directory")
    cut = gzip.compress(idx_bytes(np.zeros((3, 28, 28), np.uint8)))[:30]
    (tmp_path / "cut.gz").write_bytes(cut)
    assert_data_error(lambda: read_idx_images(tmp_path / "cut.gz"), "cut.gz", "gzip-compressed IDX")
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b" + b"not gzip at all")
    assert_data_error(lambda: read_idx_images(tmp_path / "bad.gz"), "bad.gz", "gzip")


def test_count_mismatch_and_size(tmp_path):
    ip = write_idx(tmp_path / "i", np.zeros((4, 28, 28), np.uint8))
    lp = write_idx(tmp_path / "l", np.zeros(3, np.uint8))
    assert_data_error(lambda: load_idx_pair(ip, lp), "4 images", "3 labels", str(ip), str(lp))
    small = write_idx(tmp_path / "s", np.zeros((3, 8, 8), np.uint8))
    assert_data_error(lambda: load_idx_pair(small, lp, size=(28, 28)), "8x8", "expected 28x28")
    empty_i = write_idx(tmp_path / "ei", np.zeros((0, 28, 28), np.uint8))
    empty_l = write_idx(tmp_path / "el", np.zeros(0, np.uint8))
    assert_data_error(lambda: load_idx_pair(empty_i, empty_l), "no images")


# --------------------------------------------------------------------------- the sources


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_source_from_tiny_dir(tmp_path, gz):
    data = write_dataset(tmp_path, 40, 20, gz=gz)
    src = load_fashion_mnist(tmp_path, val_fraction=0.25, split_seed=0)
    assert src.name == "fashion-mnist" and src.shape == (1, 28, 28) and src.resolution == 28
    assert src.num_classes == 10 and src.class_names == FASHION_MNIST_CLASSES
    assert src.class_names[0] == "T-shirt/top" and src.class_names[9] == "Ankle boot"
    assert (len(src.train), len(src.val), len(src.test)) == (30, 10, 20)
    for split in (src.train, src.val, src.test):
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == (1, 28, 28)
        assert split.labels.dtype == np.int64 and split.indices.dtype == np.int64
        x, y = split.tensors()
        assert x.shape == (len(split), 1, 28, 28) and str(x.dtype) == "torch.float32"
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # pixels and labels are the file's, at the recorded indices
    for split, (x, y) in ((src.train, data["train"]), (src.val, data["train"]), (src.test, data["test"])):
        np.testing.assert_array_equal(split.images[:, 0], x[split.indices])
        np.testing.assert_array_equal(split.labels, y[split.indices])
    # val held out of train: disjoint, together the whole official train set, stratified
    assert not set(src.train.indices) & set(src.val.indices)
    assert sorted([*src.train.indices, *src.val.indices]) == list(range(40))
    assert np.bincount(src.val.labels, minlength=10).tolist() == [1] * 10
    # the official test set is kept whole
    assert sorted(src.test.indices) == list(range(20))
    assert src.meta["data_root"] == str(tmp_path.resolve()) and len(src.meta["split_digest"]) == 16
    summary = src.summary()
    assert summary["shape"] == [1, 28, 28] and len(summary["sha256"]) == 64
    assert "Fashion-MNIST" in src.description and "official 20-image test set" in src.description


def test_source_determinism_seed_and_limit(tmp_path):
    write_dataset(tmp_path, 60, 30)
    a = load_fashion_mnist(tmp_path, split_seed=3)
    b = load_fashion_mnist(tmp_path, split_seed=3)
    assert a.fingerprint() == b.fingerprint() and a.meta["split_digest"] == b.meta["split_digest"]
    c = load_fashion_mnist(tmp_path, split_seed=4)
    assert c.meta["split_digest"] != a.meta["split_digest"] and c.fingerprint() != a.fingerprint()
    np.testing.assert_array_equal(c.test.indices, a.test.indices)  # test order ignores split_seed
    small = load_fashion_mnist(tmp_path, split_seed=3, limit=5)
    assert (len(small.train), len(small.val), len(small.test)) == (5, 5, 5)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(small.split(name).indices, a.split(name).indices[:5])
    # the raw and gzip forms of the same data give the same source (same sha256)
    write_dataset(tmp_path / "raw", 60, 30, gz=False)
    raw = load_fashion_mnist(tmp_path / "raw", split_seed=3)
    assert raw.fingerprint() == a.fingerprint()


def test_mnist_source(tmp_path):
    write_dataset(tmp_path / "mnist", 100, 10)
    src = load_mnist(tmp_path)
    assert src.name == "mnist" and src.shape == (1, 28, 28) and src.class_names == tuple("0123456789")
    assert (len(src.train), len(src.val), len(src.test)) == (90, 10, 10)
    assert src.meta["data_root"] == str((tmp_path / "mnist").resolve())
    assert_data_error(lambda: load_mnist(None), "--data-root", "train-images-idx3-ubyte")


@pytest.mark.parametrize("layout", ["", "fashion-mnist", "FashionMNIST/raw"])
def test_fashion_mnist_data_root_layouts(tmp_path, layout):
    write_dataset(tmp_path / layout if layout else tmp_path, 20, 10)
    src = load_fashion_mnist(tmp_path)
    expected = (tmp_path / layout) if layout else tmp_path
    assert src.meta["data_root"] == str(expected.resolve())
    assert len(src.train) + len(src.val) == 20


def test_torchvision_layout_prefers_either_form(tmp_path):
    """torchvision keeps both the .gz and the extracted files in FashionMNIST/raw/."""
    raw = tmp_path / "FashionMNIST" / "raw"
    write_dataset(raw, 20, 10, gz=True)
    write_dataset(raw, 20, 10, gz=False)
    a = load_fashion_mnist(tmp_path)
    b = load_fashion_mnist(tmp_path / "FashionMNIST")
    assert a.fingerprint() == b.fingerprint()
    write_dataset(tmp_path / "MNIST" / "raw", 20, 10, gz=False)
    assert load_mnist(tmp_path).meta["data_root"] == str((tmp_path / "MNIST" / "raw").resolve())


def test_source_missing_files(tmp_path, monkeypatch):
    monkeypatch.setattr(idx_mod, "FASHION_MNIST_DEFAULT_DIR", tmp_path / "absent")
    msg = assert_data_error(lambda: load_fashion_mnist(None), "fashion-mnist:", str(tmp_path / "absent"),
                            "apt-get install dataset-fashion-mnist", "--data-root", "t10k-labels-idx1-ubyte[.gz]")
    assert msg.count("train-images-idx3-ubyte") == 1
    assert_data_error(lambda: load_fashion_mnist(tmp_path / "nope"), "does not exist", "apt-get install")
    assert_data_error(lambda: load_fashion_mnist(tmp_path), "not found", str(tmp_path / "FashionMNIST" / "raw"))
    write_dataset(tmp_path, 20, 10)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    msg = assert_data_error(lambda: load_fashion_mnist(tmp_path), "missing t10k-labels-idx1-ubyte[.gz]",
                            "apt-get install dataset-fashion-mnist")
    assert "t10k-images" not in msg.split("missing")[1].split(";")[0]


def test_source_rejects_bad_files(tmp_path):
    write_dataset(tmp_path, 20, 10)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(20, 11, np.uint8), gz=True)
    assert_data_error(lambda: load_fashion_mnist(tmp_path), "train-labels-idx1-ubyte.gz", "out of range")
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(19, np.uint8), gz=True)
    assert_data_error(lambda: load_fashion_mnist(tmp_path), "20 images", "19 labels")
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(20, np.uint8), gz=True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((10, 28, 28), np.uint8), gz=True, magic=LABELS_MAGIC)
    assert_data_error(lambda: load_fashion_mnist(tmp_path), "t10k-images-idx3-ubyte.gz", "magic")
    with pytest.raises(ConfigError):
        load_fashion_mnist(tmp_path, val_fraction=1.0)
    with pytest.raises(ConfigError):
        load_fashion_mnist(tmp_path, limit=0)


def test_registry_and_load_source(tmp_path, monkeypatch):
    assert reg.sources.canonical("fmnist") == "fashion-mnist"
    assert reg.sources.canonical("fashion_mnist") == "fashion-mnist"
    assert reg.sources.canonical("FashionMNIST") == "fashion-mnist"
    assert not reg.sources.entry("fashion-mnist").tags.get("needs_data_root")
    assert reg.sources.entry("mnist").tags.get("needs_data_root")
    with pytest.raises(ConfigError, match="--data-root"):
        load_source(SourceSpec("mnist"))
    write_dataset(tmp_path, 20, 10)
    monkeypatch.setattr(idx_mod, "FASHION_MNIST_DEFAULT_DIR", tmp_path)
    src = load_source(SourceSpec("fmnist", limit=4))  # no data root: the default location
    assert src.name == "fashion-mnist" and len(src.train) == 4
    assert load_source(SourceSpec("mnist", data_root=str(tmp_path))).name == "mnist"
    assert IMAGES_MAGIC == 0x803 and IDX_FILES[3] == "t10k-labels-idx1-ubyte"


def test_cli_lists_both_sources():
    out = subprocess.run([sys.executable, "-m", "suite", "ls", "sources"], capture_output=True, text=True,
                         check=True).stdout
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ")}
    assert "fashion-mnist" in lines and "fmnist" in lines["fashion-mnist"]
    assert "mnist" in lines


# --------------------------------------------------------------------------- the real files


@pytest.mark.skipif(not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason=f"Debian's dataset-fashion-mnist is not installed ({DEBIAN_DIR} absent; "
                           "apt-get install dataset-fashion-mnist)")
def test_real_debian_fashion_mnist():
    src = load_fashion_mnist()
    assert src.meta["data_root"] == str(DEBIAN_DIR)
    assert src.shape == (1, 28, 28) and src.class_names == FASHION_MNIST_CLASSES
    assert (len(src.train), len(src.val), len(src.test)) == (54000, 6000, 10000)
    assert len(src.train) + len(src.val) == 60000
    # Fashion-MNIST is exactly balanced: 6,000 train and 1,000 test images per class
    assert np.bincount(src.train.labels, minlength=10).tolist() == [5400] * 10
    assert np.bincount(src.val.labels, minlength=10).tolist() == [600] * 10
    assert np.bincount(src.test.labels, minlength=10).tolist() == [1000] * 10
    assert src.train.images.max() == 255 and src.train.images.min() == 0
