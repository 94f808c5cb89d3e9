"""The metrics a run reports in summary.json: one table, the single owner of each metric's facts.

For every metric: its name, the split it is measured on, which direction is better, how it prints
(label, unit, scale from the stored value, decimals) and the range its values can take. Training
(best-checkpoint monitor), study specs (metric columns, search objectives), trackers, the terminal
summary and the report tables all read these facts from here.

The scalars an analysis adds to summary.json (attention, robustness, efficiency) are listed, with
their meaning, by `vitlab.analysis.metrics`; their split is "analysis".

A leaf module: it imports nothing from vitlab.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

RANGE_ANY = (-math.inf, math.inf)
"""Valid range of a metric with no bound (a signed quantity, a logit)."""
RANGE_NONNEGATIVE = (0.0, math.inf)
"""Valid range of losses, times, rates and counts."""
RANGE_PERCENT = (0.0, 100.0)
"""Valid range of accuracies, macro scores and ECE printed in %."""
RANGE_UNIT = (0.0, 1.0)
"""Valid range of probabilities and normalized quantities (normalized entropy, attention weights)."""

DATA_SPLITS = ("train", "val", "test")
"""The data splits a run measures its metrics on (the prefix of their names: `val_top1`, `test_loss`)."""
SPLITS = (*DATA_SPLITS, "run", "analysis")
"""What a metric is measured on: a data split, the run itself (its size, cost and length), or an analysis."""
DIRECTIONS = ("higher", "lower", "none")
"""Which values are better; "none" for counts that describe a run (epochs run, best epoch, steps)."""

PCT_DECIMALS = 2
"""Decimals of percentages (accuracies, macro scores, ECE) in rendered tables."""
LOSS_DECIMALS = 3
"""Decimals of losses and of plain numbers in rendered tables."""


@dataclass(frozen=True)
class MetricInfo:
    """One metric's facts. `scale` converts the stored value into the printed `unit` (fractions ->
    %, seconds -> minutes); `valid` is the range of printed values (intervals are cut to it)."""

    name: str
    split: str
    direction: str
    label: str
    unit: str = ""
    scale: float = 1.0
    decimals: int = LOSS_DECIMALS
    valid: tuple[float, float] = RANGE_NONNEGATIVE
    headline: bool = False
    """Shown in the terminal summary of `vitlab train` and declared to TensorBoard's HParams view."""

    def __post_init__(self):
        if self.split not in SPLITS or self.direction not in DIRECTIONS:
            raise ValueError(f"metric {self.name}: split {self.split!r} / direction {self.direction!r} unknown")

    @property
    def higher_is_better(self) -> bool:
        """True unless lower is better (a metric with no preferred direction compares as higher)."""
        return self.direction != "lower"

    def format(self, value: float) -> str:
        """`value` (stored unit) as printed: scaled, rounded, with its unit."""
        text = f"{value * self.scale:.{self.decimals}f}"
        return f"{text} {self.unit}" if self.unit else text


def _pct(name: str, split: str, label: str, direction: str = "higher", headline: bool = False) -> MetricInfo:
    return MetricInfo(name, split, direction, label, "%", 100.0, PCT_DECIMALS, RANGE_PERCENT, headline)


def _loss(name: str, split: str, label: str, headline: bool = False) -> MetricInfo:
    return MetricInfo(name, split, "lower", label, headline=headline)


_SPLIT_LABEL = {"train": "Train", "val": "Val", "test": "Test"}


def _split_metrics(split: str, headline: tuple[str, ...]) -> list[MetricInfo]:
    """The classification metrics of one split (what train/metrics.py computes on val and test)."""
    s, h = _SPLIT_LABEL[split], set(headline)
    return [
        _pct(f"{split}_top1", split, f"{s} top-1", headline="top1" in h),
        _pct(f"{split}_top5", split, f"{s} top-5", headline="top5" in h),
        _loss(f"{split}_loss", split, f"{s} loss", headline="loss" in h),
        _pct(f"{split}_precision_macro", split, f"{s} precision (macro)", headline="precision_macro" in h),
        _pct(f"{split}_recall_macro", split, f"{s} recall (macro)", headline="recall_macro" in h),
        _pct(f"{split}_f1_macro", split, f"{s} F1 (macro)", headline="f1_macro" in h),
        _pct(f"{split}_ece", split, f"{s} ECE", direction="lower", headline="ece" in h),
    ]


_ALL_TEST = ("top1", "top5", "loss", "precision_macro", "recall_macro", "f1_macro", "ece")

METRICS: dict[str, MetricInfo] = {m.name: m for m in [
    MetricInfo("epochs_run", "run", "none", "Epochs run", decimals=0, headline=True),
    MetricInfo("best_epoch", "run", "none", "Best epoch", decimals=0, headline=True),
    MetricInfo("params", "run", "lower", "Parameters", "M", 1e-6, 2, headline=True),
    MetricInfo("flops", "run", "lower", "FLOPs per image", headline=True),
    MetricInfo("train_time_s", "run", "lower", "Training time (wall clock)", "min", 1 / 60, 1, headline=True),
    MetricInfo("throughput_img_s", "run", "higher", "Training throughput", "img/s", 1.0, 0, headline=True),
    MetricInfo("steps", "run", "none", "Optimizer steps", decimals=0),
    MetricInfo("train_cpu_s", "run", "lower", "Training CPU time", "s", 1.0, 1),
    MetricInfo("train_flops", "run", "lower", "Training FLOPs"),
    _loss("train_loss", "train", "Train loss", headline=True),
    _pct("train_top1", "train", "Train top-1", headline=True),
    *_split_metrics("val", headline=("top1", "loss")),
    *_split_metrics("test", headline=_ALL_TEST),
]}
"""Every numeric field of RUN/summary.json that a study may tabulate or a search optimize, in the
order the terminal summary prints them. The train and val numbers are at the best-validation epoch."""

OBJECTIVE_METRICS = tuple(n for n, m in METRICS.items() if m.split == "val")
"""Metrics a search may optimize: validation metrics only (test metrics never select a configuration)."""
MONITOR_METRICS = ("val_top1", "val_top5", "val_loss", "val_f1_macro", "val_ece")
"""Metrics `train.monitor` may name: the validation metric that picks the best checkpoint and stops early."""
DEFAULT_COLUMNS = ("test_top1", "test_top5", "val_top1", "test_f1_macro", "test_ece", "train_loss",
                   "params", "flops", "train_time_s")
"""Columns a study tabulates when its spec gives no `metrics:`."""
HEADLINE_METRICS = tuple(n for n, m in METRICS.items() if m.headline)
"""What the terminal summary of `vitlab train` shows and TensorBoard's HParams view declares."""

if not set(MONITOR_METRICS) <= set(OBJECTIVE_METRICS) or not set(DEFAULT_COLUMNS) <= set(METRICS):
    raise AssertionError("metrics: MONITOR_METRICS / DEFAULT_COLUMNS name a metric the table lacks")


PERCENT_SUFFIXES = ("_top1", "_top5", "_macro", "_ece")
"""Endings of the names of fractions printed in %, among the scalars the table does not list."""
LOWER_SUFFIXES = ("loss", "ece")
"""Endings of the names of lower-is-better quantities, among the scalars the table does not list."""


def metric_info(name: str) -> MetricInfo:
    """The facts of the summary metric `name`: its table entry, or, for another scalar of a summary
    (an analysis's: `vitlab.analysis.metrics`), an entry read from its name's ending."""
    if name in METRICS:
        return METRICS[name]
    direction = "lower" if name.endswith(LOWER_SUFFIXES) else "higher"
    if name.endswith(PERCENT_SUFFIXES):
        return _pct(name, "analysis", name, direction)
    return MetricInfo(name, "analysis", direction, name)


def lower_is_better(name: str) -> bool:
    """True for a metric where smaller values are better (losses, ECE, costs)."""
    return metric_info(name).direction == "lower"


def optimize_direction(name: str) -> str:
    """"minimize" or "maximize": how a search optimizes the objective `name` (maximize unless lower is better)."""
    return "minimize" if lower_is_better(name) else "maximize"
