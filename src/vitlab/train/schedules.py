"""Learning-rate schedules, evaluated per optimizer step.

`LRMultiplier` is a picklable callable for `torch.optim.lr_scheduler.LambdaLR`, so the scheduler's
state (its step counter) goes into checkpoints like any other.
"""
from __future__ import annotations

import math

import torch

from ..config import ScheduleConfig


class LRMultiplier:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based).

    - linear warmup from 0 to 1 over `warmup_epochs` (for every schedule);
    - cosine: 1 -> min_lr/base_lr over the remaining steps;
    - step: ×gamma at each epoch in `milestones` (counted from the start, warmup included);
    - constant: 1.
    """

    def __init__(self, cfg: ScheduleConfig, base_lr: float, epochs: int, steps_per_epoch: int):
        self.name = cfg.name
        self.steps_per_epoch = steps_per_epoch
        self.total = epochs * steps_per_epoch
        self.warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), self.total)
        self.floor = cfg.min_lr / base_lr
        self.milestones = [m * steps_per_epoch for m in cfg.milestones]
        self.gamma = cfg.gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.name == "cosine":
            span = max(1, self.total - self.warmup)
            progress = min(1.0, (step - self.warmup) / span)
            return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.name == "step":
            return self.gamma ** sum(step >= m for m in self.milestones)
        return 1.0


def make_scheduler(optimizer, cfg: ScheduleConfig, base_lr: float, epochs: int, steps_per_epoch: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRMultiplier(cfg, base_lr, epochs, steps_per_epoch))
