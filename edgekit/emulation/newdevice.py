"""A device profile for a user's own phone or board, from its /proc/cpuinfo and its core clusters.

`new_profile()` reads the cores' MIDR and Features from a /proc/cpuinfo (a pasted file, or read
over adb with `read_adb()`), groups them into clusters with the clocks the user gives (or cpufreq
reports over adb), finds the core class of the big cores (devices/cores/), and copies the
constants of that class from devices/cores/fit.yaml, or of the nearest calibrated class when that
class has none. The profile is marked `status: extrapolated` (no figure of its own was fitted)
with the error band benchmarks/calibrate_devices.py measured for constants carried over that way,
per precision. No TensorFlow here.
"""

from __future__ import annotations

import datetime
import itertools
import math
import re
from pathlib import Path
from typing import Any

from edgekit.errors import UsageError

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_CLUSTER = re.compile(r"^\s*(\d+)\s*[x@]\s*(\d+(?:\.\d+)?)\s*$")


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """The cores of an arm64 /proc/cpuinfo: processor, MIDR fields and Features per core, plus the
    Hardware line when there is one. UsageError for anything else (an x86 or 32-bit cpuinfo)."""
    cores: list[dict[str, Any]] = []
    hardware = None
    cur: dict[str, str] = {}

    def flush() -> None:
        if "processor" in cur:
            cores.append(dict(cur))
        cur.clear()

    for line in text.splitlines():
        if not line.strip():
            flush()
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            flush()
            cur["processor"] = value
        elif key == "Hardware":
            hardware = value
        elif key in ("Features", "CPU implementer", "CPU variant", "CPU part", "CPU revision"):
            cur[key] = value
    flush()
    parsed = []
    for c in cores:
        need = ("CPU implementer", "CPU variant", "CPU part", "CPU revision")
        if not all(k in c for k in need) or not c["processor"].isdigit():
            continue
        try:
            midr = {
                "implementer": _hex(c["CPU implementer"]),
                "variant": _hex(c["CPU variant"]),
                "part": _hex(c["CPU part"]),
                "revision": str(int(c["CPU revision"], 0)),
            }
        except ValueError:
            raise UsageError(
                f"Expected hex MIDR fields in /proc/cpuinfo (CPU part : 0xd0b). Received for "
                f"processor {c['processor']}: {c['CPU implementer']}, {c['CPU part']}"
            ) from None
        parsed.append(
            {
                "processor": int(c["processor"]),
                "midr": midr,
                "features": c.get("Features", "").split(),
            }
        )
    if not parsed:
        raise UsageError(
            "Expected the /proc/cpuinfo of an arm64 device (blocks with 'processor', "
            "'CPU implementer', 'CPU part' and 'Features' lines). Received none: on the phone run "
            "`adb shell cat /proc/cpuinfo > cpuinfo.txt`, or pass --device adb."
        )
    if not any("asimd" in c["features"] for c in parsed):
        raise UsageError(
            "This /proc/cpuinfo lists no 'asimd' feature: it is not from a 64-bit (aarch64) "
            "kernel, and edgekit emulates aarch64 LiteRT. Read it from the device's 64-bit OS."
        )
    return {"cores": sorted(parsed, key=lambda c: c["processor"]), "hardware": hardware}


def _hex(value: str) -> str:
    return f"0x{int(value, 16):x}"


def parse_clusters(spec: str | list[str] | None) -> list[tuple[int, float]]:
    """'1x2.84,3x2.42,4x1.8' (or a list of such items, or COUNT@GHZ) -> [(1, 2.84), ...]."""
    if not spec:
        return []
    items = [spec] if isinstance(spec, str) else list(spec)
    out = []
    for item in items:
        for part in str(item).split(","):
            if not part.strip():
                continue
            m = _CLUSTER.match(part)
            if not m or int(m.group(1)) < 1 or float(m.group(2)) <= 0:
                raise UsageError(
                    f"Expected clusters as COUNTxGHZ items, fastest first (1x2.84,3x2.42,4x1.8). "
                    f"Received: {part.strip()!r}"
                )
            out.append((int(m.group(1)), float(m.group(2))))
    return out


def _groups(cores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cores with the same MIDR, in the order of their first processor, with their core class."""
    from edgekit.emulation.cores import by_midr

    groups: dict[tuple, dict[str, Any]] = {}
    for c in cores:
        key = tuple(c["midr"][k] for k in ("implementer", "variant", "part", "revision"))
        g = groups.setdefault(key, {"midr": c["midr"], "features": c["features"], "cpus": []})
        g["cpus"].append(c["processor"])
    for g in groups.values():
        hit = by_midr(g["midr"]["implementer"], g["midr"]["part"])
        g["class"] = hit[0] if hit else None
        g["name"] = hit[1].name if hit else None
        g["core"] = (
            hit[0].core if hit else f"unknown-{g['midr']['implementer']}-{g['midr']['part']}"
        )
    return list(groups.values())


def _clusters(
    groups: list[dict[str, Any]],
    given: list[tuple[int, float]],
    max_khz: dict[int, int] | None,
) -> list[dict[str, Any]]:
    """Clusters fastest first: from cpufreq per CPU when known, else the user's COUNTxGHZ list
    matched to the core types, biggest core (issue width) first."""
    if max_khz:
        found: dict[tuple, dict[str, Any]] = {}
        for g in groups:
            for cpu in g["cpus"]:
                if cpu not in max_khz:
                    raise UsageError(
                        f"cpufreq has no cpuinfo_max_freq for CPU {cpu}: pass --clusters instead."
                    )
                c = found.setdefault(
                    (g["core"], max_khz[cpu]),
                    {"group": g, "count": 0, "max_ghz": round(max_khz[cpu] / 1e6, 3)},
                )
                c["count"] += 1
        return sorted(found.values(), key=lambda c: -c["max_ghz"])
    if not given:
        raise UsageError(
            "/proc/cpuinfo has no clocks: pass the SoC's clusters fastest first as COUNTxGHZ, "
            "e.g. --clusters 1x2.84,3x2.42,4x1.8 (the vendor's spec sheet lists them), or read "
            "them from the device with --device adb."
        )
    if any(a[1] < b[1] for a, b in itertools.pairwise(given)):
        raise UsageError(f"Expected clusters fastest first. Received: {given}")
    order = sorted(groups, key=lambda g: (-(g["class"].max_ipc if g["class"] else 0), g["cpus"][0]))
    total = sum(len(g["cpus"]) for g in groups)
    if sum(n for n, _ in given) != total:
        raise UsageError(
            f"The clusters add up to {sum(n for n, _ in given)} cores but /proc/cpuinfo lists "
            f"{total}: give every cluster (COUNTxGHZ, fastest first)."
        )
    kinds = ", ".join(f"{len(g['cpus'])}x {g['core']}" for g in order)
    out, left, gi = [], len(order[0]["cpus"]), 0
    for count, ghz in given:
        if count > left:
            raise UsageError(
                f"Cluster {count}x{ghz:g} does not fit the {left} remaining "
                f"{order[gi]['core']} cores: list the clusters fastest first, grouped by core "
                f"type ({kinds})."
            )
        out.append({"group": order[gi], "count": count, "max_ghz": ghz})
        left -= count
        if left == 0 and gi + 1 < len(order):
            gi += 1
            left = len(order[gi]["cpus"])
    return out


def new_profile(
    name: str,
    cpuinfo: str,
    *,
    clusters: str | list[str] | None = None,
    max_khz: dict[int, int] | None = None,
    title: str | None = None,
    kind: str = "phone",
    core_class: str | None = None,
    ram_mb: int | None = None,
    origin: str = "a pasted /proc/cpuinfo",
    today: str | None = None,
) -> dict[str, Any]:
    """A validated profile mapping (`profile`) for a device nobody published figures for, and what
    was decided (`core_class`, `constants_from`, `basis`, `expected_error`, `dropped_features`,
    `notes`). `core_class` overrides the big cores' class (for a core edgekit does not know)."""
    from edgekit.emulation.cores import int8_kernels, nearest, require_core
    from edgekit.emulation.profiles import QEMU_CPU_FEATURES, validate_profile

    if not _NAME.match(name):
        raise UsageError(
            f"Expected a profile name of lower-case letters, digits, '.', '_' or '-' (my-phone). "
            f"Received: {name!r}"
        )
    if kind not in ("phone", "board"):
        raise UsageError(f"Expected kind phone or board. Received: {kind!r}")
    today = today or datetime.date.today().isoformat()
    info = parse_cpuinfo(cpuinfo)
    groups = _groups(info["cores"])
    cl = _clusters(groups, parse_clusters(clusters), max_khz)
    big = cl[0]["group"]
    if core_class:
        cls = require_core(core_class)
    elif big["class"] is None:
        from edgekit.emulation.cores import catalogue

        raise UsageError(
            f"The big cores (CPU implementer {big['midr']['implementer']}, part "
            f"{big['midr']['part']}) are not a core class edgekit knows: pass --core-class with "
            f"the Arm core they derive from (one of {', '.join(sorted(catalogue()))})."
        )
    else:
        cls = big["class"]
    midr, features = big["midr"], list(big["features"])
    kernels = int8_kernels(midr, features)
    # XNNPACK reads the ISA from the emulated CPU: its SDOT must be the device's.
    qemu_cpu = cls.qemu_cpu
    has_dot = "asimddp" in (QEMU_CPU_FEATURES[qemu_cpu] or ())
    if kernels == "dotprod" and not has_dot:
        qemu_cpu = "cortex-a76"
    elif kernels == "no-dotprod" and has_dot:
        qemu_cpu = "cortex-a72" if cls.pipeline == "out-of-order" else "cortex-a53"
    allowed = QEMU_CPU_FEATURES[qemu_cpu] or frozenset(features)
    dropped = [f for f in features if f not in allowed and f != "evtstrm"]
    fit = _require_fit()
    cons, notes = _constants(cls.core, kernels, fit, nearest)
    basis = {p: c["basis"] for p, c in cons.items()}
    errors = {p: round(fit.bands[p][b].error, 2) for p, b in basis.items()}
    cluster_rows = []
    for c in cl:
        g = c["group"]
        core = cls.core if g is big else g["core"]
        row = {"core": core, "count": c["count"], "max_ghz": c["max_ghz"]}
        if g["name"]:
            row = {"core": core, "name": g["name"], "count": c["count"], "max_ghz": c["max_ghz"]}
        cluster_rows.append(row)
    spec = ",".join(f"{c['count']}x{c['max_ghz']:g}" for c in cl)
    clocks = (
        "cpufreq cpuinfo_max_freq of every CPU, read over adb"
        if max_khz
        else f"--clusters {spec} (given by the user, fastest first)"
    )
    described = " + ".join(f"{c['count']}x {c['core']} @{c['max_ghz']:g}GHz" for c in cluster_rows)
    desc = [
        f"Made by `edgekit devices new` on {today} from {origin}"
        + (f" ({info['hardware']})" if info["hardware"] else "")
        + f": {described}.",
        f"No published figure of its own: constants carried over ({'; '.join(notes)}).",
    ]
    if dropped:
        desc.append(
            f"Features the device has but qemu's {qemu_cpu} model lacks, so emulation runs "
            f"without them: {', '.join(dropped)} (XNNPACK on the device may use kernels the count "
            "does not see, e.g. i8mm or SVE ones)."
        )
    method = (
        f"edgekit devices new on {today}: no figure of this device was fitted; constants of core "
        f"class {', '.join(sorted({c['from'] for c in cons.values()}))} from "
        f"devices/cores/fit.yaml ({fit.date}, {fit.script}); "
        + "; ".join(
            f"{p}: {c['basis']} ({c['rule']}), band = the {c['basis']} {p} band measured there"
            for p, c in cons.items()
        )
    )
    raw: dict[str, Any] = {
        "name": name,
        "title": title or f"{name} ({cls.title}-class, extrapolated)",
        "kind": kind,
        "description": " ".join(desc),
        "cpu": {
            "arch": "aarch64",
            "qemu_cpu": qemu_cpu,
            "features": features,
            "midr": midr,
            "clusters": cluster_rows,
        },
        "memory": {"ram_mb": ram_mb, "app_memory_mb": None, "bandwidth_gbps": None},
        "accelerators": ["xnnpack", "gpu", "nnapi"] if kind == "phone" else ["xnnpack"],
        "calibration": {
            "status": "extrapolated",
            # rounded up: a cpi at the issue-width bound must stay at or above it
            "cpi": {p: math.ceil(c["cpi"] * 1e4 - 1e-6) / 1e4 for p, c in cons.items()},
            "parallel_efficiency": fit.parallel_efficiency,
            "expected_error": errors,
            "basis": basis,
            "method": method,
        },
        "published": [],
        "sources": {
            "cpu.clusters": f"{clocks}; core types from the MIDR parts of {origin}",
            "cpu.features": f"{origin}, Features of CPU {big['cpus'][0]} (read {today})",
            "cpu.midr": f"{origin}, CPU {big['cpus'][0]} (read {today})",
            "calibration": f"devices/cores/fit.yaml, written by {fit.script} on {fit.date}",
        },
    }
    if ram_mb is not None:
        raw["sources"]["memory.ram_mb"] = (
            f"MemTotal of /proc/meminfo, {origin}" if max_khz else "given by the user (--ram-mb)"
        )
    profile = validate_profile(raw, f"<devices new {name}>")
    return {
        "profile": raw,
        "validated": profile,
        "core_class": cls.core,
        "constants_from": sorted({c["from"] for c in cons.values()}),
        "basis": basis,
        "expected_error": errors,
        "int8_kernels": kernels,
        "qemu_cpu": qemu_cpu,
        "dropped_features": dropped,
        "notes": notes,
    }


def _require_fit() -> Any:
    from edgekit.emulation.cores import load_fit

    fit = load_fit()
    if fit is None:
        raise UsageError(
            "devices/cores/fit.yaml is missing: run `python benchmarks/calibrate_devices.py "
            "--write` (or reinstall edgekit) to have calibrated core classes to copy from."
        )
    return fit


def _constants(core: str, kernels: str, fit: Any, nearest: Any) -> tuple[dict, list[str]]:
    """Per precision: cpi, basis (core-class when the class was fitted, else extrapolated), the
    class the numbers come from and the rule, as calibrate_devices.py states them."""
    from edgekit.emulation.cores import require_core

    bound = require_core(core).min_cpi
    fitted_float = sorted(c for c, v in fit.classes.items() if v["float32"].basis == "fitted")
    src = core if core in fitted_float else nearest(core, fitted_float)
    cons, notes = {}, []
    for p in ("float32", "int8"):
        entry = fit.classes.get(src, {}).get(p) if src else None
        if entry is None:
            raise UsageError(f"devices/cores/fit.yaml has no {p} constants for {src or core}")
        cpi, rule = entry.cpi, entry.rule
        same_kernels = p == "float32" or entry.kernels in (kernels, "any")
        fitted_here = entry.basis == "fitted" and src == core and same_kernels
        if p == "int8" and not same_kernels:
            ratio = fit.int8_ratio.get(kernels, fit.int8_ratio.get("all"))
            cpi = fit.classes[src]["float32"].cpi * ratio
            rule = f"R1: float32 cpi of {src} x {ratio:.3f}, the int8/float32 ratio of {kernels}"
        elif src != core:
            rule = f"R2: {src} is the nearest calibrated class ({entry.rule})"
        clamped = cpi < bound
        cons[p] = {
            "cpi": max(cpi, bound),
            "basis": "core-class" if fitted_here else "extrapolated",
            "from": src,
            "rule": rule + ("; clamped at the issue width" if clamped else ""),
        }
        notes.append(f"{p} from {src}: {cons[p]['basis']}")
    return cons, notes


def read_adb(target: str = "adb", *, adb: str | None = None) -> dict[str, Any]:
    """/proc/cpuinfo, every CPU's cpuinfo_max_freq, MemTotal and the model name of the device at
    `target` (adb or adb:SERIAL)."""
    from edgekit.runtimes.adb import AdbDevice

    dev = AdbDevice.connect(target, adb=adb, timeout=60.0)
    cpuinfo = dev.shell(["cat", "/proc/cpuinfo"])
    cores = parse_cpuinfo(cpuinfo)["cores"]
    max_khz: dict[int, int] = {}
    for c in cores:
        path = f"/sys/devices/system/cpu/cpu{c['processor']}/cpufreq/cpuinfo_max_freq"
        out = dev.shell(["cat", path]).strip()
        if out.isdigit():
            max_khz[c["processor"]] = int(out)
    ram_mb = None
    for line in dev.shell(["cat", "/proc/meminfo"]).splitlines():
        if line.startswith("MemTotal:") and line.split()[1].isdigit():
            ram_mb = int(line.split()[1]) // 1024
    model = dev.shell(["getprop", "ro.product.model"]).strip() or None
    return {
        "cpuinfo": cpuinfo,
        "max_khz": max_khz if len(max_khz) == len(cores) else None,
        "ram_mb": ram_mb,
        "model": model,
        "serial": dev.serial,
    }


def write_new_profile(result: dict[str, Any], path: str | Path, *, force: bool = False) -> Path:
    """Write the profile YAML atomically; refuse to replace a file unless `force`."""
    import yaml

    from edgekit.artifacts import write_bytes_atomic

    p = Path(path)
    if p.suffix not in (".yaml", ".yml"):
        raise UsageError(f"Expected a .yaml path for the profile. Received: {p}")
    if p.exists() and not force:
        raise UsageError(f"{p} exists: pass --force to replace it, or choose another --out.")
    header = (
        "# Made by `edgekit devices new`: an extrapolated profile (no published figure of this\n"
        "# device was fitted). Use it with --target " + str(p) + "; add figures under `published`\n"
        "# and run benchmarks/calibrate_devices.py to calibrate it for real.\n"
    )
    raw = dict(result["profile"])
    text = header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=100)
    write_bytes_atomic(p, text.encode())
    return p
