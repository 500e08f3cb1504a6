"""Loaders for image datasets that already sit on local disk (nothing is ever downloaded).

Supported on-disk formats, each exactly as its authors distribute it:

* ``cifar10``  -- CIFAR-10 "python version": ``cifar-10-batches-py/`` with pickled
  ``data_batch_1..5``, ``test_batch`` and ``batches.meta``.
* ``cifar100`` -- CIFAR-100 "python version": ``cifar-100-python/`` with ``train``,
  ``test`` and ``meta``; the 100 fine labels are used.
* ``svhn``     -- SVHN cropped digits: ``train_32x32.mat`` and ``test_32x32.mat``
  (MATLAB v5, ``X`` uint8 ``[32, 32, 3, N]``, ``y`` ``[N, 1]`` with 10 meaning digit 0).
* ``stl10``    -- STL-10 binary: ``stl10_binary/`` with ``train_X.bin``, ``train_y.bin``,
  ``test_X.bin``, ``test_y.bin`` and ``class_names.txt`` (images column-major).
* ``imagefolder`` -- ``root/<class_name>/*.png|jpg|jpeg|bmp|ppm`` (or ``root/train/...``
  plus ``root/test/...``), decoded with Pillow to RGB and resized to ``size x size``.

Every loader returns an :class:`~suite.core.sources.base.ImageSource` whose images are
``uint8 [N, 3, H, W]`` (row-major, channel order RGB) and labels ``int64`` in
``[0, num_classes)``.  ``indices`` are positions in the file order of the official
train set (train and val splits) or test set (test split).  For datasets with an
official test set, ``val`` is a stratified holdout of the official train set drawn
with ``split_seed``; the official test set is kept whole and put in a fixed seeded
order (independent of ``split_seed``), so ``split.subset(n)`` and ``limit`` give a
class-mixed prefix.

Every problem with the files -- a missing directory or file, a truncated pickle,
wrong keys, wrong shapes, out-of-range labels, an unreadable image -- raises
:class:`~suite.core.errors.DataError` with a one-line message naming the expected file.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from suite.core.errors import ConfigError, DataError
from suite.core.sources.base import ImageSource, ImageSplit
from suite.core.sources.splits import holdout_split, indices_digest, stratified_split

PathLike = str | os.PathLike

# Seed of the fixed order in which official test sets are stored; deliberately not
# ``split_seed`` so the test set (and its prefixes) is the same for every val split.
_TEST_ORDER_SEED = 0

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")

_CIFAR_BYTES = 3 * 32 * 32
_STL_BYTES = 3 * 96 * 96  # 27648


# --------------------------------------------------------------------------- helpers


def _one_line(text: str) -> str:
    """Collapse whitespace runs (newlines included) so CLI errors stay on one line."""
    return " ".join(str(text).split())


def _error(name: str, message: str) -> DataError:
    return DataError(_one_line(f"{name}: {message}"))


def _wrap(name: str, path: Path, what: str, exc: BaseException) -> DataError:
    """A DataError for an unexpected parsing failure, naming the file."""
    detail = _one_line(str(exc)) or "no details"
    return _error(name, f"cannot read {path.name} ({path}) as {what}: {type(exc).__name__}: {detail}")


def _resolve_root(name: str, data_root: PathLike | None, hint: str) -> Path:
    """Absolute, existing data root; DataError when it is None or missing."""
    if data_root is None:
        raise DataError(f"{name} needs --data-root PATH pointing to {hint}")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        state = "is not a directory" if root.exists() else "does not exist"
        raise _error(name, f"data root {root} {state}; expected {hint}")
    return root.resolve()


def _dataset_dir(name: str, root: Path, subdir: str, probe: str, what: str) -> Path:
    """``root/subdir`` if present, else ``root`` itself when it is (or holds) the dataset."""
    if (root / subdir).is_dir():
        return root / subdir
    if root.name == subdir or (root / probe).is_file():
        return root
    raise _error(name, f"expected {what} under {root / subdir} (or directly in {root}); directory not found")


def _require_files(name: str, directory: Path, files: Sequence[str], what: str) -> None:
    missing = [f for f in files if not (directory / f).is_file()]
    if missing:
        raise _error(name, f"expected {what} under {directory}; missing {', '.join(missing)}")


def _check_args(val_fraction: float, limit: int | None) -> None:
    """Fail fast (before reading any file) on impossible split settings."""
    if not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    _check_limit(limit)


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")


def _labels(
    name: str, path: Path, raw: Any, n: int, low: int, high: int, field_name: str = "labels"
) -> np.ndarray:
    """Validate raw labels: ``n`` integers in ``[low, high]``; returns ``int64 [n]`` unshifted."""
    try:
        arr = np.asarray(raw)
    except Exception as exc:  # ragged lists and the like
        raise _wrap(name, path, f"{field_name}", exc) from exc
    arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1 or arr.shape[0] != n:
        raise _error(name, f"{path} {field_name} have shape {arr.shape}, expected [{n}] (one per image)")
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise _error(name, f"{path} {field_name} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if n and (arr.min() < low or arr.max() > high):
        raise _error(
            name,
            f"{path} {field_name} out of range: found {int(arr.min())}..{int(arr.max())}, expected {low}..{high}",
        )
    return arr


def _class_names(name: str, path: Path, raw: Any, count: int) -> tuple[str, ...]:
    """``count`` class names from a list of bytes/str."""
    if not isinstance(raw, (list, tuple)) or len(raw) != count:
        size = len(raw) if isinstance(raw, (list, tuple)) else type(raw).__name__
        raise _error(name, f"{path} must list {count} class names, got {size}")
    out = []
    for item in raw:
        if isinstance(item, bytes):
            item = item.decode("utf-8", errors="replace")
        if not isinstance(item, str):
            raise _error(name, f"{path} class names must be strings, got {type(item).__name__}")
        out.append(item)
    return tuple(out)


def _test_order(n: int) -> np.ndarray:
    """Fixed seeded permutation of ``range(n)`` used for official test sets."""
    return np.random.default_rng(_TEST_ORDER_SEED).permutation(n).astype(np.int64)


def _take(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> ImageSplit:
    """Split made of ``images[idx]`` (copied, C-contiguous) and ``labels[idx]``."""
    idx = np.asarray(idx, dtype=np.int64)
    return ImageSplit(np.ascontiguousarray(images[idx]), labels[idx].astype(np.int64), idx)


def _meta(dataset_dir: Path, split_seed: int, limit: int | None, splits: dict[str, ImageSplit]) -> dict:
    return {
        "data_root": str(dataset_dir),
        "split_seed": split_seed,
        "split_digest": indices_digest({k: s.indices for k, s in splits.items()}),
        "limit": limit,
    }


def _predefined_source(
    name: str,
    *,
    dataset_dir: Path,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    class_names: tuple[str, ...],
    val_fraction: float,
    split_seed: int,
    limit: int | None,
    title: str,
    train_images: str = "training images",
) -> ImageSource:
    """Assemble a source from an official train/test pair.

    train, test: ``(images uint8 [N, C, H, W], labels int64 [N] in [0, K))``.
    val is a stratified holdout of train (``val_fraction``, ``split_seed``).
    title: the first part of the description (dataset, files, resolution,
    classes); the split facts are appended here, ``train_images`` naming
    what the training images are.
    """
    description = (f"{title}; val = {val_fraction:g} stratified holdout of the {len(train[1])} {train_images}, "
                   f"test = official {len(test[1])}-image test set")
    _check_limit(limit)
    (train_x, train_y), (test_x, test_y) = train, test
    if train_x.shape[1:] != test_x.shape[1:]:
        raise _error(name, f"train images {train_x.shape[1:]} and test images {test_x.shape[1:]} differ in shape")
    keep, hold = holdout_split(train_y, val_fraction, split_seed)
    order = _test_order(len(test_y))
    idx = {"train": keep, "val": hold, "test": order}
    if limit is not None:
        idx = {k: v[:limit] for k, v in idx.items()}
    splits = {
        "train": _take(train_x, train_y, idx["train"]),
        "val": _take(train_x, train_y, idx["val"]),
        "test": _take(test_x, test_y, idx["test"]),
    }
    return ImageSource(
        name=name,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        num_classes=len(class_names),
        class_names=class_names,
        description=description,
        meta=_meta(dataset_dir, split_seed, limit, splits),
    )


# --------------------------------------------------------------------------- CIFAR

# Only the globals that pickled numpy arrays need; anything else in a "dataset"
# pickle is refused instead of executed.
_PICKLE_GLOBALS = frozenset(
    {
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }
)


class _DatasetUnpickler(pickle.Unpickler):
    """Unpickler limited to plain containers and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core") :]  # numpy 2 renamed numpy.core
        return super().find_class(module, name)


def _load_pickle(name: str, path: Path) -> dict:
    """A CIFAR pickle (Python 2 or 3) as a dict; keys stay ``bytes`` as written."""
    try:
        with open(path, "rb") as f:
            obj = _DatasetUnpickler(f, encoding="bytes").load()
    except Exception as exc:
        raise _wrap(name, path, "a pickled CIFAR batch", exc) from exc
    if not isinstance(obj, dict):
        raise _error(name, f"{path} must hold a dict, got {type(obj).__name__}")
    return obj


def _field(name: str, path: Path, batch: dict, key: str) -> Any:
    """``batch[b'key']`` (or ``batch['key']``); DataError naming the file when absent."""
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    keys = ", ".join(sorted(repr(k) for k in batch)) or "none"
    raise _error(name, f"{path} has no {key!r} entry (keys: {keys})")


def _cifar_batch(name: str, path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 3, 32, 32]`` and labels ``int64 [N]`` from one CIFAR pickle."""
    batch = _load_pickle(name, path)
    data = _field(name, path, batch, "data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_BYTES:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise _error(name, f"{path} 'data' must be uint8 [N, {_CIFAR_BYTES}], got {desc}")
    images = data.reshape(-1, 3, 32, 32)
    labels = _labels(name, path, _field(name, path, batch, label_key), len(images), 0, num_classes - 1, label_key)
    return images, labels


def _cifar_meta(name: str, path: Path, key: str, count: int) -> tuple[str, ...]:
    return _class_names(name, path, _field(name, path, _load_pickle(name, path), key), count)


def load_cifar10(
    data_root: PathLike | None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    limit: int | None = None,
) -> ImageSource:
    """CIFAR-10 from the official python batches.

    data_root: the directory holding ``cifar-10-batches-py/`` or that directory itself.
    Returns 32x32 RGB, 10 classes; train+val come from the 50,000 official training
    images, test is the 10,000-image ``test_batch``.
    """
    name = "cifar10"
    _check_args(val_fraction, limit)
    what = "the CIFAR-10 python batches (data_batch_1..5, test_batch, batches.meta)"
    root = _resolve_root(name, data_root, "the directory holding cifar-10-batches-py/ (CIFAR-10 python version)")
    ddir = _dataset_dir(name, root, "cifar-10-batches-py", "data_batch_1", what)
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    _require_files(name, ddir, [*train_files, "test_batch", "batches.meta"], what)
    classes = _cifar_meta(name, ddir / "batches.meta", "label_names", 10)
    parts = [_cifar_batch(name, ddir / f, "labels", 10) for f in train_files]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    del parts
    test = _cifar_batch(name, ddir / "test_batch", "labels", 10)
    return _predefined_source(
        name,
        dataset_dir=ddir,
        train=train,
        test=test,
        class_names=classes,
        val_fraction=val_fraction,
        split_seed=split_seed,
        limit=limit,
        title=f"CIFAR-10 (python batches, {ddir}): 32x32 RGB, 10 classes",
    )


def load_cifar100(
    data_root: PathLike | None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    limit: int | None = None,
) -> ImageSource:
    """CIFAR-100 (fine labels, 100 classes) from the official python files.

    data_root: the directory holding ``cifar-100-python/`` or that directory itself.
    Returns 32x32 RGB; train+val come from ``train`` (50,000), test is ``test`` (10,000).
    """
    name = "cifar100"
    _check_args(val_fraction, limit)
    what = "the CIFAR-100 python files (train, test, meta)"
    root = _resolve_root(name, data_root, "the directory holding cifar-100-python/ (CIFAR-100 python version)")
    ddir = _dataset_dir(name, root, "cifar-100-python", "train", what)
    _require_files(name, ddir, ["train", "test", "meta"], what)
    classes = _cifar_meta(name, ddir / "meta", "fine_label_names", 100)
    train = _cifar_batch(name, ddir / "train", "fine_labels", 100)
    test = _cifar_batch(name, ddir / "test", "fine_labels", 100)
    return _predefined_source(
        name,
        dataset_dir=ddir,
        train=train,
        test=test,
        class_names=classes,
        val_fraction=val_fraction,
        split_seed=split_seed,
        limit=limit,
        title=f"CIFAR-100 (python version, fine labels, {ddir}): 32x32 RGB, 100 classes",
    )


# --------------------------------------------------------------------------- SVHN

_SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


def _svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 3, 32, 32]`` and labels ``int64 [N]`` in 0..9 from one .mat file."""
    name = "svhn"
    try:
        from scipy.io import loadmat

        mat = loadmat(str(path), variable_names=["X", "y"])
    except NotImplementedError as exc:  # scipy's answer to MATLAB v7.3 (HDF5) files
        raise _error(name, f"{path} is a MATLAB v7.3 file; expected the MATLAB v5 .mat of SVHN cropped digits") from exc
    except Exception as exc:
        raise _wrap(name, path, "a MATLAB v5 .mat file", exc) from exc
    missing = [k for k in ("X", "y") if k not in mat]
    if missing:
        raise _error(name, f"{path} has no variable {', '.join(missing)} (expected 'X' [32, 32, 3, N] and 'y' [N, 1])")
    x = mat["X"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        desc = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise _error(name, f"{path} 'X' must be uint8 [32, 32, 3, N], got {desc}")
    images = x.transpose(3, 2, 0, 1)  # [H, W, C, N] -> [N, C, H, W]
    labels = _labels(name, path, mat["y"], images.shape[0], 1, 10, "'y' labels")
    labels[labels == 10] = 0  # SVHN writes digit 0 as label 10
    return images, labels


def load_svhn(
    data_root: PathLike | None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    limit: int | None = None,
) -> ImageSource:
    """SVHN cropped digits (format 2) from ``train_32x32.mat`` / ``test_32x32.mat``.

    data_root: the directory holding both .mat files (or a ``svhn/`` subdirectory that does).
    Returns 32x32 RGB, 10 classes with label ``d`` for digit ``d`` (the file's 10 -> 0).
    The optional ``extra_32x32.mat`` is not used.
    """
    name = "svhn"
    _check_args(val_fraction, limit)
    what = "the SVHN cropped-digit files (train_32x32.mat, test_32x32.mat)"
    root = _resolve_root(name, data_root, "the directory holding train_32x32.mat and test_32x32.mat (SVHN cropped digits)")
    ddir = root
    if not (root / _SVHN_FILES[0]).is_file() and (root / "svhn" / _SVHN_FILES[0]).is_file():
        ddir = root / "svhn"
    _require_files(name, ddir, _SVHN_FILES, what)
    train = _svhn_mat(ddir / _SVHN_FILES[0])
    test = _svhn_mat(ddir / _SVHN_FILES[1])
    return _predefined_source(
        name,
        dataset_dir=ddir,
        train=train,
        test=test,
        class_names=tuple(str(d) for d in range(10)),
        val_fraction=val_fraction,
        split_seed=split_seed,
        limit=limit,
        title=f"SVHN cropped digits ({ddir}): 32x32 RGB, 10 classes (digits 0-9)",
    )


# --------------------------------------------------------------------------- STL-10

_STL_FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt")


def _read_bytes(name: str, path: Path) -> np.ndarray:
    try:
        return np.fromfile(path, dtype=np.uint8)
    except Exception as exc:
        raise _wrap(name, path, "raw bytes", exc) from exc


def _stl_images(path: Path) -> np.ndarray:
    """``uint8 [N, 3, 96, 96]`` (row-major view) from a column-major STL-10 ``*_X.bin``."""
    raw = _read_bytes("stl10", path)
    if raw.size == 0 or raw.size % _STL_BYTES:
        raise _error(
            "stl10",
            f"{path} has {raw.size} bytes, not a positive multiple of {_STL_BYTES} (one 3x96x96 uint8 image each)",
        )
    # Each channel is stored column by column: the bytes read as [N, C, W, H].
    return raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)


def _stl_labels(path: Path, n: int) -> np.ndarray:
    """``int64 [n]`` in 0..9 from a STL-10 ``*_y.bin`` (one uint8 1..10 per image)."""
    return _labels("stl10", path, _read_bytes("stl10", path), n, 1, 10) - 1


def _stl_class_names(path: Path) -> tuple[str, ...]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except Exception as exc:
        raise _wrap("stl10", path, "UTF-8 text", exc) from exc
    return _class_names("stl10", path, [ln.strip() for ln in lines if ln.strip()], 10)


def load_stl10(
    data_root: PathLike | None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    limit: int | None = None,
) -> ImageSource:
    """STL-10 labelled images from the official binary files.

    data_root: the directory holding ``stl10_binary/`` or that directory itself.
    Returns 96x96 RGB, 10 classes; train+val from ``train_X.bin`` (5,000), test from
    ``test_X.bin`` (8,000).  ``unlabeled_X.bin`` and ``fold_indices.txt`` are not used.
    """
    name = "stl10"
    _check_args(val_fraction, limit)
    what = "the STL-10 binary files (" + ", ".join(_STL_FILES) + ")"
    root = _resolve_root(name, data_root, "the directory holding stl10_binary/ (STL-10 binary version)")
    ddir = _dataset_dir(name, root, "stl10_binary", "train_X.bin", what)
    _require_files(name, ddir, _STL_FILES, what)
    classes = _stl_class_names(ddir / "class_names.txt")
    train_x = _stl_images(ddir / "train_X.bin")
    train = (train_x, _stl_labels(ddir / "train_y.bin", len(train_x)))
    test_x = _stl_images(ddir / "test_X.bin")
    test = (test_x, _stl_labels(ddir / "test_y.bin", len(test_x)))
    return _predefined_source(
        name,
        dataset_dir=ddir,
        train=train,
        test=test,
        class_names=classes,
        val_fraction=val_fraction,
        split_seed=split_seed,
        limit=limit,
        title=f"STL-10 (binary, {ddir}): 96x96 RGB, 10 classes",
        train_images="labelled training images",
    )


# --------------------------------------------------------------------------- ImageFolder

_FOLDER_HINT = "a directory of class folders (<root>/<class_name>/*.png|jpg|jpeg|bmp|ppm, or <root>/train/... and <root>/test/...)"


def _visible_dirs(directory: Path) -> list[Path]:
    try:
        return sorted((d for d in directory.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)
    except OSError as exc:
        raise _wrap("imagefolder", directory, "a directory", exc) from exc


def _class_files(class_dir: Path) -> list[Path]:
    """Image files anywhere below ``class_dir`` (hidden entries skipped), sorted by relative path."""
    found = []
    for p in class_dir.rglob("*"):
        rel = p.relative_to(class_dir)
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not any(s.startswith(".") for s in rel.parts):
            found.append((rel.as_posix(), p))
    return [p for _, p in sorted(found)]


def _scan_tree(directory: Path) -> tuple[tuple[str, ...], list[Path], np.ndarray]:
    """Classes (sorted folder names), image paths in file order, and ``int64`` labels."""
    class_dirs = _visible_dirs(directory)
    if not class_dirs:
        raise _error("imagefolder", f"expected class folders <class_name>/*.png|jpg|jpeg|bmp|ppm under {directory}; found none")
    paths: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = _class_files(class_dir)
        if not files:
            raise _error(
                "imagefolder",
                f"class folder {class_dir} holds no images; expected files ending in {', '.join(IMAGE_EXTENSIONS)}",
            )
        paths.extend(files)
        labels.extend([label] * len(files))
    return tuple(d.name for d in class_dirs), paths, np.asarray(labels, dtype=np.int64)


def _split_layout(root: Path) -> tuple[Path, Path] | None:
    """``(root/train, root/test)`` when both hold class folders; None for a flat tree."""
    looks_split = {s: (root / s).is_dir() and bool(_visible_dirs(root / s)) for s in ("train", "test")}
    if all(looks_split.values()):
        return root / "train", root / "test"
    if any(looks_split.values()):
        have, lack = ("train", "test") if looks_split["train"] else ("test", "train")
        raise _error(
            "imagefolder",
            f"{root} has {have}/ with class folders but no {lack}/ with class folders; "
            f"expected both {root / 'train'} and {root / 'test'}, or class folders directly under {root}",
        )
    return None


def _decode_image(path: Path, size: int) -> np.ndarray:
    """``uint8 [3, size, size]`` RGB; bilinear resize when the file is not ``size x size``."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(rgb, dtype=np.uint8)
    except Exception as exc:
        raise _wrap("imagefolder", path, "an image", exc) from exc
    return arr.transpose(2, 0, 1)


def _decode_all(paths: Sequence[Path], size: int) -> np.ndarray:
    """``uint8 [len(paths), 3, size, size]``; decodes in a small thread pool for many files."""
    try:
        import PIL  # noqa: F401
    except ImportError as exc:
        raise DataError("imagefolder needs Pillow to decode images (pip install pillow)") from exc
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    if len(paths) < 64:
        for i, p in enumerate(paths):
            out[i] = _decode_image(p, size)
        return out
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, arr in enumerate(pool.map(lambda p: _decode_image(p, size), paths)):
            out[i] = arr
    return out


def _folder_split(paths: list[Path], labels: np.ndarray, idx: np.ndarray, size: int) -> ImageSplit:
    idx = np.asarray(idx, dtype=np.int64)
    return ImageSplit(_decode_all([paths[i] for i in idx], size), labels[idx], idx)


def load_imagefolder(
    data_root: PathLike | None,
    *,
    size: int = 32,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    limit: int | None = None,
) -> ImageSource:
    """Images in class folders, decoded to RGB ``uint8 [N, 3, size, size]``.

    Layouts: ``root/<class>/...`` (flat; train/val/test are a stratified split with
    ``val_fraction`` / ``test_fraction`` and ``split_seed``) or ``root/train/<class>/...``
    plus ``root/test/<class>/...`` (predefined; same class folders required, val is a
    holdout of train and ``test_fraction`` is ignored).  Classes are the sorted folder
    names; files are taken recursively in sorted order, which defines ``indices``.
    Only the images of the returned splits are decoded, so ``limit`` is cheap.
    """
    name = "imagefolder"
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"imagefolder size must be a positive integer, got {size!r}")
    _check_args(val_fraction, limit)
    root = _resolve_root(name, data_root, _FOLDER_HINT)
    layout = _split_layout(root)
    if layout is None:
        classes, paths, labels = _scan_tree(root)
        if not (0.0 <= test_fraction < 1.0 and 0.0 <= val_fraction < 1.0 and val_fraction + test_fraction < 1.0):
            raise ConfigError(
                f"imagefolder needs 0 <= val_fraction, test_fraction and val_fraction + test_fraction < 1, "
                f"got {val_fraction} and {test_fraction}"
            )
        fractions = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
        idx = stratified_split(labels, fractions, split_seed)
        pools = {k: (paths, labels) for k in idx}
        split_desc = f"flat layout; stratified split val {val_fraction:g} / test {test_fraction:g} of {len(paths)} images"
    else:
        classes, paths, labels = _scan_tree(layout[0])
        test_classes, test_paths, test_labels = _scan_tree(layout[1])
        if test_classes != classes:
            only_train = sorted(set(classes) - set(test_classes))
            only_test = sorted(set(test_classes) - set(classes))
            raise _error(
                name,
                f"{layout[0]} and {layout[1]} must hold the same class folders; "
                f"only in train: {only_train or 'none'}, only in test: {only_test or 'none'}",
            )
        keep, hold = holdout_split(labels, val_fraction, split_seed)
        idx = {"train": keep, "val": hold, "test": _test_order(len(test_paths))}
        pools = {"train": (paths, labels), "val": (paths, labels), "test": (test_paths, test_labels)}
        split_desc = (
            f"train/test layout; val = {val_fraction:g} holdout of {len(paths)} train images, "
            f"test = {len(test_paths)} images"
        )
    if limit is not None:
        idx = {k: v[:limit] for k, v in idx.items()}
    splits = {k: _folder_split(*pools[k], idx[k], size) for k in ("train", "val", "test")}
    meta = _meta(root, split_seed, limit, splits)
    meta.update({"layout": "flat" if layout is None else "train_test", "size": size})
    return ImageSource(
        name=name,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        num_classes=len(classes),
        class_names=classes,
        description=f"image folders ({root}): {size}x{size} RGB, {len(classes)} classes; {split_desc}",
        meta=meta,
    )


# --------------------------------------------------------------------------- registry table


@dataclass(frozen=True)
class DiskSource:
    """A registered on-disk dataset: ``loader(data_root, **kwargs) -> ImageSource``."""

    name: str
    loader: Callable[..., ImageSource]
    description: str

    def __call__(self, data_root: PathLike | None, **kwargs: Any) -> ImageSource:
        return self.loader(data_root, **kwargs)


DISK_SOURCES: dict[str, DiskSource] = {
    s.name: s
    for s in (
        DiskSource("cifar10", load_cifar10, "CIFAR-10 from local python batches (cifar-10-batches-py/), 32x32, 10 classes"),
        DiskSource("cifar100", load_cifar100, "CIFAR-100 fine labels from local python files (cifar-100-python/), 32x32, 100 classes"),
        DiskSource("svhn", load_svhn, "SVHN cropped digits from local train_32x32.mat / test_32x32.mat, 32x32, 10 classes"),
        DiskSource("stl10", load_stl10, "STL-10 labelled images from local binary files (stl10_binary/), 96x96, 10 classes"),
        DiskSource("imagefolder", load_imagefolder, "any local tree of class folders of images, resized to size x size RGB"),
    )
}
