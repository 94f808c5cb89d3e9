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

`train/` writes these files, `study/` and `report/` read them; nobody spells a name as a literal.
"""
from __future__ import annotations

import enum
from pathlib import Path

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


#: Every entry a run directory may hold besides dot-files (locks, temporary files): a directory with
#: anything else is not a run directory, and `vitlab train --out` refuses to write into it.
RUN_DIR_ENTRIES = frozenset({CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, CONFUSION_FILE, CHECKPOINTS_DIR,
                             ANALYSIS_DIR, TRIAL_FILE, TENSORBOARD_DIR, MLFLOW_RUN_FILE})


class RunStatus(str, enum.Enum):
    """Status of a run. `summary.json` holds running/interrupted/completed/diverged/failed/pruned;
    the study index adds `pending` (not started, or interrupted and waiting to resume). `interrupted`
    (Ctrl-C, or its study's coordinator stopped) is not final: the same command resumes it."""

    PENDING = "pending"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    COMPLETED = "completed"
    DIVERGED = "diverged"
    FAILED = "failed"
    PRUNED = "pruned"

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


def checkpoint_path(run_dir: str | Path, which: str = LAST_CHECKPOINT) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / which


def mark_interrupted(run_dir: str | Path) -> bool:
    """Best effort: a run whose summary.json says `running` now says `interrupted` (its process was
    stopped: Ctrl-C, or the study's coordinator went). True when it was marked."""
    from .io import atomic_write_json, read_json_object

    path = Path(run_dir) / SUMMARY_FILE
    summary = read_json_object(path)
    if not summary or summary.get("status") != RunStatus.RUNNING.value:
        return False
    try:
        atomic_write_json(path, {**summary, "status": RunStatus.INTERRUPTED.value})
    except OSError:
        return False
    return True


__all__ = ["ANALYSIS_DIR", "ANALYSIS_FILE", "BEST_CHECKPOINT", "CHECKPOINTS_DIR", "CONFIG_FILE", "CONFUSION_FILE",
           "FINAL_STATUSES", "LAST_CHECKPOINT", "LEASE_FILE", "METRICS_FILE", "MLFLOW_RUN_FILE", "ONNX_FILE",
           "RUN_DIR_ENTRIES", "RUNS_DIR", "RunStatus", "SUMMARY_FILE", "TENSORBOARD_DIR", "TRIAL_FILE",
           "checkpoint_path", "mark_interrupted"]
