"""`edgekit bench`: load each model, time its first inference, then measure all models interleaved.

The report (a dict, JSON-ready) holds per model the load time, first-inference time, latency
statistics, memory, runtime, threads and delegate/provider, plus the machine and, for several
models, each one's p50 ratio to the first with a confidence interval.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.bench import latency
from edgekit.bench.machine import current_rss_mb, machine_info, peak_rss_mb
from edgekit.errors import UsageError

# An emulated invoke takes 30-500x the host's time: a few counted runs are plenty, as the
# instruction count varies by well under 1% between runs.
DEVICE_WARMUP = 1
DEVICE_RUNS = 5
_RUNTIME_KEYS = ("accelerator", "delegate", "provider", "xnnpack", "graph_optimization", "xla")


def bench(
    models: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    target: str = "cpu",
    threads: int | None = 1,
    batch: int = 1,
    warmup: int | None = None,
    warmup_seconds: float | None = None,
    runs: int | None = None,
    min_seconds: float | None = None,
    xnnpack: bool = True,
    samples: bool = False,
    seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """Latency, memory and runtime details of one or more models (see docs/bench.md).

    target: "cpu" / "gpu" (this machine), "ssh://user@host[:port]" (a Linux board, through
    edgekit's remote runner), "adb" / "adb:SERIAL" (an Android device, through LiteRT's
    benchmark_model) or a device profile name / .yaml (emulated: static analysis, instruction
    counts and a latency estimate; see edgekit.targets.emulated.target); every report says where its
    figures come from (`source`). warmup / warmup_seconds / runs None: the defaults (10, 0.1 s,
    100; for an emulated device 1, 0 s, 5).
    """
    from edgekit.runtimes import open_runner

    paths = [models] if isinstance(models, str | os.PathLike) else list(models)
    if not paths:
        raise UsageError("No model given. Pass one or more .tflite, .onnx, .keras or SavedModel.")
    from edgekit.bench import remote

    kind = remote.dispatch(target)
    emulated = False
    if kind == "device":
        from edgekit.targets.emulated.target import is_emulated

        emulated = is_emulated(target)
    if warmup is None:
        warmup = DEVICE_WARMUP if emulated else latency.DEFAULT_WARMUP
    if warmup_seconds is None:
        warmup_seconds = 0.0 if emulated else latency.DEFAULT_WARMUP_SECONDS
    if runs is None and min_seconds is None:
        runs = DEVICE_RUNS if emulated else latency.DEFAULT_RUNS
    latency.check_plan(warmup, warmup_seconds, runs, min_seconds)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UsageError(f"--batch must be an integer of at least 1. Received: {batch!r}")
    if kind is not None:
        if kind == "device":
            from edgekit.targets.emulated.target import bench_device as run
        else:
            run = remote.bench_ssh if kind == "ssh" else remote.bench_adb
        return run(
            paths,
            target=str(target),
            threads=threads,
            batch=batch,
            warmup=warmup,
            warmup_seconds=warmup_seconds,
            runs=runs,
            min_seconds=min_seconds,
            xnnpack=xnnpack,
            samples=samples,
            seed=seed,
            **options,
        )
    device_only = sorted(
        set(options) & set(remote.SSH_OPTIONS + remote.ADB_OPTIONS + remote.PROFILE_OPTIONS)
    )
    if device_only:
        raise UsageError(
            f"Option(s) {', '.join(device_only)} apply to device profile, --target ssh://... "
            "or adb targets only. "
            f"Received --target {target}."
        )

    rng = np.random.default_rng(seed)
    runners, xs, rows = [], [], []
    try:
        for p in paths:
            rss0 = current_rss_mb()
            t0 = time.perf_counter_ns()
            r = open_runner(p, target=target, threads=threads, xnnpack=xnnpack, **options)
            load_ms = (time.perf_counter_ns() - t0) / 1e6
            runners.append(r)
            # Random inputs in [0, 1): preprocessed pixels; values barely matter to latency.
            x = rng.random((batch, *r.input.shape[1:]), dtype=np.float32)
            r.prepare(x)
            t0 = time.perf_counter_ns()
            r.invoke()
            first_ms = (time.perf_counter_ns() - t0) / 1e6
            xs.append(x)
            rows.append(
                {
                    "model": str(p),
                    "name": Path(p).name,
                    "load_ms": load_ms,
                    "first_inference_ms": first_ms,
                    "rss_before_mb": rss0,
                    # Counted after load + first inference, when this model's buffers exist;
                    # includes the runtime library when it is the first model to use it.
                    "rss_increase_mb": current_rss_mb() - rss0,
                    "peak_rss_mb": peak_rss_mb(),
                }
            )
        cmp = latency.measure_interleaved(
            runners,
            xs,
            warmup=warmup,
            warmup_seconds=warmup_seconds,
            runs=runs,
            min_seconds=min_seconds,
            seed=seed,
        )
        for row, r, st in zip(rows, runners, cmp.stats, strict=True):
            d = r.describe()
            stats = st.to_dict(samples=samples)
            stats.pop("first_ms")  # the cold first inference is first_inference_ms above
            row.update(
                format=d["format"],
                runtime=d["runtime"],
                runtime_version=d["runtime_version"],
                target=d["target"],
                threads=d["threads"],
                **{k: d[k] for k in _RUNTIME_KEYS if k in d},
                fallback=d.get("fallback"),
                batching=d["batching"],
                input=d["inputs"][0],
                outputs=d["outputs"],
                latency_ms=stats,
                source=remote.SOURCE_LOCAL,
            )
    finally:
        for r in runners:
            r.close()
    report: dict[str, Any] = {
        "machine": machine_info(),
        "settings": latency.settings(
            target=target,
            threads=threads,
            batch=batch,
            warmup=warmup,
            warmup_seconds=warmup_seconds,
            runs=runs,
            min_seconds=min_seconds,
            xnnpack=xnnpack,
            clock="time.perf_counter_ns around invoke() only",
            **{k: v for k, v in options.items() if isinstance(v, str | int | float | bool)},
        ),
        "models": rows,
        "peak_rss_mb": peak_rss_mb(),
        "comparison": None,
        "source": remote.SOURCE_LOCAL,
    }
    if len(rows) > 1:
        report["comparison"] = {
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
                for row, rt in zip(rows, cmp.ratios, strict=True)
            ],
        }
    return report
