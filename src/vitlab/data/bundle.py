"""The in-memory form of a dataset: uint8 image tensors + int64 labels, split train / val / test."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import DataError


@dataclass
class RawSplits:
    """What a dataset reader returns: the official train and test sets, on the CPU.

    Images are uint8 (N, C, H, W), labels int64 in [0, len(classes)).
    """

    classes: list[str]
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor

    def check(self, source: str) -> "RawSplits":
        """Raise a DataError naming `source` when shapes, dtypes or labels are inconsistent."""
        k = len(self.classes)
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3):
                raise DataError(f"{source}: {split} images must be uint8 (N, 1|3, H, W), got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise DataError(f"{source}: {split} has {x.shape[0]} images but {tuple(y.shape)} labels")
            if x.shape[0] == 0:
                raise DataError(f"{source}: {split} set is empty")
            if int(y.min()) < 0 or int(y.max()) >= k:
                raise DataError(f"{source}: {split} labels outside 0..{k - 1}")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise DataError(
                f"{source}: train images {tuple(self.train_x.shape[1:])} and test images "
                f"{tuple(self.test_x.shape[1:])} differ in shape"
            )
        return self


@dataclass
class DataBundle:
    """A dataset ready for training, every tensor on the run's device.

    `val_*` is held out of the official training set (stratified, seeded by `seed_split`, which
    defaults to the run seed);
    `mean`/`std` are per-channel statistics of the official training images on the [0, 1] scale,
    the same for every seed of a study.
    """

    name: str
    classes: list[str]
    synthetic: bool
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[2])

    def describe(self) -> str:
        """One line for logs: name, sizes, shape, classes."""
        tag = " (synthetic)" if self.synthetic else ""
        return (
            f"{self.name}{tag}: train {len(self.train_y)}, val {len(self.val_y)}, test {len(self.test_y)} images "
            f"of {self.in_chans}x{self.image_size}x{self.image_size}, {self.num_classes} classes"
        )
