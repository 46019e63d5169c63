"""The latency estimate from counted instructions (edgekit.emulation.estimate), on profiles made
here as SimpleNamespace objects and plain dicts, the two shapes a profile can reach it in."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from edgekit.emulation.estimate import estimate_latency
from edgekit.errors import UsageError


def profile(cpi=None, efficiency=0.7, error=0.3, bandwidth=10.0):
    return NS(
        name="test-phone",
        cpu=NS(
            clusters=[
                NS(core="cortex-a55", count=4, max_ghz=1.8),
                NS(core="cortex-a76", count=2, max_ghz=2.0),  # fastest, listed second on purpose
            ]
        ),
        memory=NS(bandwidth_gbps=bandwidth),
        calibration=NS(cpi=cpi, parallel_efficiency=efficiency, expected_error=error),
    )


def test_one_thread_is_cycles_over_clock_plus_bytes_over_bandwidth():
    p = profile(cpi={"float32": 0.5, "int8": 0.25})
    r = estimate_latency(4e6, 2e6, "int8", p, threads=1)
    # 4e6 insn * 0.25 cycles / 2.0 GHz = 0.5 ms; 2e6 bytes / 10 GB/s = 0.2 ms
    assert r["calibrated"] and r["ms"] == pytest.approx(0.7)
    assert r["ms_1thread"] == pytest.approx(0.7) and r["clock_ghz"] == 2.0
    # the band is a factor: the published figure lies within ms / 1.3 .. ms * 1.3
    assert r["low_ms"] == pytest.approx(0.7 / 1.3) and r["high_ms"] == pytest.approx(0.91)
    assert r["source"] == "estimated" and r["expected_error"] == 0.3


def test_threads_are_capped_at_the_big_cores():
    p = profile(cpi={"float32": 0.5, "int8": 0.25})
    one = estimate_latency(4e6, 0, "float32", p, threads=1)["ms"]
    two = estimate_latency(4e6, 0, "float32", p, threads=2)
    eight = estimate_latency(4e6, 0, "float32", p, threads=8)
    assert one == pytest.approx(1.0)
    assert two["ms"] == pytest.approx(1.0 / 1.7) and two["threads_used"] == 2
    assert eight["ms"] == pytest.approx(two["ms"]) and eight["threads_used"] == 2


def test_big_cores_include_the_prime_cores_siblings():
    # Snapdragon 855: 1 prime + 3 gold Cortex-A76 at a lower clock; 4 threads use all four.
    p = profile(cpi={"float32": 0.5})
    p.cpu.clusters = [
        NS(core="cortex-a76", count=1, max_ghz=2.84),
        NS(core="cortex-a76", count=3, max_ghz=2.42),
        NS(core="cortex-a55", count=4, max_ghz=1.8),
    ]
    r = estimate_latency(4e6, 0, "float32", p, threads=8)
    assert r["threads_used"] == 4 and r["clock_ghz"] == 2.84
    assert r["ms"] == pytest.approx(4e6 * 0.5 / 2.84e6 / (1 + 3 * 0.7))


def test_null_constants_give_counts_only_never_invented_numbers():
    r = estimate_latency(4e6, 1e6, "int8", profile(cpi=None), threads=1)
    assert r["calibrated"] is False and r["ms"] is None
    assert r["instructions"] == 4e6 and "calibration.cpi.int8" in r["reason"]
    r = estimate_latency(4e6, 0, "int8", profile(cpi={"int8": 0.3}, efficiency=None), threads=4)
    assert r["calibrated"] is False and "parallel_efficiency" in r["reason"]
    no_cal = NS(name="x", cpu=NS(clusters=[]), memory=NS(bandwidth_gbps=None), calibration=None)
    assert estimate_latency(1e6, None, "float32", no_cal)["calibrated"] is False


def test_no_bandwidth_drops_the_memory_term_the_fit_had_none():
    # calibrate_devices.py fits such profiles without the term: their cpi carries memory time.
    p = profile(cpi={"float32": 0.5, "int8": 0.25}, bandwidth=None)
    r = estimate_latency(4e6, 5e5, "int8", p)
    assert r["calibrated"] and r["memory_term"] is False and r["ms"] == pytest.approx(0.5)
    with_bw = estimate_latency(4e6, 5e5, "int8", profile(cpi={"int8": 0.25}))
    assert with_bw["memory_term"] is True and with_bw["ms"] == pytest.approx(0.55)


def test_dict_profiles_work_too():
    p = {
        "cpu": {"clusters": [{"core": "a", "count": 1, "max_ghz": 1.0}]},
        "memory": {"bandwidth_gbps": None},
        "calibration": {
            "cpi": {"float32": 1.0},
            "parallel_efficiency": None,
            "expected_error": None,
        },
    }
    r = estimate_latency(1e6, None, "float32", NS(**p))  # sub-sections as plain dicts
    assert r["ms"] == pytest.approx(1.0) and r["low_ms"] is None


@pytest.mark.parametrize(
    "args,match",
    [
        ((-1, 0, "int8"), "instructions"),
        ((1e6, -5, "int8"), "bytes_moved"),
        ((1e6, 0, "fp16"), "precision"),
        ((True, 0, "int8"), "instructions"),
    ],
)
def test_bad_input_is_a_usage_error(args, match):
    with pytest.raises(UsageError, match=match):
        estimate_latency(*args, profile(cpi={"int8": 1.0}))
    with pytest.raises(UsageError, match="threads"):
        estimate_latency(1e6, 0, "int8", profile(cpi={"int8": 1.0}), threads=0)


def a75_phone(cpi, error=0.2, basis=None, status="calibrated"):
    return NS(
        name="a75-phone",
        cpu=NS(clusters=[NS(core="cortex-a75", count=4, max_ghz=2.5)]),
        memory=NS(bandwidth_gbps=None),
        calibration=NS(
            cpi=cpi, parallel_efficiency=0.8, expected_error=error, basis=basis, status=status
        ),
    )


def test_a_cpi_beyond_the_cores_issue_width_is_clamped_and_said():
    # 0.32 cycles per instruction = 3.1 instructions per cycle: more than a 3-wide A75 issues.
    r = estimate_latency(3e8, None, "int8", a75_phone({"int8": 0.32}))
    assert r["clamped"] is True and r["cpi_profile"] == 0.32
    assert r["cpi"] == pytest.approx(1 / 3) and r["bound"]["max_ipc"] == 3
    assert r["implied_ipc"] == pytest.approx(3.0)
    assert r["ms"] == pytest.approx(3e8 / 3 / 2.5e6)
    assert any("more than a cortex-a75 can issue" in n for n in r["notes"])
    assert r["bound"]["source"].startswith("https://")
    fine = estimate_latency(3e8, None, "int8", a75_phone({"int8": 0.5}))
    assert fine["clamped"] is False and fine["implied_ipc"] == pytest.approx(2.0)


def test_threads_never_push_a_core_past_its_bound():
    p = a75_phone({"float32": 1 / 3})
    for t in (1, 2, 4, 8):
        r = estimate_latency(1e9, None, "float32", p, threads=t)
        per_core_ipc = 1e9 / min(t, 4) / (r["ms"] * 2.5e6)
        assert per_core_ipc <= 3 + 1e-9


def test_error_band_and_basis_per_precision():
    p = a75_phone(
        {"float32": 0.9, "int8": 0.5},
        error={"float32": 0.17, "int8": 1.4},
        basis={"float32": "core-class", "int8": "extrapolated"},
        status="extrapolated",
    )
    f = estimate_latency(1e8, None, "float32", p)
    i = estimate_latency(1e8, None, "int8", p)
    assert f["expected_error"] == 0.17 and f["basis"] == "core-class" and not f["extrapolated"]
    assert i["expected_error"] == 1.4 and i["basis"] == "extrapolated" and i["extrapolated"]
    # a band wider than 100% still gives a positive low end
    assert i["low_ms"] == pytest.approx(i["ms"] / 2.4) and i["high_ms"] == pytest.approx(
        i["ms"] * 2.4
    )
    assert any("extrapolated" in n for n in i["notes"])
    # without a basis, the status says it
    q = estimate_latency(1e8, None, "int8", a75_phone({"int8": 0.5}, status="extrapolated"))
    assert q["basis"] == "extrapolated"


def test_a_core_without_a_class_is_estimated_but_flagged_unchecked():
    r = estimate_latency(4e6, 0, "float32", profile(cpi={"float32": 0.5}))  # core "cortex-a76"
    assert r["bound"]["core"] == "cortex-a76"
    p = profile(cpi={"float32": 0.1})
    p.cpu.clusters = [NS(core="mystery-core", count=1, max_ghz=2.0)]
    r = estimate_latency(4e6, 0, "float32", p)
    assert r["bound"] is None and r["clamped"] is False
    assert any("not checked against a bound" in n for n in r["notes"])
