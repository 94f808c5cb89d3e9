"""Seed-style result tables: one per factor, rows = metrics, columns = levels, cells = mean and
interval over seeds; paired comparisons against the reference level; best trials of a search.

The builders take plain data (RunRecord-like objects: `factor`, `level_label`, `level_order`,
`seed`, `status`, `config`, `summary`, `epochs`) and return small dataclasses; `*_grid` turns them
into a `formats.Grid` (Markdown, LaTeX, HTML) and `*_csv` into CSV (long format, unrounded).
All statistics come from `vitlab.stats`.

Only runs with status "completed" enter the statistics. Every level's header says how many of the
expected seeds completed and what happened to the others (failed / diverged / missing / ...), and
every cell states the n it was computed over.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import stats
from ..config import SEED_SOURCES
from ..metrics import PCT_DECIMALS, RANGE_NONNEGATIVE, metric_info
from ..rundir import RunStatus
from ..study.compare import PAIR, TREND, Comparison, differences, versus_reference
from .formats import Grid, to_csv

COMPLETED = RunStatus.COMPLETED.value

EPOCHS_DECIMALS = 1
"""Decimals of epoch counts (a mean over seeds need not be whole)."""
P_DECIMALS = 2
"""Decimals of probabilities of improvement."""
P_VALUE_DIGITS = 2
"""Significant digits of p-values."""
TOP_TRIALS = 10
"""How many of the best completed trials a search's trial table lists (the CSV has all)."""
TARGET_DELTA = 1.0
"""Default `report.target_delta`: the difference, in percentage points, that `seeds_needed` is
computed for (1 point of accuracy). Applies to percentage metrics."""
SMALL_N_MARK = "†"
"""Marks a bootstrap interval over fewer than stats.SMALL_N_BOOTSTRAP seeds."""
FEW_SEEDS_MARK = stats.FEW_SEEDS_MARK
DEGENERATE_MARK = "§"
"""Marks a bootstrap interval of P(improve) that every resample gave the same value."""
SEEDS_NEEDED_SHOWN = 100
"""'Seeds for Δ' above this many pairs prints as '> 100': the spread is then too large (or, at 2
seeds, too poorly known) for seeds to be the remedy, and a four-digit count reads as a plan."""

MISSING = "—"


# ----------------------------------------------------------------------------------------------
# metrics


@dataclass(frozen=True)
class Metric:
    """One table row: how to read a number from a run, and how to print it (for a summary metric,
    its facts from `vitlab.metrics`: see `metric_for`).

    `scale` converts the stored unit into the printed one (fractions -> %, seconds -> minutes, ...);
    the statistics are computed on scaled values (exact for means and intervals, which are
    equivariant under scaling).
    """

    key: str
    label: str
    unit: str
    scale: float
    decimals: int
    higher_is_better: bool
    extract: Callable[[Any], float]
    valid: tuple[float, float] = RANGE_NONNEGATIVE
    """Values the metric can take, in the printed unit; intervals are cut to it."""

    @property
    def title(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label

    @property
    def diff_unit(self) -> str:
        """Unit of a difference: percentage points for percentages."""
        return "pp" if self.unit == "%" else self.unit


def _summary_value(key: str) -> Callable[[Any], float]:
    def extract(rec) -> float:
        v = (rec.summary or {}).get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan

    return extract


def curve(rec, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of one per-epoch metric of a run, sorted by epoch; when an epoch was logged
    twice (a resumed run re-logging it) the later row wins. Rows without the key are skipped."""
    by_epoch: dict[int, float] = {}
    for row in rec.epochs or []:
        if key in row and "epoch" in row and row[key] is not None:
            by_epoch[int(row["epoch"])] = float(row[key])
    epochs = np.array(sorted(by_epoch), dtype=int)
    return epochs, np.array([by_epoch[e] for e in epochs], dtype=float)


def summary_metric(name: str, key: str | None = None) -> Metric:
    """The row of the summary metric `name` as `vitlab.metrics` describes it (`key`: the row's own
    name where it differs, e.g. train_minutes for train_time_s printed in minutes)."""
    m = metric_info(name)
    return Metric(key or name, m.label, m.unit, m.scale, m.decimals, m.higher_is_better, _summary_value(name), m.valid)


#: Summary metrics of a factor table, in row order (the stability rows follow them).
TABLE_SUMMARY_METRICS = ("train_loss", "train_top1", "val_top1", "test_loss", "test_top1", "test_top5",
                         "test_precision_macro", "test_recall_macro", "test_f1_macro", "test_ece", "params")


def table_metrics(fraction: float = stats.FRACTION_OF_BEST, k: int = stats.LAST_K) -> list[Metric]:
    """The rows of a factor table, in order. `fraction` and `k` parametrize the stability rows."""
    return [
        *(summary_metric(name) for name in TABLE_SUMMARY_METRICS),
        summary_metric("train_time_s", key="train_minutes"),
        Metric(f"epochs_to_{round(fraction * 100)}pct_best_val",
               f"Epochs to {round(fraction * 100)}% of best val top-1", "", 1.0, EPOCHS_DECIMALS, False,
               lambda rec: stats.epochs_to_fraction(curve(rec, "val_top1")[1], fraction)),
        Metric(f"val_top1_std_last{k}", f"Std of val top-1, last {k} epochs", "pp", 100.0, PCT_DECIMALS,
               False, lambda rec: stats.last_k_std(curve(rec, "val_top1")[1], k)),
    ]


def metric_for(key: str, metrics: Sequence[Metric] | None = None) -> Metric:
    """The table metric named `key`, or the row of another summary key (`vitlab.metrics.metric_info`)."""
    for m in metrics if metrics is not None else table_metrics():
        if m.key == key:
            return m
    return summary_metric(key)


# ----------------------------------------------------------------------------------------------
# seeds


def seed_sources(rec) -> dict[str, Any]:
    """The seed each source of randomness used in a run: {seed_init, seed_split, seed_order}, each
    the config's value, or the run's `seed` where the config leaves it None (or predates it)."""
    cfg = rec.config or {}
    base = cfg.get("seed", rec.seed)
    return {s: cfg.get(s) if cfg.get(s) is not None else base for s in SEED_SOURCES}


def pair_key(rec) -> tuple:
    """What pairs two runs of different levels: the same seed and the same per-source seeds."""
    cfg = rec.config or {}
    return (rec.seed,) + tuple(cfg.get(s) for s in SEED_SOURCES)


def _values_by_key(records: Sequence, label: str, m: Metric) -> dict[tuple, float]:
    return {pair_key(r): m.extract(r) * m.scale for r in records
            if r.level_label == label and r.status == COMPLETED}


# ----------------------------------------------------------------------------------------------
# factor table


@dataclass
class LevelRuns:
    """Bookkeeping of one level: expected seeds, completed runs, what happened to the rest."""

    label: str
    expected: int
    completed: int
    other: dict[str, int] = field(default_factory=dict)  # status -> count, incl. "missing"

    def text(self) -> str:
        s = f"{self.completed}/{self.expected}"
        if self.other:
            s += " (" + ", ".join(f"{n} {st}" for st, n in sorted(self.other.items())) + ")"
        return s


@dataclass
class Cell:
    n: int
    expected: int
    mean: float
    lo: float
    hi: float
    method: str = stats.DEFAULT_CI


@dataclass
class FactorTable:
    factor: str
    levels: list[LevelRuns]
    metrics: list[Metric]
    cells: dict[tuple[str, str], Cell]
    confidence: float
    method: str


def levels_of(records: Sequence, levels: Sequence[str] | None) -> list[str]:
    """`levels`, or the level labels of `records` in level order."""
    if levels is not None:
        return list(levels)
    seen: dict[str, int] = {}
    for r in records:
        seen.setdefault(r.level_label, r.level_order)
    return sorted(seen, key=seen.get)


def _level_runs(records: Sequence, label: str, expected: int) -> LevelRuns:
    mine = [r for r in records if r.level_label == label]
    statuses = Counter(str(r.status) for r in mine)
    completed = statuses.pop(COMPLETED, 0)
    other = dict(statuses)
    seen = {pair_key(r) for r in mine}
    if len(seen) < expected:
        other["missing"] = expected - len(seen)
    return LevelRuns(label, max(expected, len(seen)), completed, other)


def factor_table(records: Iterable, factor: str, levels: Sequence[str] | None = None,
                 metrics: Sequence[Metric] | None = None, seeds: Sequence[int] | None = None,
                 confidence: float = stats.CONFIDENCE, ci: str = stats.DEFAULT_CI,
                 n_resamples: int = stats.N_RESAMPLES, seed: int = stats.BOOTSTRAP_SEED,
                 expected: Mapping[str, int] | None = None) -> FactorTable:
    """Mean and `ci` interval over seeds of every metric at every level of `factor`.

    `levels`: level labels in display order (default: as found, by level_order). `seeds`: the
    seeds the study plans (default: every seed seen in this factor's records), which sets the
    expected n of each level; `expected[label]` overrides it per level (adaptive seeding). A run
    contributes to a cell when it completed and the metric is finite for it.
    """
    recs = [r for r in records if r.factor == factor]
    labels = levels_of(recs, levels)
    metrics = list(metrics) if metrics is not None else table_metrics()
    per_level = [len({pair_key(r) for r in recs if r.level_label == lab}) for lab in labels]
    default_n = len(set(seeds)) if seeds else max(per_level, default=0)
    expected = dict(expected or {})
    level_runs = [_level_runs(recs, lab, int(expected.get(lab, default_n))) for lab in labels]
    cells: dict[tuple[str, str], Cell] = {}
    for lab, lv in zip(labels, level_runs):
        done = [r for r in recs if r.level_label == lab and r.status == COMPLETED]
        for m in metrics:
            vals = [m.extract(r) * m.scale for r in done]
            vals = [v for v in vals if math.isfinite(v)]
            c = stats.mean_ci(vals, ci, confidence, n_resamples, seed)
            cells[(m.key, lab)] = Cell(len(vals), lv.expected, c.mean, *stats.clip_interval(c.lo, c.hi, m.valid), ci)
    return FactorTable(factor, level_runs, metrics, cells, confidence, ci)


def num(v: float, decimals: int, sign: bool = False) -> str:
    if not math.isfinite(v):
        return MISSING
    return f"{v:+.{decimals}f}" if sign else f"{v:.{decimals}f}"


def interval_text(mean: float, lo: float, hi: float, n: int, decimals: int, method: str = stats.DEFAULT_CI,
                  sign: bool = False) -> str:
    """'mean [lo, hi]'; 'mean' alone when every value is equal (nothing varies); 'mean (no interval)'
    for n = 1. A bootstrap interval over fewer than SMALL_N_BOOTSTRAP values is marked, and so is one
    over fewer than MIN_SEEDS_TO_BOUND values."""
    s = num(mean, decimals, sign)
    if n >= 2 and lo == hi == mean:
        return s
    if n >= 2 and math.isfinite(lo):
        mark = SMALL_N_MARK if stats.interval_note(method, n) else ""
        mark += FEW_SEEDS_MARK if n < stats.MIN_SEEDS_TO_BOUND else ""
        return s + f" [{num(lo, decimals, sign)}, {num(hi, decimals, sign)}]{mark}"
    return s + " (no interval)"


def cell_text(cell: Cell, decimals: int) -> str:
    """'mean [lo, hi] (n=3)'; 'mean (no interval) (n=1)'; n=k/N when k of N planned seeds entered
    the cell; '—' without data."""
    if cell.n == 0:
        return MISSING
    s = interval_text(cell.mean, cell.lo, cell.hi, cell.n, decimals, cell.method)
    return s + (f" (n={cell.n}/{cell.expected})" if cell.n < cell.expected else f" (n={cell.n})")


def interval_name(confidence: float, method: str) -> str:
    """'95% Student-t interval' (the words every note and header use)."""
    return f"{round(confidence * 100)}% {stats.CI_NAMES[method]} interval"


def small_n_note(method: str) -> str:
    return (f"{SMALL_N_MARK} {stats.CI_NAMES[method]} interval over fewer than {stats.SMALL_N_BOOTSTRAP} seeds: "
            "it covers the true mean less often than stated (about 50% at n = 2 and 75% at n = 3 for a 95% "
            "interval; benchmarks/RESULTS.md). The Student-t interval (--ci t) keeps its coverage.")


def few_seeds_note() -> str:
    return (f"{FEW_SEEDS_MARK} n = {stats.MIN_SEEDS_TO_BOUND - 1}: too few seeds to bound the mean (a 95% Student-t "
            f"interval spans ±12.7 standard errors); its bounds are cut to the metric's range. Run at least "
            f"{stats.MIN_SEEDS_TO_BOUND} seeds.")


RANGE_NOTE = ("Intervals are cut to the metric's valid range (0–100% for accuracies, macro scores and ECE; ≥ 0 for "
              "losses, times and counts): the mean cannot leave it, though a symmetric interval over few seeds can.")


def _has_few_seeds(ns: Iterable[int]) -> bool:
    return any(2 <= n < stats.MIN_SEEDS_TO_BOUND for n in ns)


EMPTY_ROWS_NOTE = ("Left out: {rows}, which no completed run has a value for (the stability rows need at least 2 "
                   "logged epochs; a budgeted run of one epoch has none).")
"""Says which metric rows the factor table dropped because every cell was empty, instead of a row of '—'."""
WALL_CLOCK_NOTE = ("Training time is wall clock (train_time_s): it depends on the machine and its load, and it is not "
                   "the CPU time or the FLOPs a study may equalize instead (the compute table, when there is one, gives "
                   "steps and CPU seconds).")
"""Says what the training-time row measures."""


def factor_grid(t: FactorTable) -> Grid:
    header = ["Metric"] + [lv.label for lv in t.levels]
    rows = [["Runs completed"] + [lv.text() for lv in t.levels]]
    empty = []
    for m in t.metrics:
        if not any(t.cells[(m.key, lv.label)].n for lv in t.levels) and any(lv.completed for lv in t.levels):
            empty.append(m.title)
            continue
        rows.append([m.title] + [cell_text(t.cells[(m.key, lv.label)], m.decimals) for lv in t.levels])
    notes = [f"Cells: mean over seeds [{interval_name(t.confidence, t.method)} of the mean] (n = seeds in the "
             "cell; n=k/N where k of N planned seeds completed). One seed gives no interval; a bare mean means "
             "every seed gave the same value. Only completed runs count; val top-1 and the train/val numbers are "
             "at the best-validation epoch. " + RANGE_NOTE]
    if any(stats.interval_note(c.method, c.n) for c in t.cells.values()):
        notes.append(small_n_note(t.method))
    if _has_few_seeds(c.n for c in t.cells.values()):
        notes.append(few_seeds_note())
    if any(m.key == "train_minutes" for m in t.metrics):
        notes.append(WALL_CLOCK_NOTE)
    if empty:
        notes.append(EMPTY_ROWS_NOTE.format(rows=", ".join(empty)))
    return Grid(f"Factor {t.factor}", header, rows, notes)


def factor_csv(t: FactorTable) -> str:
    """Long format, one row per (level, metric), unrounded values in the printed unit; empty
    fields where a value is undefined (no run, or no interval for one seed)."""
    order = {lv.label: i for i, lv in enumerate(t.levels)}
    rows = []
    for lv in t.levels:
        for m in t.metrics:
            c = t.cells[(m.key, lv.label)]
            rows.append([t.factor, lv.label, order[lv.label], m.key, m.unit, c.n, c.expected,
                         c.mean, c.lo, c.hi, t.confidence, t.method])
    return to_csv(["factor", "level", "level_order", "metric", "unit", "n", "n_expected",
                   "mean", "lo", "hi", "confidence", "ci_method"], rows)


# ----------------------------------------------------------------------------------------------
# paired comparison


@dataclass
class PairedRow:
    """One declared comparison on one metric (differences in the printed unit; a trend's Δ is the
    slope per level step). `level` is the comparison's label ("zscore − softmax", "trend C1 → C5")."""

    level: str
    metric: Metric
    n: int
    diff_mean: float
    lo: float
    hi: float
    p_exact: float  # the sign-flip test: shown in the CSV as a distribution-free check, never decides
    p_adjusted: float  # paired t, Holm over the declared family
    verdict: str  # a difference's direction, better / worse ('' otherwise; `decision` holds the verdict)
    mde: float
    seeds_needed: float
    p_improve: float
    p_improve_lo: float
    p_improve_hi: float
    t: float = math.nan
    df: int = 0
    p_t: float = math.nan
    p_tost: float = math.nan
    p_tost_adjusted: float = math.nan
    margin: float = math.nan
    seeds_equivalence: float = math.nan
    decision: str = stats.UNDECIDED
    comparison: Comparison | None = None
    sd: float = math.nan  # standard deviation of the paired differences


@dataclass
class PairedTable:
    factor: str
    reference: str
    metrics: list[Metric]
    rows: list[PairedRow]
    confidence: float
    method: str
    alpha: float = stats.ALPHA
    power: float = stats.POWER
    target_delta: float = TARGET_DELTA
    declared: bool = False  # the spec declared its comparisons (compare:), else each level vs the reference
    margins: dict[str, float] = field(default_factory=dict)  # metric key -> equivalence margin


def comparison_row(c: Comparison, m: Metric, values: Mapping[str, Mapping], confidence: float = stats.CONFIDENCE,
                   ci: str = stats.DEFAULT_CI, n_resamples: int = stats.N_RESAMPLES, seed: int = stats.BOOTSTRAP_SEED,
                   target_delta: float = TARGET_DELTA, alpha: float = stats.ALPHA, power: float = stats.POWER,
                   margin: float | None = None) -> PairedRow:
    """One comparison before the family's Holm adjustment (`paired_table` fills in p_adjusted, the
    TOST adjustment and the verdict). `values`: {level label: {pair key: value}} in the printed unit."""
    d = differences(values, c)
    n = int(d.size)
    ci_ = stats.mean_ci(d, ci, confidence, n_resamples, seed)
    ci_ = stats.CI(ci_.mean, *stats.clip_interval(ci_.lo, ci_.hi, stats.difference_range(m.valid)))
    sd = float(np.std(d, ddof=1)) if n >= 2 else math.nan
    poi = stats.CI(math.nan, math.nan, math.nan)
    if c.kind == PAIR:  # P(improve) compares runs, not pairs (Agarwal et al.): every completed run of each level
        sign = 1.0 if m.higher_is_better else -1.0
        xs = [sign * v for v in values.get(c.level, {}).values() if math.isfinite(v)]
        ys = [sign * v for v in values.get(c.other, {}).values() if math.isfinite(v)]
        poi = stats.probability_of_improvement_ci(xs, ys, confidence, n_resamples, seed)
    target = target_delta if m.unit == "%" else math.nan
    test = stats.paired_t_test(d) if n else stats.TTest(math.nan, 0, math.nan)
    return PairedRow(c.label, m, n, ci_.mean, ci_.lo, ci_.hi, stats.sign_flip_pvalue(d) if n else math.nan,
                     math.nan, "", stats.minimum_detectable_difference(sd, n, alpha, power),
                     stats.seeds_needed(target, sd, alpha, power), poi.mean, poi.lo, poi.hi,
                     t=test.t, df=test.df, p_t=test.p,
                     p_tost=stats.tost_pvalue(d, margin) if margin and n else math.nan,
                     margin=margin if margin else math.nan,
                     comparison=c, sd=sd)


def paired_table(records: Iterable, factor: str, reference: str, metrics: Sequence[Metric],
                 levels: Sequence[str] | None = None, confidence: float = stats.CONFIDENCE,
                 ci: str = stats.DEFAULT_CI, n_resamples: int = stats.N_RESAMPLES, seed: int = stats.BOOTSTRAP_SEED,
                 target_delta: float = TARGET_DELTA, alpha: float = stats.ALPHA,
                 power: float = stats.POWER, comparisons: Sequence[Comparison] | None = None,
                 margins: Mapping[str, float] | None = None) -> PairedTable:
    """The declared comparisons of `factor` (default: each level minus `reference`), paired by seed,
    on every metric. Per metric, the family is exactly those comparisons: their paired t p-values
    (and TOST p-values, for a metric with a margin in `margins`) are Holm-adjusted over it and
    `stats.decide_family`'s rule gives each verdict."""
    recs = [r for r in records if r.factor == factor]
    labels = levels_of(recs, levels)
    family = list(comparisons) if comparisons is not None else versus_reference(labels, reference)
    family = [c for c in family if all(lab in labels for lab in c.members)]
    margins = dict(margins or {})
    rows = []
    for c in family:
        for m in metrics:
            values = {lab: _values_by_key(recs, lab, m) for lab in c.members}
            # the margin bounds a difference of two levels; a trend's slope per step is not on that scale
            margin = margins.get(m.key) if c.kind == PAIR else None
            rows.append(comparison_row(c, m, values, confidence, ci, n_resamples, seed, target_delta, alpha, power,
                                       margin))
    for m in metrics:
        mine = [r for r in rows if r.metric.key == m.key]
        p_holm = stats.holm_adjust([r.p_t for r in mine])
        p_tost = stats.holm_adjust([r.p_tost for r in mine])  # over the comparisons with a margin
        with_margin = sum(math.isfinite(r.margin) for r in mine)
        for r, ph, pe in zip(mine, p_holm, p_tost):
            r.p_adjusted, r.p_tost_adjusted = float(ph), float(pe)
            if math.isfinite(r.margin):  # planned at Holm's first threshold, what a comparison may have to reach
                r.seeds_equivalence = stats.tost_seeds_needed(r.margin, r.sd, alpha / with_margin, power)
            r.decision = (stats.DIFFERENCE if ph <= alpha and r.diff_mean != 0 else
                          stats.EQUIVALENT if pe <= alpha else stats.UNDECIDED)
            # the direction of a difference (better / worse); empty when there is none to give
            r.verdict = stats.verdict(r.diff_mean, r.p_adjusted, m.higher_is_better, alpha) \
                if r.decision == stats.DIFFERENCE else ""
    return PairedTable(factor, reference, list(metrics), [r for r in rows], confidence, ci, alpha, power,
                       target_delta, comparisons is not None, margins)


def _p(v: float) -> str:
    return MISSING if not math.isfinite(v) else f"{v:.{P_VALUE_DIGITS}g}"


def _seeds(v: float) -> str:
    if v > SEEDS_NEEDED_SHOWN:
        return f"> {SEEDS_NEEDED_SHOWN:,}"
    return MISSING if not math.isfinite(v) else str(int(v))


def _p_improve(r: PairedRow) -> str:
    """'0.75 [0.50, 1.00]'; a bootstrap that gave one value for every resample is marked, not shown
    as the interval [1.00, 1.00] (a few runs that all beat the reference, not certainty). A trend has
    no P(improve)."""
    if not math.isfinite(r.p_improve):
        return MISSING
    s = num(r.p_improve, P_DECIMALS)
    if not math.isfinite(r.p_improve_lo):
        return s + " (no interval)"
    if r.p_improve_lo == r.p_improve_hi:
        return s + DEGENERATE_MARK
    return s + f" [{num(r.p_improve_lo, P_DECIMALS)}, {num(r.p_improve_hi, P_DECIMALS)}]"


def verdict_cell(r: PairedRow) -> str:
    """'difference: better' / 'equivalent within ±0.5 pp' / 'undecided at n = 3' (the three verdicts
    of stats.decide_family; a trend's difference says rising or falling)."""
    unit = f" {r.metric.diff_unit}" if r.metric.diff_unit else ""
    if r.decision == stats.DIFFERENCE:
        if r.comparison is not None and r.comparison.kind == TREND:
            return "difference: " + ("rising" if r.diff_mean > 0 else "falling")
        return f"difference: {r.verdict}"
    if r.decision == stats.EQUIVALENT:
        return f"equivalent within ±{r.margin:g}{unit}"
    return f"undecided at n = {r.n}"


def _t_text(r: PairedRow) -> str:
    return MISSING if not math.isfinite(r.p_t) else f"t({r.df}) = {r.t:.2f}"


def paired_grid(t: PairedTable) -> Grid:
    iv = interval_name(t.confidence, t.method)
    with_margin = any(math.isfinite(r.margin) for r in t.rows)
    header = ["Comparison", "Metric", "n", f"Δ [{iv}]", "paired t", "p", "p Holm", "Verdict"]
    if with_margin:
        header += ["p TOST Holm", "Seeds for equivalence"]
    header += [f"P(improve) [{round(t.confidence * 100)}% bootstrap]", "MDE", f"Seeds for Δ = {t.target_delta:g} pp"]
    rows = []
    for r in t.rows:
        d = r.metric.decimals
        unit = f" {r.metric.diff_unit}" if r.metric.diff_unit else ""
        if r.n == 0:
            rows.append([r.level, r.metric.title, "0"] + [MISSING] * (len(header) - 3))
            continue
        row = [r.level, r.metric.title, str(r.n), interval_text(r.diff_mean, r.lo, r.hi, r.n, d, t.method, sign=True)
               + unit, _t_text(r), _p(r.p_t), _p(r.p_adjusted), verdict_cell(r)]
        if with_margin:
            row += [_p(r.p_tost_adjusted), _seeds(r.seeds_equivalence)]
        row += [_p_improve(r), num(r.mde, d) + (unit if math.isfinite(r.mde) else ""), _seeds(r.seeds_needed)]
        rows.append(row)
    a = f"{t.alpha:g}"
    family = ("the comparisons the spec declares (compare:)" if t.declared else
              f"each level minus the reference level '{t.reference}' (no compare: declared)")
    notes = [f"The family: {family}, paired by seed (seeds completed at every level involved); a trend is the "
             "per-seed least-squares slope over the levels in order, per level step. "
             f"Δ: mean paired difference with its {iv}. Decision rule ({stats.DECISION_RULE}): paired t is the "
             "statistic t = mean(d) / (s / √n) with n − 1 degrees of freedom, p its two-sided p-value, p Holm that "
             f"p adjusted by Holm over the family of this metric; 'difference' when p Holm ≤ {a} (better/worse by "
             "the sign of Δ; lower is better for losses and ECE). The t-test, not the exact sign-flip test, decides "
             "because the sign-flip test cannot go below 2/2^n (0.25 at 3 seeds); the t-test assumes roughly normal "
             "seed-to-seed differences, under which its interval measured 95% coverage at 2-10 seeds. "
             "P(improve): probability that a run of the level beats a run of the other (Agarwal et al. 2021), with "
             f"its stratified-bootstrap interval (too narrow at a few runs, like every bootstrap); it never decides "
             f"the verdict. MDE: smallest true difference the paired t-test detects at this n with power {t.power:g} "
             f"at level {a}, from the observed spread of the differences. Seeds: pairs needed to detect a difference "
             f"of {t.target_delta:g} pp (report.target_delta) with that power (percentage metrics); "
             f"'> {SEEDS_NEEDED_SHOWN}' when more are needed: the spread is too large (or, over few pairs, too poorly "
             f"known) for more seeds to be the remedy. Δ intervals are cut to the range a difference can take."]
    if with_margin:
        margins = ", ".join(f"{k} ±{v:g}" for k, v in t.margins.items())
        notes.append(f"Equivalence (equivalence_margin: {margins}): two one-sided t-tests (TOST, Schuirmann 1987) of "
                     f"|true Δ| ≥ margin, Holm-adjusted over the same family; 'equivalent' when p TOST Holm ≤ {a} and "
                     "the comparison is not a difference, i.e. the 90% interval of Δ lies inside ±margin. Seeds for "
                     "equivalence: pairs at which TOST decides with power "
                     f"{t.power:g} if the true Δ is 0 (observed spread), at {a} / (comparisons with a margin), "
                     "the threshold Holm may hold a comparison to. Otherwise 'undecided': the seeds columns say "
                     "what would decide it.")
    if any(stats.interval_note(t.method, r.n) for r in t.rows):
        notes.append(small_n_note(t.method))
    if _has_few_seeds(r.n for r in t.rows):
        notes.append(few_seeds_note())
    if any(r.n and math.isfinite(r.p_improve) and r.p_improve_lo == r.p_improve_hi for r in t.rows):
        notes.append(f"{DEGENERATE_MARK} every bootstrap resample gave this P(improve) (e.g. every run of the level "
                     "beat every run of the other): too few runs for an interval, not certainty.")
    return Grid(f"Factor {t.factor}: declared comparisons" if t.declared else
                f"Factor {t.factor}: paired comparison with {t.reference}", header, rows, notes)


def paired_csv(t: PairedTable) -> str:
    """Long format, one row per (comparison, metric); `level` and `other` are a pair's two levels
    (Δ = level − other; empty for a trend). `decision` is the verdict (difference / equivalent /
    undecided), `verdict` a difference's direction (better / worse, else empty); p_exact (sign-flip)
    is a distribution-free check that never decides."""
    def ends(r: PairedRow) -> list[str]:  # a pair's two levels (a − b); a trend has none
        c = r.comparison
        return [c.level, c.other] if c is not None and c.kind == PAIR else ["", ""]

    rows = [[t.factor, t.reference, r.level, *ends(r), r.metric.key, r.metric.diff_unit, r.n, r.diff_mean, r.lo, r.hi,
             r.t, r.df, r.p_t, r.p_adjusted, r.decision, r.verdict, r.margin, r.p_tost, r.p_tost_adjusted,
             r.p_exact, r.mde, r.seeds_needed, r.seeds_equivalence, r.p_improve, r.p_improve_lo, r.p_improve_hi,
             t.confidence, t.method, t.target_delta if r.metric.unit == "%" else math.nan]
            for r in t.rows]
    return to_csv(["factor", "reference", "comparison", "level", "other", "metric", "unit", "n_pairs", "diff_mean", "lo", "hi", "t",
                   "df", "p_t", "p_adjusted", "decision", "verdict", "margin", "p_tost", "p_tost_adjusted",
                   "p_exact", "mde", "seeds_needed", "seeds_equivalence", "p_improve", "p_improve_lo", "p_improve_hi",
                   "confidence", "ci_method", "target_delta"], rows)


# ----------------------------------------------------------------------------------------------
# adaptive seeding


def adaptive_grid(factor: str, info: Mapping[str, Mapping]) -> Grid:
    """Which levels the adaptive runner stopped, after how many seeds, and why (meta['adaptive'])."""
    rows = [[str(label), str(v.get("seeds", MISSING)), str(v.get("stopped") or "not stopped")]
            for label, v in info.items() if isinstance(v, Mapping)]
    notes = ["Adaptive seeding adds seeds only to levels with a declared comparison still undecided: a level stops "
             "when every comparison it is part of is decided by the report's rule at alpha / (family size) — a "
             "difference (paired t) or, with an equivalence_margin, equivalent (TOST); without a margin, also "
             "when the interval contains 0 and is narrower than target_delta (precise) — or at the maximum seeds."]
    return Grid(f"Factor {factor}: adaptive seeding", ["Level", "Seeds", "Stopped"], rows, notes)


def adaptive_csv(factor: str, info: Mapping[str, Mapping]) -> str:
    return to_csv(["factor", "level", "seeds", "stopped"],
                  [[factor, str(label), v.get("seeds", ""), v.get("stopped") or ""]
                   for label, v in info.items() if isinstance(v, Mapping)])


# ----------------------------------------------------------------------------------------------
# search trials


@dataclass
class TrialRow:
    number: int
    state: str
    value: float | None
    params: dict


def trial_rows(trials: Iterable) -> list[TrialRow]:
    """Plain rows from optuna FrozenTrials (or anything with number/state/value/params)."""
    out = []
    for t in trials:
        state = getattr(t.state, "name", str(t.state))
        out.append(TrialRow(int(t.number), state, t.value if t.value is not None else None, dict(t.params)))
    return out


def best_trials(rows: Sequence[TrialRow], maximize: bool, top_k: int = TOP_TRIALS) -> list[TrialRow]:
    """The `top_k` completed trials with a finite objective, best first (ties: lower number)."""
    done = [r for r in rows if r.state == "COMPLETE" and r.value is not None and math.isfinite(r.value)]
    sign = -1.0 if maximize else 1.0
    return sorted(done, key=lambda r: (sign * r.value, r.number))[:top_k]


def trials_grid(rows: Sequence[TrialRow], maximize: bool, objective: str = "objective",
                top_k: int = TOP_TRIALS) -> Grid:
    best = best_trials(rows, maximize, top_k)
    names = sorted({k for r in best for k in r.params})
    m = metric_for(objective)  # prints a val_top1 objective as %, like the factor tables
    header = ["Trial"] + names + [m.title, "State"]
    body = [[str(r.number)] + [_fmt_param(r.params.get(k)) for k in names] + [num(r.value * m.scale, m.decimals),
                                                                              r.state] for r in best]
    counts = Counter(r.state for r in rows)
    notes = [f"Best {len(best)} of {counts.get('COMPLETE', 0)} completed trials "
             f"({'higher' if maximize else 'lower'} is better); all trials: "
             + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) + "."]
    return Grid("Search: best trials", header, body, notes)


def _fmt_param(v) -> str:
    if v is None:
        return MISSING
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def trials_csv(rows: Sequence[TrialRow]) -> str:
    names = sorted({k for r in rows for k in r.params})
    body = [[r.number, r.state, r.value if r.value is not None else math.nan] + [r.params.get(k, "") for k in names]
            for r in sorted(rows, key=lambda r: r.number)]
    return to_csv(["trial", "state", "value"] + [f"param_{k}" for k in names], body)
