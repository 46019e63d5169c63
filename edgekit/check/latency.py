"""Latency as a ratio to a fixed reference workload, measured interleaved in one process.

Absolute times on a shared CI runner move with its CPU model, clock and neighbours. A baseline
therefore stores the model's time per invoke divided by that of a fixed reference network run
through the same runtime, interleaved with it (reference, model, model, reference, ...) in the same
process, and a check compares that ratio with the baseline's.

What is timed (CLOCK): with one thread (the default), the process's CPU time during each invoke.
On a shared machine the wall time of an invoke includes the time the scheduler gives to other
jobs; long invokes are cut more often than short ones, so even interleaved wall-time ratios move
by a factor of two when neighbours get busy. CPU time leaves that out and keeps what the model
costs: the work, at the speed this core runs it now, which the reference ratio normalizes. With
several threads, worker threads spin and wait, so wall time is used. The statistic is the ratio of
medians. docs/check.md has the measurements behind these choices.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.check.evaluation import _shorten
from edgekit.errors import EdgekitError, EvaluationError, UsageError

QUANTILE = 50.0  # percentile of per-invoke times compared between model and reference
# Bundled reference networks: (format, compute precision) -> file in edgekit/assets.
REFERENCE_FILES = {
    (fmt, p): f"check_reference_{p}.{fmt}"
    for fmt in ("tflite", "onnx")
    for p in ("float32", "int8")
}
DEFAULT_SECONDS = 3.0
DEFAULT_WARMUP_SECONDS = 0.5
MAX_RESAMPLE_ELEMENTS = 8_000_000  # bound on bootstrap work: resamples x rounds


def bundled_reference(model_format: str, precision: str = "float32") -> Path:
    """The bundled reference network for a model: same runtime (the ONNX one for ONNX models, the
    TFLite one for TFLite and Keras models) and same compute precision (int8 or float32)."""
    from edgekit.resources import asset

    fmt = "onnx" if model_format == "onnx" else "tflite"
    return asset(REFERENCE_FILES[(fmt, "int8" if precision == "int8" else "float32")])


def compute_precision(path: str | os.PathLike | Any) -> str:
    """ "int8" when most convolutions and matrix products of the model compute in integers,
    else "float32". Integer and float kernels do not slow down alike when the machine is busy
    (another core's vector units, another clock licence), so the reference network is matched to
    the model's kind (docs/check.md has the measurements)."""
    from edgekit.artifacts import ModelArtifact

    art = ModelArtifact.open(path)
    if art.format == "tflite":
        info = art.tflite.summary()
        return "int8" if info["integer_compute_ops"] > info["float_compute_ops"] else "float32"
    if art.format == "onnx":
        import onnx

        try:
            graph = onnx.load(art.path, load_external_data=False).graph
        except Exception:  # unreadable: the runner reports it with a proper message
            return "float32"
        made_by = {o: n.op_type for n in graph.node for o in n.output}
        integer = floating = 0
        for n in graph.node:
            if n.op_type in (
                "QLinearConv",
                "QLinearMatMul",
                "ConvInteger",
                "MatMulInteger",
                "QGemm",
            ):
                integer += 1
            elif n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm"):
                # QDQ format: the weight comes out of a DequantizeLinear; ORT runs it in int8.
                quantized = len(n.input) > 1 and made_by.get(n.input[1]) == "DequantizeLinear"
                integer += quantized
                floating += not quantized
        return "int8" if integer > floating else "float32"
    return "float32"


def quantile_ratio(model_ms: np.ndarray, reference_ms: np.ndarray) -> float:
    """QUANTILE-th percentile of the model's times over the reference's."""
    return float(np.percentile(model_ms, QUANTILE) / np.percentile(reference_ms, QUANTILE))


def default_clock(threads: int) -> str:
    """ "cpu" for one thread, "wall" for several (see the module docstring)."""
    return "cpu" if threads == 1 else "wall"


def measure_ratio(
    model: str | os.PathLike | Any,
    reference: str | os.PathLike | Any,
    *,
    threads: int = 1,
    clock: str | None = None,
    seconds: float = DEFAULT_SECONDS,
    warmup_seconds: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Time `model` and `reference` interleaved (batch 1, `threads` threads) for `seconds`.

    clock: "cpu" or "wall" (default_clock(threads) when None).
    warmup_seconds: warm-up time before timing (default: DEFAULT_WARMUP_SECONDS, at most half of
        `seconds`).
    Returns model_ms and reference_ms (per-invoke times, paired by round), rounds, the ratio of
    their medians with a 95% bootstrap interval, each one's median in ms, and the clock.
    model / reference: paths or ModelArtifacts.
    """
    from edgekit.artifacts import ModelArtifact
    from edgekit.bench.latency import measure_interleaved
    from edgekit.runtimes import open_runner

    model = ModelArtifact.open(model)

    if not np.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"--latency-seconds must be more than 0. Received: {seconds!r}")
    if warmup_seconds is None:
        warmup_seconds = min(DEFAULT_WARMUP_SECONDS, seconds / 2)
    clock = clock or default_clock(threads)
    runners = []
    try:
        runners.append(open_runner(reference, threads=threads))
        runners.append(open_runner(model, threads=threads))
        rng = np.random.default_rng(seed)
        # Values in [0, 1): preprocessed pixels; the values barely matter to latency.
        xs = [rng.random((1, *r.input.shape[1:]), dtype=np.float32) for r in runners]
        try:
            cmp = measure_interleaved(
                runners, xs, warmup=10, warmup_seconds=warmup_seconds, runs=None,
                min_seconds=seconds, seed=seed, clock=clock,
            )  # fmt: skip
        except EdgekitError:
            raise
        except Exception as e:  # the runtime failed on valid input: no latency to compare
            raise EvaluationError(
                f"Timing {model.name} failed ({type(e).__name__}: {_shorten(str(e))}); "
                "the check could not be made."
            ) from None
        ref_d = runners[0].describe()
        mod_d = runners[1].describe()
    finally:
        for r in runners:
            r.close()
    ref_ms = np.asarray(cmp.stats[0].samples_ms, np.float64)
    mod_ms = np.asarray(cmp.stats[1].samples_ms, np.float64)
    lo, hi = ratio_interval(mod_ms, ref_ms, confidence=0.95, seed=seed)
    return {
        "model_ms": mod_ms,
        "reference_ms": ref_ms,
        "rounds": len(mod_ms),
        "ratio": quantile_ratio(mod_ms, ref_ms),
        "ci_low": lo,
        "ci_high": hi,
        "model_p50_ms": float(np.median(mod_ms)),
        "reference_p50_ms": float(np.median(ref_ms)),
        "runtime": mod_d["runtime"],
        "runtime_version": mod_d["runtime_version"],
        "reference_runtime": ref_d["runtime"],
        "delegate": mod_d.get("delegate") or mod_d.get("provider"),
        "warmup_seconds": warmup_seconds,
        "clock": clock,
    }


def _resamples(rounds: int, wanted: int) -> int:
    return int(min(wanted, max(200, MAX_RESAMPLE_ELEMENTS // max(rounds, 1))))


def _bootstrap_ratios(
    model_ms: np.ndarray, reference_ms: np.ndarray, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap distribution of the quantile ratio, resampling whole rounds (pairs)."""
    n = len(model_ms)
    both = np.stack([model_ms, reference_ms])  # (2, rounds)
    out = np.empty(resamples)
    step = max(1, int(2_000_000 // max(n, 1)))
    for s0 in range(0, resamples, step):
        idx = rng.integers(0, n, size=(min(step, resamples - s0), n))
        q = np.percentile(both[:, idx], QUANTILE, axis=2)  # (2, chunk)
        out[s0 : s0 + idx.shape[0]] = q[0] / q[1]
    return out


def ratio_interval(
    model_ms: np.ndarray,
    reference_ms: np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of one measurement's quantile ratio."""
    rng = np.random.default_rng(seed)
    r = _bootstrap_ratios(model_ms, reference_ms, _resamples(len(model_ms), resamples), rng)
    lo, hi = np.percentile(r, [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100])
    return float(lo), float(hi)


def compare_ratios(
    baseline: tuple[np.ndarray, np.ndarray],
    candidate: tuple[np.ndarray, np.ndarray],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Candidate ratio / baseline ratio, with a bootstrap interval that resamples the rounds of
    each measurement independently (the two were taken in different processes, at different
    times; within each, a round keeps the model and reference times that ran side by side).

    baseline, candidate: (model_ms, reference_ms) paired by round.
    Returns change (candidate / baseline ratio, 1.0 = unchanged), ci_low, ci_high, confidence,
    resamples.
    """
    rng = np.random.default_rng(seed)
    n = max(len(baseline[0]), len(candidate[0]))
    used = _resamples(n, resamples)
    rb = _bootstrap_ratios(*baseline, used, rng)
    rc = _bootstrap_ratios(*candidate, used, rng)
    change = quantile_ratio(*candidate) / quantile_ratio(*baseline)
    lo, hi = np.percentile(rc / rb, [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100])
    return {
        "change": change,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "confidence": confidence,
        "resamples": used,
    }
