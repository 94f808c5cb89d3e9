"""Error types that decide the CLI's exit code.

`UserError` (and its subclasses) is bad input: the CLI prints its one-line message and exits 2.
Anything else escaping a command is an internal error: exit 1.
"""


class UserError(Exception):
    """Bad input from the user: a config field, a file, a path. The message is one line."""


class ConfigError(UserError):
    """A config field has a bad value; the message starts with the dotted field name."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


class DataError(UserError):
    """A dataset is missing, corrupted or unreadable; the message names the file."""
