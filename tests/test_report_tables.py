"""Seed-style tables: numbers equal the stats of the runs' values, formats parse, n is reported."""
from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from test_report_data import FACTOR, SEEDS, make_run, study_records
from vitlab.report import stats, tables


def values(records, label, key, scale=1.0):
    return [r.summary[key] * scale for r in records
            if r.level_label == label and r.status == "completed" and math.isfinite(r.summary[key])]


def test_factor_table_cells_are_bootstrap_of_seed_values():
    recs = study_records()
    t = tables.factor_table(recs, FACTOR, ["softmax", "zscore", "cosine"], n_resamples=500, seed=3)
    for lab in ("softmax", "zscore", "cosine"):
        c = t.cells[("test_top1", lab)]
        want = stats.bootstrap_ci(values(recs, lab, "test_top1", 100.0), n_resamples=500, seed=3)
        assert (c.mean, c.lo, c.hi) == pytest.approx(tuple(want))
        assert c.mean == pytest.approx(100 * np.mean([r.summary["test_top1"] for r in recs if r.level_label == lab]))
        assert (c.n, c.expected) == (3, 3)
        minutes = t.cells[("train_minutes", lab)]
        assert minutes.mean == pytest.approx(np.mean(values(recs, lab, "train_time_s")) / 60)
        order = ["softmax", "zscore", "cosine"].index(lab)
        assert t.cells[("params", lab)].mean == pytest.approx(recs[0].summary["params"] / 1e6 * (1 + order))


def test_stability_rows_use_the_validation_curves():
    recs = study_records()
    t = tables.factor_table(recs, FACTOR, ["softmax"], n_resamples=200)
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
    t = tables.factor_table(recs, FACTOR, ["softmax", "zscore", "cosine", "sigmoid"], seeds=SEEDS, n_resamples=200)
    runs = {lv.label: lv.text() for lv in t.levels}
    assert runs == {"softmax": "2/3 (1 running)", "zscore": "2/3 (1 diverged)",
                    "cosine": "1/3 (1 failed, 1 missing)", "sigmoid": "0/3 (3 missing)"}
    assert t.cells[("test_top1", "cosine")].n == 1
    assert t.cells[("test_top1", "sigmoid")].n == 0
    grid = tables.factor_grid(t)
    row = {r[0]: r[1:] for r in grid.rows}["Test top-1 (%)"]
    assert row[0].endswith("(n=2/3)") and "[" in row[0]
    assert row[2].endswith("(no CI) (n=1/3)")
    assert row[3] == tables.MISSING


def test_cell_text_formats():
    assert tables.cell_text(tables.Cell(3, 3, 71.234, 70.5, 72.0), 2) == "71.23 [70.50, 72.00]"
    assert tables.cell_text(tables.Cell(3, 3, 1.5, 1.5, 1.5), 2) == "1.50"  # all seeds equal
    assert tables.cell_text(tables.Cell(1, 3, 71.0, math.nan, math.nan), 1) == "71.0 (no CI) (n=1/3)"
    assert tables.cell_text(tables.Cell(0, 3, math.nan, math.nan, math.nan), 2) == tables.MISSING


def test_markdown_csv_latex_are_consistent():
    recs = study_records(statuses={("cosine", 2): "failed"})
    t = tables.factor_table(recs, FACTOR, ["softmax", "zscore", "cosine"], n_resamples=200)
    g = tables.factor_grid(t)
    md = tables.to_markdown(g).splitlines()
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
    assert (row["n"], row["n_expected"], row["unit"]) == ("2", "3", "%")

    tex = tables.to_latex(g)
    body = [ln for ln in tex.splitlines() if ln.endswith(r"\\")]
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 1
    assert len(body) == 1 + 1 + len(t.metrics) and all(ln.count(" & ") == 3 for ln in body)
    assert r"Test top-1 (\%)" in tex and r"model.attn\_norm" not in body[0]
    for ln in tex.splitlines():  # every % outside comments is escaped
        if not ln.startswith("%"):
            assert "%" not in ln.replace(r"\%", "")


def test_tex_escape():
    assert tables.tex_escape("a_b & 5% #1 Δ {x}") == r"a\_b \& 5\% \#1 $\Delta$ \{x\}"


def test_paired_table_matches_stats_by_seed():
    recs = study_records(statuses={("zscore", 2): "failed"})
    m = tables.metric_for("test_top1")
    pt = tables.paired_table(recs, FACTOR, "softmax", [m, tables.metric_for("test_ece")],
                             ["softmax", "zscore", "cosine"], n_resamples=300, seed=1)
    assert [(r.level, r.metric.key) for r in pt.rows] == [("zscore", "test_top1"), ("zscore", "test_ece"),
                                                          ("cosine", "test_top1"), ("cosine", "test_ece")]
    ref = {r.seed: 100 * r.summary["test_top1"] for r in recs if r.level_label == "softmax"}
    z = {r.seed: 100 * r.summary["test_top1"] for r in recs if r.level_label == "zscore" and r.status == "completed"}
    want = stats.paired_comparison(ref, z, n_resamples=300, seed=1)
    got = pt.rows[0]
    assert got.n == 2 == want["n"]
    assert (got.diff_mean, got.lo, got.hi, got.p_improve) == pytest.approx(
        (want["diff_mean"], want["lo"], want["hi"], want["p_improve"]))
    assert not pt.rows[1].metric.higher_is_better  # ECE: lower is better
    g = tables.paired_grid(pt)
    assert g.header[0] == "Level" and len(g.rows) == 2
    assert g.rows[0][1].startswith("+") or g.rows[0][1].startswith("-")
    assert all(len(r) == len(g.header) for r in g.rows)
    parsed = list(csv.DictReader(io.StringIO(tables.paired_csv(pt))))
    assert parsed[0]["unit"] == "pp" and float(parsed[0]["p_improve"]) == pytest.approx(got.p_improve)


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
