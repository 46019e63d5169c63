"""`edgekit bench` and `edgekit eval` on another device: a Linux board over ssh, a phone over adb.

Both return the report of a local run (edgekit.bench.benchmark / evaluation), with the device's
machine description and `source: "measured on the device"`. Over ssh, edgekit's own runner takes
the timings on the board and the statistics are computed here with the same code as a local run;
over adb, LiteRT's `benchmark_model` measures and reports only its own summary (count, mean, std,
min, max; no percentiles), which fills the fields it has and leaves the others None.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.bench import latency
from edgekit.errors import UsageError

SOURCE_LOCAL = "measured on this machine"
SOURCE_DEVICE = "measured on the device"
SOURCES = (SOURCE_LOCAL, SOURCE_DEVICE, "emulated", "estimated")

SSH_OPTIONS = ("remote_python", "ssh_key", "known_hosts", "connect_timeout", "remote_timeout")
ADB_OPTIONS = ("benchmark_binary", "delegate", "taskset", "adb", "adb_timeout")
PROFILE_OPTIONS = ("ignore_limits",)


def is_ssh(target: str) -> bool:
    return str(target).startswith("ssh://")


def is_adb(target: str) -> bool:
    t = str(target)
    return t == "adb" or t.startswith("adb:")


def tflite_models(paths: list[Any], where: str, *, batch: int) -> list[Path]:
    """The models a device runner (ssh, adb, qemu) takes: .tflite files only, each with one image
    input whose shape is static and whose fixed batch, if any, is `batch`. Checked on the files,
    before anything is sent; `where` names the target in the error."""
    from edgekit.artifacts import detect_format

    out = []
    for p in paths:
        fmt = detect_format(p)
        if fmt != "tflite":
            raise UsageError(
                f"{Path(p).name} is a {fmt} model; {where} runs .tflite models (LiteRT on the "
                "device). Export it with `edgekit export MODEL --format tflite` first."
            )
        out.append(Path(p))
    for p in out:
        _check_io(p, batch)
    return out


def _check_io(path: Path, batch: int) -> dict[str, Any]:
    """The checks a local runner makes at load time, done here on the file (no runtime needed)."""
    from edgekit.errors import UnsupportedModelError
    from edgekit.export.tflite import inspect_tflite

    info = inspect_tflite(path)
    ins = info["inputs"]
    if len(ins) != 1:
        raise UnsupportedModelError(
            f"{path.name} has {len(ins)} inputs; edgekit runs models with exactly one image input."
        )
    shape = ins[0]["shape"]
    if any(d is None or d < 0 for d in shape[1:]):
        raise UnsupportedModelError(
            f"Input of {path.name} has shape {shape} with a dynamic dimension other than the batch."
        )
    if shape and shape[0] > 0 and shape[0] != batch:
        raise UsageError(
            f"Batch size {batch} does not fit {path.name}: its input has a fixed batch of "
            f"{shape[0]}. Use --batch {shape[0]}."
        )
    return info


def _split_options(options: dict[str, Any], allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    extra = sorted(k for k in options if k not in allowed)
    if extra:
        raise UsageError(
            f"Option(s) {', '.join(extra)} do not apply to {where} targets. "
            f"Expected: {', '.join(allowed)}."
        )
    return options


# --- ssh ---------------------------------------------------------------------------------------


def _ssh_options(options: dict[str, Any]) -> Any:
    from edgekit.targets.ssh import SshOptions

    o = _split_options(options, SSH_OPTIONS, "ssh")
    return SshOptions(
        identity=o.get("ssh_key"),
        known_hosts=o.get("known_hosts"),
        connect_timeout=int(o.get("connect_timeout") or 10),
        timeout=float(o.get("remote_timeout") or 600),
        python=str(o.get("remote_python") or "python3"),
    )


def bench_ssh(
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
    """The benchmark of `edgekit bench`, run on an ssh target by edgekit's remote runner."""
    from edgekit.runtimes.base import check_threads
    from edgekit.targets.ssh import SshTarget, run_job

    t = SshTarget.parse(target)
    opts = _ssh_options(options)
    threads = check_threads(threads)
    models = tflite_models(paths, "an ssh target", batch=batch)
    files, job = bench_job(
        models,
        threads=threads,
        batch=batch,
        xnnpack=xnnpack,
        warmup=warmup,
        warmup_seconds=warmup_seconds,
        runs=runs,
        min_seconds=min_seconds,
        seed=seed,
    )
    from edgekit import ui

    ui.info(f"bench: running {len(models)} model(s) on {t} with {opts.python}")
    res = run_job(t, files, job, opts)
    rows, stats = bench_rows(
        models, res, target=str(t), threads=threads, batch=batch, samples=samples
    )
    report = _report(
        rows,
        machine=res["machine"],
        settings=latency.settings(
            target=str(t),
            threads=threads,
            batch=batch,
            warmup=warmup,
            warmup_seconds=warmup_seconds,
            runs=runs,
            min_seconds=min_seconds,
            xnnpack=xnnpack,
            clock="time.perf_counter_ns around invoke() only, on the device (edgekit runner)",
            remote_python=opts.python,
        ),
        peak_rss=res["peak_rss_mb"],
    )
    if len(rows) > 1:
        report["comparison"] = interleaved_comparison(rows, stats, res["samples_ms"], seed)
    return report


def bench_job(
    models: list[Path],
    *,
    threads: int | None,
    batch: int,
    xnnpack: bool,
    warmup: int,
    warmup_seconds: float,
    runs: int | None,
    min_seconds: float | None,
    seed: int,
    markers: bool = False,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """The files and the bench job of edgekit's runner, whatever carries it (ssh, qemu)."""
    files = {f"model{i}.tflite": p for i, p in enumerate(models)}
    job = {
        "mode": "bench",
        "models": list(files),
        "threads": threads,
        "batch": batch,
        "xnnpack": xnnpack,
        "warmup": warmup,
        "warmup_seconds": warmup_seconds,
        "runs": None if min_seconds is not None else runs,
        "min_seconds": min_seconds,
        "seed": seed,
    }
    if markers:
        job["markers"] = True
    return files, job


def bench_rows(
    models: list[Path],
    res: dict[str, Any],
    *,
    target: str,
    threads: int | None,
    batch: int,
    samples: bool,
    source: str = SOURCE_DEVICE,
) -> tuple[list[dict[str, Any]], list[latency.LatencyStats]]:
    """Report rows (and their statistics) from the runner's bench result: the same statistics
    code as a local run, over the timings the runner took."""
    rows = []
    stats = []
    for p, m, s, first in zip(
        models, res["models"], res["samples_ms"], res["first_warmup_ms"], strict=True
    ):
        st = latency.summarize(s, batch=batch)
        st.warmup_runs, st.warmup_seconds = res["warmup_runs"], res["warmup_seconds"]
        st.first_ms = first
        stats.append(st)
        lat = st.to_dict(samples=samples)
        lat.pop("first_ms")
        rows.append(
            {
                "model": str(p),
                "name": p.name,
                "load_ms": m["load_ms"],
                "first_inference_ms": m["first_inference_ms"],
                "rss_before_mb": m["rss_before_mb"],
                "rss_increase_mb": m["rss_increase_mb"],
                "peak_rss_mb": m["peak_rss_mb"],
                "format": "tflite",
                "runtime": res["runtime"],
                "runtime_version": res["runtime_version"],
                "target": target,
                "threads": threads,
                "accelerator": m["accelerator"],
                "delegate": m["delegate"],
                "xnnpack": m["xnnpack"],
                "fallback": m["fallback"],
                "batching": _batching(m["inputs"][0]["shape"]),
                "input": m["inputs"][0],
                "outputs": m["outputs"],
                "latency_ms": lat,
                "source": source,
            }
        )
    return rows, stats


def interleaved_comparison(
    rows: list[dict[str, Any]],
    stats: list[latency.LatencyStats],
    samples_ms: list[list[float]],
    seed: int,
) -> dict[str, Any]:
    """p50 ratios to the first model with a paired-bootstrap CI over the runner's rounds."""
    used = latency.bootstrap_resamples(len(samples_ms[0]))
    ratios = latency.ratio_ci(samples_ms, resamples=used, seed=seed)
    return comparison(rows, ratios, latency.Comparison(stats, ratios, resamples=used))


def _batching(shape: list[Any]) -> str:
    b = shape[0] if shape else None
    if b is None or b < 0:
        return "dynamic batch: one invoke per batch (input resized)"
    return f"fixed batch {b}: run() loops over chunks of {b} (last one zero-padded)"


def _report(
    rows: list[dict[str, Any]],
    *,
    machine: dict[str, Any],
    settings: dict[str, Any],
    peak_rss: float | None,
) -> dict[str, Any]:
    return {
        "machine": machine,
        "settings": settings,
        "models": rows,
        "peak_rss_mb": peak_rss,
        "comparison": None,
        "source": SOURCE_DEVICE,
    }


def comparison(
    rows: list[dict[str, Any]], ratios: list[dict[str, float]], cmp: Any
) -> dict[str, Any]:
    """The `comparison` block of a bench report (as benchmark.bench builds it)."""
    return {
        "baseline": rows[0]["model"],
        "confidence": cmp.confidence,
        "method": cmp.method,
        "rows": [
            {
                "model": row["model"],
                "name": row["name"],
                "p50_ms": row["latency_ms"]["p50"],
                **rt,
                "significant": not (rt["ci_low"] <= 1.0 <= rt["ci_high"]),
            }
            for row, rt in zip(rows, ratios, strict=True)
        ],
    }


def predict_ssh(
    path: Any, x: np.ndarray, *, target: str, threads: int | None, batch_size: int, **options: Any
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Run preprocessed inputs through a .tflite on an ssh target; the float32 outputs and the
    runner's description (runtime, machine ...)."""
    from edgekit.targets.ssh import SshTarget, run_job

    t = SshTarget.parse(target)
    opts = _ssh_options(options)
    (model,) = tflite_models([path], "an ssh target", batch=1)
    return run_predict(
        model,
        x,
        threads=threads,
        batch_size=batch_size,
        run=lambda files, job: run_job(t, files, job, opts),
    )


def run_predict(
    model: Path,
    x: np.ndarray,
    *,
    threads: int | None,
    batch_size: int,
    run: Callable[[dict[str, Path], dict[str, Any]], dict[str, Any]],
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """The runner's predict job for `x` through `model`, carried by `run(files, job)` (ssh,
    qemu): the float32 outputs and the runner's description."""
    import base64
    import io
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgekit-eval-") as tmp:
        xf = Path(tmp) / "x.npy"
        np.save(xf, np.asarray(x, dtype=np.float32))
        job = {
            "mode": "predict",
            "models": ["model0.tflite"],
            "inputs": "x.npy",
            "threads": threads,
            "batch_size": batch_size,
            "xnnpack": True,
        }
        res = run({"model0.tflite": model, "x.npy": xf}, job)
    outs = [np.load(io.BytesIO(base64.b64decode(b))) for b in res.pop("outputs_npy_b64")]
    return outs, res


# --- adb ---------------------------------------------------------------------------------------


def bench_adb(
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
    """LiteRT's benchmark_model on an Android device, one model after the other."""
    from edgekit import ui
    from edgekit.targets import adb as adbmod

    o = _split_options(options, ADB_OPTIONS, "adb")
    models = tflite_models(paths, "an adb target", batch=batch)
    if batch != 1:
        raise UsageError(
            "benchmark_model feeds the model's own input shape; --batch applies to ssh and local "
            "runs only. Leave --batch at 1 for adb targets."
        )
    if samples:
        raise UsageError(
            "benchmark_model reports no per-run times; --samples needs a local or ssh run."
        )
    delegate = o.get("delegate") or ("xnnpack" if xnnpack else "none")
    plan = adbmod.BenchmarkPlan(
        threads=threads if threads is not None else -1,
        runs=runs if runs is not None else 1,
        min_seconds=min_seconds,
        warmup=warmup,
        warmup_seconds=warmup_seconds,
        delegate=delegate,
        taskset=o.get("taskset"),
    )
    plan.check()  # before anything runs on the device
    device = adbmod.AdbDevice.connect(
        target, adb=o.get("adb"), timeout=float(o.get("adb_timeout") or 600)
    )
    ui.info(f"bench: running {len(models)} model(s) on {device.describe()} with benchmark_model")
    rows = []
    with device.session(o.get("benchmark_binary")) as session:
        for p in models:
            parsed = session.benchmark(p, plan)
            rows.append(_adb_row(p, parsed, device, plan))
        machine = device.machine_info()
    settings = latency.settings(
        target=device.target,
        threads=threads,
        batch=batch,
        warmup=warmup,
        warmup_seconds=warmup_seconds,
        runs=plan.runs,
        min_seconds=min_seconds,
        xnnpack=delegate == "xnnpack",
        clock="LiteRT benchmark_model on the device (its own timer around each run)",
        delegate=delegate,
        taskset=plan.taskset,
    )
    report = _report(
        rows, machine=machine, settings=settings, peak_rss=_max(r["peak_rss_mb"] for r in rows)
    )
    if len(rows) > 1:
        report["comparison_note"] = (
            "benchmark_model runs one model after the other and reports means only: no interleaved "
            "ratio or confidence interval (compare with --target ssh:// or locally for those)."
        )
    return report


def _max(values: Any) -> float | None:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


def _adb_row(p: Path, parsed: dict[str, Any], device: Any, plan: Any) -> dict[str, Any]:
    from edgekit.export.tflite import inspect_tflite

    info = inspect_tflite(p)
    mean, std, n = parsed["inference_avg_ms"], parsed.get("inference_std_ms"), parsed.get("count")
    lat = {
        "count": n,
        "mean": mean,
        "std": std,
        "min": parsed.get("inference_min_ms"),
        "p50": parsed.get("inference_p50_ms"),
        "p90": None,
        "p95": parsed.get("inference_p95_ms"),
        "p99": None,
        "max": parsed.get("inference_max_ms"),
        "cv": (std / mean) if std is not None and mean else None,
        "batch": 1,
        "throughput": 1000.0 / mean if mean else None,
        "warmup_runs": parsed.get("warmup_count"),
        "warmup_seconds": None,
        "warmup_mean_ms": parsed.get("warmup_avg_ms"),
    }
    inp = dict(info["inputs"][0])
    return {
        "model": str(p),
        "name": p.name,
        "load_ms": parsed.get("init_ms"),
        "first_inference_ms": parsed.get("first_inference_ms"),
        "rss_before_mb": None,
        "rss_increase_mb": parsed.get("memory_overall_mb"),
        "peak_rss_mb": parsed.get("peak_memory_mb"),
        "memory_init_mb": parsed.get("memory_init_mb"),
        "format": "tflite",
        "runtime": parsed.get("tool", "benchmark_model"),
        "runtime_version": "(version not printed)",
        "target": device.target,
        "threads": plan.threads,
        "accelerator": "GPU"
        if plan.delegate == "gpu"
        else "NNAPI"
        if plan.delegate == "nnapi"
        else "CPU",
        "delegate": parsed.get("delegate_line")
        or f"{plan.delegate} (requested; the output does not say how much it took)",
        "fallback": parsed.get("fallback"),
        "batching": _batching(inp["shape"]),
        "input": inp,
        "outputs": info["outputs"],
        "latency_ms": lat,
        "benchmark_model": {k: v for k, v in parsed.items() if k != "raw"},
        "source": SOURCE_DEVICE,
    }


def is_profile(target: str) -> bool:
    """A bundled device profile name or a path to a profile .yaml."""
    from edgekit.profiles import list_profiles

    t = str(target)
    return t in list_profiles() or Path(t).suffix in (".yaml", ".yml")


def dispatch(target: str) -> str | None:
    """ "ssh" / "adb" / "device" (a device profile) for a device target, None for this machine
    (cpu / gpu); a UsageError listing every valid target for anything else."""
    if is_ssh(target):
        return "ssh"
    if is_adb(target):
        return "adb"
    if str(target).lower() in ("cpu", "gpu"):
        return None
    if is_profile(target):
        return "device"
    from edgekit.profiles import list_profiles

    raise UsageError(
        f"Unknown target {str(target)!r}. Expected cpu, gpu, ssh://user@host[:port], "
        f"adb[:SERIAL], a device profile ({', '.join(list_profiles())}) or a profile .yaml path."
    )
