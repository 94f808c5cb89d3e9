"""The report's decomposition of seed variance into sources, on fabricated runs that cross
seed_init x seed_split with known components."""
from __future__ import annotations

import csv
import io
import itertools

import numpy as np
import pytest

from test_report_data import FACTOR, make_run, study_meta, study_records
from vitlab import stats
from vitlab.report import build_report, render_html, tables
from vitlab.report.variance import source_design, variance_table

INIT_SD, SPLIT_SD, NOISE_SD = 0.02, 0.005, 0.001  # fractions: init dominates


def crossed_runs(levels=("softmax", "zscore"), n_init=4, n_split=4, order_follows_seed=False, seed=0):
    rng = np.random.default_rng(seed)
    recs = []
    for order, lab in enumerate(levels):
        a = rng.normal(0, INIT_SD, n_init)
        b = rng.normal(0, SPLIT_SD, n_split)
        for k, (i, j) in enumerate(itertools.product(range(n_init), range(n_split))):
            r = make_run(FACTOR, lab, order, k, 0.7)
            r.config.update(seed=k if order_follows_seed else 0, seed_init=i, seed_split=j, seed_order=None)
            r.summary["test_top1"] = 0.7 + 0.01 * order + a[i] + b[j] + rng.normal(0, NOISE_SD)
            r.run_id = f"{lab}-i{i}-s{j}"
            recs.append(r)
    return recs


def test_design_detection():
    recs = crossed_runs(levels=("softmax",), n_init=2, n_split=3)
    design, absorbed = source_design(recs)
    assert not absorbed and list(design) == ["seed_init", "seed_split"]  # seed_order = seed = 0 throughout: not varied
    assert design["seed_split"] == [0, 1, 2, 0, 1, 2]
    # a plain multi-seed study: every source follows `seed`, one confounded source, no decomposition
    plain = [r for r in study_records() if r.level_label == "softmax"]
    assert source_design(plain) == ({}, ["seed_init", "seed_split", "seed_order"])
    assert variance_table(study_records(), FACTOR, [tables.metric_for("test_top1")]) is None


def test_components_match_stats_and_find_the_dominant_source():
    recs = crossed_runs()
    m = tables.metric_for("test_top1")
    vt = variance_table(recs, FACTOR, [m])
    assert [r.level for r in vt.rows] == ["softmax", "zscore"] and not vt.skipped
    row = vt.rows[0]
    mine = [r for r in recs if r.level_label == "softmax"]
    want = stats.variance_components([100 * r.summary["test_top1"] for r in mine],
                                     {"seed_init": [r.config["seed_init"] for r in mine],
                                      "seed_split": [r.config["seed_split"] for r in mine]})
    assert row.components == pytest.approx(want)
    assert row.dominant == "seed_init" and row.n_runs == 16


def test_known_components_are_recovered_on_average():
    """Over many fabricated 6x6 studies the decomposition recovers the components we put in."""
    m = tables.metric_for("test_top1")
    est = [variance_table(crossed_runs(("a",), 6, 6, seed=s), FACTOR, [m]).rows[0].components for s in range(60)]
    mean = {k: np.mean([e[k] for e in est]) for k in est[0]}
    assert mean["seed_init"] == pytest.approx((100 * INIT_SD) ** 2, rel=0.25)
    assert mean["seed_split"] == pytest.approx((100 * SPLIT_SD) ** 2, rel=0.3)
    assert mean["residual"] == pytest.approx((100 * NOISE_SD) ** 2, rel=0.15)


def test_failed_run_leaves_the_level_undecomposed():
    recs = crossed_runs(levels=("softmax",), n_init=3, n_split=3)
    recs[4].status = "failed"
    vt = variance_table(recs, FACTOR, [tables.metric_for("test_top1")])
    assert not vt.rows and "unbalanced" in vt.skipped["softmax"]


def test_report_writes_the_variance_table(tmp_path):
    recs = crossed_runs(order_follows_seed=True)  # seed differs in every run: order is in the residual
    meta = study_meta(factors={FACTOR: ["softmax", "zscore"]}, seeds=list(range(16)))
    rep = build_report(meta, recs, tmp_path / "report")
    text = render_html(rep)
    assert "sources of variance" in text and "Bouthillier" in text
    rows = list(csv.DictReader(io.StringIO((tmp_path / "report" / "tables" / f"{FACTOR}_variance.csv").read_text())))
    sources = {r["source"] for r in rows}
    assert sources == {"seed_init", "seed_split", "residual"}
    top = [r for r in rows if r["level"] == "softmax" and r["metric"] == "test_top1"]
    assert {r["dominant"] for r in top} == {"seed_init"}
    assert sum(float(r["share"]) for r in top) == pytest.approx(1.0)
    md = (tmp_path / "report" / "tables" / f"{FACTOR}_variance.md").read_text()
    assert "init: sd (share)" in md and "order: a different seed in every run" in md
