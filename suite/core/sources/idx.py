"""IDX files (MNIST, Fashion-MNIST, KMNIST) and the ``fashion-mnist`` / ``mnist`` sources.

The IDX format, exactly as LeCun's MNIST page and Zalando's Fashion-MNIST
distribute it (each file either raw or gzip-compressed; gzip is recognised by
its magic bytes ``1f 8b``, never by the file name):

* a big-endian 4-byte magic ``00 00 <type> <ndim>``: type ``0x08`` is unsigned
  bytes, the only type these datasets use; images are ``0x00000803``
  (3 dimensions), labels ``0x00000801`` (1 dimension);
* ``ndim`` big-endian ``uint32`` sizes: images ``count, rows, cols``, labels
  ``count``;
* then exactly ``prod(sizes)`` bytes of data, row-major.

The four official files of a dataset are ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte``, each optionally ending in ``.gz``.

The sources return images as ``uint8 [N, 1, 28, 28]`` (one grey channel; the
zoo models take ``in_channels`` from the source), labels ``int64`` in
``[0, 10)``; val is a seeded stratified holdout of the official 60,000
training images and the official 10,000-image test set is kept whole, through
the same :func:`~suite.core.sources.disk._predefined_source` as every on-disk
dataset (indices, split digest and pixel sha256 recorded alike).

Every problem with a file -- missing, not gzip nor IDX, wrong magic, truncated
header, too little or too much data, image/label count mismatch, a label
outside ``[0, 10)`` -- raises :class:`~suite.core.errors.DataError` with a
one-line message naming the file and what was expected.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from suite.core.errors import DataError
from suite.core.sources.base import ImageSource
from suite.core.sources.disk import PathLike, _check_args, _error, _labels, _predefined_source, _wrap

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"

# The official file names (each may also end in ".gz"), in the order train images,
# train labels, test images, test labels.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
MNIST_CLASSES = tuple(str(d) for d in range(10))

# Where Debian's ``dataset-fashion-mnist`` package installs the four .gz files.
FASHION_MNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")

_FILES_TEXT = ", ".join(f"{f}[.gz]" for f in IDX_FILES)


# --------------------------------------------------------------------------- the format


def _read_payload(name: str, path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic ``1f 8b``."""
    if not path.is_file():
        state = "is a directory" if path.is_dir() else "not found"
        raise _error(name, f"expected an IDX file at {path}; {state}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _wrap(name, path, "an IDX file", exc) from exc
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut stream is an EOFError
        raise _wrap(name, path, "a gzip-compressed IDX file", exc) from exc


def read_idx(path: PathLike, magic: int, *, name: str = "idx") -> np.ndarray:
    """A ``uint8`` IDX file (raw or gzip) as an array of the header's sizes.

    magic: the expected magic number, ``IMAGES_MAGIC`` (returns ``[count, rows, cols]``)
    or ``LABELS_MAGIC`` (returns ``[count]``); its low byte is the dimension count.
    name: the source name that prefixes error messages.
    """
    path = Path(path)
    data = _read_payload(name, path)
    ndim = magic & 0xFF
    expected = f"magic 0x{magic:08x} (uint8, {ndim} dimension{'s' if ndim != 1 else ''})"
    if len(data) < 4:
        raise _error(name, f"{path} is truncated: {len(data)} bytes, too short for the 4-byte IDX magic; expected {expected}")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        kind = {IMAGES_MAGIC: "an images file", LABELS_MAGIC: "a labels file"}.get(found)
        what = f" ({kind})" if kind else ""
        if found >> 16 == 0 and (found >> 8) & 0xFF == _UBYTE and kind is None:
            what = f" (uint8 with {found & 0xFF} dimensions)"
        raise _error(name, f"{path} has IDX magic 0x{found:08x}{what}; expected {expected}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _error(
            name, f"{path} is truncated: {len(data)} bytes, the IDX header needs {header} (magic and {ndim} uint32 sizes)"
        )
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    need = int(np.prod(shape, dtype=object))
    have = len(data) - header
    if have != need:
        problem = "truncated" if have < need else "oversized"
        dims = " x ".join(str(s) for s in shape)
        raise _error(name, f"{path} data is {problem}: {have} bytes after the header, expected {dims} = {need}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_images(path: PathLike, *, name: str = "idx") -> np.ndarray:
    """``uint8 [count, rows, cols]`` from an IDX images file (magic ``0x00000803``)."""
    return read_idx(path, IMAGES_MAGIC, name=name)


def read_idx_labels(path: PathLike, *, name: str = "idx", num_classes: int = 10) -> np.ndarray:
    """``int64 [count]`` in ``[0, num_classes)`` from an IDX labels file (magic ``0x00000801``)."""
    raw = read_idx(path, LABELS_MAGIC, name=name)
    return _labels(name, Path(path), raw, len(raw), 0, num_classes - 1)


def load_idx_pair(
    images_path: PathLike, labels_path: PathLike, *, name: str = "idx", num_classes: int = 10,
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 1, rows, cols], labels int64 [N])`` from one images and one labels file.

    size: the required ``(rows, cols)``, or None for any.
    """
    images = read_idx_images(images_path, name=name)
    labels = read_idx_labels(labels_path, name=name, num_classes=num_classes)
    if len(images) != len(labels):
        raise _error(
            name,
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; expected one label per image",
        )
    if len(images) == 0:
        raise _error(name, f"{images_path} holds no images; expected at least one")
    if size is not None and images.shape[1:] != tuple(size):
        raise _error(name, f"{images_path} images are {images.shape[1]}x{images.shape[2]}; expected {size[0]}x{size[1]}")
    return images[:, None, :, :], labels


# --------------------------------------------------------------------------- the sources


def _file(directory: Path, stem: str) -> Path | None:
    """``directory/stem`` or ``directory/stem.gz`` (the uncompressed one first), None when neither exists."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_dir(name: str, candidates: Sequence[Path], how: str) -> tuple[Path, list[Path]]:
    """The first candidate directory holding the train images, and its four files."""
    tried = []
    for directory in candidates:
        if _file(directory, IDX_FILES[0]) is not None:
            found = [_file(directory, f) for f in IDX_FILES]
            missing = [f"{f}[.gz]" for f, p in zip(IDX_FILES, found) if p is None]
            if missing:
                raise _error(name, f"expected the four IDX files under {directory}; missing {', '.join(missing)}; {how}")
            return directory, [p for p in found if p is not None]
        tried.append(str(directory))
    raise _error(name, f"expected the four IDX files in {' or '.join(tried)}; not found; {how}")


def _candidates(root: Path, subdirs: Sequence[str]) -> list[Path]:
    """``root`` itself, then each layout below it."""
    return [root, *(root / s for s in subdirs)]


def _idx_source(
    name: str, directory: Path, files: Sequence[Path], *, class_names: tuple[str, ...], title: str,
    val_fraction: float, split_seed: int, limit: int | None,
) -> ImageSource:
    train = load_idx_pair(files[0], files[1], name=name, size=(28, 28))
    test = load_idx_pair(files[2], files[3], name=name, size=(28, 28))
    return _predefined_source(
        name,
        dataset_dir=directory,
        train=train,
        test=test,
        class_names=class_names,
        val_fraction=val_fraction,
        split_seed=split_seed,
        limit=limit,
        title=f"{title} (IDX, {directory}): 28x28 grey, 10 classes",
    )


def _root(name: str, data_root: PathLike, how: str) -> Path:
    root = Path(data_root).expanduser()
    if not root.is_dir():
        state = "is not a directory" if root.exists() else "does not exist"
        raise _error(name, f"data root {root} {state}; {how}")
    return root.resolve()


def load_fashion_mnist(
    data_root: PathLike | None = None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    limit: int | None = None,
) -> ImageSource:
    """Fashion-MNIST from its four official IDX files (raw or .gz).

    data_root: None for Debian's ``dataset-fashion-mnist`` files in
    ``/usr/share/datasets/fashion-mnist/``; else a directory holding the files, or
    holding ``fashion-mnist/`` or torchvision's ``FashionMNIST/raw/`` with them.
    Returns 28x28 grey (``[N, 1, 28, 28]``), 10 classes; train+val from the 60,000
    training images, test the official 10,000.
    """
    name = "fashion-mnist"
    _check_args(val_fraction, limit)
    how = (f"install them with `apt-get install dataset-fashion-mnist` (into {FASHION_MNIST_DEFAULT_DIR}) "
           f"or pass --data-root DIR holding the four IDX files ({_FILES_TEXT})")
    if data_root is None:
        candidates = [FASHION_MNIST_DEFAULT_DIR]
    else:
        candidates = _candidates(_root(name, data_root, how), ("fashion-mnist", "FashionMNIST/raw", "raw"))
    directory, files = _idx_dir(name, candidates, how)
    return _idx_source(name, directory, files, class_names=FASHION_MNIST_CLASSES, title="Fashion-MNIST",
                       val_fraction=val_fraction, split_seed=split_seed, limit=limit)


def load_mnist(
    data_root: PathLike | None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    limit: int | None = None,
) -> ImageSource:
    """MNIST handwritten digits from its four official IDX files (raw or .gz).

    data_root: a directory holding the files, or holding ``mnist/`` or torchvision's
    ``MNIST/raw/`` with them.  Returns 28x28 grey (``[N, 1, 28, 28]``), classes
    ``"0".."9"``; train+val from the 60,000 training images, test the official 10,000.
    """
    name = "mnist"
    _check_args(val_fraction, limit)
    how = f"pass --data-root DIR holding the four MNIST IDX files ({_FILES_TEXT})"
    if data_root is None:
        raise DataError(f"{name} needs --data-root PATH: {how}")
    candidates = _candidates(_root(name, data_root, how), ("mnist", "MNIST/raw", "raw"))
    directory, files = _idx_dir(name, candidates, how)
    return _idx_source(name, directory, files, class_names=MNIST_CLASSES, title="MNIST",
                       val_fraction=val_fraction, split_seed=split_seed, limit=limit)
