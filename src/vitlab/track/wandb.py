"""Weights & Biases: each vitlab run is one W&B run in project `track.wandb` (PROJECT or ENTITY/PROJECT).

The run is grouped by study (`group` = study name) and tagged `factor:<key>`, `level:<label>`,
`seed:<n>` like the other trackers' tags; its config is the flattened run config plus study, factor,
level, seed and vitlab.run_id (W&B's hyperparameters). Per epoch, the metrics.jsonl numbers at step =
epoch under TensorBoard's names (`train/loss`, `val/top1`, `epoch/lr`); at the end the summary's
numbers as `final/<key>` in the run summary, the confusion matrix as an image, and summary.json,
config.yaml and confusion_test.csv as an artifact.

Offline unless an API key is set (WANDB_API_KEY, or `wandb login`): runs are written to RUN/wandb/ and
uploaded later with `wandb sync RUN/wandb/offline-run-*`. WANDB_MODE, when set, decides instead.

A resumed run continues its W&B run: its ID is kept in RUN/wandb_run.json per project, with the number
of epochs already logged, so a resume (or a second `vitlab track --to wandb`) logs only what is missing.
A run that starts over from epoch 1 (no checkpoint) gets a new W&B run.
"""
from __future__ import annotations

import netrc
import os
import uuid
from pathlib import Path

from ..io import atomic_write_json, read_json_object
from ..safepath import writable_run_dir
from ..rundir import CONFIG_FILE, CONFUSION_FILE, SUMMARY_FILE, WANDB_DIR, WANDB_RUN_FILE
from .base import FINAL_PREFIX, RunInfo, epoch_metrics, final_metrics, require
from .images import confusion_figure, figure_rgb, read_confusion
from .tensorboard import CONFUSION_TAG, scalar_tag

#: Project of `vitlab track --to wandb` without --uri when a run belongs to no study.
DEFAULT_PROJECT = "vitlab"
#: Host whose ~/.netrc entry `wandb login` writes (an API key there means online).
WANDB_HOST = "api.wandb.ai"
#: Exit code W&B records for a run that ended failed or was interrupted (0: it ended).
FAILED_EXIT = 1
#: Length of a new W&B run ID (W&B's own are 8 characters of [a-z0-9]).
RUN_ID_CHARS = 8
#: Artifact type of the run's files.
ARTIFACT_TYPE = "vitlab-run"


def check_installed() -> None:
    """UserError naming the install command when wandb is missing."""
    require("wandb", "wandb", "track.wandb")


def has_api_key() -> bool:
    """Whether W&B could log in: WANDB_API_KEY, or a `wandb login` entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str:
    """WANDB_MODE when set, else online with an API key and offline without."""
    return os.environ.get("WANDB_MODE") or ("online" if has_api_key() else "offline")


def split_project(value: str) -> tuple[str | None, str]:
    """`ENTITY/PROJECT` -> (entity, project); `PROJECT` -> (None, project)."""
    entity, _, project = value.rpartition("/")
    return entity or None, project


def run_tags(info: RunInfo) -> list[str]:
    """`factor:<key>`, `level:<label>`, `seed:<n>` (those known): W&B tags are plain strings."""
    return [f"{k}:{v}" for k, v in info.tags().items() if k in ("factor", "level", "seed")]


class WandbTracker:
    """Logs one vitlab run to W&B project `project` (PROJECT or ENTITY/PROJECT)."""

    name = "wandb"

    def __init__(self, info: RunInfo, project: str, interrupted_exit: int | None = FAILED_EXIT):
        self.info = info
        self.key = project
        self.entity, self.project = split_project(project)
        self.interrupted_exit = interrupted_exit  # exit code when closed before finish (None: left running)
        self.run = None
        self.logged = 0
        self.finished = False
        self.created = False

    # ------------------------------------------------------------------ remembering the run
    def _remembered(self) -> dict:
        entry = (read_json_object(self.info.run_dir / WANDB_RUN_FILE) or {}).get(self.key)
        return entry if isinstance(entry, dict) and isinstance(entry.get("id"), str) else {}

    def _remember(self) -> None:
        path = self.info.run_dir / WANDB_RUN_FILE
        known = read_json_object(path) or {}
        known[self.key] = {"id": self.run.id, "epochs_logged": self.logged, "mode": self.mode}
        atomic_write_json(path, known, root=self.info.run_dir)

    # ------------------------------------------------------------------ tracker protocol
    def start(self, history: list[dict], resumed: bool) -> None:
        check_installed()
        import wandb

        known = self._remembered() if resumed else {}  # a fresh start trains every epoch again: a new run
        run_id = known.get("id") or uuid.uuid4().hex[:RUN_ID_CHARS]
        self.created = not known
        self.logged = int(known.get("epochs_logged") or 0)
        self.mode = wandb_mode()
        config = {**{k: v for k, v in self.info.params().items()},
                  **{k: v for k, v in self.info.tags().items() if k != "seed"}, "seed": self.info.seed}
        writable_run_dir(self.info.run_dir)  # never write through a planted link (RUN/wandb, wandb_run.json)
        self.info.run_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.project, entity=self.entity, id=run_id, resume="allow", name=self.info.display_name(),
            group=self.info.study, tags=run_tags(self.info), config=config, dir=str(self.info.run_dir),
            mode=self.mode, reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_machine_info=True,
                                    save_code=False))
        self._remember()
        rows = [r for r in history if int(r.get("epoch", 0)) > self.logged]
        for row in rows:
            self._log(row)
        if rows:
            self._remember()

    def _log(self, row: dict) -> None:
        step = int(row["epoch"])
        self.run.log({scalar_tag(k): v for k, v in epoch_metrics(row).items()}, step=step)
        self.logged = max(self.logged, step)

    def log_epoch(self, row: dict) -> None:
        if int(row["epoch"]) > self.logged:
            self._log(row)
            self._remember()

    def finish(self, summary: dict) -> None:
        import wandb

        self.run.summary.update({FINAL_PREFIX + k: v for k, v in final_metrics(summary).items()})
        self.run.summary["status"] = str(summary.get("status", "unknown"))
        if summary.get("error"):
            self.run.summary["error"] = str(summary["error"])
        run_dir = self.info.run_dir
        confusion = read_confusion(run_dir / CONFUSION_FILE)
        if confusion is not None:
            self.run.log({CONFUSION_TAG: wandb.Image(figure_rgb(confusion_figure(*confusion)))},
                         step=max(self.logged, int(summary.get("epochs_run") or 0)))
        files = [run_dir / n for n in (SUMMARY_FILE, CONFIG_FILE, CONFUSION_FILE) if (run_dir / n).is_file()]
        if files:
            artifact = wandb.Artifact(f"run-{self.info.run_id}", type=ARTIFACT_TYPE)
            for f in files:
                artifact.add_file(str(f), name=f.name)
            self.run.log_artifact(artifact)
        ok = str(summary.get("status")) in ("completed", "pruned", "diverged")
        self.run.finish(exit_code=0 if ok else FAILED_EXIT)
        self.finished = True

    def close(self) -> None:
        if self.run is not None and not self.finished:
            if self.interrupted_exit is not None:
                self.run.finish(exit_code=self.interrupted_exit)  # a resume continues the same W&B run
            else:
                self.run.finish()
        self.run = None


def offline_runs(run_dir: str | Path) -> list[Path]:
    """The offline W&B run directories of a run (what `wandb sync` uploads), oldest first."""
    return sorted((Path(run_dir) / WANDB_DIR).glob("offline-run-*"))


__all__ = ["WANDB_DIR", "WandbTracker", "check_installed", "offline_runs", "wandb_mode"]
