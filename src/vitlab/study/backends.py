"""Where runs execute: K local worker processes, or Ray tasks on a local or remote Ray cluster.

Both pools have the same small interface for the coordinator: `capacity()`, `submit(task)`,
`poll(timeout) -> [event]`, `close()`. Events are ("epoch", run_id, row) and ("outcome", Outcome).
A local worker that dies (killed, out of memory) gives an outcome with an error, so the coordinator
retries the run; it resumes from its last checkpoint.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import re
import time
from importlib import metadata
from multiprocessing.connection import wait
from pathlib import Path

import torch

from ..errors import UserError
from .runsync import StudyStore, remove_scratch
from .storage import PROTOCOL_PACKAGES
from .worker import Outcome, Task, TrainFn, execute, task_epochs, worker_main

#: Seconds a worker is given to exit after "stop" before it is killed.
STOP_GRACE_S = 5.0
#: Seconds between reads of running runs' metrics from a remote storage (progress of Ray tasks).
REMOTE_PROGRESS_S = 5.0
#: Files of the vitlab package left out when it is shipped to a Ray cluster.
SHIP_EXCLUDES = ["__pycache__", "*.pyc"]


def cpu_count() -> int:
    """CPUs this process may use (respects affinity masks and container CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cuda_available() -> bool:
    return bool(torch.cuda.is_available())


def local_threads_per_run(workers: int) -> int:
    """CPU threads of each of `workers` local runs: the cores divided between them."""
    return max(1, cpu_count() // workers)


def uses_cpu(config: dict) -> bool:
    """Whether a run config trains on the CPU here (device cpu, or auto without CUDA)."""
    dev = config.get("device", "auto")
    return dev == "cpu" or (dev == "auto" and not cuda_available())


class _Worker:
    def __init__(self, ctx, trainer: TrainFn | None):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(child, os.getpid(), trainer), daemon=True,
                                name="vitlab-worker")
        self.proc.start()
        child.close()
        self.task: Task | None = None
        self.started = 0.0
        self.ready = False  # it said ("ready", pid): it got through its start-up


class LocalPool:
    """K spawned worker processes, started on demand and replaced when one dies.

    Spawned (not forked) so that each worker starts clean: no inherited locks, threads or CUDA state.
    On a GPU the workers share the device; on a CPU each run gets `cpu_count() // K` threads.
    """

    def __init__(self, workers: int, trainer: TrainFn | None = None):
        self.k = workers
        self.trainer = trainer
        self.ctx = mp.get_context("spawn")
        self.workers: list[_Worker] = []

    def threads_per_run(self) -> int:
        return local_threads_per_run(self.k)

    def capacity(self) -> int:
        return self.k - sum(1 for w in self.workers if w.task is not None)

    def running(self) -> list[str]:
        return [w.task.run_id for w in self.workers if w.task is not None]

    def submit(self, task: Task) -> None:
        idle = [w for w in self.workers if w.task is None and w.proc.is_alive()]
        if idle:
            w = idle[0]
        else:
            if len(self.workers) >= self.k:
                raise RuntimeError("no free worker")  # the coordinator checks capacity() first
            w = _Worker(self.ctx, self.trainer)
            self.workers.append(w)
        w.task, w.started = task, time.monotonic()
        w.conn.send(("run", task))

    def poll(self, timeout: float) -> list[tuple]:
        events: list[tuple] = []
        if not self.workers:
            time.sleep(min(timeout, 0.05))
            return events
        ready = wait([w.conn for w in self.workers] + [w.proc.sentinel for w in self.workers], timeout)
        for w in list(self.workers):
            if w.conn in ready or w.proc.sentinel in ready:
                events += self._drain(w)
        return events

    def _drain(self, w: _Worker) -> list[tuple]:
        events = []
        try:
            while w.conn.poll():
                msg = w.conn.recv()
                if msg[0] == "ready":
                    w.ready = True
                elif msg[0] == "epoch":
                    events.append(msg)
                elif msg[0] == "outcome":
                    events.append(msg)
                    w.task = None
        except (EOFError, OSError):
            pass
        if not w.proc.is_alive():
            w.proc.join()
            if not w.ready:
                raise UserError(
                    f"a worker process failed to start (exit code {w.proc.exitcode}); if you call run_study or "
                    "run_search from a script, put the call under `if __name__ == '__main__':` (worker processes "
                    "are spawned and import your script)")
            if w.task is not None:
                events.append(("outcome", Outcome(
                    run_id=w.task.run_id, error=f"worker process died (exit code {w.proc.exitcode})",
                    wall_s=time.monotonic() - w.started)))
            w.conn.close()
            self.workers.remove(w)
        return events

    def close(self, kill: bool = False) -> None:
        """Stop the workers: politely between runs, by SIGKILL when `kill` (a run loses its epoch)."""
        for w in self.workers:
            if kill or w.task is not None:
                w.proc.kill()
            else:
                try:
                    w.conn.send(("stop",))
                except (BrokenPipeError, OSError):
                    pass
        deadline = time.monotonic() + STOP_GRACE_S
        for w in self.workers:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
            w.conn.close()
            if w.task is not None and w.task.storage is not None:  # killed mid-run: storage has its epochs
                remove_scratch(w.task.storage, w.task.run_id)
        self.workers = []


# ----------------------------------------------------------------------------------------------
# Ray


def _ray_task(task: Task, trainer: TrainFn | None) -> Outcome:
    """Body of one Ray task (runs in a Ray worker process)."""
    return execute(task, trainer)


def vitlab_requirements(extra_packages: list[str] | None = None) -> list[str]:
    """vitlab's run-time requirements for a Ray worker: its declared dependencies except torch (the
    cluster's own) plus `extra_packages` (e.g. s3fs for an s3:// storage)."""
    try:
        declared = metadata.requires("vitlab") or []
    except metadata.PackageNotFoundError:  # running from a source tree
        declared = []
    def name(req: str) -> str:
        return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower()

    reqs = [r for r in declared if ";" not in r and name(r) != "torch"]  # extras are not needed to train
    names = {name(r) for r in reqs}
    return reqs + [p for p in ["fsspec", *(extra_packages or [])] if p not in names]


def ray_runtime_env(pip: bool = False, storage_location: str | None = None) -> dict:
    """Ray's runtime_env that ships this vitlab package to every worker (so nodes need not have it
    installed) and, with `pip`, installs its other dependencies there (Ray's pip plugin: a virtualenv on
    top of the node's Python, cached per node)."""
    # This file's grandparent is the vitlab package (importing `vitlab` here would pull in every layer).
    env: dict = {"py_modules": [str(Path(__file__).resolve().parents[1])], "excludes": list(SHIP_EXCLUDES)}
    if pip:
        protocol = storage_location.split("://", 1)[0].lower() if storage_location and "://" in storage_location else ""
        extra = [PROTOCOL_PACKAGES[protocol]] if protocol in PROTOCOL_PACKAGES else []
        env["pip"] = vitlab_requirements(extra)
    return env


class RayPool:
    """Each run is a Ray task with declared CPUs/GPUs; at most K in flight.

    Connects to `address` (an existing cluster) or starts a local Ray instance sized to this machine.
    On a cluster, the vitlab package is shipped to the workers through Ray's runtime_env (`pip`: its
    dependencies too), and the runs live in the study's storage: a shared file system, or an object
    store (`store`) when the nodes share none. Progress comes from the runs' metrics.jsonl (Ray tasks
    cannot stream back), outcomes from the tasks.

    Retries are vitlab's, not Ray's: a task is never retried by Ray (max_retries=0); a failed run comes
    back as an outcome and the coordinator dispatches it again, after the failed task is known to be
    gone, and the run's lease in storage keeps a straggler from training it at the same time.
    """

    def __init__(self, workers: int, address: str | None = None, cpus_per_run: float | None = None,
                 gpus_per_run: float | None = None, trainer: TrainFn | None = None, store: StudyStore | None = None,
                 pip: bool = False):
        try:
            import ray
        except ImportError:
            raise UserError("backend ray: the ray package is not installed (pip install 'vitlab[ray]')") from None
        self.ray = ray
        self.k = workers
        self.trainer = trainer
        self.store = store
        local_cpus = cpu_count()
        self.cpus = cpus_per_run if cpus_per_run is not None else (
            max(1, local_cpus // workers) if address is None else 1)
        self.gpus = gpus_per_run if gpus_per_run is not None else (
            1.0 / workers if address is None and cuda_available() else 0.0)
        if self.cpus <= 0 or self.gpus < 0:
            raise UserError(f"backend ray: cpus per run must be > 0 and gpus per run >= 0, got {self.cpus}, {self.gpus}")
        self.started_ray = False
        if not ray.is_initialized():
            try:
                if address is None:
                    ray.init(num_cpus=max(local_cpus, int(self.cpus * workers + 0.999)),
                             include_dashboard=False, log_to_driver=False, configure_logging=False)
                else:
                    ray.init(address=address, runtime_env=ray_runtime_env(pip, store.location if store else None),
                             log_to_driver=False, configure_logging=False)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise UserError(f"backend ray: cannot start or reach Ray at {address or 'a local instance'} "
                                f"({' '.join(str(e).split())[:200]})") from None
            self.started_ray = True
        self.remote = ray.remote(_ray_task).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)
        self.inflight: dict = {}  # ObjectRef -> (task, started, epochs seen)
        self.progress_at = 0.0

    def threads_per_run(self) -> int:
        return max(1, int(self.cpus))

    def capacity(self) -> int:
        return self.k - len(self.inflight)

    def running(self) -> list[str]:
        return [t.run_id for t, _, _ in self.inflight.values()]

    def submit(self, task: Task) -> None:
        ref = self.remote.remote(task, self.trainer)
        self.inflight[ref] = (task, time.monotonic(), 0)

    def poll(self, timeout: float) -> list[tuple]:
        events: list[tuple] = []
        if not self.inflight:
            time.sleep(min(timeout, 0.05))
            return events
        done, _ = self.ray.wait(list(self.inflight), num_returns=1, timeout=timeout)
        remote_due = time.monotonic() - self.progress_at >= REMOTE_PROGRESS_S
        if remote_due:
            self.progress_at = time.monotonic()
        for ref, (task, started, seen) in list(self.inflight.items()):
            if task.storage is not None and not remote_due:
                continue
            try:
                rows = task_epochs(task, self.store)
            except UserError:  # storage briefly away: progress only, the outcome will tell
                continue
            for row in rows[seen:]:
                if "epoch" in row:
                    events.append(("epoch", task.run_id, row))
            self.inflight[ref] = (task, started, max(seen, len(rows)))
        for ref in done:
            task, started, _ = self.inflight.pop(ref)
            try:
                outcome = self.ray.get(ref)
            except Exception as e:  # the task's process died, its node was lost, or Ray failed it
                text = " ".join(str(e).split())
                hint = (" (a package is missing on the cluster: install it on the nodes or pass --ray-pip)"
                        if "No module named" in text else "")
                outcome = Outcome(run_id=task.run_id, error=f"ray task failed: {type(e).__name__}: {text[:300]}{hint}",
                                  wall_s=time.monotonic() - started)
            events.append(("outcome", outcome))
        return events

    def close(self, kill: bool = False) -> None:
        for ref in list(self.inflight):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # already finished or gone
                pass
        self.inflight = {}
        if self.started_ray:
            self.ray.shutdown()
