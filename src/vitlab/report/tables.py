"""Seed-style result tables: one per factor, rows = metrics, columns = levels, cells = mean and
bootstrap CI over seeds; paired comparisons against the reference level; best trials of a search.

The builders take plain data (RunRecord-like objects: `factor`, `level_label`, `level_order`,
`seed`, `status`, `summary`, `epochs`) and return small dataclasses; the renderers turn those into
Markdown, CSV (long format, unrounded, separate mean/lo/hi columns), LaTeX (booktabs) and HTML.

Only runs with status "completed" enter the statistics. Every level's header says how many of the
expected seeds completed and what happened to the others (failed / diverged / missing / ...), and
a cell computed over fewer seeds than expected says so ("n=2/3").
"""
from __future__ import annotations

import csv
import html
import io
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import stats

COMPLETED = "completed"

PCT_DECIMALS = 2
"""Decimals of percentages (accuracies, macro scores, ECE) in rendered tables."""
LOSS_DECIMALS = 3
"""Decimals of losses in rendered tables."""
PARAMS_DECIMALS = 2
"""Decimals of parameter counts, printed in millions (M)."""
MINUTES_DECIMALS = 1
"""Decimals of training time, printed in minutes."""
EPOCHS_DECIMALS = 1
"""Decimals of epoch counts (a mean over seeds need not be whole)."""
P_DECIMALS = 2
"""Decimals of the probability of improvement."""
TOP_TRIALS = 10
"""How many of the best completed trials a search's trial table lists (the CSV has all)."""

MISSING = "—"


# ----------------------------------------------------------------------------------------------
# metrics


@dataclass(frozen=True)
class Metric:
    """One table row: how to read a number from a run, and how to print it.

    `scale` converts the stored unit into the printed one (fractions -> %, seconds -> minutes, ...);
    the statistics are computed on scaled values, which is exact for means and percentiles.
    """

    key: str
    label: str
    unit: str
    scale: float
    decimals: int
    higher_is_better: bool
    extract: Callable[[Any], float]

    @property
    def title(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label


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


def _pct(key: str, label: str, higher: bool = True) -> Metric:
    return Metric(key, label, "%", 100.0, PCT_DECIMALS, higher, _summary_value(key))


def table_metrics(fraction: float = stats.FRACTION_OF_BEST, k: int = stats.LAST_K) -> list[Metric]:
    """The rows of a factor table, in order. `fraction` and `k` parametrize the stability rows."""
    return [
        Metric("train_loss", "Train loss", "", 1.0, LOSS_DECIMALS, False, _summary_value("train_loss")),
        _pct("train_top1", "Train top-1"),
        _pct("val_top1", "Val top-1"),
        Metric("test_loss", "Test loss", "", 1.0, LOSS_DECIMALS, False, _summary_value("test_loss")),
        _pct("test_top1", "Test top-1"),
        _pct("test_top5", "Test top-5"),
        _pct("test_precision_macro", "Test precision (macro)"),
        _pct("test_recall_macro", "Test recall (macro)"),
        _pct("test_f1_macro", "Test F1 (macro)"),
        _pct("test_ece", "Test ECE", higher=False),
        Metric("params", "Parameters", "M", 1e-6, PARAMS_DECIMALS, False, _summary_value("params")),
        Metric("train_minutes", "Training time", "min", 1 / 60, MINUTES_DECIMALS, False,
               _summary_value("train_time_s")),
        Metric(f"epochs_to_{round(fraction * 100)}pct_best_val",
               f"Epochs to {round(fraction * 100)}% of best val top-1", "", 1.0, EPOCHS_DECIMALS, False,
               lambda rec: stats.epochs_to_fraction(curve(rec, "val_top1")[1], fraction)),
        Metric(f"val_top1_std_last{k}", f"Std of val top-1, last {k} epochs", "pp", 100.0, PCT_DECIMALS,
               False, lambda rec: stats.last_k_std(curve(rec, "val_top1")[1], k)),
    ]


def metric_for(key: str, metrics: Sequence[Metric] | None = None) -> Metric:
    """The table metric named `key`, or a plain summary metric for another summary key
    (accuracy-like keys print as %, `*loss` and `*ece` count as lower-is-better)."""
    for m in metrics if metrics is not None else table_metrics():
        if m.key == key:
            return m
    lower = key.endswith(("loss", "ece"))
    if key.endswith(("top1", "top5", "precision_macro", "recall_macro", "f1_macro", "ece")):
        return _pct(key, key, higher=not lower)
    return Metric(key, key, "", 1.0, LOSS_DECIMALS, not lower, _summary_value(key))


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


@dataclass
class FactorTable:
    factor: str
    levels: list[LevelRuns]
    metrics: list[Metric]
    cells: dict[tuple[str, str], Cell]
    confidence: float
    method: str


def _levels_of(records: Sequence, levels: Sequence[str] | None) -> list[str]:
    if levels is not None:
        return list(levels)
    seen: dict[str, int] = {}
    for r in records:
        seen.setdefault(r.level_label, r.level_order)
    return sorted(seen, key=seen.get)


def _level_runs(records: Sequence, label: str, expected: int) -> LevelRuns:
    mine = [r for r in records if r.level_label == label]
    statuses = Counter(r.status for r in mine)
    completed = statuses.pop(COMPLETED, 0)
    other = dict(statuses)
    seeds_seen = {r.seed for r in mine}
    if len(seeds_seen) < expected:
        other["missing"] = expected - len(seeds_seen)
    return LevelRuns(label, expected, completed, other)


def factor_table(records: Iterable, factor: str, levels: Sequence[str] | None = None,
                 metrics: Sequence[Metric] | None = None, seeds: Sequence[int] | None = None,
                 confidence: float = stats.CONFIDENCE, n_resamples: int = stats.N_RESAMPLES,
                 seed: int = stats.BOOTSTRAP_SEED, method: str = stats.BOOTSTRAP_METHOD) -> FactorTable:
    """Mean and bootstrap CI over seeds of every metric at every level of `factor`.

    `levels`: level labels in display order (default: as found, by level_order). `seeds`: the
    seeds the study plans (default: every seed seen in this factor's records), which sets the
    expected n of each level. A run contributes to a cell when it completed and the metric is
    finite for it.
    """
    recs = [r for r in records if r.factor == factor]
    labels = _levels_of(recs, levels)
    metrics = list(metrics) if metrics is not None else table_metrics()
    expected = len(set(seeds)) if seeds is not None else len({r.seed for r in recs})
    level_runs = [_level_runs(recs, lab, expected) for lab in labels]
    cells: dict[tuple[str, str], Cell] = {}
    for lab in labels:
        done = [r for r in recs if r.level_label == lab and r.status == COMPLETED]
        for m in metrics:
            vals = [m.extract(r) * m.scale for r in done]
            vals = [v for v in vals if math.isfinite(v)]
            ci = stats.bootstrap_ci(vals, confidence, n_resamples, seed, method)
            cells[(m.key, lab)] = Cell(len(vals), expected, ci.mean, ci.lo, ci.hi)
    return FactorTable(factor, level_runs, metrics, cells, confidence, method)


def _num(v: float, decimals: int, sign: bool = False) -> str:
    if not math.isfinite(v):
        return MISSING
    return f"{v:+.{decimals}f}" if sign else f"{v:.{decimals}f}"


def cell_text(cell: Cell, decimals: int) -> str:
    """'mean [lo, hi]'; 'mean (no CI)' for a single seed; just 'mean' when all seeds agree
    exactly; '—' without data; '(n=k/N)' when fewer seeds than expected entered the cell."""
    if cell.n == 0:
        return MISSING
    s = _num(cell.mean, decimals)
    if cell.lo == cell.hi == cell.mean:
        pass  # every seed gave the same value (e.g. the parameter count): no interval to show
    elif math.isfinite(cell.lo):
        s += f" [{_num(cell.lo, decimals)}, {_num(cell.hi, decimals)}]"
    else:
        s += " (no CI)"
    if cell.n < cell.expected:
        s += f" (n={cell.n}/{cell.expected})"
    return s


# ----------------------------------------------------------------------------------------------
# paired comparison


@dataclass
class PairedRow:
    level: str
    metric: Metric
    n: int
    diff_mean: float
    lo: float
    hi: float
    p_improve: float


@dataclass
class PairedTable:
    factor: str
    reference: str
    metrics: list[Metric]
    rows: list[PairedRow]
    confidence: float
    method: str


def _by_seed(records: Sequence, label: str, m: Metric) -> dict[int, float]:
    return {r.seed: m.extract(r) * m.scale for r in records
            if r.level_label == label and r.status == COMPLETED}


def paired_table(records: Iterable, factor: str, reference: str, metrics: Sequence[Metric],
                 levels: Sequence[str] | None = None, confidence: float = stats.CONFIDENCE,
                 n_resamples: int = stats.N_RESAMPLES, seed: int = stats.BOOTSTRAP_SEED,
                 method: str = stats.BOOTSTRAP_METHOD) -> PairedTable:
    """Every level of `factor` against `reference`, seed by seed (see stats.paired_comparison)."""
    recs = [r for r in records if r.factor == factor]
    labels = _levels_of(recs, levels)
    rows = []
    for lab in labels:
        if lab == reference:
            continue
        for m in metrics:
            res = stats.paired_comparison(_by_seed(recs, reference, m), _by_seed(recs, lab, m), confidence,
                                          n_resamples, seed, method, higher_is_better=m.higher_is_better)
            rows.append(PairedRow(lab, m, res["n"], res["diff_mean"], res["lo"], res["hi"], res["p_improve"]))
    return PairedTable(factor, reference, list(metrics), rows, confidence, method)


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


# ----------------------------------------------------------------------------------------------
# rendering: a Grid is the common text form of every table


@dataclass
class Grid:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def factor_grid(t: FactorTable) -> Grid:
    header = ["Metric"] + [lv.label for lv in t.levels]
    rows = [["Runs completed"] + [lv.text() for lv in t.levels]]
    for m in t.metrics:
        rows.append([m.title] + [cell_text(t.cells[(m.key, lv.label)], m.decimals) for lv in t.levels])
    pct = round(t.confidence * 100)
    notes = [f"Cells: mean over seeds [{pct}% {t.method} bootstrap CI of the mean]; 'no CI' where one seed "
             "completed; a bare number where all seeds agree; n=k/N where k of N planned seeds entered the cell. "
             "Only completed runs count; val top-1 and the train/val numbers are at the best-validation epoch."]
    return Grid(f"Factor {t.factor}", header, rows, notes)


def paired_grid(t: PairedTable) -> Grid:
    pct = round(t.confidence * 100)
    header = ["Level"]
    for m in t.metrics:
        unit = "pp" if m.unit == "%" else m.unit
        header += [f"Δ {m.label}" + (f" ({unit})" if unit else "") + f" [{pct}% CI]", f"P(improve) {m.label}"]
    header.append("Pairs")
    rows = []
    for lab in dict.fromkeys(r.level for r in t.rows):
        mine = [r for r in t.rows if r.level == lab]
        row = [lab]
        for r in mine:
            d = r.metric.decimals
            if r.n == 0:
                row += [MISSING, MISSING]
                continue
            txt = _num(r.diff_mean, d, sign=True)
            txt += f" [{_num(r.lo, d, sign=True)}, {_num(r.hi, d, sign=True)}]" if math.isfinite(r.lo) else " (no CI)"
            if r.n != mine[0].n:  # this metric is finite for other seeds than the first one
                txt += f" (pairs={r.n})"
            row += [txt, _num(r.p_improve, P_DECIMALS)]
        row.append(str(mine[0].n) if len(mine) else "0")
        rows.append(row)
    notes = [f"Each level minus the reference level '{t.reference}', paired by seed (only seeds completed at "
             f"both levels). P(improve): share of the bootstrap resamples of the mean paired difference "
             f"that are better than 0 (higher for accuracies, lower for losses/ECE)."]
    return Grid(f"Factor {t.factor}: paired comparison with {t.reference}", header, rows, notes)


def trials_grid(rows: Sequence[TrialRow], maximize: bool, objective: str = "objective",
                top_k: int = TOP_TRIALS) -> Grid:
    best = best_trials(rows, maximize, top_k)
    names = sorted({k for r in best for k in r.params})
    m = metric_for(objective)  # prints a val_top1 objective as %, like the factor tables
    header = ["Trial"] + names + [m.title, "State"]
    body = [[str(r.number)] + [_fmt_param(r.params.get(k)) for k in names] + [_num(r.value * m.scale, m.decimals),
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


def to_markdown(g: Grid) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [f"### {g.title}", "", "| " + " | ".join(esc(h) for h in g.header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(g.header) - 1)) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in g.rows]
    lines += [""] + [f"_{esc(n)}_" for n in g.notes]
    return "\n".join(lines) + "\n"


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "Δ": r"$\Delta$", "—": "---", "–": "--", "±": r"$\pm$",
}


def tex_escape(s: str) -> str:
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in s)


def to_latex(g: Grid) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}); title and notes as comments."""
    lines = [f"% {g.title}"] + [f"% {n}" for n in g.notes]
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


def _csv(header: list[str], rows: Iterable[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if isinstance(v, float) and not math.isfinite(v) else v for v in row])
    return buf.getvalue()


def factor_csv(t: FactorTable) -> str:
    """Long format, one row per (level, metric), unrounded values in the printed unit; empty
    fields where a value is undefined (no run, or no CI for one seed)."""
    order = {lv.label: i for i, lv in enumerate(t.levels)}
    rows = []
    for lv in t.levels:
        for m in t.metrics:
            c = t.cells[(m.key, lv.label)]
            rows.append([t.factor, lv.label, order[lv.label], m.key, m.unit, c.n, c.expected,
                         c.mean, c.lo, c.hi, t.confidence, t.method])
    return _csv(["factor", "level", "level_order", "metric", "unit", "n", "n_expected",
                 "mean", "lo", "hi", "confidence", "ci_method"], rows)


def paired_csv(t: PairedTable) -> str:
    rows = [[t.factor, t.reference, r.level, r.metric.key, "pp" if r.metric.unit == "%" else r.metric.unit,
             r.n, r.diff_mean, r.lo, r.hi, r.p_improve, t.confidence, t.method] for r in t.rows]
    return _csv(["factor", "reference", "level", "metric", "unit", "n_pairs", "diff_mean", "lo", "hi",
                 "p_improve", "confidence", "ci_method"], rows)


def trials_csv(rows: Sequence[TrialRow]) -> str:
    names = sorted({k for r in rows for k in r.params})
    body = [[r.number, r.state, r.value if r.value is not None else math.nan] + [r.params.get(k, "") for k in names]
            for r in sorted(rows, key=lambda r: r.number)]
    return _csv(["trial", "state", "value"] + [f"param_{k}" for k in names], body)
