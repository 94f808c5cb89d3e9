"""Bounded reading of the JSON files vitlab reads back: a file handed over by someone else is untrusted.

Every JSON file read from a run, study or storage directory (and every JSON column of the study index)
goes through `parse_json` / `read_json_file` / `read_json_lines`:

- the size is checked before anything is read (`max_bytes`; a 200 MB file is refused unread);
- nesting deeper than `MAX_JSON_DEPTH` is refused (the parser's own recursion limit is caught too:
  deep nesting is a `MalformedFile`, never a `RecursionError`);
- numbers must be finite and in range: `Infinity`, `-Infinity`, `1e400` (= inf) and integers beyond
  `MAX_INT` (`10**400`) are refused; `NaN` only where the writer itself records an undefined value;
- strings (values and keys) longer than `MAX_STRING_CHARS` are refused.

Anything else wrong (not UTF-8, not JSON, a directory or a FIFO where a file belongs) is one
`MalformedFile` whose message names the file and says what is wrong, on one line. The typed readers
of run files (rundir.py) and of the index (study/index.py) check the shapes on top of this.
"""
from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from .errors import UserError, one_line, short_repr

MAX_JSON_DEPTH = 16
"""Deepest nesting of arrays/objects accepted (run files are flat or a few levels deep)."""
MAX_STRING_CHARS = 65_536
"""Longest string (value or key) accepted; an error message or a path is far shorter."""
MAX_INT = 2 ** 63 - 1
"""Largest integer magnitude accepted, in a file and in a config field alike (int64, what torch and numpy
index with): every count, size or seed vitlab writes fits; larger is an error, not an overflow."""
MAX_JSON_BYTES = 16 * 2 ** 20
"""Default cap on a JSON file's size (callers with larger or smaller files pass their own)."""


class MalformedFile(UserError):
    """A file vitlab reads back is unreadable, too large or not what it should hold. One line naming it."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = one_line(problem, 300)
        super().__init__(f"{one_line(self.path, 300)}: {self.problem}")


def _constant(allow_nan: bool):
    def parse_constant(name: str) -> float:
        if allow_nan and name == "NaN":
            return math.nan
        raise ValueError(f"{name} is not a finite number")
    return parse_constant


def parse_json(text: str | bytes, source: str | os.PathLike, *, allow_nan: bool = False) -> Any:
    """The JSON value in `text`, checked as the module doc says; MalformedFile naming `source` otherwise."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedFile(source, "not UTF-8 text") from None
    try:
        value = json.loads(text, parse_constant=_constant(allow_nan))
    except RecursionError:
        raise MalformedFile(source, f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:  # JSONDecodeError, a refused constant, an integer of > 4300 digits
        raise MalformedFile(source, f"not valid JSON ({one_line(str(e), 120)})") from None
    check_tree(value, source, allow_nan=allow_nan)
    return value


def check_tree(value: Any, source: str | os.PathLike, *, allow_nan: bool = False) -> None:
    """Refuse deep nesting, non-finite or out-of-range numbers and huge strings anywhere in `value`
    (iteratively: a deep value cannot exhaust the stack here)."""
    stack: list[tuple[Any, int, tuple]] = [(value, 0, ())]  # (value, depth, its path: built on error only)

    def at(path: tuple) -> str:
        return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p[:40]}" for p in path)

    while stack:
        v, depth, path = stack.pop()
        if isinstance(v, dict):
            if depth >= MAX_JSON_DEPTH:
                raise MalformedFile(source, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            for k, item in v.items():
                if len(k) > MAX_STRING_CHARS:
                    raise MalformedFile(source, f"{at(path)}: a key of {len(k):,} characters")
                stack.append((item, depth + 1, (*path, k)))
        elif isinstance(v, list):
            if depth >= MAX_JSON_DEPTH:
                raise MalformedFile(source, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            stack.extend((item, depth + 1, (*path, i)) for i, item in enumerate(v))
        elif isinstance(v, str):
            if len(v) > MAX_STRING_CHARS:
                raise MalformedFile(source, f"{at(path)}: a string of {len(v):,} characters")
        elif isinstance(v, bool) or v is None:
            continue
        elif isinstance(v, int):
            if abs(v) > MAX_INT:
                raise MalformedFile(source, f"{at(path)}: integer out of range ({len(str(abs(v)))} digits)")
        elif isinstance(v, float):
            if math.isinf(v) or (math.isnan(v) and not allow_nan):
                raise MalformedFile(source, f"{at(path)}: {v} is not a finite number")


def read_capped(path: str | os.PathLike, max_bytes: int) -> bytes | None:
    """The bytes of the regular file `path`, refused unread when larger than `max_bytes`; None when missing."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return None
    except OSError as e:  # a symlink loop, no permission, a file where a directory belongs
        raise MalformedFile(p, f"unreadable ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the reader, a device never end
        raise MalformedFile(p, "not a regular file")
    if st.st_size > max_bytes:
        raise MalformedFile(p, f"{st.st_size:,} bytes, more than the {max_bytes:,} it may hold; not read")
    try:
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)  # it may have grown since the stat
    except FileNotFoundError:
        return None
    except OSError as e:
        raise MalformedFile(p, f"unreadable ({e.strerror or e})") from None
    if len(data) > max_bytes:
        raise MalformedFile(p, f"more than the {max_bytes:,} bytes it may hold; not read")
    return data


def read_json_file(path: str | os.PathLike, max_bytes: int = MAX_JSON_BYTES, *, allow_nan: bool = False) -> dict | None:
    """The JSON object in file `path` (bounded and checked: see the module doc); None when it is missing."""
    data = read_capped(path, max_bytes)
    if data is None:
        return None
    value = parse_json(data, path, allow_nan=allow_nan)
    if not isinstance(value, dict):
        raise MalformedFile(path, f"holds {type(value).__name__}, not a JSON object")
    return value


def read_json_lines(path: str | os.PathLike, max_bytes: int, max_lines: int) -> list[dict]:
    """The JSON objects of a JSON-lines file, one per line ([] when missing). A torn last line (no
    newline after it: a crash mid-append) is ignored; any other bad line is a MalformedFile."""
    data = read_capped(path, max_bytes)
    if data is None:
        return []
    lines = data.split(b"\n")
    torn = lines.pop() if lines else b""  # after the last newline: b"" when the file ends with one
    if len(lines) > max_lines:
        raise MalformedFile(path, f"{len(lines):,} lines, more than the {max_lines:,} it may hold")
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = parse_json(line, path)
        except MalformedFile as e:
            raise MalformedFile(path, f"line {n}: {e.problem}") from None
        if not isinstance(value, dict):
            raise MalformedFile(path, f"line {n}: holds {type(value).__name__}, not a JSON object")
        rows.append(value)
    if torn.strip():
        try:
            value = parse_json(torn, path)
        except MalformedFile:
            return rows  # torn by a crash: the epoch it held is redone on resume
        if isinstance(value, dict):
            rows.append(value)
    return rows


def describe_value(value: Any) -> str:
    """A value for an error message about its type: short, one line."""
    return f"{type(value).__name__} {short_repr(value, 40)}"


__all__ = ["MAX_INT", "MAX_JSON_BYTES", "MAX_JSON_DEPTH", "MAX_STRING_CHARS", "MalformedFile", "check_tree",
           "describe_value", "parse_json", "read_capped", "read_json_file", "read_json_lines"]
