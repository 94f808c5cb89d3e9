"""Regenerate findings/SUMMARY.md, every number findings/README.md quotes, from the committed run
summaries of the real-data studies (index, checkpoints and images are not needed):

    python findings/summarize.py            # writes findings/SUMMARY.md

For each study: every level's mean over seeds (test top-1 with its 95% Student-t interval) and the
compute, attention, robustness, calibration and efficiency numbers the README quotes; then the
study's declared comparisons, decided by the one rule the reports use (`vitlab.stats.DECISION_RULE`:
the paired t-test, Holm-adjusted over exactly the declared comparisons of a metric; TOST within the
spec's equivalence margin, Holm-adjusted over the same family): a verdict of difference, equivalent
or undecided, with the seeds that would decide an undecided one.

The declared comparisons and margin of a study come from its committed spec.yaml (`compare:` on the
primary metric, `equivalence_margin`), which its report decides with too: the families of the re-run
specs (findings/<study>.yaml), restricted to the levels the committed runs have. They were added after
these runs, so for them they are a fixed family, not a pre-registration; the re-runs declare them
before running. Claims the README makes on other metrics
(train accuracy, the train-test gap, corruption accuracy, latency) are their own families, listed in
STUDIES below. Needs the pandas extra (`pip install -e '.[pandas]'`).
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import vitlab
from vitlab import stats
from vitlab.io import atomic_write_text
from vitlab.study import compare
from vitlab.study.plan import expand
from vitlab.study.spec import load_spec, resolve

HERE = Path(__file__).resolve().parent
STUDIES_DIR = HERE.parent / "studies"
ALPHA = stats.ALPHA


@dataclass(frozen=True)
class Family:
    """A family of comparisons on one metric (a column of vitlab.load_results, or 'gap')."""

    metric: str
    comparisons: tuple[compare.Comparison, ...]
    margin: float | None = None


@dataclass(frozen=True)
class Study:
    name: str  # its directory under findings/
    factor: str
    extra: tuple[Family, ...] = ()  # families on the other metrics the README quotes
    spec: str = ""  # the spec the runs came from, relative to the repository; default: studies/NAME.yaml
    profile: str | None = "fmnist_time"  # the first runs used the time budget (fmnist is now a FLOP budget)

    @property
    def spec_file(self) -> str:
        return self.spec or f"studies/{self.name}.yaml"

    @property
    def spec_path(self) -> Path:
        return STUDIES_DIR.parent / self.spec_file

    @property
    def command(self) -> str:
        """The command that ran (and resumes) the study."""
        profile = f" --profile {self.profile}" if self.profile else ""
        return f"vitlab study {self.spec_file}{profile} --out findings/{self.name} --workers 2"


def pairs(*ps) -> tuple[compare.Comparison, ...]:
    return tuple(compare.Comparison(compare.PAIR, str(a), str(b)) for a, b in ps)


TREND = "trend"
"""Stands for the trend over a study's levels in a family (the levels are known only from the runs)."""


def corruption_vs_softmax(*levels: str) -> Family:
    """Corrupted top-1 of each attention normalization against softmax (the robustness family of study B)."""
    return Family("corruption_top1_mean", pairs(*((level, "softmax") for level in levels)))


EXPANSION_FIT = (Family("train_top1", pairs(("8", "2"))), Family("gap", pairs(("8", "2"))))
"""At equal compute: does r = 8 fit its training batches better than r = 2, and is its train − test gap wider."""

COMPLEXITY_LATENCY = Family("latency_ms_b1", pairs(("C5", "C1"), ("C3", "C1"), ("C5", "C3")) + (TREND,))
"""The complexity study's second family: batch-1 latency over the same comparisons as its accuracy."""

STUDIES = [
    Study("vit_attention_norm", "model.attn_norm",
          extra=(corruption_vs_softmax("zscore", "cosine", "linear", "linear_scale"),)),
    Study("mobilevit_heads", "model.num_heads"),
    Study("mobilevit_expansion", "model.expansion", extra=EXPANSION_FIT),
    Study("mobilevit_expansion_small_data", "model.expansion",
          extra=(Family("train_top1", pairs(("16", "2")) + (TREND,)), Family("gap", pairs(("16", "2")))),
          spec="studies/mobilevit_expansion.yaml", profile="fmnist_small_data"),
    Study("mobilevit_complexity", "model.level", extra=(COMPLEXITY_LATENCY,)),
    # the re-runs (issue 18): equal training FLOPs, comparisons and margin declared in the spec before running
    Study("mobilevit_complexity_2ep", "model.level", extra=(COMPLEXITY_LATENCY,),
          spec="findings/mobilevit_complexity.yaml", profile=None),
    Study("vit_attention_norm_2ep", "model.attn_norm",
          extra=(corruption_vs_softmax("zscore", "zscore_qkv", "cosine", "linear", "linear_scale"),),
          spec="findings/vit_attention_norm.yaml", profile=None),
    Study("mobilevit_expansion_2ep", "model.expansion", extra=EXPANSION_FIT,
          spec="findings/mobilevit_expansion.yaml", profile=None),
    Study("mobilevit_heads_2ep", "model.num_heads", spec="findings/mobilevit_heads.yaml", profile=None),
    Study("mobilevit_heads_time", "model.num_heads", spec="findings/mobilevit_heads.yaml", profile="equal_time"),
]

PERCENT = {"test_top1", "train_top1", "val_top1", "gap", "corruption_top1_mean", "test_ece"}
TITLES = {"test_top1": "test top-1 (%)", "train_top1": "train top-1 (%, running, augmented)",
          "gap": "train − test top-1 (pp)", "corruption_top1_mean": "corrupted top-1 (%)",
          "latency_ms_b1": "latency, batch 1 (ms)"}
LEVEL_COLUMNS = [  # (column, header, decimals, how): how = mean | ci | range | meanrange | sd | mflops
    ("steps", "steps, mean (min–max)", 0, "meanrange"),
    ("epochs", "epochs", 2, "mean"),
    ("budget_step_s", "calibrated CPU s/step (min–max)", 3, "range"),
    ("step_s", "wall s/step (min–max)", 3, "range"),
    ("train_time_s", "training wall clock, s (min–max)", 0, "range"),
    ("test_top1", "test top-1 (%) [95% t]", 2, "ci"),
    ("test_top1", "seed SD (pp)", 2, "sd"),
    ("val_top1", "val top-1 (%)", 2, "mean"),
    ("train_top1", "train top-1 (%)", 2, "mean"),
    ("gap", "train − test (pp)", 2, "mean"),
    ("test_ece", "ECE (%)", 2, "mean"),
    ("corruption_top1_mean", "corrupted top-1 (%)", 2, "mean"),
    ("corruption_relative_drop", "relative drop (%)", 1, "mean"),
    ("attn_entropy_norm_mean", "attn entropy (norm.)", 3, "mean"),
    ("val_attn_entropy_norm_mean", "attn entropy, val (norm.)", 3, "mean"),
    ("attn_max_weight_mean", "attn max weight", 3, "mean"),
    ("attn_distance_px_mean", "attn distance (px)", 2, "mean"),
    ("attn_rank_residual_last", "rank residual (last)", 2, "mean"),
    ("attn_token_cosine_last", "token cosine (last)", 2, "mean"),
    ("params", "params", 0, "mean"),
    ("flops", "FLOPs (M)", 1, "mflops"),
    ("latency_ms_b1", "latency b1 (ms), mean (min–max)", 2, "meanrange"),
    ("throughput_img_s_b256", "inference img/s b256 (min–max)", 0, "range"),
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
    df["step_s"] = df["train_time_s"] / df["steps"]
    return df


def fmt(v: float, d: int) -> str:
    if v is None or not math.isfinite(v):
        return "—"
    return f"{v:,.{d}f}"


def level_cell(x: np.ndarray, d: int, how: str) -> str:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return "—"
    span = fmt(float(x.min()), d) + ("" if x.min() == x.max() else f"–{fmt(float(x.max()), d)}")
    if how == "range":
        return span
    if how == "meanrange":
        return fmt(float(x.mean()), d) + ("" if x.min() == x.max() else f" ({span})")
    if how == "sd":
        return fmt(float(np.std(x, ddof=1)), d) if x.size > 1 else "—"
    if how == "ci" and x.size > 1:
        ci = stats.t_interval(x)
        return f"{fmt(ci.mean, d)} [{fmt(ci.lo, d)}, {fmt(ci.hi, d)}]"
    return fmt(float(x.mean()) / (1e6 if how == "mflops" else 1.0), d)


def level_table(df, levels: list[str]) -> list[str]:
    cols = [c for c in LEVEL_COLUMNS if c[0] in df and np.isfinite(df[c[0]].to_numpy(float)).any()]
    out = ["| level | n | " + " | ".join(h for _, h, _, _ in cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for lv in levels:
        g = df[df["level"] == lv]
        out.append(f"| {lv} | {len(g)} | " + " | ".join(level_cell(g[c].to_numpy(float), d, how)
                                                         for c, _, d, how in cols) + " |")
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


def resolve_family(items, levels: list[str]) -> tuple[compare.Comparison, ...]:
    """The comparisons of `items` whose levels the runs have; TREND becomes the trend over `levels`."""
    out = []
    for c in items:
        if c == TREND:
            out.append(compare.Comparison(compare.TREND, levels=tuple(levels)))
        elif c.kind == compare.TREND:
            kept = tuple(lv for lv in c.levels if lv in levels)
            if len(kept) >= 2:
                out.append(compare.Comparison(compare.TREND, levels=kept))
        elif c.level in levels and c.other in levels:
            out.append(c)
    return tuple(out)


def families(study: Study, study_dir: Path, levels: list[str]) -> list[Family]:
    """The study's families: its primary one, as its committed spec.yaml declares it (`compare:` and
    `equivalence_margin`, which the report decides with too), and the README's other-metric ones."""
    spec = resolve(load_spec(study_dir / "spec.yaml"))
    primary = Family(spec.metrics[0], resolve_family(compare.declared(spec)[study.factor], levels),
                     spec.equivalence_margin)
    return [primary] + [Family(f.metric, resolve_family(f.comparisons, levels), f.margin) for f in study.extra]


def values_by_level(df, metric: str, levels: list[str]) -> dict[str, dict[int, float]]:
    return {lv: {int(s): float(v) for s, v in df[df["level"] == lv].set_index("seed")[metric].items()
                 if math.isfinite(v)} for lv in levels}


def family_table(df, fam: Family, levels: list[str]) -> list[str]:
    vals = values_by_level(df, fam.metric, levels)
    diffs = [compare.differences(vals, c) for c in fam.comparisons]
    # the margin bounds a difference of two levels; a trend's slope per step is not on that scale
    margins = [fam.margin if c.kind == compare.PAIR else None for c in fam.comparisons]
    decisions = stats.decide_family(diffs, margins)
    d = 3 if fam.metric == "latency_ms_b1" else 2
    unit = "ms" if fam.metric == "latency_ms_b1" else "pp"
    margin = f", equivalence margin ±{fam.margin:g} {unit}" if fam.margin else ", no equivalence margin"
    out = [f"Family: {TITLES.get(fam.metric, fam.metric)}, {len(fam.comparisons)} declared comparisons{margin}.", "",
           "| comparison | n | Δ [95% t] | seeds with Δ < 0 | t (df) | p | p Holm | p TOST Holm | verdict | seeds for a "
           "difference of the observed Δ | seeds for equivalence |", "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    a = ALPHA / max(len(fam.comparisons), 1)  # Holm's first threshold: what a comparison may have to reach
    a_eq = ALPHA / max(sum(m is not None for m in margins), 1)  # the same for the TOST family (the reports')
    for c, x, r in zip(fam.comparisons, diffs, decisions):
        ci = stats.t_interval(x) if x.size > 1 else stats.CI(math.nan, math.nan, math.nan)
        sd = float(np.std(x, ddof=1)) if x.size > 1 else math.nan
        need = stats.seeds_needed(abs(r.mean), sd, alpha=a) if r.mean else math.nan
        need_eq = stats.tost_seeds_needed(fam.margin, sd, alpha=a_eq) if fam.margin and c.kind == compare.PAIR \
            else math.nan
        out.append(f"| {c.label} | {r.n} | {fmt(ci.mean, d)} [{fmt(ci.lo, d)}, {fmt(ci.hi, d)}] | {int((x < 0).sum())}/{r.n} | "
                   f"{fmt(r.t, 2)} ({r.df}) | {r.p:.3g} | {r.p_holm:.3g} | "
                   f"{'—' if not math.isfinite(r.p_tost_holm) else f'{r.p_tost_holm:.3g}'} | {verdict_text(r, c)} | "
                   f"{fmt(need, 0)} | {fmt(need_eq, 0)} |")
    return out


def verdict_text(r: stats.Decision, c: compare.Comparison) -> str:
    if r.verdict == stats.DIFFERENCE:
        word = ("rising" if r.mean > 0 else "falling") if c.kind == compare.TREND else \
            (f"{c.level} higher" if r.mean > 0 else f"{c.level} lower")
        return f"difference: {word}"
    return r.verdict


def planned_runs(study: Study) -> list:
    """The runs the committed study's profile plans (from studies/, beside findings/)."""
    return expand(study.spec_path, study.profile)


def summarize(root: Path = HERE) -> str:
    lines = ["# Numbers behind findings/README.md", "",
             "Generated by `python findings/summarize.py` from the run summaries under `findings/*/runs/`. "
             "Means over seeds; [95% t]: Student-t interval; ranges are min–max over a level's seeds. "
             f"Decision rule (the reports' too): {stats.DECISION_RULE}; TOST within the study's equivalence "
             f"margin, Holm-adjusted over the same family. Verdict at α = {ALPHA:g}: difference (p Holm ≤ α), "
             "equivalent (p TOST Holm ≤ α), else undecided. What would decide an undecided one: 'seeds for a "
             "difference of the observed Δ': pairs at which the paired t-test detects a true difference as large as "
             "the observed one with power 0.8 at α / (family size), the threshold Holm may hold a comparison to; "
             "'seeds for equivalence': the same for TOST calling a true difference of 0 equivalent (the reports' "
             "'Seeds for equivalence'); both from the observed spread, so estimates. The families on test top-1 are those each study's spec.yaml declares "
             "(the re-run specs' families restricted to the levels run here; the reports use them too): fixed "
             "after these runs, not pre-registered for them.", ""]
    for study in STUDIES:
        d = root / study.name
        df = frame(d) if d.is_dir() else None
        if df is None or len(df) < len(planned_runs(study)):  # only complete studies are findings
            lines += [f"## {study.name}", "", "(not complete yet)", ""]
            continue
        levels = list(dict.fromkeys(df["level"]))  # load_results keeps the spec's order of levels
        lines += [f"## {study.name} ({len(df)} completed runs, {fmt(float(df['minutes'].sum()), 0)} run-minutes "
                  "of training and evaluation)", "", *level_table(df, levels), ""]
        for fam in families(study, d, levels):
            lines += [*family_table(df, fam, levels), ""]
        for prefix, title, dec in [("attn_entropy_norm_l", "Normalized attention entropy per layer "
                                    "(1 = uniform; test images, after training)", 3),
                                   ("val_attn_entropy_norm_l", "Normalized attention entropy per layer "
                                    "(validation images, last epoch)", 3),
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
