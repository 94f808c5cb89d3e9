"""What a trained run predicts for a batch: its model's logits, or with `train.eval_hflip` the mean of its
class probabilities on the images and on their mirror images (test-time augmentation). Training's
validation and test evaluation and every analysis call this one function, so they score the same
predictor."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def predict_logits(model: nn.Module, x: Tensor, hflip: bool) -> Tensor:
    """float32 class scores of the network input `x` (N, C, H, W). With `hflip`: log of the mean of the
    softmax of `x` and of `x` mirrored left to right — log-probabilities, which are logits too (their
    softmax is that mean), so losses, calibration and top-k read them like any logits."""
    logits = model(x).float()
    if not hflip:
        return logits
    mirrored = model(torch.flip(x, dims=(-1,))).float()
    return torch.logaddexp(logits.log_softmax(-1), mirrored.log_softmax(-1)) - math.log(2.0)
