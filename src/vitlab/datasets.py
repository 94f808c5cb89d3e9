"""The datasets vitlab knows: one table of what each is, for the config, the data readers, the study
planner and the CLI. How each is read lives with its reader in `vitlab.data`."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    """How reports and `vitlab data info` name it."""
    channels: int
    image_size: int | None
    """Side of its square images; None: set by the config (folder: data.folder_image_size)."""
    classes: int | None
    """Number of classes; None: set by the config or the files (synthetic, folder)."""
    rooted: bool
    """Read from the data root (data.root, $VITLAB_DATA_ROOT); else generated, or at a path of its own."""
    downloadable: bool
    """Has official files `vitlab data download` fetches."""


#: Every dataset, by `data.name`.
DATASETS: dict[str, Dataset] = {d.name: d for d in [
    Dataset("synthetic", "synthetic shapes", channels=3, image_size=32, classes=None, rooted=False, downloadable=False),
    Dataset("cifar10", "CIFAR-10", channels=3, image_size=32, classes=10, rooted=True, downloadable=True),
    Dataset("cifar100", "CIFAR-100", channels=3, image_size=32, classes=100, rooted=True, downloadable=True),
    Dataset("fashion_mnist", "Fashion-MNIST", channels=1, image_size=28, classes=10, rooted=True, downloadable=True),
    Dataset("folder", "image folder", channels=3, image_size=None, classes=None, rooted=False, downloadable=False),
]}

#: The names, in the table's order (the choices of `data.name`).
DATASET_NAMES = tuple(DATASETS)


def image_shape(name: str) -> tuple[int, int, int]:
    """(channels, height, width) of a dataset with a fixed image size."""
    d = DATASETS[name]
    if d.image_size is None:
        raise ValueError(f"{name}: its image size is set by the config")
    return d.channels, d.image_size, d.image_size
