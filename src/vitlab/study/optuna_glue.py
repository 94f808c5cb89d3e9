"""Optuna glue, a leaf module: storage, pruner, parameter suggestion and the pruning hook.

Nothing else in the study engine imports Optuna; the worker only sees a `PruneHook`, an
`EpochHook` that it opens in its own process.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.storages.journal import JournalFileBackend


def open_storage(path: str | Path):
    """Optuna's JournalStorage on a file: safe for several processes."""
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def make_pruner(cfg: dict):
    if cfg.get("name", "median") == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=cfg.get("startup_trials", 5),
                                       n_warmup_steps=cfg.get("warmup_epochs", 1))


def suggest_params(trial, space: dict) -> dict[str, Any]:
    """Ask the trial for a value of every dimension of a spec's `space` (SearchParam values)."""
    params = {}
    for key, p in space.items():
        if p.kind == "categorical":
            params[key] = trial.suggest_categorical(key, p.choices)
        elif p.kind == "int":
            params[key] = trial.suggest_int(key, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            params[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
    return params


def objective_value(summary: dict, epochs: list[dict], metric: str) -> float | None:
    """The trial's objective: the summary's value (at the best epoch), else the best epoch's row."""
    v = summary.get(metric)
    if v is None:
        best = summary.get("best_epoch")
        rows = [r for r in epochs if r.get("epoch") == best and r.get(metric) is not None]
        v = rows[0][metric] if rows else None
    if v is None or not math.isfinite(float(v)):
        return None
    return float(v)


@dataclass
class PruneHook:
    """A search trial's epoch hook: report the objective to Optuna, ask its pruner whether to stop."""

    storage: str
    study_name: str
    trial_id: int
    metric: str
    pruner: dict

    def open(self) -> Callable[[int, dict], bool]:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=self.study_name, storage=open_storage(self.storage),
                                  pruner=make_pruner(self.pruner))
        trial = optuna.trial.Trial(study, self.trial_id)
        metric = self.metric
        reported = set(study._storage.get_trial(self.trial_id).intermediate_values)  # a retry's inherited curve

        def hook(epoch: int, row: dict) -> bool:
            value = row.get(metric)
            if value is None:
                return False
            if int(epoch) not in reported:
                trial.report(float(value), int(epoch))
            return bool(trial.should_prune())

        return hook
