"""Task sources of a study (`vary:` / `grid:`): a fixed set of runs, or adaptive seeding.

`GridSource` queues every run of an expanded study that is not final yet (pending ones resume).
`AdaptiveSource` starts from the spec's `min` seeds and adds seeds one at a time to the levels of a
declared comparison (`compare:`, default each level vs the reference) that is still undecided
(`vitlab.stats.seeding_decision`: the report's paired t / TOST rule), up to `max`. Its decisions depend only on the results of the seeds a level already has, so a killed and
rerun study replays them from the run directories and ends with the same seeds and tables.
"""
from __future__ import annotations

import math
from collections import deque
from pathlib import Path
from typing import Any

from .. import stats
from ..analysis import missing_sections
from ..metrics import metric_info
from ..rundir import FINAL_STATUSES, MalformedFile, RunStatus, warn_damaged
from . import compare
from . import spec as specmod
from . import plan as planmod
from .levels import combo_label, level_label, value_key
from .calibration import StudyCalibration
from .index import IndexWriter, run_dir
from .schedule import reconcile
from .worker import Task


def unique_runs(study: specmod.StudySpec, runs: list[planmod.RunSpec]) -> list[planmod.RunSpec]:
    """Each run once (a level shared by factors is trained once), seed-major so that early results
    cover every level."""
    factor_order = {f: i for i, f in enumerate(planmod.factor_labels(study))}
    first: dict[str, planmod.RunSpec] = {}
    for r in runs:
        first.setdefault(r.run_id, r)
    seed_order = {s: i for i, s in enumerate(study.seed_list)}
    return sorted(first.values(), key=lambda r: (seed_order.get(r.seed, r.seed), factor_order[r.factor], r.level_order))


def run_label(r: planmod.RunSpec) -> str:
    return f"{r.factor}={r.level_label} seed={r.seed}" if r.factor != "grid" else f"[{r.level_label}] seed={r.seed}"


class GridSource:
    """The runs of an expanded study: those not yet final are queued (pending ones resume)."""

    #: Where the runs live when not in their run directories (a storage URL or path, runsync.py); the
    #: runner sets it, and mirrors the runs from it before a source reconciles them.
    storage: str | None = None
    #: The study's time calibrations (calibration.py), set by the runner: what a time-budgeted run trains.
    calibration: StudyCalibration | None = None

    def __init__(self, study: specmod.StudySpec, runs: list[planmod.RunSpec], out: Path, index: IndexWriter,
                 max_retries: int, retrain_damaged: bool = False):
        self.study, self.out, self.index, self.max_retries = study, out, index, max_retries
        #: Train the runs whose files are malformed again (resuming from their checkpoint) instead of
        #: reporting and skipping them (`vitlab study --retrain-damaged`).
        self.retrain_damaged = retrain_damaged
        self.damaged: set[str] = set()  # run IDs re-trained because they were damaged
        self.queue: deque[planmod.RunSpec] = deque()
        self.by_id: dict[str, planmod.RunSpec] = {}
        self.trained: list[str] = []  # run IDs started (trained or resumed) in this session
        self.done = 0
        self.progress = None  # the runner's StudyProgress (an adaptive study's total grows)
        for r in runs:
            self.add(r)

    def add(self, r: planmod.RunSpec) -> RunStatus:
        """Index a run (under its factor), reconcile it with its directory, queue it unless final."""
        self.index.add_run(r.run_id, r.factor, r.level, r.level_label, r.level_order, r.seed, r.varied,
                           r.config_dict())
        if r.run_id in self.by_id:
            return RunStatus(self.index.status(r.run_id)[0])
        self.by_id[r.run_id] = r
        status = reconcile(self.index, r.run_id, run_dir(self.out, r.run_id))
        if status == RunStatus.COMPLETED and self.study.analysis:
            try:
                if missing_sections(run_dir(self.out, r.run_id), self.study.analysis):
                    status = RunStatus.PENDING  # trained, not yet analyzed: the worker resumes with the analysis
                    self.index.set_status(r.run_id, status)
            except MalformedFile as e:
                warn_damaged(e)
                status = RunStatus.DAMAGED
                self.index.set_status(r.run_id, status, summary={"status": str(status), "error": str(e)[:1000]})
        if status == RunStatus.DAMAGED and self.retrain_damaged:
            self.damaged.add(r.run_id)
            status = RunStatus.PENDING
            self.index.set_status(r.run_id, status, summary={})
        attempts = self.index.status(r.run_id)[1]
        if status == RunStatus.PENDING or (status == RunStatus.FAILED and attempts <= self.max_retries):
            self.queue.append(r)
        elif status in FINAL_STATUSES:
            self.done += 1
        return status

    @property
    def total(self) -> int:
        return len(self.by_id)

    @property
    def run_ids(self) -> list[str]:
        return list(self.by_id)

    def next_task(self) -> Task | None:
        if not self.queue:
            return None
        r = self.queue.popleft()
        self.trained.append(r.run_id)
        # A damaged run's analysis.json may be what is damaged: its analysis starts afresh (force).
        repair = r.run_id in self.damaged
        options = dict(self.study.analysis_options, **({"force": True} if repair else {}))
        plan = self.calibration.plan(r.config) if self.calibration is not None else None
        return Task(run_id=r.run_id, config=r.config_dict(), run_dir=str(run_dir(self.out, r.run_id)), plan=plan,
                    label=run_label(r), storage=self.storage, analysis=list(self.study.analysis),
                    analysis_options=options, repair=repair, context={"study": self.study.name, "factor": r.factor,
                                                 "level": r.level_label, "seed": r.seed, "run_id": r.run_id})

    def retry(self, task: Task) -> None:
        self.queue.append(self.by_id[task.run_id])

    def finish(self, task: Task, status: RunStatus, summary: dict) -> None:
        pass


class AdaptiveSource(GridSource):
    """Adaptive seeding over a `vary:` or `grid:` study (see the module doc).

    Each declared comparison (study/compare.py; default: each level vs its factor's reference) has n
    seeds: when every level it involves has a final result at every seed < n, its paired differences
    (a trend's per-seed slopes) on `adaptive.metric` are decided by `stats.seeding_decision` at
    alpha / (its family's size), with the spec's equivalence_margin when that metric is the primary
    one; undecided and n < max -> seed n is added to each level it involves. A level stops when every
    comparison it is part of has. The state of every level (seeds, why it stopped) goes into the
    index meta under "adaptive".
    """

    def __init__(self, study: specmod.StudySpec, runs: list[planmod.RunSpec], out: Path, index: IndexWriter,
                 max_retries: int, meta: dict, retrain_damaged: bool = False):
        self.adaptive = study.adaptive
        self.meta = meta
        super().__init__(study, runs, out, index, max_retries, retrain_damaged)
        self.refs = planmod.reference_labels(study)
        self.level_of: dict[tuple[str, str], Any] = {}  # (factor, label) -> level value
        for factor, levels in planmod.factor_levels(study):
            for lv, _ in levels:
                self.level_of[(factor, _label(factor, lv))] = lv
        self.family = compare.declared(study)
        self.declared = set(study.compare)
        self.n: dict[tuple[str, int], int] = {(f, i): self.adaptive.min for f, cs in self.family.items()
                                              for i in range(len(cs))}
        self.stopped: dict[tuple[str, int], str] = {}
        self.runs_of: dict[tuple[str, str, int], planmod.RunSpec] = {}
        for r in runs:
            self.runs_of[(r.factor, value_key(r.level), r.seed)] = r
        self.percent = metric_info(self.adaptive.metric).unit == "%"
        primary = study.metrics[0] if study.metrics else None
        self.margin = study.equivalence_margin if self.adaptive.metric == primary else None
        self.advance()

    def run_at(self, factor: str, level: Any, seed: int) -> planmod.RunSpec:
        key = (factor, value_key(level), seed)
        if key not in self.runs_of:
            (run,) = planmod.runs_for_level(self.study, factor, level, [seed])
            self.runs_of[key] = run
            self.add(run)
        return self.runs_of[key]

    def value(self, r: planmod.RunSpec) -> float | None:
        """The run's metric when it completed; None while it is not final; nan when it ended otherwise."""
        status = self.index.status(r.run_id)
        if status is None or not RunStatus(status[0]).final and not self._failed_for_good(r.run_id):
            return None
        v = self.index.summary(r.run_id).get(self.adaptive.metric)
        if status[0] != RunStatus.COMPLETED or not isinstance(v, (int, float)) or not math.isfinite(v):
            return math.nan
        return float(v) * (100.0 if self.percent else 1.0)

    def _failed_for_good(self, run_id: str) -> bool:
        status, attempts = self.index.status(run_id)
        return status == RunStatus.FAILED and attempts > self.max_retries

    def _values(self, factor: str, c: compare.Comparison, n: int) -> dict[str, dict[int, float]] | None:
        """{label: {seed: value}} of the comparison's levels at seeds < n; None while one is not final."""
        out: dict[str, dict[int, float]] = {}
        for lab in c.members:
            vals = {s: self.value(self.run_at(factor, self.level_of[(factor, lab)], s)) for s in range(n)}
            if any(v is None for v in vals.values()):
                return None
            out[lab] = {s: v for s, v in vals.items() if math.isfinite(v)}
        return out

    def advance(self) -> None:
        """Decide every comparison whose current seeds are all final; add a seed where undecided (to a fixpoint)."""
        changed = True
        while changed:
            changed = False
            for factor, cs in self.family.items():
                for i, c in enumerate(cs):
                    key = (factor, i)
                    if key in self.stopped:
                        continue
                    n = self.n[key]
                    values = self._values(factor, c, n)
                    if values is None:
                        continue  # still running
                    diffs = compare.differences(values, c)
                    if len(diffs) >= 2:
                        decided, reason = stats.seeding_decision(
                            diffs, self.adaptive.target_delta, n_comparisons=len(cs),
                            margin=self.margin if c.kind == compare.PAIR else None)  # a trend: no margin
                    else:
                        decided, reason = False, f"{len(diffs)} paired result(s)"
                    if decided:
                        self.stopped[key] = f"stopped at n = {n}: {reason}"
                    elif n >= self.adaptive.max:
                        self.stopped[key] = f"reached max = {n} seeds, still undecided: {reason}"
                    else:
                        self.n[key] = n + 1
                        for lab in c.members:
                            self.run_at(factor, self.level_of[(factor, lab)], n)
                        changed = True
        self._write_meta()
        if self.progress is not None:
            self.progress.total = self.total

    def _write_meta(self) -> None:
        state: dict[str, dict] = {}
        for (factor, label) in self.level_of:
            mine = [i for i, c in enumerate(self.family.get(factor, [])) if c.involves(label)]
            seeds = max([self.n[(factor, i)] for i in mine] or [self.adaptive.min])
            if label == self.refs.get(factor) and factor not in self.declared:
                stopped = "reference"
            elif not mine:
                stopped = "in no declared comparison"
            elif any((factor, i) not in self.stopped for i in mine):
                stopped = "running"
            elif len(mine) == 1:
                stopped = self.stopped[(factor, mine[0])]
            else:
                stopped = "; ".join(f"{self.family[factor][i].label}: {self.stopped[(factor, i)]}" for i in mine)
            state.setdefault(factor, {})[label] = {"seeds": seeds, "stopped": stopped}
        self.meta["adaptive"] = state
        self.meta["adaptive_settings"] = {"min": self.adaptive.min, "max": self.adaptive.max,
                                          "target_delta": self.adaptive.target_delta,
                                          "metric": self.adaptive.metric, "equivalence_margin": self.margin}
        self.index.set_meta(self.meta)

    def finish(self, task: Task, status: RunStatus, summary: dict) -> None:
        self.advance()


def _label(factor: str, level: Any) -> str:
    return combo_label(level) if factor == "grid" else level_label(level)
