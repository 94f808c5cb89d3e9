"""Time budgets: `train.budget_minutes` becomes a fixed number of optimizer steps.

Equal-compute comparisons give every run of a study the same wall-clock budget, as in budgeted
training (Li, Yumer & Ramanan, "Budgeted Training: Rethinking Deep Neural Network Training Under
Resource Constraints", ICLR 2020): a faster model gets more steps, and every schedule is annealed
over the steps it gets. At the start of a fresh budgeted run:

1. **calibrate** — time a few training steps on random batches of the training split (the same code
   as training: gather, augment, forward, backward, optimizer and EMA update), an evaluation of
   a few validation batches, the per-epoch attention probe and one checkpoint write; then restore the model, optimizer, grad scaler,
   EMA and every random generator to their state before. The calibration is thrown away: it leaves
   no trace in the run, so `train.steps=N` with the recorded N computes exactly the same run. It
   costs its own time (1% of the budget, 3 to 20 s, of timed steps, plus two warm-up steps and a few
   evaluation batches), which is counted against the budget;
2. **solve** — the largest N whose training steps, per-epoch evaluations and checkpoints, and final
   test evaluation fit in what is left of the budget (`steps_within_budget`). Where not one step
   fits (a wide model whose evaluations alone outlast the budget), the run stops with an error
   rather than reporting an untrained model.

N goes into the run state (so every checkpoint holds it) and `summary.json`: a resumed run keeps its
step count and never recalibrates. The budget covers the whole `run_training` call from the moment
the trainer starts loading data; the time lost to an interruption is not budgeted.

The step count is fixed from the speed measured at the start, so a wall-clock run ends within its
budget as far as that speed holds: on a machine shared with other jobs whose load changes during the
run, it ends early or late in proportion, and two runs of one config get different step counts (see
benchmarks/RESULTS.md). `train.budget_clock=cpu` budgets the CPU time of the run's process instead:
on a CPU device that is what a run computes, without the time slices of the other jobs, so runs
compared in a study get equal compute however busy the machine was (up to the jobs' contention for
caches and memory bandwidth: 1.6× in step time between two workers on 2 vCPUs); their wall clock is
then the budget divided by the share of the CPU they got.

In a study the seeds of one configuration would each measure a different speed (the other workers'
load changes), so the study calibrates each configuration once, quietly, and hands the step count to
all its runs (study/calibration.py; `charge_calibration=False` there, as the runs do not calibrate).
A budget that gives the same steps on any machine counts FLOPs instead (train/flops.py).
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from ..errors import UserError
from .checkpoint import capture_rng, restore_rng, save_checkpoint

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""What a budget counts (`train.budget_clock`): wall-clock time, or the CPU time of the run's process
(all its threads), which does not count the time slices other processes take (their contention for
caches and memory bandwidth still slows it)."""

CALIBRATION_WARMUP_STEPS = 2
"""Untimed steps first: the first steps pay one-off costs (allocator, kernel selection, compilation)."""
CALIBRATION_MIN_STEPS = 3
"""Timed steps at least ..."""
CALIBRATION_MAX_STEPS = 200
"""... and at most; in between, steps are timed for `calibration_seconds(budget)`."""
CALIBRATION_SHARE = 0.01
"""Share of the budget spent timing steps (longer averages over more load fluctuation, wastes more) ..."""
CALIBRATION_MIN_SECONDS = 3.0
CALIBRATION_MAX_SECONDS = 20.0
"""... within these bounds."""
CALIBRATION_EVAL_BATCHES = 2
"""Evaluation batches timed (after one untimed batch) to estimate the evaluation cost per image."""
CHECKPOINTS_PER_EPOCH = 2
"""Checkpoint writes budgeted per epoch: last.pt, plus best.pt when validation improves."""
BUDGET_MARGIN = 0.03
"""Share of the budget kept free for the error of the estimate (throughput drifts on a shared machine)."""
CALIBRATION_SCRATCH = ".calibration.pt"
"""Scratch checkpoint timed in the checkpoint folder, deleted at once."""


def steps_within_budget(seconds: float, step_s: float, epoch_overhead_s: float, steps_per_epoch: int) -> int:
    """The largest N ≥ 0 with N·step_s + ceil(N / steps_per_epoch)·epoch_overhead_s ≤ seconds.

    Training N steps takes E = ceil(N / steps_per_epoch) epochs, each ending with an evaluation and
    checkpoints (`epoch_overhead_s`). For each E the best N is min(E·spe, ⌊(seconds − E·overhead)/step⌋),
    valid when it exceeds (E − 1)·spe; the time left falls as E grows, so the scan stops at the first
    invalid E.
    """
    best, epochs = 0, 1
    while True:
        left = seconds - epochs * epoch_overhead_s
        if left <= 0:
            return best
        n = min(epochs * steps_per_epoch, math.floor(left / step_s))
        if n <= (epochs - 1) * steps_per_epoch:
            return best
        best, epochs = n, epochs + 1


def calibration_seconds(budget_s: float) -> float:
    """How long to time training steps for a budget of `budget_s` seconds."""
    return min(CALIBRATION_MAX_SECONDS, max(CALIBRATION_MIN_SECONDS, CALIBRATION_SHARE * budget_s))


@dataclass
class Calibration:
    """What a budgeted run measured about itself before fixing its step count."""

    step_s: float  # seconds per training step (median of the timed steps)
    eval_image_s: float  # seconds per evaluated image
    checkpoint_s: float  # seconds per checkpoint write
    probe_s: float  # seconds of the per-epoch attention probe (trainer.attention_entropy)
    seconds: float  # time the calibration took
    clock: str  # what the seconds are: "wall" clock or "cpu" time of the process


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def calibrate(trainer, seconds: float = CALIBRATION_MIN_SECONDS, clock: str = "wall") -> Calibration:
    """Time training steps (for about `seconds`), evaluation and a checkpoint of `trainer` on `clock`
    (a name in CLOCKS), leaving its state untouched. The step time is the median of the timed steps: a
    burst of load from other processes during a few of them does not move it."""
    now = CLOCKS[clock]
    t_start = now()
    d, device = trainer.data, trainer.device
    snapshot = {
        "model": copy.deepcopy(trainer.model.state_dict()),
        "optimizer": copy.deepcopy(trainer.optimizer.state_dict()),
        "scaler": copy.deepcopy(trainer.scaler.state_dict()),
        "ema": copy.deepcopy(trainer.ema.state_dict()) if trainer.ema is not None else None,
        "rng": capture_rng(trainer.generators),
    }
    try:
        pick = torch.Generator().manual_seed(0)
        bs = min(trainer.cfg.train.batch_size, len(d.train_y))

        def one_step() -> None:
            idx = torch.randint(len(d.train_y), (bs,), generator=pick).to(device)
            loss, _ = trainer.forward_loss(*trainer.train_batch(idx))
            trainer.optimize(loss)

        trainer.model.train()
        for _ in range(CALIBRATION_WARMUP_STEPS):
            one_step()
        _sync(device)
        times, t0 = [], now()
        while len(times) < CALIBRATION_MAX_STEPS and (
                len(times) < CALIBRATION_MIN_STEPS or now() - t0 < seconds):
            ts = now()
            one_step()
            _sync(device)
            times.append(now() - ts)
        step_s = statistics.median(times)

        ebs = trainer.cfg.train.eval_batch_size
        trainer.evaluate(d.val_x[:ebs], d.val_y[:ebs], "val")  # untimed: first-call costs
        n_eval = min(len(d.val_y), CALIBRATION_EVAL_BATCHES * ebs)
        _sync(device)
        t0 = now()
        trainer.evaluate(d.val_x[:n_eval], d.val_y[:n_eval], "val")
        _sync(device)
        eval_image_s = (now() - t0) / max(1, n_eval)
        t0 = now()
        trainer.attention_entropy()
        _sync(device)
        probe_s = now() - t0

        scratch = trainer.ckpt_dir / CALIBRATION_SCRATCH
        t0 = now()
        save_checkpoint(scratch, trainer.checkpoint_state())
        checkpoint_s = now() - t0
        scratch.unlink(missing_ok=True)
    finally:
        trainer.model.load_state_dict(snapshot["model"])
        trainer.optimizer.load_state_dict(snapshot["optimizer"])
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.scaler.load_state_dict(snapshot["scaler"])
        if trainer.ema is not None:
            trainer.ema.load_state_dict(snapshot["ema"])
        restore_rng(snapshot["rng"], trainer.generators)
    return Calibration(step_s, eval_image_s, checkpoint_s, probe_s, now() - t_start, clock)


def plan_budget(trainer, budget_minutes: float, clock: str = "wall",
                charge_calibration: bool = True) -> tuple[int, dict]:
    """(total optimizer steps, record for the run state) that fit `budget_minutes` on `clock` since
    trainer.started[clock]. charge_calibration=False: the calibration's own time is not taken from the
    budget (a study calibrates once for runs that then do not calibrate themselves)."""
    if clock == "cpu" and trainer.device.type != "cpu":
        raise UserError(f"train.budget_clock: 'cpu' measures the process's CPU time, which does not count "
                        f"the work of device {trainer.device}; use 'wall'")
    cal = calibrate(trainer, calibration_seconds(budget_minutes * 60), clock)
    d, cfg = trainer.data, trainer.cfg
    per_epoch_eval = len(d.val_y) + (len(d.test_y) if cfg.train.test_every_epoch else 0)
    epoch_overhead = per_epoch_eval * cal.eval_image_s + cal.probe_s + CHECKPOINTS_PER_EPOCH * cal.checkpoint_s
    final_test = len(d.test_y) * cal.eval_image_s + cal.checkpoint_s  # best.pt is read back, then test
    elapsed = CLOCKS[clock]() - trainer.started[clock] - (0.0 if charge_calibration else cal.seconds)
    left = budget_minutes * 60 * (1 - BUDGET_MARGIN) - elapsed - final_test
    steps = steps_within_budget(left, cal.step_s, epoch_overhead, trainer.steps_per_epoch)
    if steps == 0:  # a run of 1 step would be a "result" of an untrained model
        raise UserError(
            f"train.budget_minutes: {budget_minutes:g} {clock} minutes leave no time to train this model: "
            f"calibration took {cal.seconds:.0f} s, an epoch's evaluation and checkpoints take {epoch_overhead:.0f} s "
            f"and the final test {final_test:.0f} s of the {budget_minutes * 60:.0f} s; raise the budget or "
            f"evaluate fewer images (data.val_fraction, data.test_subset, train.eval_batch_size)")
    return steps, {"budget_minutes": budget_minutes, **asdict(cal)}


__all__ = ["steps_within_budget", "calibration_seconds", "calibrate", "plan_budget", "Calibration"]
