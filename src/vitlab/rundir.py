"""The run directory: the one owner of its file names and of run statuses.

A run directory is the source of truth for one training run (the study index is a cache of it):

    RUN/config.yaml          the resolved config
    RUN/metrics.jsonl        one flushed line per epoch
    RUN/summary.json         status and final metrics
    RUN/confusion_test.csv   confusion matrix of the final test evaluation
    RUN/checkpoints/last.pt  everything needed to resume exactly
    RUN/checkpoints/best.pt  the weights of the best validation epoch
    RUN/analysis/            `vitlab analyze` output: analysis.json, figures, model.onnx (`vitlab export`),
                             report.html (`vitlab report RUN`)
    RUN/tensorboard/         TensorBoard event files (track.tensorboard)
    RUN/mlflow_run.json      the MLflow run this run logs to, so a resumed run continues it (track.mlflow)
    RUN/wandb/               W&B's files of the run (offline runs: `wandb sync RUN/wandb/offline-run-*`)
    RUN/wandb_run.json       the W&B run this run logs to, so a resumed run continues it (track.wandb)
    RUN/slurm_job.json       the SLURM jobs that trained it and their log files (--backend slurm)

`train/` writes these files, `study/` and `report/` read them; nobody spells a name as a literal.
Every run file read back goes through the typed readers below (`read_summary`, `read_metrics`,
`read_analysis_file`, `read_trial`): bounded (jsonread.py) and checked for the shape their writer gives
them. A file that is not is a `MalformedFile`; callers print `warn_damaged` (one line naming the file)
and report the run as `damaged` instead of reading on.
"""
from __future__ import annotations

import enum
import re
import sys
from pathlib import Path

from .jsonread import MalformedFile, describe_value, read_json_file, read_json_lines

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFUSION_FILE = "confusion_test.csv"
CHECKPOINTS_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
ANALYSIS_DIR = "analysis"
ANALYSIS_FILE = "analysis.json"  # inside ANALYSIS_DIR
ONNX_FILE = "model.onnx"  # inside ANALYSIS_DIR
TRIAL_FILE = "trial.json"  # search runs: {"number": N, "params": {...}}
LEASE_FILE = ".lease"  # in storage only: which worker trains the run now (study/lease.py)
RUNS_DIR = "runs"  # a study keeps its run directories in STUDY/runs/<run_id>
TENSORBOARD_DIR = "tensorboard"
MLFLOW_RUN_FILE = "mlflow_run.json"  # {"tracking_uri": ..., "experiment_id": ..., "run_id": ...}
WANDB_DIR = "wandb"  # W&B's own files of the run (offline runs for `wandb sync`, logs)
WANDB_RUN_FILE = "wandb_run.json"  # {"<entity>/<project>": {"id": ..., "dir": ...}}
SLURM_JOB_FILE = "slurm_job.json"  # {"jobs": [{"job_id", "executor", "stdout", "stderr", "submitted"}]}


#: Every entry a run directory may hold besides dot-files (locks, temporary files): a directory with
#: anything else is not a run directory, and `vitlab train --out` refuses to write into it.
RUN_DIR_ENTRIES = frozenset({CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, CONFUSION_FILE, CHECKPOINTS_DIR,
                             ANALYSIS_DIR, TRIAL_FILE, TENSORBOARD_DIR, MLFLOW_RUN_FILE,
                             WANDB_DIR, WANDB_RUN_FILE, SLURM_JOB_FILE})


class RunStatus(str, enum.Enum):
    """Status of a run. `summary.json` holds running/interrupted/completed/diverged/failed/pruned;
    the study index adds `pending` (not started, or interrupted and waiting to resume) and `damaged` (a run
    file is malformed: reported and skipped, re-trained only with `vitlab study --retrain-damaged`).
    `interrupted` (Ctrl-C, or its study's coordinator stopped) is not final: the same command resumes it."""

    PENDING = "pending"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    COMPLETED = "completed"
    DIVERGED = "diverged"
    FAILED = "failed"
    PRUNED = "pruned"
    DAMAGED = "damaged"  # index only: a run file is malformed; skipped until `--retrain-damaged`

    def __str__(self) -> str:  # f-strings and str() give the plain value
        return self.value

    @property
    def final(self) -> bool:
        """A run in a final status is never trained again (a failed one may be retried)."""
        return self in FINAL_STATUSES

    @classmethod
    def parse(cls, value: object) -> "RunStatus | None":
        try:
            return cls(value)
        except ValueError:
            return None


FINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.DIVERGED, RunStatus.PRUNED})


#: Caps on the files read back (each far above what its writer produces).
MAX_SUMMARY_BYTES = 4 * 2 ** 20
"""summary.json: ~100 flat scalars, a few kB."""
MAX_METRICS_BYTES = 64 * 2 ** 20
"""metrics.jsonl: one ~2 kB line per epoch."""
MAX_METRICS_LINES = 100_000
"""metrics.jsonl: lines (epochs) read at most."""
MAX_ANALYSIS_BYTES = 64 * 2 ** 20
"""analysis/analysis.json and the attention-maps file (a few hundred kB)."""
MAX_TRIAL_BYTES = 16 * 2 ** 20
"""trial.json (a search's trials so far, a few kB each)."""
METRIC_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,100}\Z")
"""A key of summary.json or a metrics.jsonl line: a metric name as trackers and reports accept it
(no markup, no spaces, no control characters)."""
SCALAR_TYPES = (str, int, float, bool, type(None))
"""The values a summary or metrics line holds (both are flat) ..."""
SUMMARY_RECORDS = frozenset({"environment"})
"""... except these summary keys, each one flat record of scalars (what decides bitwise equality:
train/environment.py)."""


def is_run_dir(path: str | Path) -> bool:
    """Whether `path` holds a run (its config.yaml)."""
    return (Path(path) / CONFIG_FILE).is_file()


def check_flat(record: dict, source: str | Path) -> dict:
    """`record` when its keys are metric names and its values scalars; MalformedFile otherwise."""
    for key, value in record.items():
        if not METRIC_KEY.match(key):
            raise MalformedFile(source, f"key {describe_value(key)} is not a metric name")
        if not isinstance(value, SCALAR_TYPES):
            raise MalformedFile(source, f"{key}: {type(value).__name__} where a number or a string belongs")
    return record


def _typed(record: dict, source: str | Path, key: str, types: tuple, minimum: int | None = None) -> None:
    value = record.get(key)
    if key in record and (not isinstance(value, types) or isinstance(value, bool) and bool not in types
                          or minimum is not None and isinstance(value, int) and value < minimum):
        raise MalformedFile(source, f"{key}: {describe_value(value)} is not what this field holds")


def check_summary(summary: dict, source: str | Path) -> dict:
    """A summary (file or index row) with a known status, integer epoch counts and flat scalar values
    (SUMMARY_RECORDS: one level of them)."""
    check_flat({k: v for k, v in summary.items() if k not in SUMMARY_RECORDS}, source)
    for key in SUMMARY_RECORDS & summary.keys():
        if not isinstance(summary[key], dict):
            raise MalformedFile(source, f"{key}: {describe_value(summary[key])} is not a record")
        check_flat(summary[key], f"{source}: {key}")
    if "status" in summary and RunStatus.parse(summary["status"]) is None:
        raise MalformedFile(source, f"status: {describe_value(summary['status'])} is not a run status")
    for key in ("epochs_run", "best_epoch"):
        _typed(summary, source, key, (int, type(None)), minimum=0)
    for key, value in summary.items():  # a metric is a number: a string there is damage
        if key.startswith(("train_", "val_", "test_")) and not isinstance(value, (int, float, type(None))):
            raise MalformedFile(source, f"{key}: {describe_value(value)} is not a number")
    return summary


def check_metrics_row(row: dict, source: str | Path) -> dict:
    """A metrics.jsonl line: flat scalars with a positive integer `epoch`."""
    check_flat(row, source)
    epoch = row.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        raise MalformedFile(source, f"epoch: {describe_value(epoch)} is not an epoch number")
    for key, value in row.items():
        if key != "epoch" and isinstance(value, str):
            raise MalformedFile(source, f"epoch {epoch}: {key}: {describe_value(value)} is not a number")
    return row


def read_summary(run_dir: str | Path) -> dict | None:
    """RUN/summary.json, or None when the run never wrote one; MalformedFile when it is damaged."""
    path = Path(run_dir) / SUMMARY_FILE
    summary = read_json_file(path, MAX_SUMMARY_BYTES)
    return None if summary is None else check_summary(summary, path)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """RUN/metrics.jsonl, one row per epoch ([] when missing); MalformedFile when it is damaged."""
    path = Path(run_dir) / METRICS_FILE
    return [check_metrics_row(r, path) for r in read_json_lines(path, MAX_METRICS_BYTES, MAX_METRICS_LINES)]


def read_analysis_file(run_dir: str | Path) -> dict | None:
    """RUN/analysis/analysis.json as JSON (None when missing); the analysis module checks its sections.
    NaN is accepted there: an analysis records an undefined statistic (an empty bin) as NaN."""
    return read_json_file(Path(run_dir) / ANALYSIS_DIR / ANALYSIS_FILE, MAX_ANALYSIS_BYTES, allow_nan=True)


def read_trial(run_dir: str | Path) -> dict | None:
    """RUN/trial.json of a search trial: {"number": N >= 0, "params": {...}, ...}; None when missing."""
    path = Path(run_dir) / TRIAL_FILE
    trial = read_json_file(path, MAX_TRIAL_BYTES)
    if trial is None:
        return None
    _typed(trial, path, "number", (int,), minimum=0)
    if not isinstance(trial.get("number"), int) or not isinstance(trial.get("params"), dict):
        raise MalformedFile(path, "needs an integer number and a params object")
    for key in ("config",):
        if key in trial and not isinstance(trial[key], dict):
            raise MalformedFile(path, f"{key}: {describe_value(trial[key])} is not an object")
    if "optuna_trials" in trial and not isinstance(trial["optuna_trials"], list):
        raise MalformedFile(path, "optuna_trials: not a list")
    return trial


def warn_damaged(e: Exception | str, consequence: str = "the run is reported as damaged and skipped") -> None:
    """The one-line warning for a malformed run file (stderr; errors.warn's form, kept here so that rundir
    imports nothing but jsonread)."""
    print(f"warning: {e}; {consequence}", file=sys.stderr)


def checkpoint_path(run_dir: str | Path, which: str = LAST_CHECKPOINT) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / which


__all__ = ["MAX_ANALYSIS_BYTES", "MAX_METRICS_BYTES", "MAX_METRICS_LINES", "MAX_SUMMARY_BYTES", "MAX_TRIAL_BYTES",
           "METRIC_KEY", "MalformedFile", "check_flat", "check_metrics_row", "check_summary", "is_run_dir",
           "read_analysis_file", "read_metrics", "read_summary", "read_trial", "warn_damaged", "ANALYSIS_DIR", "ANALYSIS_FILE", "BEST_CHECKPOINT", "CHECKPOINTS_DIR", "CONFIG_FILE", "CONFUSION_FILE",
           "FINAL_STATUSES", "LAST_CHECKPOINT", "LEASE_FILE", "METRICS_FILE", "MLFLOW_RUN_FILE", "ONNX_FILE",
           "RUN_DIR_ENTRIES", "RUNS_DIR", "RunStatus", "SLURM_JOB_FILE", "SUMMARY_FILE", "TENSORBOARD_DIR", "TRIAL_FILE",
           "WANDB_DIR", "WANDB_RUN_FILE",
           "checkpoint_path"]
