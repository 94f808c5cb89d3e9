"""Seed-style tables: numbers equal the stats of the runs' values, formats parse, n is reported."""
from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from test_report_data import FACTOR, SEEDS, make_run, study_records
from vitlab import stats
from vitlab.report import formats, tables


def values(records, label, key, scale=1.0):
    return [r.summary[key] * scale for r in records
            if r.level_label == label and r.status == "completed" and math.isfinite(r.summary[key])]


def test_factor_table_cells_are_t_intervals_of_seed_values():
    recs = study_records()
    t = tables.factor_table(recs, FACTOR, ["softmax", "zscore", "cosine"])
    assert t.method == "t"
    for lab in ("softmax", "zscore", "cosine"):
        c = t.cells[("test_top1", lab)]
        vals = values(recs, lab, "test_top1", 100.0)
        m, sd = np.mean(vals), np.std(vals, ddof=1)
        half = 4.302652729911275 * sd / math.sqrt(3)  # t(0.975, 2)
        assert (c.mean, c.lo, c.hi) == pytest.approx((m, m - half, m + half))
        assert (c.n, c.expected, c.method) == (3, 3, "t")
        minutes = t.cells[("train_minutes", lab)]
        assert minutes.mean == pytest.approx(np.mean(values(recs, lab, "train_time_s")) / 60)
        order = ["softmax", "zscore", "cosine"].index(lab)
        assert t.cells[("params", lab)].mean == pytest.approx(recs[0].summary["params"] / 1e6 * (1 + order))


@pytest.mark.parametrize("ci", ["bootstrap", "bca"])
def test_factor_table_bootstrap_methods(ci):
    recs = study_records()
    t = tables.factor_table(recs, FACTOR, ["softmax", "zscore"], ci=ci, n_resamples=500, seed=3)
    c = t.cells[("test_top1", "zscore")]
    want = stats.mean_ci(values(recs, "zscore", "test_top1", 100.0), ci, n_resamples=500, seed=3)
    assert (c.mean, c.lo, c.hi) == pytest.approx(tuple(want))
    g = tables.factor_grid(t)
    row = {r[0]: r[1:] for r in g.rows}["Test top-1 (%)"]
    assert all(tables.SMALL_N_MARK in cell for cell in row)  # 3 seeds < 10: flagged
    assert stats.CI_NAMES[ci] in g.notes[0] and "less often than stated" in g.notes[1]
    parsed = list(csv.DictReader(io.StringIO(tables.factor_csv(t))))
    assert {r["ci_method"] for r in parsed} == {ci}


def test_stability_rows_use_the_validation_curves():
    recs = study_records()
    t = tables.factor_table(recs, FACTOR, ["softmax"])
    mine = [r for r in recs if r.level_label == "softmax"]
    e90 = [stats.epochs_to_fraction([row["val_top1"] for row in r.epochs], 0.9) for r in mine]
    std5 = [100 * stats.last_k_std([row["val_top1"] for row in r.epochs], 5) for r in mine]
    assert t.cells[("epochs_to_90pct_best_val", "softmax")].mean == pytest.approx(np.mean(e90))
    assert t.cells[("val_top1_std_last5", "softmax")].mean == pytest.approx(np.mean(std5))


def test_curve_sorts_and_keeps_the_last_of_a_relogged_epoch():
    rec = make_run(FACTOR, "softmax", 0, 0, 0.7, epochs=3)
    rec.epochs = [rec.epochs[1], rec.epochs[0], {**rec.epochs[1], "val_top1": 0.123}, rec.epochs[2],
                  {"epoch": 4, "lr": 0.1}]
    ep, val = tables.curve(rec, "val_top1")
    assert ep.tolist() == [1, 2, 3] and val[1] == 0.123


def test_partial_study_reports_n_and_statuses():
    recs = study_records(statuses={("cosine", 2): "failed", ("zscore", 1): "diverged", ("softmax", 0): "running"},
                         drop={("cosine", 1)})
    t = tables.factor_table(recs, FACTOR, ["softmax", "zscore", "cosine", "sigmoid"], seeds=SEEDS)
    runs = {lv.label: lv.text() for lv in t.levels}
    assert runs == {"softmax": "2/3 (1 running)", "zscore": "2/3 (1 diverged)",
                    "cosine": "1/3 (1 failed, 1 missing)", "sigmoid": "0/3 (3 missing)"}
    assert t.cells[("test_top1", "cosine")].n == 1
    assert t.cells[("test_top1", "sigmoid")].n == 0
    grid = tables.factor_grid(t)
    row = {r[0]: r[1:] for r in grid.rows}["Test top-1 (%)"]
    assert row[0].endswith("(n=2/3)") and "[" in row[0]
    assert row[2].endswith("(no interval) (n=1/3)")
    assert row[3] == tables.MISSING


def test_adaptive_expected_seeds_per_level():
    recs = study_records(drop={("cosine", 2)})
    t = tables.factor_table(recs, FACTOR, ["softmax", "zscore", "cosine"], seeds=SEEDS,
                            expected={"softmax": 5, "cosine": 2})
    assert {lv.label: lv.text() for lv in t.levels} == {"softmax": "3/5 (2 missing)", "zscore": "3/3",
                                                       "cosine": "2/2"}
    g = tables.adaptive_grid(FACTOR, {"softmax": {"seeds": 5, "stopped": None},
                                      "cosine": {"seeds": 2, "stopped": "separated at n = 2"}})
    assert g.rows == [["softmax", "5", "not stopped"], ["cosine", "2", "separated at n = 2"]]
    rows = list(csv.DictReader(io.StringIO(tables.adaptive_csv(FACTOR, {"cosine": {"seeds": 2, "stopped": "x"}}))))
    assert rows == [{"factor": FACTOR, "level": "cosine", "seeds": "2", "stopped": "x"}]


def test_cell_text_formats():
    assert tables.cell_text(tables.Cell(3, 3, 71.234, 70.5, 72.0), 2) == "71.23 [70.50, 72.00] (n=3)"
    assert tables.cell_text(tables.Cell(3, 3, 1.5, 1.5, 1.5), 2) == "1.50 (n=3)"  # all seeds equal
    assert tables.cell_text(tables.Cell(1, 3, 71.0, math.nan, math.nan), 1) == "71.0 (no interval) (n=1/3)"
    assert tables.cell_text(tables.Cell(1, 1, 71.0, math.nan, math.nan), 1) == "71.0 (no interval) (n=1)"
    assert tables.cell_text(tables.Cell(0, 3, math.nan, math.nan, math.nan), 2) == tables.MISSING
    boot = tables.Cell(3, 3, 71.234, 70.5, 72.0, "bootstrap")
    assert tables.cell_text(boot, 2) == "71.23 [70.50, 72.00]† (n=3)"
    assert tables.SMALL_N_MARK not in tables.cell_text(tables.Cell(12, 12, 71.2, 70.5, 72.0, "bootstrap"), 1)


def test_markdown_csv_latex_are_consistent():
    recs = study_records(statuses={("cosine", 2): "failed"})
    t = tables.factor_table(recs, FACTOR, ["softmax", "zscore", "cosine"])
    g = tables.factor_grid(t)
    md = formats.to_markdown(g).splitlines()
    rows = [ln for ln in md if ln.startswith("|")]
    assert len(rows) == 2 + 1 + len(t.metrics)  # header, rule, runs row, one per metric
    assert all(ln.count("|") == 5 for ln in rows)
    assert "| Test top-1 (%) |" in "\n".join(md)

    parsed = list(csv.DictReader(io.StringIO(tables.factor_csv(t))))
    assert len(parsed) == 3 * len(t.metrics)
    by = {(r["level"], r["metric"]): r for r in parsed}
    c = t.cells[("test_top1", "cosine")]
    row = by[("cosine", "test_top1")]
    assert (float(row["mean"]), float(row["lo"]), float(row["hi"])) == (c.mean, c.lo, c.hi)
    assert (row["n"], row["n_expected"], row["unit"], row["ci_method"]) == ("2", "3", "%", "t")
    assert row["confidence"] == "0.95"

    tex = formats.to_latex(g)
    body = [ln for ln in tex.splitlines() if ln.endswith(r"\\")]
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 1
    assert len(body) == 1 + 1 + len(t.metrics) and all(ln.count(" & ") == 3 for ln in body)
    assert r"Test top-1 (\%)" in tex and r"model.attn\_norm" not in body[0]
    for ln in tex.splitlines():  # every % outside comments is escaped
        if not ln.startswith("%"):
            assert "%" not in ln.replace(r"\%", "")


def test_tex_escape():
    assert formats.tex_escape("a_b & 5% #1 Δ {x}") == r"a\_b \& 5\% \#1 $\Delta$ \{x\}"


def test_paired_table_matches_stats_by_seed():
    recs = study_records(statuses={("zscore", 2): "failed"})
    m = tables.metric_for("test_top1")
    pt = tables.paired_table(recs, FACTOR, "softmax", [m, tables.metric_for("test_ece")],
                             ["softmax", "zscore", "cosine"], n_resamples=300, seed=1)
    assert [(r.level, r.metric.key) for r in pt.rows] == [("zscore − softmax", "test_top1"),
                                                          ("zscore − softmax", "test_ece"),
                                                          ("cosine − softmax", "test_top1"),
                                                          ("cosine − softmax", "test_ece")]
    ref = {r.seed: 100 * r.summary["test_top1"] for r in recs if r.level_label == "softmax"}
    z = {r.seed: 100 * r.summary["test_top1"] for r in recs if r.level_label == "zscore" and r.status == "completed"}
    d = [z[s] - ref[s] for s in sorted(z)]
    got = pt.rows[0]
    assert got.n == 2
    assert (got.diff_mean, got.lo, got.hi) == pytest.approx(tuple(stats.t_interval(d)))
    assert got.p_exact == stats.sign_flip_pvalue(d) == 0.5  # kept as a check; the t-test decides
    assert (got.t, got.df, got.p_t) == pytest.approx(tuple(stats.paired_t_test(d)))
    sd = float(np.std(d, ddof=1))
    assert got.mde == pytest.approx(stats.minimum_detectable_difference(sd, 2))
    assert got.seeds_needed == stats.seeds_needed(1.0, sd)  # target 1 point, differences in points
    poi = stats.probability_of_improvement_ci(list(z.values()), list(ref.values()), n_resamples=300, seed=1)
    assert (got.p_improve, got.p_improve_lo, got.p_improve_hi) == pytest.approx(tuple(poi))
    # Holm of the paired t-tests across the family (the two comparisons), per metric
    p = [pt.rows[0].p_t, pt.rows[2].p_t]
    assert [pt.rows[0].p_adjusted, pt.rows[2].p_adjusted] == pytest.approx(stats.holm_adjust(p).tolist())
    assert not pt.rows[1].metric.higher_is_better  # ECE: lower is better
    assert math.isnan(pt.rows[1].seeds_needed) is False  # ECE is a percentage metric
    g = tables.paired_grid(pt)
    assert g.header[:3] == ["Comparison", "Metric", "n"] and len(g.rows) == 4
    assert g.header[4:8] == ["paired t", "p", "p Holm", "Verdict"] and g.rows[0][4] == f"t(1) = {got.t:.2f}"
    assert all(len(r) == len(g.header) for r in g.rows)
    assert g.rows[0][3].startswith(("+", "-")) and g.rows[0][3].endswith(" pp")
    assert g.rows[0][7] == "undecided at n = 2"
    parsed = list(csv.DictReader(io.StringIO(tables.paired_csv(pt))))
    assert parsed[0]["unit"] == "pp" and float(parsed[0]["p_improve"]) == pytest.approx(got.p_improve)
    for col in ("t", "df", "p_t", "p_exact", "p_adjusted", "decision", "verdict", "mde", "seeds_needed", "ci_method",
                "target_delta", "p_tost_adjusted"):
        assert col in parsed[0]
    assert parsed[0]["decision"] == "undecided" and parsed[0]["ci_method"] == "t"
    assert float(parsed[0]["mde"]) == pytest.approx(got.mde)


def clear_effect_records(n_seeds: int, effects: dict, metric: str = "test_top1", sd: float = 0.002, rng_seed: int = 1):
    """Levels with a known effect on `metric` (fractions), shared seed effects, n_seeds seeds."""
    rng = np.random.default_rng(rng_seed)
    seed_effect = rng.normal(0, 0.02, n_seeds)
    recs = []
    for order, (lab, eff) in enumerate(effects.items()):
        for s in range(n_seeds):
            r = make_run(FACTOR, lab, order, s, 0.7)
            r.summary[metric] = 0.7 + eff + seed_effect[s] + rng.normal(0, sd)
            recs.append(r)
    return recs


def test_verdicts_from_holm_adjusted_paired_t_tests():
    effects = {"ref": 0.0, "up": 0.03, "down": -0.03, "same": 0.0}
    recs = clear_effect_records(8, effects)
    pt = tables.paired_table(recs, FACTOR, "ref", [tables.metric_for("test_top1")], list(effects), n_resamples=200)
    by = {r.level.split(" ")[0]: r for r in pt.rows}
    assert [r.p_adjusted for r in pt.rows] == pytest.approx(stats.holm_adjust([r.p_t for r in pt.rows]).tolist())
    assert (by["up"].decision, by["down"].decision, by["same"].decision) == ("difference", "difference", "undecided")
    assert (by["up"].verdict, by["down"].verdict) == ("better", "worse")
    # P(improve) compares unpaired runs, so the seed-to-seed spread blurs it: not the verdict's basis
    assert 0.8 < by["up"].p_improve < 1.0 and 0.0 < by["down"].p_improve < 0.2
    # at 3 seeds the paired t-test decides the same clear effects (the exact test could not: p >= 0.25)
    small = tables.paired_table(clear_effect_records(3, effects), FACTOR, "ref", [tables.metric_for("test_top1")],
                                list(effects), n_resamples=200)
    assert [r.decision for r in small.rows] == ["difference", "difference", "undecided"]
    assert min(r.p_exact for r in small.rows) == 0.25
    g = tables.paired_grid(small)
    assert g.rows[0][7] == "difference: better" and g.rows[2][7] == "undecided at n = 3"


def test_verdict_reversed_for_lower_is_better():
    effects = {"ref": 0.0, "lower": -0.03}
    recs = clear_effect_records(8, effects, metric="test_loss")
    m = tables.metric_for("test_loss")
    assert not m.higher_is_better
    pt = tables.paired_table(recs, FACTOR, "ref", [m], list(effects), n_resamples=200)
    assert pt.rows[0].verdict == "better" and pt.rows[0].diff_mean < 0 and pt.rows[0].p_improve > 0.5
    assert math.isnan(pt.rows[0].seeds_needed)  # target_delta is in points: percentage metrics only


def test_target_delta_is_in_points():
    effects = {"ref": 0.0, "b": 0.005}
    recs = clear_effect_records(4, effects, sd=0.004)
    m = tables.metric_for("test_top1")
    pt1 = tables.paired_table(recs, FACTOR, "ref", [m], list(effects), n_resamples=100, target_delta=0.2)
    pt2 = tables.paired_table(recs, FACTOR, "ref", [m], list(effects), n_resamples=100, target_delta=0.4)
    d = [100 * (a.summary["test_top1"] - b.summary["test_top1"]) for a, b in zip(recs[4:], recs[:4])]
    sd = float(np.std(d, ddof=1))
    assert pt1.rows[0].seeds_needed == stats.seeds_needed(0.2, sd) > pt2.rows[0].seeds_needed
    assert "Seeds for Δ = 0.4 pp" in tables.paired_grid(pt2).header


def test_metric_for_unknown_keys():
    assert tables.metric_for("val_f1_macro").unit == "%"
    assert not tables.metric_for("val_loss").higher_is_better
    assert tables.metric_for("flops").scale == 1.0


class FakeTrial:  # the attributes of an optuna FrozenTrial the table reads
    def __init__(self, number, state, value, params):
        self.number, self.value, self.params = number, value, params
        self.state = type("S", (), {"name": state})()


def test_best_trials_and_trials_table():
    trials = [FakeTrial(0, "COMPLETE", 0.5, {"lr": 0.001, "depth": 4}),
              FakeTrial(1, "PRUNED", 0.2, {"lr": 0.01, "depth": 2}),
              FakeTrial(2, "COMPLETE", 0.7, {"lr": 0.003, "depth": 6}),
              FakeTrial(3, "FAIL", None, {"lr": 0.1}),
              FakeTrial(4, "COMPLETE", 0.7, {"lr": 0.002, "depth": 3})]
    rows = tables.trial_rows(trials)
    assert [r.number for r in tables.best_trials(rows, maximize=True)] == [2, 4, 0]
    assert [r.number for r in tables.best_trials(rows, maximize=False, top_k=2)] == [0, 2]
    g = tables.trials_grid(rows, maximize=True, objective="val_top1")
    assert g.header == ["Trial", "depth", "lr", "Val top-1 (%)", "State"]
    assert g.rows[0] == ["2", "6", "0.003", "70.00", "COMPLETE"]
    assert "3 complete" in g.notes[0] and "1 pruned" in g.notes[0] and "1 fail" in g.notes[0]
    parsed = list(csv.DictReader(io.StringIO(tables.trials_csv(rows))))
    assert [p["trial"] for p in parsed] == ["0", "1", "2", "3", "4"]
    assert parsed[3]["value"] == "" and parsed[3]["param_depth"] == ""


def test_two_seed_cells_are_cut_to_the_metric_range_and_flagged():
    """At n = 2 a t interval spans +-12.7 standard errors: the table cuts it to the metric's valid range
    (0-100% for accuracies, >= 0 for losses and times), marks the cell and says why."""
    recs = [make_run(FACTOR, lab, i, s, acc) for i, (lab, acc) in enumerate([("softmax", 0.2), ("zscore", 0.6)])
            for s in (0, 1)]
    for r, acc in zip(recs, (0.02, 0.50, 0.60, 0.99)):  # far apart: the raw intervals leave [0, 100]
        r.summary["test_top1"] = acc
    t = tables.factor_table(recs, FACTOR, ["softmax", "zscore"])
    raw = stats.mean_ci(values(recs, "softmax", "test_top1", 100.0))
    assert raw.lo < 0 and t.cells[("test_top1", "softmax")].lo == 0.0
    assert stats.mean_ci(values(recs, "zscore", "test_top1", 100.0)).hi > 100
    assert t.cells[("test_top1", "zscore")].hi == 100.0
    for m in t.metrics:
        for lab in ("softmax", "zscore"):
            c = t.cells[(m.key, lab)]
            assert m.valid[0] <= c.lo <= c.hi <= m.valid[1], (m.key, lab, c)
    g = tables.factor_grid(t)
    row = {r[0]: r[1:] for r in g.rows}["Test top-1 (%)"]
    assert all(tables.FEW_SEEDS_MARK in cell for cell in row) and "[0.00, " in row[0] and ", 100.00]" in row[1]
    assert any("too few seeds to bound the mean" in n for n in g.notes) and "valid range" in g.notes[0]


def test_paired_table_marks_a_degenerate_p_improve_and_caps_seeds_needed():
    recs = [make_run(FACTOR, lab, i, s, acc) for i, (lab, acc) in enumerate([("softmax", 0.5), ("zscore", 0.6)])
            for s in (0, 1)]
    for r, acc in zip(recs, (0.50, 0.40, 0.90, 0.60)):  # zscore beats softmax in every run; noisy differences
        r.summary["test_top1"] = acc
    t = tables.paired_table(recs, FACTOR, "softmax", [tables.metric_for("test_top1")])
    (r,) = t.rows
    assert r.p_improve == r.p_improve_lo == r.p_improve_hi == 1.0 and r.seeds_needed > tables.SEEDS_NEEDED_SHOWN
    g = tables.paired_grid(t)
    cells = g.rows[0]
    assert "[1.00, 1.00]" not in " ".join(cells) and f"1.00{tables.DEGENERATE_MARK}" in cells
    assert cells[-1] == f"> {tables.SEEDS_NEEDED_SHOWN}"
    assert any(n.startswith(tables.DEGENERATE_MARK) for n in g.notes)
    assert -100 <= r.lo <= r.hi <= 100
