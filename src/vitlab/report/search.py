"""Read a search study's Optuna journal (DIR/optuna.journal) for the report: trials, direction,
parameter importances."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna

from ..errors import UserError
from ..study.search import JOURNAL_FILE, open_storage
from .tables import TrialRow, trial_rows

MIN_TRIALS_FOR_IMPORTANCE = 5
"""Completed trials needed before parameter importances are computed (below that, a report says
so instead of drawing importances estimated from noise)."""
IMPORTANCE_EVALUATOR = "PED-ANOVA"
"""Name of the importance method, shown on the figure (optuna's PedAnovaImportanceEvaluator:
no scikit-learn needed, works from a handful of trials)."""


@dataclass
class SearchData:
    study_name: str
    maximize: bool
    rows: list[TrialRow]
    importances: dict[str, float]  # empty when not computed, see importance_note
    importance_note: str


def load_study(study_dir: str | Path, name: str | None):
    """The Optuna study in DIR/optuna.journal: the one called `name`, else the only one there."""
    path = Path(study_dir) / JOURNAL_FILE
    if not path.is_file():  # checked first: JournalFileBackend would create an empty file
        raise UserError(f"{path}: no Optuna journal; has the search started?")
    storage = open_storage(path)
    names = [s.study_name for s in storage.get_all_studies()]
    if name not in names:
        if len(names) != 1:
            raise UserError(f"{path}: no study named {name!r} (found {names})")
        name = names[0]
    return optuna.load_study(study_name=name, storage=storage)


def param_importances(study, min_trials: int = MIN_TRIALS_FOR_IMPORTANCE) -> tuple[dict[str, float], str]:
    """(importances, note): PED-ANOVA importances over the completed trials, or ({}, reason)."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE
            and t.value is not None and math.isfinite(t.value)]
    if len(done) < min_trials:
        return {}, (f"Parameter importances need at least {min_trials} completed trials; "
                    f"this search has {len(done)}.")
    params = {k for t in done for k in t.params}
    if not params:
        return {}, "The search space has no parameters."
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna warns about small samples; the note says enough
            imp = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except (RuntimeError, ValueError) as e:  # e.g. a parameter that never varied
        return {}, f"Parameter importances could not be computed: {e}".splitlines()[0]
    return {k: float(v) for k, v in imp.items()}, f"{IMPORTANCE_EVALUATOR} over {len(done)} completed trials."


def search_data(study_dir: str | Path, name: str | None) -> SearchData:
    study = load_study(study_dir, name)
    if len(study.directions) != 1:
        raise UserError(f"{study_dir}: multi-objective searches are not supported by the report")

    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    imp, note = param_importances(study)
    return SearchData(study.study_name, maximize, trial_rows(study.get_trials(deepcopy=False)), imp, note)
