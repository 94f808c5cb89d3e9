"""vitlab.stats against naive implementations written straight from the formulas (and against
scipy where scipy computes the same thing)."""
from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy import stats as st

from vitlab import stats

B = 2000  # resamples in these tests: enough to compare exactly, fast


# ---------------------------------------------------------------- naive references


def naive_mean_sd(x):
    n = len(x)
    m = sum(x) / n
    return m, math.sqrt(sum((v - m) ** 2 for v in x) / (n - 1))


def naive_t_ci(x, confidence):
    m, sd = naive_mean_sd(x)
    half = st.t.ppf((1 + confidence) / 2, len(x) - 1) * sd / math.sqrt(len(x))
    return m, m - half, m + half


def naive_resample_means(x, n_resamples, seed):
    """Means of bootstrap resamples drawn as one (B, n) integer matrix from default_rng(seed)."""
    idx = np.random.default_rng(seed).integers(0, len(x), (n_resamples, len(x)))
    return [sum(x[i] for i in row) / len(x) for row in idx]


def naive_quantile(values, q):
    """Linear interpolation between order statistics (Hyndman-Fan type 7)."""
    v = sorted(values)
    h = (len(v) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (h - lo) * (v[hi] - v[lo])


def naive_percentile_ci(x, confidence, n_resamples, seed):
    means = naive_resample_means(x, n_resamples, seed)
    a = (1 - confidence) / 2
    return sum(x) / len(x), naive_quantile(means, a), naive_quantile(means, 1 - a)


def naive_bca_ci(x, confidence, n_resamples, seed):
    """Efron's BCa: bias correction z0 from the share of resample means below the estimate (ties
    count half), acceleration a from the jackknife, then adjusted percentiles."""
    n = len(x)
    theta = sum(x) / n
    means = naive_resample_means(x, n_resamples, seed)
    below = sum(1 for m in means if m < theta) + 0.5 * sum(1 for m in means if m == theta)
    nd = NormalDist()
    z0 = nd.inv_cdf(below / len(means))
    jack = [(sum(x) - x[i]) / (n - 1) for i in range(n)]
    jbar = sum(jack) / n
    acc = sum((jbar - j) ** 3 for j in jack) / (6 * sum((jbar - j) ** 2 for j in jack) ** 1.5)
    out = []
    for alpha in ((1 - confidence) / 2, 1 - (1 - confidence) / 2):
        z = nd.inv_cdf(alpha)
        out.append(naive_quantile(means, nd.cdf(z0 + (z0 + z) / (1 - acc * (z0 + z)))))
    return theta, out[0], out[1]


# ---------------------------------------------------------------- intervals of a mean


@pytest.mark.parametrize("n", [2, 3, 5, 9])
def test_t_interval_matches_naive_and_scipy(n):
    rng = np.random.default_rng(n)
    for confidence in (0.9, 0.95):
        x = list(rng.normal(70, 2, n))
        got = stats.mean_ci(x, "t", confidence)
        assert got == pytest.approx(naive_t_ci(x, confidence), abs=1e-10)
        lo, hi = st.t.interval(confidence, n - 1, loc=np.mean(x), scale=st.sem(x))
        assert (got.lo, got.hi) == pytest.approx((lo, hi), abs=1e-10)
        assert stats.t_interval(x, confidence) == got


@pytest.mark.parametrize("n", [2, 3, 5, 9])
def test_percentile_interval_matches_naive_and_scipy(n):
    rng = np.random.default_rng(n)
    for trial in range(3):
        x = list(rng.normal(70, 2, n))
        got = stats.percentile_interval(x, 0.95, n_resamples=B, seed=trial)
        assert got == pytest.approx(naive_percentile_ci(x, 0.95, B, trial), abs=1e-10)
        ref = st.bootstrap((x,), np.mean, n_resamples=B, method="percentile", rng=np.random.default_rng(trial))
        assert (got.lo, got.hi) == pytest.approx(tuple(ref.confidence_interval), abs=1e-10)


def test_bca_interval_matches_naive_and_scipy():
    rng = np.random.default_rng(7)
    for n in (4, 6, 10):
        x = list(rng.exponential(1.0, n))
        got = stats.bca_interval(x, confidence=0.9, n_resamples=B, seed=3)
        assert got == pytest.approx(naive_bca_ci(x, 0.9, B, 3), abs=1e-10)
        ref = st.bootstrap((x,), np.mean, n_resamples=B, confidence_level=0.9, method="BCa",
                           rng=np.random.default_rng(3))
        assert (got.lo, got.hi) == pytest.approx(tuple(ref.confidence_interval), abs=1e-10)


def test_batched_bounds_equal_the_one_sample_function():
    x = np.random.default_rng(1).normal(0, 1, (4, 5))
    for method in stats.CI_METHODS:
        lo, hi = stats.interval_bounds(x[:1], method, 0.95, 300, seed=2)
        one = stats.mean_ci(x[0], method, 0.95, 300, seed=2)
        assert (lo[0], hi[0]) == pytest.approx((one.lo, one.hi), abs=1e-12)


def test_interval_edge_cases():
    for method in stats.CI_METHODS:
        assert all(math.isnan(v) for v in stats.mean_ci([], method))
        m, lo, hi = stats.mean_ci([0.7], method)  # one seed: the mean, but no interval
        assert m == 0.7 and math.isnan(lo) and math.isnan(hi)
        assert stats.mean_ci([0.5, 0.5, 0.5], method) == (0.5, 0.5, 0.5)  # nothing varies
    with pytest.raises(ValueError, match="finite"):
        stats.mean_ci([0.5, math.nan])
    with pytest.raises(ValueError, match="ci method"):
        stats.mean_ci([1.0, 2.0], method="percentile")
    with pytest.raises(ValueError, match="confidence"):
        stats.mean_ci([1.0, 2.0], confidence=95)


def test_interval_note_flags_small_bootstrap_samples():
    assert stats.interval_note("t", 3) == ""
    assert "n = 3 < 10" in stats.interval_note("bootstrap", 3)
    assert "BCa" in stats.interval_note("bca", 9) and stats.interval_note("bca", 10) == ""


COVERAGE_REPS = 20_000  # seeded; the standard error of a 95% coverage is 0.15 points


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_default_interval_has_its_stated_coverage(n):
    """The default (Student-t) 95% interval of a normal mean covers the true mean 94-96% of the
    time at every n, through the same code the report uses (batched)."""
    x = np.random.default_rng(100 + n).normal(5.0, 2.0, (COVERAGE_REPS, n))
    lo, hi = stats.interval_bounds(x, stats.DEFAULT_CI, 0.95)
    assert 0.94 <= np.mean((lo <= 5.0) & (5.0 <= hi)) <= 0.96


@pytest.mark.parametrize("method", ["bootstrap", "bca"])
def test_bootstrap_undercovers_at_small_n_as_the_report_quotes(method):
    """What the report's small-n note warns about, re-measured against the coverage the report quotes
    (stats.MEASURED_COVERAGE, from benchmarks/bench_coverage.py): about 75% at n = 3."""
    x = np.random.default_rng(3).normal(0.0, 1.0, (4000, 3))
    lo, hi = stats.interval_bounds(x, method, 0.95, n_resamples=500)
    assert np.mean((lo <= 0) & (0 <= hi)) == pytest.approx(stats.MEASURED_COVERAGE[method][3], abs=0.025)
    assert stats.MEASURED_COVERAGE[method][3] < 0.8
    assert all(0.94 <= c <= 0.96 for c in stats.MEASURED_COVERAGE["t"].values())


# ---------------------------------------------------------------- paired comparisons


def naive_sign_flip(d):
    obs = abs(sum(d))
    hits = total = 0
    for signs in itertools.product((1, -1), repeat=len(d)):
        total += 1
        hits += abs(sum(s * v for s, v in zip(signs, d))) >= obs - 1e-9 * sum(abs(v) for v in d)
    return hits / total


def test_sign_flip_is_exact_enumeration():
    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 4, 6, 9):
        for _ in range(5):
            d = list(rng.normal(0.3, 1.0, n))
            assert stats.sign_flip_pvalue(d) == pytest.approx(naive_sign_flip(d), abs=1e-12)
    assert stats.sign_flip_pvalue([1.0, 2.0, 3.0]) == 0.25  # all positive: 2 of 8 patterns
    assert stats.sign_flip_pvalue([0.5] * 6) == pytest.approx(2 / 64)
    assert stats.sign_flip_pvalue([0.0, 0.0]) == 1.0
    assert math.isnan(stats.sign_flip_pvalue([]))
    assert stats.sign_patterns(3).shape == (8, 3)
    assert {tuple(r) for r in stats.sign_patterns(3)} == set(itertools.product((1.0, -1.0), repeat=3))


def test_sign_flip_monte_carlo_beyond_exact_limit():
    d = list(np.random.default_rng(9).normal(0.4, 1.0, stats.EXACT_MAX_N + 1))
    exact = stats.sign_flip_pvalue(d, max_exact=len(d))  # full enumeration: 131072 patterns
    mc = stats.sign_flip_pvalue(d, n_permutations=20_000, seed=1)
    assert mc == stats.sign_flip_pvalue(d, n_permutations=20_000, seed=1)  # seeded
    assert abs(mc - exact) < 4 * math.sqrt(exact * (1 - exact) / 20_000) + 1e-4
    assert stats.sign_flip_pvalue([1.0] * 40, n_permutations=999) == pytest.approx(1 / 1000)  # (1+0)/(1+M)


def test_holm_by_hand():
    # sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> running max 0.06)
    got = stats.holm_adjust([0.03, 0.01, 0.04, 0.02])
    assert got.tolist() == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert stats.holm_adjust([0.5, 0.6]).tolist() == pytest.approx([1.0, 1.0])  # capped at 1
    both = stats.holm_adjust([0.01, math.nan, 0.04])  # nan does not count in m = 2
    assert both[0] == pytest.approx(0.02) and math.isnan(both[1]) and both[2] == pytest.approx(0.04)
    assert stats.holm_adjust([]).size == 0


def naive_holm(p):
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def test_holm_matches_naive():
    rng = np.random.default_rng(2)
    for m in range(1, 8):
        p = list(rng.uniform(0, 0.2, m))
        assert stats.holm_adjust(p).tolist() == pytest.approx(naive_holm(p))


def naive_poi(x, y):
    return sum((a > b) + 0.5 * (a == b) for a in x for b in y) / (len(x) * len(y))


def test_probability_of_improvement_matches_naive_and_mann_whitney():
    rng = np.random.default_rng(4)
    for _ in range(10):
        x, y = list(rng.integers(0, 5, 4).astype(float)), list(rng.integers(0, 5, 3).astype(float))  # ties
        assert stats.probability_of_improvement(x, y) == pytest.approx(naive_poi(x, y))
        u = st.mannwhitneyu(x, y, alternative="greater").statistic
        assert stats.probability_of_improvement(x, y) == pytest.approx(u / 12)
    assert stats.probability_of_improvement([1, 2], [1, 2]) == 0.5
    assert math.isnan(stats.probability_of_improvement([], [1.0]))


def naive_poi_ci(xs, ys, confidence, n_resamples, seed):
    """Stratified independent bootstrap, drawn task by task, X then Y, as one (B, n) matrix each."""
    rng = np.random.default_rng(seed)
    per_task = []
    for x, y in zip(xs, ys):
        ix = rng.integers(0, len(x), (n_resamples, len(x)))
        iy = rng.integers(0, len(y), (n_resamples, len(y)))
        per_task.append([naive_poi([x[i] for i in a], [y[j] for j in b]) for a, b in zip(ix, iy)])
    dist = [sum(t[b] for t in per_task) / len(per_task) for b in range(n_resamples)]
    a = (1 - confidence) / 2
    est = sum(naive_poi(x, y) for x, y in zip(xs, ys)) / len(xs)
    return est, naive_quantile(dist, a), naive_quantile(dist, 1 - a)


def test_probability_of_improvement_interval_matches_naive():
    x, y = [71.0, 72.5, 70.2], [70.0, 71.9, 70.4]
    got = stats.probability_of_improvement_ci(x, y, 0.95, 500, seed=3)
    assert got == pytest.approx(naive_poi_ci([x], [y], 0.95, 500, 3))
    xs, ys = [[1.0, 2.0, 3.0], [5.0, 6.0]], [[0.5, 2.5], [5.5, 7.0, 4.0]]  # two tasks, unequal runs
    assert stats.probability_of_improvement_ci(xs, ys, 0.9, 300, seed=1) == pytest.approx(
        naive_poi_ci(xs, ys, 0.9, 300, 1))
    one = stats.probability_of_improvement_ci([1.0], [0.0])
    assert one.mean == 1.0 and math.isnan(one.lo)


def test_verdicts_come_from_the_adjusted_test():
    assert stats.verdict(+0.8, 0.01) == "better"
    assert stats.verdict(-0.8, 0.01) == "worse"
    assert stats.verdict(-0.8, 0.01, higher_is_better=False) == "better"  # a loss went down
    assert stats.verdict(+0.8, 0.25) == "no detectable difference"
    assert stats.verdict(+0.8, math.nan) == "no detectable difference"
    assert stats.verdict_text("no detectable difference", 3) == "no detectable difference at n = 3"
    assert stats.verdict_text("better", 3) == "better"


# ---------------------------------------------------------------- power and seeds


def test_power_against_noncentral_t_and_simulation():
    sd, n = 1.5, 5
    mde = stats.minimum_detectable_difference(sd, n)
    df, crit, nc = n - 1, st.t.ppf(0.975, n - 1), mde * math.sqrt(n) / sd
    assert st.nct.sf(crit, df, nc) + st.nct.cdf(-crit, df, nc) == pytest.approx(0.8, abs=1e-9)
    # an independent check: simulated paired t-tests at that true difference reject 80% of the time
    d = np.random.default_rng(0).normal(mde, sd, (40_000, n))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
    assert np.mean(np.abs(t) > crit) == pytest.approx(0.8, abs=0.01)
    assert stats.minimum_detectable_difference(2 * sd, n) == pytest.approx(2 * mde)  # scales with sd
    assert stats.minimum_detectable_difference(sd, 10) < mde
    assert math.isnan(stats.minimum_detectable_difference(sd, 1))
    assert stats.minimum_detectable_difference(0.0, 3) == 0.0


def test_seeds_needed_is_the_smallest_n_with_enough_power():
    for target, sd in ((1.0, 1.0), (1.0, 0.6), (0.5, 2.0), (3.0, 0.4)):
        n = int(stats.seeds_needed(target, sd))
        power = lambda k: (st.nct.sf(st.t.ppf(0.975, k - 1), k - 1, target * math.sqrt(k) / sd)  # noqa: E731
                           + np.nan_to_num(st.nct.cdf(-st.t.ppf(0.975, k - 1), k - 1, target * math.sqrt(k) / sd)))
        assert power(n) >= 0.8 and (n == 2 or power(n - 1) < 0.8)
    assert stats.seeds_needed(1.0, 1.0) == 10  # Cohen's table: one-sample t, d = 1 -> 10
    assert stats.seeds_needed(1e-6, 1.0, max_n=1000) == math.inf
    assert math.isnan(stats.seeds_needed(1.0, math.nan)) and stats.seeds_needed(1.0, 0.0) == 2


# ---------------------------------------------------------------- the adaptive seeding rule


def test_seeding_decision():
    clear = [0.5, 0.6, 0.55, 0.7, 0.52, 0.61]
    ok, why = stats.seeding_decision(clear, 1.0)
    assert ok and why.startswith("difference at n = 6")
    ok, why = stats.seeding_decision(clear[:3], 1.0)  # the paired t-test decides at 3 seeds
    assert ok and why.startswith("difference at n = 3")
    ok, why = stats.seeding_decision([0.5, 0.1, 0.9], 1.0, n_comparisons=4)  # 0.0125: not yet
    assert not ok
    ok, why = stats.seeding_decision([0.1, -0.2, 0.15, 0.0, 0.05], 1.0)
    assert ok and why.startswith("precise at n = 5")
    ok, why = stats.seeding_decision([1.0, -1.5, 0.2], 1.0)  # wide and contains 0
    assert not ok and "not narrower" in why
    assert stats.seeding_decision([0.5], 1.0)[0] is False
    assert stats.seeding_decision([0.0, 0.0, 0.0], 1.0)[0] is True  # no spread around 0: precise
    assert stats.seeding_decision([0.3, 0.3, 0.3], 1.0)[0] is True  # every seed moved alike: t rejects
    with pytest.raises(ValueError, match="target_delta"):
        stats.seeding_decision(clear, 0.0)
    with pytest.raises(ValueError, match="finite"):
        stats.seeding_decision([0.1, math.nan], 1.0)


def test_seeding_decision_matches_its_definition():
    rng = np.random.default_rng(8)
    for _ in range(200):
        n = int(rng.integers(2, 12))
        d = list(rng.normal(rng.choice([0.0, 0.4, 2.0]), rng.choice([0.2, 1.0]), n))
        m, lo, hi = naive_t_ci(d, 0.95)
        p = st.ttest_1samp(d, 0.0).pvalue
        want = p <= 0.05 or (lo <= 0 <= hi and hi - lo < 1.0)
        assert stats.seeding_decision(d, 1.0)[0] == want


# ---------------------------------------------------------------- variance components


def naive_components(y, sources):
    """Two crossed random factors with r replicates per cell, from textbook sums of squares."""
    names = list(sources)
    n = len(y)
    grand = sum(y) / n
    ss, df = {}, {}
    for name in names:
        levels = sorted(set(sources[name]))
        groups = {lv: [y[i] for i in range(n) if sources[name][i] == lv] for lv in levels}
        ss[name] = sum(len(g) * (sum(g) / len(g) - grand) ** 2 for g in groups.values())
        df[name] = len(levels) - 1
    ss_e = sum((v - grand) ** 2 for v in y) - sum(ss.values())
    ms_e = ss_e / (n - 1 - sum(df.values()))
    out = {name: max(0.0, (ss[name] / df[name] - ms_e) / (n / (df[name] + 1))) for name in names}
    out["residual"] = ms_e
    return out


def crossed(levels: dict, reps: int = 1):
    keys = list(levels)
    rows = [combo for combo in itertools.product(*(range(levels[k]) for k in keys)) for _ in range(reps)]
    return {k: [r[i] for r in rows] for i, k in enumerate(keys)}


def test_variance_components_match_naive():
    rng = np.random.default_rng(0)
    src = crossed({"init": 3, "split": 4}, reps=2)
    y = list(rng.normal(0, 1, len(src["init"])))
    assert stats.variance_components(y, src) == pytest.approx(naive_components(y, src))
    src3 = crossed({"init": 3, "split": 2, "order": 2})
    y3 = list(rng.normal(0, 1, 12))
    assert stats.variance_components(y3, src3) == pytest.approx(naive_components(y3, src3))


def test_variance_components_recover_known_components():
    """init sd 2, split sd 1, residual sd 0.5: averaged over 300 simulated 5x5 studies the ANOVA
    estimates are within a few percent of the truth (the estimators are unbiased)."""
    rng = np.random.default_rng(1)
    src = crossed({"init": 5, "split": 5})
    i, s = np.array(src["init"]), np.array(src["split"])
    est = []
    for _ in range(300):
        y = 70 + rng.normal(0, 2.0, 5)[i] + rng.normal(0, 1.0, 5)[s] + rng.normal(0, 0.5, 25)
        est.append(stats.variance_components(y, src))
    mean = {k: np.mean([e[k] for e in est]) for k in est[0]}
    assert mean["init"] == pytest.approx(4.0, rel=0.12)
    assert mean["split"] == pytest.approx(1.0, rel=0.15)
    assert mean["residual"] == pytest.approx(0.25, rel=0.05)


def test_variance_components_refuse_bad_designs():
    with pytest.raises(ValueError, match="unbalanced"):
        stats.variance_components([1.0, 2.0, 3.0], {"init": [0, 0, 1], "split": [0, 1, 0]})
    with pytest.raises(ValueError, match="residual"):
        stats.variance_components([1.0, 2.0, 3.0], {"init": [0, 1, 2]})
    with pytest.raises(ValueError, match="single level"):
        stats.variance_components([1.0, 2.0], {"init": [0, 0], "split": [0, 1]})


# ---------------------------------------------------------------- aggregates across datasets


def naive_iqm(values):
    v = sorted(values)
    k = int(0.25 * len(v))  # scipy trims floor(0.25 n) from each end
    mid = v[k:len(v) - k]
    return sum(mid) / len(mid)


def test_interquartile_mean_and_stratified_interval():
    tasks = [[70.0, 71.0, 69.0, 90.0], [50.0, 52.0, 51.0, 10.0]]
    assert stats.interquartile_mean(tasks) == pytest.approx(naive_iqm(tasks[0] + tasks[1]))
    assert stats.interquartile_mean(tasks[0]) == pytest.approx(naive_iqm(tasks[0]))
    got = stats.stratified_ci(tasks, confidence=0.9, n_resamples=400, seed=2)
    rng = np.random.default_rng(2)
    draws = [rng.integers(0, len(t), (400, len(t))) for t in tasks]
    dist = [naive_iqm([tasks[k][i] for k in range(2) for i in draws[k][b]]) for b in range(400)]
    assert got == pytest.approx((naive_iqm(tasks[0] + tasks[1]), naive_quantile(dist, 0.05),
                                 naive_quantile(dist, 0.95)))


def test_score_distribution():
    tasks = [[0.2, 0.6], [0.9, 0.4, 0.7]]
    taus = [0.0, 0.5, 0.8, 1.0]
    want = [sum(v > t for task in tasks for v in task) / 5 for t in taus]
    assert stats.score_distribution(tasks, taus).tolist() == pytest.approx(want)
    lo, hi = stats.score_distribution_band(tasks, taus, n_resamples=300)
    assert np.all(lo <= np.array(want) + 1e-12) and np.all(np.array(want) <= hi + 1e-12)
    assert lo[0] == hi[0] == 1.0 and lo[-1] == hi[-1] == 0.0


# ---------------------------------------------------------------- curve stability


def naive_epochs_to_fraction(curve, fraction):
    best = None
    for v in curve:
        if v == v and (best is None or v > best):
            best = v
    if best is None:
        return math.nan
    for i, v in enumerate(curve):
        if v == v and v >= fraction * best:
            return float(i + 1)


def naive_last_k_std(curve, k, ddof):
    tail = list(curve)[-k:]
    if len(tail) < 2 or any(v != v for v in tail):
        return math.nan
    mean = sum(tail) / len(tail)
    return math.sqrt(sum((v - mean) ** 2 for v in tail) / (len(tail) - ddof))


def test_epochs_to_fraction_matches_naive():
    rng = np.random.default_rng(3)
    for _ in range(50):
        e = int(rng.integers(1, 30))
        curve = list(np.cumsum(rng.uniform(-0.02, 0.1, e)))
        if rng.random() < 0.3:
            curve[int(rng.integers(0, e))] = math.nan
        for fraction in (0.5, 0.9, 1.0):
            got = stats.epochs_to_fraction(curve, fraction)
            want = naive_epochs_to_fraction(curve, fraction)
            assert got == want or (math.isnan(got) and math.isnan(want))


def test_epochs_to_fraction_examples():
    assert stats.epochs_to_fraction([0.1, 0.5, 0.86, 0.95, 0.9]) == 3.0  # 0.86 >= 0.9 * 0.95 = 0.855
    assert stats.epochs_to_fraction([0.9, 0.1]) == 1.0
    assert stats.epochs_to_fraction([0.2, 0.5], fraction=1.0) == 2.0
    assert math.isnan(stats.epochs_to_fraction([]))
    assert math.isnan(stats.epochs_to_fraction([math.nan, math.nan]))
    with pytest.raises(ValueError):
        stats.epochs_to_fraction([0.1], fraction=0)


def test_last_k_std_matches_naive():
    rng = np.random.default_rng(4)
    for _ in range(50):
        curve = list(rng.uniform(0.5, 0.8, int(rng.integers(1, 12))))
        for k in (2, 5, 8):
            for ddof in (0, 1):
                got, want = stats.last_k_std(curve, k, ddof), naive_last_k_std(curve, k, ddof)
                assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-12)


def test_last_k_std_examples():
    assert stats.last_k_std([9.0, 1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(math.sqrt(2.0))  # ignores 9
    assert math.isnan(stats.last_k_std([0.5]))
    assert math.isnan(stats.last_k_std([0.5, 0.6, math.nan]))
    with pytest.raises(ValueError):
        stats.last_k_std([0.5, 0.6], k=1)
