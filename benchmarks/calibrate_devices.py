"""Fit the latency-estimate constants of the device profiles to published figures, and say how well
the fitted model predicts figures it did not see.

    python benchmarks/calibrate_devices.py [--jobs 2] [--write] [--json OUT.json]

For every published CPU figure in devices/*.yaml whose network tf_keras.applications can build
(mobilenet v1/v2/v3-large/v3-small 1.0 224, nasnet_mobile, inception_resnet_v2; weights=None:
the weights do not change the latency of a dense network), the script
1. builds the network and converts it to float32 and full-integer int8 .tflite (int8 calibrated
   on random uniform data: the ranges change the values, not the work done);
2. counts the aarch64 instructions of one invoke under qemu-aarch64 with the profile's core,
   features and MIDR, 1 thread (edgekit.emulation.qemu.count_instructions), and the bytes moved
   (edgekit.emulation.static.analyze);
3. fits, in log space (relative error), the constants of edgekit/emulation/estimate.py:
       cpi[core, float32] = exp(a[core])                  one a per core type
       cpi[core, int8]    = exp(a[core] + b + d[class])   class: the core has SDOT or not; d is
                                                          pulled to 0 by a weak ridge
       parallel_efficiency                                one, shared by all devices
   The memory term (bytes / bandwidth) is kept where the profile has memory.bandwidth_gbps and
   dropped where it is null (the fitted cpi then absorbs memory time, as estimate.py does).
   expected_error = the 80th percentile of the held-out |error| over all fitted figures.
4. prints every figure with its estimate and relative error, then refits without each figure
   (leave-one-out) and without each network (all its figures on every device) and prints the
   held-out errors.

Figures from 32-bit (armv7) builds are not fitted: their instruction mix is not the aarch64 one
counted here. They are printed beside the estimate for comparison where the device has constants.
GPU and NNAPI figures are not CPU figures and are skipped; so are networks tf_keras.applications
lacks (squeezenet, inception_v4).

Instruction counting runs float models ~500x slower than the host: the first run takes tens of
minutes; the .tflite files and the counts are cached in benchmarks/.cache (keyed by the model's
sha256, qemu cpu, features, MIDR, cores, threads and runs), so later runs take seconds.
--write puts the fitted constants into the profiles' `calibration:` blocks.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import re
import shlex
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CACHE = Path(__file__).resolve().parent / ".cache"
SCRIPT = "benchmarks/calibrate_devices.py"
RUNS = 2  # counted invokes per model (counts repeat to ~0.03% at 1 thread)

# tf_keras.applications builders: (class name, input size, extra kwargs)
NETWORKS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "mobilenet_v1_1.0_224": ("MobileNet", 224, {"alpha": 1.0}),
    "mobilenet_v2_1.0_224": ("MobileNetV2", 224, {"alpha": 1.0}),
    "mobilenet_v3_large_1.0_224": (
        "MobileNetV3Large",
        224,
        {"alpha": 1.0, "include_preprocessing": False},
    ),
    "mobilenet_v3_small_1.0_224": (
        "MobileNetV3Small",
        224,
        {"alpha": 1.0, "include_preprocessing": False},
    ),
    "nasnet_mobile": ("NASNetMobile", 224, {}),
    "inception_resnet_v2": ("InceptionResNetV2", 299, {}),
}


# --- figures ------------------------------------------------------------------------------------


def collect_figures(profiles: list[Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every published figure as a row: usable ones (fit / armv7 comparison) and skip notes."""
    rows, skipped = [], []
    for p in profiles:
        for i, f in enumerate(p.published):
            label = f"{p.name} {f.model} {f.precision} {f.threads}t {f.delegate}"
            if f.delegate != "cpu":
                skipped.append(f"{label}: {f.delegate} delegate, not a CPU figure")
                continue
            if f.model not in NETWORKS:
                skipped.append(f"{label}: tf_keras.applications has no {f.model}")
                continue
            rows.append(
                {
                    "device": p.name,
                    "index": i,
                    "core": p.cpu.clusters[0].core,
                    "model": f.model,
                    "precision": f.precision,
                    "threads": f.threads,
                    "ms": f.ms,
                    "abi": f.abi,
                    "source": f.source,
                    "fit": f.abi == "aarch64",
                }
            )
    return rows, skipped


# --- models and counts (cached) -----------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_models(needed: set[tuple[str, str]]) -> dict[tuple[str, str], Path]:
    """(network, precision) -> .tflite path, built once into the cache."""
    out = CACHE / "models"
    paths = {k: out / f"{k[0]}_{k[1]}.tflite" for k in needed}
    todo = sorted(k for k, p in paths.items() if not p.is_file())
    if not todo:
        return paths
    import numpy as np

    from edgekit import keras_compat
    from edgekit.export import tflite

    tfk = keras_compat.tf_keras()
    for net in sorted({n for n, _ in todo}):
        cls, size, kwargs = NETWORKS[net]
        tfk.backend.clear_session()
        tfk.utils.set_random_seed(0)
        model = getattr(tfk.applications, cls)(
            weights=None, input_shape=(size, size, 3), classes=1000, **kwargs
        )
        loaded = keras_compat.wrap(model)
        for net2, precision in todo:
            if net2 != net:
                continue
            print(f"building {net} {precision} ...", file=sys.stderr, flush=True)
            if precision == "int8":
                # Random calibration data: full-integer ranges change values, not the work done.
                calib = np.random.default_rng(0).random((8, size, size, 3), dtype=np.float32)
                tflite.convert(
                    loaded,
                    paths[(net, precision)],
                    quantization="int8",
                    calibration=calib,
                    batch_size=1,
                )
            else:
                tflite.convert(loaded, paths[(net, precision)], batch_size=1)
    return paths


def count_key(model_sha: str, profile: Any, threads: int, runs: int) -> str:
    cpu = profile.cpu
    cores = cpu.big_cores or 1
    text = json.dumps(
        [model_sha, cpu.qemu_cpu, sorted(cpu.features), cpu.midr, cores, threads, runs],
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def count(path: Path, profile: Any, runs: int = RUNS) -> dict[str, Any]:
    """Instructions of one invoke of `path` on `profile`'s big core (1 thread), cached."""
    sha = _sha256(path)
    f = CACHE / "counts" / f"{path.stem}.{count_key(sha, profile, 1, runs)}.json"
    if f.is_file():
        return {**json.loads(f.read_text()), "cached": True}
    from edgekit.artifacts import write_bytes_atomic
    from edgekit.targets.emulated import qemu

    cpu = profile.cpu
    t0 = time.monotonic()
    res = qemu.count_instructions(
        path,
        qemu_cpu=cpu.qemu_cpu,
        features=list(cpu.features),
        midr=cpu.midr,
        cores=cpu.big_cores or 1,
        threads=1,
        runs=runs,
        timeout=4 * 3600.0,
    )
    res["count_seconds"] = round(time.monotonic() - t0, 1)
    res["model_sha256"] = sha
    res["features"] = list(cpu.features)
    res["midr"] = cpu.midr
    f.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(f, json.dumps(res, indent=1).encode())
    return res


def measure(rows: list[dict[str, Any]], profiles: dict[str, Any], jobs: int) -> None:
    """Fill instructions and bytes_moved into every row (counting what the cache lacks)."""
    from edgekit.targets.emulated.static import analyze

    paths = build_models({(r["model"], r["precision"]) for r in rows})
    moved = {
        k: analyze(p, gpu_analyzer=False, xnnpack_check=False)["totals"]["bytes_moved"]
        for k, p in paths.items()
    }
    # One count per (model file, core description): devices sharing a core reuse it.
    tasks: dict[tuple, tuple[Path, Any]] = {}
    for r in rows:
        prof = profiles[r["device"]]
        c = prof.cpu
        key = (
            r["model"],
            r["precision"],
            c.qemu_cpu,
            tuple(c.features),
            json.dumps(c.midr),
            c.big_cores,
        )
        r["_count_key"] = key
        tasks.setdefault(key, (paths[(r["model"], r["precision"])], prof))
    # Fitted figures first, cheap models first: a partial run is still useful.
    fitted = {r["_count_key"] for r in rows if r["fit"]}
    order = sorted(tasks, key=lambda k: (k not in fitted, tasks[k][0].stat().st_size, k))
    results: dict[tuple, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futs = {pool.submit(count, *tasks[k]): k for k in order}
        for fut in as_completed(futs):
            k = futs[fut]
            results[k] = fut.result()
            took = results[k].get("count_seconds")
            print(
                f"counted {k[0]} {k[1]} on {k[2]} ({len(results)}/{len(tasks)})"
                + (" (cached)" if results[k].get("cached") else f" in {took:.0f} s"),
                file=sys.stderr,
                flush=True,
            )
    for r in rows:
        c = results[r.pop("_count_key")]
        r["instructions"] = float(c["median"])
        r["count_spread"] = c.get("spread")
        r["bytes_moved"] = float(moved[(r["model"], r["precision"])])


# --- the model and its fit ----------------------------------------------------------------------


def predict(r: dict[str, Any], prof: Any, cpi: float, eff: float) -> float:
    """The estimate in ms, as edgekit/emulation/estimate.py computes it."""
    from edgekit.targets.emulated.estimate import estimate_latency

    cal = {"cpi": {r["precision"]: cpi}, "parallel_efficiency": eff, "expected_error": None}
    view = {"cpu": prof.cpu, "memory": prof.memory, "calibration": cal}
    out = estimate_latency(r["instructions"], r["bytes_moved"], r["precision"], view, r["threads"])
    return out["ms"]


# int8 kernels differ by whether the core has the dot-product instructions (SDOT: 16 MACs per
# instruction) or not: one int8 cpi factor per class, pulled toward a shared one by a weak ridge
# penalty so that a class with no figure left (leave-one-out) falls back to the shared factor.
RIDGE = 0.1


def int8_class(profile: Any) -> str:
    return "dotprod" if profile.cpu.dotprod else "no-dotprod"


def _unpack(theta: Any, cores: list[str]) -> dict[str, Any]:
    n = len(cores)
    eff = 1.0 / (1.0 + math.exp(-float(theta[n + 3])))
    return {
        "a": {c: float(theta[i]) for i, c in enumerate(cores)},
        "b": float(theta[n]),
        "d": {"dotprod": float(theta[n + 1]), "no-dotprod": float(theta[n + 2])},
        "eff": eff,
        "cores": cores,
    }


def cpi_of(params: dict[str, Any], core: str, precision: str, klass: str) -> float | None:
    """cpi[core, precision] = exp(a[core] + (b + d[class]) if int8)."""
    if core not in params["a"]:
        return None
    log_cpi = params["a"][core]
    if precision == "int8":
        log_cpi += params["b"] + params["d"][klass]
    return math.exp(log_cpi)


def _fast_pred(r: dict[str, Any], prof: Any, params: dict[str, Any]) -> float:
    cpi = cpi_of(params, r["core"], r["precision"], int8_class(prof))
    ms = r["instructions"] * cpi / (prof.cpu.max_ghz * 1e6)
    bw = prof.memory.bandwidth_gbps
    if bw:
        ms += r["bytes_moved"] / (bw * 1e6)
    used = min(r["threads"], prof.cpu.big_cores or 1)
    return ms / (1.0 + (used - 1) * params["eff"])


def fit(rows: list[dict[str, Any]], profiles: dict[str, Any]) -> dict[str, Any]:
    """Least squares on log(estimate / published) over `rows` (+ the ridge on the int8 classes)."""
    import numpy as np
    from scipy.optimize import least_squares

    cores = sorted({r["core"] for r in rows})

    def resid(theta: Any) -> Any:
        p = _unpack(theta, cores)
        res = [math.log(_fast_pred(r, profiles[r["device"]], p) / r["ms"]) for r in rows]
        return np.array([*res, RIDGE * p["d"]["dotprod"], RIDGE * p["d"]["no-dotprod"]])

    x0 = np.zeros(len(cores) + 4)
    x0[-1] = 1.0
    sol = least_squares(resid, x0)
    return _unpack(sol.x, cores)


def estimate_row(r: dict[str, Any], params: dict[str, Any], profiles: dict[str, Any]) -> float:
    cpi = cpi_of(params, r["core"], r["precision"], int8_class(profiles[r["device"]]))
    if cpi is None:
        return float("nan")
    return predict(r, profiles[r["device"]], cpi, params["eff"])


# --- report -------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return "-" if x != x else f"{x * 100:+.0f}%"


def _ms(x: float) -> str:
    return "-" if x != x else f"{x:.1f}"


def _summary(errs: list[float]) -> str:
    a = sorted(abs(e) for e in errs if e == e)
    if not a:
        return "n/a"
    p80 = a[min(len(a) - 1, math.ceil(0.8 * len(a)) - 1)]
    return (
        f"median |err| {statistics.median(a) * 100:.0f}%, p80 {p80 * 100:.0f}%, "
        f"max {a[-1] * 100:.0f}% (n={len(a)})"
    )


def implied_cpi(
    rows: list[dict[str, Any]], name: str, prof: Any, eff: float
) -> dict[str, list[float]]:
    """The cpi that would reproduce each (unfitted) figure of a device, with the shared
    parallel_efficiency: what its armv7 figures would say, shown, never written."""
    out: dict[str, list[float]] = {}
    for r in rows:
        if r["device"] != name:
            continue
        used = min(r["threads"], prof.cpu.big_cores or 1)
        ms_1 = r["ms"] * (1.0 + (used - 1) * eff)
        bw = prof.memory.bandwidth_gbps
        if bw:
            ms_1 -= r["bytes_moved"] / (bw * 1e6)
        cpi = ms_1 * prof.cpu.max_ghz * 1e6 / r["instructions"]
        out.setdefault(r["precision"], []).append(round(cpi, 3))
    return out


def _int8_note(fitted: list[dict[str, Any]], prof: Any, profiles: dict[str, Any]) -> str:
    klass = int8_class(prof)
    same = [
        r for r in fitted if r["precision"] == "int8" and int8_class(profiles[r["device"]]) == klass
    ]
    own = [r for r in same if r["device"] == prof.name]
    if len(same) > 1:
        if own:
            return ""
        devs = ", ".join(sorted({r["device"] for r in same}))
        return (
            f"No int8 figure for this device: its int8 cpi is its float32 cpi times the {klass} "
            f"factor fitted on {devs}, untested here."
        )
    if not same:
        return f"No int8 figure on a {klass} core: int8 uses the shared factor, untested."
    r = same[0]
    return (
        f"int8 on {klass} cores rests on one figure ({r['device']} {r['model']}); held out, the "
        f"estimate was off by {r['loo_error'] * 100:+.0f}%: treat int8 here as rough."
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from edgekit.profiles import list_profiles, load_profile

    names = args.profiles or [n for n in list_profiles() if not load_profile(n).host]
    profiles = {n: load_profile(n) for n in names}
    rows, skipped = collect_figures(list(profiles.values()))
    t0 = time.monotonic()
    measure(rows, profiles, args.jobs)
    measured_s = time.monotonic() - t0
    fitted = [r for r in rows if r["fit"]]
    params = fit(fitted, profiles)
    for r in rows:
        r["estimate_ms"] = estimate_row(r, params, profiles)
        r["error"] = r["estimate_ms"] / r["ms"] - 1
    # Leave one figure out, then one network out (all its figures on every device).
    for r in fitted:
        p = fit([x for x in fitted if x is not r], profiles)
        r["loo_ms"] = estimate_row(r, p, profiles)
        r["loo_error"] = r["loo_ms"] / r["ms"] - 1
    for net in sorted({r["model"] for r in fitted}):
        rest = [x for x in fitted if x["model"] != net]
        if not rest:
            continue
        p = fit(rest, profiles)
        for r in fitted:
            if r["model"] == net:
                r["lono_error"] = estimate_row(r, p, profiles) / r["ms"] - 1
    # Per device: constants, and one expected error for all: the 80th percentile of the held-out
    # (leave-one-out) |error| over every fitted figure (per-device sets are 4-8 figures).
    held = sorted(abs(r["loo_error"]) for r in fitted)
    p80 = held[min(len(held) - 1, math.ceil(0.8 * len(held)) - 1)]
    devices: dict[str, Any] = {}
    for name, prof in profiles.items():
        core = prof.cpu.clusters[0].core
        own = [r for r in fitted if r["device"] == name]
        same_core = [r for r in fitted if r["core"] == core]
        if not same_core:
            devices[name] = {
                "calibrated": False,
                "why": f"no aarch64 figure for a {core} core",
                "implied_cpi": implied_cpi(rows, name, prof, params["eff"]),
            }
            continue
        devices[name] = {
            "calibrated": True,
            "core": core,
            "cpi": {
                pr: round(cpi_of(params, core, pr, int8_class(prof)), 4)
                for pr in ("float32", "int8")
            },
            "parallel_efficiency": round(params["eff"], 3),
            "expected_error": round(p80, 2),
            "figures": len(own),
            "borrowed_from": None if own else sorted({r["device"] for r in same_core}),
            "memory_term": bool(prof.memory.bandwidth_gbps),
            "n_fitted": len(fitted),
            "int8_note": _int8_note(fitted, prof, profiles),
        }
    return {
        "rows": rows,
        "skipped": skipped,
        "params": params,
        "devices": devices,
        "measure_seconds": round(measured_s, 1),
    }


def render(res: dict[str, Any], command: str, seconds: float) -> str:
    lines = []
    head = (
        f"{'device':<11} {'network':<27} {'prec':<7} {'thr':>3} {'abi':<7} {'published':>9} "
        f"{'estimate':>9} {'error':>6} {'held-out':>8} {'net-out':>7}  fit"
    )
    lines += [head, "-" * len(head)]
    for r in res["rows"]:
        lines.append(
            f"{r['device']:<11} {r['model']:<27} {r['precision']:<7} {r['threads']:>3} "
            f"{r['abi']:<7} {r['ms']:>9.1f} {_ms(r['estimate_ms']):>9} {_pct(r['error']):>6} "
            f"{_pct(r.get('loo_error', float('nan'))):>8} "
            f"{_pct(r.get('lono_error', float('nan'))):>7}  "
            f"{'yes' if r['fit'] else 'no (armv7 build)'}"
        )
    fitted = [r for r in res["rows"] if r["fit"]]
    armv7 = [r for r in res["rows"] if not r["fit"]]
    p = res["params"]
    lines.append("")
    lines.append(
        f"in-sample ({len(fitted)} aarch64 figures): {_summary([r['error'] for r in fitted])}"
    )
    lines.append(f"held-out, leave one figure out:  {_summary([r['loo_error'] for r in fitted])}")
    lines.append(
        "held-out, leave one network out: "
        f"{_summary([r['lono_error'] for r in fitted if 'lono_error' in r])}"
    )
    if armv7:
        lines.append(
            f"armv7 figures (not fitted, comparison only): {_summary([r['error'] for r in armv7])}"
        )
    lines.append("")
    n_par = len(p["a"]) + 3
    lines.append(
        f"constants: {n_par} for {len(fitted)} figures: cpi float32 per core "
        + ", ".join(f"{c} {math.exp(v):.3f}" for c, v in p["a"].items())
        + "; int8/float32 cpi factor by dot-product support "
        + ", ".join(f"{k} {math.exp(p['b'] + v):.3f}" for k, v in p["d"].items())
        + f"; parallel_efficiency {p['eff']:.3f} (all devices)"
    )
    for name, d in res["devices"].items():
        if d["calibrated"]:
            extra = (
                f" (borrowed from {', '.join(d['borrowed_from'])})" if d["borrowed_from"] else ""
            )
            mem = "" if d["memory_term"] else "; no bandwidth: memory term dropped"
            lines.append(
                f"  {name}: cpi {d['cpi']}, parallel_efficiency {d['parallel_efficiency']}, "
                f"expected_error {d['expected_error']}{extra}{mem}"
            )
        else:
            imp = "; ".join(
                f"{pr} {min(v):.2f}-{max(v):.2f}" for pr, v in d["implied_cpi"].items() if v
            )
            lines.append(
                f"  {name}: not calibrated ({d['why']})"
                + (f"; its armv7 figures would imply cpi {imp} (not used)" if imp else "")
            )
    if res["skipped"]:
        lines.append("skipped figures: " + "; ".join(res["skipped"]))
    lines.append("")
    lines.append(f"command: {command}")
    lines.append(
        f"took {seconds:.0f} s ({res['measure_seconds']:.0f} s building/counting; counts cached "
        f"in {CACHE.relative_to(ROOT)})"
    )
    return "\n".join(lines)


# --- writing the profiles -----------------------------------------------------------------------


def write_profile(path: Path, d: dict[str, Any], rows: list[dict[str, Any]], today: str) -> None:
    """Replace the `calibration:` block and the `sources.calibration` entry of one YAML file."""
    from edgekit.artifacts import write_bytes_atomic

    name = path.stem
    own = [r for r in rows if r["device"] == name and r["fit"]]
    used = own or [r for r in rows if r["fit"] and r["core"] == d["core"]]
    threads: dict[str, set[int]] = {}
    for r in used:
        threads.setdefault(f"{r['device']} {r['model']} {r['precision']}", set()).add(r["threads"])
    desc = ", ".join(
        f"{k} ({'/'.join(str(t) for t in sorted(v))} thr)" for k, v in sorted(threads.items())
    )
    urls = sorted({r["source"] for r in used})
    borrowed = (
        f"borrowed from {', '.join(d['borrowed_from'])} (same {d['core']} core); "
        if d["borrowed_from"]
        else ""
    )
    mem = "" if d["memory_term"] else " No memory.bandwidth_gbps: the memory term is dropped."
    method = (
        f"{borrowed}{SCRIPT} on {today}: log-space least squares over all {d['n_fitted']} "
        "aarch64 CPU figures of the bundled profiles (a float32 cpi per core type, an int8/float32 "
        "factor per dot-product class, one parallel_efficiency shared by all devices); "
        f"expected_error = the 80th percentile of the held-out (leave-one-out) |error| over all "
        f"{d['n_fitted']} figures.{mem} {d['int8_note']}"
    ).strip()
    block = [
        "calibration:",
        "  status: calibrated",
        f"  cpi: {{float32: {d['cpi']['float32']}, int8: {d['cpi']['int8']}}}",
        f"  parallel_efficiency: {d['parallel_efficiency']}",
        f"  expected_error: {d['expected_error']}",
        "  method: >-",
        *_wrap(method, "    "),
    ]
    source = (
        f"{SCRIPT}, joint fit to the aarch64 CPU figures of devices/*.yaml `published`; this "
        f"core's: {desc}; figures from {' and '.join(urls)}"
    )
    entry = ["  calibration: >-", *_wrap(source, "    ")]
    lines = path.read_text().splitlines()
    lines = _replace_top_block(lines, "calibration", block)
    i = next(k for k, s in enumerate(lines) if s.startswith("sources:"))
    j = i + 1
    while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
        j += 1
    sub = lines[i + 1 : j]
    k = next((n for n, s in enumerate(sub) if s.startswith("  calibration:")), None)
    if k is not None:
        e = k + 1
        while e < len(sub) and sub[e].startswith("    "):
            e += 1
        sub[k:e] = entry
    else:
        sub += entry
    if lines[i].strip() == "sources: {}":
        lines[i] = "sources:"
    lines[i + 1 : j] = sub
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())


def _replace_top_block(lines: list[str], key: str, block: list[str]) -> list[str]:
    i = next(k for k, s in enumerate(lines) if re.match(rf"^{key}:", s))
    j = i + 1
    while j < len(lines) and lines[j].startswith(" "):
        j += 1
    return lines[:i] + block + lines[j:]


def _wrap(text: str, indent: str, width: int = 100) -> list[str]:
    import textwrap

    # Folded YAML turns each line break into a space: never split a URL or a hyphenated word.
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", nargs="*", help="profile names (default: every non-host one)")
    ap.add_argument("--jobs", type=int, default=1, help="counts run in parallel (qemu processes)")
    ap.add_argument("--write", action="store_true", help="write the constants into devices/*.yaml")
    ap.add_argument("--json", type=Path, help="also write every row and constant to this file")
    args = ap.parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [SCRIPT, *sys.argv[1:]])
    os.nice(10)  # the qemu children inherit it: counting must not starve the machine
    t0 = time.monotonic()
    res = run(args)
    print(render(res, command, time.monotonic() - t0))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    if args.write:
        today = datetime.date.today().isoformat()
        for name, d in res["devices"].items():
            if d["calibrated"]:
                write_profile(ROOT / "devices" / f"{name}.yaml", d, res["rows"], today)
                print(f"wrote {ROOT / 'devices' / f'{name}.yaml'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
