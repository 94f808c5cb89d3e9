"""Error types that decide the CLI's exit code.

`UserError` (and its subclasses) is bad input: the CLI prints its one-line message and exits 2.
Anything else escaping a command is an internal error: exit 1.
"""
import sys


class UserError(Exception):
    """Bad input from the user: a config field, a file, a path. The message is one line."""


class RunError(Exception):
    """A run could not go on for a reason outside its input (a full disk): the CLI prints its one
    line and exits 1. The run directory says `failed` with the reason where it could be written."""


class ConfigError(UserError):
    """A config field has a bad value; the message starts with the dotted field name."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        shown = one_line(field, MAX_SHOWN_CHARS)  # a key may come from an untrusted file too
        super().__init__(f"{shown}: {problem}" if field else problem)


class DataError(UserError):
    """A dataset is missing, corrupted or unreadable; the message names the file."""


#: The most characters of a value (or of a foreign error message) that an error message prints.
MAX_SHOWN_CHARS = 80


def short_repr(value: object, limit: int = MAX_SHOWN_CHARS) -> str:
    """repr(value) cut to `limit` characters, never building a huge string: a value may come from an
    untrusted file (e.g. a YAML alias bomb), and an error message must stay one short line."""
    if isinstance(value, (str, bytes)) and len(value) > limit:
        value = value[: limit + 1]  # cut before repr: repr of a huge string is itself huge
    elif isinstance(value, (list, tuple, dict, set)) and len(value) > limit:
        return f"<{type(value).__name__} of {len(value)} items>"
    try:
        text = repr(value) if _small(value) else f"<{type(value).__name__}>"
    except Exception:  # a repr that fails is not the user's problem to read
        text = f"<{type(value).__name__}>"
    return one_line(text, limit)


def warn(message: object) -> None:
    """A one-line warning on stderr (a run skipped, a file refused, an index rebuilt): the command goes on."""
    print(f"warning: {one_line(message, 2000)}", file=sys.stderr)


QUOTED_ERROR_CHARS = 300
"""Characters of an underlying error's message quoted inside one of ours (a storage error, a failed job)."""


def one_line(text: str, limit: int = 200) -> str:
    """`text` on one line, at most `limit` characters (an ellipsis marks a cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _small(value: object, budget: int = 10_000) -> bool:
    """Whether `value` has at most `budget` nodes (containers nest: a few levels of aliases are 10⁹)."""
    stack, seen = [value], 0
    while stack:
        v = stack.pop()
        seen += 1
        if seen > budget:
            return False
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple, set)):
            stack.extend(v)
        elif isinstance(v, (str, bytes)) and len(v) > budget:
            return False
    return True
