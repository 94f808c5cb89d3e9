"""Where the variance over seeds comes from (Bouthillier et al. 2021).

When the runs of a level vary several sources of randomness factorially (`seed_init`, `seed_split`,
`seed_order` crossed, e.g. 3 x 3 runs), each metric's variance over those runs is split into one
component per source plus a residual (interactions and whatever randomness no seed controls, such
as non-deterministic GPU kernels) by a random-effects ANOVA (`vitlab.stats.variance_components`).
Sources that move together in every run (say `seed_order` left at `seed` while `seed` follows
`seed_init`) cannot be told apart and are reported as one combined source; a source with a different
seed in every run cannot be told apart from the residual and is counted in it.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import stats
from ..config import SEED_SOURCES
from .formats import Grid, to_csv
from .tables import COMPLETED, MISSING, Metric, levels_of, num, seed_sources

RESIDUAL = "residual"
SOURCE_NAMES = {"seed_init": "init", "seed_split": "split", "seed_order": "order", RESIDUAL: "residual"}
"""Short names of the sources in tables."""


@dataclass
class VarianceRow:
    level: str
    metric: Metric
    n_runs: int
    components: dict[str, float]  # source (or "a+b" for confounded sources) -> variance; RESIDUAL last

    @property
    def total(self) -> float:
        return float(sum(self.components.values()))

    @property
    def dominant(self) -> str:
        return max(self.components, key=self.components.get)


@dataclass
class VarianceTable:
    factor: str
    rows: list[VarianceRow]
    skipped: dict[str, str] = field(default_factory=dict)  # level -> why it has no decomposition
    absorbed: dict[str, list[str]] = field(default_factory=dict)  # level -> sources counted in the residual


def _codes(values: Sequence) -> tuple[int, ...]:
    """Level codes in order of first appearance: equal tuples = the same partition of the runs."""
    seen: dict = {}
    return tuple(seen.setdefault(v, len(seen)) for v in values)


def source_design(records: Sequence) -> tuple[dict[str, list], list[str]]:
    """({source name: per-run seed} of the sources that vary across `records` and repeat, [sources
    with a different seed in every run]). Sources whose seeds partition the runs identically
    (confounded) are merged under 'a+b'; a source that never repeats is confounded with the residual."""
    per_run = [seed_sources(r) for r in records]
    groups: dict[tuple, tuple[str, list]] = {}
    absorbed = []
    for s in SEED_SOURCES:
        vals = [p[s] for p in per_run]
        if len(set(vals)) < 2:
            continue
        if len(set(vals)) == len(vals):
            absorbed.append(s)
            continue
        key = _codes(vals)
        name = groups[key][0] + "+" + s if key in groups else s
        groups[key] = (name, vals)
    return {name: vals for name, vals in groups.values()}, absorbed


def variance_table(records: Iterable, factor: str, metrics: Sequence[Metric],
                   levels: Sequence[str] | None = None) -> VarianceTable | None:
    """Variance components of each metric at each level whose completed runs cross at least two
    sources in a balanced design; None when no level does (the usual single-`seed` study)."""
    recs = [r for r in records if r.factor == factor]
    table = VarianceTable(factor, [])
    for lab in levels_of(recs, levels):
        done = [r for r in recs if r.level_label == lab and r.status == COMPLETED]
        design, absorbed = source_design(done)
        if len(design) < 2:
            continue
        if absorbed:
            table.absorbed[lab] = absorbed
        for m in metrics:
            y = [m.extract(r) * m.scale for r in done]
            if not all(math.isfinite(v) for v in y):
                table.skipped[lab] = f"{m.key} is missing for some runs"
                continue
            try:
                comps = stats.variance_components(y, design)
            except ValueError as e:  # e.g. a run of the grid failed: unbalanced
                table.skipped[lab] = str(e)
                continue
            table.rows.append(VarianceRow(lab, m, len(y), comps))
    return table if table.rows or table.skipped else None


def _name(source: str) -> str:
    return "+".join(SOURCE_NAMES.get(s, s) for s in source.split("+"))


def variance_grid(t: VarianceTable) -> Grid:
    sources = list(dict.fromkeys(s for r in t.rows for s in r.components if s != RESIDUAL)) + [RESIDUAL]
    header = ["Level", "Metric", "Runs"] + [f"{_name(s)}: sd (share)" for s in sources] + ["Dominant"]
    rows = []
    for r in t.rows:
        unit = r.metric.diff_unit
        cells = []
        for s in sources:
            v = r.components.get(s)
            if v is None:
                cells.append(MISSING)
                continue
            share = v / r.total if r.total > 0 else math.nan
            cells.append(f"{num(math.sqrt(v), r.metric.decimals)}{' ' + unit if unit else ''} "
                         f"({num(100 * share, 0)}%)")
        rows.append([r.level, r.metric.title, str(r.n_runs)] + cells + [_name(r.dominant)])
    rows += [[lab, MISSING, MISSING] + [MISSING] * len(sources) + [f"not decomposed: {why}"]
             for lab, why in t.skipped.items()]
    absorbed = sorted({_name(s) for srcs in t.absorbed.values() for s in srcs})
    notes = ["Random-effects ANOVA of the runs of each level, which cross the listed sources of randomness "
             "(init: model initialization and dropout; split: validation split; order: data order and "
             "augmentation). Each source's component is the variance it adds, estimated from the spread of the "
             "means of its seeds (Searle et al. 1992); residual = interactions between sources and randomness no "
             "seed controls. sd = square root of the component, share = its part of the total variance. "
             "Sources that always change together are shown combined (a+b)."]
    if absorbed:
        notes.append(f"{', '.join(absorbed)}: a different seed in every run, so its variance cannot be told apart "
                     "from the residual and is counted in it.")
    return Grid(f"Factor {t.factor}: sources of variance", header, rows, notes)


def variance_csv(t: VarianceTable) -> str:
    rows = []
    for r in t.rows:
        for s, v in r.components.items():
            rows.append([t.factor, r.level, r.metric.key, r.metric.diff_unit, s, v, math.sqrt(v),
                         v / r.total if r.total > 0 else math.nan, r.n_runs, r.dominant])
    return to_csv(["factor", "level", "metric", "unit", "source", "variance", "sd", "share", "n_runs", "dominant"],
                  rows)


def dominant_summary(t: VarianceTable) -> list[str]:
    """One sentence per (level, metric): which source dominates and its share."""
    out = []
    for r in t.rows:
        share = r.components[r.dominant] / r.total if r.total > 0 else math.nan
        out.append(f"{r.level}, {r.metric.label}: {_name(r.dominant)} dominates "
                   f"({'no variance' if not np.isfinite(share) else f'{share:.0%} of the variance'}).")
    return out
