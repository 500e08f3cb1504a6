"""Loaders for on-disk datasets, exercised on tiny files written in the official formats."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from suite.core.errors import ConfigError, DataError
from suite.core.sources.base import ImageSource
from suite.core.sources.disk import (
    DISK_SOURCES,
    load_cifar10,
    load_cifar100,
    load_imagefolder,
    load_stl10,
    load_svhn,
)

CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


# --------------------------------------------------------------------------- writers


def _dump(path: Path, obj: dict, protocol: int = 2) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def write_cifar10(root: Path, per_batch: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Write cifar-10-batches-py under root; return (train_x, train_y, test_x, test_y) as [N,3,32,32]."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in np.arange(per_batch) % 10]
        _dump(d / f"data_batch_{i}", {b"batch_label": b"training batch", b"labels": labels, b"data": data,
                                       b"filenames": [b"f.png"] * per_batch})
        xs.append(data)
        ys.extend(labels)
    test = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
    test_labels = [int(v) for v in (np.arange(per_batch) * 3) % 10]
    _dump(d / "test_batch", {b"batch_label": b"testing batch", b"labels": test_labels, b"data": test})
    _dump(d / "batches.meta", {b"label_names": CIFAR10_NAMES, b"num_cases_per_batch": per_batch, b"num_vis": 3072})
    return (np.concatenate(xs).reshape(-1, 3, 32, 32), np.array(ys), test.reshape(-1, 3, 32, 32), np.array(test_labels))


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 100) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    train = rng.integers(0, 256, (n_train, 3072), dtype=np.uint8)
    _dump(d / "train", {b"data": train, b"fine_labels": list(range(100)) * (n_train // 100),
                        b"coarse_labels": [0] * n_train})
    test = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    _dump(d / "test", {b"data": test, b"fine_labels": [99 - i % 100 for i in range(n_test)]})
    _dump(d / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                       b"coarse_label_names": [b"x"] * 20})
    return train.reshape(-1, 3, 32, 32), test.reshape(-1, 3, 32, 32)


def write_svhn(root: Path, n_train: int = 50, n_test: int = 20) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write train/test_32x32.mat; return split -> (images [N,3,32,32], digit labels 0..9)."""
    rng = np.random.default_rng(2)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        imgs = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        digits = np.arange(n) % 10
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": imgs.transpose(2, 3, 1, 0), "y": y})
        out[split] = (imgs, digits)
    return out


def write_stl10(root: Path, n_train: int = 20, n_test: int = 10) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write stl10_binary/ (column-major images, labels 1..10); return split -> (images [N,3,96,96], labels 0..9)."""
    rng = np.random.default_rng(3)
    d = root / "stl10_binary"
    d.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        imgs = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        labels = np.arange(n) % 10
        (d / f"{split}_X.bin").write_bytes(np.ascontiguousarray(imgs.transpose(0, 1, 3, 2)).tobytes())
        (d / f"{split}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
        out[split] = (imgs, labels)
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (d / "class_names.txt").write_text("\n".join(names) + "\n")
    return out


def write_folder(root: Path, classes: list[str], per_class: int, size: int = 8, seed: int = 4) -> np.ndarray:
    """Class folders of RGB PNGs; return images [N,3,size,size] in (sorted class, sorted file) order."""
    rng = np.random.default_rng(seed)
    imgs = []
    for cls in sorted(classes):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            hwc = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(hwc).save(root / cls / f"img_{i:02d}.png")
            imgs.append(hwc.transpose(2, 0, 1))
    return np.stack(imgs)


# --------------------------------------------------------------------------- checks


def check_source(src: ImageSource, shape: tuple[int, int, int], num_classes: int) -> None:
    assert isinstance(src, ImageSource)
    assert src.shape == shape and src.num_classes == num_classes and len(src.class_names) == num_classes
    for split in (src.train, src.val, src.test):
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == shape
        assert split.images.flags["C_CONTIGUOUS"]
        assert split.labels.dtype == np.int64 and split.indices.dtype == np.int64
        if len(split):
            assert 0 <= split.labels.min() and split.labels.max() < num_classes
    assert set(src.meta) >= {"data_root", "split_seed", "split_digest"}
    assert len(src.meta["split_digest"]) == 16


def check_round_trip(src: ImageSource, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> None:
    """Pixels and labels of every split equal the pool entries their indices point at."""
    for split, (x, y) in ((src.train, train), (src.val, train), (src.test, test)):
        np.testing.assert_array_equal(split.images, x[split.indices])
        np.testing.assert_array_equal(split.labels, y[split.indices])
    assert not set(src.train.indices) & set(src.val.indices)
    assert sorted([*src.train.indices, *src.val.indices]) == list(range(len(train[1])))
    assert sorted(src.test.indices) == list(range(len(test[1])))


def assert_data_error(fn, *needles: str) -> str:
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar10_round_trip_and_splits(tmp_path):
    tx, ty, sx, sy = write_cifar10(tmp_path)
    src = load_cifar10(tmp_path, val_fraction=0.1, split_seed=0)
    check_source(src, (3, 32, 32), 10)
    assert (len(src.train), len(src.val), len(src.test)) == (90, 10, 20)
    check_round_trip(src, (tx, ty), (sx, sy))
    assert np.bincount(src.val.labels, minlength=10).tolist() == [1] * 10  # stratified
    assert src.class_names[0] == "airplane" and src.class_names[9] == "truck"
    assert src.meta["data_root"] == str((tmp_path / "cifar-10-batches-py").resolve())
    # official orientation: first 1024 bytes are the red plane, row-major
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes(), encoding="bytes")[b"data"]
    pos = int(np.flatnonzero(np.concatenate([src.train.indices, src.val.indices]) == 0)[0])
    img0 = np.concatenate([src.train.images, src.val.images])[pos]
    np.testing.assert_array_equal(img0[0, 0, :], raw[0, :32])
    np.testing.assert_array_equal(img0[0, 1, :], raw[0, 32:64])
    np.testing.assert_array_equal(img0[1, 0, :], raw[0, 1024:1056])


def test_cifar10_determinism_seed_limit_and_dir_forms(tmp_path):
    write_cifar10(tmp_path)
    a = load_cifar10(tmp_path, split_seed=3)
    b = load_cifar10(str(tmp_path / "cifar-10-batches-py"), split_seed=3)
    assert a.fingerprint() == b.fingerprint() and a.meta["split_digest"] == b.meta["split_digest"]
    c = load_cifar10(tmp_path, split_seed=4)
    assert c.meta["split_digest"] != a.meta["split_digest"]
    assert not np.array_equal(np.sort(c.val.indices), np.sort(a.val.indices))
    np.testing.assert_array_equal(c.test.indices, a.test.indices)  # test order ignores split_seed
    small = load_cifar10(tmp_path, split_seed=3, limit=7)
    assert (len(small.train), len(small.val), len(small.test)) == (7, 7, 7)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(small.split(name).indices, a.split(name).indices[:7])
        np.testing.assert_array_equal(small.split(name).images, a.split(name).images[:7])
    assert small.meta["split_digest"] != a.meta["split_digest"]


def test_cifar10_missing_paths(tmp_path):
    assert_data_error(lambda: load_cifar10(None), "--data-root", "cifar-10-batches-py")
    assert_data_error(lambda: load_cifar10(tmp_path / "nope"), "does not exist", "cifar-10-batches-py")
    assert_data_error(lambda: load_cifar10(tmp_path), str(tmp_path / "cifar-10-batches-py"), "not found")
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    msg = assert_data_error(lambda: load_cifar10(tmp_path), "missing data_batch_3", "data_batch_1..5")
    assert "data_batch_2" not in msg.split("missing")[1]


@pytest.mark.parametrize(
    "payload, needle",
    [
        ("truncated", "data_batch_2"),
        ({b"labels": [0] * 20}, "'data'"),
        ({b"data": np.zeros((20, 1000), np.uint8), b"labels": [0] * 20}, "3072"),
        ({b"data": np.zeros((20, 3072), np.float32), b"labels": [0] * 20}, "uint8"),
        ({b"data": np.zeros((20, 3072), np.uint8), b"labels": [10] * 20}, "out of range"),
        ({b"data": np.zeros((20, 3072), np.uint8), b"labels": [0] * 19}, "labels"),
        ([1, 2, 3], "dict"),
    ],
)
def test_cifar10_malformed_batch(tmp_path, payload, needle):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    if payload == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    else:
        _dump(path, payload)
    assert_data_error(lambda: load_cifar10(tmp_path), "data_batch_2", needle)


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path("/nonexistent-suite-test/owned"),))


def test_cifar_pickle_refuses_arbitrary_globals(tmp_path):
    write_cifar10(tmp_path)
    _dump(tmp_path / "cifar-10-batches-py" / "test_batch", {b"data": _Evil(), b"labels": []})
    assert_data_error(lambda: load_cifar10(tmp_path), "test_batch", "refusing")


def test_cifar_python2_numpy_core_globals(tmp_path):
    """Official batches were pickled by Python 2 / numpy 1: globals name numpy.core.multiarray."""
    tx, ty, sx, sy = write_cifar10(tmp_path)
    d = tmp_path / "cifar-10-batches-py"
    for f in d.iterdir():
        f.write_bytes(f.read_bytes().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
    assert b"numpy.core.multiarray" in (d / "data_batch_1").read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        src = load_cifar10(tmp_path)
    check_round_trip(src, (tx, ty), (sx, sy))


# --------------------------------------------------------------------------- CIFAR-100


def test_cifar100_fine_labels(tmp_path):
    train, test = write_cifar100(tmp_path)
    src = load_cifar100(tmp_path / "cifar-100-python", val_fraction=0.5, split_seed=1)
    check_source(src, (3, 32, 32), 100)
    assert (len(src.train), len(src.val), len(src.test)) == (100, 100, 100)
    ty = np.array(list(range(100)) * 2)
    sy = np.array([99 - i for i in range(100)])
    check_round_trip(src, (train, ty), (test, sy))
    assert src.class_names[:2] == ("c0", "c1")


def test_cifar100_errors(tmp_path):
    assert_data_error(lambda: load_cifar100(tmp_path), "cifar-100-python")
    write_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "meta").unlink()
    assert_data_error(lambda: load_cifar100(tmp_path), "missing meta")
    _dump(tmp_path / "cifar-100-python" / "meta", {b"fine_label_names": [b"a"] * 99})
    assert_data_error(lambda: load_cifar100(tmp_path), "meta", "100 class names")
    _dump(tmp_path / "cifar-100-python" / "meta", {b"fine_label_names": [b"a"] * 100})
    _dump(tmp_path / "cifar-100-python" / "test", {b"data": np.zeros((5, 3072), np.uint8), b"coarse_labels": [0] * 5})
    assert_data_error(lambda: load_cifar100(tmp_path), "test", "'fine_labels'")


# --------------------------------------------------------------------------- SVHN


def test_svhn_axis_order_and_label_mapping(tmp_path):
    pools = write_svhn(tmp_path)
    src = load_svhn(tmp_path, val_fraction=0.2, split_seed=5)
    check_source(src, (3, 32, 32), 10)
    assert (len(src.train), len(src.val), len(src.test)) == (40, 10, 20)
    check_round_trip(src, pools["train"], pools["test"])
    zero = src.test.indices % 10 == 0  # written as label 10
    assert zero.any() and (src.test.labels[zero] == 0).all()
    assert src.class_names == tuple("0123456789")


def test_svhn_errors(tmp_path):
    assert_data_error(lambda: load_svhn(tmp_path), "missing train_32x32.mat, test_32x32.mat")
    write_svhn(tmp_path)
    (tmp_path / "test_32x32.mat").unlink()
    assert_data_error(lambda: load_svhn(tmp_path), "missing test_32x32.mat")
    (tmp_path / "test_32x32.mat").write_bytes(b"this is not a mat file at all" * 10)
    assert_data_error(lambda: load_svhn(tmp_path), "test_32x32.mat", "cannot read")
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 4), np.uint8), "y": np.ones((4, 1))})
    assert_data_error(lambda: load_svhn(tmp_path), "test_32x32.mat", "[32, 32, 3, N]")
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.zeros((4, 1))})
    assert_data_error(lambda: load_svhn(tmp_path), "test_32x32.mat", "out of range")
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 4), np.uint8)})
    assert_data_error(lambda: load_svhn(tmp_path), "test_32x32.mat", "'y'")


# --------------------------------------------------------------------------- STL-10


def test_stl10_column_major_and_labels(tmp_path):
    pools = write_stl10(tmp_path)
    src = load_stl10(tmp_path, val_fraction=0.5, split_seed=2, limit=None)
    check_source(src, (3, 96, 96), 10)
    assert (len(src.train), len(src.val), len(src.test)) == (10, 10, 10)
    check_round_trip(src, pools["train"], pools["test"])
    raw = np.frombuffer((tmp_path / "stl10_binary" / "test_X.bin").read_bytes(), np.uint8)
    img = src.test.images[int(np.flatnonzero(src.test.indices == 0)[0])]
    np.testing.assert_array_equal(img[0, :, 0], raw[:96])  # first 96 bytes = first column of red
    np.testing.assert_array_equal(src.train.labels, src.train.indices % 10)  # file labels 1..10
    assert src.class_names[7] == "monkey"


def test_stl10_errors(tmp_path):
    assert_data_error(lambda: load_stl10(tmp_path), "stl10_binary", "not found")
    write_stl10(tmp_path)
    d = tmp_path / "stl10_binary"
    (d / "class_names.txt").unlink()
    assert_data_error(lambda: load_stl10(d), "missing class_names.txt")
    (d / "class_names.txt").write_text("a\nb\n")
    assert_data_error(lambda: load_stl10(d), "class_names.txt", "10 class names")
    (d / "class_names.txt").write_text("\n".join("abcdefghij"))
    (d / "train_X.bin").write_bytes(b"\0" * (27648 * 2 + 5))
    assert_data_error(lambda: load_stl10(tmp_path), "train_X.bin", "27648")
    (d / "train_X.bin").write_bytes(b"\0" * 27648 * 20)
    (d / "train_y.bin").write_bytes(bytes([1] * 19))
    assert_data_error(lambda: load_stl10(tmp_path), "train_y.bin", "[20]")
    (d / "train_y.bin").write_bytes(bytes([0] * 20))
    assert_data_error(lambda: load_stl10(tmp_path), "train_y.bin", "out of range", "1..10")


# --------------------------------------------------------------------------- ImageFolder


def test_imagefolder_flat(tmp_path):
    pool = write_folder(tmp_path, ["dog", "cat", "bird"], per_class=10)
    labels = np.repeat(np.arange(3), 10)
    src = load_imagefolder(tmp_path, size=8, val_fraction=0.1, test_fraction=0.2, split_seed=0)
    check_source(src, (3, 8, 8), 3)
    assert src.class_names == ("bird", "cat", "dog")
    assert (len(src.train), len(src.val), len(src.test)) == (21, 3, 6)
    for split in (src.train, src.val, src.test):
        np.testing.assert_array_equal(split.images, pool[split.indices])
        np.testing.assert_array_equal(split.labels, labels[split.indices])
    all_idx = np.concatenate([src.train.indices, src.val.indices, src.test.indices])
    assert sorted(all_idx) == list(range(30))
    again = load_imagefolder(tmp_path, size=8, split_seed=0)
    assert again.fingerprint() == src.fingerprint()
    assert load_imagefolder(tmp_path, size=8, split_seed=1).meta["split_digest"] != src.meta["split_digest"]
    small = load_imagefolder(tmp_path, size=8, limit=2)
    assert [len(s) for s in (small.train, small.val, small.test)] == [2, 2, 2]
    np.testing.assert_array_equal(small.test.images, src.test.images[:2])
    assert src.meta["layout"] == "flat"


def test_imagefolder_resize_and_modes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "nested").mkdir(parents=True)
    Image.fromarray(np.full((12, 16), 77, np.uint8), mode="L").save(tmp_path / "a" / "gray.png")
    Image.new("RGBA", (5, 9), (10, 20, 30, 40)).save(tmp_path / "b" / "nested" / "x.PNG")
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "b" / "y.jpg", quality=100)
    (tmp_path / "b" / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden").mkdir()
    src = load_imagefolder(tmp_path, size=4, val_fraction=0.0, test_fraction=0.0)
    assert src.class_names == ("a", "b") and len(src.train) == 3 and src.shape == (3, 4, 4)
    by_index = dict(zip(src.train.indices.tolist(), src.train.images))
    assert (by_index[0] == 77).all()  # grey -> three equal channels, constant survives resize
    np.testing.assert_array_equal(by_index[1][:, 0, 0], [10, 20, 30])  # b/nested/x.PNG sorts first


def test_imagefolder_train_test_layout(tmp_path):
    train_pool = write_folder(tmp_path / "train", ["x", "y"], per_class=10, seed=5)
    test_pool = write_folder(tmp_path / "test", ["x", "y"], per_class=3, seed=6)
    src = load_imagefolder(tmp_path, size=8, val_fraction=0.2, test_fraction=0.5, split_seed=9)
    check_source(src, (3, 8, 8), 2)
    assert (len(src.train), len(src.val), len(src.test)) == (16, 4, 6)
    labels = np.repeat(np.arange(2), 10)
    check_round_trip(src, (train_pool, labels), (test_pool, np.repeat(np.arange(2), 3)))
    assert src.meta["layout"] == "train_test"


def test_imagefolder_errors(tmp_path):
    assert_data_error(lambda: load_imagefolder(None), "--data-root", "class_name")
    assert_data_error(lambda: load_imagefolder(tmp_path), "found none")
    (tmp_path / "empty_class").mkdir()
    assert_data_error(lambda: load_imagefolder(tmp_path), "empty_class", "no images")
    write_folder(tmp_path / "ok", ["a"], per_class=2)
    (tmp_path / "empty_class" / "broken.png").write_bytes(b"not a png")
    assert_data_error(lambda: load_imagefolder(tmp_path, val_fraction=0.0, test_fraction=0.0), "broken.png")
    with pytest.raises(ConfigError):
        load_imagefolder(tmp_path, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError):
        load_imagefolder(tmp_path, size=0)


def test_imagefolder_layout_errors(tmp_path):
    write_folder(tmp_path / "train", ["a", "b"], per_class=2)
    assert_data_error(lambda: load_imagefolder(tmp_path), "no test/")
    write_folder(tmp_path / "test", ["a", "c"], per_class=2)
    assert_data_error(lambda: load_imagefolder(tmp_path), "same class folders", "['b']", "['c']")


# --------------------------------------------------------------------------- table and arguments


def test_disk_sources_table(tmp_path):
    assert set(DISK_SOURCES) == {"cifar10", "cifar100", "svhn", "stl10", "imagefolder"}
    for name, entry in DISK_SOURCES.items():
        assert entry.name == name and entry.description and "\n" not in entry.description
        assert_data_error(lambda: entry(None), f"{name} needs --data-root PATH")
    write_svhn(tmp_path)
    assert DISK_SOURCES["svhn"](tmp_path, limit=3).name == "svhn"


def test_bad_arguments_fail_before_reading(tmp_path):
    with pytest.raises(ConfigError):
        load_cifar10(tmp_path, limit=0)
    with pytest.raises(ConfigError):
        load_stl10(tmp_path, val_fraction=1.0)
