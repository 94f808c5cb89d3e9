"""Experiment tracking: TensorBoard and MLflow, live during training and as a backfill afterwards.

    track.tensorboard: true          RUN/tensorboard/ event files   (pip install 'vitlab[tensorboard]')
    track.mlflow: mlruns             an MLflow run per vitlab run    (pip install 'vitlab[mlflow]')
    track.wandb: ENTITY/PROJECT      a W&B run per vitlab run        (pip install 'vitlab[wandb]')

The trainer calls `open_trackers(cfg, run_dir, context)` before it trains (a missing extra is a
UserError then) and the returned `Trackers` at start, per epoch and at the end; a tracker that fails
is a warning and the run goes on. `backfill` exports finished run directories the same way.
"""
from __future__ import annotations

from pathlib import Path

from ..config import RunConfig
from ..identity import config_hash, identity_dict
from ..errors import UserError
from . import mlflow as ml, tensorboard as tb, wandb as wb
from .base import CONTEXT_KEYS, RunInfo, Tracker, Trackers, TrackerWarning


def run_info(cfg: RunConfig, run_dir: str | Path, context: dict | None = None) -> RunInfo:
    """The RunInfo of a run about to train. Its vitlab run ID is `context['run_id']` (a study's run
    directory name), else the config hash, as `vitlab study` would name it."""
    context = dict(context or {})
    unknown = sorted(set(context) - set(CONTEXT_KEYS))
    if unknown:
        raise UserError(f"context: unknown key {unknown[0]!r} (known: {', '.join(CONTEXT_KEYS)})")
    context = {k: v for k, v in context.items() if v is not None}
    run_id = str(context.get("run_id") or config_hash(cfg))
    return RunInfo(run_dir=Path(run_dir), run_id=run_id, config=identity_dict(cfg), context=context)


def open_trackers(cfg: RunConfig, run_dir: str | Path, context: dict | None = None) -> Trackers:
    """The trackers that `cfg.track` turns on for the run in `run_dir` (none: an empty, falsy Trackers).

    Raises UserError, naming the pip command, when a tracker's extra is not installed."""
    if not (cfg.track.tensorboard or cfg.track.mlflow or cfg.track.wandb):
        return Trackers([])
    info = run_info(cfg, run_dir, context)
    trackers: list[Tracker] = []
    if cfg.track.tensorboard:
        tb.check_installed()
        trackers.append(tb.TensorBoardTracker(info))
    if cfg.track.mlflow:
        ml.check_installed()
        trackers.append(ml.MlflowTracker(info, cfg.track.mlflow))
    if cfg.track.wandb:
        wb.check_installed()
        trackers.append(wb.WandbTracker(info, cfg.track.wandb))
    return Trackers(trackers)


__all__ = ["CONTEXT_KEYS", "RunInfo", "Tracker", "TrackerWarning", "Trackers", "open_trackers", "run_info"]
