"""Classification metrics for one split, accumulated over batches with torchmetrics."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

ECE_BINS = 15
"""Equal-width confidence bins of the expected calibration error (Guo et al. 2017 use 15)."""


class SplitMetrics:
    """Loss, top-1, top-5, macro precision/recall/F1 and ECE of one split; optionally the confusion matrix."""

    def __init__(self, num_classes: int, device, confusion: bool = False):
        top5 = min(5, num_classes)
        metrics = {
            "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "top5": MulticlassAccuracy(num_classes, top_k=top5, average="micro"),
            "precision_macro": MulticlassPrecision(num_classes, average="macro"),
            "recall_macro": MulticlassRecall(num_classes, average="macro"),
            "f1_macro": MulticlassF1Score(num_classes, average="macro"),
            "ece": MulticlassCalibrationError(num_classes, n_bins=ECE_BINS, norm="l1"),
        }
        self.collection = MetricCollection(metrics).to(device)
        self.confusion = MulticlassConfusionMatrix(num_classes).to(device) if confusion else None
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.count = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        logits = logits.float()
        self.loss_sum += F.cross_entropy(logits, target, reduction="sum").double()
        self.count += target.numel()
        probs = logits.softmax(dim=-1)
        self.collection.update(probs, target)
        if self.confusion is not None:
            self.confusion.update(probs, target)

    def compute(self, prefix: str) -> dict[str, float]:
        out = {f"{prefix}_loss": (self.loss_sum / max(1, self.count)).item()}
        out.update({f"{prefix}_{k}": float(v) for k, v in self.collection.compute().items()})
        return out

    def confusion_matrix(self) -> torch.Tensor:
        return self.confusion.compute().cpu()
