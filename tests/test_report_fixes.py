"""What a reader of the findings reports found, fixed: the subtitle names the data the runs used,
one-epoch curves are drawn, empty rows and exploding ratios are explained, and columns say what
they measure."""
from __future__ import annotations

import math

import numpy as np

from test_report_data import FACTOR, make_run, study_meta
from vitlab.analysis import robustness
from vitlab.analysis.corruptions import CORRUPTIONS
from vitlab.report import build_report, render_html, tables
from vitlab.report.analysis_sections import _weak_reference_note
from vitlab.report.figures import curves_figure
from vitlab.report.html import subtitle


def one_epoch_records(dataset: str = "fashion_mnist"):
    return [make_run(FACTOR, lab, i, s, acc, epochs=1, dataset=dataset)
            for i, (lab, acc) in enumerate([("softmax", 0.7), ("zscore", 0.65)]) for s in range(3)]


def test_subtitle_names_the_data_the_runs_used():
    spec_text = "MobileViT-XXS on CIFAR-100, number of attention heads"
    assert subtitle(spec_text, "fashion_mnist") == "MobileViT-XXS on Fashion-MNIST, number of attention heads"
    assert subtitle(spec_text, "cifar100") == spec_text
    assert subtitle("ViT on CIFAR-10", "cifar100") == "ViT on CIFAR-100"  # CIFAR-10 is not read inside CIFAR-100
    assert subtitle("a study", "fashion_mnist") == "a study — runs on Fashion-MNIST"
    assert subtitle(spec_text, "cifar10, fashion_mnist").endswith("— runs on CIFAR-10, Fashion-MNIST")
    assert subtitle(spec_text, "unknown") == spec_text


def test_report_subtitle_and_one_epoch_tables(tmp_path):
    meta = study_meta(description="ViT on CIFAR-100, attention-score normalization")
    meta["factors"] = {FACTOR: ["softmax", "zscore"]}
    rep = build_report(meta, one_epoch_records(), tmp_path / "report")
    text = render_html(rep)
    assert "ViT on Fashion-MNIST, attention-score normalization" in text and "on CIFAR-100" not in text
    g = tables.factor_grid(rep.sections[0].table)
    titles = [row[0] for row in g.rows]
    assert not any(t.startswith("Std of val top-1") for t in titles)  # not a row of "—"
    assert any(n.startswith("Left out: Std of val top-1") and "2 logged epochs" in n for n in g.notes)
    assert "Training time (wall clock) (min)" in titles and tables.WALL_CLOCK_NOTE in g.notes


def test_one_epoch_curves_are_drawn_as_markers():
    fig = curves_figure(one_epoch_records(), FACTOR, ["softmax", "zscore"])
    for ax in fig.axes[:4]:
        points = [ln for ln in ax.get_lines() if ln.get_marker() == "o" and len(ln.get_xdata()) == 1]
        assert len(points) == 2, ax.get_ylabel()  # one visible point per level, not an empty line
    many = [make_run(FACTOR, "softmax", 0, s, 0.7, epochs=4) for s in range(2)]
    (line,) = curves_figure(many, FACTOR, ["softmax"]).axes[0].get_lines()
    assert line.get_marker() == "o" and len(line.get_xdata()) == 4


def test_degenerate_p_improve_is_marked_not_printed_as_an_interval():
    recs = one_epoch_records()
    for r in recs:  # zscore loses every run to softmax: P(improve) = 0 at every resample
        r.summary["test_top1"] = (0.9 if r.level_label == "softmax" else 0.5) + 0.01 * r.seed
    g = tables.paired_grid(tables.paired_table(recs, FACTOR, "softmax", [tables.metric_for("test_top1")]))
    cells = " ".join(g.rows[0])
    assert "[0.00, 0.00]" not in cells and f"0.00{tables.DEGENERATE_MARK}" in cells


def profile(clean: float, drop: dict[str, float]) -> dict:
    """A robustness error profile whose corruption errors exceed the clean error by drop[name] per severity."""
    return {"errors": {n: [1 - clean + drop.get(n, 0.1)] * 5 for n in CORRUPTIONS}, "clean_error": 1 - clean}


def test_relative_mce_leaves_out_corruptions_that_barely_hurt_the_reference():
    ref = profile(0.8, {"brightness": 0.002, "contrast": -0.01})  # 1 and -5 points summed: the ratio is noise
    section = {"clean_top1": 0.78, "corruptions": {n: [1 - e for e in errs] for n, errs in
                                                   profile(0.78, {"brightness": 0.05, "contrast": 0.05})["errors"].items()}}
    assert math.isnan(robustness.relative_corruption_error([0.3] * 5, 0.2, ref["errors"]["brightness"], 0.2))
    weak = robustness.weak_reference_corruptions(ref)
    assert weak == ["brightness", "contrast"]
    rel = robustness.mce(section, ref, relative=True)
    assert math.isfinite(rel) and 0.5 < rel < 2.0  # without the two, the ratio stays near 1 (it was ±hundreds)
    note = _weak_reference_note(ref, "softmax")
    assert "leaves out 2 corruptions (brightness, contrast)" in note and "softmax" in note
    assert _weak_reference_note(profile(0.8, {}), "softmax") == ""
    faithful = [n for n, c in CORRUPTIONS.items() if c.faithful]
    assert np.isclose(robustness.mce(section, profile(0.8, {})), np.mean(
        [sum(section_err) / sum(ref_err) for section_err, ref_err in
         ((profile(0.78, {"brightness": 0.05, "contrast": 0.05})["errors"][n], profile(0.8, {})["errors"][n])
          for n in faithful)]))
