"""Report sections built from the runs' RUN/analysis/analysis.json: "Attention", "Robustness" and
"Efficiency" for every factor of a study, and the one-run report (`vitlab report RUN_DIR`).

Study sections, per factor (only completed runs that have the section):
- Attention: a table of the attention scalars per level (mean [95% CI] over seeds), normalized entropy
  per layer (one line per level, band = min–max over seeds), and rollout maps, levels × layers, for
  the same test images (the first seed of each level);
- Robustness: clean and mean corruption top-1, mCE and relative mCE against the reference level (its
  mean error profile over seeds, Hendrycks & Dietterich 2019), accuracy vs severity per level, and a
  levels × corruptions heat map;
- Efficiency: latency, throughput, params, FLOPs per level and test accuracy vs latency.
Intervals are `vitlab.stats.mean_ci` over seeds with the report's method (`--ci`; by default the 95%
Student-t interval, which keeps its coverage at 2-5 seeds), as in every other table.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..metrics import RANGE_ANY, RANGE_NONNEGATIVE, RANGE_PERCENT, RANGE_UNIT
from ..analysis import figures as afig
from ..analysis.analyze import read_analysis, read_maps
from ..analysis.corruptions import CORRUPTIONS, ordered
from ..analysis.robustness import (RELATIVE_MIN_DEGRADATION, error_profile, mce, mean_profile,
                                   weak_reference_corruptions)
from ..errors import UserError
from ..io import atomic_write_text
from ..rundir import (ANALYSIS_DIR, CONFIG_FILE, SUMMARY_FILE, MalformedFile, is_run_dir, read_metrics, read_summary,
                      warn_damaged)
from ..safepath import writable_run_dir
from ..study.index import run_dir as study_run_dir
from ..version import __version__
from .. import stats
from .page import CSS, HTML_NAME, slug
from .tables import COMPLETED, FEW_SEEDS_MARK

ROLLOUT_IMAGES = 2
"""How many of the analysed test images get a levels × layers rollout grid in a study report."""
BAND_ALPHA = 0.18
"""Opacity of the min–max band over seeds."""
TOKEN_COSINE_RANGE = (-1.0, 1.0)
"""Valid range of a cosine similarity."""
CUT_NOTE = f"intervals cut to each metric's valid range; {FEW_SEEDS_MARK} fewer than {stats.MIN_SEEDS_TO_BOUND} seeds"
"""Caption words of every analysis table: what the intervals are cut to and what the few-seeds mark means."""

e = html.escape


# ---------------------------------------------------------------------------------------------- data


@dataclass
class LevelData:
    """The completed runs of one level that have an analysis, in seed order."""

    label: str
    seeds: list[int] = field(default_factory=list)
    analyses: list[dict] = field(default_factory=list)
    summaries: list[dict] = field(default_factory=list)
    run_dirs: list[Path] = field(default_factory=list)

    def values(self, fn: Callable[[dict, dict], Any]) -> list[float]:
        """Finite numbers fn(analysis, summary) over the seeds (None / nan skipped)."""
        out = []
        for a, s in zip(self.analyses, self.summaries):
            try:
                v = fn(a, s)
            except (KeyError, TypeError, IndexError):
                v = None
            if isinstance(v, (int, float)) and math.isfinite(v):
                out.append(float(v))
        return out

    def with_section(self, section: str) -> "LevelData":
        # An incomplete section (a sweep cut short; efficiency holding only `vitlab export`'s onnx part)
        # has not got the numbers the tables read.
        keep = [i for i, a in enumerate(self.analyses) if a.get(section)
                and (a[section].get("complete") if section == "robustness" else a[section].get("complete") is not False)]
        return LevelData(self.label, [self.seeds[i] for i in keep], [self.analyses[i] for i in keep],
                         [self.summaries[i] for i in keep], [self.run_dirs[i] for i in keep])


def factor_levels(records: Sequence, factor: str, levels: Sequence[str], run_dir: Callable[[str], Path]) -> list[LevelData]:
    """LevelData of every level of `factor` (in `levels` order) from the completed records."""
    out = []
    for label in levels:
        lev = LevelData(str(label))
        recs = sorted((r for r in records if r.factor == factor and str(r.level_label) == str(label)
                       and r.status == COMPLETED), key=lambda r: r.seed)
        for r in recs:
            try:
                a = read_analysis(run_dir(r.run_id))
            except MalformedFile as err:
                warn_damaged(err, "the run is left out of the analysis sections")
                continue
            if a is None:
                continue
            lev.seeds.append(r.seed)
            lev.analyses.append(a)
            lev.summaries.append(r.summary or {})
            lev.run_dirs.append(run_dir(r.run_id))
        out.append(lev)
    return out


# ---------------------------------------------------------------------------------------------- html bits


def img_html(png: bytes, caption: str) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{b64}" alt="{e(caption)}">'
            f"<figcaption>{e(caption)}</figcaption></figure>\n")


def ci_text(values: list[float], scale: float = 1.0, decimals: int = 2, expected: int | None = None,
            method: str = stats.DEFAULT_CI, valid: tuple[float, float] = RANGE_NONNEGATIVE) -> str:
    """'mean [lo, hi]' over seeds (scaled; `vitlab.stats.mean_ci` with `method`, cut to the valid range
    `valid` in the printed unit), '—' without values, 'n=k/K' when seeds are missing; an interval over
    too few seeds to bound the mean is marked as in the factor tables."""
    if not values:
        return "—"
    ci = stats.mean_ci([v * scale for v in values], method)
    lo, hi = stats.clip_interval(ci.lo, ci.hi, valid)
    s = f"{ci.mean:.{decimals}f}"
    s += f" [{lo:.{decimals}f}, {hi:.{decimals}f}]" if math.isfinite(ci.lo) else " (no interval)"
    if len(values) < stats.MIN_SEEDS_TO_BOUND and math.isfinite(ci.lo) and ci.lo != ci.hi:
        s += FEW_SEEDS_MARK
    if expected is not None and len(values) < expected:
        s += f" n={len(values)}/{expected}"
    return s


def table_html(caption: str, header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><caption>{e(caption)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"


def note(text: str) -> str:
    return f'<p class="note">{e(text)}</p>\n'


class FigureSink:
    """Saves figures as PNG + SVG under a folder and returns their HTML; carries the report's interval
    method (`ci`) for the tables built beside the figures."""

    def __init__(self, folder: Path, ci: str = stats.DEFAULT_CI):
        self.folder = folder
        self.ci = ci

    def __call__(self, fig: Figure | None, name: str, caption: str) -> str:
        if fig is None:
            return ""
        data = afig.save_figure(fig, self.folder / name)
        return img_html(data["png"], caption)


# ---------------------------------------------------------------------------------------------- study figures


def _band_lines(ax, levels: list[LevelData], series: Callable[[dict], list[float | None]], x0: int = 0) -> bool:
    drawn = False
    for k, lev in enumerate(levels):
        rows = [series(a) for a in lev.analyses]
        rows = [r for r in rows if r]
        if not rows:
            continue
        n = max(len(r) for r in rows)
        arr = np.array([[np.nan if (i >= len(r) or r[i] is None) else r[i] for i in range(n)] for r in rows], dtype=float)
        x = np.arange(x0, x0 + n)
        with np.errstate(all="ignore"):
            mean = np.nanmean(arr, axis=0)
        ax.plot(x, mean, "-o", ms=3, color=f"C{k % 10}", label=f"{lev.label} (n={len(rows)})")
        if len(rows) > 1:
            ax.fill_between(x, np.nanmin(arr, axis=0), np.nanmax(arr, axis=0), color=f"C{k % 10}", alpha=BAND_ALPHA)
        drawn = True
    return drawn


def entropy_levels_figure(levels: list[LevelData]) -> Figure | None:
    fig = Figure(figsize=(7.0, 3.6), layout="constrained")
    ax = fig.subplots()
    if not _band_lines(ax, levels, lambda a: [lay["entropy_norm"] for lay in a["attention"]["layers"]]):
        return None
    ax.set_xlabel("layer (forward order)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
    ax.set_ylabel("normalized attention entropy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return fig


def rollout_grid_figure(levels: list[LevelData], image: int) -> Figure | None:
    """Rows = levels (first seed), columns = the image and the rollout up to each layer."""
    rows, maps_per_row, img = [], [], None
    for lev in levels:
        if not lev.run_dirs:
            continue
        arrays = read_maps(lev.run_dirs[0])
        if not arrays or "images" not in arrays or image >= len(arrays["images"]):
            continue
        n = sum(1 for k in arrays if k.startswith("rollout_"))
        img = arrays["images"][image] if img is None else img
        rows.append(lev.label)
        maps_per_row.append([arrays[f"rollout_{i}"][image] for i in range(n)])
    if not rows:
        return None
    cols = max(len(m) for m in maps_per_row) + 1
    top = afig.shared_top([m for row in maps_per_row for m in row])  # one scale: uniform attention looks uniform
    fig = Figure(figsize=(afig.MAP_CELL_IN * cols + 0.8, afig.MAP_CELL_IN * len(rows) + 0.6), layout="constrained")
    axes = fig.subplots(len(rows), cols, squeeze=False)
    h, w = img.shape[-2:]
    for i, (label, maps) in enumerate(zip(rows, maps_per_row)):
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.imshow(afig._image(img), cmap="gray" if img.shape[0] == 1 else None, interpolation="nearest")
            if 0 < j <= len(maps):
                ax.imshow(afig._upsample(maps[j - 1], h, w, top), cmap=afig.MAP_CMAP, alpha=afig.OVERLAY_ALPHA,
                          interpolation="bilinear", vmin=0, vmax=1)
            if i == 0:
                ax.set_title("image" if j == 0 else f"L{j - 1}", fontsize=7)
            if j == 0:
                ax.set_ylabel(label, fontsize=7)
    return fig


def severity_levels_figure(levels: list[LevelData]) -> Figure | None:
    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.subplots()
    ok = _band_lines(ax, levels, lambda a: [100 * a["robustness"]["clean_top1"]]
                     + [None if v is None else 100 * v for v in a["robustness"]["severity_top1"]])
    if not ok:
        return None
    ax.set_xlabel("severity (0 = clean)")
    ax.set_ylabel("top-1 (%), mean over faithful corruptions")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def corruption_levels_heatmap(levels: list[LevelData]) -> Figure | None:
    names: list[str] = []
    for lev in levels:
        for a in lev.analyses:
            names += [n for n in a["robustness"]["corruptions"] if n not in names]
    names = ordered(names)
    rows, vals = [], []
    for lev in levels:
        if not lev.analyses:
            continue
        rows.append(lev.label)
        vals.append([np.mean(lev.values(lambda a, s, n=n: float(np.mean(a["robustness"]["corruptions"][n])))
                             or [np.nan]) * 100 for n in names])
    if not rows:
        return None
    labels = [n + ("" if n not in CORRUPTIONS or CORRUPTIONS[n].faithful else " *") for n in names]
    return afig.heatmap_figure(np.array(vals), rows, labels, "top-1 (%)",
                               "top-1 per corruption (mean over severities and seeds; * = not in the mean)")


def accuracy_latency_figure(levels: list[LevelData]) -> Figure | None:
    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.subplots()
    drawn = False
    for k, lev in enumerate(levels):
        lat = lev.values(lambda a, s: a["efficiency"]["latency_ms_b1"])
        acc = lev.values(lambda a, s: 100 * s["test_top1"])
        if not lat or not acc:
            continue
        x, y = float(np.mean(lat)), float(np.mean(acc))
        ax.errorbar(x, y, xerr=[[x - min(lat)], [max(lat) - x]], yerr=[[y - min(acc)], [max(acc) - y]],
                    fmt="o", color=f"C{k % 10}", capsize=3, label=lev.label)
        ax.annotate(lev.label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        drawn = True
    if not drawn:
        return None
    ax.set_xlabel("batch-1 latency (ms, eager)")
    ax.set_ylabel("test top-1 (%)")
    ax.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------------------------------------- study sections


def _mean_layer(key: str):
    def fn(a, s):
        vals = [lay[key] for lay in a["attention"]["layers"] if lay[key] is not None]
        return sum(vals) / len(vals) if vals else None
    return fn


def attention_html(factor: str, levels: list[LevelData], expected: int, sink: FigureSink) -> str:
    levels = [lev.with_section("attention") for lev in levels]
    if not any(lev.analyses for lev in levels):
        return ""
    s = slug(factor)
    def layers(a):
        return a["attention"]["layers"]

    rows = []
    for lev in levels:
        def cell(fn, scale, decimals, valid):
            return ci_text(lev.values(fn), scale, decimals, expected, method=sink.ci, valid=valid)

        rows.append([lev.label, f"{len(lev.analyses)}",
                     cell(_mean_layer("entropy_norm"), 1, 3, RANGE_UNIT),
                     cell(_mean_layer("max_weight"), 1, 3, RANGE_UNIT),
                     cell(_mean_layer("distance_px"), 1, 2, RANGE_NONNEGATIVE),
                     cell(lambda a, _: max(x["max_logit"] for x in layers(a) if x["max_logit"] is not None), 1, 2,
                          RANGE_ANY),
                     cell(lambda a, _: layers(a)[-1]["rank_residual"], 1, 3, RANGE_UNIT),
                     cell(lambda a, _: layers(a)[-1]["token_cosine"], 1, 3, TOKEN_COSINE_RANGE)])
    samples = next(lev for lev in levels if lev.analyses).analyses[0]["attention"]["samples"]
    parts = [table_html(f"{factor}: attention statistics on {samples} fixed test images (mean over layers; "
                        f"mean [95% {stats.CI_NAMES[sink.ci]} CI] over seeds, {CUT_NOTE})",
                        ["level", "seeds", "normalized entropy", "max weight", "distance (px)", "max logit",
                         "rank residual (last)", "token cosine (last)"], rows)]
    parts.append(sink(entropy_levels_figure(levels), f"{s}_attn_entropy",
                      f"{factor}: normalized attention entropy per layer (1 = uniform attention, 0 = all weight on "
                      "one key); line = mean over seeds, band = min–max over seeds."))
    for i in range(ROLLOUT_IMAGES):
        parts.append(sink(rollout_grid_figure(levels, i), f"{s}_rollout_{i}",
                          f"{factor}: attention rollout (Abnar & Zuidema 2020) up to each layer, test image {i + 1} "
                          "of the fixed sample, one row per level (its first seed); one color scale for the whole "
                          "grid, from 0 to its largest weight (bright = attended)."))
    parts.append(note("How to read: a normalized entropy near 1 means every query spreads its attention almost "
                      "uniformly over all tokens (the attention averages); near 0 it picks a few tokens. Max "
                      "weight is the largest weight a query gives; distance is how far (in input pixels) the "
                      "attended tokens are; a rank residual near 0 or a token cosine near 1 means the tokens have "
                      "become alike (rank collapse). Signed (cosine) or unnormalized (sigmoid) rows are read as "
                      "|a| normalized per query."))
    return "".join(parts)


def robustness_html(factor: str, levels: list[LevelData], reference: str | None, expected: int,
                    sink: FigureSink) -> str:
    levels = [lev.with_section("robustness") for lev in levels]
    if not any(lev.analyses for lev in levels):
        return ""
    s = slug(factor)
    ref = next((lev for lev in levels if lev.label == reference and lev.analyses), None)
    ref = ref or next(lev for lev in levels if lev.analyses)
    ref_profile = mean_profile([error_profile(a["robustness"]) for a in ref.analyses])
    rows = []
    for lev in levels:
        def cell(fn, scale, decimals, valid=RANGE_NONNEGATIVE):
            return ci_text(lev.values(fn), scale, decimals, expected, method=sink.ci, valid=valid)

        rows.append([lev.label, f"{len(lev.analyses)}",
                     cell(lambda a, _: a["robustness"]["clean_top1"], 100, 2, RANGE_PERCENT),
                     cell(lambda a, _: a["robustness"]["mean_top1"], 100, 2, RANGE_PERCENT),
                     cell(lambda a, _: mce(a["robustness"], ref_profile), 100, 1),
                     cell(lambda a, _: mce(a["robustness"], ref_profile, relative=True), 100, 1)])
    first = ref.analyses[0]["robustness"]
    parts = [table_html(f"{factor}: corruption robustness ({first['images']:,} test images × 15 corruptions × 5 "
                        f"severities; mean [95% {stats.CI_NAMES[sink.ci]} CI] over seeds, {CUT_NOTE}; mCE relative to "
                        f"{ref.label} = 100)",
                        ["level", "seeds", "clean top-1 (%)", "mean corruption top-1 (%)", "mCE (%)",
                         "relative mCE (%)"], rows)]
    parts.append(sink(severity_levels_figure(levels), f"{s}_severity",
                      f"{factor}: top-1 vs corruption severity (mean over the faithful corruptions); line = mean over "
                      "seeds, band = min–max."))
    parts.append(sink(corruption_levels_heatmap(levels), f"{s}_corruptions",
                      f"{factor}: top-1 per corruption, mean over the 5 severities and the seeds."))
    parts.append(note("How to read: mCE (Hendrycks & Dietterich 2019) averages, over corruptions, a level's summed "
                      f"error over the 5 severities divided by that of the reference level ({ref.label}, its mean "
                      "over seeds): below 100 is more robust than the reference. Relative mCE does the same with "
                      "the errors minus each model's clean error, i.e. it measures the degradation, not the level. "
                      + _weak_reference_note(ref_profile, ref.label) + first.get("note", "")))
    return "".join(parts)


def _weak_reference_note(ref_profile: dict, label: str) -> str:
    """Which corruptions relative mCE leaves out, and why (robustness.RELATIVE_MIN_DEGRADATION)."""
    weak = weak_reference_corruptions(ref_profile)
    if not weak:
        return ""
    return (f"Relative mCE leaves out {len(weak)} corruption{'s' if len(weak) != 1 else ''} ({', '.join(weak)}) that "
            f"degrade the reference {label} by less than {100 * RELATIVE_MIN_DEGRADATION:g} points of error summed "
            "over the 5 severities: dividing by so small a degradation makes the ratio noise (it can reach hundreds "
            "of percent or flip sign); '—' where no corruption is left. ")


def efficiency_html(factor: str, levels: list[LevelData], expected: int, sink: FigureSink) -> str:
    levels = [lev.with_section("efficiency") for lev in levels]
    if not any(lev.analyses for lev in levels):
        return ""
    s = slug(factor)
    rows = []
    for lev in levels:
        def cell(fn, scale, decimals, seeds=expected, valid=RANGE_NONNEGATIVE):
            return ci_text(lev.values(fn), scale, decimals, seeds, method=sink.ci, valid=valid)

        rows.append([lev.label, f"{len(lev.analyses)}",
                     cell(lambda a, _: a["efficiency"]["latency_ms_b1"], 1, 2),
                     cell(lambda a, _: a["efficiency"]["compiled"]["latency_ms_b1"], 1, 2),
                     cell(lambda a, _: a["efficiency"]["throughput_img_s_b256"], 1, 0),
                     cell(lambda a, _: a["efficiency"]["params"], 1e-6, 3, None),
                     cell(lambda a, _: a["efficiency"]["flops"], 1e-6, 1, None),
                     cell(lambda a, s_: s_["test_top1"], 100, 2, valid=RANGE_PERCENT)])
    eff = next(lev for lev in levels if lev.analyses).analyses[0]["efficiency"]
    threads = eff["threads"]
    parts = [table_html(f"{factor}: efficiency on {eff['device']} ({threads} thread{'s' if threads != 1 else ''}, "
                        f"{eff['precision']}); "
                        f"mean [95% {stats.CI_NAMES[sink.ci]} CI] over seeds, {CUT_NOTE}",
                        ["level", "seeds", "latency b1 (ms)", "latency b1 compiled (ms)",
                         "inference throughput b256 (img/s)",
                         "params (M)", "MFLOPs", "test top-1 (%)"], rows)]
    parts.append(sink(accuracy_latency_figure(levels), f"{s}_acc_latency",
                      f"{factor}: test top-1 vs batch-1 latency; point = mean over seeds, bars = min–max."))
    loads = [a["efficiency"].get("load_average") for lev in levels for a in lev.analyses]
    busy = [x for lev in levels for a in lev.analyses if a["efficiency"].get("busy")
            for x in [a["efficiency"].get("load_average")] if isinstance(x, (int, float))]
    if busy:
        parts.append(note(f"Warning: {len(busy)} of {len(loads)} runs were timed on a busy machine (load average up to "
                          f"{max(busy):.1f} on {eff.get('cores') or '?'} cores): their latencies and throughputs are "
                          "slower and noisier than on an idle machine; re-measure them on a quiet one "
                          "(vitlab analyze RUN --sections efficiency --force)."))
    parts.append(note("How to read: latency is the median of single-image forward passes, throughput the median rate "
                      "at batch 256, both on the machine the analysis ran on (timings from a shared machine are "
                      "noisy; compare levels measured together). FLOPs count 2 per multiply-accumulate."))
    return "".join(parts)


def study_sections(meta: dict, records: Sequence, study_dir: Path, report_dir: Path,
                   ci: str = stats.DEFAULT_CI) -> list[tuple[str, str, str]]:
    """(anchor, title, html) of the Attention, Robustness and Efficiency sections of a study report;
    empty when no run has an analysis. Figures go to report_dir/figures; intervals use `ci`."""
    if meta.get("kind") == "search":
        return []
    seeds = meta.get("seeds")
    sink = FigureSink(Path(report_dir) / "figures", ci)
    factors: dict[str, list] = dict(meta.get("factors") or {})
    per_factor = {f: factor_levels(records, f, [str(x) for x in levels], lambda rid: study_run_dir(study_dir, rid))
                  for f, levels in factors.items()}
    out = []
    for title, build in (("Attention", lambda f, lv, exp: attention_html(f, lv, exp, sink)),
                         ("Robustness", lambda f, lv, exp: robustness_html(
                             f, lv, str((meta.get("reference") or {}).get(f, lv[0].label if lv else "")), exp, sink)),
                         ("Efficiency", lambda f, lv, exp: efficiency_html(f, lv, exp, sink))):
        body = ""
        for f, lv in per_factor.items():
            expected = len(seeds) if seeds else max((len(x.seeds) for x in lv), default=0)
            part = build(f, lv, expected)
            if part:
                body += (f"<h3>{e(f)}</h3>\n" if len(per_factor) > 1 else "") + part
        if body:
            out.append((slug(title.lower()), title, body))
    return out


# ---------------------------------------------------------------------------------------------- one run


def _fmt(v, scale: float = 1.0, decimals: int = 2) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        return "—"
    return f"{v * scale:,.{decimals}f}"


def run_sections(run_dir: Path, analysis: dict, sink: FigureSink) -> list[tuple[str, str, str]]:
    """(anchor, title, html) of the four analysis sections of one run."""
    out = []
    att = analysis.get("attention")
    if att:
        arrays = read_maps(run_dir) or {}
        n = len(att["layers"])
        rows = [[f"L{i}", lay["name"], str(lay["tokens"]), _fmt(lay["entropy"], 1, 3), _fmt(lay["entropy_norm"], 1, 3),
                 _fmt(lay["max_weight"], 1, 3), _fmt(lay["distance_px"]), _fmt(lay["max_logit"]),
                 _fmt(lay["qk_spectral_norm"]), _fmt(lay["rank_residual"], 1, 3), _fmt(lay["token_cosine"], 1, 3)]
                for i, lay in enumerate(att["layers"])]
        body = table_html(f"Attention statistics per layer on {att['samples']} fixed test images (means over images, "
                          "queries and heads; max logit and spectral norm are maxima over heads)",
                          ["layer", "module", "tokens", "entropy (nats)", "normalized", "max weight", "distance (px)",
                           "max logit", "‖W_q W_kᵀ‖₂", "rank residual", "token cosine"], rows)
        body += sink(afig.entropy_layers_figure(att["layers"]), "attention_layers",
                     "Normalized entropy and mean attention distance per layer; dots = heads.")
        body += sink(afig.entropy_epochs_figure(read_metrics(run_dir)), "attention_epochs",
                     "Normalized attention entropy per layer during training (fixed validation batch).")
        if "images" in arrays:
            labels = [f"L{i}" for i in range(n)]
            body += sink(afig.maps_figure(arrays["images"], [arrays[f"query_{i}"] for i in range(n)], labels,
                                          f"attention of the {att['maps']['query']}"), "attention_maps",
                         f"Head-mean attention of the {att['maps']['query']} in each layer over the image (bright = attended; "
                         "each map is scaled to its own min–max, so compare shapes, not brightness, across maps — "
                         "the entropy table says how peaked each layer is).")
            body += sink(afig.maps_figure(arrays["images"], [arrays[f"rollout_{i}"] for i in range(n)], labels,
                                          "attention rollout"), "attention_rollout",
                         "Attention rollout (Abnar & Zuidema 2020) up to each layer: the residual-mixed product of the "
                         "head-mean attention matrices.")
        out.append(("attention", "Attention", body))
    rob = analysis.get("robustness")
    if rob:
        status = "" if rob.get("complete") else " — incomplete sweep (rerun vitlab analyze to continue)"
        rows = [[name, rob["categories"][name], *[_fmt(a, 100) for a in accs], _fmt(float(np.mean(accs)), 100)]
                for name, accs in ((n, rob["corruptions"][n]) for n in ordered(rob["corruptions"]))]
        body = table_html(f"Top-1 (%) under each corruption and severity, {rob['images']:,} test images{status}",
                          ["corruption", "category", "1", "2", "3", "4", "5", "mean"], rows)
        body += note(f"Clean top-1 {_fmt(rob['clean_top1'], 100)}%; mean corruption top-1 {_fmt(rob['mean_top1'], 100)}% "
                     f"(over the faithful corruptions). {rob.get('note', '')}")
        body += sink(afig.severity_figure(rob), "robustness_severity",
                     "Top-1 vs severity: mean over the faithful corruptions and per category.")
        body += sink(afig.corruption_heatmap(rob), "robustness_heatmap", "Top-1 per corruption and severity.")
        out.append(("robustness", "Robustness", body))
    cal = analysis.get("calibration")
    if cal:
        body = note(f"ECE {_fmt(cal['ece'], 100)}% · accuracy {_fmt(cal['accuracy'], 100)}% · mean confidence "
                    f"{_fmt(cal['mean_confidence'], 100)}% · overconfidence {_fmt(cal['overconfidence'], 100, 2)} pp "
                    f"on {cal['images']:,} clean test images.")
        body += sink(afig.reliability_figure(cal), "reliability",
                     "Reliability diagram: accuracy per confidence bin; a calibrated model follows the diagonal, "
                     "bars below it are overconfident.")
        out.append(("calibration", "Calibration", body))
    eff = analysis.get("efficiency")
    if eff and "latency_ms_b1" in eff:
        comp = eff.get("compiled") or {}
        onnx = eff.get("onnx") or {}
        rows = [["parameters", _fmt(eff["params"], 1, 0)], ["FLOPs (forward, one image)", _fmt(eff["flops"], 1, 0)],
                ["latency, batch 1 (ms, median)", _fmt(eff["latency_ms_b1"], 1, 3)],
                ["throughput, batch 256 (img/s)", _fmt(eff["throughput_img_s_b256"], 1, 0)],
                ["compiled latency, batch 1 (ms)", _fmt(comp.get("latency_ms_b1"), 1, 3) if "error" not in comp
                 else comp["error"]],
                ["compiled throughput, batch 256 (img/s)", _fmt(comp.get("throughput_img_s_b256"), 1, 0)],
                ["ONNX Runtime latency, batch 1 (ms)", _fmt(onnx.get("latency_ms_b1"), 1, 3)]]
        body = table_html(f"Efficiency on {eff['device']} ({eff['threads']} threads, {eff['precision']}, load average "
                          f"{_fmt(eff.get('load_average'), 1, 1)} at the start)", ["measure", "value"], rows)
        out.append(("efficiency", "Efficiency", body))
    return out


def render_run_html(run_dir: Path, summary: dict, analysis: dict | None, sections: list[tuple[str, str, str]]) -> str:
    name = run_dir.resolve().name
    synthetic = bool(summary.get("synthetic"))
    rows = [("Model", f"{summary.get('model', '?')}"), ("Dataset", f"{summary.get('dataset', '?')}"
                                                                   + (" — synthetic data" if synthetic else "")),
            ("Status", str(summary.get("status", "?"))), ("Best epoch", str(summary.get("best_epoch", "—"))),
            ("Test top-1", _fmt(summary.get("test_top1"), 100) + " %"), ("Parameters", _fmt(summary.get("params"), 1, 0)),
            ("Generated", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
            ("vitlab version", __version__)]
    if analysis and analysis.get("run"):
        rows.insert(2, ("Attention", str(analysis["run"].get("attn_norm"))))
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>vitlab run report: {e(name)}</title>", f"<style>{CSS}</style></head><body>",
             f"<header><h1>Run {e(name)}</h1>",
             '<dl class="meta">' + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in rows) + "</dl>"]
    if synthetic:
        parts.append('<div class="warn"><strong>Synthetic data.</strong> This run trained on generated images: the '
                     "numbers check the pipeline, they say nothing about accuracy on real images.</div>")
    parts.append("</header>")
    if sections:
        parts.append("<nav><ul>" + "".join(f'<li><a href="#{e(a)}">{e(t)}</a></li>' for a, t, _ in sections) + "</ul></nav>")
    else:
        parts.append(note(f"No analysis yet: run `vitlab analyze {run_dir}` to add attention, robustness, calibration "
                          "and efficiency sections."))
    for anchor, title, body in sections:
        parts.append(f'<section id="{e(anchor)}"><h2>{e(title)}</h2>{body}</section>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_run_report(run_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """`vitlab report RUN_DIR`: RUN/analysis/report.html, beside the figures it embeds (a run directory
    holds only the entries rundir.RUN_DIR_ENTRIES names)."""
    p = Path(run_dir)
    if not (is_run_dir(p) and (p / SUMMARY_FILE).is_file()):
        raise UserError(f"{p}: not a run directory (no {CONFIG_FILE} and {SUMMARY_FILE})")
    writable_run_dir(p)  # RUN/analysis/ as a link elsewhere: refused before anything is written
    summary = read_summary(p) or {}
    analysis = read_analysis(p)
    report_dir = p / ANALYSIS_DIR
    sections = run_sections(p, analysis, FigureSink(report_dir)) if analysis else []
    out = Path(out_path) if out_path is not None else report_dir / HTML_NAME
    atomic_write_text(out, render_run_html(p, summary, analysis, sections))
    return out
