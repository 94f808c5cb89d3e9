"""Run directories in storage: where a worker trains, what it publishes, what the coordinator mirrors.

A study's storage (storage.py) holds `runs/<run_id>/…`, laid out exactly like a run directory. By
default the storage *is* the study directory: workers train in place under a flock and nothing here
copies anything. With another storage (`--storage s3://…`, a network path), for each run:

- the worker takes the run's lease in storage (lease.py), pulls the run's files into a local scratch
  directory (its last checkpoint, metrics, summary: a run resumes on any node from its last checkpoint
  in storage), trains there, and after every epoch publishes the files that changed, in an order that
  keeps storage consistent: checkpoints first, then metrics.jsonl (a metric line in storage always has
  its checkpoint there), summary.json last (a final status in storage means every other file is there);
- the coordinator mirrors each run's small files (config, metrics, summary, confusion matrix, trial,
  analysis; not checkpoints) from storage into DIR/runs/<run_id>/, so the index, `vitlab results` and
  `vitlab report` read the study directory as they always do. `fetch_file` brings a checkpoint on demand.

DIR/storage.json records a study's storage: a rerun without --storage keeps using it.

Nothing here writes through a symbolic link (safepath.py): a run directory that is a link, or holds
one, is refused before a worker trains in it (the run fails with one line, it is not retried); the
coordinator's mirror writes only inside the study directory and skips, with a warning, a run whose
files in storage are links.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import UserError, warn
from ..io import atomic_write_bytes, atomic_write_json, json_bytes, mark_interrupted
from ..jsonread import MalformedFile, parse_json, read_json_file
from ..safepath import UnsafePathError, check_tree, inside, walk_files, within, writable_run_dir
from ..rundir import (ANALYSIS_DIR, BEST_CHECKPOINT, CHECKPOINTS_DIR, CONFIG_FILE, CONFUSION_FILE, FINAL_STATUSES,
                      LAST_CHECKPOINT, LEASE_FILE, MAX_METRICS_BYTES, METRICS_FILE, RUNS_DIR, SUMMARY_FILE, RunStatus,
                      check_metrics_row, read_metrics, read_summary)
from .lease import LEASE_TTL_S, Lease
from .lock import RUN_LOCK, DirLock
from .storage import Storage, StorageError, is_url, open_storage

#: DIR/storage.json: {"location": URL or path} of a study whose runs live outside its directory.
STORAGE_FILE = "storage.json"
#: storage.json holds one URL: larger is not ours.
MAX_STORAGE_RECORD_BYTES = 64 * 2 ** 10
#: Environment variable naming the local scratch root where workers train runs of a remote storage.
SCRATCH_ENV = "VITLAB_SCRATCH"
#: How long a worker waits for a run directory (flock) or run lease still held by a dying worker.
RUN_LOCK_WAIT_S = 60.0
LEASE_WAIT_S = 2 * LEASE_TTL_S + 10
#: How long `vitlab analyze` waits for a run's lease before it publishes the analysis to storage.
PUBLISH_LEASE_WAIT_S = 5.0
#: Files the coordinator mirrors exactly (removed from the mirror when storage lacks them).
STATE_FILES = (CONFIG_FILE, CONFUSION_FILE, METRICS_FILE, SUMMARY_FILE)


def run_key(run_id: str, rel: str = "") -> str:
    return f"{RUNS_DIR}/{run_id}" + (f"/{rel}" if rel else "")


def mirrored(rel: str) -> bool:
    """Whether the coordinator keeps a local copy of a run file (everything but checkpoints and the lease)."""
    return not rel.startswith(CHECKPOINTS_DIR + "/") and rel != LEASE_FILE


def publish_rank(rel: str) -> int:
    """Publish order within one run: checkpoints, other files, metrics.jsonl, summary.json last."""
    order = {f"{CHECKPOINTS_DIR}/{BEST_CHECKPOINT}": 0, f"{CHECKPOINTS_DIR}/{LAST_CHECKPOINT}": 1,
             METRICS_FILE: 8, SUMMARY_FILE: 9}
    return order.get(rel, 2 if rel.startswith(CHECKPOINTS_DIR + "/") else 5)


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _local_files(root: Path) -> dict[str, Path]:
    """Files of a local run directory by relative key, without hidden ones (locks, tmp files, probes)
    and without following links."""
    files, _ = walk_files(root)
    return {rel: root / rel for rel in files if not any(part.startswith(".") for part in rel.split("/"))}


# ----------------------------------------------------------------------------------------------
# worker side


def scratch_root() -> Path:
    """The directory on this machine under which workers train runs of remote storages."""
    return Path(os.environ.get(SCRATCH_ENV) or Path(tempfile.gettempdir()) / "vitlab-scratch")


def scratch_dir(location: str, run_id: str) -> Path:
    """Where a worker trains `run_id` of the storage `location` on this machine."""
    return scratch_root() / hashlib.sha1(location.encode()).hexdigest()[:12] / run_id


def remove_scratch(location: str, run_id: str) -> None:
    """Remove the scratch directory of `run_id` (storage holds the run; a killed worker left it here)."""
    path = scratch_dir(location, run_id)
    if not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # only when no other run of the study trains here


class Publisher:
    """Copies a run's scratch directory to storage: only what changed since the last pull or publish."""

    def __init__(self, storage: Storage, run_id: str, local: Path, lease: Lease | None = None):
        self.storage, self.run_id, self.local, self.lease = storage, run_id, local, lease
        self.stamps: dict[str, tuple[int, int]] = {}

    def pull(self) -> list[str]:
        """Replace the scratch directory with the run's files in storage; their keys."""
        shutil.rmtree(self.local, ignore_errors=True)
        self.local.mkdir(parents=True, exist_ok=True)
        check_tree(self.local, "scratch directory")  # rmtree leaves a planted link (and mkdir accepts it)
        prefix = run_key(self.run_id)
        pulled = []
        for key in self.storage.list(prefix):
            rel = key[len(prefix) + 1:]
            if rel == LEASE_FILE:
                continue
            path = inside(self.local, Path(*rel.split("/")), "scratch directory")
            if self.storage.download(key, path):
                self.stamps[rel] = _stamp(path)
                pulled.append(rel)
        return pulled

    def changed(self) -> list[str]:
        files = _local_files(self.local)
        return sorted((rel for rel, p in files.items() if self.stamps.get(rel) != _stamp(p)),
                      key=lambda rel: (publish_rank(rel), rel))

    def publish(self) -> list[str]:
        """Upload the changed files in publish order, after checking the lease is still ours."""
        todo = self.changed()
        if not todo:
            return []
        if self.lease is not None:
            self.lease.check()
        for rel in todo:
            path = self.local / rel
            stamp = _stamp(path)
            self.storage.upload(run_key(self.run_id, rel), path)
            self.stamps[rel] = stamp
        return todo


class Workspace:
    """Where one worker trains one run: `path`; `publish()` after each epoch; a context manager.

    In place (the storage is the study directory): `path` is the run directory, held by a flock.
    Otherwise: a scratch directory pulled from storage under the run's lease, removed at the end.
    """

    def __init__(self, run_id: str, run_dir: str | Path, location: str | None):
        self.run_id, self.location = run_id, location
        self.lock: DirLock | None = None
        self.lease: Lease | None = None
        self.publisher: Publisher | None = None
        self.path = Path(run_dir) if location is None else scratch_dir(location, run_id)

    def __enter__(self) -> "Workspace":
        if self.location is None:
            writable_run_dir(self.path)  # before the lock file is created in it
            self.lock = DirLock(self.path, RUN_LOCK)
            if not self.lock.acquire(timeout=RUN_LOCK_WAIT_S):
                raise RuntimeError(f"{self.path}: still locked by pid {self.lock.holder()} after {RUN_LOCK_WAIT_S:.0f} s")
            return self
        storage = open_storage(self.location)
        self.lease = Lease(storage, run_key(self.run_id, LEASE_FILE))
        if not self.lease.acquire(wait_s=LEASE_WAIT_S):
            holder = self.lease.describe(self.lease.read())
            self.lease = None
            raise RuntimeError(f"run {self.run_id}: still leased in {storage.url} by {holder} after {LEASE_WAIT_S:.0f} s")
        try:
            within(scratch_root(), self.path, "scratch directory")  # a link planted in a shared temp dir
            self.publisher = Publisher(storage, self.run_id, self.path, self.lease)
            self.publisher.pull()
        except BaseException:
            self.close()
            raise
        return self

    def publish(self) -> None:
        if self.publisher is not None:
            self.publisher.publish()

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
        if self.lease is not None:
            self.lease.release()
        if self.location is not None:
            remove_scratch(self.location, self.run_id)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.publish()  # must land: a StorageError here fails the attempt (it is retried)
            elif self.publisher is not None and issubclass(exc_type, Exception):
                with contextlib.suppress(Exception):
                    self.publish()  # the failed summary, best effort; the error itself is what counts
        finally:
            self.close()


# ----------------------------------------------------------------------------------------------
# coordinator side


class StudyStore:
    """A study's run directories as the coordinator sees them: DIR/runs/<id>, kept in step with storage.

    `storage` None (or `location` None): the study directory is the storage, every method is trivial.
    """

    def __init__(self, study_dir: str | Path, location: str | None = None):
        self.study_dir = Path(study_dir)
        self.location = location
        self.storage: Storage | None = open_storage(location) if location else None

    @property
    def in_place(self) -> bool:
        return self.storage is None

    def run_path(self, run_id: str) -> Path:
        return self.study_dir / RUNS_DIR / run_id

    def fetch(self, run_id: str, sizes: dict[str, int] | None = None, force: bool = True) -> Path:
        """Mirror a run's small files from storage into DIR/runs/<id> (summary last); its local path.

        Unless `force`, a run whose local copy is final and has every mirrored file of storage at the
        same size is left as it is (a study restarting does not download every finished run again).
        A run whose files (in storage or here) pass through a symbolic link is not mirrored: a
        one-line warning says so and the study goes on."""
        local = self.run_path(run_id)
        if self.storage is None:
            return local
        try:
            return self._fetch(run_id, local, sizes, force)
        except UnsafePathError as e:
            warn(f"run {run_id}: not mirrored from storage ({e})")
            return local

    def _fetch(self, run_id: str, local: Path, sizes: dict[str, int] | None, force: bool) -> Path:
        within(self.study_dir, local, "study directory")
        prefix = run_key(run_id)
        if sizes is None:
            sizes = self.storage.sizes(prefix)
        wanted = {k[len(prefix) + 1:]: n for k, n in sizes.items() if k.startswith(prefix + "/")}
        wanted = {rel: n for rel, n in wanted.items() if mirrored(rel)}
        if not force and self._final_and_current(local, wanted):
            return local
        for rel in sorted(wanted, key=lambda rel: (publish_rank(rel), rel)):
            data = self.storage.get(run_key(run_id, rel))
            if data is None:
                wanted.pop(rel)
                continue
            path = within(self.study_dir, local.joinpath(*rel.split("/")), "study directory")
            if not (path.is_file() and path.read_bytes() == data):
                atomic_write_bytes(path, data)
        for name in STATE_FILES:
            if name not in wanted:
                within(self.study_dir, local / name, "study directory").unlink(missing_ok=True)
        return local

    @staticmethod
    def _final_and_current(local: Path, wanted: dict[str, int]) -> bool:
        try:
            summary = read_summary(local)
        except MalformedFile:
            return False  # fetched again: storage may hold a good copy
        if summary is None or RunStatus.parse(summary.get("status")) not in FINAL_STATUSES:
            return False
        for rel, size in wanted.items():
            path = local.joinpath(*rel.split("/"))
            if not path.is_file() or path.stat().st_size != size:
                return False
        return True

    def fetch_all(self) -> list[str]:
        """Mirror every run in storage (one listing); their IDs."""
        if self.storage is None:
            return []
        by_run: dict[str, dict[str, int]] = {}
        for key, size in self.storage.sizes(RUNS_DIR).items():
            parts = key.split("/")
            if len(parts) >= 3:
                by_run.setdefault(parts[1], {})[key] = size
        for run_id, sizes in by_run.items():
            self.fetch(run_id, sizes, force=False)
        return sorted(by_run)

    def fetch_file(self, run_id: str, rel: str) -> Path | None:
        """A run file (e.g. "checkpoints/best.pt") on this machine, downloaded when needed; None if absent."""
        path = within(self.study_dir, self.run_path(run_id).joinpath(*rel.split("/")), "study directory")
        if self.storage is None or path.is_file():
            return path if path.is_file() else None
        return path if self.storage.download(run_key(run_id, rel), path) else None

    def put_run_file(self, run_id: str, rel: str, data: bytes) -> None:
        """Write a run file the coordinator owns (e.g. trial.json) into the run directory and storage."""
        atomic_write_bytes(self.run_path(run_id).joinpath(*rel.split("/")), data, root=self.study_dir)
        if self.storage is not None:
            self.storage.put(run_key(run_id, rel), data)

    def epochs(self, run_id: str) -> list[dict]:
        """metrics.jsonl of a run as it is now (straight from storage: for progress while it trains); the
        rows before the first malformed line (progress only: the outcome reads the run's files typed)."""
        if self.storage is None:
            try:
                return read_metrics(self.run_path(run_id))
            except MalformedFile:
                return []
        key = run_key(run_id, METRICS_FILE)
        if self.storage.sizes(key).get(key, 0) > MAX_METRICS_BYTES:
            return []
        rows = []
        for line in (self.storage.get(key) or b"").splitlines():
            try:
                rows.append(check_metrics_row(parse_json(line, key), key))
            except MalformedFile:
                break
        return rows

    def mark_interrupted(self, run_id: str) -> bool:
        """Best effort, once the run's worker was stopped: its summary says `interrupted`, not `running`,
        here and in storage. Storage is written under the run's lease, which a worker that died on this
        machine left free; a worker elsewhere still holds it (there the status changes when a rerun
        resumes the run). True when storage was marked."""
        marked = mark_interrupted(self.run_path(run_id))
        if self.storage is None:
            return marked
        lease = Lease(self.storage, run_key(run_id, LEASE_FILE))
        try:
            if not lease.acquire(wait_s=0):
                return False
            try:
                key = run_key(run_id, SUMMARY_FILE)
                summary = parse_json(self.storage.get(key) or b"null", key)
                if not isinstance(summary, dict) or summary.get("status") != RunStatus.RUNNING.value:
                    return False
                self.storage.put(key, json_bytes({**summary, "status": RunStatus.INTERRUPTED.value}))
                return True
            finally:
                lease.release()
        except (MalformedFile, StorageError, OSError):
            return False

    # ------------------------------------------------------------------ the study's record of it
    def record(self) -> None:
        """Write DIR/storage.json (once) so that a rerun without --storage keeps this storage."""
        if self.location is not None and recorded_location(self.study_dir) is None:
            atomic_write_json(self.study_dir / STORAGE_FILE, {"location": self.location})


def recorded_location(study_dir: str | Path) -> str | None:
    """The storage a study directory recorded, or None (its runs live in it)."""
    path = Path(study_dir) / STORAGE_FILE
    if not path.exists():
        return None
    try:
        data = read_json_file(path, MAX_STORAGE_RECORD_BYTES)
    except MalformedFile:
        data = None
    if not data or not isinstance(data.get("location"), str):
        raise UserError(f"{path}: unreadable (expected {{\"location\": URL}}); restore it or delete the study directory")
    return data["location"]


def normalize_location(location: str | os.PathLike) -> str:
    """A URL as given (no trailing slash), or a path made absolute."""
    text = str(location).strip()
    if is_url(text):
        return text.rstrip("/")
    return str(Path(text).expanduser().absolute())


def _same_dir(location: str, study_dir: Path) -> bool:
    path = location.split("://", 1)[1] if location.lower().startswith("file://") else location
    if is_url(path):
        return False
    return Path(path).resolve() == study_dir.resolve()


def resolve_store(study_dir: str | Path, requested: str | os.PathLike | None) -> StudyStore:
    """The study's store for this session: the recorded storage, or `requested` for a new study.

    Refuses (one line) a storage different from the recorded one, and a storage for a study whose runs
    were trained in its own directory. Writes nothing (`StudyStore.record` does, once the study starts).
    """
    study_dir = Path(study_dir)
    recorded = recorded_location(study_dir)
    if requested is None or str(requested).strip() == "":
        location = recorded
    else:
        location = normalize_location(requested)
        if _same_dir(location, study_dir):
            location = None
        if location != recorded:
            if recorded is not None:
                raise UserError(f"--storage {requested}: {study_dir} keeps its runs in {recorded}; rerun with that "
                                "storage (or none) or choose another --out")
            if any((study_dir / RUNS_DIR).glob(f"*/{SUMMARY_FILE}")):
                raise UserError(f"--storage {requested}: {study_dir} already holds runs trained in the study "
                                "directory itself; rerun without --storage or choose another --out")
    try:
        return StudyStore(study_dir, location)
    except StorageError:
        raise
    except UserError as e:
        raise UserError(f"{study_dir / STORAGE_FILE}: {e}" if requested is None else str(e)) from None


def _stored_study(run_dir: Path) -> Path | None:
    """The study directory of STUDY/runs/<id> when that study keeps its runs in another storage, else None."""
    study_dir = run_dir.parent.parent
    if run_dir.parent.name != RUNS_DIR or not (study_dir / STORAGE_FILE).is_file():
        return None
    return study_dir


def fetch_checkpoint(run_dir: str | Path, which: str = BEST_CHECKPOINT) -> Path | None:
    """For STUDY/runs/<id> of a study that keeps its runs in another storage: download the run's
    checkpoint `which` when it is not here (`vitlab analyze` / `export` need it). Its path, or None
    when the directory is not such a run."""
    run_dir = Path(run_dir)
    study_dir = _stored_study(run_dir)
    if study_dir is None:
        return None
    location = recorded_location(study_dir)
    return StudyStore(study_dir, location).fetch_file(run_dir.name, f"{CHECKPOINTS_DIR}/{which}")


def publish_analysis(run_dir: str | Path, scalars: dict) -> list[str] | None:
    """For STUDY/runs/<id> of a study that keeps its runs in another storage: publish what `vitlab
    analyze` / `export` wrote locally, so that storage (the source of truth, mirrored over the local
    copy by every rerun) holds it too. Under the run's lease: RUN/analysis/* is uploaded, then the
    storage's summary.json gains `scalars` (the analysis metrics; the rest of it stays as storage has
    it). Returns the keys written, or None when the directory is not such a run.

    UserError (one line) when a worker holds the run's lease: the analysis stays local and a rerun of
    the command, which skips the sections already computed, publishes it."""
    run_dir = Path(run_dir)
    study_dir = _stored_study(run_dir)
    if study_dir is None:
        return None
    store = StudyStore(study_dir, recorded_location(study_dir))
    if store.storage is None:
        return None
    run_id = run_dir.name
    lease = Lease(store.storage, run_key(run_id, LEASE_FILE))
    if not lease.acquire(wait_s=PUBLISH_LEASE_WAIT_S):
        raise UserError(f"run {run_id}: leased in {store.storage.url} by {lease.describe(lease.read())} (it is "
                        "training); the analysis is kept in the local copy only: rerun the command when it is done")
    written = []
    try:
        files, _ = walk_files(run_dir / ANALYSIS_DIR)
        for rel in sorted(files):
            if not any(part.startswith(".") for part in rel.split("/")):
                key = run_key(run_id, f"{ANALYSIS_DIR}/{rel}")
                store.storage.upload(key, inside(run_dir, Path(ANALYSIS_DIR, *rel.split("/")), "run directory"))
                written.append(key)
        raw = store.storage.get(run_key(run_id, SUMMARY_FILE))
        try:
            summary = parse_json(raw, run_key(run_id, SUMMARY_FILE)) if raw is not None else None
        except MalformedFile:
            summary = None
        if isinstance(summary, dict) and scalars and any(summary.get(k) != v for k, v in scalars.items()):
            summary.update(scalars)
            store.storage.put(run_key(run_id, SUMMARY_FILE), json_bytes(summary))
            written.append(run_key(run_id, SUMMARY_FILE))
    finally:
        lease.release()
    return written


def fetch_study(study_dir: str | Path) -> list[str]:
    """Mirror every run of a study from its recorded storage (no-op for a study kept in place)."""
    location = recorded_location(study_dir)
    return StudyStore(study_dir, location).fetch_all() if location else []


__all__ = ["LEASE_WAIT_S", "PUBLISH_LEASE_WAIT_S", "Publisher", "RUN_LOCK_WAIT_S", "SCRATCH_ENV", "STORAGE_FILE",
           "StudyStore", "Workspace", "fetch_checkpoint", "fetch_study", "mirrored", "normalize_location",
           "publish_analysis", "publish_rank", "recorded_location", "remove_scratch", "resolve_store", "run_key",
           "scratch_dir", "scratch_root"]
