"""Datasets (CIFAR-10/100, Fashion-MNIST, image folders, a built-in synthetic set) and batched augmentation.

    bundle = load_dataset(cfg.data, seed=cfg.seed, device=device)   # uint8 tensors on the device
    aug = Augmenter(cfg.aug, bundle.mean, bundle.std, bundle.num_classes, out_size=image_size)
    x, y = aug.train_batch(bundle.train_x[idx], bundle.train_y[idx], generator)
"""
from .augment import Augmenter
from .bundle import DataBundle
from .files import resolve_root
from .registry import dataset_info, download_dataset, load_dataset, verify_dataset

__all__ = [
    "Augmenter",
    "DataBundle",
    "dataset_info",
    "download_dataset",
    "load_dataset",
    "resolve_root",
    "verify_dataset",
]
