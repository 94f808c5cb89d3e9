"""`analyze_run`: evaluate a run's best checkpoint and write RUN/analysis/analysis.json, its figures, and
the scalar results into RUN/summary.json.

analysis.json (one top-level key per section; each section records the settings it was computed with
and its `time_s`):

    format, run: {model, attn_norm, dataset, synthetic, checkpoint_epoch, device, vitlab_version}
    attention:   samples, seed, layers: [{name, tokens, keys, num_heads, entropy, entropy_norm, max_weight,
                 distance_px, max_logit, qk_spectral_norm, rank_residual, token_cosine, row_mass, grid,
                 spacing_px, group, heads: [{head, entropy, entropy_norm, ...}]}], maps: {file, images, ...}
    robustness:  images, seed, batch, clean_top1, mean_top1, corruptions: {name: [top-1 at severity 1..5]},
                 severity_top1, category_top1, categories, excluded_from_mean, note, complete
    calibration: images, bins: [{lo, hi, count, confidence, accuracy}], ece, accuracy, mean_confidence,
                 overconfidence
    efficiency:  params, flops, latency_ms_b1, latency_ms_b1_p90, throughput_img_s_b256, device, threads,
                 precision, load_average, compiled: {latency_ms_b1, throughput_img_s_b256} | {error},
                 onnx: {...} (after `vitlab export`)

A section already in analysis.json is skipped unless `force`; an interrupted robustness sweep continues.
"""
from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..version import __version__
from ..io import atomic_write_bytes, atomic_write_json
from ..jsonread import MalformedFile, describe_value
from ..rundir import (ANALYSIS_DIR, ANALYSIS_FILE, MAX_ANALYSIS_BYTES, SUMMARY_FILE, read_analysis_file, read_metrics,
                      read_summary)
from ..safepath import writable_run_dir
from . import figures as fg
from .attention import MAPS_FILE, compute_attention
from .calibration import compute_calibration
from .efficiency import compute_efficiency
from .loading import check_run_dir, load_run
from .metrics import scalar_metrics
from .options import SECTIONS, make_options
from .robustness import compute_robustness

ANALYSIS_FORMAT = 1


class Opt:
    """A key that a section may lack (every other key of a schema dict is required)."""

    def __init__(self, schema):
        self.schema = schema


class MapOf:
    """An object with any keys (strings) whose values follow `schema`."""

    def __init__(self, schema):
        self.schema = schema


_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_SCALAR = (str, int, float, bool, type(None))
_LAYER = {"name": str, "tokens": int, **{k: _OPT_NUM for k in (
    "entropy", "entropy_norm", "max_weight", "distance_px", "max_logit", "qk_spectral_norm", "rank_residual",
    "token_cosine")}, "distance_px_uniform": Opt(_OPT_NUM), "heads": Opt([MapOf(_SCALAR)])}
ANALYSIS_SCHEMA = {
    "format": int,
    "run": Opt(MapOf(_SCALAR)),
    "attention": Opt({"samples": int, "layers": [_LAYER], "maps": Opt(MapOf((str, int, list)))}),
    "robustness": Opt({"images": int, "clean_top1": _NUM, "corruptions": MapOf([_OPT_NUM]),
                       "categories": Opt(MapOf(str)), "mean_top1": Opt(_OPT_NUM), "severity_top1": Opt([_OPT_NUM]),
                       "category_top1": Opt(MapOf(_OPT_NUM)), "complete": Opt(bool), "note": Opt(str)}),
    "calibration": Opt({"images": int, "ece": _OPT_NUM, "accuracy": _NUM, "mean_confidence": _NUM,
                        "overconfidence": _NUM, "bins": [{"lo": _NUM, "hi": _NUM, "count": int,
                                                          "confidence": _OPT_NUM, "accuracy": _OPT_NUM}]}),
    # `vitlab export` alone writes an efficiency section holding only `onnx` (and complete: false)
    "efficiency": Opt({"params": Opt(int), "flops": Opt(int), "device": Opt(str), "latency_ms_b1": Opt(_NUM),
                       "throughput_img_s_b256": Opt(_NUM), "threads": Opt((int, type(None))), "precision": Opt(str),
                       "compiled": Opt(MapOf(_SCALAR)), "onnx": Opt(MapOf(_SCALAR))}),
}
"""The shape of analysis.json that its readers rely on (keys not named here are free): a type or
tuple of types, a dict of keys (all required but `Opt` ones), `[schema]` a list, `MapOf(schema)`."""


def conform(value, schema, source, where: str = "$") -> None:
    """MalformedFile unless `value` follows `schema` (recursion bounded by the schema's depth)."""
    if isinstance(schema, Opt):
        schema = schema.schema
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise MalformedFile(source, f"{where}: {describe_value(value)} where an object belongs")
        for key, sub in schema.items():
            if key in value:
                conform(value[key], sub, source, f"{where}.{key}")
            elif not isinstance(sub, Opt):
                raise MalformedFile(source, f"{where}: lacks {key}")
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise MalformedFile(source, f"{where}: {describe_value(value)} where a list belongs")
        for i, item in enumerate(value):
            conform(item, schema[0], source, f"{where}[{i}]")
    elif isinstance(schema, MapOf):
        if not isinstance(value, dict):
            raise MalformedFile(source, f"{where}: {describe_value(value)} where an object belongs")
        for key, item in value.items():
            conform(item, schema.schema, source, f"{where}.{key[:40]}")
    elif not isinstance(value, schema) or isinstance(value, bool) and bool not in (
            schema if isinstance(schema, tuple) else (schema,)):
        raise MalformedFile(source, f"{where}: {describe_value(value)} is not what this field holds")


def analysis_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / ANALYSIS_DIR / ANALYSIS_FILE


def _bounded(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size <= MAX_ANALYSIS_BYTES
    except OSError:
        return False


def read_analysis(run_dir: str | Path) -> dict | None:
    """A run's analysis.json (checked against ANALYSIS_SCHEMA), or None when missing or of another
    format; MalformedFile when it is damaged (too large, not JSON, a section of the wrong shape)."""
    data = read_analysis_file(run_dir)
    if data is None or data.get("format") != ANALYSIS_FORMAT:
        return None
    conform(data, ANALYSIS_SCHEMA, analysis_path(run_dir))
    return data


def missing_sections(run_dir: str | Path, sections) -> list[str]:
    """The sections of `sections` that the run's analysis.json does not hold complete yet."""
    analysis = read_analysis(run_dir) or {}
    return [s for s in sections if not analysis.get(s) or analysis[s].get("complete") is False]


def read_maps(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """The attention-map arrays of a run (no pickles), or None."""
    path = Path(run_dir) / ANALYSIS_DIR / MAPS_FILE
    if not _bounded(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _sections_arg(sections) -> list[str] | None:
    if sections is None:
        return None
    if isinstance(sections, str):
        sections = [s.strip() for s in sections.split(",") if s.strip()]
    return list(sections)


def analyze_run(run_dir: str | Path, sections=None, force: bool = False, samples: int = 256, *,
                device: str | None = None, progress: Callable[[str], None] | None = None, **options) -> dict:
    """Analyze the best checkpoint of the run in `run_dir` and return the analysis (also written to
    RUN/analysis/analysis.json, with figures beside it; its scalars are merged into summary.json).

    sections: names from SECTIONS (list or comma-separated; default all). force: recompute sections
    already present. samples: attention sample size. options: other `AnalysisOptions` fields
    (corruption_images, seed, compile, ...). device: override the run's device.
    Bad input (not a run directory, no checkpoint, unknown section or option) is a UserError.
    """
    opts = make_options(sections=_sections_arg(sections), samples=samples, **options)
    p = writable_run_dir(check_run_dir(run_dir))  # RUN/analysis or summary.json linked elsewhere: refused
    say = progress or (lambda _msg: None)
    out_dir = p / ANALYSIS_DIR
    try:
        analysis = read_analysis(p) or {"format": ANALYSIS_FORMAT}
    except MalformedFile as e:
        if not force:
            raise MalformedFile(e.path, f"{e.problem}; pass --force to compute the analysis afresh") from None
        analysis = {"format": ANALYSIS_FORMAT}
    todo = [s for s in SECTIONS if s in opts.sections
            and (force or not analysis.get(s) or analysis[s].get("complete") is False)]
    if todo:
        run = load_run(p, device)
        analysis["run"] = {
            "model": run.cfg.model.name, "attn_norm": run.cfg.model.attn_norm, "dataset": run.data.name,
            "synthetic": run.data.synthetic, "test_images": len(run.data.test_y),
            "checkpoint_epoch": run.checkpoint_epoch, "device": str(run.device), "vitlab_version": __version__,
        }
        for name in todo:
            say(f"analyze {p.name}: {name} ...")
            t0 = time.perf_counter()
            if name == "attention":
                sec, arrays = compute_attention(run, opts)
                _save_npz(out_dir / MAPS_FILE, arrays)
            elif name == "robustness":
                previous = None if force else analysis.get("robustness")

                def save_partial(partial: dict) -> None:
                    analysis["robustness"] = partial
                    atomic_write_json(analysis_path(p), analysis)

                sec = compute_robustness(run, opts, previous, save_partial, say)
            elif name == "calibration":
                sec = compute_calibration(run, opts)
            else:
                sec = compute_efficiency(run, opts)
                if sec.get("warning"):
                    say(f"analyze {p.name}: warning: {sec['warning']}")
                if (analysis.get("efficiency") or {}).get("onnx"):  # from `vitlab export`
                    sec["onnx"] = analysis["efficiency"]["onnx"]
            if name != "robustness":
                sec["time_s"] = time.perf_counter() - t0
            analysis[name] = sec
            atomic_write_json(analysis_path(p), analysis)
            write_figures(p, analysis, [name])
            say(f"analyze {p.name}: {name} done in {time.perf_counter() - t0:.1f} s")
    merge_summary(p, analysis)
    return analysis


def merge_summary(run_dir: Path, analysis: dict) -> dict:
    """Add the analysis scalars to RUN/summary.json (atomically); returns them."""
    # NaN (an undefined statistic) stays out: summary.json holds finite numbers only.
    scalars = {k: v for k, v in scalar_metrics(analysis).items() if v is not None and v == v}
    path = Path(run_dir) / SUMMARY_FILE
    summary = read_summary(run_dir)
    if summary is not None and scalars and any(summary.get(k) != v for k, v in scalars.items()):
        summary.update(scalars)
        atomic_write_json(path, summary)
    return scalars


def write_figures(run_dir: Path, analysis: dict, sections: list[str]) -> list[Path]:
    """(Re)draw the figures of `sections` into RUN/analysis/ as PNG + SVG; returns their base paths."""
    out = Path(run_dir) / ANALYSIS_DIR
    made: list[tuple[str, object]] = []
    if "attention" in sections and analysis.get("attention"):
        att = analysis["attention"]
        arrays = read_maps(run_dir) or {}
        n = len(att["layers"])
        labels = [f"L{i}" for i in range(n)]
        if "images" in arrays:
            made.append(("attention_maps", fg.maps_figure(
                arrays["images"], [arrays[f"query_{i}"] for i in range(n)], labels,
                f"Head-mean attention of the {att['maps']['query']} per layer (each map scaled to its own range)")))
            made.append(("attention_rollout", fg.maps_figure(
                arrays["images"], [arrays[f"rollout_{i}"] for i in range(n)], labels,
                "Attention rollout up to each layer (Abnar & Zuidema 2020; one color scale, 0 to the largest weight)",
                one_scale=True)))
        made.append(("attention_layers", fg.entropy_layers_figure(att["layers"])))
        made.append(("attention_epochs", fg.entropy_epochs_figure(read_metrics(run_dir))))
    if "robustness" in sections and analysis.get("robustness"):
        made.append(("robustness_severity", fg.severity_figure(analysis["robustness"])))
        made.append(("robustness_heatmap", fg.corruption_heatmap(analysis["robustness"])))
    if "calibration" in sections and analysis.get("calibration"):
        made.append(("reliability", fg.reliability_figure(analysis["calibration"])))
    paths = []
    for base, fig in made:
        if fig is not None:
            fg.save_figure(fig, out / base)
            paths.append(out / base)
    return paths


def describe(analysis: dict) -> str:
    """A few lines for the terminal: the headline numbers of each section present."""
    lines = []
    att = analysis.get("attention")
    if att:
        ent = " ".join(f"{lay['entropy_norm']:.2f}" if lay["entropy_norm"] is not None else "-" for lay in att["layers"])
        lines.append(f"attention ({att['samples']} images): normalized entropy per layer {ent}")
    rob = analysis.get("robustness")
    if rob:
        state = "" if rob.get("complete") else " (incomplete)"
        lines.append(f"robustness ({rob['images']} images){state}: clean top-1 {100 * rob['clean_top1']:.2f}%, "
                     f"mean corruption top-1 {100 * (rob['mean_top1'] or 0):.2f}%")
    cal = analysis.get("calibration")
    if cal:
        lines.append(f"calibration: ECE {100 * cal['ece']:.2f}%, overconfidence {100 * cal['overconfidence']:+.2f} pp")
    eff = analysis.get("efficiency")
    if eff and eff.get("complete") is False:  # only `vitlab export`'s ONNX part so far
        lines.append("efficiency: not measured yet (run `vitlab analyze RUN --sections efficiency`); "
                     "the ONNX export is recorded")
    elif eff:
        comp = eff.get("compiled") or {}
        c = (f"; compiled {comp['latency_ms_b1']:.2f} ms, {comp['throughput_img_s_b256']:.0f} img/s"
             if "latency_ms_b1" in comp else "")
        threads = eff.get("threads")
        timed = f", {threads} thread{'s' if threads != 1 else ''}" if threads else ""
        load = eff.get("load_average")
        timed += f", load {load:.1f}" if isinstance(load, (int, float)) else ""
        lines.append(f"efficiency ({eff['device']}{timed}): {eff['params'] / 1e6:.2f}M params, "
                     f"{eff['flops'] / 1e6:.1f} MFLOPs, batch-1 latency {eff['latency_ms_b1']:.2f} ms, "
                     f"batch-256 {eff['throughput_img_s_b256']:.0f} img/s{c}"
                     + (" (busy machine: timings unreliable)" if eff.get("busy") else ""))
    return "\n".join(lines)


__all__ = ["analyze_run", "analysis_path", "describe", "merge_summary", "read_analysis", "read_maps",
           "write_figures"]
