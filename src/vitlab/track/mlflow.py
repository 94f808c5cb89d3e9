"""MLflow: each vitlab run is one MLflow run, in an experiment named after its study.

The run carries the flattened config as params, tags `study`, `factor`, `level`, `seed` and
`vitlab.run_id`, per-epoch metrics at step = epoch (the metrics.jsonl names: `val_top1`, `lr`, ...),
the summary's numbers as `final/<key>` metrics, and summary.json, config.yaml, confusion_test.csv
and a confusion-matrix picture as artifacts.

A run is found again, never duplicated: first through RUN/mlflow_run.json (the MLflow run ID per
tracking URI, written when the run is created), else by searching its experiment for the tag
`vitlab.run_id`. The tag `vitlab.epochs_logged` says how far its history goes, so a resumed run or
a second export logs only the epochs that are missing.
"""
from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

from ..io import atomic_write_json, read_json_object
from ..rundir import CONFIG_FILE, CONFUSION_FILE, MLFLOW_RUN_FILE, SUMMARY_FILE
from .base import FINAL_PREFIX, RunInfo, epoch_metrics, final_metrics, param_text, require
from .images import confusion_figure, figure_png, read_confusion

#: Experiment of runs that belong to no study.
DEFAULT_EXPERIMENT = "vitlab"
RUN_ID_TAG = "vitlab.run_id"
EPOCHS_TAG = "vitlab.epochs_logged"
STATUS_TAG = "vitlab.status"
#: MLflow's per-request limits (log_batch): params and metrics+tags per call.
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
#: Longest tag value MLflow stores everywhere (an error message is cut to it).
MAX_TAG_CHARS = 5000
#: vitlab run status -> MLflow run status.
RUN_STATUS = {"completed": "FINISHED", "pruned": "FINISHED", "diverged": "FINISHED", "failed": "FAILED"}
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


def tracking_uri(value: str) -> str:
    """`track.mlflow` / `--uri` as an MLflow tracking URI. A value with a scheme (http://, file:,
    sqlite:///, databricks) is used as it is; a path is a local store: a `.db` file is SQLite, anything
    else a directory in MLflow's file store. Relative paths are resolved against the current directory."""
    value = value.strip()
    if _SCHEME.match(value) or value.startswith("databricks"):
        return value
    p = Path(value).expanduser().resolve()
    return f"sqlite:///{p}" if p.suffix == ".db" else p.as_uri()


def check_installed() -> None:
    """UserError naming the install command when MLflow is missing."""
    require("mlflow", "mlflow", "track.mlflow")


def _client(uri: str):
    check_installed()
    if uri.startswith("file:"):
        # MLflow 3 keeps its file store in maintenance mode and refuses it unless this is set; it is
        # vitlab's local store because each run is its own directory (safe for concurrent workers).
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def get_or_create_experiment(client, name: str, uri: str) -> str:
    """The ID of experiment `name`, created (or restored from deletion) when needed; safe when several
    workers of a study race to create it."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        if uri.startswith("sqlite:///"):  # keep artifacts beside the database, not in the current directory
            location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # another worker created it first
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class MlflowTracker:
    """Logs one vitlab run to MLflow at `uri` (a tracking URI or a local path, see `tracking_uri`)."""

    name = "mlflow"

    def __init__(self, info: RunInfo, uri: str, experiment: str | None = None,
                 interrupted_status: str | None = "KILLED"):
        self.info = info
        self.interrupted_status = interrupted_status  # set when closed before finish (None: left as is)
        self.uri = tracking_uri(uri)
        self.experiment = experiment or info.study or DEFAULT_EXPERIMENT
        self.client = None
        self.run_id: str | None = None
        self.logged = 0  # epochs already in the MLflow run
        self.finished = False
        self.created = False  # this start created the MLflow run (False: it continued one)

    # ------------------------------------------------------------------ finding the run
    def _remembered(self) -> str | None:
        entry = (read_json_object(self.info.run_dir / MLFLOW_RUN_FILE) or {}).get(self.uri)
        return entry.get("run_id") if isinstance(entry, dict) else None

    def _remember(self, experiment_id: str) -> None:
        path = self.info.run_dir / MLFLOW_RUN_FILE
        known = read_json_object(path) or {}
        entry = {"experiment_id": experiment_id, "run_id": self.run_id}
        if known.get(self.uri) != entry:
            known[self.uri] = entry
            atomic_write_json(path, known)

    def _find(self, experiment_id: str):
        from mlflow.exceptions import MlflowException

        rid = self._remembered()
        if rid:
            try:
                run = self.client.get_run(rid)
                if run.info.lifecycle_stage == "active" and run.data.tags.get(RUN_ID_TAG) == self.info.run_id:
                    return run
            except MlflowException:
                pass  # deleted from the store since: search, else start afresh
        found = self.client.search_runs([experiment_id], f"tags.`{RUN_ID_TAG}` = {_quote(self.info.run_id)}",
                                        max_results=1)
        return found[0] if found else None

    # ------------------------------------------------------------------ tracker protocol
    def start(self, history: list[dict], resumed: bool) -> None:
        from mlflow.entities import Param

        self.client = _client(self.uri)
        experiment_id = get_or_create_experiment(self.client, self.experiment, self.uri)
        run = self._find(experiment_id)
        if run is None:
            tags = {**self.info.tags(), "vitlab.run_dir": str(self.info.run_dir.resolve()), EPOCHS_TAG: "0"}
            run = self.client.create_run(experiment_id, run_name=self.info.display_name(), tags=tags)
            self.created = True
        elif run.info.status != "RUNNING":
            self.client.update_run(run.info.run_id, status="RUNNING")
        self.run_id = run.info.run_id
        self._remember(experiment_id)
        have = run.data.params
        params = [Param(k, param_text(v)) for k, v in self.info.params().items() if k not in have]
        for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + MAX_PARAMS_PER_BATCH])
        # A fresh start (no checkpoint) trains every epoch again: log them again too.
        self.logged = int(run.data.tags.get(EPOCHS_TAG, "0") or 0) if resumed else 0
        rows = [r for r in history if int(r.get("epoch", 0)) > self.logged]
        if rows:
            self._log_rows(rows)

    def _log_rows(self, rows: list[dict]) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, int(r["epoch"])) for r in rows for k, v in epoch_metrics(r).items()]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + MAX_METRICS_PER_BATCH])
        self.logged = max(self.logged, *(int(r["epoch"]) for r in rows))
        self.client.log_batch(self.run_id, tags=[RunTag(EPOCHS_TAG, str(self.logged))])

    def log_epoch(self, row: dict) -> None:
        if int(row["epoch"]) > self.logged:
            self._log_rows([row])

    def finish(self, summary: dict) -> None:
        from mlflow.entities import Metric, RunTag

        current = self.client.get_run(self.run_id).data.metrics
        step = int(summary.get("epochs_run") or self.logged)
        now = int(time.time() * 1000)
        metrics = [Metric(FINAL_PREFIX + k, v, now, step) for k, v in final_metrics(summary).items()
                   if current.get(FINAL_PREFIX + k) != v]  # a repeated export adds no second point
        status = str(summary.get("status", "unknown"))
        tags = [RunTag(STATUS_TAG, status)]
        if summary.get("error"):
            tags.append(RunTag("vitlab.error", str(summary["error"])[:MAX_TAG_CHARS]))
        self.client.log_batch(self.run_id, metrics=metrics, tags=tags)
        self._artifacts()
        self.client.set_terminated(self.run_id, status=RUN_STATUS.get(status, "FINISHED"))
        self.finished = True

    def _artifacts(self) -> None:
        run_dir = self.info.run_dir
        for name in (SUMMARY_FILE, CONFIG_FILE, CONFUSION_FILE):
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        confusion = read_confusion(run_dir / CONFUSION_FILE)
        if confusion is not None:
            with tempfile.TemporaryDirectory() as tmp:
                png = Path(tmp) / "confusion_test.png"
                png.write_bytes(figure_png(confusion_figure(*confusion)))
                self.client.log_artifact(self.run_id, str(png))

    def close(self) -> None:
        if self.client is not None and self.run_id is not None and not self.finished and self.interrupted_status:
            self.client.set_terminated(self.run_id, status=self.interrupted_status)  # a resume continues it
