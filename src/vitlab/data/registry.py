"""The reader of each dataset (one row per name of `vitlab.datasets.DATASETS`); the train / val /
test bundle of a run; info, verify and download."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..config import DataConfig
from ..datasets import DATASETS, image_shape
from ..errors import DataError
from ..schema import suggest
from . import cifar, fashion_mnist, folder, synthetic
from .bundle import DataBundle, RawSplits
from .files import resolve_root
from .splits import channel_stats, stratified_split

# Seed of the stratified test subset (data.test_subset): fixed, so every run of a study is scored
# on the same test images whatever its seed.
TEST_SUBSET_SEED = 0
# Floor of the normalization std: a channel that is constant in the training set (e.g. a folder of
# pure-blue images) must not divide by zero.
MIN_STD = 1.0 / 255


@dataclass(frozen=True)
class Reader:
    """How one dataset is read, described, verified and downloaded. `root` is the data root (for a
    rooted dataset: None means the default one) or, for `folder`, the image folder itself."""

    read: Callable[[DataConfig], RawSplits]
    """The official train and test sets (downloading missing files when the config allows)."""
    info: Callable[[str, "str | os.PathLike | None"], dict]
    verify: Callable[["str | os.PathLike | None"], list[str]]
    download: Callable[["str | os.PathLike | None"], Path] | None
    """None: nothing to download."""


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}" + suggest(name, DATASETS))


def read_raw(cfg: DataConfig) -> RawSplits:
    """The official train and test sets of cfg.name (downloading a missing one if allowed)."""
    _check_name(cfg.name)
    return READERS[cfg.name].read(cfg)


def split_raw(raw: RawSplits, cfg: DataConfig, seed: int) -> dict[str, torch.Tensor]:
    """Index tensors: validation held out of train (stratified, run seed), then the optional subsets."""
    gen = torch.Generator().manual_seed(seed)
    n_train = len(raw.train_y)
    n_val = round(n_train * cfg.val_fraction)
    if not 0 < n_val < n_train:
        raise DataError(f"{cfg.name}: {n_train} training images are too few to hold out "
                        f"data.val_fraction={cfg.val_fraction} for validation")
    val_idx, train_idx = stratified_split(raw.train_y, n_val, gen)
    if cfg.train_subset is not None and cfg.train_subset < len(train_idx):
        keep, _ = stratified_split(raw.train_y[train_idx], cfg.train_subset, gen)
        train_idx = train_idx[keep]
    test_idx = torch.arange(len(raw.test_y))
    if cfg.test_subset is not None and cfg.test_subset < len(test_idx):
        test_idx, _ = stratified_split(raw.test_y, cfg.test_subset, torch.Generator().manual_seed(TEST_SUBSET_SEED))
    return {"train": train_idx, "val": val_idx, "test": test_idx}


def load_dataset(cfg: DataConfig, seed: int, device: torch.device | str = "cpu") -> DataBundle:
    """The dataset of `cfg` split into train / val / test, as uint8 images and int64 labels on `device`.

    Normalization statistics come from all official training images (before the validation
    split), so they are the same for every seed.
    """
    raw = read_raw(cfg)
    idx = split_raw(raw, cfg, seed)
    mean, std = channel_stats(raw.train_x)
    std = tuple(max(s, MIN_STD) for s in std)

    def put(t):
        return t.to(device)

    return DataBundle(
        name=cfg.name,
        classes=list(raw.classes),
        synthetic=cfg.name == "synthetic",
        train_x=put(raw.train_x[idx["train"]]),
        train_y=put(raw.train_y[idx["train"]]),
        val_x=put(raw.train_x[idx["val"]]),
        val_y=put(raw.train_y[idx["val"]]),
        test_x=put(raw.test_x[idx["test"]]),
        test_y=put(raw.test_y[idx["test"]]),
        mean=mean,
        std=std,
    )


# ------------------------------------------------------------------------ the readers


def _synthetic_info(name: str, root) -> dict:
    cfg = DataConfig()
    return {
        "name": name, "root": None, "ready": True, "url": None, "files": [],
        "description": "built-in procedurally generated shapes and textures, no files; defaults shown "
                       f"(data.synthetic_classes picks the first 10..{len(synthetic.CLASSES)} classes)",
        "image_shape": list(image_shape(name)),
        "train_images": cfg.synthetic_train, "test_images": cfg.synthetic_test,
        "num_classes": cfg.synthetic_classes, "classes": synthetic.CLASSES[:cfg.synthetic_classes],
    }


def _folder_path(root, what: str) -> Path:
    if root is None:
        raise DataError(f"folder: give the image folder ({what})")
    return Path(root).expanduser()


def _folder_info(name: str, root) -> dict:
    path = _folder_path(root, "--root DIR, or data.folder_path in a config")
    classes, files = folder.layout(path)
    return {
        "name": name, "root": str(path), "ready": True, "url": None,
        "files": [{"file": str(path / split), "present": True, "bytes": None, "md5": None} for split in files],
        "description": "your images, one sub-folder per class, RGB, resized to data.folder_image_size",
        "image_shape": None,
        "train_images": len(files["train"]),
        "test_images": len(files["test"]) if "test" in files else None,  # None: data.folder_test_fraction
        "num_classes": len(classes), "classes": classes,
    }


def _fashion_mnist_read(cfg: DataConfig) -> RawSplits:
    root = resolve_root(cfg.root)
    if cfg.download and any(fashion_mnist.find(root, f) is None for f in fashion_mnist.MD5):
        fashion_mnist.fetch(root)
    return fashion_mnist.load(root)


def _fashion_mnist_info(name: str, root) -> dict:
    root = resolve_root(root)
    files = fashion_mnist.file_table(root)
    return {
        "name": name, "root": str(root), "ready": all(f["present"] for f in files),
        "url": fashion_mnist.URL_BASE, "files": files,
        "description": "Fashion-MNIST (Xiao et al., 2017), 28x28 grayscale clothing",
        "image_shape": list(image_shape(name)),
        "train_images": fashion_mnist.N_TRAIN, "test_images": fashion_mnist.N_TEST,
        "num_classes": DATASETS[name].classes, "classes": list(fashion_mnist.CLASSES),
    }


def _cifar_read(cfg: DataConfig) -> RawSplits:
    root = resolve_root(cfg.root)
    spec = cifar.SPECS[cfg.name]
    if cfg.download and cifar.locate(spec, root) is None:
        cifar.fetch(spec, root)
    return cifar.load(spec, root, coarse=cfg.coarse_labels)


def _cifar_info(name: str, root) -> dict:
    root = resolve_root(root)
    spec = cifar.SPECS[name]
    found = cifar.locate(spec, root)
    info = {
        "name": name, "root": str(root), "ready": found is not None, "url": spec.url,
        "files": cifar.file_table(spec, root),
        "description": f"{DATASETS[name].title} (Krizhevsky, 2009), 32x32 colour; "
                       f"the archive or its extracted {spec.folder}/ folder",
        "image_shape": list(image_shape(name)), "train_images": spec.n_train, "test_images": spec.n_test,
        "num_classes": DATASETS[name].classes,
        "classes": cifar.info_classes(spec, root) if found else None,
    }
    if spec.coarse_label_key is not None:
        info["coarse_classes"] = cifar.info_classes(spec, root, coarse=True) if found else None
    return info


def _cifar_verify(name: str):
    return lambda root: cifar.verify(cifar.SPECS[name], resolve_root(root))


def _cifar_download(name: str):
    def download(root) -> Path:
        spec, root = cifar.SPECS[name], resolve_root(root)
        found = cifar.locate(spec, root)
        if found is not None:
            cifar.verify(spec, root)
            return found[1]
        return cifar.fetch(spec, root)
    return download


#: The reader of every dataset of the table, by name.
READERS: dict[str, Reader] = {
    "synthetic": Reader(
        read=lambda cfg: synthetic.load(cfg.synthetic_classes, cfg.synthetic_train, cfg.synthetic_test,
                                        cfg.synthetic_seed),
        info=_synthetic_info, verify=lambda root: ["ok  synthetic: generated in memory, nothing to verify"],
        download=None),
    "cifar10": Reader(_cifar_read, _cifar_info, _cifar_verify("cifar10"), _cifar_download("cifar10")),
    "cifar100": Reader(_cifar_read, _cifar_info, _cifar_verify("cifar100"), _cifar_download("cifar100")),
    "fashion_mnist": Reader(_fashion_mnist_read, _fashion_mnist_info,
                            lambda root: fashion_mnist.verify(resolve_root(root)),
                            lambda root: fashion_mnist.fetch(resolve_root(root))),
    "folder": Reader(
        read=lambda cfg: folder.load(Path(cfg.folder_path).expanduser(), cfg.folder_image_size,
                                     cfg.folder_test_fraction),
        info=_folder_info, verify=lambda root: folder.verify(_folder_path(root, "--root DIR")), download=None),
}


# ------------------------------------------------------------------------ info / verify / download


def dataset_info(name: str, root: str | os.PathLike | None = None) -> dict:
    """What `vitlab data info NAME` prints: where the files go, which are there, classes, sizes.

    For `folder`, `root` is the image folder itself. Values are plain str / int / bool / list / None.
    """
    _check_name(name)
    return READERS[name].info(name, root)


def verify_dataset(name: str, root: str | os.PathLike | None = None) -> list[str]:
    """md5-check the dataset's files; one line per checked file. DataError names a bad or missing file."""
    _check_name(name)
    return READERS[name].verify(root)


def download_dataset(name: str, root: str | os.PathLike | None = None) -> Path:
    """Fetch the official files into the root (nothing when already there and intact); returns the path.

    Without network: one-line DataError saying which URL to fetch by hand and where to put it.
    """
    _check_name(name)
    if READERS[name].download is None:
        raise DataError(f"{name}: nothing to download ({'generated in memory' if name == 'synthetic' else 'your own images'})")
    return READERS[name].download(root)
