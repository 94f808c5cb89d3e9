"""The study coordinator: expands a spec, trains every run once, and keeps the index.

Idempotent and crash-safe. A rerun skips completed runs, resumes interrupted ones from their last
checkpoint (run_training(resume=True)), retries failed ones up to `max_retries` times (attempts are
counted in the index) and reports diverged ones without retrying. A SIGKILLed coordinator or
worker loses only the unfinished epoch: run directories are written atomically, workers exit when
their coordinator dies, and a per-run lock keeps a dying worker and its replacement apart.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import read_yaml
from ..errors import UserError
from ..io import atomic_write_text
from . import spec as specmod
from .backends import LocalPool, RayPool, uses_cpu
from .index import (INDEX_FILE, RUNS_DIR, SPEC_FILE, IndexWriter, read_epochs, read_summary, run_dir,
                    status_from_summary, study_meta)
from .lock import STUDY_LOCK, lock_study
from .progress import StudyProgress
from .worker import Outcome, Task, Trainer

#: Seconds the coordinator waits for worker messages per loop iteration.
POLL_S = 1.0
BACKENDS = ("local", "ray")


@dataclass
class StudyResult:
    """What a coordinator session left: unique runs per status, and the errors of failed runs."""

    study_dir: Path
    name: str
    kind: str
    counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # run_id -> error of failed runs
    trained: list[str] = field(default_factory=list)  # run IDs this session trained or resumed

    @property
    def ok(self) -> bool:
        """Every run has a final status and none failed."""
        return not self.errors and all(s in ("completed", "diverged", "pruned") for s in self.counts if self.counts[s])


def check_options(workers: Any, backend: str, max_retries: Any) -> None:
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise UserError(f"--workers: must be an integer >= 1, got {workers!r}")
    if backend not in BACKENDS:
        raise UserError(f"--backend: must be one of {', '.join(BACKENDS)}, got {backend!r}" + specmod.suggest(str(backend), BACKENDS))
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise UserError(f"--max-retries: must be an integer >= 0, got {max_retries!r}")


def prepare_study_dir(out: Path, spec_dict: dict) -> None:
    """Write DIR/spec.yaml once; refuse a directory that holds another study or other files.

    Call with the study lock held. Nothing is overwritten when it refuses.
    """
    spec_file = out / SPEC_FILE
    if spec_file.is_file():
        try:
            raw = read_yaml(spec_file)
            # Normalized through the current config, so fields added since it was written compare equal.
            existing = specmod.spec_to_dict(specmod.resolve(specmod.load_spec(spec_file)))
        except UserError as e:
            raise UserError(f"{out}: holds a {SPEC_FILE} this version cannot read ({e}); choose another --out") from None
        if not specmod.same_study(existing, spec_dict):
            was = raw.get("name", "?")
            raise UserError(f"{out}: holds a different study ({was!r}, spec or profile changed); "
                            "choose another --out or delete that directory")
        return
    extra = sorted(p.name for p in out.iterdir() if p.name not in (STUDY_LOCK, INDEX_FILE, RUNS_DIR))
    if extra:
        raise UserError(f"{out}: not empty and not a vitlab study (has {extra[0]}); choose another --out")
    atomic_write_text(spec_file, yaml.safe_dump(spec_dict, sort_keys=False))


def check_backend_options(backend: str, ray_address: str | None, gpus_per_run: float | None,
                          cpus_per_run: float | None) -> None:
    if backend == "ray":
        return
    for flag, value in (("--ray-address", ray_address), ("--gpus-per-run", gpus_per_run),
                        ("--cpus-per-run", cpus_per_run)):
        if value is not None:
            raise UserError(f"{flag}: only used with --backend ray (local workers share the machine)")


def make_pool(backend: str, workers: int, ray_address: str | None, gpus_per_run: float | None,
              cpus_per_run: float | None, trainer: Trainer | None):
    if backend == "ray":
        return RayPool(workers, address=ray_address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run,
                       trainer=trainer)
    return LocalPool(workers, trainer=trainer)


def _prepare_out(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_study(spec: str | Path | dict | specmod.StudySpec, out_dir: str | Path, workers: int = 1,
              backend: str = "local", ray_address: str | None = None, profile: str | None = None,
              max_retries: int = 2, progress: bool = True, gpus_per_run: float | None = None,
              cpus_per_run: float | None = None, trainer: Trainer | None = None) -> StudyResult:
    """Train every run of a study into `out_dir` (see the module doc); returns what it left.

    `trainer` replaces `vitlab.train.run_training` (tests only). Raises UserError on bad input
    before anything is written.
    """
    check_options(workers, backend, max_retries)
    check_backend_options(backend, ray_address, gpus_per_run, cpus_per_run)
    study = specmod.load_spec(spec)
    if study.kind != "study":
        raise UserError(f"{study.source}: space: this is a search spec; run it with `vitlab search`")
    study = specmod.resolve(study, profile)
    runs = specmod.expand(study)
    out = _prepare_out(out_dir)
    lock = lock_study(out)
    try:
        prepare_study_dir(out, specmod.spec_to_dict(study))
        with IndexWriter(out) as index:
            index.set_meta(study_meta(study))
            for r in runs:
                index.add_run(r.run_id, r.factor, r.level, r.level_label, r.level_order, r.seed, r.varied,
                              r.config_dict())
            return _coordinate(study, runs, out, index, workers, backend, ray_address, max_retries,
                               progress, gpus_per_run, cpus_per_run, trainer)
    finally:
        lock.release()


def unique_runs(study: specmod.StudySpec, runs: list[specmod.RunSpec]) -> list[specmod.RunSpec]:
    """Each run once (a level shared by factors is trained once), seed-major so that early results
    cover every level."""
    factor_order = {f: i for i, f in enumerate(specmod.factor_labels(study))}
    first: dict[str, specmod.RunSpec] = {}
    for r in runs:
        first.setdefault(r.run_id, r)
    return sorted(first.values(), key=lambda r: (study.seeds.index(r.seed), factor_order[r.factor], r.level_order))


def reconcile(index: IndexWriter, out: Path, run_id: str) -> str:
    """Bring a run's index rows in line with its directory; returns the status."""
    path = run_dir(out, run_id)
    summary = read_summary(path)
    status = status_from_summary(summary)
    index.set_epochs(run_id, read_epochs(path))
    previous = index.status(run_id)
    if status == "pending" and previous and previous[0] == "failed":
        return "failed"  # a worker that died leaves "running" in its run dir; the index has the error
    # A run that finished after its coordinator was killed has no counted attempt yet.
    first = status in ("completed", "diverged", "pruned") and previous is not None and previous[1] == 0
    index.set_status(run_id, status, summary=summary, attempts=1 if first else None)
    return status


def _coordinate(study, runs, out, index, workers, backend, ray_address, max_retries, progress,
                gpus_per_run, cpus_per_run, trainer) -> StudyResult:
    todo = unique_runs(study, runs)
    labels = {r.run_id: f"{r.factor}={r.level_label} seed={r.seed}" if r.factor != "grid"
              else f"[{r.level_label}] seed={r.seed}" for r in todo}
    result = StudyResult(study_dir=out, name=study.name, kind="study")
    queue: deque[specmod.RunSpec] = deque()
    done = 0
    for r in todo:
        status = reconcile(index, out, r.run_id)
        attempts = index.status(r.run_id)[1]
        if status == "pending" or (status == "failed" and attempts <= max_retries):
            queue.append(r)
        elif status in ("completed", "diverged", "pruned"):
            done += 1
    by_id = {r.run_id: r for r in todo}

    pool = make_pool(backend, workers, ray_address, gpus_per_run, cpus_per_run, trainer) if queue else None
    prog = StudyProgress(study.name, len(todo), done, workers, enabled=progress)
    clean_exit = False
    try:
        while pool is not None and (queue or pool.running()):
            while queue and pool.capacity() > 0:
                r = queue.popleft()
                cfg = r.config_dict()
                task = Task(run_id=r.run_id, config=cfg, run_dir=str(run_dir(out, r.run_id)),
                            threads=pool.threads_per_run() if uses_cpu(cfg) else None)
                index.set_status(r.run_id, "running")
                prog.started(r.run_id, labels[r.run_id])
                result.trained.append(r.run_id)
                pool.submit(task)
            for event in pool.poll(POLL_S):
                if event[0] == "epoch":
                    _, rid, row = event
                    index.add_epoch(rid, row)
                    prog.epoch_done(rid, int(row.get("epoch", 0)))
                    continue
                outcome: Outcome = event[1]
                status = record_outcome(index, out, outcome)
                attempts = index.status(outcome.run_id)[1]
                retry = status == "failed" and not outcome.user_error and attempts <= max_retries
                prog.finished(outcome.run_id, status, outcome.wall_s,
                              detail=(outcome.error or "")[:200] + (" - retrying" if retry else ""))
                if retry:
                    index.set_status(outcome.run_id, "pending")
                    prog.retrying(outcome.run_id)
                    queue.append(by_id[outcome.run_id])
        clean_exit = True
    finally:
        if pool is not None:
            interrupted = pool.running()
            pool.close(kill=not clean_exit)
            for rid in interrupted:
                index.set_status(rid, "pending")
        prog.close()

    for r in todo:
        status, _ = index.status(r.run_id)
        result.counts[status] = result.counts.get(status, 0) + 1
        if status == "failed":
            result.errors[r.run_id] = index.summary(r.run_id).get("error", "failed")
    return result


def record_outcome(index: IndexWriter, out: Path, outcome: Outcome) -> str:
    """Write a finished attempt into the index from its run directory; returns its status."""
    path = run_dir(out, outcome.run_id)
    summary = read_summary(path) or dict(outcome.summary)
    index.set_epochs(outcome.run_id, read_epochs(path))
    status = summary.get("status")
    if outcome.error is not None:
        status = "failed"
        summary = {**summary, "status": "failed", "error": outcome.error}
    elif status not in ("completed", "diverged", "pruned"):
        status = "failed"
        summary = {**summary, "status": "failed", "error": f"training returned with status {summary.get('status')!r}"}
    index.set_status(outcome.run_id, status, summary=summary, add_attempt=True)
    return status
