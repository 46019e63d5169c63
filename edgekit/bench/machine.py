"""The machine a measurement ran on, and the process's memory. Cheap: no TensorFlow, no psutil
unless it is needed for the physical core count."""

from __future__ import annotations

import os
import platform
import sys
from functools import cache
from typing import Any

_VECTOR_FLAGS = ("avx512f", "avx2", "avx", "sse4_2", "neon", "asimd", "sve")


def _cpuinfo() -> dict[str, str]:
    """First processor block of /proc/cpuinfo (Linux), as key -> value."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if info:
                        break
                    continue
                k, _, v = line.partition(":")
                info.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    return info


@cache
def machine_info() -> dict[str, Any]:
    """CPU model, cores (logical, physical, usable by this process), vector extensions, OS."""
    ci = _cpuinfo()
    model = ci.get("model name") or ci.get("Model") or platform.processor() or platform.machine()
    flags = set((ci.get("flags") or ci.get("Features") or "").split())
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    physical = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unsupported platform
        pass
    mhz = ci.get("cpu MHz")
    return {
        "cpu": " ".join(model.split()),
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "usable_cores": usable,
        "cpu_mhz": float(mhz) if mhz else None,
        "vector_extensions": [f for f in _VECTOR_FLAGS if f in flags],
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def machine_line(m: dict[str, Any] | None = None) -> str:
    """One line for people: CPU model and cores."""
    m = m or machine_info()
    if m.get("usable_cores") is None:
        return f"{m['cpu']}, {m['os']}"
    cores = f"{m['usable_cores']} usable of {m['logical_cores']} logical cores"
    if m.get("physical_cores"):
        cores += f" ({m['physical_cores']} physical)"
    return f"{m['cpu']}, {cores}, {m['os']}"


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        import psutil

        return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """High-water mark of this process's resident set size so far, in MiB.

    The kernel updates the rusage mark lazily, so it can trail the current RSS by a few pages; the
    larger of the two is returned."""
    try:
        import resource
    except ImportError:  # Windows
        import psutil

        return float(getattr(psutil.Process().memory_info(), "peak_wset", 0)) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    peak_mb = peak / 2**20 if sys.platform == "darwin" else peak / 2**10
    return max(peak_mb, current_rss_mb())
