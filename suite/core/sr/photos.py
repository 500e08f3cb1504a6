"""Super-resolution data: high-resolution photos, split by image, with fixed recorded crops.

Two sources, both returning an :class:`SRSource`:

* :func:`load_photos` -- the real photographs that ship inside installed
  packages, read from the package directories (nothing is downloaded):
  scikit-learn's two sample photos (``china``, ``flower``) and scikit-image's
  bundled colour photos (``astronaut``, ``chelsea``, ``coffee``,
  ``motorcycle_left``, ``rocket``).  Every photo sits on exactly one side of a
  fixed split, :data:`PHOTO_SPLIT`.  scikit-image's other bundled colour files
  are left out on purpose: ``motorcycle_right`` (the other half of a stereo
  pair, nearly the same picture as ``motorcycle_left``), ``hubble_deep_field``,
  ``ihc`` and ``retina`` (astronomy / microscopy / fundus images), ``color``,
  ``phantom``, ``chessboard_RGB`` and ``logo`` (synthetic).  The photos that
  scikit-image fetches over the network (``cat``, ``eagle``, ``lily``, ...)
  are never used.
* :func:`load_sr_folder` -- any folder of images on disk: a flat folder, the
  Set5 / Set14 layout ``<set>/HR/*.png`` (an evaluation set: every image goes
  to test), or DIV2K's ``DIV2K_train_HR/`` (train, and val held out by image)
  plus ``DIV2K_valid_HR/`` (test).

Splits are by image: a photo's training patches and its evaluation image are
never on two sides.  The training split holds HR patches of ``patch_size``
pixels cut at seeded positions (``patches_per_image`` per photo, and as many
again from each reduced copy of the photo in ``train_zooms``: FSRCNN's
scale augmentation, Dong et al. 2016); val and test
hold whole images cropped at the top-left to a multiple of the scale (or, with
``eval_size``, a centred crop of at most that size).  Every crop is recorded as
a :class:`Crop`.  LR inputs are never stored: they are made on demand with
:func:`~suite.core.sr.degrade.bicubic_down`, so one source serves any model.

Images are ``uint8 [3, H, W]`` RGB; :meth:`SRSplit.hr` and :meth:`SRSplit.pairs`
give float tensors in ``[0, 1]``.  Problems with the files raise
:class:`~suite.core.errors.DataError` with a one-line message naming the path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from suite.core.errors import ConfigError, DataError
from suite.core.sr.degrade import bicubic_down, check_scale

PathLike = str | os.PathLike

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff")
SPLITS = ("train", "val", "test")

#: Bundled photos: name -> (package, path inside the package).
PHOTO_FILES: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "data/astronaut.png"),        # 512x512
    "chelsea": ("skimage", "data/chelsea.png"),            # 451x300
    "coffee": ("skimage", "data/coffee.png"),              # 600x400
    "motorcycle_left": ("skimage", "data/motorcycle_left.png"),  # 741x500
    "rocket": ("skimage", "data/rocket.jpg"),              # 427x640
    "china": ("sklearn", "datasets/images/china.jpg"),     # 640x427
    "flower": ("sklearn", "datasets/images/flower.jpg"),   # 640x427
}

#: The fixed split of the bundled photos (by image): 4 train, 1 val, 2 test.
PHOTO_SPLIT: dict[str, str] = {
    "astronaut": "train",
    "coffee": "train",
    "motorcycle_left": "train",
    "china": "train",
    "chelsea": "val",
    "rocket": "test",
    "flower": "test",
}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@dataclass(frozen=True)
class Crop:
    """Where one stored image came from: ``image[:, top:top+height, left:left+width]`` of ``photo``.

    zoom: the photo was first resized by this factor (:func:`zoom_image`); 1.0 = the photo as read.
    """

    photo: str
    top: int
    left: int
    height: int
    width: int
    zoom: float = 1.0

    def as_dict(self) -> dict:
        out = {"photo": self.photo, "top": self.top, "left": self.left, "height": self.height, "width": self.width}
        if self.zoom != 1.0:  # only when used, so the records (and digests) of unzoomed crops stay as they were
            out["zoom"] = self.zoom
        return out


@dataclass(frozen=True)
class SRSplit:
    """One split of an SR source: HR images (no labels) and their crop records.

    images: ``uint8 [3, H, W]`` RGB arrays (sizes may differ between images;
        ``H`` and ``W`` are multiples of the source's scale).
    crops: one :class:`Crop` per image, same order.
    """

    images: tuple[np.ndarray, ...]
    crops: tuple[Crop, ...]

    def __post_init__(self) -> None:
        if len(self.images) != len(self.crops):
            raise DataError(f"SR split has {len(self.images)} images but {len(self.crops)} crop records")
        for img, crop in zip(self.images, self.crops):
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[0] != 3:
                raise DataError(f"SR images must be uint8 [3, H, W], got {img.dtype} {img.shape} ({crop.photo})")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def photos(self) -> tuple[str, ...]:
        """The distinct photos this split's images were cut from (sorted)."""
        return tuple(sorted({c.photo for c in self.crops}))

    def hr(self, i: int) -> torch.Tensor:
        """Image ``i`` as float32 ``[1, 3, H, W]`` in ``[0, 1]``."""
        return torch.from_numpy(np.ascontiguousarray(self.images[i])).float().div_(255.0).unsqueeze(0)

    def stack(self) -> np.ndarray:
        """All images as one ``uint8 [N, 3, H, W]`` array (they must share one size)."""
        shapes = {img.shape for img in self.images}
        if len(shapes) != 1:
            raise DataError(f"cannot stack SR images of different sizes: {sorted(shapes)}")
        return np.stack(self.images)

    def pairs(self, scale: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(lr, hr)`` per image: ``lr`` float32 ``[1, 3, H/scale, W/scale]``, ``hr`` ``[1, 3, H, W]``, in [0, 1].

        ``lr`` is :func:`~suite.core.sr.degrade.bicubic_down` of ``hr`` (8-bit quantised).
        """
        for i in range(len(self)):
            hr = self.hr(i)
            yield bicubic_down(hr, scale), hr


@dataclass(frozen=True)
class SRSource:
    """An SR data source: HR images split by image into train / val / test, for one scale."""

    name: str
    scale: int
    train: SRSplit
    val: SRSplit
    test: SRSplit
    description: str = ""
    meta: dict = field(default_factory=dict)

    def split(self, name: str) -> SRSplit:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; choices: train, val, test")
        return getattr(self, name)

    def fingerprint(self) -> str:
        """sha256 over the name, scale, pixels, sizes and crop records of all splits (a cache key)."""
        h = hashlib.sha256()
        h.update(f"{self.name}|x{self.scale}".encode())
        for split_name in SPLITS:
            split = self.split(split_name)
            h.update(f"|{split_name}:{len(split)}".encode())
            for img, crop in zip(split.images, split.crops):
                rec = (crop.photo, crop.top, crop.left, crop.height, crop.width, img.shape)
                h.update(repr(rec if crop.zoom == 1.0 else (*rec, crop.zoom)).encode())
                h.update(np.ascontiguousarray(img).tobytes())
        return h.hexdigest()

    def summary(self) -> dict:
        """JSON-ready description recorded with results."""
        return {
            "name": self.name,
            "scale": self.scale,
            "sizes": {s: len(self.split(s)) for s in SPLITS},
            "photos": {s: list(self.split(s).photos) for s in SPLITS},
            "sha256": self.fingerprint(),
            **self.meta,
        }


# --------------------------------------------------------------------------- reading images


def _read_image(path: Path, name: str) -> np.ndarray:
    """RGB ``uint8 [3, H, W]`` decoded with Pillow; DataError naming the file when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:
        detail = _one_line(str(exc)) or "no details"
        raise DataError(_one_line(f"{name}: cannot read {path} as an image: {type(exc).__name__}: {detail}")) from exc
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        hint = {"skimage": "scikit-image", "sklearn": "scikit-learn"}.get(package, package)
        raise DataError(f"photos: the bundled photos need the {hint} package (pip install {hint})")
    return Path(next(iter(spec.submodule_search_locations)))


def photo_path(name: str) -> Path:
    """Path of bundled photo ``name`` inside its installed package (DataError when it is missing)."""
    if name not in PHOTO_FILES:
        raise ConfigError(f"unknown photo {name!r}; choices: {', '.join(sorted(PHOTO_FILES))}")
    package, rel = PHOTO_FILES[name]
    path = _package_dir(package) / rel
    if not path.is_file():
        raise DataError(f"photos: bundled photo {name!r} not found at {path} (is the installed {package} complete?)")
    return path


def read_photo(name: str) -> np.ndarray:
    """Bundled photo ``name`` as RGB ``uint8 [3, H, W]``."""
    return _read_image(photo_path(name), "photos")


# --------------------------------------------------------------------------- crops


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_settings(scale: int, patch_size: int, patches_per_image: int, eval_size: int | None) -> None:
    check_scale(scale)
    _check_int("patch_size", patch_size, scale)
    if patch_size % scale:
        raise ConfigError(f"patch_size {patch_size} must be a multiple of the scale {scale}")
    _check_int("patches_per_image", patches_per_image, 1)
    if eval_size is not None:
        _check_int("eval_size", eval_size, 2 * scale + 11)


def zoom_image(img: np.ndarray, zoom: float) -> np.ndarray:
    """``uint8 [3, H, W]`` resized to ``round(H zoom) x round(W zoom)``: antialiased bicubic, rounded to 8 bits.

    zoom 1.0 returns ``img`` itself.  Deterministic (torch on the CPU).
    """
    if zoom == 1.0:
        return img
    import torch.nn.functional as F

    _, h, w = img.shape
    x = torch.from_numpy(np.ascontiguousarray(img)).float().unsqueeze(0)
    y = F.interpolate(x, size=(max(1, round(h * zoom)), max(1, round(w * zoom))), mode="bicubic",
                      align_corners=False, antialias=True)
    return y.clamp_(0.0, 255.0).round_().to(torch.uint8).squeeze(0).numpy()


def _patches(name: str, photo: str, img: np.ndarray, size: int, count: int, rng: np.random.Generator,
             where: str, zoom: float = 1.0) -> list[tuple[np.ndarray, Crop]]:
    """``count`` HR patches ``[3, size, size]`` at seeded positions of ``img`` (already zoomed), with crop records."""
    _, h, w = img.shape
    if h < size or w < size:
        raise DataError(f"{name}: {where}{'' if zoom == 1.0 else f' zoomed x{zoom:g}'} is {h}x{w}, smaller than "
                        f"the HR patch size {size}x{size}")
    tops = rng.integers(0, h - size + 1, size=count)
    lefts = rng.integers(0, w - size + 1, size=count)
    return [(np.ascontiguousarray(img[:, t:t + size, l:l + size]), Crop(photo, int(t), int(l), size, size, zoom))
            for t, l in zip(tops, lefts)]


def _check_zooms(zooms: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(z) for z in zooms)
    if not out or any(isinstance(z, bool) or not 0.0 < z <= 1.0 for z in zooms) or len(set(out)) != len(out):
        raise ConfigError(f"train_zooms must be distinct factors in (0, 1], got {zooms!r}")
    return out


def _eval_crop(name: str, photo: str, img: np.ndarray, scale: int, eval_size: int | None,
               where: str) -> tuple[np.ndarray, Crop]:
    """The whole image cropped at the top-left to a multiple of ``scale``, or a centred ``eval_size`` crop."""
    _, h, w = img.shape
    minimum = 2 * scale + 11  # the SSIM window must fit after the border crop
    if h < minimum or w < minimum:
        raise DataError(f"{name}: {where} is {h}x{w}; evaluation images need at least {minimum}x{minimum} at x{scale}")
    if eval_size is None:
        ch, cw, top, left = h - h % scale, w - w % scale, 0, 0
    else:
        ch = min(eval_size, h) // scale * scale
        cw = min(eval_size, w) // scale * scale
        top, left = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(img[:, top:top + ch, left:left + cw]), Crop(photo, top, left, ch, cw)


def _assemble(name: str, assignment: dict[str, str], read, *, scale: int, patch_size: int,
              patches_per_image: int, eval_size: int | None, seed: int, where,
              train_zooms: tuple[float, ...] = (1.0,)) -> dict[str, SRSplit]:
    """Splits from ``assignment`` (image name -> split); ``read(name)`` gives its ``uint8 [3, H, W]``.

    Train images are visited in sorted name order (and each in ``train_zooms`` order) with one
    ``default_rng(seed)``, so the patch positions depend only on the seed, the zooms and the train images.
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[tuple[np.ndarray, Crop]]] = {s: [] for s in SPLITS}
    for photo in sorted(assignment):
        side = assignment[photo]
        img = read(photo)
        if side == "train":
            for zoom in train_zooms:
                parts["train"].extend(_patches(name, photo, zoom_image(img, zoom), patch_size, patches_per_image,
                                               rng, where(photo), zoom))
        else:
            parts[side].append(_eval_crop(name, photo, img, scale, eval_size, where(photo)))
    return {s: SRSplit(tuple(p[0] for p in parts[s]), tuple(p[1] for p in parts[s])) for s in SPLITS}


def _split_digest(splits: dict[str, SRSplit]) -> str:
    h = hashlib.sha256()
    for s in SPLITS:
        h.update(s.encode())
        for c in splits[s].crops:
            h.update(repr(tuple(c.as_dict().values())).encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- bundled photos


def load_photos(
    data_root: PathLike | None = None,
    *,
    scale: int = 2,
    patch_size: int = 96,
    patches_per_image: int = 32,
    eval_size: int | None = None,
    seed: int = 0,
    photos: Sequence[str] | None = None,
    train_zooms: Sequence[float] = (1.0,),
) -> SRSource:
    """The bundled photos (``data_root`` is accepted and ignored), split by :data:`PHOTO_SPLIT`.

    scale: 2, 3 or 4; eval images are cropped to a multiple of it.
    patch_size: side of the HR training patches (a multiple of ``scale``).
    patches_per_image: training patches cut from each train photo (seeded by ``seed``).
    eval_size: None keeps val/test images whole; an int takes a centred crop of at most that side.
    photos: a subset of :data:`PHOTO_FILES` to use (default all); each keeps its fixed side.
    train_zooms: distinct factors in (0, 1]; every train photo is also resized by each
    (:func:`zoom_image`) and ``patches_per_image`` patches are cut from every copy (val / test untouched).
    """
    _check_settings(scale, patch_size, patches_per_image, eval_size)
    _check_int("seed", seed, 0)
    zooms = _check_zooms(train_zooms)
    chosen = sorted(PHOTO_SPLIT) if photos is None else list(dict.fromkeys(photos))
    unknown = [p for p in chosen if p not in PHOTO_SPLIT]
    if unknown:
        raise ConfigError(f"unknown photo(s) {', '.join(map(repr, unknown))}; choices: {', '.join(sorted(PHOTO_SPLIT))}")
    assignment = {p: PHOTO_SPLIT[p] for p in chosen}
    splits = _assemble("photos", assignment, read_photo, scale=scale, patch_size=patch_size,
                       patches_per_image=patches_per_image, eval_size=eval_size, seed=seed,
                       where=lambda p: f"photo {p!r}", train_zooms=zooms)
    sides = {s: [p for p in chosen if assignment[p] == s] for s in SPLITS}
    description = (f"bundled photos (scikit-learn, scikit-image), x{scale}, split by image: "
                   f"train {', '.join(sides['train']) or '-'} ({patches_per_image} HR patches of {patch_size} px each"
                   f"{'' if zooms == (1.0,) else ' per zoom ' + '/'.join(f'{z:g}' for z in zooms)}), "
                   f"val {', '.join(sides['val']) or '-'}, test {', '.join(sides['test']) or '-'} "
                   f"({'whole' if eval_size is None else f'centre {eval_size} px'})")
    meta = {"assignment": assignment, "patch_size": patch_size, "patches_per_image": patches_per_image,
            "eval_size": eval_size, "seed": seed, "split_digest": _split_digest(splits)}
    if zooms != (1.0,):
        meta["train_zooms"] = list(zooms)
    return SRSource("photos", scale, splits["train"], splits["val"], splits["test"], description, meta)


# --------------------------------------------------------------------------- folders on disk


def _image_files(name: str, directory: Path) -> list[Path]:
    """Image files directly in ``directory`` (sorted, hidden files skipped); DataError when there are none."""
    files = sorted(p for p in directory.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{name}: no images ({', '.join(IMAGE_EXTENSIONS)}) in {directory}")
    return files


def _by_image(names: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """Seeded assignment of whole images to train / val / test (at least one train image)."""
    n = len(names)
    n_test = int(round(test_fraction * n)) if test_fraction > 0 else 0
    n_val = int(round(val_fraction * n)) if val_fraction > 0 else 0
    n_test = max(n_test, 1 if test_fraction > 0 else 0)
    n_val = max(n_val, 1 if val_fraction > 0 else 0)
    if n - n_test - n_val < 1:
        raise DataError(f"srfolder: {n} image(s) are too few for val {val_fraction:g} / test {test_fraction:g} "
                        f"with at least one train image")
    order = np.random.default_rng(seed).permutation(n)
    out = {}
    for rank, i in enumerate(order):
        out[names[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def load_sr_folder(
    data_root: PathLike | None,
    *,
    scale: int = 2,
    patch_size: int = 96,
    patches_per_image: int = 32,
    eval_size: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
) -> SRSource:
    """HR images from a folder on disk, split by image.

    Layouts (checked in this order):

    * ``root/DIV2K_train_HR/`` and/or ``root/DIV2K_valid_HR/``: train = the
      train images less a ``val_fraction`` held out by image (seeded), test =
      the valid images;
    * ``root/HR/`` (Set5, Set14, B100, Urban100 as usually distributed): an
      evaluation set, every image goes to test (train and val are empty);
    * otherwise the images directly in ``root``: a seeded split by image with
      ``val_fraction`` and ``test_fraction`` (at least one image each when > 0).

    limit: use only the first ``limit`` images (sorted by file name) of each folder.
    Other settings as in :func:`load_photos`.  Images are keyed by file name.
    """
    name = "srfolder"
    _check_settings(scale, patch_size, patches_per_image, eval_size)
    _check_int("seed", seed, 0)
    if limit is not None:
        _check_int("limit", limit, 1)
    for label, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 <= frac < 1.0:
            raise ConfigError(f"{label} must be in [0, 1), got {frac!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction:g}")
    if data_root is None:
        raise DataError(f"{name} needs --data-root PATH pointing to a folder of HR images")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        state = "is not a directory" if root.exists() else "does not exist"
        raise DataError(f"{name}: data root {root} {state}; expected a folder of HR images")
    root = root.resolve()

    files: dict[str, Path] = {}
    assignment: dict[str, str] = {}

    def take(directory: Path) -> list[str]:
        paths = _image_files(name, directory)[:limit]
        keys = []
        for p in paths:
            key = p.name if directory == root else f"{directory.name}/{p.name}"
            files[key] = p
            keys.append(key)
        return keys

    div_train, div_valid = root / "DIV2K_train_HR", root / "DIV2K_valid_HR"
    if div_train.is_dir() or div_valid.is_dir():
        layout = "div2k"
        if div_train.is_dir():
            assignment.update(_by_image(take(div_train), val_fraction, 0.0, seed))
        if div_valid.is_dir():
            assignment.update({k: "test" for k in take(div_valid)})
    elif (root / "HR").is_dir():
        layout = "hr"
        assignment.update({k: "test" for k in take(root / "HR")})
    else:
        layout = "flat"
        assignment.update(_by_image(take(root), val_fraction, test_fraction, seed))

    splits = _assemble(name, assignment, lambda k: _read_image(files[k], name), scale=scale, patch_size=patch_size,
                       patches_per_image=patches_per_image, eval_size=eval_size, seed=seed,
                       where=lambda k: f"image {files[k]}")
    sizes = {s: sum(v == s for v in assignment.values()) for s in SPLITS}
    description = (f"HR images from {root} ({layout} layout), x{scale}, split by image: {sizes['train']} train "
                   f"({patches_per_image} patches of {patch_size} px each), {sizes['val']} val, {sizes['test']} test")
    meta = {"data_root": str(root), "layout": layout, "assignment": assignment, "patch_size": patch_size,
            "patches_per_image": patches_per_image, "eval_size": eval_size, "seed": seed, "limit": limit,
            "split_digest": _split_digest(splits)}
    return SRSource(name, scale, splits["train"], splits["val"], splits["test"], description, meta)


# --------------------------------------------------------------------------- seeded LR crops (stages)
def crop_side(split, scale: int, want: int | None) -> int:
    """The LR crop side: ``want`` (default 32) cut to the smallest image of the split."""
    smallest = min(min(img.shape[-2:]) for img in split.images) // scale
    return max(1, min(want or 32, smallest))


def lr_crops(split, scale: int, size: int, count: int, seed: int) -> torch.Tensor:
    """``count`` random LR crops ``[count, 3, size, size]`` of a split's images (HR crop, then bicubic down).

    split: an :class:`~suite.core.sr.photos.SRSplit`; every image must be at least ``size * scale`` on a side.
    """
    gen = torch.Generator().manual_seed(seed)
    hs = size * scale
    out = []
    for _ in range(count):
        i = int(torch.randint(0, len(split), (1,), generator=gen))
        img = split.hr(i)
        h, w = img.shape[-2:]
        if h < hs or w < hs:
            raise ConfigError(f"image {i} is {h}x{w}, smaller than the HR crop {hs}")
        t = int(torch.randint(0, h - hs + 1, (1,), generator=gen))
        l = int(torch.randint(0, w - hs + 1, (1,), generator=gen))
        out.append(bicubic_down(img[..., t:t + hs, l:l + hs], scale))
    return torch.cat(out)
