"""Learning-rate schedules, evaluated per optimizer step.

`LRMultiplier` is a picklable callable for `torch.optim.lr_scheduler.LambdaLR`, so the scheduler's
state (its step counter and the run's fixed step count) goes into checkpoints like any other.

The schedule spans the run's total optimizer steps: `epochs × steps_per_epoch` by default, or the
fixed count of `train.steps` / `train.budget_minutes` (then the last epoch may be partial). Warmup
lasts `warmup_fraction` of the total steps (rounded), else `warmup_epochs` epochs of data (at most the
whole run); step decay happens at epoch `milestones` or at `milestone_fractions` of the total steps
(each at step round(f · total)). Under a time budget use the fractions: they scale with the steps a
model gets, so a slow and a fast model are annealed alike.
"""
from __future__ import annotations

import math

import torch

from ..config import ScheduleConfig


def fraction_milestones(fractions, total_steps: int) -> list[int]:
    """Optimizer steps at which step decay applies: each fraction f of the run at step round(f · total)."""
    return [int(round(f * total_steps)) for f in fractions]


class LRMultiplier:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based).

    - linear warmup from 0 to 1 over `warmup_fraction` of the run or `warmup_epochs` (every schedule);
    - cosine: 1 -> min_lr/base_lr over the remaining steps;
    - step: ×gamma at each milestone (epochs counted from the start, warmup included, or fractions of
      the total steps);
    - constant: 1.
    """

    def __init__(self, cfg: ScheduleConfig, base_lr: float, epochs: int, steps_per_epoch: int,
                 total_steps: int | None = None):
        self.name = cfg.name
        self.steps_per_epoch = steps_per_epoch
        self.total = total_steps if total_steps is not None else epochs * steps_per_epoch
        if cfg.warmup_fraction is not None:
            self.warmup = int(round(cfg.warmup_fraction * self.total))
        else:
            self.warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), self.total)
        self.floor = cfg.min_lr / base_lr
        if cfg.milestone_fractions:
            self.milestones = fraction_milestones(cfg.milestone_fractions, self.total)
        else:
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


def make_scheduler(optimizer, cfg: ScheduleConfig, base_lr: float, epochs: int, steps_per_epoch: int,
                   total_steps: int | None = None):
    """A per-step LambdaLR over `total_steps` (default `epochs × steps_per_epoch`)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, LRMultiplier(cfg, base_lr, epochs, steps_per_epoch, total_steps))
