"""Paired statistics for `edgekit check`: exact McNemar test, Tango's score interval for the paired
accuracy drop, Holm's step-down correction and the sample size needed to decide.

Notation (see docs/check.md): on n samples evaluated by the baseline and the candidate,
b = samples the baseline got right and the candidate got wrong, c = the reverse. Only these
discordant pairs carry information about a difference; the drop is (b - c) / n.

numpy and the standard library only (no scipy at run time).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np


def _log_binom_coeffs(m: int) -> np.ndarray:
    """log C(m, i) for i = 0..m, by a cumulative sum of log((m - i + 1) / i)."""
    i = np.arange(1, m + 1, dtype=np.float64)
    return np.concatenate(([0.0], np.cumsum(np.log(m - i + 1) - np.log(i))))


def binom_cdf(k: int, m: int, p: float, *, _logc: np.ndarray | None = None) -> float:
    """P(X <= k) for X ~ Binomial(m, p), summed in log space (exact up to float rounding)."""
    if k < 0:
        return 0.0
    if k >= m:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    logc = _log_binom_coeffs(m) if _logc is None else _logc
    i = np.arange(0, k + 1, dtype=np.float64)
    terms = logc[: k + 1] + i * math.log(p) + (m - i) * math.log1p(-p)
    top = terms.max()
    return float(min(1.0, math.exp(top) * np.exp(terms - top).sum()))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: under "no difference", b ~ Binomial(b + c, 1/2).

    p = min(1, 2 * P(X <= min(b, c))). With no discordant pair there is no evidence: p = 1.
    """
    m = b + c
    if m == 0:
        return 1.0
    return min(1.0, 2.0 * binom_cdf(min(b, c), m, 0.5))


def clopper_pearson(x: int, m: int, confidence: float) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for a binomial proportion x / m, by bisection on the CDF.

    Each bound leaves (1 - confidence) / 2 in its tail; x = 0 gives 0 and x = m gives 1.
    """
    if m == 0:
        return 0.0, 1.0
    tail = (1.0 - confidence) / 2.0
    logc = _log_binom_coeffs(m)

    def solve(cdf_at: int, target: float) -> float:
        # CDF(k; theta) decreases as theta grows: find theta where it equals target.
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if binom_cdf(cdf_at, m, mid, _logc=logc) > target:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    # Lower: P(X >= x | theta) = tail, i.e. CDF(x - 1) = 1 - tail. Upper: CDF(x) = tail.
    lower = 0.0 if x == 0 else solve(x - 1, 1.0 - tail)
    upper = 1.0 if x == m else solve(x, tail)
    return lower, upper


@dataclass
class PairedDrop:
    """A paired comparison of top-1 correctness between baseline and candidate."""

    n: int  # samples compared
    b: int  # baseline right, candidate wrong
    c: int  # baseline wrong, candidate right
    drop: float  # (b - c) / n, a fraction (positive: the candidate is worse)
    ci_low: float
    ci_high: float
    p_value: float  # two-sided exact McNemar
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tango_interval(b: int, c: int, n: int, confidence: float) -> tuple[float, float]:
    """Tango's (1998) asymptotic score interval for the paired difference (b - c) / n.

    The set of differences d that a score test does not reject: |T(d)| <= z(1 - alpha/2) with
    T(d) = (b - c - n d) / sqrt(n (2 q(d) + d (1 - d))), where q(d) is the restricted maximum
    likelihood estimate of c / n given d. Unlike an interval conditional on b + c, it accounts for
    the randomness of the discordant count, and it has a non-zero width when b = c = 0.
    Fagerland, Lydersen & Laake (2013) recommend it for paired proportions.
    """
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)

    def t(d: float) -> float:
        a_ = 2.0 * n
        b_ = -b - c + (2.0 * n - b + c) * d
        c_ = -c * d * (1.0 - d)
        q = (math.sqrt(max(b_ * b_ - 4 * a_ * c_, 0.0)) - b_) / (2 * a_)
        var = n * (2 * q + d * (1 - d))
        num = b - c - n * d
        if var <= 0:
            return math.copysign(math.inf, num) if num else 0.0
        return num / math.sqrt(var)

    est = (b - c) / n

    def bound(lo: float, hi: float, target: float) -> float:
        # t decreases in d: find d in [lo, hi] with t(d) = target.
        for _ in range(100):
            mid = (lo + hi) / 2
            if t(mid) > target:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    lower = -1.0 if t(-1.0) <= z else bound(-1.0, est, z)
    upper = 1.0 if t(1.0) >= -z else bound(est, 1.0, -z)
    return lower, upper


def paired_drop(b: int, c: int, n: int, *, alpha: float = 0.05) -> PairedDrop:
    """Drop (b - c) / n with its exact McNemar p-value and Tango's (1 - alpha) score interval.

    The decision uses the exact test, which is conservative; the interval is asymptotic. In rare
    borderline cases (few discordant pairs) the interval can exclude 0 while the exact test is
    not significant: the test decides, and the check reports a warning rather than a failure.
    """
    if n <= 0:
        return PairedDrop(0, 0, 0, 0.0, 0.0, 0.0, 1.0, 1 - alpha)
    lo, hi = tango_interval(b, c, n, 1 - alpha)
    return PairedDrop(n, b, c, (b - c) / n, lo, hi, mcnemar_exact(b, c), 1 - alpha)


def samples_to_decide(
    b: int, c: int, n: int, *, alpha: float = 0.05, power: float = 0.8
) -> int | None:
    """Samples for a two-sided McNemar test at `alpha` to detect the observed drop with `power`,
    if the observed discordance rates are the truth (Connor 1987's normal approximation):

        n = (z(1 - alpha/2) * sqrt(pd) + z(power) * sqrt(pd - d^2))^2 / d^2,

    pd = (b + c) / n the discordant rate, d = (b - c) / n the drop. None when there is no drop.
    """
    if n <= 0 or b <= c:
        return None
    pd, d = (b + c) / n, (b - c) / n
    z = NormalDist()
    za, zb = z.inv_cdf(1 - alpha / 2), z.inv_cdf(power)
    need = (za * math.sqrt(pd) + zb * math.sqrt(max(pd - d * d, 0.0))) ** 2 / (d * d)
    # Never below what the exact test needs at all: 2 * 0.5^m < alpha needs m discordant pairs.
    min_pairs = math.ceil(math.log2(2 / alpha))
    return max(math.ceil(need), math.ceil(min_pairs / pd), n + 1)


def holm(p_values: list[float], alpha: float) -> list[bool]:
    """Holm's step-down procedure: which hypotheses to reject with family-wise error <= alpha."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    reject = [False] * len(p_values)
    k = len(p_values)
    for rank, i in enumerate(order):
        if p_values[i] < alpha / (k - rank):
            reject[i] = True
        else:
            break
    return reject
