"""What a worker does with one run: take its workspace, train (resuming), report the outcome.

Shared by the local backend (long-lived spawned processes talking over a pipe) and the Ray backend
(one Ray task per run). A worker never writes the index; it returns an `Outcome` and the
coordinator re-reads the run directory. The workspace (runsync.py) is the run directory itself under
a flock, or, when the study keeps its runs in another storage, a scratch directory pulled from it under
the run's lease and published to it after every epoch.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from ..analysis import analyze_run
from ..config import RunConfig
from ..schema import build
from ..errors import UserError
from ..rundir import SUMMARY_FILE, RunStatus, read_metrics, read_summary
from ..training import run_training
from .lease import release_active
from .runsync import StudyStore, Workspace, remove_scratch
from .storage import StorageError

#: How often a local worker checks that its coordinator is still alive.
PARENT_CHECK_S = 0.5
#: Exit status of a worker whose coordinator died.
ORPHAN_EXIT = 75
#: prctl option (linux/prctl.h): the signal the kernel sends this process when its parent dies.
PR_SET_PDEATHSIG = 1

TrainFn = Callable[..., dict]
"""What trains one run: `(config, run_dir, **kwargs) -> summary`, as `vitlab.training.run_training` (the
default) or a test's stand-in. Not the class `vitlab.training.loop.Trainer`, which it builds."""


class EpochHook(Protocol):
    """Something a task carries to the worker that watches its epochs (e.g. a search's pruner).

    It is pickled to the worker; `open()` runs there and returns `hook(epoch, row) -> stop?`."""

    def open(self) -> Callable[[int, dict], bool]: ...


@dataclass
class Task:
    """One run to train: its resolved config (a dict) and directory."""

    run_id: str
    config: dict
    run_dir: str  # the run directory on the coordinator's machine
    storage: str | None = None  # where the run lives when not in run_dir (a URL or path; runsync.py)
    label: str = ""  # how progress shows it, e.g. "model.num_heads=4 seed=1"
    threads: int | None = None  # CPU threads for this run (when the config leaves train.threads unset)
    epoch_hook: EpochHook | None = None  # asked after every epoch whether to stop the run (pruning)
    context: dict | None = None  # study, factor, level, seed, run_id: what trackers tag the run with
    analysis: list[str] = field(default_factory=list)  # analyses of the run once it completed
    analysis_options: dict = field(default_factory=dict)  # their AnalysisOptions fields
    repair: bool = False  # a damaged run re-trained on request: its summary goes, it resumes from its checkpoint
    plan: dict | None = None  # the steps of a time budget, calibrated once per configuration (calibration.py)


@dataclass
class Outcome:
    """What came of a task. `error` is set when training raised; `user_error` when it was bad input."""

    run_id: str
    summary: dict = field(default_factory=dict)
    error: str | None = None
    user_error: bool = False
    wall_s: float = 0.0


def task_epochs(task: Task, store: StudyStore | None) -> list[dict]:
    """The task's metric rows as they are now: in its run directory, or in the study's storage `store`."""
    if task.storage is None or store is None:
        return read_metrics(task.run_dir)
    return store.epochs(task.run_id)


def default_trainer() -> TrainFn:
    return run_training


def run_config(task: Task) -> RunConfig:
    """The task's config with this worker's share of CPU threads and no progress bar of its own.

    Neither field is part of the run ID (see config.EXECUTION_ONLY)."""
    cfg = build(RunConfig, task.config)
    if task.threads is not None and cfg.train.threads is None:
        cfg.train.threads = task.threads
    cfg.train.progress = False
    return cfg


def execute(task: Task, trainer: TrainFn | None = None,
            on_epoch: Callable[[int, dict], Any] | None = None) -> Outcome:
    """Train one run (resuming from its checkpoint) and return its outcome; never raises for the
    run's own errors."""
    t0 = time.monotonic()
    out = Outcome(run_id=task.run_id)
    try:
        cfg = run_config(task)
        prune = task.epoch_hook.open() if task.epoch_hook is not None else None
        with Workspace(task.run_id, task.run_dir, task.storage) as ws:
            if task.repair:  # the checkpoint rewrites metrics.jsonl and a new summary.json
                (ws.path / SUMMARY_FILE).unlink(missing_ok=True)
            def hook(epoch: int, row: dict) -> bool:
                ws.publish()  # checkpoints are written before on_epoch is called (train/loop.py)
                if on_epoch is not None:
                    on_epoch(epoch, row)
                return bool(prune(epoch, row)) if prune is not None else False

            trainer = trainer or default_trainer()
            planned = {"plan": task.plan} if task.plan is not None else {}
            out.summary = dict(trainer(cfg, ws.path, resume=True, on_epoch=hook, progress=False,
                                       context=task.context, **planned) or {})
            if task.analysis and out.summary.get("status") == RunStatus.COMPLETED:
                # Part of the run: a failure here fails the attempt; a retry skips what is computed.
                analyze_run(ws.path, sections=task.analysis, **task.analysis_options)
                out.summary = read_summary(ws.path) or out.summary
    except StorageError as e:  # storage unreachable: the attempt failed, a retry may succeed
        out.error = " ".join(str(e).split())
    except UserError as e:
        out.error, out.user_error = " ".join(str(e).split()), True
    except Exception as e:  # the run's own failure: reported, retried by the coordinator
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        out.error = f"{last} [{_where(e)}]"
    out.wall_s = time.monotonic() - t0
    return out


def _where(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    if not tb:
        return "?"
    f = tb[-1]
    return f"{Path(f.filename).name}:{f.lineno}"


# ----------------------------------------------------------------------------------------------
# local worker process


_RUNNING: Task | None = None  # the task this worker process trains now (its scratch copy goes on exit)


def _exit_orphaned(*_signal) -> None:
    release_active()  # a run lease in storage would otherwise keep its run waiting for it to expire
    task = _RUNNING
    if task is not None and task.storage is not None:
        remove_scratch(task.storage, task.run_id)  # checkpoints in the temp dir; storage has the epochs
    os._exit(ORPHAN_EXIT)


def _watch_parent(parent_pid: int) -> None:
    """Exit as soon as the coordinator is gone (it may have been SIGKILLed: no chance to tell us).

    On Linux the kernel sends SIGTERM the instant it dies (PR_SET_PDEATHSIG), so an orphan does not
    train on for up to PARENT_CHECK_S, nor finish a run its coordinator will never hear of; the
    polling thread covers other systems. SIGTERM from anyone else also releases the lease first."""
    signal.signal(signal.SIGTERM, _exit_orphaned)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass  # no prctl: the thread below still notices
    threading.Thread(target=_poll_parent, args=(parent_pid,), daemon=True).start()


def _poll_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:  # also catches a parent that died before prctl took effect
            _exit_orphaned()
        time.sleep(PARENT_CHECK_S)


def _thread_only_tqdm_lock() -> None:
    """Give tqdm (torch.compile's FX interpreter opens a progress bar) a thread lock instead of the
    multiprocessing RLock it makes by default. In a spawned worker that RLock is a named semaphore
    registered with Python's resource tracker; a worker killed mid-analysis (Ctrl-C of its study)
    cannot unlink it, and the tracker then warns about 'leaked semaphore objects' at exit."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    tqdm.set_lock(threading.RLock())


def worker_main(conn, parent_pid: int, trainer: TrainFn | None) -> None:
    """Entry point of a local worker process: runs tasks received on `conn` until told to stop.

    Messages sent: ("ready", pid), ("epoch", run_id, row), ("outcome", Outcome).
    """
    global _RUNNING
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    _watch_parent(parent_pid)
    _thread_only_tqdm_lock()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "stop":
            return
        task: Task = msg[1]
        _RUNNING = task
        outcome = execute(task, trainer, on_epoch=lambda e, row, rid=task.run_id: conn.send(("epoch", rid, dict(row))))
        _RUNNING = None
        conn.send(("outcome", outcome))
