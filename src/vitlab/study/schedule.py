"""The one scheduling loop: a source of tasks, a pool of workers, the index, the progress display.

Every study command (a grid of runs, adaptive seeding, an Optuna search) is a `TaskSource` driven
by `drive()`. The loop owns what they have in common, written once:

- start tasks while the pool has room and the source has one ready;
- forward per-epoch rows to the index and the progress display;
- record each outcome in the index from the run directory (the source of truth), mirrored from the
  study's storage first when the runs live elsewhere (`StudyStore.fetch`);
- the retry rule: a run that *failed* (not bad input, not diverged) is retried, resuming from its last
  checkpoint, while its attempts are <= max_retries;
- on any exit (done, Ctrl-C, an exception) stop the workers and mark unfinished runs `pending`, so
  a rerun resumes them.

A source decides *what* runs: `next_task()` returns a task ready now (or None), `retry(task)`
queues a failed run again, `finish(task, status, summary)` is told each final outcome (a source may
react by making more tasks: adaptive seeding adds seeds, a search asks for another trial).
"""
from __future__ import annotations

from typing import Callable, Protocol

from ..io import mark_interrupted
from ..rundir import FINAL_STATUSES, RunStatus, warn_damaged
from .backends import uses_cpu
from .index import IndexWriter, read_run_state, status_from_summary
from .progress import StudyProgress
from .runsync import StudyStore
from .worker import Outcome, Task

#: Seconds the loop waits for worker messages per iteration.
POLL_S = 1.0


class Pool(Protocol):
    def capacity(self) -> int: ...
    def running(self) -> list[str]: ...
    def submit(self, task: Task) -> None: ...
    def poll(self, timeout: float) -> list[tuple]: ...
    def close(self, kill: bool = False) -> None: ...
    def threads_per_run(self) -> int: ...


class TaskSource(Protocol):
    def next_task(self) -> Task | None:
        """A task to start now (its run is in the index), or None when none is ready."""

    def retry(self, task: Task) -> None:
        """Queue a failed run again (same run directory: it resumes)."""

    def finish(self, task: Task, status: RunStatus, summary: dict) -> None:
        """A run reached a final status (or failed for good)."""


def reconcile(index: IndexWriter, run_id: str, run_path) -> RunStatus:
    """Bring a run's index rows in line with its directory (no coordinator runs it); its status.
    A run whose files are malformed is `damaged` (one warning; the caller skips it)."""
    summary, epochs, damage = read_run_state(run_path)
    if damage is not None:
        warn_damaged(damage)
    status = status_from_summary(summary)
    index.set_epochs(run_id, epochs)
    previous = index.status(run_id)
    if status == RunStatus.PENDING and previous and previous[0] == RunStatus.FAILED:
        return RunStatus.FAILED  # a worker that died leaves "running" in its run dir; the index has the error
    # A run that finished after its coordinator was killed has no counted attempt yet.
    first = status in FINAL_STATUSES and previous is not None and previous[1] == 0
    index.set_status(run_id, status, summary=summary, attempts=1 if first else None)
    return status


def record_outcome(index: IndexWriter, outcome: Outcome, run_path) -> tuple[RunStatus, dict]:
    """Write a finished attempt into the index from its run directory; its status and summary."""
    summary, epochs, damage = read_run_state(run_path)
    summary = summary or dict(outcome.summary)
    index.set_epochs(outcome.run_id, epochs)
    status = RunStatus.parse(summary.get("status"))
    if damage is not None:  # written by this attempt, yet unreadable: the attempt failed (and is retried)
        status = RunStatus.FAILED
        summary = {"status": str(status), "error": str(damage)[:1000]}
    elif outcome.error is not None:
        status = RunStatus.FAILED
        summary = {**summary, "status": str(status), "error": outcome.error}
    elif status not in FINAL_STATUSES:
        summary = {**summary, "status": "failed",
                   "error": f"training returned with status {summary.get('status')!r}"}
        status = RunStatus.FAILED
    index.set_status(outcome.run_id, status, summary=summary, add_attempt=True)
    return status, summary


def drive(source: TaskSource, make_pool: Callable[[], Pool], index: IndexWriter, progress: StudyProgress,
          max_retries: int, store: StudyStore | None = None) -> None:
    """Run the source's tasks to the end (see the module doc). The pool is made on first need, so
    a rerun with nothing to do starts no worker (nor Ray). `store`: where the runs live (default:
    in their run directories)."""
    pool: Pool | None = None
    inflight: dict[str, Task] = {}
    clean = False
    try:
        while True:
            while pool is None or pool.capacity() > 0:
                task = source.next_task()
                if task is None:
                    break
                if pool is None:
                    pool = make_pool()
                if task.threads is None and uses_cpu(task.config):
                    task.threads = pool.threads_per_run()
                index.set_status(task.run_id, RunStatus.RUNNING)
                progress.started(task.run_id, task.label or task.run_id)
                inflight[task.run_id] = task
                pool.submit(task)
            if not inflight:
                break
            for event in pool.poll(POLL_S):
                if event[0] == "epoch":
                    _, rid, row = event
                    index.add_epoch(rid, row)
                    progress.epoch_done(rid, int(row.get("epoch", 0)))
                    continue
                outcome: Outcome = event[1]
                task = inflight.pop(outcome.run_id)
                run_path = store.fetch(task.run_id) if store is not None else task.run_dir
                status, summary = record_outcome(index, outcome, run_path)
                attempts = index.status(outcome.run_id)[1]
                retry = status == RunStatus.FAILED and not outcome.user_error and attempts <= max_retries
                progress.finished(outcome.run_id, str(status), outcome.wall_s,
                                  detail=(outcome.error or "")[:200] + (" - retrying" if retry else ""))
                if retry:
                    index.set_status(outcome.run_id, RunStatus.PENDING)
                    progress.retrying(outcome.run_id)
                    source.retry(task)
                else:
                    source.finish(task, status, summary)
        clean = True
    finally:
        if pool is not None:
            pool.close(kill=not clean)
        for rid, task in inflight.items():
            index.set_status(rid, RunStatus.PENDING)
            if not clean:  # its worker was killed mid-run: say so in the run, which resumes on a rerun
                if store is not None:
                    store.mark_interrupted(rid)
                else:
                    mark_interrupted(task.run_dir)
        progress.close()
