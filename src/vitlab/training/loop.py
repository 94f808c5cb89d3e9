"""One training run: data -> model -> epochs of train + validate -> test -> files on disk.

Output contract (the study runner and users rely on it):
  RUN/config.yaml, RUN/metrics.jsonl (one flushed line per epoch), RUN/summary.json,
  RUN/confusion_test.csv, RUN/checkpoints/{last,best}.pt
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..version import __version__
from ..config import RunConfig, config_from, dump_yaml
from ..identity import identity_dict
from ..schema import build
from ..yamlsafe import read_yaml
from ..data import load_dataset
from ..data.augment import Augmenter
from ..errors import RunError, UserError
from ..metrics import lower_is_better
from ..io import (append_jsonl, atomic_write_json, atomic_write_text, csv_text, make_writable_dir, mark_interrupted,
                  nearest_existing, remove_empty_dirs, remove_stale_temp_files, write_jsonl)
from ..rundir import (BEST_CHECKPOINT, CHECKPOINTS_DIR, CONFIG_FILE, CONFUSION_FILE, FINAL_STATUSES, LAST_CHECKPOINT,
                      METRICS_FILE, RUN_DIR_ENTRIES, SUMMARY_FILE, MalformedFile, RunStatus, checkpoint_path,
                      read_summary)
from ..models import build_model, count_flops, count_params
from ..models.probe import entropy_row, mean_entropy_per_layer
from ..safepath import writable_run_dir
from ..track import Trackers, open_trackers
from .environment import data_root_hint, environment
from .budget import CLOCKS, plan_budget
from .flops import run_step_flops, steps_for_flops
from .checkpoint import BEST_KEYS, LAST_KEYS, capture_rng, damaged, load_checkpoint, restore_rng, save_checkpoint
from .metrics import SplitMetrics
from .predict import predict_logits
from .precision import autocast, check_recorded, legacy_amp, resolve_amp
from .progress import EpochProgress
from .schedules import make_scheduler

ENTROPY_IMAGES = 64
"""Validation images (the first ones of the seeded split) on which each epoch records the mean
normalized attention entropy of every layer (`val_attn_entropy_norm_l{i}` in metrics.jsonl)."""

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device: {name!r} requested but CUDA is not available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("device: 'mps' requested but MPS is not available")
    return torch.device(name)


def param_groups(model: nn.Module, weight_decay: float, decay_all: bool) -> list[dict]:
    """Weight decay on weight matrices/kernels only: not on norms, biases, position embeddings, tokens."""
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if not decay_all and (p.ndim <= 1 or name in skip):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    groups = param_groups(model, o.weight_decay, o.decay_norm_bias)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas))
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr, betas=tuple(o.betas))
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)


#: EMA warm-up: the n-th update uses decay min(train.ema_decay, (1 + n) / (EMA_WARMUP + n)), as TensorFlow's
#: ExponentialMovingAverage(num_updates=...) does. Without it a 0.998 average still holds 43% of the random
#: initialization after one Fashion-MNIST epoch (421 steps) and scores chance at the first evaluations.
EMA_WARMUP = 10


def ema_update_fn(decay: float) -> Callable:
    """The `multi_avg_fn` of torch's AveragedModel for a warmed-up exponential moving average."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1.0 + n) / (EMA_WARMUP + n)))

    return update


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Cross-entropy for hard (int) or soft (mixup/cutmix) targets, with label smoothing."""
    if target.dtype in (torch.int64, torch.int32):
        return F.cross_entropy(logits, target, label_smoothing=smoothing)
    k = logits.shape[-1]
    target = target * (1 - smoothing) + smoothing / k
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


@dataclass
class RunState:
    """Everything that changes from epoch to epoch and must survive a restart."""

    epoch: int = 0  # epochs completed
    best_epoch: int = 0
    best_value: float | None = None
    epochs_since_best: int = 0
    train_time_s: float = 0.0
    train_cpu_s: float = 0.0  # CPU seconds of this process (all threads) in the training steps
    history: list | None = None
    total_steps: int | None = None  # optimizer steps of the whole run, fixed before the first step
    budget: dict | None = None  # how a budget fixed total_steps: what the calibration measured, or the FLOP count

    def improved(self, value: float, monitor: str) -> bool:
        if self.best_value is None:
            return True
        return value < self.best_value if lower_is_better(monitor) else value > self.best_value


class Trainer:
    """Owns the model, optimizer and data of one run; `run()` trains to the end and writes the files."""

    def __init__(self, cfg: RunConfig, out_dir: Path, progress: bool):
        self.started = {name: clock() for name, clock in CLOCKS.items()}  # a time budget counts from here
        self.cfg, self.out, self.show_progress = cfg, out_dir, progress
        self.device = resolve_device(cfg.device)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.seed)
        self.data = load_dataset(cfg.data, cfg.source_seed("seed_split"), self.device)
        d = self.data
        torch.manual_seed(cfg.source_seed("seed_init"))  # initialization does not depend on what loading consumed
        self.model = build_model(cfg.model, d.num_classes, d.in_chans, d.image_size).to(self.device)
        self.params = count_params(self.model)
        self.flops = count_flops(self.model, self.model.input_size, d.in_chans)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.augment = Augmenter(cfg.aug, d.mean, d.std, d.num_classes, self.model.input_size)
        self.amp = resolve_amp(cfg.train.amp, self.device)  # a resumed run takes its checkpoint's instead
        self.optimizer = make_optimizer(self.model, cfg)
        self.steps_per_epoch = max(1, len(d.train_y) // cfg.train.batch_size)
        self.scheduler = None  # built by plan_steps() once the run's step count is fixed
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        self.ema = None
        if cfg.train.ema:
            multi_avg = ema_update_fn(cfg.train.ema_decay)
            # Parameters only: BatchNorm statistics averaged over steps do not describe the averaged weights
            # (the 10-minute recipe's EMA scored 11% val top-1 at epoch 3 with averaged statistics, 57% with
            # the live model's, before the warm-up); without use_buffers the average takes the live buffers.
            self.ema = torch.optim.swa_utils.AveragedModel(self.model, multi_avg_fn=multi_avg, use_buffers=False)
        self.forward = torch.compile(self.model) if cfg.train.compile else self.model
        # Separate streams so that evaluation or model changes never shift the data order.
        self.shuffle_gen = torch.Generator().manual_seed(cfg.source_seed("seed_order"))
        self.aug_gen = torch.Generator(device=self.device).manual_seed(cfg.source_seed("seed_order") + 1)
        self.generators = {"shuffle": self.shuffle_gen, "augment": self.aug_gen}
        self.state = RunState(history=[])
        self.flop_budget: tuple[int, dict] | None = None  # (steps, record) of train.budget_flops, once counted

    # ------------------------------------------------------------------ persistence
    @property
    def ckpt_dir(self) -> Path:
        return self.out / CHECKPOINTS_DIR

    def save_last(self) -> None:
        save_checkpoint(self.ckpt_dir / LAST_CHECKPOINT, self.checkpoint_state())

    def checkpoint_state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": capture_rng(self.generators),
            "run_state": vars(self.state),
            "config": identity_dict(self.cfg),
            "amp": self.amp,
        }

    def save_best(self) -> None:
        save_checkpoint(self.ckpt_dir / BEST_CHECKPOINT, {
            "model": self.eval_model().state_dict(),
            "epoch": self.state.epoch,
            "monitor": self.cfg.train.monitor,
            "value": self.state.best_value,
            "config": identity_dict(self.cfg),
            "amp": self.amp,
        })

    def try_resume(self) -> bool:
        path = self.ckpt_dir / LAST_CHECKPOINT
        if not path.exists():
            return False
        ck = load_checkpoint(path, LAST_KEYS)
        if ck["config"] != identity_dict(self.cfg):
            raise UserError(f"{path}: checkpoint was written for a different config; use another --out")
        try:  # the precision the run started in, whatever this machine would choose
            self.amp = check_recorded(ck.get("amp", legacy_amp(self.cfg.train.amp, self.device)), self.cfg.train.amp)
        except ValueError as e:
            raise damaged(path, e) from None
        try:
            self.state = RunState(**ck["run_state"])
            self.plan_steps(self.state.total_steps)  # the recorded count: a resumed run never recalibrates
            self.model.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
            self.scheduler.load_state_dict(ck["scheduler"])
            self.scaler.load_state_dict(ck["scaler"])
            if self.ema is not None:
                self.ema.load_state_dict(ck["ema"])
            restore_rng(ck["rng"], self.generators)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
            raise damaged(path, e) from None
        # metrics.jsonl may hold a line of an epoch whose checkpoint never landed: the checkpoint wins.
        write_jsonl(self.out / METRICS_FILE, self.state.history)
        return True

    def plan_steps(self, recorded: int | None = None, plan: dict | None = None) -> None:
        """Fix the run's optimizer steps — recorded in a checkpoint, train.steps, epochs × steps per
        epoch, counted from train.budget_flops, or calibrated to train.budget_minutes (by the run, or once
        for all the seeds of a study: `plan`, {"steps": N, "budget": record}) — and build the
        learning-rate schedule over them."""
        t = self.cfg.train
        if recorded is not None:
            total = recorded
        elif t.steps is not None:
            total = t.steps
        elif t.budget_flops is not None:
            total, budget = self.plan_flops(t.budget_flops)
            self.state.budget = dict(budget)
        elif t.budget_minutes is not None and plan is not None:
            if "error" in plan:  # the study's calibration found no step fits the budget
                raise UserError(plan["error"])
            total, self.state.budget = int(plan["steps"]), dict(plan["budget"])
        elif t.budget_minutes is not None:
            total, self.state.budget = plan_budget(self, t.budget_minutes, t.budget_clock)
        else:
            total = t.epochs * self.steps_per_epoch
        self.state.total_steps = total
        self.epochs = -(-total // self.steps_per_epoch)  # the last epoch may be partial
        self.scheduler = make_scheduler(self.optimizer, self.cfg.sched, self.cfg.optim.lr, t.epochs,
                                        self.steps_per_epoch, total_steps=total)

    def plan_flops(self, budget_flops: float) -> tuple[int, dict]:
        """(steps, record) of a FLOP budget: the FLOPs of one training step of this run's shapes, counted
        once (a budget below one step is a UserError)."""
        if self.flop_budget is None:
            d = self.data
            per_step = run_step_flops(self.cfg.model, d.num_classes, d.in_chans, d.image_size,
                                      min(self.cfg.train.batch_size, len(d.train_y)))
            steps = steps_for_flops(budget_flops, per_step)
            self.flop_budget = steps, {"budget_flops": budget_flops, "flops_per_step": per_step}
        return self.flop_budget

    # ------------------------------------------------------------------ steps
    def autocast(self):
        return autocast(self.device, self.amp)

    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.train.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def train_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented training batch of the training-split indices `idx`: (input, target)."""
        x, target = self.augment.train_batch(self.data.train_x[idx], self.data.train_y[idx], self.aug_gen)
        return self.to_input(x), target

    def forward_loss(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast():
            logits = self.forward(x)
        return soft_cross_entropy(logits.float(), target, self.cfg.train.label_smoothing), logits

    def optimize(self, loss: torch.Tensor) -> None:
        """Backward, clip, optimizer and scheduler step, EMA update."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.train.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:  # None only while a time budget is being calibrated
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def train_epoch(self, bar: EpochProgress) -> dict:
        cfg, d = self.cfg, self.data
        self.model.train()
        bs = cfg.train.batch_size
        steps = min(self.steps_per_epoch, self.state.total_steps - self.state.epoch * self.steps_per_epoch)
        order = torch.randperm(len(d.train_y), generator=self.shuffle_gen).to(self.device)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen = 0
        data_time = 0.0
        t0, cpu0 = time.perf_counter(), time.process_time()
        for step in range(steps):
            td = time.perf_counter()
            x, target = self.train_batch(order[step * bs:(step + 1) * bs])
            data_time += time.perf_counter() - td
            loss, logits = self.forward_loss(x, target)
            if not torch.isfinite(loss):
                raise Diverged(f"non-finite loss at epoch {self.state.epoch + 1}, step {step + 1}")
            self.optimize(loss)
            # Train accuracy is measured on the augmented batch against the dominant label.
            hard = target if target.ndim == 1 else target.argmax(dim=-1)
            loss_sum += loss.detach() * len(hard)
            correct += (logits.argmax(dim=-1) == hard).sum()
            seen += len(hard)
            bar.step(loss)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        self.state.train_cpu_s += time.process_time() - cpu0
        row = {
            "train_loss": (loss_sum / seen).item(),
            "train_top1": (correct / seen).item(),
            "epoch_time_s": elapsed,
            "throughput_img_s": seen / elapsed,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        if self.device.type == "cpu":  # without a device sync this split is only meaningful on CPU
            row["data_time_frac"] = data_time / elapsed
        return row

    @torch.no_grad()
    def evaluate(self, x_all: torch.Tensor, y_all: torch.Tensor, prefix: str, confusion: bool = False):
        model = self.eval_model()
        model.eval()
        metrics = SplitMetrics(self.data.num_classes, self.device, confusion=confusion)
        bs = self.cfg.train.eval_batch_size
        for i in range(0, len(y_all), bs):
            x = self.to_input(self.augment.eval_batch(x_all[i:i + bs]))
            with self.autocast():
                logits = predict_logits(model, x, self.cfg.train.eval_hflip)
            metrics.update(logits, y_all[i:i + bs])
        return metrics.compute(prefix), (metrics.confusion_matrix() if confusion else None)

    def attention_entropy(self) -> dict:
        """val_attn_entropy_norm_l{i} per layer and their _mean, on the fixed validation batch (ENTROPY_IMAGES)."""
        x = self.to_input(self.augment.eval_batch(self.data.val_x[:ENTROPY_IMAGES]))
        with self.autocast():
            return entropy_row(mean_entropy_per_layer(self.eval_model(), x))

    # ------------------------------------------------------------------ the run
    def run(self, on_epoch: Callable[[int, dict], bool] | None) -> dict:
        cfg, st = self.cfg, self.state
        monitor = cfg.train.monitor
        bar = EpochProgress(self.epochs, self.steps_per_epoch, enabled=self.show_progress)
        status, error = RunStatus.COMPLETED, None
        with bar:
            bar.start(st.epoch)
            while st.epoch < self.epochs:
                try:
                    row = {"epoch": st.epoch + 1, **self.train_epoch(bar)}
                except Diverged as e:
                    status, error = RunStatus.DIVERGED, str(e)
                    break
                row.update(self.evaluate(self.data.val_x, self.data.val_y, "val")[0])
                row.update(self.attention_entropy())
                if cfg.train.test_every_epoch:
                    row.update(self.evaluate(self.data.test_x, self.data.test_y, "test")[0])
                st.epoch += 1
                st.train_time_s += row["epoch_time_s"]
                st.history.append(row)
                append_jsonl(self.out / METRICS_FILE, row)
                if st.improved(row[monitor], monitor):
                    st.best_epoch, st.best_value, st.epochs_since_best = st.epoch, row[monitor], 0
                    self.save_best()
                else:
                    st.epochs_since_best += 1
                self.save_last()
                bar.epoch_done(row)
                if on_epoch is not None and on_epoch(st.epoch, row):
                    status = RunStatus.PRUNED
                    break
                if cfg.train.patience and st.epochs_since_best >= cfg.train.patience:
                    bar.note(f"early stop: {monitor} did not improve for {cfg.train.patience} epochs")
                    break
        return self.finish(status, error)

    def finish(self, status: str, error: str | None) -> dict:
        st, d = self.state, self.data
        summary = self.base_summary()
        summary.update(status=RunStatus(status).value, epochs_run=st.epoch, best_epoch=st.best_epoch)
        if error:
            summary["error"] = error
        if st.best_epoch:
            best_row = st.history[st.best_epoch - 1]
            summary.update({k: best_row[k] for k in best_row if k.startswith(("train_", "val_"))})
        if status == RunStatus.COMPLETED or (status == RunStatus.DIVERGED and st.best_epoch):
            best_path = self.ckpt_dir / BEST_CHECKPOINT
            best = load_checkpoint(best_path, BEST_KEYS)
            try:
                self.eval_model().load_state_dict(best["model"])
            except (RuntimeError, TypeError, AttributeError) as e:
                raise damaged(best_path, e) from None
            test, confusion = self.evaluate(d.test_x, d.test_y, "test", confusion=True)
            summary.update(test)
            write_confusion(self.out / CONFUSION_FILE, confusion, d.classes)
        return summary

    def base_summary(self) -> dict:
        st, d = self.state, self.data
        rows = st.history
        return {
            "dataset": d.name,
            "synthetic": d.synthetic,
            "num_classes": d.num_classes,
            "image_size": self.model.input_size,
            "model": self.cfg.model.name,
            "params": self.params,
            "flops": self.flops,
            "train_time_s": st.train_time_s,  # wall clock of the training steps
            "train_cpu_s": st.train_cpu_s,  # CPU time of the process (all threads) in the same steps
            "minutes": st.train_time_s / 60,
            "throughput_img_s": (float(np.mean([r["throughput_img_s"] for r in rows])) if rows else None),
            "steps": st.total_steps,  # train.steps=<this> reproduces a budgeted run
            "steps_per_epoch": self.steps_per_epoch,
            **budget_summary(st.budget, st.total_steps),
            "device": str(self.device),
            "amp": self.amp,  # the resolved train.amp: bf16, fp16 or none (float32)
            "vitlab_version": __version__,
            "torch_version": torch.__version__,
            "environment": environment(self.device),  # what bitwise equality with another run depends on
            "data_root": data_root_hint(self.cfg.data),  # a hint for analyze/export, not part of the identity
        }


def budget_summary(budget: dict | None, steps: int | None) -> dict:
    """The summary.json fields of the budget that fixed a run's steps (none without a budget)."""
    if not budget:
        return {}
    if "budget_flops" in budget:
        return {"budget_flops": budget["budget_flops"], "train_flops_per_step": budget["flops_per_step"],
                "train_flops": budget["flops_per_step"] * steps}
    return {"budget_minutes": budget["budget_minutes"], "budget_clock": budget["clock"],
            "budget_step_s": budget["step_s"], "budget_calibration_s": budget["seconds"],
            **({"budget_calibrated_by": budget["calibrated_by"]} if "calibrated_by" in budget else {})}


class Diverged(Exception):
    """The loss became NaN or infinite."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write_confusion(path: Path, matrix: torch.Tensor, classes: list[str]) -> None:
    """Rows = true class, columns = predicted class, with class names as header and first column
    (through io.csv_text: a class name cannot be a spreadsheet formula)."""
    rows = [[name, *(int(v) for v in row)] for name, row in zip(classes, matrix.tolist())]
    atomic_write_text(path, csv_text(["true\\pred", *classes], rows))


def check_run_dir(out: Path) -> None:
    """Refuse, before anything is created, an --out that is `/` or a directory holding other things
    than a run (so `--out /` or `--out ~` never scatters run files or overwrites a config.yaml).
    Dot-files (locks, temporary files) do not count."""
    nearest_existing(out, "output directory")  # a symlink loop or an unreadable component: one line
    try:
        resolved = out.resolve()
        foreign = sorted(e.name for e in out.iterdir() if not e.name.startswith(".")
                         and e.name not in RUN_DIR_ENTRIES) if out.is_dir() else []
    except (OSError, RuntimeError) as e:  # a symlink loop, an unreadable directory
        raise UserError(f"{out}: output directory is not usable ({getattr(e, 'strerror', None) or e})") from None
    if resolved == Path(resolved.anchor):
        raise UserError(f"{out}: is the filesystem root; choose a directory for the run")
    started = (out / CONFIG_FILE).is_file() and any((out / n).exists() for n in (METRICS_FILE, SUMMARY_FILE))
    if foreign and not started:  # a run, once started, may have gained files of its user's
        raise UserError(f"{out}: not empty and not a vitlab run directory (has {foreign[0]}); choose another --out")
    writable_run_dir(out)  # a handed-over run whose checkpoints/ or tensorboard/ is a link elsewhere


def prepare_out_dir(cfg: RunConfig, out: Path, resume: bool) -> dict | None:
    """Check that `out` (already created) may hold this run. Returns the finished summary if there
    is nothing to do."""
    cfg_file = out / CONFIG_FILE
    has_results = checkpoint_path(out).exists() or (out / SUMMARY_FILE).exists()
    if cfg_file.exists() and has_results:
        try:
            previous = identity_dict(build(RunConfig, read_yaml(cfg_file)))
        except UserError:
            previous = None
        if previous != identity_dict(cfg):
            raise UserError(f"{out}: holds a run with a different config; choose another --out")
        if not resume:
            raise UserError(f"{out}: already holds this run; pass --resume to continue it or choose another --out")
        try:
            summary = read_summary(out) or {}
        except MalformedFile:  # damaged: the run resumes from its checkpoint and writes a new one
            summary = {}
        if summary.get("status") in FINAL_STATUSES:
            return summary
    return None


def run_training(cfg, out_dir, resume: bool = True, on_epoch: Callable[[int, dict], bool] | None = None,
                 progress: bool | None = None, context: dict | None = None, plan: dict | None = None) -> dict:
    """Train one run into `out_dir` and return its summary (also written to summary.json).

    resume: continue from `out_dir/checkpoints/last.pt` when present; a finished run is returned as is.
    on_epoch(epoch, row) -> True stops the run with status "pruned" (used by the Optuna search).
    context: where the run sits in a study, {study, factor, level, seed, run_id}, for the trackers
    that `cfg.track` turns on (MLflow experiment and tags, TensorBoard hparams).
    plan: the steps of a train.budget_minutes run calibrated once for every seed of its configuration
    ({"steps": N, "budget": record}, study/calibration.py) instead of by the run itself; not part of
    the run's identity, and unused when the run resumes (its checkpoint holds its steps).
    """
    cfg = config_from(cfg)
    out = Path(out_dir)
    check_run_dir(out)
    created = make_writable_dir(out, "output directory")
    try:
        done = prepare_out_dir(cfg, out, resume)
        if done is not None:
            return done
        show = cfg.train.progress if progress is None else progress
        trackers = open_trackers(cfg, out, context)  # a missing tracker extra fails here, before any write
        trainer = Trainer(cfg, out, show)  # bad input (model knobs, data files) fails here, before any write
        if cfg.train.budget_flops is not None and not (trainer.ckpt_dir / LAST_CHECKPOINT).exists():
            trainer.plan_flops(cfg.train.budget_flops)  # so does a FLOP budget below one step
    except BaseException:
        remove_empty_dirs(created)  # a run that never started leaves no empty directory behind
        raise
    summary_path = out / SUMMARY_FILE
    for d in (out, trainer.ckpt_dir):  # what a killed process was writing when it died
        remove_stale_temp_files(d)
    try:
        atomic_write_text(out / CONFIG_FILE, dump_yaml(cfg))
        resumed = bool(resume and trainer.try_resume())
        if not resumed:
            atomic_write_text(out / METRICS_FILE, "")
            trainer.plan_steps(plan=plan)
        atomic_write_json(summary_path, {**trainer.base_summary(), "status": RunStatus.RUNNING.value,
                                         "epochs_run": trainer.state.epoch})
        trackers.start(trainer.state.history, resumed)
        summary = trainer.run(_tracked(on_epoch, trackers))
        atomic_write_json(summary_path, summary)
        trackers.finish(summary)
    except UserError:
        raise
    except OSError as e:  # a full disk, a vanished mount: the last good checkpoint stays (writes are atomic)
        reason = f"cannot write {e.filename or 'a file'}: {e.strerror or e}"
        trackers.finish(_mark_failed(trainer, summary_path, reason))
        remove_empty_dirs(created)
        raise RunError(f"{out}: run failed, {reason}; what was written before is intact: make room and rerun with --resume") from e
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            mark_interrupted(out)  # resumable: the last checkpoint stays
        elif not isinstance(e, SystemExit):
            trackers.finish(_mark_failed(trainer, summary_path, f"{type(e).__name__}: {e}"))
        raise
    finally:
        trackers.close()
    return summary


def _tracked(on_epoch: Callable[[int, dict], bool] | None, trackers: Trackers):
    """on_epoch that first hands the epoch's metrics.jsonl row to the trackers (it only enqueues)."""
    if not trackers:
        return on_epoch

    def hook(epoch: int, row: dict) -> bool:
        trackers.log_epoch(row)
        return bool(on_epoch(epoch, row)) if on_epoch is not None else False

    return hook


def _mark_failed(trainer: Trainer, summary_path: Path, error: str) -> dict:
    """Best effort: summary.json says `failed` and why (on a full disk even that may not be writable).
    Returns that summary."""
    failed = {**trainer.base_summary(), "status": RunStatus.FAILED.value, "error": error, "epochs_run": trainer.state.epoch}
    try:
        atomic_write_json(summary_path, failed)
    except OSError:
        pass
    return failed


__all__ = ["run_training", "Trainer", "soft_cross_entropy", "param_groups"]
