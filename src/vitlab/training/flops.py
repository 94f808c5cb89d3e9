"""FLOP budgets: `train.budget_flops` becomes a fixed number of optimizer steps.

The scaling-law convention (Kaplan et al. 2020, Hoffmann et al. 2022) compares models at equal
training compute C in FLOPs, C ≈ 6 · parameters · tokens for a transformer: forward 2 FLOPs per
multiply-accumulate, backward twice that. vitlab counts instead of estimating: the training FLOPs of
one optimizer step are what torch's FlopCounterMode counts on a real forward and backward of one
batch of the run's shapes (matmuls, convolutions, attention; element-wise work, the loss and the
optimizer update are not counted), and the run trains

    N = ⌊budget_flops / FLOPs per step⌋ steps.

The count runs once, on the meta device: a copy of the architecture without memory or arithmetic, so
it consumes no random numbers, touches no weights, and gives the same N on every machine, thread
count, load, device and precision (`train.amp` changes how fast a FLOP is, not how many there are).
Evaluation is not in the budget: only training is. N goes into the run state and summary.json like a
time budget's; a resumed run keeps it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from ..models import build_model
from ..models.layers import flop_counter


def train_step_flops(model: nn.Module, batch_size: int, in_chans: int, image_size: int, num_classes: int) -> int:
    """FLOPs of one training step of `model` (on the meta device, in train mode): forward of a batch of
    `batch_size` images of in_chans × image_size², cross-entropy against `num_classes` classes, backward."""
    x = torch.zeros(batch_size, in_chans, image_size, image_size, device="meta")
    y = torch.zeros(batch_size, dtype=torch.long, device="meta")
    model.train()
    with flop_counter() as counter:
        F.cross_entropy(model(x), y).backward()
    return int(counter.get_total_flops())


def run_step_flops(model_cfg, num_classes: int, in_chans: int, data_image_size: int, batch_size: int) -> int:
    """Training FLOPs per step of the run's model (built from `model_cfg` on the meta device) at its
    input size; the global random state is left as it was."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = build_model(model_cfg, num_classes, in_chans, data_image_size)
    return train_step_flops(model, batch_size, in_chans, model.input_size, num_classes)


def steps_for_flops(budget_flops: float, flops_per_step: int) -> int:
    """The optimizer steps a budget of `budget_flops` buys: ⌊budget / per step⌋, at least 1 or an error."""
    if flops_per_step <= 0:
        raise UserError("train.budget_flops: this model's training step counts no FLOPs; use train.steps")
    steps = int(budget_flops // flops_per_step)
    if steps < 1:
        raise UserError(f"train.budget_flops: {budget_flops:.3g} FLOPs is less than one training step of this "
                        f"model ({flops_per_step:.3g} FLOPs per step); raise the budget")
    return steps


__all__ = ["train_step_flops", "run_step_flops", "steps_for_flops"]
