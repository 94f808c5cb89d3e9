"""Hyperparameter search with Optuna over a spec's `space:`; resumable, several processes at once.

The coordinator asks Optuna for trials (TPE, seeded) and hands each to a worker, which trains it
into DIR/runs/<run_id> and reports the objective after every epoch to Optuna's MedianPruner
through run_training's `on_epoch` (True -> the run stops with status "pruned"). Trials live in
DIR/optuna.journal (JournalStorage on a file: safe for several processes). Rerunning the command
counts the finished trials and runs only the rest. A trial left RUNNING by a killed coordinator is
marked failed and retried as a new trial that resumes the same run directory from its checkpoint;
a trial that failed with an error is retried the same way, up to `max_retries` times.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ..schema import to_dict
from ..errors import UserError
from ..io import atomic_write_json
from ..rundir import TRIAL_FILE, MalformedFile, RunStatus, read_trial
from . import spec as specmod
from . import plan as planmod
from .levels import combo_label, level_label
from .index import IndexWriter, open_writer, read_run_state, run_dir, study_meta
from .optuna_glue import PruneHook, make_pruner, objective_value, open_storage, suggest_params
from .progress import StudyProgress
from .runner import check_options, make_pool, prepare_study_dir, study_directory
from .schedule import drive
from .worker import Task, TrainFn

JOURNAL_FILE = "optuna.journal"
# Trial user attributes written by the coordinator.
ATTR_RUN_ID = "run_id"  # the run directory of the trial (a retry keeps its original's)
ATTR_RETRY_OF = "retry_of"  # number of the trial this one retries
ATTR_ATTEMPT = "attempt"  # 1 for a fresh trial, +1 for each retry after an error
ATTR_OUTCOME = "outcome"  # completed | pruned | diverged | failed | invalid
ATTR_FINAL = "final"  # a failed trial that will not be retried (counts as finished)

__all__ = ["JOURNAL_FILE", "SearchResult", "check_space", "make_pruner", "objective_value", "open_storage",
           "run_search", "suggest_params"]


@dataclass
class SearchResult:
    study_dir: Path
    name: str
    trials: int  # requested finished trials
    counts: dict[str, int] = field(default_factory=dict)  # outcome -> trials
    best: dict | None = None  # number, value, params, run_id
    objective: str = "val_top1"

    @property
    def finished(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "retried")

    @property
    def ok(self) -> bool:
        return self.finished >= self.trials and self.best is not None

    def describe(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        lines = [f"search {self.name}: {self.finished}/{self.trials} trials finished ({counts})"]
        if self.best:
            params = ", ".join(f"{k}={level_label(v)}" for k, v in self.best["params"].items())
            lines.append(f"best: trial {self.best['number']} {self.objective}={self.best['value']:.4f} "
                         f"with {params} -> {self.study_dir / 'runs' / self.best['run_id']}")
        return "\n".join(lines)


def check_space(study: specmod.StudySpec) -> None:
    """Every end of every dimension must make a valid config and model (before anything runs)."""
    for key, p in study.space.items():
        values = p.choices if p.kind == "categorical" else [p.low, p.high]
        for v in values:
            where = f"space.{key}={level_label(v)}"
            cfg = planmod.build_run_config(study, {key: v}, None, where)
            planmod.check_model(cfg, study.source, where)


def run_search(spec: str | Path | dict | specmod.StudySpec, out_dir: str | Path, trials: int, workers: int = 1,
               profile: str | None = None, max_retries: int = 2, progress: bool = True,
               trainer: TrainFn | None = None) -> SearchResult:
    """Run (or continue) an Optuna search until `trials` trials have finished (see module doc)."""
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise UserError(f"--trials: must be an integer >= 1, got {trials!r}")
    check_options(workers, "local", max_retries)
    study_spec = specmod.load_spec(spec)
    if study_spec.kind != "search":
        raise UserError(f"{study_spec.source}: needs a space: section for `vitlab search` (use `vitlab study` for vary/grid)")
    study_spec = specmod.resolve(study_spec, profile)
    check_space(study_spec)
    with study_directory(out_dir) as out:
        prepare_study_dir(out, specmod.spec_to_dict(study_spec))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = open_storage(out / JOURNAL_FILE)
        study = optuna.create_study(study_name=study_spec.name, storage=storage, load_if_exists=True,
                                    direction=study_spec.objective.direction,
                                    sampler=optuna.samplers.TPESampler(seed=study_spec.sampler_seed),
                                    pruner=make_pruner(dataclasses.asdict(study_spec.pruner)))
        with open_writer(out) as index:
            source = OptunaSource(study_spec, study, index, out, trials, max_retries)
            source.progress = StudyProgress(study_spec.name, trials, min(source.finished, trials), workers,
                                            enabled=progress)
            drive(source, lambda: make_pool("local", workers, None, None, None, trainer), index, source.progress,
                  max_retries)
            return source.result()


class OptunaSource:
    """Trials asked from Optuna, one run directory each; retries and interrupted trials resume it.

    A retry (after an error, or of a trial a killed coordinator left RUNNING) is a new Optuna trial
    with the same parameters and `ATTR_RUN_ID`, so it resumes the same run directory; it inherits
    the reports of the epochs already done so that the pruner sees the whole curve.
    """

    def __init__(self, spec, study, index: IndexWriter, out: Path, trials: int, max_retries: int):
        self.spec, self.study, self.index, self.out = spec, study, index, out
        self.trials, self.max_retries = trials, max_retries
        self.progress: StudyProgress | None = None
        self.labels: dict[int, str] = {}  # trial number -> label, for the index meta
        self.inflight: dict[str, Any] = {}  # run_id -> optuna trial
        self._recover()
        self._meta()
        self.finished = self._count_finished()

    # ---------------------------------------------------------------- bookkeeping
    def _count_finished(self) -> int:
        n = 0
        for t in self.study.get_trials(deepcopy=False):
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
                n += 1
            elif t.state == TrialState.FAIL and (t.user_attrs.get(ATTR_FINAL)
                                                 or t.user_attrs.get(ATTR_ATTEMPT, 1) > self.max_retries):
                n += 1
        return n

    def _recover(self) -> None:
        """Fail trials a killed coordinator left RUNNING and queue retries of unfinished failures."""
        trials = self.study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get(ATTR_RETRY_OF) for t in trials}
        for t in trials:
            if t.user_attrs.get(ATTR_RUN_ID):
                origin = t.user_attrs.get(ATTR_RETRY_OF, t.number)
                self.labels[origin] = f"trial {origin}"
            if t.state == TrialState.RUNNING:
                if t.number not in retried:  # an interruption is not a failure: same attempt
                    self._enqueue_retry(t, t.user_attrs.get(ATTR_ATTEMPT, 1))
                self.study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            elif (t.state == TrialState.FAIL and not t.user_attrs.get(ATTR_FINAL) and t.number not in retried
                  and t.user_attrs.get(ATTR_ATTEMPT, 1) <= self.max_retries):
                self._enqueue_retry(t, t.user_attrs.get(ATTR_ATTEMPT, 1) + 1)

    def _enqueue_retry(self, t, attempt: int) -> None:
        if not t.params or ATTR_RUN_ID not in t.user_attrs:
            return  # it never got as far as a run directory: nothing to resume; a fresh trial replaces it
        self.study.enqueue_trial(t.params, user_attrs={ATTR_RETRY_OF: t.number, ATTR_ATTEMPT: attempt,
                                                       ATTR_RUN_ID: t.user_attrs[ATTR_RUN_ID]})

    def _meta(self) -> None:
        meta = study_meta(self.spec)
        meta["factors"] = {"search": [self.labels[n] for n in sorted(self.labels)]}
        self.index.set_meta(meta)

    # ---------------------------------------------------------------- TaskSource
    def next_task(self) -> Task | None:
        while self.finished + len(self.inflight) < self.trials:
            task = self._ask()
            if task is not None:
                return task
            self.finished += 1  # an invalid trial finishes at once
        return None

    def _ask(self) -> Task | None:
        trial = self.study.ask()
        params = suggest_params(trial, self.spec.space)
        attrs = trial.user_attrs
        if ATTR_ATTEMPT not in attrs:
            trial.set_user_attr(ATTR_ATTEMPT, 1)
        where = f"trial {trial.number} ({combo_label(params)})"
        try:
            cfg = planmod.build_run_config(self.spec, params, None, where)
            planmod.check_model(cfg, self.spec.source, where)
        except UserError as e:
            trial.set_user_attr(ATTR_OUTCOME, "invalid")
            trial.set_user_attr(ATTR_FINAL, True)
            trial.set_user_attr("error", str(e))
            self.study.tell(trial, state=_state("FAIL"))
            if self.progress is not None:
                self.progress.started(f"trial{trial.number}", where)
                self.progress.finished(f"trial{trial.number}", "failed", 0.0, detail=str(e)[:200])
            return None
        origin = attrs.get(ATTR_RETRY_OF, trial.number)
        run_id = attrs.get(ATTR_RUN_ID) or planmod.run_id_of(cfg, salt={"trial": origin})
        trial.set_user_attr(ATTR_RUN_ID, run_id)
        if ATTR_RETRY_OF in attrs:
            self._inherit_reports(trial, run_id)
        path = run_dir(self.out, run_id)
        cfg_dict = to_dict(cfg)
        atomic_write_json(path / TRIAL_FILE, {"number": origin, "params": params,
                                              "optuna_trials": [*_read_numbers(path), trial.number],
                                              "config": cfg_dict})
        label = f"trial {origin}"
        self.labels[origin] = label
        self._meta()
        self.index.add_run(run_id, "search", params, label, origin, cfg.seed, params, cfg_dict)
        self.inflight[run_id] = trial
        return Task(run_id=run_id, config=cfg_dict, run_dir=str(path),
                    label=f"{label} {combo_label(params)}",
                    context={"study": self.spec.name, "factor": "search", "level": label, "seed": cfg.seed,
                             "run_id": run_id},
                    epoch_hook=PruneHook(storage=str(self.out / JOURNAL_FILE), study_name=self.spec.name,
                                         trial_id=trial._trial_id, metric=self.spec.objective.metric,
                                         pruner=dataclasses.asdict(self.spec.pruner)))

    def _inherit_reports(self, trial, run_id: str) -> None:
        """A retry resumes its run directory, so its curve so far is the run's metrics.jsonl (every
        epoch there is checkpointed, or redone identically on resume): report it to the new trial
        so that the pruner sees the whole curve. The worker skips steps already reported."""
        metric = self.spec.objective.metric
        for row in read_run_state(run_dir(self.out, run_id))[1]:  # [] when damaged
            if row.get(metric) is not None:
                trial.report(float(row[metric]), int(row["epoch"]))

    def retry(self, task: Task) -> None:
        trial = self.inflight.pop(task.run_id)
        attempt = trial.user_attrs.get(ATTR_ATTEMPT, 1)
        summary = self.index.summary(task.run_id)
        trial.set_user_attr(ATTR_OUTCOME, "failed")
        trial.set_user_attr(ATTR_FINAL, False)
        if summary.get("error"):
            trial.set_user_attr("error", str(summary["error"])[:500])
        self.study.tell(trial, state=_state("FAIL"))
        self._enqueue_retry(self.study.get_trials(deepcopy=False)[trial.number], attempt + 1)

    def finish(self, task: Task, status: RunStatus, summary: dict) -> None:
        trial = self.inflight.pop(task.run_id)
        self.finished += 1
        if status == RunStatus.COMPLETED:
            value = objective_value(summary, read_run_state(task.run_dir)[1], self.spec.objective.metric)
            if value is not None:
                trial.set_user_attr(ATTR_OUTCOME, "completed")
                self.study.tell(trial, value)
                return
            status = RunStatus.FAILED
            summary = {**summary, "error": f"no finite {self.spec.objective.metric} in the summary"}
        if status == RunStatus.PRUNED:
            trial.set_user_attr(ATTR_OUTCOME, "pruned")
            self.study.tell(trial, state=_state("PRUNED"))
            return
        trial.set_user_attr(ATTR_OUTCOME, str(status))
        trial.set_user_attr(ATTR_FINAL, True)
        if summary.get("error"):
            trial.set_user_attr("error", str(summary["error"])[:500])
        self.study.tell(trial, state=_state("FAIL"))

    def result(self) -> SearchResult:
        res = SearchResult(study_dir=self.out, name=self.spec.name, trials=self.trials,
                           objective=self.spec.objective.metric)
        for t in self.study.get_trials(deepcopy=False):
            if t.state == TrialState.FAIL and not t.user_attrs.get(ATTR_FINAL) \
                    and t.user_attrs.get(ATTR_ATTEMPT, 1) <= self.max_retries:
                key = "retried"
            else:
                key = t.user_attrs.get(ATTR_OUTCOME) or t.state.name.lower()
            res.counts[key] = res.counts.get(key, 0) + 1
        try:
            best = self.study.best_trial
            res.best = {"number": best.user_attrs.get(ATTR_RETRY_OF, best.number), "value": best.value,
                        "params": best.params, "run_id": best.user_attrs.get(ATTR_RUN_ID)}
        except ValueError:  # no completed trial yet
            pass
        return res


def _state(name: str):
    return getattr(TrialState, name)


def _read_numbers(path: Path) -> list[int]:
    """The Optuna trial numbers a run's trial.json records ([] when missing or damaged: it is rewritten)."""
    try:
        trial = read_trial(path) or {}
    except MalformedFile:
        return []
    return [n for n in trial.get("optuna_trials", []) if isinstance(n, int) and not isinstance(n, bool)]
