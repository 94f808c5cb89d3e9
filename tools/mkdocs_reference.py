"""mkdocs hook: generates the reference pages from the code, so they cannot drift from it.

- reference-cli.md: every `vitlab` command's `--help`, from the argparse parser `vitlab.cli.build_parser`;
- reference-keys.md: every run-config key (`vitlab.config.describe_keys`, the source of `vitlab config
  keys`) and every study-spec key (the same function over the spec's dataclasses, nested sections too).

Registered in mkdocs.yml under `hooks:`; the pages exist only in the built site.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import typing

from mkdocs.structure.files import File

#: Terminal width argparse formats the help for, fixed so the page does not depend on the builder's.
HELP_COLUMNS = "100"
#: The generated pages, by their path in the site.
CLI_PAGE = "reference-cli.md"
KEYS_PAGE = "reference-keys.md"


def cli_page() -> str:
    from vitlab.cli import build_parser

    os.environ["COLUMNS"] = HELP_COLUMNS
    parser = build_parser()
    out = ["# CLI reference", "",
           "Generated from the argparse parser (`vitlab.cli.build_parser`); `vitlab COMMAND --help` prints the same.",
           "", "## vitlab", "", "```text", parser.format_help().rstrip(), "```", ""]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, cmd in sub.choices.items():
        out += [f"## vitlab {name}", "", "```text", cmd.format_help().rstrip(), "```", ""]
    return "\n".join(out)


def _cell(text: str) -> str:
    """Text for a Markdown table cell: a literal `|` would end the cell."""
    return text.replace("|", "&#124;")


def _table(rows: list[tuple[str, str, str]]) -> list[str]:
    out = ["| key | default | meaning |", "|---|---|---|"]
    out += [f"| `{k}` | `{_cell(d)}` | {_cell(doc)} |" for k, d, doc in rows]
    return out + [""]


def _nested(tp) -> tuple[type | None, str]:
    """The dataclass a spec field holds (directly, optionally, or as a mapping's values) and the key
    suffix that reaches it (`.NAME` for a mapping); (None, "") when it holds none."""
    for arg in typing.get_args(tp) or (tp,):
        if dataclasses.is_dataclass(arg):
            return arg, ""
        if typing.get_origin(arg) is dict:
            inner, _ = _nested(typing.get_args(arg)[1])
            if inner is not None:
                return inner, ".NAME"
    return None, ""


def keys_page() -> str:
    from vitlab.config import RunConfig
    from vitlab.schema import describe_keys
    from vitlab.study.spec import SpecFile

    out = ["# Config and spec keys", "",
           "Generated from the typed dataclasses that validate every config and spec; `vitlab config keys` "
           "prints the run-config part. Prose: [Configuration](configuration.md), [Run a study](study.md).", "",
           "## Run config", "", "Any of these is a `key=value` override of `vitlab train` and a key of a study's `base:`.",
           ""]
    out += _table(describe_keys(RunConfig))
    out += ["## Study spec", "", "The top-level keys of a study or search spec.", ""]
    out += _table(describe_keys(SpecFile))
    for fl in dataclasses.fields(SpecFile):
        cls, suffix = _nested(typing.get_type_hints(SpecFile)[fl.name])
        if cls is not None:
            out += [f"### {fl.name}{suffix}", ""]
            out += _table(describe_keys(cls, f"{fl.name}{suffix}."))
    return "\n".join(out)


def on_files(files, config):
    """Add the generated pages to the site."""
    for path, make in ((CLI_PAGE, cli_page), (KEYS_PAGE, keys_page)):
        files.append(File.generated(config, path, content=make()))
    return files
