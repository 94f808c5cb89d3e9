"""Several datasets in one study (a grid over `data.name`): per-dataset tables, an aggregate across
datasets, and performance profiles, as Agarwal et al. (2021) recommend for few runs on several tasks.

A factor's runs are split by dataset; within a dataset, a *method* is the factor's level without its
`data.name` part (a grid cell `name=cifar10, attn_norm=zscore` is method `attn_norm=zscore` on task
cifar10). Each dataset gets the usual factor and paired tables over the methods. Across datasets,
each method gets the interquartile mean (IQM) of its runs pooled over datasets with a stratified
bootstrap interval (runs resampled within each dataset), the probability of improvement over the
reference method averaged over datasets, and a performance profile (the share of runs above each
score). rliable implements the same estimators but pulls in arch, statsmodels, pandas and seaborn;
`vitlab.stats` implements the few formulas (tested against naive versions).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from .. import stats
from ..study.levels import combo_label
from .formats import Grid, mpl_escape, to_csv
from .tables import COMPLETED, MISSING, Metric, levels_of, num

DATA_KEY = "data.name"
PROFILE_POINTS = 101
"""Thresholds at which a performance profile is evaluated (evenly spaced over the observed scores)."""
PROFILE_RESAMPLES = 2_000
"""Bootstrap resamples of a performance profile's band."""
PROFILE_SIZE_IN = (7.0, 4.5)
"""Width, height in inches of a performance-profile figure."""


def dataset_of(rec) -> str:
    """The task a run trained on: data.name (with the folder path for folder datasets)."""
    data = (rec.config or {}).get("data") or {}
    name = str(data.get("name") or (rec.summary or {}).get("dataset") or "unknown")
    if name == "folder" and data.get("folder_path"):
        return f"folder:{data['folder_path']}"
    return name


def method_label(rec) -> str:
    """The run's level without its data.name part: `attn_norm=zscore` for grid cell
    `{data.name: cifar10, model.attn_norm: zscore}`; 'all' when data.name was the only key."""
    level = rec.level if isinstance(rec.level, Mapping) else rec.varied if isinstance(rec.varied, Mapping) else None
    if not isinstance(level, Mapping) or DATA_KEY not in level:
        return str(rec.level_label)
    rest = {k: v for k, v in level.items() if k != DATA_KEY}
    if not rest:
        return "all"
    return combo_label(rest)


@dataclass
class DatasetSplit:
    """A factor's runs relabelled per dataset: `records[dataset]` have level_label = method label."""

    factor: str
    datasets: list[str]
    methods: list[str]
    records: dict[str, list]
    reference: str | None


def split_by_dataset(records: Iterable, factor: str, reference_label: str | None = None) -> DatasetSplit | None:
    """None unless the factor's runs span at least 2 datasets with at least 2 methods on each of 2
    datasets (a grid over data.name and something else)."""
    recs = [r for r in records if r.factor == factor]
    datasets = list(dict.fromkeys(dataset_of(r) for r in recs))
    if len(datasets) < 2:
        return None
    out: dict[str, list] = {d: [] for d in datasets}
    ref = None
    for r in levels_sorted(recs):
        c = copy.copy(r)
        c.level_label = method_label(r)
        out[dataset_of(r)].append(c)
        if reference_label is not None and r.level_label == reference_label:
            ref = c.level_label
    methods = list(dict.fromkeys(c.level_label for d in datasets for c in out[d]))
    if sum(len({c.level_label for c in out[d]}) >= 2 for d in datasets) < 2:
        return None
    return DatasetSplit(factor, datasets, methods, out, ref if ref in methods else methods[0])


def levels_sorted(recs: Sequence) -> list:
    order = {lab: i for i, lab in enumerate(levels_of(recs, None))}
    return sorted(recs, key=lambda r: order[r.level_label])


def scores(split: DatasetSplit, method: str, m: Metric) -> list[list[float]]:
    """Per-dataset lists of the completed runs' finite values of `m` (printed unit) for `method`."""
    out = []
    for d in split.datasets:
        vals = [m.extract(r) * m.scale for r in split.records[d] if r.level_label == method and r.status == COMPLETED]
        out.append([v for v in vals if math.isfinite(v)])
    return out


@dataclass
class AggregateRow:
    method: str
    metric: Metric
    n_datasets: int
    n_runs: int
    iqm: float
    lo: float
    hi: float
    p_improve: float
    p_improve_lo: float
    p_improve_hi: float


def aggregate_rows(split: DatasetSplit, metrics: Sequence[Metric], confidence: float = stats.CONFIDENCE,
                   n_resamples: int = stats.N_RESAMPLES, seed: int = stats.BOOTSTRAP_SEED) -> list[AggregateRow]:
    """IQM across datasets with its stratified-bootstrap interval, and the probability of improvement
    over the reference method averaged over datasets, for every method and metric. A method missing
    from a dataset, or with no completed run there, gets nan (the aggregate needs every task)."""
    rows = []
    for m in metrics:
        sign = 1.0 if m.higher_is_better else -1.0
        ref = scores(split, split.reference, m)
        for method in split.methods:
            s = scores(split, method, m)
            complete = all(s) and len(s) == len(split.datasets)
            iqm = (stats.stratified_ci(s, confidence=confidence, n_resamples=n_resamples, seed=seed) if complete
                   else stats.CI(math.nan, math.nan, math.nan))
            if complete and method != split.reference and all(ref):
                poi = stats.probability_of_improvement_ci([[sign * v for v in t] for t in s],
                                                          [[sign * v for v in t] for t in ref],
                                                          confidence, n_resamples, seed)
            else:
                poi = stats.CI(math.nan, math.nan, math.nan)
            rows.append(AggregateRow(method, m, sum(bool(t) for t in s), sum(len(t) for t in s), *iqm, *poi))
    return rows


def aggregate_grid(split: DatasetSplit, rows: Sequence[AggregateRow], confidence: float = stats.CONFIDENCE) -> Grid:
    pct = round(confidence * 100)
    header = ["Method", "Metric", "Datasets", "Runs", f"IQM [{pct}% stratified bootstrap]",
              f"P(improve) vs {split.reference} [{pct}%]"]
    body = []
    for r in rows:
        unit = f" {r.metric.unit}" if r.metric.unit else ""
        iqm = MISSING if not math.isfinite(r.iqm) else num(r.iqm, r.metric.decimals) + (
            f" [{num(r.lo, r.metric.decimals)}, {num(r.hi, r.metric.decimals)}]" if math.isfinite(r.lo)
            else " (no interval)") + unit
        poi = MISSING if not math.isfinite(r.p_improve) else num(r.p_improve, 2) + (
            f" [{num(r.p_improve_lo, 2)}, {num(r.p_improve_hi, 2)}]" if math.isfinite(r.p_improve_lo)
            else " (no interval)")
        body.append([r.method, r.metric.title, str(r.n_datasets), str(r.n_runs), iqm, poi])
    notes = [f"Across the datasets {', '.join(split.datasets)}: IQM = mean of the middle 50% of all runs pooled over "
             "datasets (Agarwal et al. 2021), with a stratified bootstrap interval (runs resampled within each "
             "dataset, datasets kept). P(improve): probability that a run of the method beats a run of the "
             f"reference '{split.reference}' on the same dataset, averaged over datasets. Raw scores are pooled: "
             "datasets with higher accuracies weigh more in the IQM."]
    return Grid(f"Factor {split.factor}: aggregate across datasets", header, body, notes)


def aggregate_csv(split: DatasetSplit, rows: Sequence[AggregateRow], confidence: float = stats.CONFIDENCE) -> str:
    return to_csv(["factor", "method", "metric", "unit", "n_datasets", "n_runs", "iqm", "lo", "hi", "p_improve",
                   "p_improve_lo", "p_improve_hi", "reference", "confidence", "ci_method"],
                  [[split.factor, r.method, r.metric.key, r.metric.unit, r.n_datasets, r.n_runs, r.iqm, r.lo, r.hi,
                    r.p_improve, r.p_improve_lo, r.p_improve_hi, split.reference, confidence, "stratified bootstrap"]
                   for r in rows])


def profile_figure(split: DatasetSplit, m: Metric, confidence: float = stats.CONFIDENCE,
                   seed: int = stats.BOOTSTRAP_SEED) -> Figure | None:
    """Performance profiles (score distributions, Agarwal et al. 2021): for each method, the share of
    its runs over all datasets whose score exceeds tau, with a pointwise stratified-bootstrap band.
    None when no method has a completed run on every dataset."""
    per_method = {meth: scores(split, meth, m) for meth in split.methods}
    per_method = {k: v for k, v in per_method.items() if all(v) and len(v) == len(split.datasets)}
    if not per_method:
        return None
    pooled = np.concatenate([np.concatenate([np.asarray(t) for t in v]) for v in per_method.values()])
    taus = np.linspace(pooled.min(), pooled.max(), PROFILE_POINTS)
    if not m.higher_is_better:
        taus = taus[::-1]
    fig = Figure(figsize=PROFILE_SIZE_IN, layout="constrained")
    ax = fig.subplots()
    for i, (meth, s) in enumerate(per_method.items()):
        vals = s if m.higher_is_better else [[-v for v in t] for t in s]
        t_eval = taus if m.higher_is_better else -taus
        prof = stats.score_distribution(vals, t_eval)
        line, = ax.plot(taus, prof, color=f"C{i % 10}", lw=1.6, label=mpl_escape(meth))
        if all(len(t) >= 2 for t in s):
            lo, hi = stats.score_distribution_band(vals, t_eval, confidence, PROFILE_RESAMPLES, seed)
            ax.fill_between(taus, lo, hi, color=line.get_color(), alpha=0.18, lw=0)
    ax.set_xlabel(m.title + ("" if m.higher_is_better else " (lower is better)"))
    ax.set_ylabel(f"Share of runs {'above' if m.higher_is_better else 'below'} τ")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"Performance profiles over {len(split.datasets)} datasets")
    ax.legend(title=mpl_escape(split.factor), fontsize="small")
    return fig
