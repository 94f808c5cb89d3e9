"""A user's image folder: one sub-folder per class (or `train/` and `test/` of those), PNG or JPEG.

Images are converted to RGB, centre-cropped to a square and resized (PIL, antialiased) to
`data.folder_image_size`. Without a `test/` sub-folder a stratified share is held out as test set
with a fixed seed, so every run of a study is scored on the same images.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DataError, one_line
from .bundle import RawSplits
from .splits import stratified_split

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Seed of the train/test hold-out when the folder has no test/ (independent of the run seed).
TEST_SPLIT_SEED = 0


def _inside(p: Path, root: Path) -> Path:
    """`p`, unless it is (or lies under) a symbolic link that leaves the dataset folder `root`
    (resolved): such links are refused, so a dataset never reads files from elsewhere on the machine."""
    try:
        target = p.resolve()
    except (OSError, RuntimeError) as e:  # a link loop
        raise DataError(f"{p}: cannot resolve ({e})") from None
    if not target.is_relative_to(root):
        raise DataError(f"{p}: symbolic link to {target}, outside the dataset folder {root}; vitlab does not "
                        "follow links that leave it (copy the files in instead)")
    return p


def _class_dirs(path: Path, root: Path) -> list[Path]:
    return sorted(_inside(p, root) for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(path: Path, root: Path) -> list[Path]:
    return sorted(_inside(p, root) for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def layout(path: Path) -> tuple[list[str], dict[str, list[tuple[Path, str]]]]:
    """Class names and {split: [(image file, class name)]}; split is 'train' and maybe 'test'."""
    if not path.is_dir():
        raise DataError(f"{path}: image folder not found (data.folder_path)")
    root = path.resolve()
    has_splits = (path / "train").is_dir() and (path / "test").is_dir()
    split_dirs = {"train": path / "train", "test": path / "test"} if has_splits else {"train": path}
    for d in split_dirs.values():
        _inside(d, root)
    classes = [d.name for d in _class_dirs(split_dirs["train"], root)]
    if not classes:
        raise DataError(f"{split_dirs['train']}: no class sub-folders (expected one folder of images per class)")
    files: dict[str, list[tuple[Path, str]]] = {}
    for split, split_root in split_dirs.items():
        files[split] = []
        for d in _class_dirs(split_root, root):
            if d.name not in classes:
                raise DataError(f"{d}: class {d.name!r} is not among the training classes")
            images = _image_files(d, root)
            if not images and split == "train":
                raise DataError(f"{d}: no PNG or JPEG images")
            files[split] += [(f, d.name) for f in images]
        if not files[split]:
            raise DataError(f"{split_root}: no PNG or JPEG images")
    return classes, files


def read_image(path: Path, size: int) -> np.ndarray:
    """(3, size, size) uint8: RGB, centre-cropped to a square, resized with antialiasing."""
    try:
        with warnings.catch_warnings():
            # Past Image.MAX_IMAGE_PIXELS PIL only warns (and errors at twice that): refuse it outright.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            im = im.convert("RGB")
            w, h = im.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            im = im.crop((left, top, left + side, top + side))
            if side != size:
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{path}: image larger than {Image.MAX_IMAGE_PIXELS:,} pixels (PIL's decompression-bomb "
                        "limit); refused") from None
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"{path}: cannot read image ({one_line(e)})") from None


def _read_all(items: list[tuple[Path, str]], classes: list[str], size: int):
    index = {c: i for i, c in enumerate(classes)}
    x = np.stack([read_image(p, size) for p, _ in items])
    y = np.array([index[c] for _, c in items], dtype=np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def load(path: Path, image_size: int, test_fraction: float) -> RawSplits:
    classes, files = layout(path)
    if len(classes) < 2:  # nothing to classify (and the metrics are undefined for one class)
        raise DataError(f"{path}: only one class sub-folder ({classes[0]!r}); a classifier needs at least two "
                        "(one folder of images per class)")
    train_x, train_y = _read_all(files["train"], classes, image_size)
    if "test" in files:
        test_x, test_y = _read_all(files["test"], classes, image_size)
    else:
        n_test = round(len(train_y) * test_fraction)
        if not 0 < n_test < len(train_y):
            raise DataError(f"{path}: too few images ({len(train_y)}) to hold out data.folder_test_fraction="
                            f"{test_fraction} as test set")
        gen = torch.Generator().manual_seed(TEST_SPLIT_SEED)
        test_idx, train_idx = stratified_split(train_y, n_test, gen)
        train_x, train_y, test_x, test_y = train_x[train_idx], train_y[train_idx], train_x[test_idx], train_y[test_idx]
    return RawSplits(classes, train_x, train_y, test_x, test_y).check(str(path))


def verify(path: Path, image_size: int = 8) -> list[str]:
    """Decode every image once (tiny size); DataError names the first unreadable file."""
    classes, files = layout(path)
    for items in files.values():
        for p, _ in items:
            read_image(p, image_size)
    counts = ", ".join(f"{split} {len(items)}" for split, items in files.items())
    return [f"ok  {path}  {len(classes)} classes, images: {counts}"]
