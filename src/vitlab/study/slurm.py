"""`--backend slurm`: each run of a study is one task of a SLURM array job, submitted with submitit.

The coordinator's loop (schedule.drive) is the same as for local and Ray workers: the study's
`TaskSource` hands out tasks, this pool turns the ready ones into one array job (`--workers` is the
array's concurrency, `%K`), and each array task trains its run with `worker.execute` — the same
workspace, flock or storage lease, and resume as every other backend. A task reports its `Outcome` as
JSON beside submitit's result file (`outcome_path`); submitit's result pickle is only looked at for its
existence, never loaded: a study directory may have been handed over, and unpickling runs code.

SLURM's own mechanisms do the rest:

- Time limit or preemption: SLURM sends USR2 `signal_delay_s` before the end; submitit calls
  `SlurmRun.checkpoint`, which releases the run's lease (its last epoch checkpoint is already written:
  runs resume exactly from it) and requeues the task, which resumes the run.
- A task cancelled or killed (`scancel`, out of memory, a lost node) leaves no result: the coordinator
  sees the job gone and retries the run (a new task) like any failed attempt, up to --max-retries.
- The coordinator may leave (`--detach`, Ctrl-C, a lost login session): the jobs go on. Rerunning the
  same `vitlab study ... --backend slurm` attaches to the tasks still queued or running (their job IDs
  are in each run directory's slurm_job.json) instead of submitting them again, and collects the
  results; `vitlab status DIR` shows progress without starting anything.

Every run directory names its jobs and their log files in RUN/slurm_job.json. The study directory must
be on a filesystem the compute nodes share (submitit's pickles and logs live in STUDY/slurm/); the runs
may live elsewhere (--storage).
"""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
from pathlib import Path

from ..errors import QUOTED_ERROR_CHARS, UserError, one_line
from ..io import atomic_write_json, pid_alive, read_json_object
from ..jsonread import MalformedFile, read_json_file
from ..rundir import SLURM_JOB_FILE, check_summary
from .lease import release_active
from .runsync import StudyStore
from .slurm_spec import SlurmSpec
from .worker import Outcome, Task, TrainFn, execute, task_epochs

#: Directory of the study that holds submitit's job files and logs (shared with the compute nodes).
SLURM_DIR = "slurm"
#: Seconds between reads of the running runs' metrics (progress), and between looks at job states.
CHECK_S = 5.0
#: Tasks the coordinator hands to SLURM at once (SLURM's array throttle `%workers` limits how many run).
SLURM_CAPACITY = 100_000
#: Seconds `squeue` may take before a job's state counts as unknown (then it is treated as alive).
SQUEUE_TIMEOUT_S = 30.0
#: squeue states of a job that ended (SLURM lists such a job for MinJobAge seconds).
ENDED_STATES = frozenset({"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
                          "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED"})
#: An outcome file larger than this is not one (it holds a run's summary: a few kB).
MAX_OUTCOME_BYTES = 4 * 2 ** 20


class Detached(Exception):
    """The coordinator submitted its tasks and leaves (--detach); the jobs go on without it."""

    def __init__(self, submitted: int, attached: int):
        super().__init__(f"{submitted} submitted, {attached} attached")
        self.submitted, self.attached = submitted, attached


class SlurmRun:
    """What an array task runs: one study run. Pickled to the task by submitit."""

    def __init__(self, task: Task, trainer: TrainFn | None = None):
        self.task, self.trainer = task, trainer

    def __call__(self) -> None:
        import submitit

        outcome = execute(self.task, self.trainer)
        env = submitit.JobEnvironment()
        atomic_write_json(outcome_path(env.paths.result_pickle), dataclasses.asdict(outcome))

    def checkpoint(self):
        """Called by submitit on SLURM's warning signal: the run keeps its last epoch checkpoint (runs
        resume exactly from it), its lease is released now so that the requeued task takes the run at
        once, and the same run is submitted again."""
        import submitit

        release_active()
        return submitit.helpers.DelayedSubmission(SlurmRun(self.task, self.trainer))


def outcome_path(result_pickle: Path) -> Path:
    """Where a task writes its Outcome (JSON), beside submitit's result pickle."""
    return Path(result_pickle).with_suffix(".json")


def read_outcome(path: Path, run_id: str) -> Outcome:
    """A task's Outcome from its JSON file (bounded, typed); MalformedFile when it is not one."""
    data = read_json_file(path, MAX_OUTCOME_BYTES)
    if data is None:
        raise MalformedFile(path, "missing")
    summary, error, wall = data.get("summary", {}), data.get("error"), data.get("wall_s", 0.0)
    if data.get("run_id") != run_id or not isinstance(summary, dict) or not isinstance(error, (str, type(None))) \
            or not isinstance(data.get("user_error", False), bool) or not isinstance(wall, (int, float)):
        raise MalformedFile(path, "not the outcome of this run")
    return Outcome(run_id=run_id, summary=check_summary(summary, path) if summary else {}, error=error,
                   user_error=data.get("user_error", False), wall_s=float(wall))


def require_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("backend slurm: the submitit package is not installed (pip install 'vitlab[slurm]')") from None
    return submitit


def job_entries(run_dir: str | Path) -> list[dict]:
    """The jobs that trained a run, oldest first: [{job_id, executor, stdout, stderr, submitted}]."""
    jobs = (read_json_object(Path(run_dir) / SLURM_JOB_FILE) or {}).get("jobs")
    return [j for j in jobs if isinstance(j, dict) and isinstance(j.get("job_id"), str)] if isinstance(jobs, list) else []


def squeue_state(job_id: str) -> str | None:
    """SLURM's state of a job (PENDING, RUNNING, REQUEUED, ...), None when SLURM no longer lists it,
    "UNKNOWN" when squeue cannot tell (then the job is treated as alive)."""
    if shutil.which("squeue") is None:
        return "UNKNOWN"
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                             timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return "UNKNOWN"
    if out.returncode != 0:
        # An ID SLURM forgot is an error ("Invalid job id specified"); anything else is unknown.
        return None if "Invalid job id" in out.stderr else "UNKNOWN"
    states = out.stdout.split()
    return states[0] if states and states[0] not in ENDED_STATES else None


def job_state(entry: dict, folder: Path) -> str:
    """FINISHED (a result file), a scheduler state while alive, or GONE (no result and not alive)."""
    import submitit

    paths = submitit.core.utils.JobPaths(folder, job_id=entry["job_id"], task_id=0)
    if paths.result_pickle.exists():
        return "FINISHED"
    if entry.get("executor") == "local":
        state = "RUNNING" if entry["job_id"].isdigit() and pid_alive(int(entry["job_id"])) else None
    else:
        state = squeue_state(entry["job_id"])
    if state is None:
        return "FINISHED" if paths.result_pickle.exists() else "GONE"  # it may have just finished
    return state


def check_cluster(resources: SlurmSpec) -> None:
    """One-line UserError, before anything is written, when the tasks cannot be submitted from here."""
    require_submitit()
    if resources.executor == "slurm" and shutil.which("sbatch") is None:
        raise UserError("backend slurm: sbatch is not on PATH (not a SLURM login node?); "
                        "--slurm executor=local runs the tasks on this machine instead")


class SlurmPool:
    """Runs tasks as SLURM array tasks through submitit (see the module doc).

    `resources.executor == "local"`: submitit's local executor runs each task as a process on this
    machine (no arrays there: the pool itself keeps at most `workers` in flight)."""

    def __init__(self, workers: int, resources: SlurmSpec, study_dir: str | Path, name: str,
                 trainer: TrainFn | None = None, store: StudyStore | None = None, detach: bool = False):
        check_cluster(resources)
        import submitit

        self.k, self.res, self.trainer, self.store, self.detach = workers, resources, trainer, store, detach
        self.folder = Path(study_dir).absolute() / SLURM_DIR
        if resources.executor == "slurm":
            self.executor = submitit.SlurmExecutor(self.folder, max_num_timeout=resources.max_requeues)
            params = dict(job_name=f"vitlab-{name}", time=resources.time, nodes=1, ntasks_per_node=1,
                          cpus_per_task=resources.cpus_per_task, signal_delay_s=resources.signal_delay_s,
                          array_parallelism=workers)
            if resources.gpus_per_task:
                params["gpus_per_node"] = resources.gpus_per_task
            for key in ("partition", "mem", "account", "qos", "setup"):
                if getattr(resources, key) is not None:
                    params[key] = getattr(resources, key)
            if resources.extra:
                params["additional_parameters"] = dict(resources.extra)
        else:
            self.executor = submitit.LocalExecutor(self.folder, max_num_timeout=resources.max_requeues)
            params = dict(timeout_min=resources.time, signal_delay_s=resources.signal_delay_s,
                          gpus_per_node=resources.gpus_per_task, tasks_per_node=1, nodes=1)
            if resources.setup:
                params["setup"] = list(resources.setup)
        self.executor.update_parameters(**params)
        self.waiting: list[Task] = []  # submitted to the pool, not yet to SLURM
        self.inflight: dict[str, tuple[Task, dict, float, int]] = {}  # run_id -> (task, job entry, started, epochs seen)
        self.jobs: dict[str, object] = {}  # job_id -> submitit Job (this session's submissions)
        self.checked_at = 0.0
        self.submitted = self.attached = 0

    def threads_per_run(self) -> int:
        return self.res.cpus_per_task

    def capacity(self) -> int:
        limit = SLURM_CAPACITY if self.res.executor == "slurm" else self.k
        return limit - len(self.inflight) - len(self.waiting)

    def running(self) -> list[str]:
        return list(self.inflight)

    def submit(self, task: Task) -> None:
        """Attach to the run's task still queued or running in SLURM, else queue it for the next array."""
        entries = job_entries(task.run_dir)
        last = entries[-1] if entries else None
        if last is not None and last.get("executor") == self.res.executor and \
                job_state(last, self.folder) not in ("FINISHED", "GONE"):
            self.inflight[task.run_id] = (task, last, time.monotonic(), 0)
            self.attached += 1
            return
        self.waiting.append(task)

    def _flush(self) -> None:
        """Submit the waiting tasks as one array job; record each task's job in its run directory."""
        if not self.waiting:
            return
        tasks, self.waiting = self.waiting, []
        with self.executor.batch():
            jobs = [self.executor.submit(SlurmRun(t, self.trainer)) for t in tasks]
        for task, job in zip(tasks, jobs):
            entry = {"job_id": str(job.job_id), "executor": self.res.executor, "stdout": str(job.paths.stdout),
                     "stderr": str(job.paths.stderr), "submitted": time.time()}
            path = Path(task.run_dir) / SLURM_JOB_FILE
            atomic_write_json(path, {"jobs": [*job_entries(task.run_dir), entry]})
            self.jobs[entry["job_id"]] = job
            self.inflight[task.run_id] = (task, entry, time.monotonic(), 0)
        self.submitted += len(tasks)

    def _outcome(self, task: Task, entry: dict, started: float) -> Outcome | None:
        """The task's outcome once its job ended, else None."""
        from submitit.core.utils import JobPaths

        process = getattr(self.jobs.get(entry["job_id"]), "_process", None)
        if process is not None:
            process.poll()  # reaps a finished local task (its pid is then gone)
        state = job_state(entry, self.folder)
        if state not in ("FINISHED", "GONE"):
            return None
        log = entry.get("stderr", "?")
        wall = time.monotonic() - started
        if state == "GONE":
            return Outcome(run_id=task.run_id, wall_s=wall,
                           error=f"slurm job {entry['job_id']} ended without a result (cancelled, time limit or "
                                 f"requeues used up, killed, out of memory); its log: {log}")
        try:
            return read_outcome(outcome_path(JobPaths(self.folder, job_id=entry["job_id"], task_id=0).result_pickle),
                                task.run_id)
        except MalformedFile as e:  # the task raised before writing it, or the file is torn or foreign
            return Outcome(run_id=task.run_id, wall_s=wall,
                           error=f"slurm job {entry['job_id']} failed ({one_line(str(e), QUOTED_ERROR_CHARS)}); its log: {log}")

    def poll(self, timeout: float) -> list[tuple]:
        self._flush()
        if self.detach:
            raise Detached(self.submitted, self.attached)
        events: list[tuple] = []
        if not self.inflight:
            time.sleep(min(timeout, 0.05))
            return events
        wait = self.checked_at + CHECK_S - time.monotonic()
        if wait > 0:
            time.sleep(min(timeout, wait))
            if self.checked_at + CHECK_S > time.monotonic():
                return events
        self.checked_at = time.monotonic()
        for rid, (task, entry, started, seen) in list(self.inflight.items()):
            try:
                rows = task_epochs(task, self.store)
            except UserError:  # storage briefly away: progress only, the outcome will tell
                rows = []
            events += [("epoch", rid, row) for row in rows[seen:] if "epoch" in row]
            self.inflight[rid] = (task, entry, started, max(seen, len(rows)))
            outcome = self._outcome(task, entry, started)
            if outcome is not None:
                del self.inflight[rid]
                self.jobs.pop(entry["job_id"], None)
                events.append(("outcome", outcome))
        return events

    def close(self, kill: bool = False) -> None:
        """Leave the jobs running: they are SLURM's now, and a rerun attaches to them (scancel stops them)."""
        self.waiting = []
        self.inflight = {}


__all__ = ["Detached", "check_cluster", "SLURM_DIR", "SlurmPool", "SlurmRun", "job_entries", "job_state", "squeue_state"]
