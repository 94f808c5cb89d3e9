"""Export finished (or interrupted) run directories to TensorBoard or MLflow after the fact.

The same trackers as during training, fed from the files: start with the whole metrics.jsonl, then
finish with summary.json when the run has ended. Idempotent: TensorBoard's directory of a run is
rewritten, an MLflow run is found again by its `vitlab.run_id` tag and only what it lacks is added.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import UserError
from ..rundir import RunStatus
from . import mlflow as ml, tensorboard as tb, wandb as wb
from .rundata import RunData

TARGETS = ("tensorboard", "mlflow", "wandb")


@dataclass
class Export:
    """What an export did: `created` new tracker runs, `updated` existing ones (MLflow), `where`."""

    target: str
    where: str
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)

    def describe(self) -> str:
        n = len(self.created) + len(self.updated)
        if self.target == "wandb":
            return (f"exported {n} run(s) to W&B ({self.where}): {len(self.created)} new, "
                    f"{len(self.updated)} already there (brought up to date)")
        if self.target == "mlflow":
            return (f"exported {n} run(s) to MLflow at {self.where}: {len(self.created)} new, "
                    f"{len(self.updated)} already there (brought up to date)")
        return f"wrote TensorBoard event files of {n} run(s); view them with: tensorboard --logdir {self.where}"


def _ended(run: RunData) -> bool:
    status = RunStatus.parse(run.status)
    return status is not None and (status.final or status == RunStatus.FAILED)


def export_runs(runs: Iterable[RunData], to: str, uri: str | None = None, experiment: str | None = None,
                logdir_hint: str | Path | None = None) -> Export:
    """Export `runs` to `to` ("tensorboard" or "mlflow").

    tensorboard: `uri` is a log directory that gets one sub-directory per run ID; without it each run
    writes its own RUN/tensorboard/ (where live tracking writes). mlflow: `uri` is the tracking URI or
    a local path (required); `experiment` defaults to each run's study name. `logdir_hint` is the
    directory to name in the TensorBoard hint (default: `uri`)."""
    runs = list(runs)
    if to not in TARGETS:
        raise UserError(f"--to: must be one of {', '.join(TARGETS)}, got {to!r}")
    if to == "tensorboard":
        tb.check_installed()
        result = Export(to, str(uri or logdir_hint or "."))
    elif to == "wandb":
        wb.check_installed()
        mode = wb.wandb_mode()
        result = Export(to, f"project {uri or 'of each study'}, {mode}" + (
            ": upload with `wandb sync RUN/wandb/offline-run-*`" if mode == "offline" else ""))
    else:
        ml.check_installed()
        if not uri:
            raise UserError("--uri: an MLflow tracking URI or a local directory is required")
        result = Export(to, ml.tracking_uri(uri))
    for run in runs:
        info = run.info()
        if to == "tensorboard":
            tracker = tb.TensorBoardTracker(info, Path(uri) / run.run_id if uri else None, replace=True,
                                            root=uri)
        elif to == "wandb":
            tracker = wb.WandbTracker(info, uri or info.study or wb.DEFAULT_PROJECT, interrupted_exit=None)
        else:
            tracker = ml.MlflowTracker(info, uri, experiment, interrupted_status=None)
        try:
            tracker.start(run.history, resumed=True)  # what a tracker already holds of the run stays valid
            if _ended(run):
                tracker.finish(run.summary)
        finally:
            tracker.close()
        created = getattr(tracker, "created", True)
        (result.created if created else result.updated).append(run.run_id)
    return result
