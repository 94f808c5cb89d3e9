"""Several datasets in one study (a grid over data.name): per-dataset tables, the aggregate across
datasets (IQM, stratified bootstrap, probability of improvement) and performance profiles."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from test_report_data import make_run, study_records
from vitlab import stats
from vitlab.report import build_report, render_html, tables
from vitlab.report import datasets as ds

DATASETS = {"cifar10": 0.80, "fashion_mnist": 0.90, "cifar100": 0.50}
METHODS = {"softmax": 0.0, "zscore": 0.02, "cosine": -0.01}


def grid_records(seeds=(0, 1, 2), drop=()):
    recs, order = [], 0
    for d, base in DATASETS.items():
        for meth, eff in METHODS.items():
            level = {"data.name": d, "model.attn_norm": meth}
            label = f"name={d}, attn_norm={meth}"
            for s in seeds:
                if (d, meth, s) in drop:
                    continue
                r = make_run("grid", label, order, s, base + eff, dataset=d)
                r.level, r.varied = level, dict(level)
                r.run_id = f"{d}-{meth}-{s}"
                recs.append(r)
            order += 1
    return recs


def meta():
    labels = [f"name={d}, attn_norm={m}" for d in DATASETS for m in METHODS]
    return {"name": "multi", "kind": "study", "factors": {"grid": labels},
            "reference": {"grid": "name=cifar10, attn_norm=softmax"}, "metrics": ["test_top1"], "seeds": [0, 1, 2]}


def test_split_by_dataset():
    split = ds.split_by_dataset(grid_records(), "grid", "name=cifar10, attn_norm=softmax")
    assert split.datasets == list(DATASETS) and split.methods == ["attn_norm=softmax", "attn_norm=zscore",
                                                                  "attn_norm=cosine"]
    assert split.reference == "attn_norm=softmax"
    assert {r.level_label for r in split.records["cifar100"]} == set(split.methods)
    assert ds.split_by_dataset(study_records(), "model.attn_norm") is None  # one dataset


def test_aggregate_matches_stats():
    recs = grid_records()
    split = ds.split_by_dataset(recs, "grid", "name=cifar10, attn_norm=softmax")
    m = tables.metric_for("test_top1")
    rows = ds.aggregate_rows(split, [m], n_resamples=400, seed=1)
    by = {r.method: r for r in rows}
    z = [[100 * r.summary["test_top1"] for r in recs if r.varied == {"data.name": d, "model.attn_norm": "zscore"}]
         for d in DATASETS]
    ref = [[100 * r.summary["test_top1"] for r in recs if r.varied == {"data.name": d, "model.attn_norm": "softmax"}]
           for d in DATASETS]
    row = by["attn_norm=zscore"]
    assert (row.n_datasets, row.n_runs) == (3, 9)
    assert row.iqm == pytest.approx(stats.interquartile_mean(z))
    assert (row.iqm, row.lo, row.hi) == pytest.approx(tuple(stats.stratified_ci(z, n_resamples=400, seed=1)))
    assert (row.p_improve, row.p_improve_lo, row.p_improve_hi) == pytest.approx(
        tuple(stats.probability_of_improvement_ci(z, ref, n_resamples=400, seed=1)))
    assert row.p_improve > 0.5 and by["attn_norm=cosine"].p_improve < 0.5
    assert np.isnan(by["attn_norm=softmax"].p_improve)  # the reference itself


def test_a_method_missing_on_a_dataset_has_no_aggregate():
    recs = grid_records(drop={("cifar100", "cosine", s) for s in (0, 1, 2)})
    split = ds.split_by_dataset(recs, "grid", "name=cifar10, attn_norm=softmax")
    rows = ds.aggregate_rows(split, [tables.metric_for("test_top1")], n_resamples=100)
    cos = next(r for r in rows if r.method == "attn_norm=cosine")
    assert cos.n_datasets == 2 and np.isnan(cos.iqm)


def test_report_with_several_datasets(tmp_path):
    rep = build_report(meta(), grid_records(), tmp_path / "report")
    tdir, fdir = tmp_path / "report" / "tables", tmp_path / "report" / "figures"
    for d in DATASETS:
        assert (tdir / f"grid__{d}.csv").is_file() and (tdir / f"grid__{d}_paired.csv").is_file()
    assert not (tdir / "grid_paired.csv").exists()  # a reference cell on one dataset compares nothing else
    paired = list(csv.DictReader(io.StringIO((tdir / "grid__cifar100_paired.csv").read_text())))
    assert {p["reference"] for p in paired} == {"attn_norm=softmax"}
    assert {p["level"] for p in paired} == {"attn_norm=zscore", "attn_norm=cosine"}
    agg = list(csv.DictReader(io.StringIO((tdir / "grid_datasets.csv").read_text())))
    assert {a["method"] for a in agg} == {"attn_norm=softmax", "attn_norm=zscore", "attn_norm=cosine"}
    assert {a["ci_method"] for a in agg} == {"stratified bootstrap"}
    assert (fdir / "grid_profiles.png").read_bytes()[:4] == b"\x89PNG"
    text = render_html(rep)
    assert "Across datasets" in text and "Dataset: fashion_mnist" in text and "interquartile mean" in text
    assert "Performance profile" in text
