"""The study report: tables and figures under DIR/report/, and ONE self-contained HTML file.

The HTML needs nothing else: CSS inline, figures embedded as base64 PNG, no scripts, no network.
`build_report` works on plain data (the study meta dict and RunRecord-like objects) so it can be
tested without a study runner; `write_report` reads a study directory through vitlab.study.index.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .. import stats
from ..errors import UserError
from ..io import atomic_write_text, check_output_file, make_writable_dir
from ..rundir import is_run_dir
from ..safepath import check_tree, inside
from ..study import compare
from ..study.index import open_index
from ..version import __version__
from . import tables
from .figures import curves_figure, history_figure, importances_figure, save_figure
from .formats import Grid, to_html, to_latex, to_markdown
from . import datasets as ds
from .compute import budget_text, compute_csv, compute_grid
from .analysis_sections import study_sections, write_run_report
from .page import CSS, HTML_NAME, slug
from .search import IMPORTANCE_EVALUATOR, SearchData, search_data
from .variance import variance_csv, variance_grid, variance_table

REPORT_DIR = "report"
PAIRED_ALWAYS = "test_top1"
"""Metric every paired comparison shows; the study's primary metric (first of meta['metrics'])
is shown next to it when different."""
DEFAULT_PRIMARY = "val_top1"
"""Primary metric when the study meta names none."""


@dataclass
class Artifact:
    """A figure: its file base name under report/figures and the PNG bytes to embed."""

    name: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class ReportOptions:
    """How a report computes its statistics: the interval method, the target difference for
    `seeds_needed` (percentage points), and the confidence level."""

    ci: str = stats.DEFAULT_CI
    target_delta: float = tables.TARGET_DELTA
    confidence: float = stats.CONFIDENCE


def report_options(meta: Mapping, ci: str | None = None, target_delta: float | None = None) -> ReportOptions:
    """Options from the study's `report:` section (meta['report']), overridden by the arguments
    (the CLI's --ci / --target-delta, write_report's ci= / target_delta=). UserError when invalid."""
    section = meta.get("report") or {}
    if not isinstance(section, Mapping):
        raise UserError(f"report: must be a mapping with ci and target_delta, got {type(section).__name__}")
    ci = ci if ci is not None else section.get("ci", stats.DEFAULT_CI)
    if ci not in stats.CI_METHODS:
        raise UserError(f"report.ci: must be one of {', '.join(stats.CI_METHODS)}; got {str(ci)[:40]!r}")
    td = target_delta if target_delta is not None else section.get("target_delta", tables.TARGET_DELTA)
    if isinstance(td, bool) or not isinstance(td, (int, float)) or not math.isfinite(td) or td <= 0:
        raise UserError(f"report.target_delta: must be a positive number of percentage points; got {str(td)[:40]!r}")
    return ReportOptions(ci, float(td))


@dataclass
class FactorSection:
    factor: str
    table: tables.FactorTable
    paired: tables.PairedTable | None
    figure: Artifact | None
    adaptive: Grid | None = None
    variance: Grid | None = None
    per_dataset: list[tuple[str, tables.FactorTable, tables.PairedTable | None]] = field(default_factory=list)
    aggregate: Grid | None = None
    profile: Artifact | None = None
    compute: Grid | None = None  # steps, wall and CPU seconds per level (report/compute.py)


@dataclass
class Report:
    meta: dict
    records: list
    sections: list[FactorSection] = field(default_factory=list)
    search: SearchData | None = None
    search_figures: list[Artifact] = field(default_factory=list)
    generated: str = ""
    extra: list[tuple[str, str, str]] = field(default_factory=list)  # (anchor, title, html): analysis sections
    options: ReportOptions = field(default_factory=ReportOptions)

    def _repr_html_(self) -> str:  # Jupyter renders a Report as its tables and figures
        return notebook_html(self)


def margins(meta: Mapping) -> dict[str, float]:
    """{primary metric: the spec's equivalence_margin} (empty without one; untrusted meta)."""
    m = meta.get("equivalence_margin")
    if m is None:
        return {}
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or m <= 0:
        raise UserError(f"equivalence_margin: must be a positive number; got {str(m)[:40]!r}")
    return {primary_metric(meta): float(m)}


def primary_metric(meta: dict) -> str:
    ms = meta.get("metrics") or []
    return ms[0] if ms else DEFAULT_PRIMARY


def _write_grid(folder: Path, base: str, grid: Grid, csv_text: str) -> None:
    atomic_write_text(folder / f"{base}.md", to_markdown(grid))
    atomic_write_text(folder / f"{base}.csv", csv_text)
    atomic_write_text(folder / f"{base}.tex", to_latex(grid))


def _figure(fig, path_base: Path, caption: str) -> Artifact | None:
    if fig is None:
        return None
    data = save_figure(fig, path_base)
    return Artifact(path_base.name, caption, data["png"])


def build_report(meta: dict, records: Sequence, report_dir: str | Path,
                 search: SearchData | None = None, options: ReportOptions | None = None) -> Report:
    """Compute every table and figure of a study and write them under `report_dir`
    (tables/*.md|csv|tex, figures/*.png|svg), atomically file by file. `options` default to the
    study's `report:` section (meta['report']), else t intervals and a 1-point target."""
    report_dir = Path(report_dir)
    tdir, fdir = report_dir / "tables", report_dir / "figures"
    opt = options if options is not None else report_options(meta)
    rep = Report(meta, list(records), search=search, options=opt,
                 generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    metrics = tables.table_metrics()
    paired_keys = list(dict.fromkeys([PAIRED_ALWAYS, primary_metric(meta)]))
    paired_metrics = [tables.metric_for(k, metrics) for k in paired_keys]
    factors: dict[str, list] = dict(meta.get("factors") or {})
    if meta.get("kind") == "search":
        factors = {}  # one run per trial: the trial table replaces per-level tables
    adaptive_meta = meta.get("adaptive") if isinstance(meta.get("adaptive"), Mapping) else {}
    for factor, levels in factors.items():
        levels = [str(x) for x in levels]
        s = slug(factor)
        adaptive = adaptive_meta.get(factor) if isinstance(adaptive_meta.get(factor), Mapping) else None
        expected = {str(k): int(v["seeds"]) for k, v in (adaptive or {}).items()
                    if isinstance(v, Mapping) and isinstance(v.get("seeds"), int)}
        ft = tables.factor_table(rep.records, factor, levels, metrics, seeds=meta.get("seeds"),
                                 confidence=opt.confidence, ci=opt.ci, expected=expected)
        _write_grid(tdir, s, tables.factor_grid(ft), tables.factor_csv(ft))
        ref = (meta.get("reference") or {}).get(factor)
        ref = str(ref) if ref is not None else (levels[0] if levels else None)
        pt = None
        split = ds.split_by_dataset(rep.records, factor, ref)
        if split is None and ref in levels and len(levels) > 1:
            pt = tables.paired_table(rep.records, factor, ref, paired_metrics, levels, confidence=opt.confidence,
                                     ci=opt.ci, target_delta=opt.target_delta,
                                     comparisons=compare.from_meta(meta, factor), margins=margins(meta))
            _write_grid(tdir, f"{s}_paired", tables.paired_grid(pt), tables.paired_csv(pt))
        vg = None
        vt = variance_table(rep.records, factor, paired_metrics, levels)
        if vt is not None:
            vg = variance_grid(vt)
            _write_grid(tdir, f"{s}_variance", vg, variance_csv(vt))
        ag = None
        if adaptive:
            ag = tables.adaptive_grid(factor, adaptive)
            _write_grid(tdir, f"{s}_adaptive", ag, tables.adaptive_csv(factor, adaptive))
        fig = _figure(curves_figure(rep.records, factor, levels, opt.ci, opt.confidence), fdir / f"{s}_curves",
                      f"{factor}: per-epoch curves, one line per level (mean over completed seeds), shaded band = "
                      f"{tables.interval_name(opt.confidence, opt.ci)} of that mean, cut to the metric's valid range "
                      "(none where one seed).")
        section = FactorSection(factor, ft, pt, fig, ag, vg)
        if any(_budgeted(r) for r in rep.records):
            section.compute = compute_grid(rep.records, factor, levels)
            _write_grid(tdir, f"{s}_compute", section.compute, compute_csv(rep.records, factor, levels))
        if split is not None:
            _datasets_section(section, split, meta, metrics, paired_metrics, opt, tdir, fdir)
        rep.sections.append(section)
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


def _datasets_section(section: FactorSection, split: ds.DatasetSplit, meta: dict, metrics: list,
                      paired_metrics: list, opt: ReportOptions, tdir: Path, fdir: Path) -> None:
    """Per-dataset factor and paired tables, the aggregate across datasets, performance profiles."""
    s = slug(split.factor)
    for d in split.datasets:
        recs = split.records[d]
        methods = [mth for mth in split.methods if any(r.level_label == mth for r in recs)]
        base = f"{s}__{slug(d)}"
        ft = tables.factor_table(recs, split.factor, methods, metrics, seeds=meta.get("seeds"),
                                 confidence=opt.confidence, ci=opt.ci)
        ft.factor = f"{split.factor} on {d}"
        _write_grid(tdir, base, tables.factor_grid(ft), tables.factor_csv(ft))
        pt = None
        if split.reference in methods and len(methods) > 1:
            pt = tables.paired_table(recs, split.factor, split.reference, paired_metrics, methods,
                                     confidence=opt.confidence, ci=opt.ci, target_delta=opt.target_delta)
            pt.factor = f"{split.factor} on {d}"
            _write_grid(tdir, f"{base}_paired", tables.paired_grid(pt), tables.paired_csv(pt))
        section.per_dataset.append((d, ft, pt))
    rows = ds.aggregate_rows(split, paired_metrics, opt.confidence)
    section.aggregate = ds.aggregate_grid(split, rows, opt.confidence)
    _write_grid(tdir, f"{s}_datasets", section.aggregate, ds.aggregate_csv(split, rows, opt.confidence))
    m = paired_metrics[-1]  # the primary metric
    section.profile = _figure(ds.profile_figure(split, m, opt.confidence), fdir / f"{s}_profiles",
                              f"{split.factor}: performance profiles of {m.label} over {len(split.datasets)} datasets "
                              "(share of runs above each score, Agarwal et al. 2021); band = pointwise "
                              f"{round(opt.confidence * 100)}% stratified-bootstrap interval.")


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


DATASET_NAMES = {"cifar100": "CIFAR-100", "cifar10": "CIFAR-10", "fashion_mnist": "Fashion-MNIST",
                 "synthetic": "synthetic data"}
"""How spec descriptions spell each dataset (data registry name -> display name), so that a report's
subtitle can name the data its runs actually used."""


def subtitle(description: str, dataset: str) -> str:
    """The spec's one-line description with the data the runs used: a spec describes its default
    profile ("... on CIFAR-100"), but a profile may train on other data, so a dataset named in the
    description that the runs did not use is replaced by the one they did (one dataset), or the runs'
    data is added after it ("description — runs on X")."""
    used = [n.strip() for n in dataset.split(",") if n.strip() and n.strip() != "unknown"]
    if not used:
        return description
    shown = [DATASET_NAMES.get(n, n) for n in used]

    def named(name: str) -> re.Pattern:  # the whole name: "CIFAR-10" is not in "CIFAR-100"
        return re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])")

    others = [name for key, name in DATASET_NAMES.items() if key not in used and named(name).search(description)]
    if len(shown) == 1 and others:
        for name in others:
            description = named(name).sub(shown[0], description)
        return description
    if not others and all(named(name).search(description) for name in shown):
        return description
    return f"{description} — runs on {', '.join(shown)}"


def _budgeted(rec) -> bool:
    train = (rec.config or {}).get("train", {})
    return train.get("budget_minutes") is not None or train.get("budget_flops") is not None


def _config_values(records: Sequence, section: str, key: str) -> list:
    return sorted({str((r.config or {}).get(section, {}).get(key)) for r in records
                   if (r.config or {}).get(section, {}).get(key) is not None})


def _coverage_text() -> str:
    cov = stats.MEASURED_COVERAGE
    parts = []
    for method in stats.CI_METHODS:
        row = cov.get(method, {})
        parts.append(f"{stats.CI_NAMES[method]}: " + ", ".join(f"{row[n]:.1%} at n = {n}" for n in sorted(row)))
    return "; ".join(parts)


def _methods(rep: Report) -> list[str]:
    recs = rep.records
    opt = rep.options
    val_frac = _config_values(recs, "data", "val_fraction")
    monitor = _config_values(recs, "train", "monitor") or ["val_top1"]
    seeds = rep.meta.get("seeds") or sorted({r.seed for r in recs})
    conf = round(opt.confidence * 100)
    frac, k = round(stats.FRACTION_OF_BEST * 100), stats.LAST_K
    vf = (", ".join(f"{float(v):.0%}" for v in val_frac) if val_frac else "a share")
    iv = tables.interval_name(opt.confidence, opt.ci)
    a = f"{stats.ALPHA:g}"
    if opt.ci == "t":
        how = ("Student-t interval: mean ± t(1 − α/2, n − 1) · s / √n, with s the standard deviation over seeds "
               "(n − 1 in the denominator); exact for normally distributed seed results")
    elif opt.ci == "bootstrap":
        how = (f"percentile bootstrap: the {(100 - conf) / 2:g}th and {100 - (100 - conf) / 2:g}th percentiles of the "
               f"means of {stats.N_RESAMPLES:,} resamples of the seeds with replacement (generator seed "
               f"{stats.BOOTSTRAP_SEED}); marked {tables.SMALL_N_MARK} below {stats.SMALL_N_BOOTSTRAP} seeds, where "
               "it is too narrow")
    else:
        how = (f"BCa bootstrap (bias-corrected and accelerated, Efron 1987) over {stats.N_RESAMPLES:,} resamples "
               f"of the seeds (generator seed {stats.BOOTSTRAP_SEED}); marked {tables.SMALL_N_MARK} below "
               f"{stats.SMALL_N_BOOTSTRAP} seeds, where it is too narrow")
    items = [
        f"Selection: every run holds out {vf} of its training set (stratified, seeded) as a validation "
        f"split; the best epoch is the one with the best {', '.join(monitor)} on it. Train/val numbers "
        "in the tables are at that epoch.",
        "Test set: used only for the final numbers, measured with the best-validation checkpoint; it "
        "never selects an epoch, a configuration or a search trial (search objectives are validation metrics).",
        f"Seeds: {len(seeds)} per configuration ({', '.join(str(s) for s in seeds)}); `seed` drives "
        "initialization, split, shuffling and augmentation unless seed_init, seed_split or seed_order override "
        "one source. Only runs that completed enter the statistics; failed, diverged, pruned and missing runs "
        "are counted in each table's first row. Every cell states its n.",
        f"Interval (report.ci = {opt.ci}): each cell is the mean over seeds with its {iv}, {how}. One seed "
        "gives no interval. The figures' bands are the same interval at each epoch. " + tables.RANGE_NOTE,
        "Paired comparison: for each seed completed at both levels, d = level − reference (seed effects shared "
        f"by both levels cancel). Δ = mean of d with its {iv}.",
        "The family: the comparisons the spec declares (compare: each level vs the reference, named pairs, a "
        "linear trend over the ordered levels, whose per-seed least-squares slope is tested like a difference); "
        "without compare:, each level vs the reference. One Holm adjustment covers exactly that family, per metric.",
        f"Decision rule ({stats.DECISION_RULE}): paired t = mean(d) / (s / √n) with n − 1 degrees of freedom, "
        f"two-sided p; p Holm by Holm's step-down method (Holm 1979), which keeps the chance of any false "
        f"'difference' in the family at most {a}. Why not the exact sign-flip test: its smallest p is 2/2^n "
        f"(0.25 at 3 seeds, 0.0625 at 5), so at the 3-10 seeds a study affords it can rarely decide anything "
        "after Holm; the t-test is exact for normal seed-to-seed differences and its interval measured 95% "
        "coverage at 2-10 seeds (below). The sign-flip p is kept in the CSV as a distribution-free check.",
        f"Verdict: 'difference' (better/worse by the sign of Δ; lower is better for losses and ECE) when p Holm ≤ "
        f"{a}; 'equivalent within ±m' when the spec sets equivalence_margin m (primary metric) and the two one-sided "
        f"t-tests (TOST, Schuirmann 1987), Holm-adjusted over the same family, reject |Δ| ≥ m at {a} (the 90% "
        "interval of Δ lies inside ±m); otherwise 'undecided at n = k', with the seeds that would decide it. "
        "The verdict never comes from P(improve).",
        "P(improve): probability of improvement (Agarwal et al. 2021): the chance that a randomly drawn run of the "
        "level beats a randomly drawn run of the reference, P(X > Y) + P(X = Y)/2 over all pairs of runs (the "
        f"Mann-Whitney U statistic / n_x n_y), with a {conf}% stratified-bootstrap percentile interval (runs of each "
        "side resampled independently).",
        f"MDE: the smallest true mean difference the paired t-test would detect at level {a} with power "
        f"{stats.POWER:g} at the current number of pairs, computed from the noncentral t distribution with the "
        "observed standard deviation of d. Seeds needed: the smallest number of pairs with power "
        f"{stats.POWER:g} for a difference of report.target_delta = {opt.target_delta:g} percentage points "
        "(percentage metrics); it is an estimate, as it uses the observed spread.",
        "Adaptive seeding (when the study used it): a level gets more seeds only while a declared comparison it "
        "is part of is undecided; it stops when each is a difference or equivalent by the rule above at "
        "alpha / (family size) (Bonferroni, so Holm keeps the verdict), without a margin also when the interval "
        "contains 0 and is narrower than target_delta, or at the maximum.",
    ]
    budgets = _config_values(recs, "train", "budget_minutes")
    steps = sorted({int(r.summary["steps"]) for r in recs if isinstance(r.summary.get("steps"), (int, float))})
    across = f" ({steps[0]:,}–{steps[-1]:,} steps across runs)." if steps else "."
    if budgets:
        clocks = _config_values(recs, "train", "budget_clock") or ["wall"]
        same = "the same budget" if len(budgets) == 1 else "budgets"
        by_study = any(r.summary.get("budget_calibrated_by") == "study" for r in recs)
        how = ("the study timed each configuration once, in one process before its workers started, and every "
               "seed of it trained the steps that fit" if by_study else
               "each run measured its own speed at its start and fixed its optimizer steps so that training "
               "and its evaluations fit the budget")
        items.append(f"Compute: every run had {same} of {', '.join(budgets)} minutes of {'/'.join(clocks)} time "
                     f"(train.budget_minutes; equal-compute comparison as in budgeted training, Li et al. 2020): "
                     f"{how}; its schedule spans those steps{across} The budget counted "
                     f"{budget_text(recs)}; each run's training wall clock (train_time_s) and "
                     "CPU time (train_cpu_s) are in the factor's compute table.")
    flops = _config_values(recs, "train", "budget_flops")
    if flops:
        same = "the same budget" if len(flops) == 1 else "budgets"
        items.append(f"Compute: every run had {same} of {', '.join(f'{float(b):.3g}' for b in flops)} training "
                     "FLOPs (train.budget_flops; the scaling-law convention of equal training compute): the "
                     "FLOPs of one training step (forward and backward of one batch, counted by torch's "
                     "FlopCounterMode on the meta device) divide the budget into its optimizer steps, the same on "
                     f"any machine; its schedule spans those steps{across} No clock was budgeted; each run's "
                     "training wall clock (train_time_s) and CPU time (train_cpu_s) are in the factor's compute "
                     "table.")
    if any(sec.variance is not None for sec in rep.sections):
        items.append(
            "Sources of variance (Bouthillier et al. 2021): where the runs of a level cross seed_init, seed_split "
            "and seed_order, a random-effects ANOVA splits each metric's variance into one component per source: "
            "with N runs and L levels of a source, its component is (MS_source − MS_residual) / (N / L), floored "
            "at 0, where MS are the ANOVA mean squares of the main effects; the residual holds interactions and "
            "randomness no seed controls. The dominant source has the largest component.")
    if any(sec.aggregate is not None for sec in rep.sections):
        items.append(
            "Several datasets (Agarwal et al. 2021): each dataset has its own tables. Across datasets, IQM = the "
            "interquartile mean, the mean of the middle 50% of all runs of a method pooled over datasets "
            "(scipy.stats.trim_mean, 25% cut from each end), robust to an outlying run or dataset; its interval is "
            "a stratified bootstrap (each resample redraws the runs within every dataset and keeps the datasets). "
            "P(improve) across datasets is the average over datasets of the per-dataset probability of "
            "improvement. Performance profile: for each score τ, the share of a method's runs (over all datasets) "
            "scoring above τ, with a pointwise stratified-bootstrap band; a curve above another is better "
            "everywhere.")
    items += [
        f"Measured coverage of the nominal 95% intervals on normal data (benchmarks/bench_coverage.py): "
        f"{_coverage_text()}.",
        f"Stability: epochs to {frac}% of best = first epoch whose validation top-1 reaches {frac}% of the "
        f"run's best validation top-1; std over the last {k} epochs = population standard deviation of the "
        f"validation top-1 over the final {k} epochs (in percentage points).",
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
        parts.append(f"<p>{e(subtitle(str(meta['description']), dataset))}</p>")
    rows = [("Kind", str(meta.get("kind", "study"))), ("Dataset", dataset), ("Generated", rep.generated),
            ("vitlab version", __version__), ("Runs", runs_line)]
    if meta.get("profile"):  # the description is the spec's; a profile may change its data and budget
        rows.insert(1, ("Profile", str(meta["profile"])))
    parts.append('<dl class="meta">' + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in rows) + "</dl>")
    if synthetic:
        parts.append('<div class="warn"><strong>Synthetic data.</strong> These runs trained on generated '
                     "images, not on a real benchmark: the numbers check the pipeline and compare settings "
                     "on a toy task; they say nothing about accuracy on real images.</div>")
    parts.append("</header>")
    if rep.sections or rep.search or rep.extra:
        toc = [f'<li><a href="#{slug(s.factor)}">{e(s.factor)}</a></li>' for s in rep.sections]
        toc += [f'<li><a href="#{e(anchor)}">{e(title)}</a></li>' for anchor, title, _ in rep.extra]
        if rep.search:
            toc.append('<li><a href="#search">Search</a></li>')
        toc.append('<li><a href="#methods">Method</a></li>')
        parts.append("<nav><ul>" + "".join(toc) + "</ul></nav>")
    for s in rep.sections:
        parts.append(f'<section id="{e(slug(s.factor))}"><h2>Factor: {e(s.factor)}</h2>')
        parts.append(to_html(tables.factor_grid(s.table)))
        if s.compute is not None:
            parts.append(to_html(s.compute))
        if s.paired is not None:
            parts.append(to_html(tables.paired_grid(s.paired)))
        if s.adaptive is not None:
            parts.append(to_html(s.adaptive))
        if s.variance is not None:
            parts.append(to_html(s.variance))
        for d, ft, pt in s.per_dataset:
            parts.append(f"<h3>Dataset: {e(d)}</h3>")
            parts.append(to_html(tables.factor_grid(ft)))
            if pt is not None:
                parts.append(to_html(tables.paired_grid(pt)))
        if s.aggregate is not None:
            parts.append("<h3>Across datasets</h3>")
            parts.append(to_html(s.aggregate))
        if s.profile is not None:
            parts.append(_img(s.profile))
        parts.append(_img(s.figure) if s.figure else '<p class="note">No completed run with curves yet.</p>')
        parts.append("</section>")
    if rep.search:
        sd = rep.search
        objective = meta.get("objective") or primary_metric(meta)
        parts.append(f'<section id="search"><h2>Search: {e(sd.study_name)}</h2>')
        parts.append(to_html(tables.trials_grid(sd.rows, sd.maximize, objective)))
        parts += [_img(a) for a in rep.search_figures]
        if not sd.importances:
            parts.append(f'<p class="note">{e(sd.importance_note)}</p>')
        parts.append("</section>")
    for anchor, title, body in rep.extra:
        parts.append(f'<section id="{e(anchor)}"><h2>{e(title)}</h2>{body}</section>')
    parts.append('<section id="methods"><h2>Method</h2><ul class="methods">'
                 + "".join(f"<li>{e(t)}</li>" for t in _methods(rep)) + "</ul></section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------
# entry points


def _open(study_dir: Path):
    if not study_dir.is_dir():
        raise UserError(f"{study_dir}: not a directory (expected a study directory)")
    return open_index(study_dir)


def report_dir_of(study_dir: Path) -> Path:
    """STUDY/report, refused (UnsafePathError, one line) when it or anything in it is a symbolic link:
    the tables and figures written there must stay in the study directory."""
    return check_tree(inside(study_dir, REPORT_DIR, "study directory"), "report directory")


def write_report(study_dir: str | Path, out_path: str | Path | None = None, ci: str | None = None,
                 target_delta: float | None = None) -> Path:
    """Write DIR/report/{tables,figures}/* and the HTML report (default DIR/report/report.html);
    returns the HTML path. `ci` (t | bootstrap | bca) and `target_delta` (percentage points)
    override the study's `report:` section; UserError when either is invalid."""
    study_dir = Path(study_dir)
    index = _open(study_dir)
    meta: dict[str, Any] = index.meta()
    options = report_options(meta, ci, target_delta)  # validated before anything is written
    records = index.runs()
    search = None
    if meta.get("kind") == "search":
        search = search_data(study_dir, meta.get("study_name") or meta.get("name"))
    report_dir = report_dir_of(study_dir)
    out = Path(out_path) if out_path is not None else report_dir / HTML_NAME
    check_output_file(out, "report file")  # both places are checked before any table or figure is written
    make_writable_dir(report_dir, "report directory")
    rep = build_report(meta, records, report_dir, search, options)
    rep.extra = _analysis_sections(meta, records, study_dir, report_dir, options)
    atomic_write_text(out, render_html(rep))
    return out


def _analysis_sections(meta: dict, records, study_dir: Path, report_dir: Path,
                       options: ReportOptions) -> list[tuple[str, str, str]]:
    """The Attention / Robustness / Efficiency sections from the runs' analysis.json (report.analysis_sections)."""
    return study_sections(meta, records, study_dir, report_dir, options.ci)


def report_main(study_dir: str | Path, out: str | Path | None = None, ci: str | None = None,
                target_delta: float | None = None) -> Path:
    """`vitlab report DIR [-o FILE] [--ci METHOD] [--target-delta PP]`: a study report, or the one-run
    report when DIR is a run directory; UserError (one line) when DIR is neither or an option is invalid."""
    if Path(study_dir).is_dir() and is_run_dir(Path(study_dir)):
        return write_run_report(study_dir, out)
    return write_report(study_dir, out, ci, target_delta)


# ----------------------------------------------------------------------------------------------
# notebooks


def notebook_html(rep: Report) -> str:
    """The report as an HTML fragment for a notebook: the page's body (tables, figures, method), without
    the page's global CSS, which would restyle the notebook around it."""
    page = render_html(rep)
    return page.split("<body>", 1)[1].rsplit("</body>", 1)[0]


def open_report(study_dir: str | Path, ci: str | None = None, target_delta: float | None = None) -> Report:
    """The report of a study as an object that renders in a notebook (Jupyter calls `_repr_html_`).
    Like `write_report` it writes DIR/report/tables and figures, but no HTML file."""
    study_dir = Path(study_dir)
    with _open(study_dir) as index:
        meta: dict[str, Any] = index.meta()
        options = report_options(meta, ci, target_delta)
        records = index.runs()
    search = None
    if meta.get("kind") == "search":
        search = search_data(study_dir, meta.get("study_name") or meta.get("name"))
    report_dir = report_dir_of(study_dir)
    rep = build_report(meta, records, report_dir, search, options)
    rep.extra = _analysis_sections(meta, records, study_dir, report_dir, options)
    return rep
