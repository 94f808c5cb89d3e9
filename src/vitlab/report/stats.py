"""Statistics over seeds: bootstrap confidence intervals, paired comparisons, stability of a curve.

Every number in a report table comes from here. The functions take plain numbers (lists/arrays,
or {seed: value} mappings for paired data) so they can be checked against hand-written formulas.

Conventions
- The statistic is always the mean over seeds; its uncertainty is a bootstrap confidence interval
  (resampling seeds with replacement).
- With a single seed there is no information about seed-to-seed spread: the interval is
  (nan, nan) and the tables print "no CI" instead of a misleadingly tight interval.
- All resampling is seeded (`seed`), so a report is reproducible bit for bit.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats as _st

CONFIDENCE = 0.95
"""Default confidence level of every interval in a report."""

N_RESAMPLES = 10_000
"""Default number of bootstrap resamples (the Monte-Carlo error of a 95% percentile bound is far
below the printed precision at this size, and it takes milliseconds for a handful of seeds)."""

BOOTSTRAP_SEED = 0
"""Default seed of the bootstrap's random generator (reports are reproducible)."""

BOOTSTRAP_METHOD = "percentile"
"""Default interval method. Percentile is transparent and defined for the 2-5 seeds typical of
these studies; scipy's 'BCa' (bias-corrected, accelerated) is also accepted, but its jackknife
acceleration is unstable at such sizes. 'basic' is accepted as well."""

METHODS = ("percentile", "bca", "basic")

FRACTION_OF_BEST = 0.9
"""Default for `epochs_to_fraction`: the share of the best validation accuracy to reach."""

LAST_K = 5
"""Default for `last_k_std`: how many final epochs the stability spread is measured over."""

STD_DDOF = 0
"""Delta degrees of freedom of `last_k_std` (0: population std of those k epochs, numpy's default)."""


class CI(NamedTuple):
    """Mean with the bounds of its confidence interval (nan bounds: no interval, see `n`)."""

    mean: float
    lo: float
    hi: float


def _as_finite_array(values, name: str = "values") -> np.ndarray:
    x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float).ravel()
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite numbers, got {x.tolist()}")
    return x


def _bootstrap_mean(x: np.ndarray, confidence: float, n_resamples: int, seed: int,
                    method: str) -> tuple[CI, np.ndarray]:
    """CI of the mean of `x` (n >= 2) and the bootstrap distribution of the mean behind it."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    mean = float(np.mean(x))
    if np.all(x == x[0]):
        # Every resample has the same mean: a zero-width interval (BCa would divide by zero here).
        return CI(mean, mean, mean), np.full(n_resamples, mean)
    res = _st.bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                        method=method, vectorized=True, rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return CI(mean, float(ci.low), float(ci.high)), np.asarray(res.bootstrap_distribution)


def bootstrap_ci(values: Sequence[float], confidence: float = CONFIDENCE,
                 n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 method: str = BOOTSTRAP_METHOD) -> CI:
    """Mean of `values` and its bootstrap confidence interval: `CI(mean, lo, hi)`.

    - n = 0: all three are nan.
    - n = 1: (value, nan, nan): one seed says nothing about the spread over seeds.
    - identical values: (v, v, v), a zero-width interval (every resample has mean v).
    - otherwise scipy.stats.bootstrap of the mean, `n_resamples` resamples of the values with
      replacement, `method` interval at level `confidence`, generator seeded with `seed`.
    Non-finite values are a ValueError: the caller decides what a diverged run means.
    """
    x = _as_finite_array(values)
    if x.size == 0:
        return CI(math.nan, math.nan, math.nan)
    if x.size == 1:
        return CI(float(x[0]), math.nan, math.nan)
    return _bootstrap_mean(x, confidence, n_resamples, seed, method)[0]


def _pair(ref_values, values) -> tuple[np.ndarray, np.ndarray]:
    """Matched (ref, other) arrays: by seed for mappings (seeds in both, finite in both),
    by position for sequences (which must then have the same length)."""
    if isinstance(ref_values, Mapping) != isinstance(values, Mapping):
        raise TypeError("pass both as {seed: value} mappings or both as aligned sequences")
    if isinstance(ref_values, Mapping):
        seeds = sorted(set(ref_values) & set(values))
        pairs = [(float(ref_values[s]), float(values[s])) for s in seeds]
    else:
        ref_values, values = list(ref_values), list(values)
        if len(ref_values) != len(values):
            raise ValueError(f"aligned sequences need equal lengths, got {len(ref_values)} and {len(values)}")
        pairs = [(float(a), float(b)) for a, b in zip(ref_values, values)]
    pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    ref = np.array([a for a, _ in pairs], dtype=float)
    other = np.array([b for _, b in pairs], dtype=float)
    return ref, other


def paired_comparison(ref_values, values, confidence: float = CONFIDENCE,
                      n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                      method: str = BOOTSTRAP_METHOD, higher_is_better: bool = True) -> dict:
    """Compare `values` with `ref_values` over the same seeds.

    Pairs: for {seed: value} mappings, the seeds present (and finite) in both; for sequences, the
    positions (the caller aligned them). With d_s = value_s - ref_s for each paired seed s:

    - diff_mean: mean of d over the pairs (positive: `values` is higher than the reference);
    - lo, hi: bootstrap CI of that mean (resampling the *pairs*, so the seed effect cancels);
    - p_improve: probability of improvement, defined as the fraction of the bootstrap resamples
      whose mean paired difference is strictly better than 0 (> 0 when `higher_is_better`, < 0
      otherwise). It uses the same resamples as the interval, so lo > 0 implies
      p_improve >= 1 - (1 - confidence) / 2 for a percentile interval. Ties at exactly 0 count as
      no improvement. It is a bootstrap summary of the evidence, not a Bayesian posterior.
    - n: number of pairs. With n = 1 the interval and p_improve are nan; with n = 0 all are nan.
    """
    ref, other = _pair(ref_values, values)
    n = int(ref.size)
    nan = math.nan
    if n == 0:
        return {"diff_mean": nan, "lo": nan, "hi": nan, "p_improve": nan, "n": 0}
    d = other - ref
    if n == 1:
        return {"diff_mean": float(d[0]), "lo": nan, "hi": nan, "p_improve": nan, "n": 1}
    ci, dist = _bootstrap_mean(d, confidence, n_resamples, seed, method)
    better = dist > 0 if higher_is_better else dist < 0
    return {"diff_mean": ci.mean, "lo": ci.lo, "hi": ci.hi, "p_improve": float(np.mean(better)), "n": n}


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
