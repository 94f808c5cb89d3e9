"""Crash-safe file writes: a reader sees the old file or the new one, never half of one.

No write follows a symbolic link: the temporary file and an append are opened with O_NOFOLLOW, and
os.replace replaces a link at the final name rather than the file it points to. Directories above
the file are checked by `safepath.inside` when the caller names the root the file must stay in.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UserError
from .rundir import SUMMARY_FILE, RunStatus, read_summary
from .safepath import within

#: Open flags of every file vitlab writes: a planted symbolic link at the name is refused (ELOOP).
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
from .jsonread import MAX_JSON_BYTES, MalformedFile, read_json_file, read_json_lines


#: Temporary files are `.NAME.tmp-PID` beside their target (see remove_stale_temp_files).
TEMP_MARK = ".tmp-"
MAX_JSONL_LINES = 100_000
"""Lines `read_jsonl` reads at most."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, root: str | os.PathLike | None = None) -> None:
    """Write `data` to `path` via a temporary file, fsync and os.replace. With `root`, the path must lie
    inside that directory with no symbolic link below it (safepath.within), checked before anything
    is created."""
    path = Path(path) if root is None else within(root, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | NOFOLLOW, 0o666)
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # a full disk, an interrupt: the old file stays, the partial copy goes
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(e, OSError) and e.filename is None:  # write()/fsync() errors do not say which file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    _fsync_dir(path.parent)


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files (`.NAME.tmp-PID`) that killed processes left in `directory`:
    only those whose PID is no longer running on this machine. Returns what it removed."""
    removed = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for p in entries:
        head, mark, pid = p.name.rpartition(TEMP_MARK)
        if not (mark and head.startswith(".") and pid.isdigit()) or pid_alive(int(pid)):
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process `pid` on this machine runs: this process does; a zombie (killed, not yet reaped)
    and a number no process can have do not; another user's process does."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, ValueError):  # not a possible pid
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):  # no /proc (not Linux), or the process just ended
        return True


def atomic_write_text(path: str | os.PathLike, text: str, root: str | os.PathLike | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), root)


def json_bytes(obj: Any) -> bytes:
    """The form every JSON file of a run is written in (also where storage receives one directly)."""
    return (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode("utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any, root: str | os.PathLike | None = None) -> None:
    atomic_write_bytes(path, json_bytes(obj), root)


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _jsonl_line(record: dict) -> str:
    return json.dumps(record, sort_keys=True, default=_json_default) + "\n"


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and make it durable before returning."""
    line = _jsonl_line(record)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o666)
        with open(fd, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:  # a torn line is ignored by read_jsonl; say which file failed
        if e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Replace a JSON-lines file atomically with `records`."""
    atomic_write_text(path, "".join(_jsonl_line(r) for r in records))


def mark_interrupted(run_dir: str | os.PathLike) -> bool:
    """Best effort: a run whose summary.json says `running` now says `interrupted` (its process was
    stopped: Ctrl-C, or the study's coordinator went). True when it was marked; a damaged or linked
    summary is left alone."""
    path = Path(run_dir) / SUMMARY_FILE
    try:
        summary = read_summary(run_dir)
        if not summary or summary.get("status") != RunStatus.RUNNING.value:
            return False
        atomic_write_json(path, {**summary, "status": RunStatus.INTERRUPTED.value}, root=run_dir)
    except (OSError, UserError):
        return False
    return True


def read_json_object(path: str | os.PathLike) -> dict | None:
    """A JSON file holding an object (bounded: jsonread.py), or None when it is missing or malformed.
    For files whose damage has a default (a tracker's bookkeeping); run files use rundir's typed readers."""
    try:
        return read_json_file(path)
    except MalformedFile:
        return None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """A JSON-lines file of objects (bounded: jsonread.py), ignoring a torn last line left by a crash
    mid-write; MalformedFile when another line is bad."""
    return read_json_lines(path, MAX_JSON_BYTES, MAX_JSONL_LINES)


# ----------------------------------------------------------------------------------------------
# CSV: every CSV vitlab writes (report tables, confusion matrices, `vitlab results --format csv`)

#: First characters that make a spreadsheet evaluate a text cell as a formula (OWASP, CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_field(v) -> object:
    """One CSV value: '' for nan (undefined), 'inf' kept, text that a spreadsheet would evaluate
    as a formula (and that is not a number) prefixed with a single quote."""
    if isinstance(v, float) and math.isnan(v):
        return ""
    if isinstance(v, str) and v.startswith(FORMULA_START):
        try:
            float(v)
        except ValueError:
            return "'" + v
    return v


def csv_text(header: list, rows: Iterable[list]) -> str:
    """A CSV document (RFC 4180 quoting by the csv module, `\\n` line ends) with every cell, header
    included, passed through `csv_field`: names in it may come from someone else's files."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_field(v) for v in header])
    for row in rows:
        w.writerow([csv_field(v) for v in row])
    return buf.getvalue()


def _json_default(o: Any):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ----------------------------------------------------------------------------------------------
# output locations: checked before anything is written


def nearest_existing(path: Path, label: str) -> tuple[Path, list[Path]]:
    """The nearest existing ancestor of `path` (itself included) and the missing ones below it,
    outermost first. A symlink loop or an unreadable component is a one-line UserError."""
    missing = []
    p = path
    while True:
        try:
            os.stat(p)
            return p, list(reversed(missing))
        except FileNotFoundError:
            if p == p.parent:
                raise UserError(f"{path}: {label} is not writable (no such file or directory)") from None
            missing.append(p)
            p = p.parent
        except OSError as e:  # ELOOP (a symlink loop), EACCES, ENOTDIR ...
            raise UserError(f"{path}: {label} is not writable ({e.strerror or e})") from None


def _probe_write(directory: Path) -> None:
    probe = directory / f".write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()


def make_writable_dir(path: str | os.PathLike, label: str = "output directory") -> list[Path]:
    """Create directory `path` (and missing parents) and prove a file can be written in it.

    Returns the directories it created, outermost first, so that a caller whose next step fails
    can `remove_empty_dirs` them. A one-line UserError when it cannot; nothing is left behind then."""
    path = Path(path)
    _, missing = nearest_existing(path, label)
    created: list[Path] = []
    try:
        for d in missing:
            d.mkdir()
            created.append(d)
        if not path.is_dir():
            raise NotADirectoryError(20, "not a directory")
        _probe_write(path)
    except OSError as e:
        remove_empty_dirs(created)
        raise UserError(f"{path}: {label} is not writable ({e.strerror or e})") from None
    return created


def remove_empty_dirs(created: list[Path]) -> None:
    """Remove the directories `make_writable_dir` created, innermost first, where still empty."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            return


def check_output_file(path: str | os.PathLike, label: str = "output file") -> Path:
    """Refuse, before anything is written, a file path that is a directory (or `/`), lies under a
    symlink loop, or whose directory is not writable. Creates nothing."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise UserError(f"{path}: {label} is not writable ({e.strerror or e})") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UserError(f"{path}: is a directory; the {label} must be a file path")
    existing, _ = nearest_existing(path.parent, label)
    if not existing.is_dir():
        raise UserError(f"{path}: {existing} is not a directory")
    try:
        _probe_write(existing)
    except OSError as e:
        raise UserError(f"{path}: {label} is not writable ({e.strerror or e})") from None
    return path
