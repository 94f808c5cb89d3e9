"""The `calibration` section: the reliability diagram of the clean test set (Guo et al. 2017, §2).

Predictions are grouped into equal-width bins of their confidence (the top softmax probability);
per bin the diagram compares the mean confidence with the accuracy. ECE = Σ_b (n_b / n)·|acc_b − conf_b|
(Naeini et al. 2015); `overconfidence` = mean confidence − accuracy (> 0: the model claims more than
it achieves). The ECE of summary.json (torchmetrics, 15 bins) measures the same thing.
"""
from __future__ import annotations

import torch
from torch import Tensor


def reliability_bins(confidence: Tensor, correct: Tensor, bins: int) -> list[dict]:
    """Per equal-width bin (lo, hi] of confidence (the first bin also holds 0): count, mean confidence
    and accuracy (None for an empty bin)."""
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    which = torch.bucketize(confidence.double().cpu(), edges[1:-1], right=False)
    correct = correct.double().cpu()
    conf = confidence.double().cpu()
    out = []
    for b in range(bins):
        m = which == b
        k = int(m.sum())
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": k,
                    "confidence": float(conf[m].mean()) if k else None,
                    "accuracy": float(correct[m].mean()) if k else None})
    return out


def expected_calibration_error(bins: list[dict]) -> float:
    """ECE = Σ_b (n_b / n)·|acc_b − conf_b| over non-empty bins."""
    n = sum(b["count"] for b in bins)
    return sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]) if n else float("nan")


def compute_calibration(run, opts) -> dict:
    """Reliability diagram, ECE, mean confidence, accuracy and overconfidence on the clean test set."""
    x, y = run.data.test_x, run.data.test_y
    probs = run.logits(x).softmax(dim=-1)
    confidence, pred = probs.max(dim=-1)
    correct = pred == y
    bins = reliability_bins(confidence, correct, opts.reliability_bins)
    acc, conf = float(correct.double().mean()), float(confidence.double().mean())
    return {"images": len(y), "bins": bins, "ece": expected_calibration_error(bins), "accuracy": acc,
            "mean_confidence": conf, "overconfidence": conf - acc}
