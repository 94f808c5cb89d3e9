"""Rendering of report tables: a `Grid` (title, header, rows, notes: all text) to Markdown, LaTeX,
HTML; plain rows to CSV. Every string is escaped for its format, because level labels, factor names
and reference names come from files that may have come from someone else:

- Markdown: HTML specials become entities (no raw HTML passes through), Markdown punctuation that
  could start emphasis, code or links is backslash-escaped, pipes are escaped, and line breaks and
  other control characters become spaces (a label cannot end its table row).
- LaTeX: every special character (\\ & % $ # _ { } ~ ^ < > |) is replaced by its text command, and
  line breaks become spaces, so a label can neither end a `%` comment nor inject a command.
- HTML: html.escape (quotes included) on every text node and attribute.
- CSV: vitlab's one CSV writer, io.csv_text: the csv module's quoting (RFC 4180), and a text field
  that a spreadsheet would run as a formula (=, +, -, @, tab, CR first, and not a number) is
  prefixed with a single quote (OWASP's advice against CSV injection).
"""
from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..io import csv_text


@dataclass
class Grid:
    """The common text form of every table."""

    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


# Line breaks (everything str.splitlines splits on) and other control characters.
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def controls_to_spaces(s: str) -> str:
    """`s` with every line break and control character replaced by a space."""
    return _BREAKS.sub(" ", str(s))


_MD_SPECIAL = {"\\": "\\\\", "|": "\\|", "`": "\\`", "*": "\\*", "_": "\\_", "[": "\\[", "]": "\\]",
               "<": "&lt;", ">": "&gt;", "&": "&amp;"}


def md_escape(s: str) -> str:
    """Text safe inside a Markdown table cell (see the module docstring)."""
    return "".join(_MD_SPECIAL.get(ch, ch) for ch in controls_to_spaces(s))


def to_markdown(g: Grid) -> str:
    lines = [f"### {md_escape(g.title)}", "", "| " + " | ".join(md_escape(h) for h in g.header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(g.header) - 1)) + "|"]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in g.rows]
    lines += [""] + [f"_{md_escape(n)}_" for n in g.notes]
    return "\n".join(lines) + "\n"


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    "Δ": r"$\Delta$", "—": "---", "–": "--", "±": r"$\pm$", "≥": r"$\geq$", "≤": r"$\leq$",
}


def tex_escape(s: str) -> str:
    """Text safe anywhere in a LaTeX document, comments included (see the module docstring)."""
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in controls_to_spaces(s))


def to_latex(g: Grid) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}); title and notes as comments."""
    lines = [f"% {tex_escape(g.title)}"] + [f"% {tex_escape(n)}" for n in g.notes]
    lines += [r"\begin{tabular}{l" + "r" * (len(g.header) - 1) + "}", r"\toprule",
              " & ".join(tex_escape(h) for h in g.header) + r" \\", r"\midrule"]
    lines += [" & ".join(tex_escape(c) for c in row) + r" \\" for row in g.rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_html(g: Grid) -> str:
    e = html.escape
    out = [f"<table>\n<caption>{e(g.title)}</caption>", "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in g.header)
           + "</tr></thead>", "<tbody>"]
    out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in g.rows]
    out.append("</tbody>\n</table>")
    out += [f'<p class="note">{e(n)}</p>' for n in g.notes]
    return "\n".join(out) + "\n"


def to_csv(header: list[str], rows: Iterable[list]) -> str:
    """Report rows as CSV through vitlab's one CSV writer (io.csv_text: quoting, formula escaping)."""
    return csv_text(header, rows)


def mpl_escape(s: str) -> str:
    """A label safe for matplotlib text: '$' would start mathtext (and a malformed formula is an
    error at draw time), so it is escaped; line breaks become spaces."""
    return controls_to_spaces(s).replace("$", r"\$")
