"""`run_study`: expand a spec, train every run once (a `GridSource` driven by the scheduling loop).

Idempotent and crash-safe. A rerun skips completed runs, resumes interrupted ones from their last
checkpoint (run_training(resume=True)), retries failed ones up to `max_retries` times (attempts are
counted in the index) and reports diverged ones without retrying. A SIGKILLed coordinator or
worker loses only the unfinished epoch: run directories are written atomically, workers exit when
their coordinator dies, and a per-run lock keeps a dying worker and its replacement apart.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from ..schema import suggest
from ..yamlsafe import MAX_YAML_BYTES, read_yaml, yaml_load
from ..errors import UserError
from ..io import atomic_write_text
from ..rundir import RunStatus
from . import spec as specmod
from . import plan as planmod
from .backends import LocalPool, RayPool, local_threads_per_run
from .calibration import StudyCalibration
from .index import INDEX_FILE, RUNS_DIR, SPEC_FILE, IndexWriter, open_writer, study_meta
from .lock import STUDY_LOCK, lock_study
from .progress import StudyProgress
from .grid import AdaptiveSource, GridSource, unique_runs
from .runsync import STORAGE_FILE, StudyStore, resolve_store
from .schedule import drive
from .slurm import Detached, SlurmPool, check_cluster
from .slurm_spec import slurm_resources
from .worker import TrainFn

BACKENDS = ("local", "ray", "slurm")


@dataclass
class StudyResult:
    """What a coordinator session left: unique runs per status, and the errors of failed runs."""

    study_dir: Path
    name: str
    kind: str
    counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # run_id -> error of failed runs
    trained: list[str] = field(default_factory=list)  # run IDs this session trained or resumed
    detached: str | None = None  # --backend slurm --detach: what was left to SLURM ("3 submitted, 1 attached")

    @property
    def ok(self) -> bool:
        """Every run has a final status and none failed (a detached session: nothing failed yet)."""
        if self.detached is not None:
            return not self.errors
        return not self.errors and all(RunStatus(s).final for s in self.counts if self.counts[s])


@dataclass(frozen=True)
class RunOptions:
    """How a study is run (not what it is: that is the spec). The keyword arguments of `run_study`
    as one checked value, which `vitlab.Study.run` takes and the CLI's flags fill.

    Checked when made, by the same rules `run_study` applies (one-line UserError naming the flag)."""

    #: Runs trained at the same time (local processes, Ray tasks or SLURM jobs).
    workers: int = 1
    #: Where runs train: "local" (processes on this machine), "ray" or "slurm".
    backend: str = "local"
    #: The spec's profile to apply (`--profile`), e.g. "quick"; None: the spec as written.
    profile: str | None = None
    #: Times a failed run is trained again (resuming from its checkpoint) before it is reported failed.
    max_retries: int = 2
    #: Show the live progress display.
    progress: bool = True
    #: Refuse a study with more runs than this (counted before expansion); None: no limit.
    max_runs: int | None = planmod.DEFAULT_MAX_RUNS
    #: Where the run directories live (a path or an fsspec URL); None: the study directory.
    storage: str | None = None
    #: Train runs whose files are malformed again instead of reporting them as damaged.
    retrain_damaged: bool = False
    #: backend ray: the cluster's address (None: start a local Ray).
    ray_address: str | None = None
    #: backend ray: GPUs reserved per run.
    gpus_per_run: float | None = None
    #: backend ray: CPUs reserved per run.
    cpus_per_run: float | None = None
    #: backend ray: install vitlab's dependencies on the workers.
    ray_pip: bool = False
    #: backend slurm: `KEY=VALUE` items over the spec's `slurm:` section.
    slurm: tuple[str, ...] | None = None
    #: backend slurm: submit the runs and return without waiting for them.
    detach: bool = False
    #: Replaces `vitlab.training.run_training` (tests only).
    trainer: TrainFn | None = None

    def __post_init__(self) -> None:
        if self.slurm is not None:
            object.__setattr__(self, "slurm", tuple(self.slurm))
        check_options(self.workers, self.backend, self.max_retries)
        check_backend_options(self.backend, self.ray_address, self.gpus_per_run, self.cpus_per_run, self.ray_pip,
                              list(self.slurm) if self.slurm is not None else None, self.detach)

    def kwargs(self) -> dict[str, Any]:
        """These options as `run_study`'s keyword arguments."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["slurm"] = list(self.slurm) if self.slurm is not None else None
        return out


def check_options(workers: Any, backend: str, max_retries: Any) -> None:
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise UserError(f"--workers: must be an integer >= 1, got {workers!r}")
    if backend not in BACKENDS:
        raise UserError(f"--backend: must be one of {', '.join(BACKENDS)}, got {backend!r}" + suggest(str(backend), BACKENDS))
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
    extra = sorted(p.name for p in out.iterdir() if p.name not in (STUDY_LOCK, INDEX_FILE, RUNS_DIR, STORAGE_FILE))
    if extra:
        raise UserError(f"{out}: not empty and not a vitlab study (has {extra[0]}); choose another --out")
    atomic_write_text(spec_file, yaml.safe_dump(spec_dict, sort_keys=False))


def check_backend_options(backend: str, ray_address: str | None, gpus_per_run: float | None,
                          cpus_per_run: float | None, ray_pip: bool = False, slurm: list[str] | None = None,
                          detach: bool = False) -> None:
    if backend != "slurm":
        for flag, value in (("--slurm", slurm or None), ("--detach", detach or None)):
            if value is not None:
                raise UserError(f"{flag}: only used with --backend slurm")
    if backend == "ray":
        return
    for flag, value in (("--ray-address", ray_address), ("--gpus-per-run", gpus_per_run),
                        ("--cpus-per-run", cpus_per_run), ("--ray-pip", ray_pip or None)):
        if value is not None:
            raise UserError(f"{flag}: only used with --backend ray" + (
                " (local workers share the machine)" if backend == "local" else " (--slurm sets SLURM resources)"))


def make_pool(backend: str, workers: int, ray_address: str | None, gpus_per_run: float | None,
              cpus_per_run: float | None, trainer: TrainFn | None, store: StudyStore | None = None,
              ray_pip: bool = False):
    if backend == "ray":
        return RayPool(workers, address=ray_address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run,
                       trainer=trainer, store=store, pip=ray_pip)
    return LocalPool(workers, trainer=trainer)


def open_study_storage(out: Path, requested: str | None, spec_dict: dict) -> StudyStore:
    """The study's store (see runsync.resolve_store), refusing a storage that holds another study and
    one that lives in a single process (memory://: workers are other processes). Writes nothing."""
    store = resolve_store(out, requested)
    if store.storage is None:
        return store
    if store.location.lower().startswith("memory://"):
        raise UserError(f"--storage {store.location}: memory:// lives inside one process and workers are other "
                        "processes; use a path or a shared URL (file://, s3://, gs://, az://)")
    check_stored_spec(store, spec_dict)
    return store


def check_stored_spec(store: StudyStore, spec_dict: dict) -> None:
    """Refuse (one line) a storage whose spec.yaml is of another study or unreadable; none is fine."""
    raw = store.storage.get(SPEC_FILE)
    if raw is None:
        return
    try:
        if len(raw) > MAX_YAML_BYTES:  # someone else's file: bounded (size, depth, aliases) like every YAML read
            raise UserError(f"larger than {MAX_YAML_BYTES:,} bytes")
        theirs = specmod.spec_to_dict(specmod.resolve(specmod.load_spec(yaml_load(raw.decode("utf-8")),
                                                                        source=SPEC_FILE)))
    except (UserError, yaml.YAMLError, AttributeError, UnicodeDecodeError, RecursionError):
        raise UserError(f"--storage {store.location}: holds a {SPEC_FILE} this version cannot read; "
                        "choose another storage") from None
    if not specmod.same_study(theirs, spec_dict):
        raise UserError(f"--storage {store.location}: holds a different study ({theirs.get('name', '?')!r}); "
                        "choose another storage")


def claim_storage(out: Path, store: StudyStore, spec_dict: dict) -> None:
    """Claim a new storage for this study atomically (of coordinators of different studies started at
    once on it, exactly one wins; the others get check_stored_spec's one-line refusal), then record the
    storage in the study directory."""
    if store.storage is not None and not store.storage.put_new(SPEC_FILE, (out / SPEC_FILE).read_bytes()):
        check_stored_spec(store, spec_dict)  # claimed by someone else just now: the same study is fine
    store.record()


@contextlib.contextmanager
def study_directory(out_dir: str | Path) -> Iterator[Path]:
    """Create (if needed) and lock a study directory for one coordinator session.

    Bad paths (a file, a symlink loop, a read-only place) are one-line errors. When the session
    fails on bad input, a directory it created is removed again if still empty, and so is a lock
    file it created: a refused command leaves nothing behind.
    """
    out = Path(out_dir)
    try:
        if out.exists() and not out.is_dir():
            raise UserError(f"{out}: exists and is not a directory")
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        had_lock = (out / STUDY_LOCK).exists()
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        why = "a symlink loop" if e.errno == errno.ELOOP else (e.strerror or str(e))
        raise UserError(f"{out}: cannot use as a study directory ({why})") from None
    lock = lock_study(out)
    try:
        yield out
    except UserError:
        lock.release()
        if not had_lock:
            (out / STUDY_LOCK).unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty
        raise
    finally:
        lock.release()


def run_study(spec: str | Path | dict | specmod.StudySpec, out_dir: str | Path, workers: int = 1,
              backend: str = "local", ray_address: str | None = None, profile: str | None = None,
              max_retries: int = 2, progress: bool = True, gpus_per_run: float | None = None,
              cpus_per_run: float | None = None, trainer: TrainFn | None = None,
              max_runs: int | None = planmod.DEFAULT_MAX_RUNS, storage: str | None = None,
              ray_pip: bool = False, slurm: list[str] | None = None, detach: bool = False,
              retrain_damaged: bool = False) -> StudyResult:
    """Train every run of a study into `out_dir` (see the module doc); returns what it left.

    `max_runs` refuses a study larger than that (counted before anything is expanded; None: no
    limit). `storage`: where the run directories live (a path or an fsspec URL; default the study
    directory; a study remembers it). `ray_pip`: install vitlab's dependencies on the Ray workers.
    `slurm`: `KEY=VALUE` items over the spec's `slurm:` section (backend slurm); `detach`: submit the
    tasks and return without waiting (a rerun attaches to them, see study/slurm.py).
    `retrain_damaged`: train runs whose files are malformed again (resuming from their checkpoint); by
    default they are reported as `damaged` (one warning each) and skipped.
    `trainer` replaces `vitlab.training.run_training` (tests only). Raises UserError on bad input before
    anything is written.
    """
    check_options(workers, backend, max_retries)
    check_backend_options(backend, ray_address, gpus_per_run, cpus_per_run, ray_pip, slurm, detach)
    study = specmod.load_spec(spec)
    if study.kind != "study":
        raise UserError(f"{study.source}: space: this is a search spec; run it with `vitlab search`")
    study = specmod.resolve(study, profile)
    runs = planmod.expand(study, max_runs=max_runs)
    if backend != "local" and any(r.config.train.budget_minutes is not None for r in runs):
        raise UserError(f"train.budget_minutes: a study on --backend {backend} cannot calibrate its step counts on "
                        "the machines its runs use; use train.budget_flops (the same steps on any machine)")
    resources = slurm_resources(study.slurm, slurm) if backend == "slurm" else None
    if resources is not None:
        check_cluster(resources)
    with study_directory(out_dir) as out:
        spec_dict = specmod.spec_to_dict(study)
        store = open_study_storage(out, storage, spec_dict)
        fresh = not (out / SPEC_FILE).exists()
        prepare_study_dir(out, spec_dict)
        try:
            claim_storage(out, store, spec_dict)
        except UserError:
            if fresh:  # a refused command leaves nothing behind
                (out / SPEC_FILE).unlink(missing_ok=True)
            raise
        store.fetch_all()  # the index is rebuilt from storage: it holds the truth
        with open_writer(out) as index:
            meta = study_meta(study)
            index.set_meta(meta)
            for r in runs:  # every factor's rows (a run shared by factors trains once, below)
                index.add_run(r.run_id, r.factor, r.level, r.level_label, r.level_order, r.seed, r.varied,
                              r.config_dict())
            if study.adaptive is not None:
                source = AdaptiveSource(study, unique_runs(study, runs), out, index, max_retries, meta,
                                        retrain_damaged)
            else:
                source = GridSource(study, unique_runs(study, runs), out, index, max_retries, retrain_damaged)
            source.storage = store.location
            prog = StudyProgress(study.name, source.total, source.done, workers, enabled=progress)
            source.progress = prog
            source.calibration = StudyCalibration(out, local_threads_per_run(workers), note=prog.note)
            source.calibration.prepare(r.config for r in source.queue)  # before any worker competes

            def pool():
                if resources is not None:
                    return SlurmPool(workers, resources, out, study.name, trainer, store, detach)
                return make_pool(backend, workers, ray_address, gpus_per_run, cpus_per_run, trainer, store, ray_pip)

            detached = None
            try:
                drive(source, pool, index, prog, max_retries, store)
            except Detached as d:
                detached = str(d)
            result = study_result(study, out, index, source.run_ids)
            result.detached = detached
            result.trained = source.trained
            return result


def study_result(study: specmod.StudySpec, out: Path, index: IndexWriter, run_ids: list[str]) -> StudyResult:
    result = StudyResult(study_dir=out, name=study.name, kind="study")
    for rid in run_ids:
        status, _ = index.status(rid)
        result.counts[status] = result.counts.get(status, 0) + 1
        if status in (RunStatus.FAILED, RunStatus.DAMAGED):
            result.errors[rid] = index.summary(rid).get("error", str(status))
    return result
