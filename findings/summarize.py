"""Regenerate findings/SUMMARY.md, the numbers findings/README.md quotes, from the committed run
summaries of the real-data studies (index, checkpoints and images are not needed):

    python findings/summarize.py            # writes findings/SUMMARY.md

For each study: every level's mean over seeds with its 95% Student-t interval (the interval whose
coverage vitlab measured at 2-10 seeds), then the comparisons the seed studies' claims make, paired
by seed: the mean difference with its 95% t-interval, the paired t-test Holm-adjusted over the
study's comparisons, and the exact sign-flip p-value (which cannot fall below 2/2^n = 0.25 at
3 pairs, so at 3 seeds only the t-test, which assumes roughly normal seed noise, can decide).
Needs the pandas extra (`pip install -e '.[pandas]'`).
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats as sps

import vitlab
from vitlab import stats
from vitlab.io import atomic_write_text

HERE = Path(__file__).resolve().parent
ALPHA = 0.05


@dataclass(frozen=True)
class Comparison:
    """`level` minus `other` on `metric` (a column of vitlab.load_results, or 'gap')."""

    metric: str
    level: str
    other: str


@dataclass(frozen=True)
class Study:
    name: str  # its directory under findings/
    factor: str
    comparisons: tuple[Comparison, ...]
    spec: str = ""  # studies/SPEC.yaml; default: the name
    profile: str = "fmnist_time"  # the committed runs used the time budget (fmnist is now a FLOP budget)

    @property
    def spec_name(self) -> str:
        return self.spec or self.name

    @property
    def spec_path(self) -> Path:
        return HERE.parent / "studies" / f"{self.spec_name}.yaml"


def _vs(metric: str, pairs: list[tuple[str, str]]) -> tuple[Comparison, ...]:
    return tuple(Comparison(metric, a, b) for a, b in pairs)


STUDIES = [
    Study("vit_attention_norm", "model.attn_norm",
          _vs("test_top1", [("zscore", "softmax"), ("cosine", "softmax"), ("linear", "softmax"),
                            ("linear_scale", "softmax"), ("zscore", "cosine"), ("cosine", "linear"),
                            ("cosine", "linear_scale")])
          + _vs("corruption_top1_mean", [("zscore", "softmax"), ("cosine", "softmax"), ("linear", "softmax"),
                                         ("linear_scale", "softmax")])),
    Study("mobilevit_heads", "model.num_heads",
          _vs("test_top1", [("8", "4"), ("16", "4"), ("8", "1"), ("16", "1"), ("8", "2"), ("16", "2"),
                            ("16", "8")])),
    Study("mobilevit_expansion", "model.expansion",
          _vs("test_top1", [("1", "2"), ("4", "2"), ("8", "2"), ("8", "4")])
          + _vs("train_top1", [("8", "2")]) + _vs("gap", [("8", "2")])),
    Study("mobilevit_expansion_small_data", "model.expansion",
          _vs("test_top1", [("1", "2"), ("4", "2"), ("8", "2"), ("16", "2")])
          + _vs("train_top1", [("16", "2")]) + _vs("gap", [("16", "2"), ("8", "2")]),
          spec="mobilevit_expansion", profile="fmnist_small_data"),
    Study("mobilevit_complexity", "model.level",
          _vs("test_top1", [("C2", "C1"), ("C3", "C2"), ("C4", "C3"), ("C5", "C4")])
          + _vs("latency_ms_b1", [("C2", "C1"), ("C3", "C2"), ("C4", "C3"), ("C5", "C4")])),
]

PERCENT = {"test_top1", "train_top1", "val_top1", "gap", "corruption_top1_mean", "test_ece"}
TITLES = {"test_top1": "test top-1 (%)", "train_top1": "train top-1 (%, running, augmented)",
          "gap": "train − test top-1 (pp)", "corruption_top1_mean": "corrupted top-1 (%)",
          "latency_ms_b1": "latency, batch 1 (ms)"}
LEVEL_COLUMNS = [  # (column, header, decimals, interval?)
    ("epochs", "epochs trained", 2, False),
    ("test_top1", "test top-1 (%) [95% t]", 2, True),
    ("sd", "seed SD (pp)", 2, False),
    ("val_top1", "val top-1 (%)", 2, False),
    ("train_top1", "train top-1 (%)", 2, False),
    ("test_ece", "ECE (%)", 2, False),
    ("corruption_top1_mean", "corrupted top-1 (%)", 2, False),
    ("corruption_relative_drop", "relative drop (%)", 1, False),
    ("attn_entropy_norm_mean", "attn entropy (norm.)", 3, False),
    ("params", "params", 0, False),
    ("latency_ms_b1", "latency b1 (ms)", 2, False),
]


def frame(study_dir: Path):
    df = vitlab.load_results(study_dir)
    df = df[df["status"] == "completed"].copy()
    df["level"] = df["level"].astype(str)
    for c in (PERCENT - {"gap"}) | {"corruption_relative_drop"}:
        if c in df:  # a study without the robustness analysis has no corruption columns
            df[c] = 100.0 * df[c]
    df["gap"] = df["train_top1"] - df["test_top1"]
    df["epochs"] = df["steps"] / df["steps_per_epoch"]
    return df


def fmt(v: float, d: int) -> str:
    if v is None or not math.isfinite(v):
        return "—"
    return f"{v:,.{d}f}"


def level_table(df, levels: list[str]) -> list[str]:
    out = ["| level | n | " + " | ".join(h for _, h, _, _ in LEVEL_COLUMNS) + " |",
           "|---|---:|" + "---:|" * len(LEVEL_COLUMNS)]
    for lv in levels:
        g = df[df["level"] == lv]
        cells = []
        for col, _, d, interval in LEVEL_COLUMNS:
            if col == "sd":
                x = g["test_top1"].to_numpy(float)
                cells.append(fmt(float(np.std(x, ddof=1)) if x.size > 1 else math.nan, d))
                continue
            x = g[col].to_numpy(float) if col in g else np.array([])
            x = x[np.isfinite(x)]
            if x.size == 0:
                cells.append("—")
            elif interval and x.size > 1:
                ci = stats.t_interval(x)
                cells.append(f"{fmt(ci.mean, d)} [{fmt(ci.lo, d)}, {fmt(ci.hi, d)}]")
            else:
                cells.append(fmt(float(x.mean()), d))
        out.append(f"| {lv} | {len(g)} | " + " | ".join(cells) + " |")
    return out


def layer_table(df, levels: list[str], prefix: str, d: int) -> list[str]:
    cols = sorted((c for c in df.columns if re.fullmatch(prefix + r"\d+", c)), key=lambda c: int(c.rsplit("l", 1)[1]))
    if not cols:
        return []
    out = ["| level | " + " | ".join(f"layer {c.rsplit('l', 1)[1]}" for c in cols) + " |",
           "|---|" + "---:|" * len(cols)]
    for lv in levels:
        g = df[df["level"] == lv]
        out.append(f"| {lv} | " + " | ".join(fmt(float(g[c].mean()), d) for c in cols) + " |")
    return out


def paired(df, c: Comparison) -> dict:
    a = df[df["level"] == c.level].set_index("seed")[c.metric]
    b = df[df["level"] == c.other].set_index("seed")[c.metric]
    seeds = sorted(set(a.index) & set(b.index))
    d = np.array([a[s] - b[s] for s in seeds], float)
    ci = stats.t_interval(d) if d.size > 1 else None
    p_t = float(sps.ttest_rel(a[seeds], b[seeds]).pvalue) if d.size > 1 and np.std(d) > 0 else math.nan
    return {"n": d.size, "mean": float(d.mean()) if d.size else math.nan, "lo": ci.lo if ci else math.nan,
            "hi": ci.hi if ci else math.nan, "p_t": p_t, "p_exact": stats.sign_flip_pvalue(d) if d.size else math.nan}


def comparison_table(df, study: Study) -> list[str]:
    rows = [paired(df, c) for c in study.comparisons]
    p_holm = stats.holm_adjust([r["p_t"] if math.isfinite(r["p_t"]) else 1.0 for r in rows])
    out = ["| comparison | metric | n | Δ [95% t] | p (paired t) | p (t, Holm) | p (exact sign-flip) | t-test verdict |",
           "|---|---|---:|---:|---:|---:|---:|---|"]
    for c, r, ph in zip(study.comparisons, rows, p_holm):
        d = 3 if c.metric == "latency_ms_b1" else 2
        verdict = ("undecided" if not (ph <= ALPHA) else
                   f"{c.level} higher" if r["mean"] > 0 else f"{c.level} lower")
        out.append(f"| {c.level} − {c.other} | {TITLES.get(c.metric, c.metric)} | {r['n']} | "
                   f"{fmt(r['mean'], d)} [{fmt(r['lo'], d)}, {fmt(r['hi'], d)}] | {r['p_t']:.3g} | {ph:.3g} | "
                   f"{r['p_exact']:.3g} | {verdict} |")
    return out


def planned_runs(study: Study) -> list:
    """The runs the study's profile plans (from studies/, beside findings/)."""
    from vitlab.study.plan import expand

    return expand(study.spec_path, study.profile)


def summarize(root: Path = HERE) -> str:
    lines = ["# Numbers behind findings/README.md", "",
             "Generated by `python findings/summarize.py` from the run summaries under `findings/*/runs/`. "
             "Means over seeds; [95% t]: Student-t interval. Comparisons are paired by seed; p (t, Holm): the "
             "paired t-test Holm-adjusted over the study's comparisons, which decides the verdict at α = 0.05; "
             "the exact sign-flip test is distribution-free but cannot go below 0.25 at 3 pairs.", ""]
    for study in STUDIES:
        d = root / study.name
        df = frame(d) if d.is_dir() else None
        if df is None or len(df) < len(planned_runs(study)):  # only complete studies are findings
            lines += [f"## {study.name}", "", "(not complete yet)", ""]
            continue
        levels = list(dict.fromkeys(df["level"]))  # load_results keeps the spec's order of levels
        lines += [f"## {study.name} ({len(df)} completed runs)", "", *level_table(df, levels), "",
                  "Paired comparisons:", "", *comparison_table(df, study), ""]
        for prefix, title, dec in [("attn_entropy_norm_l", "Normalized attention entropy per layer "
                                    "(1 = uniform; test images, after training)", 3),
                                   ("attn_distance_px_l", "Mean attention distance per layer (pixels of the "
                                    "32×32 input)", 2)]:
            t = layer_table(df, levels, prefix, dec)
            if t:
                lines += [f"{title}:", "", *t, ""]
    return "\n".join(lines)


if __name__ == "__main__":
    out = HERE / "SUMMARY.md"
    atomic_write_text(out, summarize() + "\n")
    print(out, file=sys.stderr)
