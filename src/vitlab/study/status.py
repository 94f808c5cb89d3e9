"""`vitlab status DIR`: a study's progress read from its run directories (and storage), starting nothing.

What a coordinator that left (`--backend slurm --detach`, or one that was stopped) cannot show: which
runs are done, which still train (epoch reached, SLURM job and its state, log file). The study's index
is only brought up to date by a coordinator: rerunning `vitlab study` collects finished runs into it.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..errors import UserError
from ..rundir import MalformedFile, RunStatus, read_metrics, read_summary, warn_damaged
from .index import INDEX_FILE, open_index, run_dir, status_from_summary
from .slurm import SLURM_DIR, job_entries, job_state


def _job(path: Path) -> tuple[str, str, str]:
    """(job ID, its state, its log) of the run's latest SLURM job, or dashes."""
    entries = job_entries(path)
    if not entries:
        return "-", "-", "-"
    last = entries[-1]
    try:
        state = job_state(last, path.parent.parent / SLURM_DIR)
    except ImportError:  # submitit not installed here: the job is still named
        state = "?"
    return last["job_id"], state, str(last.get("stderr", "-"))


def planned_epochs(summary: dict | None, config: dict) -> int | str:
    """The epochs a run will train: from the step count its summary records once it started (a budget or
    train.steps fixes it then), else train.epochs; "?" for a budgeted run that has not started."""
    steps, per_epoch = (summary or {}).get("steps"), (summary or {}).get("steps_per_epoch")
    if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (steps, per_epoch)):
        return math.ceil(steps / per_epoch)
    train = config.get("train") or {}
    if any(train.get(k) is not None for k in ("steps", "budget_minutes", "budget_flops")):
        return "?"
    return train.get("epochs", "?")


def study_status(study_dir: str | Path) -> str:
    """Counts per status and one line per unfinished run (see the module doc)."""
    d = Path(study_dir)
    if not (d / INDEX_FILE).is_file():
        raise UserError(f"{d}: not a study directory (no {INDEX_FILE}); start it with `vitlab study SPEC --out {d}`")
    with open_index(d) as index:  # mirrors the runs from the study's storage first
        meta, records = index.meta(), index.runs()
    first = {}
    for rec in records:
        first.setdefault(rec.run_id, rec)
    counts: dict[str, int] = {}
    lines = []
    for rid, rec in first.items():
        path = run_dir(d, rid)
        try:
            summary, rows = read_summary(path), read_metrics(path)
        except MalformedFile as e:
            warn_damaged(e)
            counts[str(RunStatus.DAMAGED)] = counts.get(str(RunStatus.DAMAGED), 0) + 1
            continue
        status = status_from_summary(summary)
        if summary is not None and summary.get("status") == RunStatus.RUNNING:
            status = RunStatus.RUNNING  # or killed mid-run: the job state below tells
        counts[str(status)] = counts.get(str(status), 0) + 1
        if status.final:
            continue
        epochs = len(rows)
        total = planned_epochs(summary, rec.config)
        job, state, log = _job(path)
        label = f"{rec.factor}={rec.level_label} seed={rec.seed}"
        lines.append(f"  {rid}  {label:32s} {str(status):9s} epoch {epochs}/{total}  job {job} {state}  log {log}")
    done = sum(n for s, n in counts.items() if RunStatus(s).final)
    shown = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    head = f"study {meta.get('name', d.name)}: {len(first)} runs, {done} final ({shown})"
    if done == len(first):
        tail = "every run is final: run the `vitlab study` command again to collect them into the index"
    else:
        tail = "rerun the `vitlab study` command to attach to the jobs and collect the results as they finish"
    return "\n".join([head, *lines, tail])


__all__ = ["study_status"]
