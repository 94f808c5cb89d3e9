"""Statistics over seeds: intervals, paired tests, power, variance sources, aggregates across datasets.

A leaf module (numpy, scipy and the metrics table): the report builds its tables from it, and the study engine
calls `seeding_decision` to decide whether a level needs more seeds. Every formula is one small
function whose docstring names its source; the tests check each against a naive implementation.

| quantity | function | source |
|---|---|---|
| Student-t interval of a mean | `t_interval` | Student (1908); Casella & Berger (2002) §9.2 |
| percentile bootstrap interval | `percentile_interval` | Efron & Tibshirani (1993) ch. 13 |
| BCa bootstrap interval | `bca_interval` | Efron (1987); Efron & Tibshirani (1993) ch. 14 |
| exact sign-flip test | `sign_flip_pvalue` | Fisher (1935) §21; Good (2005) §3 |
| Holm-Bonferroni adjustment | `holm_adjust` | Holm (1979) |
| paired t-test (the decision rule) | `paired_t_test` | Student (1908); Casella & Berger (2002) §8.3 |
| equivalence: two one-sided tests | `tost_pvalue` | Schuirmann (1987); Wellek (2010) ch. 5 |
| linear trend over ordered levels | `trend_slopes` | Armitage (1955); Rosenthal & Rosnow (1985) contrasts |
| a declared family's verdicts | `decide_family` | Holm (1979) over the declared comparisons |
| power / seeds needed for equivalence | `tost_power`, `tost_seeds_needed` | Chow, Shao & Wang (2008) §3.2 |
| probability of improvement | `probability_of_improvement` | Agarwal et al. (2021); Mann & Whitney (1947) |
| power of the paired t-test | `paired_t_power` | Cohen (1988) ch. 2 (noncentral t) |
| smallest detectable difference | `minimum_detectable_difference` | inverts `paired_t_power` |
| seeds needed | `seeds_needed` | inverts `paired_t_power` |
| variance components | `variance_components` | Searle, Casella & McCulloch (1992) ch. 4; Bouthillier et al. (2021) |
| interquartile mean | `interquartile_mean` | Agarwal et al. (2021) |
| score distribution (performance profile) | `score_distribution` | Agarwal et al. (2021); Dolan & Moré (2002) |

Conventions
- Values are plain numbers in one unit; the caller scales (e.g. accuracy fractions to percent).
- With one value there is no spread: intervals, tests and power are nan, never a fake zero width.
- Every resampling draws from `numpy.random.default_rng(seed)`: a report is reproducible bit for bit.
- The batched functions (`*_bounds`) work along the last axis of an array, so a coverage simulation
  runs thousands of samples through the very code the report uses.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy import integrate as _integrate
from scipy import optimize as _opt
from scipy import special as _sp
from scipy import stats as _st

from .metrics import RANGE_ANY

CONFIDENCE = 0.95
"""Default confidence level of every interval (1 - ALPHA)."""
ALPHA = 0.05
"""Default significance level of every test."""
POWER = 0.8
"""Power at which the smallest detectable difference and the seeds needed are computed."""

CI_METHODS = ("t", "bootstrap", "bca")
"""Interval methods for a mean over seeds: Student t (default), percentile bootstrap, BCa bootstrap."""
DEFAULT_CI = "t"
"""The default interval method: the only one of the three with its stated coverage at 2-5 seeds on
normal data (see benchmarks/RESULTS.md for measured coverages)."""
CI_NAMES = {"t": "Student-t", "bootstrap": "percentile bootstrap", "bca": "BCa bootstrap"}
"""How each method is named in tables and notes."""
SMALL_N_BOOTSTRAP = 10
"""Below this many values a bootstrap interval is flagged: it under-covers (see RESULTS.md)."""
MEASURED_COVERAGE = {
    "t": {2: 0.955, 3: 0.949, 5: 0.953, 10: 0.954},
    "bootstrap": {2: 0.494, 3: 0.752, 5: 0.841, 10: 0.910},
    "bca": {2: 0.494, 3: 0.726, 5: 0.842, 10: 0.906},
}
"""Measured coverage of each method's nominal 95% interval of a normal mean at n = 2, 3, 5, 10
(benchmarks/bench_coverage.py, whose output this copies; benchmarks/RESULTS.md has the run). The
report quotes it; a test re-measures it."""

N_RESAMPLES = 10_000
"""Default number of bootstrap resamples."""
BOOTSTRAP_SEED = 0
"""Default seed of every bootstrap's generator."""
MAX_RESAMPLE_ELEMENTS = 20_000_000
"""Batched bootstraps draw at most this many indices at once (memory bound, ~160 MB)."""

EXACT_MAX_N = 16
"""Up to this many pairs the sign-flip test enumerates all 2**n sign patterns (65,536 at 16)."""
N_PERMUTATIONS = 100_000
"""Monte-Carlo sign patterns beyond EXACT_MAX_N (the p-value's standard error is below 0.0007)."""
PERMUTATION_SEED = 0
"""Seed of the Monte-Carlo sign patterns."""
TIE_RTOL = 1e-9
"""Relative tolerance under which a permuted statistic counts as equal to the observed one (floating
point sums of the same numbers in another order differ in the last bits)."""

MAX_SEEDS_NEEDED = 10_000_000
"""`seeds_needed` searches up to this n; beyond, it returns inf."""
IQM_TRIM = 0.25
"""Share cut from each end for the interquartile mean."""

FRACTION_OF_BEST = 0.9
"""Default for `epochs_to_fraction`: the share of the best validation accuracy to reach."""
LAST_K = 5
"""Default for `last_k_std`: how many final epochs the stability spread is measured over."""
STD_DDOF = 0
"""Delta degrees of freedom of `last_k_std` (0: population std of those k epochs, numpy's default)."""

MIN_SEEDS_TO_BOUND = 3
"""Below this many values a mean's interval is flagged as unable to bound it: at n = 2 the 95%
Student-t interval spans +-12.7 standard errors (its coverage holds, its width says nothing)."""
FEW_SEEDS_MARK = "‡"
"""Marks such an interval, in the report's tables and the terminal's summary table alike."""

VERDICT_BETTER, VERDICT_WORSE, VERDICT_NONE = "better", "worse", "no detectable difference"
"""The direction words of a paired comparison ('no detectable difference': undecided, no margin)."""
DIFFERENCE, EQUIVALENT, UNDECIDED = "difference", "equivalent", "undecided"
"""The three verdicts of a declared comparison (`decide_family`): the Holm-adjusted paired t-test
rejects "no difference" (difference), the Holm-adjusted TOST rejects "a difference of at least the
margin" (equivalent), or neither (undecided)."""
DECISION_RULE = "paired t-test, Holm-adjusted over the declared comparisons"
"""How every verdict is reached (report, tables, findings/summarize.py). Why the t-test and not the
exact sign-flip test: at the 3-10 seeds a study affords, the sign-flip test's smallest p-value is
2/2^n (0.25 at n = 3, 0.0625 at n = 5), so after Holm over m comparisons it cannot decide anything
below n = 6 + log2(m); the paired t-test is exact when the seed-to-seed differences are normal, and
its interval measured 94.9-95.5% coverage at n = 2-10 (MEASURED_COVERAGE). TOST, the MDE and the
seeds needed are t-based too, so the verdict, its interval and the seeds that would decide it come
from one model."""


class CI(NamedTuple):
    """A point estimate with the bounds of its interval (nan bounds: no interval)."""

    mean: float
    lo: float
    hi: float


def _finite(values, name: str = "values") -> np.ndarray:
    x = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=float).ravel()
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite numbers, got {x.tolist()}")
    return x


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _check_method(method: str) -> None:
    if method not in CI_METHODS:
        raise ValueError(f"ci method must be one of {', '.join(CI_METHODS)}; got {method!r}")


# ----------------------------------------------------------------------------------------------
# intervals of a mean (batched along the last axis)


def t_bounds(x: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Student-t interval of the mean of each row of `x` (n >= 2 along the last axis):
    mean -/+ t_{(1+confidence)/2, n-1} * s / sqrt(n), s the sample standard deviation (ddof=1).
    Exact coverage for normal data (Student 1908; Casella & Berger 2002, §9.2.2)."""
    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    m = x.mean(axis=-1)
    half = _st.t.ppf((1 + confidence) / 2, n - 1) * x.std(axis=-1, ddof=1) / math.sqrt(n)
    return m - half, m + half


def bootstrap_means(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `n_resamples` resamples with replacement of each row of `x`: shape (..., n_resamples).
    Indices are drawn as one (rows, n_resamples, n) integer array (in chunks of rows for memory)."""
    x = np.asarray(x, dtype=float)
    lead, n = x.shape[:-1], x.shape[-1]
    flat = x.reshape(-1, n)
    out = np.empty((flat.shape[0], n_resamples))
    step = max(1, MAX_RESAMPLE_ELEMENTS // (n_resamples * n))
    for start in range(0, flat.shape[0], step):
        rows = flat[start:start + step]
        idx = rng.integers(0, n, (rows.shape[0], n_resamples, n))
        out[start:start + step] = np.take_along_axis(rows[:, None, :], idx, axis=-1).mean(axis=-1)
    return out.reshape(*lead, n_resamples)


def _row_quantiles(sorted_rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Quantile q[i] of row i of an ascending array: linear interpolation between order statistics
    (Hyndman & Fan 1996 type 7, numpy's default)."""
    b = sorted_rows.shape[-1]
    h = (b - 1) * np.clip(q, 0.0, 1.0)
    lo = np.floor(h).astype(int)
    hi = np.minimum(lo + 1, b - 1)
    a = np.take_along_axis(sorted_rows, lo[..., None], -1)[..., 0]
    c = np.take_along_axis(sorted_rows, hi[..., None], -1)[..., 0]
    return a + (h - lo) * (c - a)


def percentile_bounds(x: np.ndarray, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                      rng: np.random.Generator | int = BOOTSTRAP_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean of each row: the (1-confidence)/2 and
    (1+confidence)/2 quantiles of the resampled means (Efron & Tibshirani 1993, §13.3)."""
    rng = np.random.default_rng(rng)
    means = np.sort(bootstrap_means(x, n_resamples, rng), axis=-1)
    a = (1 - confidence) / 2
    q = np.full(means.shape[:-1], a)
    return _row_quantiles(means, q), _row_quantiles(means, 1 - q)


def bca_bounds(x: np.ndarray, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
               rng: np.random.Generator | int = BOOTSTRAP_SEED) -> tuple[np.ndarray, np.ndarray]:
    """BCa (bias-corrected and accelerated) bootstrap interval of the mean of each row
    (Efron 1987; Efron & Tibshirani 1993, eq. 14.9-14.15):
    z0 = Phi^-1(share of resampled means below the mean, ties counted half);
    a = sum(d^3) / (6 (sum d^2)^1.5), d_i = mean of the jackknife means - i-th jackknife mean;
    bounds = quantiles Phi(z0 + (z0 + z_q) / (1 - a (z0 + z_q))) of the resampled means,
    z_q = Phi^-1((1 -/+ confidence) / 2). Rows whose values are all equal give a zero-width interval."""
    x = np.asarray(x, dtype=float)
    rng = np.random.default_rng(rng)
    n = x.shape[-1]
    theta = x.mean(axis=-1)
    means = np.sort(bootstrap_means(x, n_resamples, rng), axis=-1)
    below = (means < theta[..., None]).mean(axis=-1) + 0.5 * (means == theta[..., None]).mean(axis=-1)
    z0 = _sp.ndtri(below)
    jack = (x.sum(axis=-1, keepdims=True) - x) / (n - 1)
    d = jack.mean(axis=-1, keepdims=True) - jack
    den = 6.0 * (d ** 2).sum(axis=-1) ** 1.5
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(den > 0, (d ** 3).sum(axis=-1) / den, 0.0)
        out = []
        for q in ((1 - confidence) / 2, (1 + confidence) / 2):
            z = _sp.ndtri(q)
            p = _sp.ndtr(z0 + (z0 + z) / (1 - acc * (z0 + z)))
            out.append(_row_quantiles(means, np.nan_to_num(p, nan=0.5)))
    constant = np.ptp(x, axis=-1) == 0
    return np.where(constant, theta, out[0]), np.where(constant, theta, out[1])


def interval_bounds(x: np.ndarray, method: str = DEFAULT_CI, confidence: float = CONFIDENCE,
                    n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[np.ndarray, np.ndarray]:
    """`method`'s interval of the mean of each row of `x` (n >= 2): the batched form of `mean_ci`."""
    _check_method(method)
    _check_confidence(confidence)
    if method == "t":
        return t_bounds(x, confidence)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    fn = percentile_bounds if method == "bootstrap" else bca_bounds
    return fn(x, confidence, n_resamples, seed)


def mean_ci(values: Sequence[float], method: str = DEFAULT_CI, confidence: float = CONFIDENCE,
            n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> CI:
    """Mean of `values` and its interval: `CI(mean, lo, hi)`.

    - n = 0: all nan. n = 1: (value, nan, nan): one seed says nothing about the spread.
    - all values equal: (v, v, v) for every method (nothing varies).
    - otherwise `method`: "t" (`t_bounds`), "bootstrap" (`percentile_bounds`) or "bca" (`bca_bounds`).
    Non-finite values are a ValueError: the caller decides what a diverged run means.
    """
    _check_method(method)
    _check_confidence(confidence)
    x = _finite(values)
    if x.size == 0:
        return CI(math.nan, math.nan, math.nan)
    m = float(np.mean(x))
    if x.size == 1:
        return CI(m, math.nan, math.nan)
    if np.all(x == x[0]):
        return CI(m, m, m)
    lo, hi = interval_bounds(x, method, confidence, n_resamples, seed)
    return CI(m, float(lo), float(hi))


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> CI:
    """Student-t interval of the mean (see `mean_ci` for n < 2 and `t_bounds` for the formula)."""
    return mean_ci(values, "t", confidence)


def percentile_interval(values: Sequence[float], confidence: float = CONFIDENCE,
                        n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> CI:
    """Percentile bootstrap interval of the mean (see `percentile_bounds`)."""
    return mean_ci(values, "bootstrap", confidence, n_resamples, seed)


def bca_interval(values: Sequence[float], confidence: float = CONFIDENCE,
                 n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> CI:
    """BCa bootstrap interval of the mean (see `bca_bounds`)."""
    return mean_ci(values, "bca", confidence, n_resamples, seed)


def clip_interval(lo, hi, valid: tuple[float, float] = RANGE_ANY):
    """An interval's bounds intersected with the metric's valid range `valid` = (low, high): a
    t interval of accuracies over 2 seeds can reach below 0%, but the mean it bounds cannot.
    Scalars or arrays; nan bounds stay nan."""
    low, high = valid
    lo, hi = np.clip(lo, low, high), np.clip(hi, low, high)
    return (float(lo), float(hi)) if np.ndim(lo) == 0 else (lo, hi)


def difference_range(valid: tuple[float, float]) -> tuple[float, float]:
    """Valid range of a difference of two values that each lie in `valid`."""
    width = valid[1] - valid[0]
    return -width, width


def interval_note(method: str, n: int) -> str:
    """'' or a warning for an interval computed over n values with `method` ('bootstrap intervals
    under-cover below SMALL_N_BOOTSTRAP values')."""
    if method != "t" and 2 <= n < SMALL_N_BOOTSTRAP:
        return (f"{CI_NAMES[method]} interval over n = {n} < {SMALL_N_BOOTSTRAP} values: it covers the "
                "true mean less often than stated")
    return ""


# ----------------------------------------------------------------------------------------------
# paired comparison


def pair_values(ref_values, values) -> tuple[np.ndarray, np.ndarray]:
    """Matched (ref, other) arrays: by key for {key: value} mappings (keys in both, finite in both,
    in sorted key order), by position for sequences (which must then have the same length)."""
    if isinstance(ref_values, Mapping) != isinstance(values, Mapping):
        raise TypeError("pass both as {seed: value} mappings or both as aligned sequences")
    if isinstance(ref_values, Mapping):
        keys = sorted(set(ref_values) & set(values))
        pairs = [(float(ref_values[k]), float(values[k])) for k in keys]
    else:
        ref_values, values = list(ref_values), list(values)
        if len(ref_values) != len(values):
            raise ValueError(f"aligned sequences need equal lengths, got {len(ref_values)} and {len(values)}")
        pairs = [(float(a), float(b)) for a, b in zip(ref_values, values)]
    pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    return (np.array([a for a, _ in pairs], dtype=float), np.array([b for _, b in pairs], dtype=float))


def sign_patterns(n: int) -> np.ndarray:
    """All 2**n vectors of +-1 (one per row), row i = the binary digits of i."""
    bits = (np.arange(2 ** n, dtype=np.int64)[:, None] >> np.arange(n, dtype=np.int64)) & 1
    return 1.0 - 2.0 * bits


def sign_flip_pvalue(diffs: Sequence[float], max_exact: int = EXACT_MAX_N, n_permutations: int = N_PERMUTATIONS,
                     seed: int = PERMUTATION_SEED) -> float:
    """Two-sided p-value of the paired sign-flip (permutation) test of "mean difference = 0".

    Under the null the sign of each paired difference is exchangeable, so every pattern of signs
    is equally likely (Fisher 1935, §21; Good 2005, §3.1). The statistic is |sum(d)|.
    - n <= max_exact: exact, p = #{patterns s : |sum(s d)| >= |sum(d)|} / 2**n. The smallest
      possible value is 2 / 2**n: 0.25 at n = 3, 0.0625 at n = 5, 0.031 at n = 6.
    - n > max_exact: Monte Carlo over `n_permutations` random patterns (seeded), counting the
      observed one, p = (1 + #{>=}) / (1 + n_permutations) (Phipson & Smyth 2010).
    nan for n = 0. Non-finite differences are a ValueError.
    """
    d = _finite(diffs, "diffs")
    n = d.size
    if n == 0:
        return math.nan
    observed = abs(float(d.sum()))
    tol = TIE_RTOL * float(np.abs(d).sum())
    if n <= max_exact:
        return float(np.mean(np.abs(sign_patterns(n) @ d) >= observed - tol))
    rng = np.random.default_rng(seed)
    hits, left = 0, n_permutations
    step = max(1, MAX_RESAMPLE_ELEMENTS // n)
    while left > 0:
        k = min(step, left)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(k, n))
        hits += int(np.sum(np.abs(signs @ d) >= observed - tol))
        left -= k
    return (1 + hits) / (1 + n_permutations)


def holm_adjust(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (Holm 1979): with the m finite p-values sorted ascending,
    p_adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)). Rejecting where p_adj <= alpha controls the
    family-wise error rate at alpha. nan entries stay nan and do not count in m."""
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def probability_of_improvement(x: Sequence[float], y: Sequence[float]) -> float:
    """P(X > Y) + P(X = Y) / 2 over all pairs (one run of X, one run of Y): the Mann-Whitney U
    statistic divided by n_x n_y, as rliable defines the probability of improvement of X over Y
    for one task (Agarwal et al. 2021, §4.3; Mann & Whitney 1947). For several tasks, pass lists
    of per-task arrays to `probability_of_improvement_ci`, which averages over tasks.
    Runs need not be paired. nan when either side is empty."""
    x, y = _finite(x, "x"), _finite(y, "y")
    if x.size == 0 or y.size == 0:
        return math.nan
    diff = x[:, None] - y[None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def _poi_batch(xb: np.ndarray, yb: np.ndarray) -> np.ndarray:
    diff = xb[..., :, None] - yb[..., None, :]
    return ((diff > 0) + 0.5 * (diff == 0)).mean(axis=(-2, -1))


def probability_of_improvement_ci(x, y, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                                  seed: int = BOOTSTRAP_SEED) -> CI:
    """Probability of improvement of X over Y averaged over tasks, with its stratified bootstrap
    percentile interval (Agarwal et al. 2021, §4.3 and App. A.2; rliable's
    StratifiedIndependentBootstrap): each resample redraws, within every task, the runs of X and
    the runs of Y independently with replacement.

    `x`, `y`: one sequence of scores (one task), or a list of per-task sequences (same number of
    tasks, any number of runs each). Bounds are nan when a task has fewer than 2 runs on a side.
    """
    _check_confidence(confidence)
    xs, ys = _tasks(x, "x"), _tasks(y, "y")
    if len(xs) != len(ys):
        raise ValueError(f"x and y need the same number of tasks, got {len(xs)} and {len(ys)}")
    if not xs or any(a.size == 0 for a in xs + ys):
        return CI(math.nan, math.nan, math.nan)
    est = float(np.mean([probability_of_improvement(a, b) for a, b in zip(xs, ys)]))
    if any(a.size < 2 for a in xs + ys):
        return CI(est, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    per_task = []
    for a, b in zip(xs, ys):
        ia = rng.integers(0, a.size, (n_resamples, a.size))
        ib = rng.integers(0, b.size, (n_resamples, b.size))
        per_task.append(_poi_batch(a[ia], b[ib]))
    dist = np.mean(per_task, axis=0)
    q = (1 - confidence) / 2
    return CI(est, float(np.quantile(dist, q)), float(np.quantile(dist, 1 - q)))


def _tasks(v, name: str) -> list[np.ndarray]:
    v = list(v)
    if v and all(isinstance(t, (Sequence, np.ndarray)) and not isinstance(t, str) for t in v):
        return [_finite(t, name) for t in v]
    return [_finite(v, name)]


def verdict(diff_mean: float, p_adjusted: float, higher_is_better: bool = True, alpha: float = ALPHA) -> str:
    """'better' / 'worse' when the adjusted test rejects (p_adjusted <= alpha), by the sign of the
    mean difference and the metric's direction (for losses and ECE lower is better); otherwise
    'no detectable difference'. Never decided by the probability of improvement."""
    if not (math.isfinite(p_adjusted) and p_adjusted <= alpha and math.isfinite(diff_mean) and diff_mean != 0):
        return VERDICT_NONE
    return VERDICT_BETTER if (diff_mean > 0) == higher_is_better else VERDICT_WORSE


def verdict_text(word: str, n: int) -> str:
    """The verdict as a report prints it: 'no detectable difference at n = 3' names the pairs."""
    return f"{word} at n = {n}" if word == VERDICT_NONE else word


class TTest(NamedTuple):
    """A paired t-test of mean difference = 0: statistic, degrees of freedom, two-sided p-value."""

    t: float
    df: int
    p: float


def paired_t_test(diffs: Sequence[float]) -> TTest:
    """Two-sided paired t-test of "mean difference = 0" on the differences d (Student 1908; Casella &
    Berger 2002, §8.3): t = mean(d) / (s / sqrt(n)), s with ddof = 1, p = 2 P(T_{n-1} >= |t|).
    n < 2: nan. No spread (all d equal): p = 1 when they are 0, else 0 (t = +-inf): every seed moved
    by the same amount. Non-finite differences are a ValueError."""
    d = _finite(diffs, "diffs")
    n = d.size
    if n < 2:
        return TTest(math.nan, max(n - 1, 0), math.nan)
    m, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0 or np.all(d == d[0]):
        return TTest(0.0, n - 1, 1.0) if m == 0 else TTest(math.copysign(math.inf, m), n - 1, 0.0)
    t = m / (sd / math.sqrt(n))
    return TTest(t, n - 1, float(2 * _st.t.sf(abs(t), n - 1)))


def tost_pvalue(diffs: Sequence[float], margin: float) -> float:
    """p-value of the two one-sided tests (TOST) of equivalence within +-margin (Schuirmann 1987;
    Wellek 2010, ch. 5): H0: |true mean difference| >= margin. With se = s / sqrt(n),
      p_low = P(T_{n-1} >= (mean + margin) / se),  p_high = P(T_{n-1} <= (mean - margin) / se),
    p = max(p_low, p_high). p <= alpha exactly when the (1 - 2 alpha) t-interval of the mean lies
    inside (-margin, +margin). n < 2: nan; no spread: 0 when |mean| < margin, else 1."""
    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be a positive number, got {margin}")
    d = _finite(diffs, "diffs")
    n = d.size
    if n < 2:
        return math.nan
    m, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0 or np.all(d == d[0]):
        return 0.0 if abs(m) < margin else 1.0
    se = sd / math.sqrt(n)
    return float(max(_st.t.sf((m + margin) / se, n - 1), _st.t.cdf((m - margin) / se, n - 1)))


def tost_bounds(x: np.ndarray, margin: float, alpha: float = ALPHA) -> np.ndarray:
    """Batched TOST decision along the last axis: True where the (1 - 2 alpha) t-interval of the mean
    lies inside (-margin, margin) (the interval form of `tost_pvalue` <= alpha; used by simulations)."""
    lo, hi = t_bounds(x, 1 - 2 * alpha)
    return (lo > -margin) & (hi < margin)


def trend_slopes(values: np.ndarray) -> np.ndarray:
    """Per-seed least-squares slope over ordered levels: `values` shaped (seeds, levels), levels in
    their order, equally spaced (slope per level step). The linear contrast c_j = (j - mean j) /
    sum (j - mean j)^2 (Armitage 1955; Rosenthal & Rosnow 1985): a one-sample t-test of these slopes
    over seeds is the paired test of a linear trend, seed effects cancelling as in a paired difference."""
    v = np.asarray(values, dtype=float)
    k = v.shape[-1]
    if k < 2:
        raise ValueError(f"a trend needs at least 2 levels, got {k}")
    j = np.arange(k, dtype=float) - (k - 1) / 2
    return v @ (j / float(np.sum(j * j)))


class Decision(NamedTuple):
    """The verdict of one declared comparison: its t-test, TOST and the Holm-adjusted p-values."""

    verdict: str  # DIFFERENCE | EQUIVALENT | UNDECIDED
    n: int
    mean: float
    t: float
    df: int
    p: float
    p_holm: float
    p_tost: float  # nan without a margin
    p_tost_holm: float


def decide_family(diffs: Sequence[Sequence[float]], margin: float | Sequence[float | None] | None = None,
                  alpha: float = ALPHA) -> list[Decision]:
    """Verdicts of a family of declared comparisons, each given by its paired differences (or a
    trend's per-seed slopes). The paired t p-values are Holm-adjusted over the family, and so are the
    TOST p-values of the comparisons with a margin (`margin`: one for all, or one per comparison,
    None where a comparison has none — a trend's slope is not on a difference's scale). A comparison is
      - DIFFERENCE when its adjusted t p-value is <= alpha (direction: the sign of the mean);
      - else EQUIVALENT when its adjusted TOST p-value is <= alpha (|difference| < margin);
      - else UNDECIDED.
    Holm controls the family-wise error of each kind at alpha: no comparison the spec did not declare
    dilutes it."""
    tests = [paired_t_test(d) for d in diffs]
    holm = holm_adjust([t.p for t in tests])
    margins = list(margin) if isinstance(margin, Sequence) else [margin] * len(diffs)
    tost = [tost_pvalue(d, m) if m else math.nan for d, m in zip(diffs, margins)]
    tost_holm = holm_adjust(tost)  # nan (no margin) stays nan and does not count in the family
    out = []
    for d, t, ph, pe, peh in zip(diffs, tests, holm, tost, tost_holm):
        x = _finite(d, "diffs")
        mean = float(x.mean()) if x.size else math.nan
        word = DIFFERENCE if ph <= alpha and mean != 0 else EQUIVALENT if peh <= alpha else UNDECIDED
        out.append(Decision(word, int(x.size), mean, t.t, t.df, t.p, float(ph), float(pe), float(peh)))
    return out


# ----------------------------------------------------------------------------------------------
# power: smallest detectable difference, seeds needed


def paired_t_power(delta: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test at level `alpha` with n pairs against a true mean
    difference `delta` when the differences have standard deviation `sd` (Cohen 1988, ch. 2):
    P(|T| > t_{1-alpha/2, n-1}) with T ~ noncentral t(df = n - 1, nc = delta sqrt(n) / sd)."""
    if n < 2 or not (sd > 0):
        return math.nan
    df = n - 1
    crit = _st.t.ppf(1 - alpha / 2, df)
    nc = abs(delta) * math.sqrt(n) / sd
    lower = _st.nct.cdf(-crit, df, nc)
    if not math.isfinite(lower):  # scipy's nct returns nan deep in the tail for some (df, nc); there
        lower = _sp.ndtr(-nc)  # 0 <= P(T <= -crit) <= P(T <= 0) = Phi(-nc), negligible at such nc
    return float(_st.nct.sf(crit, df, nc) + lower)


def minimum_detectable_difference(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true mean difference that the paired t-test with n pairs detects with probability
    `power` at level `alpha` (two-sided), given the paired spread `sd`: the root in delta of
    paired_t_power(delta, sd, n, alpha) = power. nan for n < 2 or unknown sd; 0 when sd = 0."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    hi = sd
    while paired_t_power(hi, sd, n, alpha) < power:
        hi *= 2
    return float(_opt.brentq(lambda d: paired_t_power(d, sd, n, alpha) - power, 0.0, hi, xtol=1e-12 * sd))


def seeds_needed(target_delta: float, sd: float, alpha: float = ALPHA, power: float = POWER,
                 max_n: int = MAX_SEEDS_NEEDED) -> float:
    """Smallest number of pairs n >= 2 at which the paired t-test detects a true difference of
    `target_delta` with probability `power` (the inverse of `paired_t_power` in n; power grows
    with n). The total, not the additional seeds. inf beyond `max_n`; nan for unknown sd or a
    target <= 0; 2 when sd = 0."""
    if not (math.isfinite(sd) and math.isfinite(target_delta)) or target_delta <= 0:
        return math.nan
    if sd == 0:
        return 2.0

    return _smallest_n(lambda n: paired_t_power(target_delta, sd, n, alpha) >= power, max_n)


def tost_power(margin: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of TOST within +-margin at a true difference of 0 with n pairs of spread sd: TOST
    decides when |mean| < margin - c s / sqrt(n), c = t_{1-alpha, n-1}. With mean ~ N(0, sd^2 / n)
    independent of (n-1) s^2 / sd^2 = X ~ chi^2_{n-1} (Chow, Shao & Wang 2008, §3.2; computed exactly
    by integrating over X rather than with their large-n normal approximation):
      power = E_X[ max(0, 2 Phi(sqrt(n) margin / sd - c sqrt(X / (n-1))) - 1) ]."""
    if n < 2 or not (sd > 0):
        return math.nan
    df = n - 1
    c = _st.t.ppf(1 - alpha, df)
    k = math.sqrt(n) * margin / sd
    x_max = df * (k / c) ** 2  # beyond it the integrand is 0

    def integrand(x: float) -> float:
        return (2 * _sp.ndtr(k - c * math.sqrt(x / df)) - 1) * _st.chi2.pdf(x, df)

    return float(min(1.0, max(0.0, _integrate.quad(integrand, 0.0, x_max, limit=200)[0])))


def tost_seeds_needed(margin: float, sd: float, alpha: float = ALPHA, power: float = POWER,
                      max_n: int = MAX_SEEDS_NEEDED) -> float:
    """Smallest n >= 2 at which TOST within +-margin decides 'equivalent' with probability `power`
    when the true difference is 0 (`tost_power`, which grows with n); inf beyond max_n, nan for an
    unknown sd or a margin <= 0, 2 when sd = 0."""
    if not (math.isfinite(sd) and math.isfinite(margin)) or margin <= 0:
        return math.nan
    if sd == 0:
        return 2.0
    return _smallest_n(lambda n: tost_power(margin, sd, n, alpha) >= power, max_n)


def _smallest_n(enough, max_n: int) -> float:
    """Smallest n >= 2 with enough(n), for a predicate monotone in n (doubling, then bisection); inf
    beyond max_n."""
    if enough(2):
        return 2.0
    lo, hi = 2, 4
    while not enough(hi):
        if hi >= max_n:
            return math.inf
        lo, hi = hi, min(hi * 2, max_n)
    while hi - lo > 1:  # enough(hi), not enough(lo)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return float(hi)


# ----------------------------------------------------------------------------------------------
# the adaptive seeding rule


def seeding_decision(diffs: Sequence[float], target_delta: float, alpha: float = ALPHA,
                     n_comparisons: int = 1, margin: float | None = None) -> tuple[bool, str]:
    """Has a declared comparison been decided, or does it need more seeds?

    `diffs`: the paired differences (one per seed completed at both levels; a trend's per-seed
    slopes), in the same unit as `target_delta` and `margin` (accuracies are stored as fractions:
    multiply them by 100 when these are in percentage points). `n_comparisons`: the size of the
    declared family; the rule uses a' = alpha / n_comparisons (Bonferroni), so a comparison stopped
    as decided keeps its verdict after the report's Holm adjustment (Holm rejects whatever
    Bonferroni rejects). The tests are the report's (`DECISION_RULE`):
      1. difference: the paired t-test's p <= a' (`paired_t_test`);
      2. equivalent (with a `margin`): the TOST p <= a' (`tost_pvalue`), i.e. the (1 - 2a')
         t-interval lies inside (-margin, +margin);
      3. precise (without a margin): the (1 - a') t-interval contains 0 and is narrower than
         target_delta: any true difference is smaller than the target. The report calls this
         undecided (no equivalence margin was declared), but more seeds would only narrow it.
    Otherwise it is undecided. Fewer than 2 pairs is never decided. Returns (decided, reason), the
    reason one line for logs and the report. Non-finite differences are a ValueError.
    """
    if not (math.isfinite(target_delta) and target_delta > 0):
        raise ValueError(f"target_delta must be a positive number, got {target_delta}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_comparisons < 1:
        raise ValueError(f"n_comparisons must be >= 1, got {n_comparisons}")
    d = _finite(diffs, "diffs")
    n = d.size
    if n < 2:
        return False, f"undecided: {n} pair{'s' if n != 1 else ''}, no spread yet"
    a = alpha / n_comparisons
    test = paired_t_test(d)
    if np.all(d == d[0]):
        lo = hi = float(d[0])
    else:
        lo, hi = (float(v) for v in t_bounds(d, 1 - a))
    ival = f"{100 * (1 - a):.4g}% interval [{lo:+.4g}, {hi:+.4g}]"
    if test.p <= a:
        return True, f"difference at n = {n}: paired t = {test.t:.3g}, p = {test.p:.3g} <= {a:.3g}"
    if margin:
        p_eq = tost_pvalue(d, margin)
        if p_eq <= a:
            return True, f"equivalent at n = {n}: TOST p = {p_eq:.3g} <= {a:.3g} within ±{margin:g}"
        return False, (f"undecided at n = {n}: paired t p = {test.p:.3g}, TOST p = {p_eq:.3g} within ±{margin:g}, "
                       f"both > {a:.3g}")
    if lo <= 0 <= hi and hi - lo < target_delta:
        return True, f"precise at n = {n}: {ival} contains 0 and is narrower than target_delta = {target_delta:g}"
    return False, f"undecided at n = {n}: paired t p = {test.p:.3g} > {a:.3g}; {ival} not narrower than {target_delta:g}"


# ----------------------------------------------------------------------------------------------
# variance sources


def variance_components(values: Sequence[float], sources: Mapping[str, Sequence]) -> dict[str, float]:
    """Random-effects ANOVA estimates of the variance each source adds to `values`.

    `sources[name][i]` is the level (e.g. the init seed) of source `name` for observation i. The
    design must be balanced and fully crossed: every combination of levels occurs equally often
    (r >= 1 times). Model: y = mu + sum_f a_f[level_f] + e, a_f ~ N(0, var_f), e ~ N(0, var_e),
    all independent; interactions between sources are pooled into the residual e.
    ANOVA (method-of-moments) estimators for balanced data (Searle, Casella & McCulloch 1992,
    §4.2; as used by Bouthillier et al. 2021 for the sources of variance of a benchmark):
      SS_f = (N / L_f) sum_l (mean_l - mean)^2, MS_f = SS_f / (L_f - 1),
      MS_e = (SS_total - sum_f SS_f) / (N - 1 - sum_f (L_f - 1)),
      var_f = max(0, (MS_f - MS_e) / (N / L_f)),  var_e = MS_e,
    since E[MS_f] = var_e + (N / L_f) var_f. Returns {source: var_f, ..., "residual": var_e}.
    ValueError when the design is not balanced, a source has one level, or no residual df is left.
    """
    y = _finite(values)
    n = y.size
    if not sources:
        raise ValueError("no sources given")
    labels = {}
    for name, lv in sources.items():
        lv = list(lv)
        if len(lv) != n:
            raise ValueError(f"source {name!r} has {len(lv)} labels for {n} values")
        _, codes = np.unique(np.array([repr(v) for v in lv]), return_inverse=True)
        if codes.max(initial=0) < 1:
            raise ValueError(f"source {name!r} has a single level")
        labels[name] = codes
    sizes = [int(c.max()) + 1 for c in labels.values()]
    cells = np.ravel_multi_index(tuple(labels.values()), sizes)
    counts = np.bincount(cells, minlength=int(np.prod(sizes)))
    if counts.min() != counts.max():
        raise ValueError("unbalanced design: every combination of source levels must occur equally often")
    grand = y.mean()
    ss_total = float(np.sum((y - grand) ** 2))
    out, ms, ss_sum, df_sum = {}, {}, 0.0, 0
    for (name, codes), levels in zip(labels.items(), sizes):
        per = n // levels
        means = np.bincount(codes, weights=y) / per
        ss = per * float(np.sum((means - grand) ** 2))
        ms[name] = (ss / (levels - 1), per)
        ss_sum += ss
        df_sum += levels - 1
    df_e = n - 1 - df_sum
    if df_e < 1:
        raise ValueError("no residual degrees of freedom: vary at least two sources (or replicate runs)")
    ms_e = max(0.0, ss_total - ss_sum) / df_e
    for name, (ms_f, per) in ms.items():
        out[name] = max(0.0, (ms_f - ms_e) / per)
    out["residual"] = ms_e
    return out


# ----------------------------------------------------------------------------------------------
# aggregates across datasets (tasks)


def _pooled(tasks: Sequence[np.ndarray]) -> np.ndarray:
    """Per-task score arrays (..., n_t) joined along the last axis (..., sum n_t)."""
    return np.concatenate(list(tasks), axis=-1)


def interquartile_mean(scores) -> float:
    """Mean of the middle 50% of all scores pooled over runs and tasks: scipy.stats.trim_mean with
    25% cut from each end (Agarwal et al. 2021, §4.2: robust to outlier runs and tasks, more
    efficient than the median). `scores`: one sequence, or a list of per-task sequences."""
    pooled = _pooled(_tasks(scores, "scores"))
    return float(_st.trim_mean(pooled, IQM_TRIM)) if pooled.size else math.nan


def iqm_rows(tasks: Sequence[np.ndarray]) -> np.ndarray:
    """`interquartile_mean` of each row of per-task arrays shaped (..., n_t): the batched form."""
    return _st.trim_mean(_pooled(tasks), IQM_TRIM, axis=-1)


def stratified_bootstrap(tasks: Sequence[np.ndarray], statistic, n_resamples: int = N_RESAMPLES,
                         seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Bootstrap distribution of a statistic of per-task scores: each resample redraws the runs of
    every task with replacement within that task, keeping the tasks (Agarwal et al. 2021, App. A.1;
    rliable's StratifiedBootstrap). `statistic` receives the per-task resamples as arrays shaped
    (n_resamples, n_t) and returns one value (or row) per resample."""
    rng = np.random.default_rng(seed)
    draws = [t[rng.integers(0, t.size, (n_resamples, t.size))] for t in tasks]
    return np.asarray(statistic(draws))


def stratified_ci(scores, statistic=iqm_rows, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                  seed: int = BOOTSTRAP_SEED) -> CI:
    """A statistic of per-task scores (default: the interquartile mean) with its stratified-bootstrap
    percentile interval. `statistic` is batched as in `stratified_bootstrap`. Bounds are nan when a
    task has fewer than 2 runs."""
    _check_confidence(confidence)
    tasks = _tasks(scores, "scores")
    if not tasks or any(t.size == 0 for t in tasks):
        return CI(math.nan, math.nan, math.nan)
    est = float(np.asarray(statistic([t[None, :] for t in tasks])).ravel()[0])
    if any(t.size < 2 for t in tasks):
        return CI(est, math.nan, math.nan)
    dist = stratified_bootstrap(tasks, statistic, n_resamples, seed)
    q = (1 - confidence) / 2
    return CI(est, float(np.quantile(dist, q)), float(np.quantile(dist, 1 - q)))


def score_distribution(scores, taus: Sequence[float]) -> np.ndarray:
    """Performance profile: for each threshold tau, the share of all runs (pooled over tasks) whose
    score exceeds tau (Agarwal et al. 2021, §4.1 "score distributions"; after Dolan & Moré 2002).
    `scores`: a sequence or per-task sequences -> shape (len(taus),); per-task arrays shaped
    (..., n_t) -> shape (..., len(taus))."""
    tasks = scores if all(isinstance(t, np.ndarray) for t in scores) else _tasks(scores, "scores")
    pooled = _pooled(tasks)
    taus = np.asarray(taus, dtype=float)
    return (pooled[..., None, :] > taus[:, None]).mean(axis=-1)


def score_distribution_band(scores, taus: Sequence[float], confidence: float = CONFIDENCE,
                            n_resamples: int = 2_000, seed: int = BOOTSTRAP_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise stratified-bootstrap percentile band of `score_distribution` at each tau."""
    tasks = _tasks(scores, "scores")
    dist = stratified_bootstrap(tasks, lambda ts: score_distribution(ts, taus), n_resamples, seed)
    q = (1 - confidence) / 2
    return np.quantile(dist, q, axis=0), np.quantile(dist, 1 - q, axis=0)


# ----------------------------------------------------------------------------------------------
# stability of a learning curve


def epochs_to_fraction(val_curve: Sequence[float], fraction: float = FRACTION_OF_BEST) -> float:
    """Epochs of training until the validation accuracy first reaches `fraction` x its best value.

    `val_curve[i]` is the value after epoch i + 1, so the result is a 1-based epoch count: 1 means
    the first epoch already reached it. Non-finite entries (a diverging run) never count as
    reaching the threshold. nan for an empty curve or one without any finite value.
    A measure of convergence speed (study B); lower is faster.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    y = np.asarray(list(val_curve), dtype=float)
    finite = np.isfinite(y)
    if not finite.any():
        return math.nan
    threshold = fraction * float(np.max(y[finite]))
    reached = np.flatnonzero(finite & (y >= threshold))
    return float(reached[0] + 1)


def last_k_std(val_curve: Sequence[float], k: int = LAST_K, ddof: int = STD_DDOF) -> float:
    """Standard deviation of the last `k` values of a validation curve (stability, study B).

    Uses the last min(k, len) values; nan when fewer than 2 are available (one value has no
    spread), and nan when one of them is not finite (the run diverged). `ddof` as in numpy.std.
    Lower means a steadier end of training.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    y = np.asarray(list(val_curve), dtype=float)[-k:]
    if y.size < 2 or y.size <= ddof or not np.all(np.isfinite(y)):
        return math.nan
    return float(np.std(y, ddof=ddof))
