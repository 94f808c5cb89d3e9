"""Figures in the style of the seed papers: per-epoch curves per level with the interval of the mean
over seeds as a band (the same interval as the tables), and for hyperparameter searches the
optimization history and parameter importances.

Figures are built with matplotlib's object-oriented API (`matplotlib.figure.Figure`, rendered by
the Agg backend): no pyplot global state, no display needed. Builders take plain data and return a
Figure (or None when there is nothing to draw); `save_figure` writes PNG + SVG atomically.
"""
from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .. import stats
from ..io import atomic_write_bytes
from .formats import mpl_escape
from .tables import COMPLETED, TrialRow, curve, interval_name, metric_for

PNG_DPI = 150
"""Resolution of saved and embedded PNGs (a 10-inch-wide figure is 1500 px)."""
CURVES_SIZE_IN = (10.0, 7.5)
"""Width, height in inches of a factor's 2x2 curve figure."""
SEARCH_SIZE_IN = (7.0, 4.5)
"""Width, height in inches of each search figure."""
BAND_ALPHA = 0.18
"""Opacity of the interval band around each level's mean curve."""
MARKERS_UP_TO = 10
"""Curves with at most this many epochs get a marker at each epoch (runs of one epoch are a point with
its interval as an error bar: a line through one point would draw nothing)."""
MARKER_SIZE = 4
"""Marker size (points) of per-epoch markers."""
LEGEND_COLUMNS = 4
"""Most columns of the figure legend below the curve panels."""

# (per-epoch key, axis label, scale); the 4th panel falls back to val loss without test curves
CURVE_PANELS = [("train_loss", "Train loss", 1.0), ("train_top1", "Train top-1 (%)", 100.0),
                ("val_top1", "Val top-1 (%)", 100.0), ("test_top1", "Test top-1 (%)", 100.0)]
FALLBACK_PANEL = ("val_loss", "Val loss", 1.0)


def level_curve(records: Sequence, key: str, scale: float = 1.0, ci: str = stats.DEFAULT_CI,
                confidence: float = stats.CONFIDENCE, n_resamples: int = stats.N_RESAMPLES,
                seed: int = stats.BOOTSTRAP_SEED):
    """Mean over runs at each epoch that at least one run logged (finite values), with the `ci`
    interval of that mean (nan where fewer than 2 runs reached the epoch: no band there).

    Returns (epochs, mean, lo, hi, n_runs) or None when no run has the key. Runs of different
    lengths (early stopping) contribute to the epochs they reached.
    """
    per_epoch: dict[int, list[float]] = {}
    runs = 0
    for rec in records:
        ep, val = curve(rec, key)
        if ep.size:
            runs += 1
        for e, v in zip(ep, val):
            if math.isfinite(v):
                per_epoch.setdefault(int(e), []).append(v * scale)
    if not per_epoch:
        return None
    epochs = np.array(sorted(per_epoch))
    mean = np.array([np.mean(per_epoch[e]) for e in epochs])
    lo, hi = np.full(epochs.size, np.nan), np.full(epochs.size, np.nan)
    by_n: dict[int, list[int]] = {}
    for i, e in enumerate(epochs):
        by_n.setdefault(len(per_epoch[e]), []).append(i)
    for n, idx in by_n.items():  # one batched interval per group of epochs with the same number of runs
        if n < 2:
            continue
        x = np.array([per_epoch[epochs[i]] for i in idx])
        lo[idx], hi[idx] = stats.interval_bounds(x, ci, confidence, n_resamples, seed)
        constant = np.ptp(x, axis=1) == 0
        lo[np.array(idx)[constant]] = hi[np.array(idx)[constant]] = x[constant, 0]
    return epochs, mean, lo, hi, runs


def curves_figure(records: Iterable, factor: str, levels: Sequence[str], ci: str = stats.DEFAULT_CI,
                  confidence: float = stats.CONFIDENCE) -> Figure | None:
    """2x2 panels (train loss, train top-1, val top-1, test top-1 or val loss) of one factor: one
    line per level = mean over its completed seeds, band = the `ci` interval of that mean (as in
    the tables; none where one seed). None when no level has a completed run with curves."""
    recs = [r for r in records if r.factor == factor and r.status == COMPLETED]
    if not recs:
        return None
    has_test = any(curve(r, "test_top1")[0].size for r in recs)
    panels = CURVE_PANELS if has_test else CURVE_PANELS[:3] + [FALLBACK_PANEL]
    fig = Figure(figsize=CURVES_SIZE_IN, layout="constrained")
    axes = fig.subplots(2, 2, sharex=True).ravel()
    colors = [f"C{i % 10}" for i in range(len(levels))]
    handles = {}
    for ax, (key, label, scale) in zip(axes, panels):
        for lab, color in zip(levels, colors):
            c = level_curve([r for r in recs if r.level_label == lab], key, scale, ci, confidence)
            if c is None:
                continue
            ep, mean, lo, hi, n = c
            lo, hi = stats.clip_interval(lo, hi, metric_for(key).valid)
            if ep.size == 1:  # one epoch: a line of one point draws nothing; a marker with the interval as a bar
                yerr = np.nan_to_num(np.array([mean - lo, hi - mean]), nan=0.0)
                line = ax.errorbar(ep, mean, yerr=yerr, fmt="o", color=color, capsize=4, ms=MARKER_SIZE,
                                   label=f"{mpl_escape(lab)} (n={n})").lines[0]
                ax.set_xlim(0.5, 1.5)
            else:
                (line,) = ax.plot(ep, mean, color=color, lw=1.6, marker="o" if ep.size <= MARKERS_UP_TO else None,
                                  ms=MARKER_SIZE, label=f"{mpl_escape(lab)} (n={n})")
                ax.fill_between(ep, lo, hi, color=color, alpha=BAND_ALPHA, lw=0)
            handles.setdefault(line.get_label(), line)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    for ax in axes[2:]:
        ax.set_xlabel("Epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # shared x: sets all four panels
    if not handles:
        return None
    fig.suptitle(f"{mpl_escape(factor)}: mean over seeds, band = {interval_name(confidence, ci)} of the mean "
                 "(cut to the metric's range)")
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncols=min(LEGEND_COLUMNS, len(handles)), title=mpl_escape(factor))
    return fig


def history_figure(rows: Sequence[TrialRow], maximize: bool, objective: str = "objective") -> Figure | None:
    """Objective of each completed trial and the best so far, by trial number. None without any."""
    done = sorted((r for r in rows if r.state == "COMPLETE" and r.value is not None and math.isfinite(r.value)),
                  key=lambda r: r.number)
    if not done:
        return None
    m = metric_for(objective)  # e.g. val_top1 in %, as in the tables
    x = np.array([r.number for r in done])
    y = np.array([r.value for r in done], dtype=float) * m.scale
    best = np.maximum.accumulate(y) if maximize else np.minimum.accumulate(y)
    fig = Figure(figsize=SEARCH_SIZE_IN, layout="constrained")
    ax = fig.subplots()
    ax.scatter(x, y, s=22, color="C0", label="completed trial", zorder=3)
    ax.step(x, best, where="post", color="C3", lw=1.6, label="best so far")
    ax.set_xlabel("Trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(m.title)
    ax.set_title(f"Optimization history ({'maximize' if maximize else 'minimize'})")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def importances_figure(importances: dict[str, float], evaluator: str) -> Figure | None:
    """Horizontal bars of parameter importances (largest on top). None when empty."""
    if not importances:
        return None
    names = list(importances)[::-1]
    vals = [importances[k] for k in names]
    fig = Figure(figsize=(SEARCH_SIZE_IN[0], max(2.0, 0.45 * len(names) + 1.2)), layout="constrained")
    ax = fig.subplots()
    ax.barh([mpl_escape(k) for k in names], vals, color="C0")
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.2f}", va="center")
    ax.set_xlabel(f"Importance ({evaluator})")
    ax.set_xlim(0, max(vals) * 1.15 if max(vals) > 0 else 1)
    ax.set_title("Hyperparameter importances")
    return fig


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=PNG_DPI, metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue()


def save_figure(fig: Figure, base: str | Path) -> dict[str, bytes]:
    """Write `base`.png and `base`.svg atomically; returns the bytes by format (the HTML embeds the PNG)."""
    base = Path(base)
    out = {}
    for fmt in ("png", "svg"):
        out[fmt] = figure_bytes(fig, fmt)
        atomic_write_bytes(base.with_name(f"{base.name}.{fmt}"), out[fmt])
    return out
