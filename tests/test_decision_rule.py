"""The one decision rule (stats.DECISION_RULE): paired t-test + Holm over the declared comparisons,
TOST for equivalence, a trend as per-seed slopes; each against a naive reference, and TOST's error
rate and power measured by simulation at the seed counts studies use (3-10)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from vitlab import stats

from test_report_stats import naive_holm

SIM_REPS = 4000
"""Simulated studies per seed count (vectorized: well under a second each)."""


def naive_t(d):
    n = len(d)
    m = sum(d) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / (n - 1))
    t = m / (sd / math.sqrt(n))
    return t, 2 * (1 - st.t.cdf(abs(t), n - 1))


def naive_tost(d, margin):
    """Two one-sided t-tests written out: H0a: mu <= -margin, H0b: mu >= +margin."""
    n = len(d)
    m = sum(d) / n
    se = math.sqrt(sum((x - m) ** 2 for x in d) / (n - 1)) / math.sqrt(n)
    p_a = 1 - st.t.cdf((m + margin) / se, n - 1)
    p_b = st.t.cdf((m - margin) / se, n - 1)
    return max(p_a, p_b)


def test_paired_t_matches_naive_and_scipy():
    rng = np.random.default_rng(0)
    for n in range(2, 11):
        d = list(rng.normal(0.3, 1.0, n))
        t, p = naive_t(d)
        got = stats.paired_t_test(d)
        assert (got.t, got.df, got.p) == pytest.approx((t, n - 1, p))
        assert got.p == pytest.approx(st.ttest_1samp(d, 0.0).pvalue)
    assert math.isnan(stats.paired_t_test([0.4]).p)
    assert stats.paired_t_test([0.0, 0.0, 0.0]).p == 1.0
    assert stats.paired_t_test([0.3, 0.3, 0.3]) == stats.TTest(math.inf, 2, 0.0)  # every seed moved alike


def test_tost_matches_naive_and_the_interval_form():
    rng = np.random.default_rng(1)
    for _ in range(300):
        n = int(rng.integers(2, 11))
        d = rng.normal(rng.uniform(-1, 1), rng.uniform(0.1, 1.5), n)
        margin = float(rng.uniform(0.2, 2.0))
        p = stats.tost_pvalue(d, margin)
        assert p == pytest.approx(naive_tost(list(d), margin), abs=1e-12)
        # p <= alpha exactly when the 90% t-interval lies inside (-margin, margin)
        lo, hi = stats.t_bounds(d, 0.90)
        assert (p <= 0.05) == bool(lo > -margin and hi < margin) == bool(stats.tost_bounds(d, margin))
    assert stats.tost_pvalue([0.1, 0.1], 0.5) == 0.0 and stats.tost_pvalue([0.6, 0.6], 0.5) == 1.0
    assert math.isnan(stats.tost_pvalue([0.1], 0.5))
    with pytest.raises(ValueError, match="margin"):
        stats.tost_pvalue([0.1, 0.2], 0.0)


def test_trend_slopes_are_least_squares_slopes():
    rng = np.random.default_rng(2)
    v = rng.normal(0, 1, (6, 5))
    want = [np.polyfit(np.arange(5), row, 1)[0] for row in v]
    assert stats.trend_slopes(v) == pytest.approx(want)
    assert stats.trend_slopes(np.array([[1.0, 3.0]])) == pytest.approx([2.0])
    with pytest.raises(ValueError, match="2 levels"):
        stats.trend_slopes(np.zeros((3, 1)))


def test_family_is_exactly_the_declared_set_holm_on_both_tests():
    rng = np.random.default_rng(3)
    family = [list(rng.normal(mu, 0.4, 5)) for mu in (1.5, 0.0, 0.05, -0.8)]
    margin = 0.9
    got = stats.decide_family(family, margin)
    p_t = [naive_t(d)[1] for d in family]
    p_e = [naive_tost(d, margin) for d in family]
    assert [g.p_holm for g in got] == pytest.approx(naive_holm(p_t))
    assert [g.p_tost_holm for g in got] == pytest.approx(naive_holm(p_e))
    for g, ph, pe in zip(got, naive_holm(p_t), naive_holm(p_e)):
        want = "difference" if ph <= 0.05 else "equivalent" if pe <= 0.05 else "undecided"
        assert g.verdict == want
    # the adjustment depends on the family's size only: declaring one comparison fewer changes it
    smaller = stats.decide_family(family[:2], margin)
    assert smaller[0].p_holm == pytest.approx(naive_holm(p_t[:2])[0]) and smaller[0].p_holm <= got[0].p_holm
    # no margin: equivalence is never a verdict
    assert {g.verdict for g in stats.decide_family(family, None)} <= {"difference", "undecided"}
    # a margin per comparison: the TOST family is the comparisons that have one
    per = stats.decide_family(family, [margin, None, margin, None])
    assert math.isnan(per[1].p_tost) and math.isnan(per[3].p_tost_holm)
    assert [per[0].p_tost_holm, per[2].p_tost_holm] == pytest.approx(naive_holm([p_e[0], p_e[2]]))


@pytest.mark.parametrize("n", [3, 5, 10])
def test_tost_error_rate_at_the_margin_is_at_most_alpha(n):
    """Simulated studies whose true difference sits exactly on the margin: TOST calls them
    'equivalent' at most alpha of the time (its size), at every seed count used."""
    rng = np.random.default_rng(10 + n)
    margin, sd = 0.5, 0.6
    for mu in (margin, -margin):
        d = rng.normal(mu, sd, (SIM_REPS, n))
        rate = float(np.mean(stats.tost_bounds(d, margin)))
        assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / SIM_REPS)
    # and the 90% interval it uses covers the true mean 90% of the time
    d = rng.normal(0.2, sd, (SIM_REPS, n))
    lo, hi = stats.t_bounds(d, 0.90)
    assert np.mean((lo <= 0.2) & (0.2 <= hi)) == pytest.approx(0.90, abs=0.015)


@pytest.mark.parametrize("n", [3, 6, 10])
def test_tost_power_formula_against_simulation(n):
    """At a true difference of 0 TOST decides 'equivalent' about as often as `tost_power` says, so
    `tost_seeds_needed` plans seeds that work."""
    rng = np.random.default_rng(20 + n)
    sd = 0.5
    for margin in (0.6, 1.0):
        d = rng.normal(0.0, sd, (SIM_REPS, n))
        sim = float(np.mean(stats.tost_bounds(d, margin)))
        assert sim == pytest.approx(stats.tost_power(margin, sd, n), abs=0.05)
    need = int(stats.tost_seeds_needed(0.5, 0.5))
    assert stats.tost_power(0.5, 0.5, need) >= 0.8 > stats.tost_power(0.5, 0.5, need - 1)
    d = rng.normal(0.0, 0.5, (SIM_REPS, need))
    assert np.mean(stats.tost_bounds(d, 0.5)) >= 0.75


@pytest.mark.parametrize("n", [3, 5, 10])
def test_t_test_size_and_holm_familywise_error(n):
    """Under no true difference the paired t-test rejects alpha of the time, and Holm over a family
    of 4 keeps the chance of any false 'difference' at most alpha."""
    rng = np.random.default_rng(30 + n)
    d = rng.normal(0.0, 1.0, (SIM_REPS, 4, n))
    t = d.mean(-1) / (d.std(-1, ddof=1) / math.sqrt(n))
    p = 2 * st.t.sf(np.abs(t), n - 1)
    assert np.mean(p[:, 0] <= 0.05) == pytest.approx(0.05, abs=0.012)
    ps = np.sort(p, axis=1)
    holm_any = np.maximum.accumulate(np.minimum(1, (4 - np.arange(4)) * ps), axis=1)[:, 0] <= 0.05
    assert np.mean(holm_any) <= 0.05 + 0.012
    row = stats.decide_family(list(d[0]))
    assert [r.p_holm for r in row] == pytest.approx(naive_holm(list(p[0])))


def test_seeding_decision_uses_the_report_rule():
    clear = [0.5, 0.6, 0.55]
    ok, why = stats.seeding_decision(clear, 1.0)
    assert ok and why.startswith("difference at n = 3")
    ok, why = stats.seeding_decision([0.1, -0.1, 0.05, 0.0], 1.0, margin=0.5)
    assert ok and why.startswith("equivalent at n = 4")
    ok, why = stats.seeding_decision([1.0, -1.5, 0.2], 1.0, margin=0.5)
    assert not ok and "TOST" in why
    rng = np.random.default_rng(8)
    for _ in range(200):
        n = int(rng.integers(2, 11))
        d = list(rng.normal(rng.choice([0.0, 0.4, 2.0]), rng.choice([0.2, 1.0]), n))
        a = 0.05 / 3
        want = naive_t(d)[1] <= a or naive_tost(d, 0.5) <= a
        assert stats.seeding_decision(d, 1.0, n_comparisons=3, margin=0.5)[0] == want
