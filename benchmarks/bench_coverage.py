"""Coverage of the report's intervals of a mean over seeds, by simulation.

Draws `--reps` samples of n normal values (n = 2, 3, 5, 10) and counts how often each interval
method of `vitlab.stats` (Student t, percentile bootstrap, BCa) covers the true mean, through the
same batched functions the report uses. Prints a Markdown table for benchmarks/RESULTS.md (with
the machine and the date) and the `MEASURED_COVERAGE` dict that src/vitlab/stats.py quotes.

    python benchmarks/bench_coverage.py                      # 10,000 reps, 2,000 resamples
    python benchmarks/bench_coverage.py --reps 4000 --resamples 1000
"""
from __future__ import annotations

import argparse
import math
import platform
import time
from datetime import date

import numpy as np

from vitlab import stats

SIZES = (2, 3, 5, 10)
TRUE_MEAN, TRUE_SD = 70.0, 2.0  # like a test accuracy in % with a 2-point seed spread


def coverage(method: str, n: int, reps: int, resamples: int, seed: int) -> float:
    x = np.random.default_rng(seed).normal(TRUE_MEAN, TRUE_SD, (reps, n))
    lo, hi = stats.interval_bounds(x, method, 0.95, resamples, seed)
    return float(np.mean((lo <= TRUE_MEAN) & (TRUE_MEAN <= hi)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=10_000, help="simulated samples per (method, n)")
    ap.add_argument("--resamples", type=int, default=2_000, help="bootstrap resamples per interval")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t0 = time.perf_counter()
    table = {m: {n: coverage(m, n, a.reps, a.resamples, a.seed + n) for n in SIZES} for m in stats.CI_METHODS}
    se = math.sqrt(0.95 * 0.05 / a.reps)
    print(f"Machine: {platform.processor() or platform.machine()}, {platform.system()}; date: {date.today()}; "
          f"{a.reps:,} samples per cell, {a.resamples:,} bootstrap resamples, normal data; "
          f"standard error of a 95% coverage ±{se:.1%}; {time.perf_counter() - t0:.0f} s\n")
    print("| nominal 95% interval | " + " | ".join(f"n = {n}" for n in SIZES) + " |")
    print("|---|" + "---:|" * len(SIZES))
    for m in stats.CI_METHODS:
        print(f"| {stats.CI_NAMES[m]} (`--ci {m}`) | " + " | ".join(f"{table[m][n]:.1%}" for n in SIZES) + " |")
    print("\nMEASURED_COVERAGE = {")
    for m in stats.CI_METHODS:
        print(f"    {m!r}: {{" + ", ".join(f"{n}: {table[m][n]:.3f}" for n in SIZES) + "},")
    print("}")


if __name__ == "__main__":
    main()
