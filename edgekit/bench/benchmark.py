"""`edgekit bench`: time models on a target and build the one bench report, whatever measured.

The report (a dict, JSON-ready) holds per model the load time, first-inference time, latency
statistics, memory, runtime, threads and delegate/provider, plus the machine and, for several
models, each one's p50 ratio to the first with a confidence interval. Models that run here
(cpu, gpu, a desktop profile) are measured in this process; any other target returns its
measurements (edgekit.targets), and the statistics are computed here from its timings with the
same code.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from edgekit.bench import latency
from edgekit.errors import UsageError

# An emulated invoke takes 30-500x the host's time: a few counted runs are plenty, as the
# instruction count varies by well under 1% between runs.
DEVICE_WARMUP = 1
DEVICE_RUNS = 5
# What the report shows of how a runtime ran, when the runner says.
_RUNTIME_KEYS = ("accelerator", "delegate", "provider", "xnnpack", "graph_optimization", "xla")


def bench(
    models: Sequence[str | os.PathLike] | str | os.PathLike, plan: Any = None
) -> dict[str, Any]:
    """Latency, memory and runtime details of one or more models on `plan.target` (a BenchPlan,
    edgekit.plans; see docs/bench.md). Every report says where its figures come from
    (`source`)."""
    from edgekit.artifacts import ModelArtifact
    from edgekit.plans import BenchPlan
    from edgekit.targets import open_target

    plan = plan or BenchPlan()
    paths = [models] if isinstance(models, str | os.PathLike) else list(models)
    if not paths:
        raise UsageError("No model given. Pass one or more .tflite, .onnx, .keras or SavedModel.")
    target = open_target(plan.target)
    plan = with_defaults(plan, emulated=target.emulated)
    latency.check_plan(plan.warmup, plan.warmup_seconds, plan.runs, plan.min_seconds)
    b = plan.batch
    if isinstance(b, bool) or not isinstance(b, int) or b < 1:
        raise UsageError(f"--batch must be an integer of at least 1. Received: {b!r}")
    target.refuse(plan.given())
    arts = [ModelArtifact.open(p) for p in paths]
    if target.runs_here is None:
        return report(target.bench(arts, plan))
    notes = target.annotate(arts, plan)
    run = bench_here(arts, plan, target.runs_here)
    for m, fields in zip(run.models, notes.rows, strict=True):
        m.extra.update(fields)
    run.settings.update(notes.settings)
    run.extra.update(notes.report)
    return report(run)


def with_defaults(plan: Any, *, emulated: bool) -> Any:
    """The plan with the target's defaults where it leaves them open (10 warm-up runs for at
    least 0.1 s, then 100 runs; an emulated device 1, 0 s, 5)."""
    warmup, warmup_seconds, runs = plan.warmup, plan.warmup_seconds, plan.runs
    if warmup is None:
        warmup = DEVICE_WARMUP if emulated else latency.DEFAULT_WARMUP
    if warmup_seconds is None:
        warmup_seconds = 0.0 if emulated else latency.DEFAULT_WARMUP_SECONDS
    if runs is None and plan.min_seconds is None:
        runs = DEVICE_RUNS if emulated else latency.DEFAULT_RUNS
    return replace(plan, warmup=warmup, warmup_seconds=warmup_seconds, runs=runs)


def bench_here(models: list[Any], plan: Any, where: str) -> Any:
    """Load each model in this process (edgekit.runtimes), time its first inference, then time
    all of them in interleaved rounds; the measurements as a target returns them."""
    from edgekit.bench.machine import current_rss_mb, machine_info, peak_rss_mb
    from edgekit.runtimes import open_runner
    from edgekit.targets.base import SOURCE_LOCAL, BenchRun, ModelRun

    rng = np.random.default_rng(plan.seed)
    runners, xs, runs = [], [], []
    try:
        for m in models:
            rss0 = current_rss_mb()
            t0 = time.perf_counter_ns()
            r = open_runner(
                m,
                target=where,
                threads=plan.threads,
                xnnpack=plan.xnnpack,
                graph_optimization=plan.graph_optimization,
                xla=plan.xla,
            )
            load_ms = (time.perf_counter_ns() - t0) / 1e6
            runners.append(r)
            # Random inputs in [0, 1): preprocessed pixels; values barely matter to latency.
            x = rng.random((plan.batch, *r.input.shape[1:]), dtype=np.float32)
            r.prepare(x)
            t0 = time.perf_counter_ns()
            r.invoke()
            first_ms = (time.perf_counter_ns() - t0) / 1e6
            xs.append(x)
            runs.append(
                ModelRun(
                    model=m,
                    runtime={},
                    load_ms=load_ms,
                    first_inference_ms=first_ms,
                    rss_before_mb=rss0,
                    # Counted after load + first inference, when this model's buffers exist;
                    # includes the runtime library when it is the first model to use it.
                    rss_increase_mb=current_rss_mb() - rss0,
                    peak_rss_mb=peak_rss_mb(),
                )
            )
        rounds = latency.time_rounds(
            runners,
            xs,
            warmup=plan.warmup,
            warmup_seconds=plan.warmup_seconds,
            runs=plan.runs,
            min_seconds=plan.min_seconds,
        )
        for run, r, s, first in zip(runs, runners, rounds.samples_ms, rounds.first_ms, strict=True):
            run.runtime = _runtime_fields(r.describe())
            run.samples_ms, run.first_warmup_ms = s, first
    finally:
        for r in runners:
            r.close()
    settings: dict[str, Any] = {}
    if plan.graph_optimization is not None:
        settings["graph_optimization"] = plan.graph_optimization
    if plan.xla:
        settings["xla"] = True
    return BenchRun(
        models=runs,
        plan=plan,
        target=where,
        clock="time.perf_counter_ns around invoke() only",
        machine=machine_info(),
        source=SOURCE_LOCAL,
        peak_rss_mb=peak_rss_mb(),
        warmup_runs=rounds.warmup_runs,
        warmup_seconds=rounds.warmup_seconds,
        settings=settings,
    )


def _runtime_fields(d: dict[str, Any]) -> dict[str, Any]:
    """A runner's describe() as a report row's runtime fields."""
    return {
        "format": d["format"],
        "runtime": d["runtime"],
        "runtime_version": d["runtime_version"],
        "target": d["target"],
        "threads": d["threads"],
        **{k: d[k] for k in _RUNTIME_KEYS if k in d},
        "fallback": d.get("fallback"),
        "batching": d["batching"],
        "input": d["inputs"][0],
        "outputs": d["outputs"],
    }


# --- the report --------------------------------------------------------------------------------


def report(run: Any) -> dict[str, Any]:
    """The bench report of a BenchRun (edgekit.targets.base), whichever target measured it."""
    plan = run.plan
    rows, stats = [], []
    for m in run.models:
        row, st = _row(m, run)
        rows.append(row)
        stats.append(st)
    out: dict[str, Any] = {
        "machine": run.machine,
        "settings": latency.settings(plan, target=run.target, clock=run.clock, extra=run.settings),
        "models": rows,
        "peak_rss_mb": run.peak_rss_mb,
        "comparison": None,
        "source": run.source,
        **run.extra,
    }
    if len(rows) > 1:
        if run.comparison is not None:
            out["comparison"] = run.comparison
        elif run.interleaved:
            out["comparison"] = _ratios(rows, stats, [m.samples_ms for m in run.models], plan.seed)
        if run.comparison_note:
            out["comparison_note"] = run.comparison_note
    return out


def _row(m: Any, run: Any) -> tuple[dict[str, Any], latency.LatencyStats | None]:
    """One model's row, with the statistics of its timings (the same code for every target)."""
    st, lat = None, m.latency_ms
    if m.samples_ms is not None:
        st = latency.summarize(m.samples_ms, batch=run.plan.batch)
        st.warmup_runs, st.warmup_seconds = run.warmup_runs, run.warmup_seconds
        st.first_ms = m.first_warmup_ms
        lat = st.to_dict(samples=run.plan.samples)
        lat.pop("first_ms")  # the cold first inference is first_inference_ms
    row = {
        "model": m.model.path,
        "name": m.model.name,
        "load_ms": m.load_ms,
        "first_inference_ms": m.first_inference_ms,
        "rss_before_mb": m.rss_before_mb,
        "rss_increase_mb": m.rss_increase_mb,
        "peak_rss_mb": m.peak_rss_mb,
        **m.runtime,
        "latency_ms": lat,
        "source": run.source,
    }
    if run.emulated_note is not None:
        # Wall times of the emulator are no latency: kept apart, and said so.
        emulated = {
            **lat,
            "load_ms": m.load_ms,
            "first_inference_ms": m.first_inference_ms,
            "rss_increase_mb": m.rss_increase_mb,
            "peak_rss_mb": m.peak_rss_mb,
            "source": "emulated",
            "note": run.emulated_note,
        }
        del row["rss_before_mb"]
        row.update(
            latency_ms=None,
            load_ms=None,
            first_inference_ms=None,
            peak_rss_mb=None,
            rss_increase_mb=None,
            emulated_ms=emulated,
        )
    row.update(m.extra)
    return row, st


def _ratios(
    rows: list[dict[str, Any]],
    stats: list[Any],
    samples_ms: list[list[float]],
    seed: int,
) -> dict[str, Any]:
    """p50 ratios to the first model with a paired-bootstrap CI over the interleaved rounds."""
    used = latency.bootstrap_resamples(len(samples_ms[0]))
    ratios = latency.ratio_ci(samples_ms, resamples=used, seed=seed)
    cmp = latency.Comparison(stats, ratios, resamples=used)
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
