"""The study report: tables and figures under DIR/report/, and ONE self-contained HTML file.

The HTML needs nothing else: CSS inline, figures embedded as base64 PNG, no scripts, no network.
`build_report` works on plain data (the study meta dict and RunRecord-like objects) so it can be
tested without a study runner; `write_report` reads a study directory through vitlab.study.index.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import UserError
from ..io import atomic_write_text, check_output_file, make_writable_dir
from . import stats, tables
from .figures import curves_figure, history_figure, importances_figure, save_figure
from .search import IMPORTANCE_EVALUATOR, SearchData, search_data

REPORT_DIR = "report"
HTML_NAME = "report.html"
PAIRED_ALWAYS = "test_top1"
"""Metric every paired comparison shows; the study's primary metric (first of meta['metrics'])
is shown next to it when different."""
DEFAULT_PRIMARY = "val_top1"
"""Primary metric when the study meta names none."""

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


@dataclass
class Artifact:
    """A figure: its file base name under report/figures and the PNG bytes to embed."""

    name: str
    caption: str
    png: bytes


@dataclass
class FactorSection:
    factor: str
    table: tables.FactorTable
    paired: tables.PairedTable | None
    figure: Artifact | None


@dataclass
class Report:
    meta: dict
    records: list
    sections: list[FactorSection] = field(default_factory=list)
    search: SearchData | None = None
    search_figures: list[Artifact] = field(default_factory=list)
    generated: str = ""


def slug(text: str) -> str:
    """A file-name-safe version of a factor name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "factor"


def primary_metric(meta: dict) -> str:
    ms = meta.get("metrics") or []
    return ms[0] if ms else DEFAULT_PRIMARY


def _write_grid(folder: Path, base: str, grid: tables.Grid, csv_text: str) -> None:
    atomic_write_text(folder / f"{base}.md", tables.to_markdown(grid))
    atomic_write_text(folder / f"{base}.csv", csv_text)
    atomic_write_text(folder / f"{base}.tex", tables.to_latex(grid))


def _figure(fig, path_base: Path, caption: str) -> Artifact | None:
    if fig is None:
        return None
    data = save_figure(fig, path_base)
    return Artifact(path_base.name, caption, data["png"])


def build_report(meta: dict, records: Sequence, report_dir: str | Path,
                 search: SearchData | None = None) -> Report:
    """Compute every table and figure of a study and write them under `report_dir`
    (tables/*.md|csv|tex, figures/*.png|svg), atomically file by file."""
    report_dir = Path(report_dir)
    tdir, fdir = report_dir / "tables", report_dir / "figures"
    rep = Report(meta, list(records), search=search,
                 generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    metrics = tables.table_metrics()
    paired_keys = list(dict.fromkeys([PAIRED_ALWAYS, primary_metric(meta)]))
    paired_metrics = [tables.metric_for(k, metrics) for k in paired_keys]
    factors: dict[str, list] = dict(meta.get("factors") or {})
    if meta.get("kind") == "search":
        factors = {}  # one run per trial: the trial table replaces per-level tables
    for factor, levels in factors.items():
        levels = [str(x) for x in levels]
        s = slug(factor)
        ft = tables.factor_table(rep.records, factor, levels, metrics, seeds=meta.get("seeds"))
        _write_grid(tdir, s, tables.factor_grid(ft), tables.factor_csv(ft))
        ref = (meta.get("reference") or {}).get(factor)
        ref = str(ref) if ref is not None else (levels[0] if levels else None)
        pt = None
        if ref in levels and len(levels) > 1:
            pt = tables.paired_table(rep.records, factor, ref, paired_metrics, levels)
            _write_grid(tdir, f"{s}_paired", tables.paired_grid(pt), tables.paired_csv(pt))
        fig = _figure(curves_figure(rep.records, factor, levels), fdir / f"{s}_curves",
                      f"{factor}: per-epoch curves, one line per level (mean over completed seeds), "
                      "shaded band = min–max over seeds.")
        rep.sections.append(FactorSection(factor, ft, pt, fig))
    if search is not None:
        objective = meta.get("objective") or primary_metric(meta)
        _write_grid(tdir, "trials", tables.trials_grid(search.rows, search.maximize, objective),
                    tables.trials_csv(search.rows))
        for art in (
            _figure(history_figure(search.rows, search.maximize, objective), fdir / "history",
                    "Objective of each completed trial and the best value so far."),
            _figure(importances_figure(search.importances, IMPORTANCE_EVALUATOR), fdir / "importances",
                    f"Hyperparameter importances. {search.importance_note}"),
        ):
            if art is not None:
                rep.search_figures.append(art)
    return rep


# ----------------------------------------------------------------------------------------------
# HTML


def _img(art: Artifact) -> str:
    b64 = base64.b64encode(art.png).decode("ascii")
    e = html.escape
    return (f'<figure><img src="data:image/png;base64,{b64}" alt="{e(art.caption)}">'
            f"<figcaption>{e(art.caption)}</figcaption></figure>\n")


def _dataset(records: Sequence) -> tuple[str, bool]:
    """('name, name2', synthetic?) from the runs' summaries, else their configs."""
    names, synthetic = [], False
    for r in records:
        s, cfg = r.summary or {}, r.config or {}
        name = s.get("dataset") or (cfg.get("data") or {}).get("name")
        if name and name not in names:
            names.append(str(name))
        synthetic |= bool(s.get("synthetic")) or (cfg.get("data") or {}).get("name") == "synthetic"
    return (", ".join(names) or "unknown"), synthetic


def _config_values(records: Sequence, section: str, key: str) -> list:
    return sorted({str((r.config or {}).get(section, {}).get(key)) for r in records
                   if (r.config or {}).get(section, {}).get(key) is not None})


def _methods(rep: Report) -> list[str]:
    recs = rep.records
    val_frac = _config_values(recs, "data", "val_fraction")
    monitor = _config_values(recs, "train", "monitor") or ["val_top1"]
    seeds = rep.meta.get("seeds") or sorted({r.seed for r in recs})
    conf = round(stats.CONFIDENCE * 100)
    frac, k = round(stats.FRACTION_OF_BEST * 100), stats.LAST_K
    vf = (", ".join(f"{float(v):.0%}" for v in val_frac) if val_frac else "a share")
    items = [
        f"Selection: every run holds out {vf} of its training set (stratified, seeded) as a validation "
        f"split; the best epoch is the one with the best {', '.join(monitor)} on it. Train/val numbers "
        "in the tables are at that epoch.",
        "Test set: used only for the final numbers, measured with the best-validation checkpoint; it "
        "never selects an epoch, a configuration or a search trial (search objectives are validation metrics).",
        f"Seeds: {len(seeds)} per configuration ({', '.join(str(s) for s in seeds)}); one seed drives "
        "initialization, split, shuffling and augmentation. Only runs that completed enter the statistics; "
        "failed, diverged, pruned and missing runs are counted in each table's first row.",
        f"Uncertainty: each cell is the mean over seeds with a {conf}% {stats.BOOTSTRAP_METHOD} bootstrap "
        f"confidence interval of that mean ({stats.N_RESAMPLES:,} resamples of the seeds with replacement, "
        f"scipy.stats.bootstrap, generator seed {stats.BOOTSTRAP_SEED}). With a handful of seeds the interval "
        "is coarse and tends to be too narrow (3 seeds allow only 10 distinct resampled means): read it as "
        "a summary of the seed spread, not as a guarantee. One seed gives no interval.",
        "Paired comparison: for each seed completed at both levels, d = level − reference; the table gives "
        f"the mean of d with its {conf}% bootstrap CI (resampling seeds, so seed effects shared by both "
        "levels cancel) and P(improve) = the share of bootstrap resamples whose mean d is better than 0.",
        f"Stability: epochs to {frac}% of best = first epoch whose validation top-1 reaches {frac}% of the "
        f"run's best validation top-1; std over the last {k} epochs = population standard deviation of the "
        f"validation top-1 over the final {k} epochs (in percentage points).",
        "Figures: one line per level = mean over completed seeds at each epoch; band = min–max over seeds.",
    ]
    return items


def _planned_runs(meta: dict, records: Sequence) -> int:
    """Runs a study plans (levels x seeds per factor) when the meta says, else the runs it has."""
    seeds = meta.get("seeds")
    if meta.get("kind") == "search" or not seeds:
        return len(records)
    return max(len(records), sum(len(levels) for levels in (meta.get("factors") or {}).values()) * len(seeds))


def render_html(rep: Report) -> str:
    """The self-contained HTML text of a report."""
    from .. import __version__

    e = html.escape
    meta, recs = rep.meta, rep.records
    name = str(meta.get("name") or "study")
    dataset, synthetic = _dataset(recs)
    status = Counter(r.status for r in recs)
    planned = _planned_runs(meta, recs)
    if planned > len(recs):
        status["missing"] = planned - len(recs)
    runs_line = f"{status.get('completed', 0)} completed, {status.get('failed', 0)} failed of {planned}"
    others = {k: v for k, v in status.items() if k not in ("completed", "failed")}
    if others:
        runs_line += " (" + ", ".join(f"{v} {k}" for k, v in sorted(others.items())) + ")"
    if synthetic:
        dataset += " — synthetic data"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>vitlab report: {e(name)}</title>", f"<style>{CSS}</style></head><body>",
        f"<header><h1>{e(name)}</h1>",
    ]
    if meta.get("description"):
        parts.append(f"<p>{e(str(meta['description']))}</p>")
    rows = [("Kind", str(meta.get("kind", "study"))), ("Dataset", dataset), ("Generated", rep.generated),
            ("vitlab version", __version__), ("Runs", runs_line)]
    parts.append('<dl class="meta">' + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in rows) + "</dl>")
    if synthetic:
        parts.append('<div class="warn"><strong>Synthetic data.</strong> These runs trained on generated '
                     "images, not on a real benchmark: the numbers check the pipeline and compare settings "
                     "on a toy task; they say nothing about accuracy on real images.</div>")
    parts.append("</header>")
    if rep.sections or rep.search:
        toc = [f'<li><a href="#{slug(s.factor)}">{e(s.factor)}</a></li>' for s in rep.sections]
        if rep.search:
            toc.append('<li><a href="#search">Search</a></li>')
        toc.append('<li><a href="#methods">Method</a></li>')
        parts.append("<nav><ul>" + "".join(toc) + "</ul></nav>")
    for s in rep.sections:
        parts.append(f'<section id="{e(slug(s.factor))}"><h2>Factor: {e(s.factor)}</h2>')
        parts.append(tables.to_html(tables.factor_grid(s.table)))
        if s.paired is not None:
            parts.append(tables.to_html(tables.paired_grid(s.paired)))
        parts.append(_img(s.figure) if s.figure else '<p class="note">No completed run with curves yet.</p>')
        parts.append("</section>")
    if rep.search:
        sd = rep.search
        objective = meta.get("objective") or primary_metric(meta)
        parts.append(f'<section id="search"><h2>Search: {e(sd.study_name)}</h2>')
        parts.append(tables.to_html(tables.trials_grid(sd.rows, sd.maximize, objective)))
        parts += [_img(a) for a in rep.search_figures]
        if not sd.importances:
            parts.append(f'<p class="note">{e(sd.importance_note)}</p>')
        parts.append("</section>")
    parts.append('<section id="methods"><h2>Method</h2><ul class="methods">'
                 + "".join(f"<li>{e(t)}</li>" for t in _methods(rep)) + "</ul></section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------
# entry points


def _open(study_dir: Path):
    if not study_dir.is_dir():
        raise UserError(f"{study_dir}: not a directory (expected a study directory)")
    from ..study.index import open_index

    return open_index(study_dir)


def write_report(study_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Write DIR/report/{tables,figures}/* and the HTML report (default DIR/report/report.html);
    returns the HTML path."""
    study_dir = Path(study_dir)
    index = _open(study_dir)
    meta: dict[str, Any] = index.meta()
    records = index.runs()
    search = None
    if meta.get("kind") == "search":
        search = search_data(study_dir, meta.get("study_name") or meta.get("name"))
    report_dir = study_dir / REPORT_DIR
    out = Path(out_path) if out_path is not None else report_dir / HTML_NAME
    check_output_file(out, "report file")  # both places are checked before any table or figure is written
    make_writable_dir(report_dir, "report directory")
    rep = build_report(meta, records, report_dir, search)
    atomic_write_text(out, render_html(rep))
    return out


def report_main(study_dir: str | Path, out: str | Path | None = None) -> Path:
    """`vitlab report DIR [-o FILE]`: UserError (one line) when DIR is not a study."""
    return write_report(study_dir, out)
