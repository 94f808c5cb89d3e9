"""Stratified, seeded index splits (validation hold-out, subsets) and per-channel statistics."""
from __future__ import annotations

import torch
from torch import Tensor


def stratified_counts(labels: Tensor, count: int) -> Tensor:
    """How many of each class to take so the total is exactly `count` and each class keeps its share.

    Largest-remainder allocation: floor(share) per class, then one more for the classes with the
    largest fractional parts (ties go to the lower class index).
    """
    labels = labels.to(torch.int64).cpu()
    n = labels.numel()
    if not 0 <= count <= n:
        raise ValueError(f"cannot take {count} of {n} items")
    per_class = torch.bincount(labels)
    quota = per_class.to(torch.float64) * count / n
    take = quota.floor().to(torch.int64)
    short = count - int(take.sum())
    if short:
        frac = quota - take
        # stable sort on -frac keeps the lower class index first among equal fractions
        order = torch.sort(-frac, stable=True).indices
        take[order[:short]] += 1
    return take


def stratified_split(labels: Tensor, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Split indices 0..N-1 into (taken, rest) with `count` taken, stratified by label.

    Which items of each class are taken is random under `generator`; both index tensors are sorted,
    so the data keep their original order.
    """
    labels = labels.to(torch.int64).cpu()
    n = labels.numel()
    take = stratified_counts(labels, count)
    perm = torch.randperm(n, generator=generator)
    # group the shuffled items by class (stable: the random order survives within each class)
    grouped = perm[torch.sort(labels[perm], stable=True).indices]
    sorted_labels = labels[grouped]
    per_class = torch.bincount(labels, minlength=take.numel())
    class_start = torch.cumsum(per_class, 0) - per_class
    rank_in_class = torch.arange(n) - class_start[sorted_labels]
    chosen = rank_in_class < take[sorted_labels]
    return grouped[chosen].sort().values, grouped[~chosen].sort().values


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) on the [0, 1] scale.

    Exact and light: a 256-bin histogram per channel instead of a float copy of the data.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1).cpu(), minlength=256).to(torch.float64)
        total = hist.sum()
        mean = (hist * values).sum() / total
        var = (hist * (values - mean) ** 2).sum() / total
        means.append(float(mean))
        stds.append(float(var.sqrt()))
    return tuple(means), tuple(stds)
