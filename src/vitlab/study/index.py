"""The study index: DIR/index.sqlite, a queryable cache of DIR/spec.yaml + DIR/runs/*.

The run directories are the truth (each written atomically by its training run, mirrored from the
study's storage when it keeps them elsewhere: runsync.py); the index adds
what they do not hold (attempt counts, the factor/level of each run) and makes a study fast to
query. Only the coordinator writes it (`IndexWriter`); readers use `StudyIndex`. It can always be
rebuilt from the directory (`rebuild_index`), losing only the attempt counts.

The index is read back like any run file: every JSON column is parsed bounded and typed (jsonread.py,
rundir.check_summary), and a row that is not what the writer puts there is a `CorruptIndex`, which
`open_index` / `open_writer` answer by rebuilding, as they do for SQLite-level damage.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from ..yamlsafe import yaml_load
from ..errors import UserError, warn
from ..jsonread import MalformedFile, parse_json
from ..rundir import (FINAL_STATUSES, RUNS_DIR, TRIAL_FILE, RunStatus, check_metrics_row, check_summary, read_metrics,
                      read_summary, read_trial, warn_damaged)
from . import compare
from . import spec as specmod
from . import plan as planmod
from .lock import STUDY_LOCK, DirLock
from .runsync import fetch_study

INDEX_FILE = "index.sqlite"
SPEC_FILE = "spec.yaml"
#: Seconds a connection waits for the writer's lock before giving up.
SQLITE_TIMEOUT_S = 60.0
#: Longest plain text column (a run ID, factor or level label) the index may hold.
MAX_COLUMN_CHARS = 10_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs(
    run_id TEXT, factor TEXT, level_json TEXT, level_label TEXT, level_order INTEGER, seed INTEGER,
    status TEXT, attempts INTEGER, varied_json TEXT, config_json TEXT, summary_json TEXT,
    updated_at REAL, PRIMARY KEY (run_id, factor));
CREATE TABLE IF NOT EXISTS epochs(
    run_id TEXT, epoch INTEGER, metrics_json TEXT, PRIMARY KEY (run_id, epoch));
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
"""



@dataclass
class RunRecord:
    """One row of the index: a run under one factor (a run shared by factors has one per factor)."""

    run_id: str
    factor: str
    level: Any
    level_label: str
    level_order: int
    seed: int
    status: str
    attempts: int
    varied: dict
    config: dict
    summary: dict
    epochs: list[dict] = field(default_factory=list)


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    if readonly and not os.access(path, os.W_OK):
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=SQLITE_TIMEOUT_S)
    else:
        # A reader that may write can roll back a hot journal left by a killed writer.
        con = sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S)
    con.row_factory = sqlite3.Row
    try:  # a truncated or foreign file fails here, not in the middle of a command
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as e:
        con.close()
        raise CorruptIndex(f"{path}: not a readable SQLite index ({e})") from None
    return con


class CorruptIndex(UserError):
    """DIR/index.sqlite is damaged; `open_index` and the coordinator rebuild it from the run directories."""


class StudyIndex:
    """Read access to DIR/index.sqlite."""

    def __init__(self, study_dir: str | Path, readonly: bool = True):
        self.study_dir = Path(study_dir)
        self.path = self.study_dir / INDEX_FILE
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such index (open_index rebuilds it from the study directory)")
        self.con = _connect(self.path, readonly)

    def close(self) -> None:
        self.con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def meta(self) -> dict:
        """name, kind, factors {factor: [level_label, ...]}, reference {factor: label}, metrics,
        profile, base (the base config dict), and for searches objective/direction/space."""
        meta = {}
        for r in self.con.execute("SELECT key, value FROM meta"):
            key = _column(self.path, "meta", r["key"], str, "key")
            meta[key] = self._json(r["value"], f"meta {key[:40]}")
        if not isinstance(meta.get("factors", {}), dict):
            raise CorruptIndex(f"{self.path}: meta factors: not an object")
        return meta

    def _json(self, text: Any, where: str, kind: type | None = None) -> Any:
        """A JSON column, parsed bounded (and of type `kind`), or CorruptIndex."""
        if not isinstance(text, str):
            raise CorruptIndex(f"{self.path}: {where}: {type(text).__name__} where JSON text belongs")
        try:
            value = parse_json(text, f"{self.path}: {where}")
        except MalformedFile as e:
            raise CorruptIndex(str(e)) from None
        if kind is not None and not isinstance(value, kind):
            raise CorruptIndex(f"{self.path}: {where}: {type(value).__name__} where {kind.__name__} belongs")
        return value

    def _summary(self, text: Any, where: str) -> dict:
        try:
            return check_summary(self._json(text or "{}", where, dict), f"{self.path}: {where}")
        except MalformedFile as e:
            raise CorruptIndex(str(e)) from None

    def _epoch(self, r: sqlite3.Row) -> dict:
        where = f"epochs of {str(r['run_id'])[:40]}"
        row = {"epoch": _column(self.path, where, r["epoch"], int, "epoch"), **self._json(r["metrics_json"], where, dict)}
        try:
            return check_metrics_row(row, f"{self.path}: {where}")
        except MalformedFile as e:
            raise CorruptIndex(str(e)) from None

    def check(self) -> None:
        """Read every row as `meta()` and `runs()` do: CorruptIndex when one is not what the writer puts there."""
        self.runs()

    def runs(self, factor: str | None = None, status: str | None = None) -> list[RunRecord]:
        """Index rows, ordered by factor (spec order), level order, seed."""
        sql, args = "SELECT * FROM runs", []
        where = []
        if factor is not None:
            where.append("factor = ?")
            args.append(factor)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.con.execute(sql, args).fetchall()
        epochs: dict[str, list[dict]] = {}
        for r in self.con.execute("SELECT run_id, epoch, metrics_json FROM epochs ORDER BY run_id, epoch"):
            epochs.setdefault(r["run_id"], []).append(self._epoch(r))
        order = {f: i for i, f in enumerate(self.meta().get("factors", {}))}
        records = [self._record(r, epochs) for r in rows]
        records.sort(key=lambda rec: (order.get(rec.factor, len(order)), rec.factor, rec.level_order, rec.seed))
        return records


    def _record(self, r: sqlite3.Row, epochs: dict[str, list[dict]]) -> RunRecord:
        """One `runs` row, typed (CorruptIndex when a column is not what the writer puts there)."""
        where = f"run {str(r['run_id'])[:40]}"
        status = _column(self.path, where, r["status"], str, "status")
        if RunStatus.parse(status) is None:
            raise CorruptIndex(f"{self.path}: {where}: status {status[:40]!r} is not a run status")
        return RunRecord(run_id=_column(self.path, where, r["run_id"], str, "run_id"),
                         factor=_column(self.path, where, r["factor"], str, "factor"),
                         level=self._json(r["level_json"], f"{where} level"),
                         level_label=_column(self.path, where, r["level_label"], str, "level_label"),
                         level_order=_column(self.path, where, r["level_order"], int, "level_order"),
                         seed=_column(self.path, where, r["seed"], int, "seed"), status=status,
                         attempts=_column(self.path, where, r["attempts"], int, "attempts"),
                         varied=self._json(r["varied_json"], f"{where} varied", dict),
                         config=self._json(r["config_json"], f"{where} config", dict),
                         summary=self._summary(r["summary_json"], f"{where} summary"),
                         epochs=epochs.get(r["run_id"], []))


def _column(path: Path, where: str, value: Any, kind: type, name: str) -> Any:
    """A plain column of type `kind` (bool is no int here), or CorruptIndex."""
    if not isinstance(value, kind) or isinstance(value, bool) or isinstance(value, int) and abs(value) > 2 ** 63:
        raise CorruptIndex(f"{path}: {where}: {name} is {type(value).__name__}, not {kind.__name__}")
    if isinstance(value, str) and len(value) > MAX_COLUMN_CHARS:
        raise CorruptIndex(f"{path}: {where}: {name} of {len(value):,} characters")
    return value


class IndexWriter(StudyIndex):
    """The coordinator's write access. Every method commits before returning.

    `db_path` (default DIR/index.sqlite) lets a rebuild write a fresh file next to the live one.
    """

    def __init__(self, study_dir: str | Path, db_path: str | Path | None = None):
        self.study_dir = Path(study_dir)
        self.path = Path(db_path) if db_path is not None else self.study_dir / INDEX_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = _connect(self.path, readonly=False)
        with self.con:
            self.con.executescript(SCHEMA)

    def set_meta(self, meta: dict) -> None:
        with self.con:
            self.con.execute("DELETE FROM meta")
            self.con.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in meta.items()])  # keeps spec order

    def add_run(self, run_id: str, factor: str, level: Any, level_label: str, level_order: int,
                seed: int, varied: dict, config: dict, status: str = RunStatus.PENDING, attempts: int = 0,
                summary: dict | None = None) -> None:
        """Insert a row unless (run_id, factor) is already there (its status and attempts are kept)."""
        with self.con:
            self.con.execute(
                "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, factor, json.dumps(level), level_label, level_order, seed, RunStatus(status).value, attempts,
                 json.dumps(varied, sort_keys=True), json.dumps(config, sort_keys=True),
                 json.dumps(summary or {}, sort_keys=True), time.time()))

    def run_ids(self) -> set[str]:
        return {r[0] for r in self.con.execute("SELECT DISTINCT run_id FROM runs")}

    def status(self, run_id: str) -> tuple[str, int] | None:
        """(status, attempts) of a run, or None when it is not in the index."""
        r = self.con.execute("SELECT status, attempts FROM runs WHERE run_id = ? LIMIT 1", (run_id,)).fetchone()
        if not r:
            return None
        where = f"run {run_id}"
        return _column(self.path, where, r["status"], str, "status"), _column(self.path, where, r["attempts"], int, "attempts")

    def summary(self, run_id: str) -> dict:
        r = self.con.execute("SELECT summary_json FROM runs WHERE run_id = ? LIMIT 1", (run_id,)).fetchone()
        return self._summary(r["summary_json"], f"run {run_id} summary") if r else {}

    def set_status(self, run_id: str, status: str, summary: dict | None = None, add_attempt: bool = False,
                   attempts: int | None = None) -> None:
        """Update every row of a run (all its factors)."""
        sets, args = ["status = ?", "updated_at = ?"], [RunStatus(status).value, time.time()]
        if summary is not None:
            sets.append("summary_json = ?")
            args.append(json.dumps(summary, sort_keys=True, default=str))
        if add_attempt:
            sets.append("attempts = attempts + 1")
        if attempts is not None:
            sets.append("attempts = ?")
            args.append(attempts)
        with self.con:
            self.con.execute(f"UPDATE runs SET {', '.join(sets)} WHERE run_id = ?", (*args, run_id))

    def add_epoch(self, run_id: str, row: dict) -> None:
        metrics = {k: v for k, v in row.items() if k != "epoch"}
        with self.con:
            self.con.execute("INSERT OR REPLACE INTO epochs VALUES (?, ?, ?)",
                             (run_id, int(row["epoch"]), json.dumps(metrics, sort_keys=True, default=str)))

    def set_epochs(self, run_id: str, rows: Iterable[dict]) -> None:
        """Replace a run's epochs with `rows` (its metrics.jsonl)."""
        with self.con:
            self.con.execute("DELETE FROM epochs WHERE run_id = ?", (run_id,))
            self.con.executemany(
                "INSERT OR REPLACE INTO epochs VALUES (?, ?, ?)",
                [(run_id, int(r["epoch"]), json.dumps({k: v for k, v in r.items() if k != "epoch"},
                                                      sort_keys=True, default=str))
                 for r in rows if "epoch" in r])


# ----------------------------------------------------------------------------------------------
# run directories


def run_dir(study_dir: str | Path, run_id: str) -> Path:
    return Path(study_dir) / RUNS_DIR / run_id


def read_run_state(run_path: str | Path) -> tuple[dict | None, list[dict], MalformedFile | None]:
    """(summary or None, metrics rows, None) of a run directory; ({damaged summary}, [], the error)
    when one of its files is malformed (the caller warns and reports the run as damaged)."""
    try:
        return read_summary(run_path), read_metrics(run_path), None
    except MalformedFile as e:
        return {"status": RunStatus.DAMAGED.value, "error": str(e)[:1000]}, [], e


def status_from_summary(summary: dict | None) -> RunStatus:
    """Index status of a run directory read while no coordinator runs it."""
    st = RunStatus.parse((summary or {}).get("status"))
    if st in FINAL_STATUSES or st in (RunStatus.FAILED, RunStatus.DAMAGED):
        return st
    return RunStatus.PENDING  # absent, or "running" when its process died: it resumes from its checkpoint


# ----------------------------------------------------------------------------------------------
# open / rebuild


def open_index(study_dir: str | Path, warn_damaged: bool = True) -> StudyIndex:
    """The study's index for reading; rebuilt from DIR/spec.yaml + DIR/runs/* when missing or damaged.
    Each run it marks damaged is one warning line (unless `warn_damaged` is False)."""
    d = Path(study_dir)
    if not (d / INDEX_FILE).is_file():
        return rebuild_index(d)
    try:
        index = StudyIndex(d)
    except CorruptIndex as e:
        warn_rebuild(e)
        return rebuild_index(d)
    try:
        index.check()
    except CorruptIndex as e:
        index.close()
        warn_rebuild(e)
        return rebuild_index(d)
    if warn_damaged:
        warn_damaged_runs(index)
    return index


def warn_damaged_runs(index: StudyIndex) -> None:
    """One warning line per run the index marks damaged (a rebuild warns as it reads them instead)."""
    seen = set()
    for rec in index.runs(status=RunStatus.DAMAGED.value):
        if rec.run_id not in seen:
            seen.add(rec.run_id)
            warn_damaged(rec.summary.get("error") or f"run {rec.run_id}: damaged")


def open_writer(study_dir: Path) -> IndexWriter:
    """The coordinator's index (call with the study lock held), rebuilt first when damaged."""
    try:
        writer = IndexWriter(study_dir)
        try:
            writer.check()
        except CorruptIndex:
            writer.close()
            raise
        return writer
    except CorruptIndex as e:
        warn_rebuild(e)
        replace_with_fresh_index(study_dir)
        return IndexWriter(study_dir)


def warn_rebuild(e: CorruptIndex) -> None:
    warn(f"{e}; rebuilding it from the run directories (attempt counts restart)")


def rebuild_index(study_dir: str | Path) -> StudyIndex:
    """Recreate DIR/index.sqlite from the study directory (attempt counts restart at 0 or 1)."""
    d = Path(study_dir)
    if not (d / SPEC_FILE).is_file():
        raise UserError(f"{d}: not a vitlab study directory (no {SPEC_FILE})")
    lock = DirLock(d, STUDY_LOCK)
    if not lock.try_acquire():
        raise UserError(f"{d}: a coordinator (pid {lock.holder()}) is running this study and keeps its index; "
                        "wait for it to finish")
    try:
        replace_with_fresh_index(d)
    finally:
        lock.release()
    return StudyIndex(d)


def replace_with_fresh_index(study_dir: Path) -> None:
    """Write a complete index next to DIR/index.sqlite and move it into place (study lock held).

    A study whose runs live in another storage has them mirrored from it first."""
    fetch_study(study_dir)
    tmp = study_dir / f".{INDEX_FILE}.rebuild-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    write_fresh_index(study_dir, tmp)
    os.replace(tmp, study_dir / INDEX_FILE)
    for stale in (INDEX_FILE + "-journal", INDEX_FILE + "-wal", INDEX_FILE + "-shm"):
        (study_dir / stale).unlink(missing_ok=True)  # they belonged to the damaged file


def write_fresh_index(study_dir: Path, target: Path) -> None:
    """Write a complete index for `study_dir` into the new file `target`."""
    study = specmod.resolve(specmod.load_spec(study_dir / SPEC_FILE))
    with IndexWriter(study_dir, db_path=target) as writer:
        writer.set_meta(study_meta(study))
        if study.kind == "study":
            # An adaptive study's extra seeds are the runs of seeds >= min that have a directory.
            seeds = range(study.adaptive.max) if study.adaptive is not None else None
            runs = planmod.expand(study, check_models=False, seeds=seeds, max_runs=None)
            rows = [(r.run_id, r.factor, r.level, r.level_label, r.level_order, r.seed, r.varied, r.config_dict())
                    for r in runs if r.seed in study.seed_list or run_dir(study_dir, r.run_id).is_dir()]
        else:
            rows = search_rows_from_dirs(study_dir)
            writer.set_meta({**study_meta(study), "factors": {"search": [r[3] for r in sorted(rows, key=lambda r: r[4])]}})
        warned: set[str] = set()  # a run shared by factors is warned about once
        for run_id, factor, level, label, order, seed, varied, config in rows:
            summary, epochs, damage = read_run_state(run_dir(study_dir, run_id))
            if damage is not None and run_id not in warned:
                warn_damaged(damage)
                warned.add(run_id)
            status = status_from_summary(summary)
            writer.add_run(run_id, factor, level, label, order, seed, varied, config, status,
                           attempts=0 if status == RunStatus.PENDING else 1, summary=summary)
            writer.set_epochs(run_id, epochs)


def study_meta(study) -> dict:
    """The meta table of a resolved StudySpec."""
    spec = specmod.spec_to_dict(study)
    meta = {"name": study.name, "kind": study.kind, "description": study.description,
            "metrics": list(study.metrics), "profile": study.profile, "base": study.base,
            "spec": spec, "report": dataclasses.asdict(study.report),
            "analysis": list(study.analysis)}
    if study.kind == "study":
        meta.update(mode=study.mode, factors=planmod.factor_labels(study),
                    reference=planmod.reference_labels(study), seeds=list(study.seed_list),
                    levels={f: lv for f, lv in study.factors.items()},
                    compare=compare.to_meta({f: cs for f, cs in compare.declared(study).items() if f in study.compare}),
                    equivalence_margin=study.equivalence_margin)
    else:
        meta.update(factors={"search": []}, reference={}, objective=study.objective.metric,
                    direction=study.objective.direction, space=spec["space"])
    return meta


def search_rows_from_dirs(study_dir: Path) -> list[tuple]:
    """Index rows of a search's trials from their run directories (trial.json + config.yaml)."""
    rows = []
    for path in sorted((study_dir / RUNS_DIR).glob(f"*/{TRIAL_FILE}")):
        try:
            trial = read_trial(path.parent)
            config = yaml_load((path.parent / "config.yaml").read_text(encoding="utf-8")) \
                if (path.parent / "config.yaml").is_file() else trial.get("config", {})
        except MalformedFile as e:
            warn_damaged(e, "the trial is left out of the index")
            continue
        except (OSError, ValueError, yaml.YAMLError):
            continue
        if not isinstance(config, dict) or not isinstance(config.get("seed", 0), int):
            continue
        n = trial["number"]
        rows.append((path.parent.name, "search", trial["params"], f"trial {n}", n, int(config.get("seed", 0)),
                     trial["params"], trial.get("config", config)))
    return rows
