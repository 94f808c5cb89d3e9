"""Declared comparisons (`compare:`) and the equivalence margin: spec keys, the family, the report's
table and adaptive seeding all use exactly the declared set."""
from __future__ import annotations

import math

import numpy as np
import pytest

from test_report_data import FACTOR
from test_report_tables import clear_effect_records
from test_study_adaptive import SPEC, fake_trainer, seeds_by_level
from vitlab import stats
from vitlab.errors import UserError
from vitlab.report import tables
from vitlab.study import compare, open_index, run_study
from vitlab.study.spec import load_spec, resolve, spec_to_dict

LEVELS = ["C1", "C2", "C3", "C4", "C5"]


def spec(**extra) -> dict:
    return {"name": "cmp", "base": {"device": "cpu", "data": {"name": "synthetic"}, "model": {"name": "mobilevit_xxs"},
                                    "train": {"epochs": 1}},
            "vary": {"model.level": list(LEVELS)}, "reference": {"model.level": "C3"}, "metrics": ["test_top1"], **extra}


def test_default_family_is_each_level_vs_the_reference():
    fam = compare.declared(resolve(load_spec(spec())))["model.level"]
    assert [c.label for c in fam] == ["C1 − C3", "C2 − C3", "C4 − C3", "C5 − C3"]


def test_declared_family_pairs_trend_and_reference():
    s = resolve(load_spec(spec(compare={"model.level": {"pairs": [["C5", "C1"], ["C5", "C1"]], "trend": True}},
                               equivalence_margin=0.5)))
    fam = compare.declared(s)["model.level"]
    assert [c.label for c in fam] == ["C5 − C1", "trend C1 → C5 (per level step)"]  # a repeated pair counts once
    assert s.equivalence_margin == 0.5
    d = spec_to_dict(s)
    assert d["compare"] == {"model.level": {"reference": False, "pairs": [["C5", "C1"], ["C5", "C1"]], "trend": True}}
    again = resolve(load_spec(d))
    assert compare.declared(again) == compare.declared(s)  # spec.yaml reads back to the same family
    both = compare.declared(resolve(load_spec(spec(compare={"model.level": {"reference": True, "pairs": [["C5", "C1"]]}}))))
    assert len(both["model.level"]) == 5
    assert [compare.Comparison.from_meta(c.to_meta()) for c in fam] == fam


def test_a_spec_without_the_keys_serializes_as_before():
    d = spec_to_dict(resolve(load_spec(spec())))
    assert "compare" not in d and "equivalence_margin" not in d  # committed studies' spec.yaml unchanged


@pytest.mark.parametrize("extra, message", [
    ({"compare": {"model.levle": {"trend": True}}}, "compare.model.levle: is not a factor"),
    ({"compare": {"model.level": {"pairs": [["C5", "C9"]]}}}, "compare.model.level.pairs[0]: C9 is not one of its levels"),
    ({"compare": {"model.level": {"pairs": [["C5", "C5"]]}}}, "pairs[0]: must be two different levels"),
    ({"compare": {"model.level": {"pairs": [["C5"]]}}}, "pairs[0]: must be two different levels"),
    ({"compare": {"model.level": {}}}, "declares nothing"),
    ({"compare": {"model.level": {"trend": True, "trends": 1}}}, "trends"),
    ({"equivalence_margin": 0}, "equivalence_margin: must be a finite number > 0"),
    ({"equivalence_margin": "half"}, "equivalence_margin"),
])
def test_bad_compare_and_margin_are_one_line_errors(extra, message):
    with pytest.raises(UserError, match=None) as e:
        load_spec(spec(**extra))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_profile_drops_pairs_of_levels_it_does_not_run():
    s = spec(compare={"model.level": {"pairs": [["C5", "C1"], ["C2", "C1"]]}},
             profiles={"small": {"vary": {"model.level": ["C1", "C2", "C3"]}}})
    fam = compare.declared(resolve(load_spec(s), "small"))["model.level"]
    assert [c.label for c in fam] == ["C2 − C1"]
    s["compare"] = {"model.level": {"pairs": [["C5", "C1"]]}}  # none left: the default family
    fam = compare.declared(resolve(load_spec(s), "small"))["model.level"]
    assert [c.label for c in fam] == ["C1 − C3", "C2 − C3"]


def test_report_table_uses_exactly_the_declared_family_with_tost():
    effects = {"C1": 0.0, "C2": 0.0, "C3": -0.02, "C4": -0.03, "C5": -0.0805}
    recs = clear_effect_records(4, effects, rng_seed=4)
    m = tables.metric_for("test_top1")
    fam = [compare.Comparison(compare.PAIR, "C5", "C1"), compare.Comparison(compare.PAIR, "C2", "C1"),
           compare.Comparison(compare.TREND, levels=tuple(effects))]
    pt = tables.paired_table(recs, FACTOR, "C3", [m], list(effects), comparisons=fam, margins={"test_top1": 5.0},
                             n_resamples=200)
    assert [r.level for r in pt.rows] == [c.label for c in fam]
    vals = {lab: {r.seed: 100 * r.summary["test_top1"] for r in recs if r.level_label == lab} for lab in effects}
    diffs = [np.array([vals["C5"][s] - vals["C1"][s] for s in range(4)]),
             np.array([vals["C2"][s] - vals["C1"][s] for s in range(4)]),
             stats.trend_slopes(np.array([[vals[lab][s] for lab in effects] for s in range(4)]))]
    want = stats.decide_family(diffs, [5.0, 5.0, None])  # a trend's slope gets no equivalence test
    for r, w in zip(pt.rows, want):
        assert (r.p_t, r.p_adjusted, r.p_tost_adjusted) == pytest.approx((w.p, w.p_holm, w.p_tost_holm), nan_ok=True)
        assert r.decision == w.verdict
    assert pt.rows[0].decision == "difference" and pt.rows[0].diff_mean == pytest.approx(-8.05, abs=0.3)
    assert pt.rows[1].decision == "equivalent"  # no true difference, precisely measured: inside ±5
    assert pt.rows[2].decision == "difference" and pt.rows[2].diff_mean < 0
    assert math.isnan(pt.rows[2].p_tost) and math.isnan(pt.rows[2].margin)
    assert [pt.rows[0].p_tost_adjusted, pt.rows[1].p_tost_adjusted] == pytest.approx(
        stats.holm_adjust([pt.rows[0].p_tost, pt.rows[1].p_tost]).tolist())  # Holm over the two pairs only
    g = tables.paired_grid(pt)
    assert g.title.endswith("declared comparisons") and "p TOST Holm" in g.header
    cells = {row[0]: row for row in g.rows}
    assert cells["C2 − C1"][7] == "equivalent within ±5 pp"
    assert cells["trend C1 → C5 (per level step)"][7] == "difference: falling"
    assert cells["C5 − C1"][7] == "difference: worse"
    assert any("TOST" in n for n in g.notes)
    # the family is the declared set: adding comparisons changes the adjustment, ignoring others keeps it
    one = tables.paired_table(recs, FACTOR, "C3", [m], list(effects), comparisons=fam[:1], n_resamples=200)
    assert one.rows[0].p_adjusted == pytest.approx(one.rows[0].p_t)


def test_adaptive_seeding_stops_on_equivalence_and_ignores_undeclared_levels(tmp_path):
    """zscore vs softmax, declared with a ±10 pp margin: the 3-point seed noise makes it undecided
    for a difference but TOST decides 'equivalent'; cosine is in no declared comparison."""
    s = dict(SPEC, compare={"model.attn_norm": {"pairs": [["zscore", "softmax"]]}}, equivalence_margin=10.0)
    out = tmp_path / "study"
    result = run_study(s, out, workers=1, progress=False, trainer=fake_trainer)
    assert result.ok, result.errors
    meta = open_index(out).meta()
    got = meta["adaptive"]["model.attn_norm"]
    assert got["zscore"]["stopped"].split(": ", 1)[1].startswith("equivalent at n = ")
    assert got["cosine"] == {"seeds": 3, "stopped": "in no declared comparison"}
    n = got["zscore"]["seeds"]
    assert seeds_by_level(out)["zscore"] == list(range(n)) == seeds_by_level(out)["softmax"] and n < 9
    assert meta["compare"] == {"model.attn_norm": [{"kind": "pair", "level": "zscore", "other": "softmax"}]}
    assert meta["equivalence_margin"] == 10.0 and not math.isnan(meta["adaptive_settings"]["equivalence_margin"])
