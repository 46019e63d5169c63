"""edgekit.check.stats and the numeric parts of edgekit.check.latency / baseline (no models)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekit.check import stats
from edgekit.check.baseline import decode_array, encode_array
from edgekit.check.latency import compare_ratios, quantile_ratio


def exact_two_sided(b: int, c: int) -> float:
    """The textbook definition with integers: 2 * sum_{i <= min(b, c)} C(m, i) / 2^m."""
    m = b + c
    tail = sum(math.comb(m, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**m)


@pytest.mark.parametrize(
    "b,c", [(10, 2), (5, 0), (0, 7), (3, 3), (100, 70), (1200, 1100), (1, 0), (40, 1)]
)
def test_mcnemar_exact_matches_the_integer_definition(b, c):
    assert stats.mcnemar_exact(b, c) == pytest.approx(exact_two_sided(b, c), rel=1e-9)


def test_mcnemar_known_values_and_edge_cases():
    assert stats.mcnemar_exact(10, 2) == pytest.approx(158 / 4096)  # 2 * (1 + 12 + 66) / 2^12
    assert stats.mcnemar_exact(0, 0) == 1.0  # no discordant pair: no evidence
    assert stats.mcnemar_exact(5, 0) == pytest.approx(0.0625)  # 2 / 2^5
    assert stats.mcnemar_exact(6, 0) == pytest.approx(0.03125)  # the smallest all-one-way set


def test_binomial_helpers_against_scipy():
    sps = pytest.importorskip("scipy.stats")
    for k, m, p in [(3, 10, 0.5), (0, 5, 0.2), (40, 100, 0.45), (700, 1500, 0.48)]:
        assert stats.binom_cdf(k, m, p) == pytest.approx(sps.binom.cdf(k, m, p), rel=1e-9)
    for x, m in [(0, 10), (3, 10), (10, 10), (55, 100), (700, 1500)]:
        lo, hi = stats.clopper_pearson(x, m, 0.95)
        want = sps.binomtest(x, m).proportion_ci(0.95, "exact")
        assert (lo, hi) == pytest.approx((want.low, want.high), abs=1e-9)


def test_tango_interval_published_example():
    # Fagerland, Lydersen & Laake (2013), airway hyper-responsiveness example: n12 = 1, n21 = 7,
    # n = 21; Tango's score interval for the difference is (-0.517, -0.026).
    lo, hi = stats.tango_interval(1, 7, 21, 0.95)
    assert lo == pytest.approx(-0.517, abs=5e-4) and hi == pytest.approx(-0.026, abs=5e-4)
    assert stats.tango_interval(7, 1, 21, 0.95) == pytest.approx((-hi, -lo))


def test_tango_interval_has_width_without_discordant_pairs_and_covers():
    lo, hi = stats.tango_interval(0, 0, 300, 0.95)
    assert lo < 0 < hi and hi == pytest.approx(1.96**2 / (300 + 1.96**2), rel=1e-3)
    # Coverage of the true difference, simulated: close to the nominal 95%.
    rng = np.random.default_rng(0)
    p12, p21, n = 0.05, 0.02, 200
    hits = 0
    for _ in range(400):
        b, c, _ = rng.multinomial(n, [p12, p21, 1 - p12 - p21])
        lo, hi = stats.tango_interval(int(b), int(c), n, 0.95)
        hits += lo <= p12 - p21 <= hi
    assert 0.91 <= hits / 400 <= 0.99


def test_paired_drop_fields():
    d = stats.paired_drop(12, 0, 300, alpha=0.05)
    assert d.drop == pytest.approx(0.04) and d.b == 12 and d.c == 0 and d.n == 300
    assert d.ci_low < d.drop < d.ci_high  # not capped at the estimate
    assert d.p_value == pytest.approx(2 / 2**12)
    assert stats.paired_drop(3, 5, 100).drop == pytest.approx(-0.02)


def test_samples_to_decide_grows_the_set_until_the_drop_is_significant():
    b, c, n = 3, 1, 100  # 2 points of drop, p = 0.625: undecided
    assert stats.mcnemar_exact(b, c) > 0.05
    need = stats.samples_to_decide(b, c, n, alpha=0.05)
    assert need > n
    # With that many images and the same discordance rates, the expected counts are significant.
    bb, cc = round(b / n * need), round(c / n * need)
    assert stats.mcnemar_exact(bb, cc) < 0.05
    # ... and a quarter of them would not be (the estimate is not wildly high).
    assert stats.mcnemar_exact(round(bb / 4), round(cc / 4)) > 0.05
    assert stats.samples_to_decide(1, 3, 100) is None  # an improvement needs no decision


def test_holm_step_down():
    assert stats.holm([0.01, 0.04, 0.03, 0.5], 0.05) == [True, False, False, False]
    assert stats.holm([0.001, 0.012, 0.02], 0.05) == [True, True, True]
    assert stats.holm([0.2, 0.01], 0.05) == [False, True]
    assert stats.holm([], 0.05) == []


def test_latency_ratio_comparison_on_known_samples():
    rng = np.random.default_rng(1)
    ref = 1.0 + 0.05 * rng.random(600)
    model = 3.0 * ref * (1 + 0.02 * rng.random(600))
    base = (model, ref)
    assert quantile_ratio(model, ref) == pytest.approx(3.0, rel=0.03)
    # The same machine 1.5x slower for both: no change.
    same = compare_ratios(base, (model * 1.5, ref * 1.5))
    assert same["change"] == pytest.approx(1.0) and same["ci_low"] <= 1.0 <= same["ci_high"]
    # The model 30% slower, the reference not: a change of 1.3 inside a narrow interval.
    slow = compare_ratios(base, (model * 1.3, ref))
    assert slow["change"] == pytest.approx(1.3)
    assert 1.25 < slow["ci_low"] <= 1.3 <= slow["ci_high"] < 1.35


def test_array_encoding_round_trips():
    for arr, dtype in [
        (np.array([0, 3, -1, 65535, 2**31 - 1], np.int64), "int32"),
        (np.array([True, False, True]), "bool"),
        (np.array([0.125, 3.5, 1e-3]), "float32"),
        (np.array([], np.int32), "int32"),
    ]:
        enc = encode_array(arr, dtype)
        assert enc["count"] == len(arr) and enc["encoding"] == "zlib+base64"
        np.testing.assert_array_equal(decode_array(enc), arr.astype(dtype))
    bad = encode_array(np.arange(4), "int32") | {"count": 5}
    with pytest.raises(ValueError, match="expected 5"):
        decode_array(bad)


class _Sleeper:
    """Waits without working: 3 ms of wall time, next to no CPU time."""

    def prepare(self, x):
        pass

    def invoke(self):
        import time

        time.sleep(0.003)


def test_measure_interleaved_cpu_clock_leaves_out_time_not_working():
    from edgekit.bench.latency import measure_interleaved
    from edgekit.errors import UsageError

    wall = measure_interleaved([_Sleeper()], 0, warmup=1, warmup_seconds=0, runs=5, clock="wall")
    cpu = measure_interleaved([_Sleeper()], 0, warmup=1, warmup_seconds=0, runs=5, clock="cpu")
    assert wall.stats[0].p50 >= 2.9 and cpu.stats[0].p50 < 1.0
    with pytest.raises(UsageError, match="clock must be one of wall, cpu"):
        measure_interleaved([_Sleeper()], 0, runs=1, clock="gpu")
