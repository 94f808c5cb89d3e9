"""What every vitlab HTML page shares: the report file name, the style sheet and file-name slugs.

A small leaf of `vitlab.report` so that the study report (`html`) and the run report
(`analysis_sections`) both build on it without importing each other.
"""
from __future__ import annotations

import re

#: File name of an HTML report inside its report directory.
HTML_NAME = "report.html"

#: The style sheet embedded in every report (reports are single self-contained files).
CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;max-width:1150px;
color:#1b1b1b;line-height:1.45;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ccd;padding-bottom:.2em;margin-top:2em}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dl.meta dt{font-weight:600}
dl.meta dd{margin:0}
.warn{background:#fff3cd;border:1px solid #e0c36c;padding:.6em 1em;border-radius:4px;margin:1em 0}
table{border-collapse:collapse;margin:1em 0;font-size:.9em;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding-bottom:.3em}
th,td{padding:.3em .7em;text-align:right;border-bottom:1px solid #e3e3e3;white-space:nowrap}
th:first-child,td:first-child{text-align:left}thead th{border-bottom:2px solid #555;background:#f4f5f9}
p.note{font-size:.85em;color:#555;margin:.2em 0 1em}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
.methods li{margin-bottom:.4em}
"""


def slug(text: str) -> str:
    """A file-name-safe version of a factor name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "factor"
