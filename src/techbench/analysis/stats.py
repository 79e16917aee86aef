"""Statistics over seeds: means with Student-t confidence intervals, and paired differences."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    mean: float
    half_width: float  # the CI is mean ± half_width; NaN when n < 2
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def excludes(self, value: float = 0.0) -> bool:
        return math.isfinite(self.half_width) and not (self.low <= value <= self.high)

    def direction(self) -> str:
        """What the interval says about a difference: "higher" or "lower" when it excludes 0, else
        "not distinguishable"."""
        if not self.excludes(0):
            return "not distinguishable"
        return "higher" if self.mean > 0 else "lower"

    def fmt(self, scale: float = 1.0, digits: int = 2) -> str:
        if self.n == 0:
            return "n/a"
        hw = "n/a" if not math.isfinite(self.half_width) else f"{self.half_width * scale:.{digits}f}"
        return f"{self.mean * scale:.{digits}f} ± {hw}"


def mean_ci(values, confidence: float = 0.95) -> Estimate:
    """Mean and the two-sided Student-t confidence interval of the mean; non-finite values are dropped."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Estimate(float("nan"), float("nan"), 0)
    if n == 1:
        return Estimate(float(x[0]), float("nan"), 1)
    sem = x.std(ddof=1) / math.sqrt(n)
    return Estimate(float(x.mean()), float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sem), n)


def paired_diff_ci(a: dict[int, float], b: dict[int, float], confidence: float = 0.95) -> Estimate:
    """CI of mean(a - b) over the seeds both have (paired seeds share init and data order)."""
    common = sorted(set(a) & set(b))
    return mean_ci([a[s] - b[s] for s in common], confidence)


def equivalent(a: dict[int, float], b: dict[int, float], margin: float) -> tuple[bool, bool, Estimate]:
    """Two one-sided tests at level 0.05 of |mean(a - b)| < margin, paired over seeds: (equivalent, different,
    the 90 % CI). Equivalent when the 90 % CI lies inside ±margin; different when the 95 % CI lies outside it."""
    d90, d95 = paired_diff_ci(a, b, 0.90), paired_diff_ci(a, b)
    ok = d90.n > 1 and -margin < d90.low and d90.high < margin
    return ok, d95.n > 1 and (d95.low > margin or d95.high < -margin), d90


def paired_test(a: dict[int, float], b: dict[int, float]) -> tuple[float, str]:
    """Two-sided paired t-test of mean(a - b) = 0 over the seeds both have, and what kind of difference it is.
    A difference that is the same non-zero number on every seed has zero variance: its t statistic is
    infinite, so p = 0 ("constant"), not the undefined value a t-test library returns; a difference of zero
    on every seed is p = 1 ("identical"); fewer than two common seeds: NaN ("too few")."""
    common = sorted(set(a) & set(b))
    d = np.asarray([a[s] - b[s] for s in common], dtype=float)
    if len(d) < 2:
        return float("nan"), "too few"
    if np.ptp(d) == 0:
        return (1.0, "identical") if d[0] == 0 else (0.0, "constant")
    return float(stats.ttest_rel([a[s] for s in common], [b[s] for s in common]).pvalue), "varies"


def censored_median(times: list[float], reached: list[bool]) -> float | None:
    """Kaplan-Meier median of a time to target where runs that never reached it are right-censored at their
    full length (they count, as "at least this long"): the first time the estimated fraction still short of
    the target drops to 1/2 or below; None if it never does (fewer than half reached it)."""
    if not times:
        return None
    done = [t for t, r in zip(times, reached, strict=True) if r]
    short = [t for t, r in zip(times, reached, strict=True) if not r]
    if not done:
        return None
    sf = stats.ecdf(stats.CensoredData(uncensored=done, right=short)).sf
    below = [q for q, p in zip(sf.quantiles, sf.probabilities, strict=True) if p <= 0.5]
    return float(below[0]) if below else None
