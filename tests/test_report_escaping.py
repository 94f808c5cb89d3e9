"""Hostile labels in every output format (issue 9, item 3): level and reference names come from
spec files that may come from someone else, so Markdown, LaTeX, CSV, HTML and figures escape them."""
from __future__ import annotations

import csv
import io
import re

import pytest

from test_report_data import FACTOR, make_run
from vitlab.io import csv_field
from vitlab.report import build_report, formats, render_html

HOSTILE = [
    "safe",
    "evil\n\\input{/etc/passwd}",  # ends a LaTeX % comment and injects a command
    "crlf\r\n\\immediate\\write18{rm -rf ~}",
    "sep\u2028\\def\\x{}",  # a Unicode line separator
    "<script>alert(1)</script><img src=x onerror=alert(2)>",
    "pipe | in | cells\nnew | row",
    "**bold** [link](javascript:alert(1)) `code` _em_ ![img](http://x/y.png)",
    "=HYPERLINK(\"http://evil\",\"click\")",
    "comma, \"quote\" and\nnewline",
    "$\\frac{unclosed math",
    "100% & # _ ^ ~ { } \\ < > |",
]
REF = HOSTILE[1]

TEX_COMMANDS = {r"\begin", r"\end", r"\toprule", r"\midrule", r"\bottomrule", r"\textbackslash",
                r"\textasciitilde", r"\textasciicircum", r"\textless", r"\textgreater", r"\textbar", r"\Delta",
                r"\pm", r"\geq", r"\leq"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile")
    recs = [make_run(FACTOR, lab, i, s, 0.6 + 0.01 * i) for i, lab in enumerate(HOSTILE) for s in (0, 1, 2)]
    meta = {"name": "hostile <b>study</b>\n% \\input{x}", "kind": "study", "factors": {FACTOR: HOSTILE},
            "reference": {FACTOR: REF}, "metrics": ["test_top1"], "seeds": [0, 1, 2],
            "adaptive": {FACTOR: {lab: {"seeds": 3, "stopped": lab} for lab in HOSTILE}}}
    rep = build_report(meta, recs, out / "report")
    return out / "report", render_html(rep)


def tables_in(report_dir, ext):
    files = sorted((report_dir / "tables").glob(f"*.{ext}"))
    assert len(files) == 3  # factor, paired, adaptive
    return [(f, f.read_bytes().decode("utf-8")) for f in files]  # bytes: keep a \r inside a quoted field


def test_latex_has_no_injected_commands_and_no_broken_comments(report):
    report_dir, _ = report
    for path, tex in tables_in(report_dir, "tex"):
        lines = tex.splitlines()
        start = next(i for i, ln in enumerate(lines) if ln.startswith(r"\begin{tabular}"))
        assert all(ln.startswith("% ") for ln in lines[:start]), path  # every comment line is still a comment
        assert lines[-1] == r"\end{tabular}" and lines[-2] == r"\bottomrule"
        body = lines[start + 4:-2]
        assert all(ln.endswith(r" \\") for ln in body), path  # one row per line: no label broke a row
        used = set(re.findall(r"\\[A-Za-z]+", tex))
        assert used <= TEX_COMMANDS, used - TEX_COMMANDS
        assert r"\input" not in tex and r"\write" not in tex and r"\def" not in tex
        n_cols = len(re.fullmatch(r"\\begin\{tabular\}\{(lr*)\}", lines[start]).group(1))
        for ln in lines[start + 2:-2]:
            if ln != r"\midrule":
                assert len(re.findall(r"(?<!\\)&", ln)) == n_cols - 1, ln


def test_markdown_has_no_raw_html_and_intact_rows(report):
    report_dir, _ = report
    for path, md in tables_in(report_dir, "md"):
        assert "<" not in md and ">" not in md, path
        rows = [ln for ln in md.splitlines() if ln.startswith("|")]
        n = len(re.findall(r"(?<!\\)\|", rows[0]))
        assert all(len(re.findall(r"(?<!\\)\|", r)) == n for r in rows), path
        assert "](" not in md.replace("\\](", "")  # no live link syntax
        assert "&lt;script&gt;" in md


def test_csv_round_trips_labels_and_defuses_formulas(report):
    report_dir, _ = report
    for path, text in tables_in(report_dir, "csv"):
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        labels = {r["level"] for r in rows}
        expected = {("'" + lab) if lab.startswith("=") else lab for lab in HOSTILE}
        if path.name.endswith("_paired.csv"):
            expected.discard(REF)
            assert {r["reference"] for r in rows} == {REF}
        assert labels == expected, path
    assert csv_field("-1.5") == "-1.5" and csv_field("+x") == "'+x"
    assert csv_field("@SUM(A1)") == "'@SUM(A1)" and csv_field(float("nan")) == ""


def test_html_escapes_every_label(report):
    _, text = report
    assert "<script>" not in text and "<img src=x" not in text
    assert "<b>study</b>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert text.count("<table>") == 3  # factor, paired, adaptive
    assert len(re.findall(r"<img\b", text)) == 1  # only the embedded figure, none from a label


def test_figures_survive_mathtext_labels(report):
    report_dir, _ = report
    png = report_dir / "figures" / f"{FACTOR}_curves.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert formats.mpl_escape("$x$\nnext") == r"\$x\$ next"


def test_escape_functions():
    assert formats.tex_escape("a\nb\r\\input{x}") == r"a b \textbackslash{}input\{x\}"
    assert formats.md_escape("<b>|x|\n*y*") == r"&lt;b&gt;\|x\| \*y\*"
    assert formats.controls_to_spaces("a\u2028b\x00c\u0085d") == "a b c d"
