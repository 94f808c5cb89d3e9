"""mkdocs hook: generates the reference pages from the code, so they cannot drift from it.

- reference-cli.md: every `vitlab` command's `--help`, from the argparse parser `vitlab.cli.build_parser`;
- reference-keys.md: every run-config key (`vitlab.config.describe_keys`, the source of `vitlab config keys`);
- reference-spec-keys.md: every study-spec key, nested sections too (`vitlab.study.spec.describe_spec_keys`,
  the source of `vitlab config keys --spec`).

Registered in mkdocs.yml under `hooks:`; the pages exist only in the built site.
"""
from __future__ import annotations

import argparse
import os

from mkdocs.structure.files import File

#: Terminal width argparse formats the help for, fixed so the page does not depend on the builder's.
HELP_COLUMNS = "100"
#: The generated pages, by their path in the site.
CLI_PAGE = "reference-cli.md"
KEYS_PAGE = "reference-keys.md"
SPEC_KEYS_PAGE = "reference-spec-keys.md"


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


def keys_page() -> str:
    from vitlab.config import RunConfig
    from vitlab.schema import describe_keys

    out = ["# Config keys", "",
           "Generated from the typed dataclasses that validate every run config; `vitlab config keys` prints the "
           "same. Any of these is a `key=value` override of `vitlab train` and a key of a study's `base:`. "
           "Prose: [Configuration](configuration.md); the keys of a study spec: [Spec keys](reference-spec-keys.md).",
           ""]
    return "\n".join(out + _table(describe_keys(RunConfig)))


def spec_keys_page() -> str:
    from vitlab.study.spec import describe_spec_keys

    out = ["# Spec keys", "",
           "Generated from the one dataclass that validates every study and search spec (`vitlab.study.spec.StudySpec`"
           " and its sections); `vitlab config keys --spec` prints the same. A section's keys follow it; `NAME` "
           "stands for a profile's name or a search dimension's config key. Prose: [Run a study](study.md), "
           "[Search](search.md); the keys of `base:`: [Config keys](reference-keys.md).", ""]
    return "\n".join(out + _table(describe_spec_keys()))


def on_files(files, config):
    """Add the generated pages to the site."""
    for path, make in ((CLI_PAGE, cli_page), (KEYS_PAGE, keys_page), (SPEC_KEYS_PAGE, spec_keys_page)):
        files.append(File.generated(config, path, content=make()))
    return files
