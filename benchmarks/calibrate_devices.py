"""Fit the latency-estimate constants per core class and precision to published figures, and say
how well they predict figures they did not see: left out one at a time, a whole device at a time,
and on a device kept out of the fit altogether (the "unseen device").

    python benchmarks/calibrate_devices.py [--jobs 2] [--unseen pixel-3] [--write] [--json OUT]

For every published CPU figure in devices/*.yaml whose network tf_keras.applications can build
(MobileNet v1 at several widths and sizes, v2, v3-large, v3-small, NASNet-Mobile,
Inception-ResNet-v2; weights=None: the weights do not change the latency of a dense network), the
script
1. builds the network and converts it to float32 and full-integer int8 .tflite (int8 calibrated
   on random uniform data: the ranges change the values, not the work done);
2. counts the aarch64 instructions of one invoke under qemu-aarch64 with the profile's core,
   features and MIDR, 1 thread (edgekit.emulation.qemu.count_instructions), and the bytes moved
   (edgekit.emulation.static.analyze);
3. fits, in log space (relative error), the constants of edgekit/emulation/estimate.py:
       cpi[core class, precision(, int8 kernels)]   one per combination that has figures: int8
                                                    constants only from int8 figures of that
                                                    core class run with the same kernels (SDOT
                                                    or not)
       parallel_efficiency                          one, shared by all devices
   each cpi bounded below by 1 / max_ipc of its core class (devices/cores/*.yaml): a fit that
   would imply more instructions per cycle than the core can issue stops at the bound and is
   reported as clamped. The memory term (bytes / bandwidth) is kept where the profile has
   memory.bandwidth_gbps and dropped where it is null (the cpi then absorbs memory time, as
   estimate.py does). Every figure of the --unseen devices is kept out of the fit.
4. gives every core class constants, by these stated rules:
       fitted        the class and precision (and int8 kernels) have figures;
       R1            int8 on a class with float32 figures only: its float32 cpi times the
                     int8/float32 cpi ratio (geometric mean) of the classes that have both, with
                     the same int8 kernels (all classes if none has them);
       R2            a class with no figures: the constants of the nearest calibrated class
                     (cores.distance: pipeline, then issue width, then decode width), R1 for int8
                     where that class has no int8 figure with the device's kernels;
   a device whose own figures were fitted has basis "fitted" for that precision, one of a
   calibrated class without figures of its own "core-class", anything made by R1/R2
   "extrapolated".
5. measures the error band per precision and basis: the 80th percentile of |log(est/pub)| (as a
   factor - 1) over every held-out prediction of that basis: leave one figure out, leave one
   device out (its class then has no figures: R1/R2, i.e. extrapolated), and the unseen device.
   A basis with no held-out prediction gets the larger of the measured ones (said so).
6. prints every figure with its estimate and errors, then per precision the in-sample,
   leave-one-out, leave-one-device-out and unseen-device errors, the bands and the constants.

Figures from 32-bit (armv7) builds are not fitted: their instruction mix is not the aarch64 one
counted here. They are printed beside the estimate for comparison. GPU and NNAPI figures are not
CPU figures and are skipped; so are networks tf_keras.applications lacks (squeezenet,
inception_v4).

Instruction counting runs float models ~500x slower than the host: the first run takes tens of
minutes; the .tflite files and the counts are cached in benchmarks/.cache (keyed by the model's
sha256, qemu cpu, features, MIDR, cores, threads and runs), so later runs take seconds.
--write puts the constants into the profiles' `calibration:` blocks and devices/cores/fit.yaml.
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
PRECISIONS = ("float32", "int8")
BASES = ("fitted", "core-class", "extrapolated")
UNSEEN = ("pixel-3",)  # every figure of these devices stays out of the fit (see --unseen)
P = 0.8  # the band's percentile

# tf_keras.applications builders: (class name, input size, extra kwargs)
NETWORKS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "mobilenet_v1_1.0_224": ("MobileNet", 224, {"alpha": 1.0}),
    "mobilenet_v1_0.5_224": ("MobileNet", 224, {"alpha": 0.5}),
    "mobilenet_v1_1.0_128": ("MobileNet", 128, {"alpha": 1.0}),
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


def collect_figures(
    profiles: list[Any], unseen: set[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every published figure as a row: role fit / unseen / armv7 (comparison), and skip notes."""
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
            role = "armv7" if f.abi != "aarch64" else "unseen" if p.name in unseen else "fit"
            rows.append(
                {
                    "device": p.name,
                    "index": i,
                    "core": p.cpu.clusters[0].core,
                    "kernels": p.cpu.int8_kernels,
                    "model": f.model,
                    "precision": f.precision,
                    "threads": f.threads,
                    "ms": f.ms,
                    "abi": f.abi,
                    "runtime": f.runtime,
                    "source": f.source,
                    "role": role,
                    "fit": role == "fit",
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
    from edgekit.emulation import qemu

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


def measure(rows: list[dict[str, Any]], profiles: dict[str, Any], jobs: int) -> dict[str, float]:
    """Fill instructions and bytes_moved into every row (counting what the cache lacks); returns
    the seconds each newly counted (model, core description) took."""
    from edgekit.emulation.static import analyze

    paths = build_models({(r["model"], r["precision"]) for r in rows})
    moved = {
        k: analyze(p, gpu_analyzer=False, xnnpack_check=False)["totals"]["bytes_moved"]
        for k, p in paths.items()
    }
    # One count per (model file, core description): devices sharing a description reuse it.
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
    took: dict[str, float] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futs = {pool.submit(count, *tasks[k]): k for k in order}
        for fut in as_completed(futs):
            k = futs[fut]
            results[k] = fut.result()
            secs = results[k].get("count_seconds")
            if not results[k].get("cached"):
                took[f"{k[0]} {k[1]} on {tasks[k][1].name}"] = secs
            print(
                f"counted {k[0]} {k[1]} on {k[2]} ({len(results)}/{len(tasks)})"
                + (" (cached)" if results[k].get("cached") else f" in {secs:.0f} s"),
                file=sys.stderr,
                flush=True,
            )
    for r in rows:
        c = results[r.pop("_count_key")]
        r["instructions"] = float(c["median"])
        r["count_spread"] = c.get("spread")
        r["bytes_moved"] = float(moved[(r["model"], r["precision"])])
    return took


# --- the model ----------------------------------------------------------------------------------


def cpi_key(core: str, precision: str, kernels: str) -> tuple[str, str, str]:
    """int8 constants are per core class and int8 kernels (SDOT or not); float32 per class."""
    return (core, precision, kernels if precision == "int8" else "any")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def fast_ms(r: dict[str, Any], prof: Any, cpi: float, eff: float) -> float:
    """estimate.py's formula (without its bookkeeping) for the fit's inner loop."""
    ms = r["instructions"] * cpi / (prof.cpu.max_ghz * 1e6)
    bw = prof.memory.bandwidth_gbps
    if bw:
        ms += r["bytes_moved"] / (bw * 1e6)
    used = min(r["threads"], prof.cpu.big_cores or 1)
    return ms / (1.0 + (used - 1) * eff)


def fit(rows: list[dict[str, Any]], profiles: dict[str, Any]) -> dict[str, Any]:
    """Least squares on log(estimate / published) over `rows`: one log cpi per (class,
    precision, int8 kernels) present, bounded below by the class's 1 / max_ipc, and one shared
    parallel_efficiency (logit)."""
    import numpy as np
    from scipy.optimize import least_squares

    from edgekit.emulation.cores import require_core

    keys = sorted({cpi_key(r["core"], r["precision"], r["kernels"]) for r in rows})
    index = {k: i for i, k in enumerate(keys)}
    lower = [math.log(require_core(k[0]).min_cpi) for k in keys] + [-np.inf]
    x0 = [max(lo, 0.0) + 1e-6 for lo in lower[:-1]] + [1.0]
    multi = any(min(r["threads"], profiles[r["device"]].cpu.big_cores or 1) > 1 for r in rows)

    def resid(theta: Any) -> Any:
        eff = _sigmoid(theta[-1])
        return np.array(
            [
                math.log(
                    fast_ms(
                        r,
                        profiles[r["device"]],
                        math.exp(theta[index[cpi_key(r["core"], r["precision"], r["kernels"])]]),
                        eff,
                    )
                    / r["ms"]
                )
                for r in rows
            ]
        )

    sol = least_squares(resid, np.array(x0), bounds=(np.array(lower), np.full(len(x0), np.inf)))
    cpi = {k: math.exp(sol.x[index[k]]) for k in keys}
    clamped = {k for k in keys if sol.x[index[k]] <= lower[index[k]] + 1e-6}
    eff = _sigmoid(sol.x[-1]) if multi else None
    counts: dict[tuple, list[str]] = {}
    for r in rows:
        counts.setdefault(cpi_key(r["core"], r["precision"], r["kernels"]), []).append(r["device"])
    return {
        "cpi": cpi,
        "clamped": clamped,
        "eff": eff,
        "figures": {k: len(v) for k, v in counts.items()},
        "devices": {k: sorted(set(v)) for k, v in counts.items()},
        "rows": rows,
    }


def int8_ratio(params: dict[str, Any]) -> dict[str, float]:
    """cpi int8 / float32 by int8 kernels: geometric mean over the classes fitted in both."""
    out: dict[str, list[float]] = {}
    for (core, prec, kern), v in params["cpi"].items():
        f = params["cpi"].get((core, "float32", "any"))
        if prec == "int8" and f:
            out.setdefault(kern, []).append(math.log(v / f))
            out.setdefault("all", []).append(math.log(v / f))
    return {k: math.exp(statistics.fmean(v)) for k, v in out.items()}


def constants(
    core: str, kernels: str, params: dict[str, Any], own: set[str] | None = None
) -> dict[str, dict[str, Any]]:
    """cpi, basis and rule per precision for a device of core class `core` whose int8 runs
    `kernels`, by the module docstring's rules; `own`: the precisions its own figures fitted."""
    from edgekit.emulation.cores import nearest, require_core

    own = own or set()
    bound = require_core(core).min_cpi
    ratio = int8_ratio(params)
    float_classes = sorted({k[0] for k in params["cpi"] if k[1] == "float32"})
    out: dict[str, dict[str, Any]] = {}
    for prec in PRECISIONS:
        key = cpi_key(core, prec, kernels)
        if key in params["cpi"]:
            cpi, basis = params["cpi"][key], "fitted" if prec in own else "core-class"
            rule = "its own figures" if basis == "fitted" else "its core class's fitted cpi"
            src = core
        else:
            src = (
                core if (core, "float32", "any") in params["cpi"] else nearest(core, float_classes)
            )
            if src is None:
                raise SystemExit(f"no calibrated core class to carry constants to {core} from")
            fkey = (src, "float32", "any")
            ikey = cpi_key(src, "int8", kernels)
            if prec == "int8" and ikey in params["cpi"]:
                cpi, rule = params["cpi"][ikey], f"R2: int8 cpi of {src}, the nearest class"
            elif prec == "int8":
                r = ratio.get(kernels, ratio.get("all"))
                if r is None:  # no class has int8 figures: nothing to carry over
                    continue
                which = kernels if kernels in ratio else "all classes"
                cpi = params["cpi"][fkey] * r
                rule = f"R1: float32 cpi of {src} x {r:.3f} (int8/float32 ratio, {which})" + (
                    f"; {src} is the nearest calibrated class (R2)" if src != core else ""
                )
            else:
                cpi, rule = params["cpi"][fkey], f"R2: float32 cpi of {src}, the nearest class"
            basis = "extrapolated"
        clamped = cpi < bound - 1e-12 or key in params["clamped"]
        out[prec] = {
            "cpi": max(cpi, bound),
            "unclamped": cpi,
            "basis": basis,
            "rule": rule,
            "from": src,
            "clamped": clamped,
        }
    return out


def estimate(r: dict[str, Any], prof: Any, cons: dict[str, Any], eff: float | None) -> float:
    """The estimate in ms, through edgekit/emulation/estimate.py itself (bounds included)."""
    from edgekit.emulation.estimate import estimate_latency

    c = cons[r["precision"]]
    cal = {
        "cpi": {r["precision"]: c["unclamped"]},
        "parallel_efficiency": eff if eff is not None else 1.0,
        "expected_error": None,
    }
    view = {"cpu": prof.cpu, "memory": prof.memory, "calibration": cal}
    out = estimate_latency(r["instructions"], r["bytes_moved"], r["precision"], view, r["threads"])
    r.setdefault("_ipc", []).append(out["implied_ipc"] / out["bound"]["max_ipc"])
    return out["ms"]


def own_precisions(rows: list[dict[str, Any]], device: str) -> set[str]:
    return {r["precision"] for r in rows if r["device"] == device}


def predict(
    r: dict[str, Any], params: dict[str, Any], profiles: dict[str, Any]
) -> tuple[float, str, str]:
    """(estimate ms, basis, rule) for a row under `params` (fitted without or with it)."""
    prof = profiles[r["device"]]
    own = own_precisions(params["rows"], r["device"])
    cons = constants(r["core"], r["kernels"], params, own)
    c = cons.get(r["precision"])
    if c is None:
        return float("nan"), "none", "no int8 figure on any class"
    return estimate(r, prof, cons, params["eff"]), c["basis"], c["rule"]


def round_up(cpi: float) -> float:
    """4 decimals, rounded up: a cpi at the issue-width bound must stay at or above it."""
    return math.ceil(cpi * 1e4 - 1e-6) / 1e4


def logerr(est: float, pub: float) -> float:
    return abs(math.log(est / pub))


def band_of(errors: list[float]) -> float | None:
    """80th percentile of |log error|, as a factor - 1."""
    a = sorted(errors)
    if not a:
        return None
    return math.exp(a[min(len(a) - 1, math.ceil(P * len(a)) - 1)]) - 1


# --- the run ------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    from edgekit.emulation.cores import catalogue
    from edgekit.emulation.profiles import list_profiles, load_profile

    names = args.profiles or [n for n in list_profiles() if not load_profile(n).host]
    profiles = {n: load_profile(n) for n in names}
    unseen = set(args.unseen)
    rows, skipped = collect_figures(list(profiles.values()), unseen)
    t0 = time.monotonic()
    took = measure(rows, profiles, args.jobs)
    measured_s = time.monotonic() - t0
    fitted = [r for r in rows if r["fit"]]
    params = fit(fitted, profiles)
    held: list[dict[str, Any]] = []  # every held-out prediction: kind, precision, basis, error

    for r in rows:
        est, basis, rule = predict(r, params, profiles)
        r.update(estimate_ms=est, error=est / r["ms"] - 1, basis=basis, rule=rule)
        if r["role"] == "unseen":
            held.append(_held("unseen", r, est, basis))
    # Leave one figure out.
    for r in fitted:
        p = fit([x for x in fitted if x is not r], profiles)
        est, basis, _ = predict(r, p, profiles)
        r.update(loo_ms=est, loo_error=est / r["ms"] - 1, loo_basis=basis)
        held.append(_held("loo", r, est, basis))
    # Leave one device out: its class then has no figure, unless another device fits it.
    for dev in sorted({r["device"] for r in fitted}):
        p = fit([x for x in fitted if x["device"] != dev], profiles)
        for r in fitted:
            if r["device"] == dev:
                est, basis, _ = predict(r, p, profiles)
                r.update(lodo_error=est / r["ms"] - 1, lodo_basis=basis)
                held.append(_held("lodo", r, est, basis))
    # Leave one network out (all its figures on every device): a check, not a band.
    for net in sorted({r["model"] for r in fitted}):
        rest = [x for x in fitted if x["model"] != net]
        if not rest:
            continue
        p = fit(rest, profiles)
        for r in fitted:
            if r["model"] == net:
                try:
                    est, _, _ = predict(r, p, profiles)
                    r["lono_error"] = est / r["ms"] - 1
                except SystemExit:
                    pass

    bands = measure_bands(held)
    ratio = int8_ratio(params)
    # Constants per core class (for `edgekit devices new`) and per device (written to profiles).
    classes: dict[str, Any] = {}
    for core in sorted(catalogue()):
        kern = _class_kernels(core, fitted)
        cons = constants(core, kern, params)
        classes[core] = {
            prec: {
                "cpi": round_up(c["cpi"]),
                "basis": "fitted" if c["basis"] != "extrapolated" else "extrapolated",
                "figures": params["figures"].get(cpi_key(core, prec, kern), 0),
                "devices": params["devices"].get(cpi_key(core, prec, kern), []),
                "kernels": kern if prec == "int8" else "any",
                "clamped": c["clamped"],
                "rule": c["rule"]
                if c["basis"] == "extrapolated"
                else "fitted to "
                + ", ".join(params["devices"].get(cpi_key(core, prec, kern), []))
                + "'s figures",
            }
            for prec, c in cons.items()
        }
    devices: dict[str, Any] = {}
    for name, prof in profiles.items():
        if prof.cpu.arch != "aarch64":
            continue
        own = own_precisions(fitted, name)
        cons = constants(prof.cpu.clusters[0].core, prof.cpu.int8_kernels, params, own)
        errors = {p: bands[p][cons[p]["basis"]]["error"] for p in cons}
        for prec, c in cons.items():
            # A constant fitted from one figure has no held-out evidence of its own: its band is
            # at least that figure's error when it was left out.
            key = cpi_key(prof.cpu.clusters[0].core, prec, prof.cpu.int8_kernels)
            single = [r for r in fitted if r["device"] == name and r["precision"] == prec]
            if c["basis"] == "fitted" and params["figures"].get(key) == 1 and single:
                loo = math.exp(logerr(single[0]["loo_ms"], single[0]["ms"])) - 1
                if loo > errors[prec]:
                    errors[prec] = loo
                    c["rule"] += f"; one figure: band = its leave-one-out error {loo * 100:.0f}%"
        devices[name] = {
            "core": prof.cpu.clusters[0].core,
            "kernels": prof.cpu.int8_kernels,
            "status": "calibrated" if own else "extrapolated",
            "unseen": name in unseen,
            "constants": cons,
            "expected_error": {p: round(e, 2) for p, e in errors.items()},
            "figures": len([r for r in fitted if r["device"] == name]),
            "memory_term": bool(prof.memory.bandwidth_gbps),
        }
    worst_ipc = max(x for r in rows for x in r.pop("_ipc", [0.0]))
    return {
        "rows": rows,
        "skipped": skipped,
        "params": params,
        "ratio": ratio,
        "bands": bands,
        "held": held,
        "classes": classes,
        "devices": devices,
        "unseen": sorted(unseen),
        "worst_ipc_fraction": worst_ipc,
        "measure_seconds": round(measured_s, 1),
        "count_seconds": took,
    }


def _held(kind: str, r: dict[str, Any], est: float, basis: str) -> dict[str, Any]:
    if est != est:  # not predictable without the left-out figures
        return {"kind": kind, "precision": r["precision"], "basis": "none", "logerr": None}
    return {
        "kind": kind,
        "device": r["device"],
        "model": r["model"],
        "precision": r["precision"],
        "threads": r["threads"],
        "basis": basis,
        "error": est / r["ms"] - 1,
        "logerr": logerr(est, r["ms"]),
    }


def _class_kernels(core: str, fitted: list[dict[str, Any]]) -> str:
    """The int8 kernels of the class's fitted devices; a class with none: 'no-dotprod' for an
    Armv8.0 core or one whose SDOT depends on the revision (A55, A75), else 'dotprod'."""
    from edgekit.emulation.cores import require_core

    kern = {r["kernels"] for r in fitted if r["core"] == core and r["precision"] == "int8"}
    if len(kern) == 1:
        return kern.pop()
    c = require_core(core)
    by_revision = any((m.dotprod_from_variant or 0) > 0 for m in c.midr)
    return "no-dotprod" if c.isa == "armv8.0-a" or by_revision else "dotprod"


def measure_bands(held: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per precision and basis: the 80th percentile of the held-out |log error| (as factor - 1)
    and its count; a basis with none gets the largest measured band of that precision."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for prec in PRECISIONS:
        out[prec] = {}
        for basis in BASES:
            errs = [
                h["logerr"]
                for h in held
                if h["precision"] == prec and h["basis"] == basis and h["logerr"] is not None
            ]
            b = band_of(errs)
            out[prec][basis] = {"error": b, "n": len(errs), "measured": b is not None}
        measured = [v["error"] for v in out[prec].values() if v["measured"]]
        for basis, v in out[prec].items():
            if not v["measured"]:
                v["error"] = max(measured) if measured else 1.0
                v["note"] = (
                    f"no held-out {prec} prediction had basis {basis}: the largest measured "
                    f"{prec} band is used"
                    if measured
                    else "nothing measured: 100% assumed"
                )
        # Carried-over constants never get a narrower band than the ones they come from.
        for lo, hi in (("fitted", "core-class"), ("core-class", "extrapolated")):
            if out[prec][hi]["error"] < out[prec][lo]["error"]:
                out[prec][hi]["note"] = (
                    f"measured {out[prec][hi]['error'] * 100:.0f}%, raised to the {lo} band"
                )
                out[prec][hi]["error"] = out[prec][lo]["error"]
    return out


# --- report -------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x * 100:+.0f}%"


def _ms(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.1f}"


def _summary(errs: list[float]) -> str:
    a = sorted(abs(e) for e in errs if e is not None and e == e)
    if not a:
        return "n/a"
    p80 = a[min(len(a) - 1, math.ceil(P * len(a)) - 1)]
    return (
        f"median |err| {statistics.median(a) * 100:.0f}%, p80 {p80 * 100:.0f}%, "
        f"max {a[-1] * 100:.0f}% (n={len(a)})"
    )


def render(res: dict[str, Any], command: str, seconds: float) -> str:
    lines = []
    head = (
        f"{'device':<12} {'network':<27} {'prec':<7} {'thr':>3} {'role':<6} {'published':>9} "
        f"{'estimate':>9} {'error':>6} {'LOO':>6} {'LODO':>6} {'net-out':>7}  basis"
    )
    lines += [head, "-" * len(head)]
    for r in res["rows"]:
        lines.append(
            f"{r['device']:<12} {r['model']:<27} {r['precision']:<7} {r['threads']:>3} "
            f"{r['role']:<6} {r['ms']:>9.1f} {_ms(r['estimate_ms']):>9} {_pct(r['error']):>6} "
            f"{_pct(r.get('loo_error')):>6} {_pct(r.get('lodo_error')):>6} "
            f"{_pct(r.get('lono_error')):>7}  {r['basis']}"
        )
    lines.append("")
    rows = res["rows"]
    unseen = ", ".join(res["unseen"]) or "none"
    for prec in PRECISIONS:
        fit_rows = [r for r in rows if r["fit"] and r["precision"] == prec]
        uns = [r for r in rows if r["role"] == "unseen" and r["precision"] == prec]
        arm = [r for r in rows if r["role"] == "armv7" and r["precision"] == prec]
        lines.append(f"{prec}:")
        lines.append(
            f"  in-sample ({len(fit_rows)} fitted figures): "
            f"{_summary([r['error'] for r in fit_rows])}"
        )
        lines.append(
            f"  leave one figure out:            {_summary([r.get('loo_error') for r in fit_rows])}"
        )
        lines.append(
            f"  leave one device out:            "
            f"{_summary([r.get('lodo_error') for r in fit_rows])}  (its constants "
            "carried over from the nearest class: extrapolated)"
        )
        lines.append(
            f"  unseen device ({unseen}, never fitted): "
            f"{_summary([r['error'] for r in uns])}"
            + (f"  [basis {', '.join(sorted({r['basis'] for r in uns}))}]" if uns else "")
        )
        lines.append(
            f"  leave one network out:           "
            f"{_summary([r.get('lono_error') for r in fit_rows])}"
        )
        if arm:
            lines.append(
                f"  armv7 figures (not fitted, comparison): {_summary([r['error'] for r in arm])}"
            )
        b = res["bands"][prec]
        lines.append(
            "  error band (p80 of held-out |log error|): "
            + "; ".join(
                f"{basis} ±{v['error'] * 100:.0f}% (n={v['n']}"
                + ("" if v["measured"] else ", not measured: largest band")
                + (f"; {v['note']}" if v.get("note") and v["measured"] else "")
                + ")"
                for basis, v in b.items()
            )
        )
    lines.append("")
    p = res["params"]
    eff = p["eff"]
    lines.append(
        f"constants: {len(p['cpi'])} cpi + 1 parallel_efficiency for "
        f"{len([r for r in rows if r['fit']])} figures; parallel_efficiency "
        + (f"{eff:.3f}" if eff is not None else "n/a")
        + "; int8/float32 cpi ratio "
        + ", ".join(f"{k} {v:.3f}" for k, v in res["ratio"].items())
    )
    for (core, prec, kern), v in sorted(p["cpi"].items()):
        from edgekit.emulation.cores import require_core

        c = require_core(core)
        clamp = "  CLAMPED at the issue width" if (core, prec, kern) in p["clamped"] else ""
        lines.append(
            f"  {core:<11} {prec:<7} {kern:<10} cpi {v:.4f} (= {1 / v:.2f} instructions/cycle; "
            f"max {c.max_ipc:g}) from {p['figures'][(core, prec, kern)]} figures of "
            f"{', '.join(p['devices'][(core, prec, kern)])}{clamp}"
        )
    lines.append("devices:")
    for name, d in res["devices"].items():
        parts = []
        for prec, c in d["constants"].items():
            clamp = (
                f", clamped from {c['unclamped']:.4f} (more than {1 / c['cpi']:.0f}/cycle)"
                if c["clamped"] and c["unclamped"] < c["cpi"]
                else ""
            )
            parts.append(
                f"{prec} cpi {c['cpi']:.4f} {c['basis']} ±{d['expected_error'][prec] * 100:.0f}%"
                f" [{c['rule']}{clamp}]"
            )
        tag = " (unseen: not fitted)" if d["unseen"] else ""
        lines.append(
            f"  {name} ({d['core']}, int8 {d['kernels']}, {d['status']}{tag}): " + "; ".join(parts)
        )
    lines.append(
        f"bounds: every estimate above is within its core's issue width (highest implied "
        f"instructions/cycle = {res['worst_ipc_fraction'] * 100:.0f}% of max_ipc)"
    )
    if res["skipped"]:
        lines.append("skipped figures: " + "; ".join(res["skipped"]))
    lines.append("")
    lines.append(f"command: {command}")
    new = res["count_seconds"]
    lines.append(
        f"took {seconds:.0f} s ({res['measure_seconds']:.0f} s building/counting"
        + (f", {len(new)} new counts {sum(new.values()):.0f} s" if new else ", all counts cached")
        + f"; counts cached in {CACHE.relative_to(ROOT)})"
    )
    return "\n".join(lines)


# --- writing the profiles -----------------------------------------------------------------------


def write_profile(path: Path, d: dict[str, Any], res: dict[str, Any], today: str) -> None:
    """Replace the `calibration:` block and the `sources.calibration` entry of one YAML file."""
    from edgekit.artifacts import write_bytes_atomic

    name = path.stem
    fitted = [r for r in res["rows"] if r["fit"]]
    eff = res["params"]["eff"]
    cons = d["constants"]
    notes = []
    for prec, c in cons.items():
        n = res["bands"][prec][c["basis"]]
        band = (
            "band: see the rule"
            if "one figure: band" in c["rule"]
            else f"band = p80 of {n['n']} held-out {prec} predictions of that basis"
        )
        clamp = "; clamped at the issue width" if c["clamped"] else ""
        notes.append(f"{prec}: {c['basis']} ({c['rule']}{clamp}), {band}")
    unseen = (
        " Every figure of this device was kept out of the fit (the unseen device)."
        if d["unseen"]
        else ""
    )
    mem = "" if d["memory_term"] else " No memory.bandwidth_gbps: the memory term is dropped."
    method = (
        f"{SCRIPT} on {today}: log-space least squares over {len(fitted)} aarch64 CPU figures "
        "of the bundled profiles (a cpi per core class and precision, int8 per int8 kernels; one "
        "parallel_efficiency shared by all devices), each cpi bounded by 1 / max_ipc of its core "
        f"class. {'; '.join(notes)}.{mem}{unseen}"
    )
    block = [
        "calibration:",
        f"  status: {d['status']}",
        "  cpi: {" + ", ".join(f"{p}: {round_up(c['cpi'])}" for p, c in cons.items()) + "}",
        f"  parallel_efficiency: {round(eff, 3)}",
        "  expected_error: {"
        + ", ".join(f"{p}: {e}" for p, e in d["expected_error"].items())
        + "}",
        "  basis: {" + ", ".join(f"{p}: {c['basis']}" for p, c in cons.items()) + "}",
        "  method: >-",
        *_wrap(method, "    "),
    ]
    used = [r for r in fitted if r["device"] == name] or [
        r for r in fitted if r["core"] in {c["from"] for c in cons.values()}
    ]
    threads: dict[str, set[int]] = {}
    for r in used:
        threads.setdefault(f"{r['device']} {r['model']} {r['precision']}", set()).add(r["threads"])
    desc = ", ".join(
        f"{k} ({'/'.join(str(t) for t in sorted(v))} thr)" for k, v in sorted(threads.items())
    )
    urls = sorted({r["source"] for r in used})
    source = (
        f"{SCRIPT}, fit to the aarch64 CPU figures of devices/*.yaml `published` and the core "
        f"bounds of devices/cores/; the figures behind these constants: {desc}; from "
        f"{' and '.join(urls)}"
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


def write_fit(path: Path, res: dict[str, Any], today: str, command: str) -> None:
    """devices/cores/fit.yaml: per core class and precision, the bands, the ratio, the rules."""
    import yaml

    from edgekit.artifacts import write_bytes_atomic

    bands = {
        p: {
            b: {k: (round(v, 3) if isinstance(v, float) else v) for k, v in band.items()}
            for b, band in bb.items()
        }
        for p, bb in res["bands"].items()
    }
    data = {
        "date": today,
        "script": command,
        "parallel_efficiency": round(res["params"]["eff"], 3),
        "unseen": res["unseen"],
        "int8_ratio": {k: round(v, 4) for k, v in res["ratio"].items()},
        "bands": bands,
        "classes": res["classes"],
        "method": (
            "cpi per core class and precision (int8 per int8 kernels) fitted to the published "
            "figures of devices/*.yaml, bounded by 1 / max_ipc; classes without figures by rule "
            "R1 (int8 = float32 cpi x int8_ratio) or R2 (the nearest calibrated class). bands: "
            "p80 of the held-out |log(estimate / published)| (as a factor - 1) per precision and "
            "basis, over leave-one-figure-out, leave-one-device-out and unseen-device predictions."
        ),
    }
    text = (
        "# Written by benchmarks/calibrate_devices.py --write: do not edit by hand. The core\n"
        "# classes' physical data (with sources) are in the other files of this folder.\n"
        + yaml.safe_dump(data, sort_keys=False, width=100)
    )
    write_bytes_atomic(path, text.encode())


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


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {("/".join(k) if isinstance(k, tuple) else k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, set):
        return sorted("/".join(k) if isinstance(k, tuple) else k for k in v)
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", nargs="*", help="profile names (default: every non-host one)")
    ap.add_argument("--jobs", type=int, default=1, help="counts run in parallel (qemu processes)")
    ap.add_argument(
        "--unseen",
        nargs="*",
        default=list(UNSEEN),
        help="devices kept out of the fit, reported as unseen (default: pixel-3, the one bundled "
        "device of a core class another device calibrates)",
    )
    ap.add_argument("--write", action="store_true", help="write the constants into devices/")
    ap.add_argument("--json", type=Path, help="also write every row and constant to this file")
    args = ap.parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [SCRIPT, *sys.argv[1:]])
    os.nice(10)  # the qemu children inherit it: counting must not starve the machine
    t0 = time.monotonic()
    res = run(args)
    print(render(res, command, time.monotonic() - t0))
    if args.json:
        out = {**res, "params": {k: _jsonable(v) for k, v in res["params"].items() if k != "rows"}}
        args.json.write_text(json.dumps(out, indent=1, default=str))
    if args.write:
        today = datetime.date.today().isoformat()
        for name, d in res["devices"].items():
            write_profile(ROOT / "devices" / f"{name}.yaml", d, res, today)
            print(f"wrote {ROOT / 'devices' / f'{name}.yaml'}", file=sys.stderr)
        write_fit(ROOT / "devices" / "cores" / "fit.yaml", res, today, command)
        print(f"wrote {ROOT / 'devices' / 'cores' / 'fit.yaml'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
