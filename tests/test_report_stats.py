"""vitlab.report.stats against naive implementations written straight from the formulas."""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from vitlab.report import stats

B = 2000  # resamples in these tests: enough to compare exactly, fast


# ---------------------------------------------------------------- naive references


def naive_resample_means(x, n_resamples, seed):
    """Means of bootstrap resamples drawn the way scipy draws them: one (B, n) integer matrix."""
    idx = np.random.default_rng(seed).integers(0, len(x), (n_resamples, len(x)))
    means = []
    for row in idx:
        total = 0.0
        for i in row:
            total += x[i]
        means.append(total / len(x))
    return means


def naive_quantile(values, q):
    """Linear interpolation between order statistics (numpy's default 'linear', Hyndman-Fan type 7)."""
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
    num = sum((jbar - j) ** 3 for j in jack)
    den = 6 * sum((jbar - j) ** 2 for j in jack) ** 1.5
    acc = num / den
    out = []
    for alpha in ((1 - confidence) / 2, 1 - (1 - confidence) / 2):
        z = nd.inv_cdf(alpha)
        out.append(naive_quantile(means, nd.cdf(z0 + (z0 + z) / (1 - acc * (z0 + z)))))
    return theta, out[0], out[1]


# ---------------------------------------------------------------- bootstrap_ci


@pytest.mark.parametrize("n", [2, 3, 5, 9])
def test_percentile_ci_matches_naive_bootstrap(n):
    rng = np.random.default_rng(n)
    for trial in range(3):
        x = list(rng.normal(70, 2, n))
        got = stats.bootstrap_ci(x, confidence=0.95, n_resamples=B, seed=trial, method="percentile")
        want = naive_percentile_ci(x, 0.95, B, trial)
        assert got == pytest.approx(want, abs=1e-10)


def test_bca_ci_matches_naive_bca():
    rng = np.random.default_rng(7)
    for n in (4, 6, 10):
        x = list(rng.exponential(1.0, n))
        got = stats.bootstrap_ci(x, confidence=0.9, n_resamples=B, seed=3, method="bca")
        assert got == pytest.approx(naive_bca_ci(x, 0.9, B, 3), abs=1e-10)


def test_basic_ci_is_reflected_percentile():
    x = [1.0, 2.0, 4.0, 7.0]
    m, plo, phi = naive_percentile_ci(x, 0.95, B, 0)
    got = stats.bootstrap_ci(x, 0.95, B, 0, method="basic")
    assert got == pytest.approx((m, 2 * m - phi, 2 * m - plo), abs=1e-10)


def test_ci_contains_mean_and_narrows_with_confidence():
    x = [68.1, 70.4, 69.0, 71.2, 70.0]
    m, lo95, hi95 = stats.bootstrap_ci(x, 0.95, B)
    _, lo80, hi80 = stats.bootstrap_ci(x, 0.80, B)
    assert m == pytest.approx(np.mean(x))
    assert lo95 <= lo80 <= m <= hi80 <= hi95
    assert min(x) <= lo95 and hi95 <= max(x)  # a mean of resamples never leaves the data's range


def test_ci_is_deterministic_per_seed():
    x = list(np.random.default_rng(0).normal(0.6, 0.03, 12))  # many distinct resample means
    assert stats.bootstrap_ci(x, n_resamples=200, seed=5) == stats.bootstrap_ci(x, n_resamples=200, seed=5)
    assert stats.bootstrap_ci(x, n_resamples=200, seed=5) != stats.bootstrap_ci(x, n_resamples=200, seed=6)


def test_ci_edge_cases():
    assert all(math.isnan(v) for v in stats.bootstrap_ci([]))
    m, lo, hi = stats.bootstrap_ci([0.7])  # one seed: the mean, but no interval
    assert m == 0.7 and math.isnan(lo) and math.isnan(hi)
    for method in stats.METHODS:  # identical values: zero width, also for BCa (scipy gives nan there)
        assert stats.bootstrap_ci([0.5, 0.5, 0.5], method=method) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="finite"):
        stats.bootstrap_ci([0.5, math.nan])
    with pytest.raises(ValueError, match="method"):
        stats.bootstrap_ci([1.0, 2.0], method="studentized")
    with pytest.raises(ValueError, match="confidence"):
        stats.bootstrap_ci([1.0, 2.0], confidence=95)


def test_percentile_ci_coverage_on_normal_data():
    """Coverage property: at n = 20 the 95% percentile interval of a normal mean covers the true
    mean in roughly 95% of repeated samples (percentile bootstrap under-covers a little)."""
    rng = np.random.default_rng(0)
    trials, hits = 300, 0
    for t in range(trials):
        x = rng.normal(5.0, 1.0, 20)
        _, lo, hi = stats.bootstrap_ci(x, 0.95, 1000, seed=t)
        hits += lo <= 5.0 <= hi
    assert 0.88 <= hits / trials <= 0.99


# ---------------------------------------------------------------- paired comparison


def naive_paired(ref: dict, other: dict, n_resamples, seed, higher=True, confidence=0.95):
    seeds = [s for s in sorted(ref) if s in other and math.isfinite(ref[s]) and math.isfinite(other[s])]
    d = [other[s] - ref[s] for s in seeds]
    means = naive_resample_means(d, n_resamples, seed)
    a = (1 - confidence) / 2
    better = sum(1 for m in means if (m > 0 if higher else m < 0))
    return {"diff_mean": sum(d) / len(d), "lo": naive_quantile(means, a), "hi": naive_quantile(means, 1 - a),
            "p_improve": better / len(means), "n": len(d)}


def test_paired_matches_naive_and_pairs_by_seed():
    ref = {0: 70.1, 1: 68.0, 2: 72.5, 3: 69.0, 7: 71.0}
    other = {3: 69.9, 2: 72.9, 0: 70.2, 1: 68.1, 9: 50.0}  # seeds 7 and 9 have no partner
    got = stats.paired_comparison(ref, other, n_resamples=B, seed=1)
    want = naive_paired(ref, other, B, 1)
    assert got["n"] == 4
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-10), k


def test_paired_removes_seed_effect():
    """A large shared seed effect makes unpaired intervals wide; paired ones stay tight."""
    seed_effect = {0: -5.0, 1: 0.0, 2: 5.0, 3: 2.0}
    ref = {s: 70 + e for s, e in seed_effect.items()}
    other = {s: 70.5 + e + 0.05 * s for s, e in seed_effect.items()}
    res = stats.paired_comparison(ref, other, n_resamples=B)
    assert 0 < res["lo"] <= res["diff_mean"] <= res["hi"] < 1
    assert res["p_improve"] == 1.0
    _, lo, hi = stats.bootstrap_ci(list(other.values()), n_resamples=B)
    assert hi - lo > 5 * (res["hi"] - res["lo"])


def test_paired_lower_is_better_and_sequences():
    ref, other = [0.90, 0.80, 0.85], [0.70, 0.75, 0.86]
    res = stats.paired_comparison(ref, other, n_resamples=B, seed=2, higher_is_better=False)
    want = naive_paired(dict(enumerate(ref)), dict(enumerate(other)), B, 2, higher=False)
    for k in want:
        assert res[k] == pytest.approx(want[k], abs=1e-10)
    assert res["p_improve"] > 0.5  # losses went down


def test_paired_edge_cases():
    none = stats.paired_comparison({0: 1.0}, {1: 2.0})
    assert none["n"] == 0 and math.isnan(none["diff_mean"])
    one = stats.paired_comparison({0: 1.0, 1: math.nan}, {0: 1.5, 1: 2.0})
    assert one["n"] == 1 and one["diff_mean"] == 0.5 and math.isnan(one["lo"]) and math.isnan(one["p_improve"])
    same = stats.paired_comparison([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])  # constant difference
    assert (same["diff_mean"], same["lo"], same["hi"], same["p_improve"]) == pytest.approx((0.5, 0.5, 0.5, 1.0))
    tie = stats.paired_comparison([1.0, 2.0], [1.0, 2.0])
    assert tie["p_improve"] == 0.0  # no difference is no improvement
    with pytest.raises(ValueError, match="equal lengths"):
        stats.paired_comparison([1.0, 2.0], [1.0])
    with pytest.raises(TypeError):
        stats.paired_comparison({0: 1.0}, [1.0])


def test_p_improve_agrees_with_interval():
    """Same resamples: a percentile interval above 0 means at least 97.5% of resamples are above 0."""
    rng = np.random.default_rng(11)
    for _ in range(20):
        ref = dict(enumerate(rng.normal(0, 1, 4)))
        other = {s: v + rng.normal(0.5, 0.5) for s, v in ref.items()}
        r = stats.paired_comparison(ref, other, n_resamples=B)
        if r["lo"] > 0:
            assert r["p_improve"] >= 0.975
        if r["hi"] < 0:
            assert r["p_improve"] <= 0.025


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
