"""`edgekit bench/eval --target DEVICE`: a device profile (bundled name or .yaml) as a target.

An aarch64 profile gets the three levels of emulation:

1. static analysis of the .tflite against the profile (MACs, weights, peak memory, delegate
   fallbacks, findings); an error finding (a model over the device's memory, Flex ops) stops
   the run with one line unless `ignore_limits`;
2. one qemu-aarch64 run of edgekit's runner (the job `--target ssh://` runs on a board) on the
   profile's core, with the instruction counter: the device's exact numerics, instructions per
   invoke, and the emulated wall time, which is NOT a latency;
3. a latency estimate from the counts (edgekit.emulation.estimate), for 1 and N threads, with
   its expected error, or `calibrated: false` and no milliseconds.

A desktop (x86_64) profile runs the local cpu / gpu paths and adds the static analysis.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import UnsupportedModelError, UsageError

EMULATED_NOTE = (
    "QEMU wall time of the emulated arm64 code: NOT a latency. QEMU runs arm64 code 30-500x "
    "slower than this machine, at a rate set by the instruction mix and this machine's load; "
    "see `estimate` for the device's latency."
)
LIMITS_HINT = "pass --ignore-limits to run anyway"
_INT_PRECISIONS = ("int8", "uint8", "int16x8")


def profile_for(target: str | os.PathLike) -> Any:
    """The DeviceProfile a target names (bundled name or .yaml path)."""
    from edgekit.emulation.profiles import load_profile

    return load_profile(target)


def is_emulated(target: str | os.PathLike) -> bool:
    """The target is an arm64 device (run under QEMU), not this machine (desktop profiles)."""
    return profile_for(target).cpu.arch == "aarch64"


def _cores(profile: Any) -> int:
    return sum(c.count for c in profile.cpu.clusters) or 1


def analyze_models(
    paths: list[Path], profile: Any, *, ignore_limits: bool = False
) -> list[dict[str, Any] | None]:
    """Level 1 for each model (None for a format static analysis cannot read): error findings
    raise one line (unless ignore_limits), warnings go to stderr and stay in the result."""
    from edgekit import ui
    from edgekit.artifacts import detect_format
    from edgekit.emulation.static import analyze

    out: list[dict[str, Any] | None] = []
    for p in paths:
        if detect_format(p) != "tflite":
            out.append(None)
            continue
        r = analyze(p, profile, gpu_analyzer="gpu" in profile.accelerators)
        if profile.cpu.arch == "aarch64" and r["select_tf_ops"]:
            raise UnsupportedModelError(
                f"{Path(p).name} uses TensorFlow (Flex) ops that LiteRT on {profile.name} cannot "
                f"run: {', '.join(r['select_tf_ops'])}. Re-export it with builtin ops only "
                "(TFLITE_BUILTINS)."
            )
        errors = [f for f in r["findings"] if f["level"] == "error"]
        if errors and not ignore_limits:
            f = errors[0]
            raise UsageError(f"{Path(p).name} on {profile.name}: {f['message']} ({LIMITS_HINT}.)")
        for f in r["findings"]:
            if f["level"] in ("error", "warning"):
                ui.info(f"{f['level']}: {Path(p).name} on {profile.name}: {f['message']}")
        out.append(r)
    return out


def _local_target(profile: Any) -> str:
    return "gpu" if "gpu" in profile.accelerators else "cpu"


def _device_info(profile: Any) -> dict[str, Any]:
    return {
        **profile.summary(),
        "qemu_cpu": profile.cpu.qemu_cpu,
        "big_cores": profile.cpu.big_cores,
        "max_ghz": profile.cpu.max_ghz,
        "calibration": profile.calibration.status,
    }


def _pop_options(options: dict[str, Any], profile: Any) -> tuple[bool, dict[str, Any]]:
    opts = dict(options)
    ignore = bool(opts.pop("ignore_limits", False))
    if profile.cpu.arch == "aarch64" and opts:
        raise UsageError(
            f"Option(s) {', '.join(sorted(opts))} do not apply to the emulated {profile.name} "
            "target. Expected: ignore_limits."
        )
    return ignore, opts


# --- bench -------------------------------------------------------------------------------------


def bench_device(
    paths: list[Any],
    *,
    target: str,
    threads: int | None,
    batch: int,
    warmup: int,
    warmup_seconds: float,
    runs: int | None,
    min_seconds: float | None,
    xnnpack: bool,
    samples: bool,
    seed: int,
    **options: Any,
) -> dict[str, Any]:
    """`edgekit bench --target DEVICE` (see the module docstring)."""
    profile = profile_for(target)
    ignore, opts = _pop_options(options, profile)
    if profile.cpu.arch != "aarch64":
        return _bench_desktop(
            paths,
            profile,
            ignore,
            threads=threads,
            batch=batch,
            warmup=warmup,
            warmup_seconds=warmup_seconds,
            runs=runs,
            min_seconds=min_seconds,
            xnnpack=xnnpack,
            samples=samples,
            seed=seed,
            **opts,
        )
    from edgekit import ui
    from edgekit.bench import latency, remote
    from edgekit.emulation import provision, qemu
    from edgekit.runtimes.base import check_threads

    threads = check_threads(threads) or 1
    cores = _cores(profile)
    if threads > cores:
        raise UsageError(f"{profile.name} has {cores} cores. Received: --threads {threads}.")
    if min_seconds is not None:
        raise UsageError(
            "--min-seconds times emulated runs for a wall time that means nothing on the device; "
            "use --runs N for an emulated target."
        )
    models = remote.tflite_models(paths, f"an emulated target ({profile.name})", batch=batch)
    analyses = analyze_models(models, profile, ignore_limits=ignore)
    state = provision.require()
    files, job = remote.bench_job(
        models,
        threads=threads,
        batch=batch,
        xnnpack=xnnpack,
        warmup=warmup,
        warmup_seconds=warmup_seconds,
        runs=runs,
        min_seconds=None,
        seed=seed,
        markers=True,
    )
    cpu = profile.cpu.qemu_cpu
    ui.info(
        f"bench: running {len(models)} model(s) on an emulated {cpu} ({profile.title}) under "
        f"QEMU, {runs} counted run(s) each"
    )
    res = qemu.run_job(
        files,
        job,
        qemu_cpu=cpu,
        features=list(profile.cpu.features),
        midr=profile.cpu.midr,
        cores=cores,
        count_instructions=True,
        _state=state,
    )
    counts = qemu.split_counts(res, cpu, n_models=len(models))
    rows, _ = remote.bench_rows(
        models, res, target=profile.name, threads=threads, batch=batch, samples=samples
    )
    n_threads = threads if threads > 1 else (profile.cpu.big_cores or 1)
    for row, c, a in zip(rows, counts["models"], analyses, strict=True):
        _device_row(row, c, a, profile, threads=threads, n_threads=n_threads, counts=counts)
    report: dict[str, Any] = {
        "machine": {
            **res["machine"],
            "device": f"{profile.title}, emulated {cpu} under QEMU",
            "emulated": True,
        },
        "device": _device_info(profile),
        "settings": latency.settings(
            target=profile.name,
            threads=threads,
            batch=batch,
            warmup=warmup,
            warmup_seconds=warmup_seconds,
            runs=runs,
            min_seconds=None,
            xnnpack=xnnpack,
            clock="QEMU wall time around invoke() (emulated, not a latency); instructions "
            "counted per invoke by QEMU's plugin between marker syscalls",
            estimate_threads=[1, n_threads],
            qemu_cpu=cpu,
            ignore_limits=ignore,
        ),
        "models": rows,
        "peak_rss_mb": None,
        "comparison": None,
        "source": "estimated",
        "sources": {
            "static": "static analysis of the file",
            "instructions": "emulated",
            "emulated_ms": "emulated",
            "estimate": "estimated",
        },
    }
    if len(rows) > 1:
        report["comparison"] = instruction_comparison(rows)
    return report


def _precision(analysis: dict[str, Any]) -> tuple[str, str | None]:
    p = analysis["precision"]
    if p in _INT_PRECISIONS:
        return "int8", None if p == "int8" else f"{p} model: the int8 constants are used"
    if p == "float32":
        return "float32", None
    return "float32", f"{p} model: the float32 constants are used"


def _device_row(
    row: dict[str, Any],
    c: dict[str, Any],
    analysis: dict[str, Any],
    profile: Any,
    *,
    threads: int,
    n_threads: int,
    counts: dict[str, Any],
) -> None:
    """Turn a runner row into a device row: the emulated times under `emulated_ms` (not a
    latency), the counts under `instructions`, the estimate under `estimate`."""
    from edgekit.emulation.estimate import FORMULA, estimate_latency

    emulated = row.pop("latency_ms")
    emulated.update(
        load_ms=row.pop("load_ms"),
        first_inference_ms=row.pop("first_inference_ms"),
        rss_increase_mb=row.pop("rss_increase_mb"),
        peak_rss_mb=row.pop("peak_rss_mb"),
        source="emulated",
        note=EMULATED_NOTE,
    )
    row.pop("rss_before_mb")
    row.update(
        latency_ms=None,
        load_ms=None,
        first_inference_ms=None,
        peak_rss_mb=None,
        rss_increase_mb=None,
        emulated_ms=emulated,
    )
    row["instructions"] = {
        **c,
        "runs": len(c["per_invoke"]),
        "threads": threads,
        "marker_overhead": counts["marker_overhead"],
        "qemu_cpu": profile.cpu.qemu_cpu,
        "source": "emulated",
        "note": "guest arm64 instructions per invoke (all threads), counted by QEMU's plugin; "
        "the markers' own cost is subtracted",
    }
    precision, why = _precision(analysis)
    moved = analysis["totals"]["bytes_moved"]
    by_threads = [
        estimate_latency(c["median"], moved, precision, profile, threads=t)
        for t in dict.fromkeys((1, n_threads))
    ]
    calibrated = by_threads[0]["calibrated"]
    notes = []
    if threads > 1:
        notes.append(
            f"instructions counted with {threads} threads: the total includes XNNPACK workers' "
            "spin-waiting, so the 1-thread estimate is high"
        )
    if why:
        notes.append(why)
    if calibrated:
        err = by_threads[0]["expected_error"]
        notes.insert(0, f"an estimate from counted instructions, not a measurement: ±{err:.0%}")
        notes.extend(by_threads[0].get("notes", []))  # clamped at the issue width, extrapolated
    else:
        notes.insert(0, f"uncalibrated: {by_threads[0]['reason']}")
    row["estimate"] = {
        "source": "estimated",
        "calibrated": calibrated,
        "precision": precision,
        "instructions": c["median"],
        "bytes_moved": moved,
        "expected_error": by_threads[0].get("expected_error"),
        "basis": by_threads[0].get("basis"),
        "extrapolated": by_threads[0].get("extrapolated", False),
        "clamped": by_threads[0].get("clamped", False),
        "formula": FORMULA,
        "by_threads": by_threads,
        "note": "; ".join(notes),
    }
    row["static"] = analysis
    row["source"] = "estimated"


def instruction_comparison(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each model's median instructions per invoke over the first model's: an exact count, so
    the ratio has no sampling interval (only the spread of the counts)."""
    base = rows[0]["instructions"]["median"]
    return {
        "baseline": rows[0]["model"],
        "method": "ratio of median guest instructions per invoke (counted, not timed)",
        "confidence": None,
        "rows": [
            {
                "model": r["model"],
                "name": r["name"],
                "instructions": r["instructions"]["median"],
                "ratio": r["instructions"]["median"] / base if base else None,
                "spread": r["instructions"]["spread"],
                "estimated_ms": r["estimate"]["by_threads"][0].get("ms"),
            }
            for r in rows
        ],
    }


def _bench_desktop(paths: list[Any], profile: Any, ignore: bool, **kwargs: Any) -> dict[str, Any]:
    from edgekit.bench.benchmark import bench

    analyses = analyze_models([Path(p) for p in paths], profile, ignore_limits=ignore)
    report = bench(paths, target=_local_target(profile), **kwargs)
    for row, a in zip(report["models"], analyses, strict=True):
        row["static"] = a
    report["device"] = _device_info(profile)
    report["settings"]["device"] = profile.name
    return report


# --- eval --------------------------------------------------------------------------------------


def evaluate_device(
    model: Any,
    ds: Any,
    pre: Any,
    *,
    reference: Any,
    top_k: int,
    batch_size: int,
    target: str,
    threads: int | None,
    output: int | str | None,
    **options: Any,
) -> dict[str, Any]:
    """`edgekit eval --target DEVICE`: accuracy as the device's CPU kernels compute it (aarch64
    LiteRT under QEMU) and how its outputs differ from this machine's LiteRT."""
    profile = profile_for(target)
    ignore, opts = _pop_options(options, profile)
    if profile.cpu.arch != "aarch64":
        from edgekit.bench.evaluation import evaluate

        (analysis,) = analyze_models([Path(model)], profile, ignore_limits=ignore)
        result = evaluate(
            model,
            ds,
            reference=reference,
            top_k=top_k,
            batch_size=batch_size,
            mean=pre.mean,
            std=pre.std,
            target=_local_target(profile),
            threads=threads,
            output=output,
            **opts,
        )
        return {**result, "device": _device_info(profile), "static": analysis}

    from edgekit import ui
    from edgekit.bench import remote
    from edgekit.bench.evaluation import evaluate_outputs
    from edgekit.emulation import provision, qemu
    from edgekit.runtimes.base import check_threads

    threads = check_threads(threads) or 1
    (path,) = remote.tflite_models([model], f"an emulated target ({profile.name})", batch=1)
    (analysis,) = analyze_models([path], profile, ignore_limits=ignore)
    state = provision.require()
    cpu = profile.cpu.qemu_cpu
    seen: dict[str, Any] = {}

    def run(files: dict[str, Path], job: dict[str, Any]) -> dict[str, Any]:
        return qemu.run_job(
            files,
            job,
            qemu_cpu=cpu,
            features=list(profile.cpu.features),
            midr=profile.cpu.midr,
            cores=_cores(profile),
            _state=state,
        )

    def predict(x: np.ndarray) -> tuple[list[np.ndarray], dict[str, Any]]:
        # Chunks of a few hundred images: a progress line per chunk, and each QEMU start
        # (about 1.5 s) is spread over many images.
        step = max(batch_size, 256)
        parts, desc = [], {}
        starts = range(0, len(x), step)
        for s in ui.progress(starts, description=f"eval {path.name} on an emulated {cpu}"):
            outs, desc = remote.run_predict(
                path, x[s : s + step], threads=threads, batch_size=batch_size, run=run
            )
            parts.append(outs)
        outs = [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
        seen.update(x=x, outs=outs)
        return outs, desc

    result = evaluate_outputs(
        path,
        ds,
        pre,
        reference=reference,
        top_k=top_k,
        batch_size=batch_size,
        threads=threads,
        predict=predict,
        target=profile.name,
        source="emulated",
        batching=f"emulated {cpu}: one invoke per batch",
        output=output,
    )
    result["machine"] = {**result["machine"], "device": f"{profile.title}, emulated {cpu}"}
    result["numerics"] = numerics(path, seen["x"], seen["outs"], result["output"], ds, threads)
    result["device"] = _device_info(profile)
    result["static"] = analysis
    result["threads"] = threads
    result["note"] = (
        f"Accuracy as the aarch64 LiteRT CPU kernels (XNNPACK) compute it on {cpu}: the device's "
        "CPU numerics. GPU/NNAPI delegates compute differently and are not emulated."
    )
    return result


def numerics(
    path: Path,
    x: np.ndarray,
    device_outs: list[np.ndarray],
    output_name: str,
    ds: Any,
    threads: int,
) -> dict[str, Any]:
    """How the emulated arm64 outputs differ from this machine's LiteRT on the same inputs."""
    from edgekit.runtimes import open_runner

    with open_runner(path, target="cpu", threads=threads) as r:
        host = r.run(x)
        names = [t.name for t in r.outputs]
        d = r.describe()
    oi = names.index(output_name) if output_name in names else 0
    diffs = [
        float(np.max(np.abs(a - b))) if a.size else 0.0
        for a, b in zip(device_outs, host, strict=True)
    ]
    dev_top1 = device_outs[oi].argmax(axis=1)
    host_top1 = host[oi].argmax(axis=1)
    changed = int((dev_top1 != host_top1).sum())
    out: dict[str, Any] = {
        "compared_with": f"{d['runtime']} {d['runtime_version']} on this machine (x86_64, "
        "XNNPACK), same preprocessed inputs",
        "max_abs_diff": max(diffs) if diffs else 0.0,
        "max_abs_diff_per_output": dict(zip(names, diffs, strict=True)),
        "bit_identical": all(v == 0.0 for v in diffs),
        "top1_agreement": float((dev_top1 == host_top1).mean()),
        "changed_predictions": changed,
        "count": len(x),
        "source": "emulated vs measured on this machine",
    }
    if ds.labeled:
        out["x86_top1"] = float((host_top1 == np.asarray(ds.y)).mean())
    return out
