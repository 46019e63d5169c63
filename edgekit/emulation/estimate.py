"""A latency estimate for a device from counted instructions and the profile's calibration.

    cpi         = max(calibration.cpi[precision], 1 / max_ipc[core])
    ms_1thread  = instructions * cpi / (clock_ghz * 1e6) + bytes_moved / (bandwidth_gbps * 1e6)
    ms_Nthreads = ms_1thread / (1 + (min(N, big_cores) - 1) * parallel_efficiency)

clock_ghz is the fastest cluster's; big_cores counts every core of its type (prime + siblings).
max_ipc is the most instructions per cycle that core can issue (devices/cores/<core>.yaml, with its
source): a cpi below 1 / max_ipc would claim more, so it is clamped and the result says so
(`clamped: true`, `bound`). The constants come from the profile (fitted to published figures, see
`profile.published`); where they are null the result has the counts and `calibrated: false`,
never a number made up here. The error band is the profile's for that precision and basis
(`fitted`, `core-class` or `extrapolated`): the published figure lies within a factor
1 + expected_error of the estimate, so low_ms = ms / (1 + e) and high_ms = ms * (1 + e).
A profile with no memory.bandwidth_gbps has no memory term: benchmarks/calibrate_devices.py fits
its cpi without one, so the cpi carries the memory time (`memory_term: false` in the result).
"""

from __future__ import annotations

from typing import Any

from edgekit.errors import UsageError

PRECISIONS = ("float32", "int8")
FORMULA = (
    "ms_1thread = instructions * max(cpi[precision], 1 / max_ipc[core]) / (clock_ghz * 1e6) + "
    "bytes_moved / (bandwidth_gbps * 1e6); ms = ms_1thread / (1 + (min(threads, big_cores) - 1) "
    "* parallel_efficiency)"
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


def _per_precision(value: Any, precision: str) -> Any:
    """A calibration entry that is either one value or a mapping per precision."""
    return value.get(precision) if isinstance(value, dict) else value


def _basis(cal: Any, precision: str) -> str | None:
    basis = _per_precision(_get(cal, "basis"), precision)
    if basis:
        return basis
    return {"calibrated": "fitted", "extrapolated": "extrapolated"}.get(_get(cal, "status"))


def estimate_latency(
    instructions: float,
    bytes_moved: float | None,
    precision: str,
    profile: Any,
    threads: int = 1,
) -> dict[str, Any]:
    """Estimated milliseconds per invoke on `profile`'s fastest cores, with the expected error and
    the core's issue bound; `calibrated: false` and no milliseconds when the profile has no
    constants for this."""
    from edgekit.emulation.cores import bounds

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
    core = _get(fastest, "core")
    # Big cores = every core of the fastest cluster's type: a prime core plus its siblings at a
    # lower clock (SD855: 1 + 3 Cortex-A76) all run the threads, as profiles.Cpu.big_cores says.
    big = sum(int(_get(c, "count") or 1) for c in clusters if _get(c, "core") == core)
    used = min(threads, big)
    bound = bounds(core)
    fitted_cpi = float(cpi)
    clamped = bound is not None and fitted_cpi < bound["min_cpi"]
    cpi_used = bound["min_cpi"] if clamped else fitted_cpi
    ms_1 = instructions * cpi_used / (clock * 1e6)
    compute_ms = ms_1
    memory_term = bool(bandwidth)
    if moved > 0 and memory_term:
        ms_1 += moved / (float(bandwidth) * 1e6)
    speedup = 1.0 + (used - 1) * float(efficiency or 0.0)
    ms = ms_1 / speedup
    err = _per_precision(_get(cal, "expected_error"), precision)
    basis = _basis(cal, precision)
    notes = []
    if clamped:
        notes.append(
            f"the profile's cpi {fitted_cpi:.3g} would mean {1 / fitted_cpi:.2f} instructions per "
            f"cycle, more than a {core} can issue ({bound['max_ipc']:g}): clamped to "
            f"{bound['min_cpi']:.3g}"
        )
    if bound is None:
        notes.append(f"no core class for {core!r}: the estimate is not checked against a bound")
    if basis == "extrapolated":
        notes.append(
            "extrapolated: no published figure of this precision on this core class was fitted; "
            "the band is the one measured for carried-over constants"
        )
    elif basis == "core-class":
        notes.append("constants of other devices of its core class (no figure of its own)")
    return {
        **result,
        "calibrated": True,
        "ms": ms,
        "ms_1thread": ms_1,
        "low_ms": ms / (1 + err) if err is not None else None,
        "high_ms": ms * (1 + err) if err is not None else None,
        "expected_error": err,
        "basis": basis,
        "extrapolated": basis == "extrapolated",
        "clock_ghz": clock,
        "cpi": cpi_used,
        "cpi_profile": fitted_cpi,
        "clamped": clamped,
        "bound": bound,
        # instructions per cycle per core: the issue bound holds them (parallel_efficiency <= 1
        # spreads no more than the 1-thread rate over the cores)
        "implied_ipc": instructions / (compute_ms * clock * 1e6) if compute_ms > 0 else None,
        "threads_used": used,
        "parallel_efficiency": efficiency,
        "bandwidth_gbps": bandwidth,
        "memory_term": memory_term,
        "notes": notes,
        "formula": FORMULA,
    }
