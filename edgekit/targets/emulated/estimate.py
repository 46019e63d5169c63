"""A latency estimate for a device from counted instructions and the profile's calibration.

    ms_1thread  = instructions * cpi[precision] / (clock_ghz * 1e6)
                  + bytes_moved / (bandwidth_gbps * 1e6)
    ms_Nthreads = ms_1thread / (1 + (min(N, big_cores) - 1) * parallel_efficiency)

clock_ghz is the fastest cluster's; big_cores counts every core of its type (prime + siblings).
The constants come from the profile (fitted to published figures, see `profile.published`);
where they are null the result has the counts and `calibrated: false`, never a number made up
here. A profile with no
memory.bandwidth_gbps has no memory term: benchmarks/calibrate_devices.py fits its cpi without
one, so the cpi carries the memory time (`memory_term: false` in the result).
"""

from __future__ import annotations

from typing import Any

from edgekit.errors import UsageError

PRECISIONS = ("float32", "int8")
FORMULA = (
    "ms_1thread = instructions * cpi[precision] / (clock_ghz * 1e6) + bytes_moved / "
    "(bandwidth_gbps * 1e6); ms = ms_1thread / (1 + (min(threads, big_cores) - 1) * "
    "parallel_efficiency)"
)


def _get(obj: Any, key: str) -> Any:
    """A field of a pydantic model, a namespace or a plain dict (profiles come as all three)."""
    if obj is None:
        return None
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _number(value: Any, name: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise UsageError(f"Expected {name} to be a number >= {minimum:g}. Received: {value!r}")
    return float(value)


def estimate_latency(
    instructions: float,
    bytes_moved: float | None,
    precision: str,
    profile: Any,
    threads: int = 1,
) -> dict[str, Any]:
    """Estimated milliseconds per invoke on `profile`'s fastest cores, with the expected error;
    `calibrated: false` and no milliseconds when the profile has no constants for this."""
    instructions = _number(instructions, "instructions")
    moved = 0.0 if bytes_moved is None else _number(bytes_moved, "bytes_moved")
    if precision not in PRECISIONS:
        raise UsageError(
            f"Expected precision one of {', '.join(PRECISIONS)}. Received: {precision!r}"
        )
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UsageError(f"Expected threads to be an integer >= 1. Received: {threads!r}")
    clusters = list(_get(_get(profile, "cpu"), "clusters") or [])
    fastest = max(clusters, key=lambda c: _get(c, "max_ghz") or 0.0) if clusters else None
    cal = _get(profile, "calibration")
    cpi = _get(_get(cal, "cpi"), precision)
    efficiency = _get(cal, "parallel_efficiency")
    bandwidth = _get(_get(profile, "memory"), "bandwidth_gbps")
    result: dict[str, Any] = {
        "device": getattr(profile, "name", None),
        "instructions": instructions,
        "bytes_moved": bytes_moved,
        "precision": precision,
        "threads": threads,
        "source": "estimated",
    }
    missing = []
    if cpi is None:
        missing.append(f"calibration.cpi.{precision}")
    if fastest is None or not _get(fastest, "max_ghz"):
        missing.append("cpu.clusters[].max_ghz")
    if threads > 1 and efficiency is None:
        missing.append("calibration.parallel_efficiency")
    if missing:
        return {
            **result,
            "calibrated": False,
            "ms": None,
            "reason": f"the profile has no {', '.join(missing)}; only the counts are reported",
        }
    clock = float(_get(fastest, "max_ghz"))
    # Big cores = every core of the fastest cluster's type: a prime core plus its siblings at a
    # lower clock (SD855: 1 + 3 Cortex-A76) all run the threads, as profiles.Cpu.big_cores says.
    big = sum(
        int(_get(c, "count") or 1) for c in clusters if _get(c, "core") == _get(fastest, "core")
    )
    used = min(threads, big)
    ms_1 = instructions * float(cpi) / (clock * 1e6)
    memory_term = bool(bandwidth)
    if moved > 0 and memory_term:
        ms_1 += moved / (float(bandwidth) * 1e6)
    speedup = 1.0 + (used - 1) * float(efficiency or 0.0)
    ms = ms_1 / speedup
    err = _get(cal, "expected_error")
    return {
        **result,
        "calibrated": True,
        "ms": ms,
        "ms_1thread": ms_1,
        "low_ms": ms * (1 - err) if err is not None else None,
        "high_ms": ms * (1 + err) if err is not None else None,
        "expected_error": err,
        "clock_ghz": clock,
        "cpi": float(cpi),
        "threads_used": used,
        "parallel_efficiency": efficiency,
        "bandwidth_gbps": bandwidth,
        "memory_term": memory_term,
        "formula": FORMULA,
    }
