"""Latency measurement: warm-up, timed invokes, summary statistics, interleaved comparisons.

Each timed run is `time.perf_counter_ns()` around `runner.invoke()` alone: inputs are set (and
quantized) once by `runner.prepare(x)` before timing starts, and outputs are not read back.
Backend-agnostic: anything with prepare(x) and invoke() can be measured.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from edgekit.errors import UsageError

DEFAULT_WARMUP = 10
DEFAULT_WARMUP_SECONDS = 0.1
DEFAULT_RUNS = 100
# What each timed invoke is measured with: wall time (the latency a caller sees), or the CPU time
# of the whole process (the work done, on any thread; time spent descheduled by a busy machine is
# not counted, which is what makes ratios of it stable on shared CI runners; see docs/check.md).
Clock = Literal["wall", "cpu"]
CLOCKS = {"wall": time.perf_counter_ns, "cpu": time.process_time_ns}


class Invocable(Protocol):
    def prepare(self, x: Any) -> None: ...

    def invoke(self) -> None: ...


@dataclass
class LatencyStats:
    """Summary of timed runs, in milliseconds per invoke (one invoke = one batch)."""

    count: int
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    cv: float  # std / mean
    batch: int = 1
    throughput: float = 0.0  # items per second at the mean latency
    warmup_runs: int = 0
    warmup_seconds: float = 0.0
    first_ms: float | None = None  # the first invoke of this measurement (a cold start when fresh)
    samples_ms: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, *, samples: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not samples:
            d.pop("samples_ms")
        return d


def settings(plan: Any, *, target: str, clock: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The `settings` block of a bench report, whatever ran it: the measurement plan (a BenchPlan)
    as it ran (`runs` is None when `min_seconds` decides the count), what the clock measured,
    then the target's own settings."""
    return {
        "target": target,
        "threads": plan.threads,
        "batch": plan.batch,
        "warmup": plan.warmup,
        "warmup_seconds": plan.warmup_seconds,
        "runs": None if plan.min_seconds is not None else plan.runs,
        "min_seconds": plan.min_seconds,
        "xnnpack": plan.xnnpack,
        "clock": clock,
        **extra,
    }


def summarize(samples_ms: Sequence[float], *, batch: int = 1) -> LatencyStats:
    """Statistics of a list of per-invoke times in ms (linear-interpolated percentiles)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise UsageError("No timed runs to summarize; use --runs 1 or more.")
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    p50, p90, p95, p99 = (float(v) for v in np.percentile(a, [50, 90, 95, 99]))
    return LatencyStats(
        count=int(a.size),
        mean=mean,
        std=std,
        min=float(a.min()),
        p50=p50,
        p90=p90,
        p95=p95,
        p99=p99,
        max=float(a.max()),
        cv=std / mean if mean > 0 else 0.0,
        batch=batch,
        throughput=batch * 1000.0 / mean if mean > 0 else 0.0,
        samples_ms=[float(v) for v in a],
    )


def check_plan(
    warmup: int, warmup_seconds: float, runs: int | None, min_seconds: float | None
) -> None:
    """Reject impossible run counts and times with one-line UsageErrors."""
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise UsageError(f"--warmup must be an integer of at least 0. Received: {warmup!r}")
    if warmup_seconds is None or not math.isfinite(warmup_seconds) or warmup_seconds < 0:
        raise UsageError(f"--warmup-seconds must be 0 or more. Received: {warmup_seconds!r}")
    if min_seconds is not None:
        if not math.isfinite(min_seconds) or min_seconds <= 0:
            raise UsageError(f"--min-seconds must be more than 0. Received: {min_seconds!r}")
    elif runs is None or isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise UsageError(
            f"--runs must be at least 1. Received: --runs {runs}. "
            "Pass a positive count, or --min-seconds S to run for a time."
        )


@dataclass
class Rounds:
    """Interleaved timed rounds: each runner's per-invoke times (ms, by round), its first warm-up
    invoke, and the warm-up done."""

    samples_ms: list[list[float]]
    first_ms: list[float | None]
    warmup_runs: int
    warmup_seconds: float


def time_rounds(
    runners: Sequence[Invocable],
    xs: Sequence[Any],
    *,
    warmup: int,
    warmup_seconds: float,
    runs: int | None,
    min_seconds: float | None,
    timer: Any = time.perf_counter_ns,
) -> Rounds:
    """Set each runner's input (prepare), warm up, then time rounds of invoke() alone (`runs`
    rounds, or rounds for at least `min_seconds`), each invoke with `timer`."""
    for r, xi in zip(runners, xs, strict=True):
        r.prepare(xi)
    t0 = time.perf_counter()
    first, warm_n = _warm(runners, warmup, warmup_seconds)
    warm_s = time.perf_counter() - t0
    return Rounds(_timed(runners, runs, min_seconds, timer), first, warm_n, warm_s)


def _warm(
    runners: Sequence[Invocable], warmup: int, warmup_seconds: float
) -> tuple[list[float | None], int]:
    """Warm-up rounds (all runners in turn) until both the count and the time are reached."""
    first: list[float | None] = [None] * len(runners)
    done = 0
    start = time.perf_counter()
    while done < warmup or time.perf_counter() - start < warmup_seconds:
        for i, r in enumerate(runners):
            t0 = time.perf_counter_ns()
            r.invoke()
            dt = (time.perf_counter_ns() - t0) / 1e6
            if first[i] is None:
                first[i] = dt
        done += 1
    return first, done


def _timed(
    runners: Sequence[Invocable],
    runs: int | None,
    min_seconds: float | None,
    timer: Any = time.perf_counter_ns,
) -> list[list[float]]:
    """Timed rounds, each invoke timed alone. Every runner runs once per round; the order rotates
    by one each round (A B, B A, ... or A B C, B C A, ...) so that no runner always follows the
    same one (the first of a pair tends to find colder caches)."""
    n = len(runners)
    samples: list[list[float]] = [[] for _ in range(n)]
    clock = time.perf_counter_ns
    start = clock()
    limit_ns = int(min_seconds * 1e9) if min_seconds is not None else 0
    rounds = 0
    while True:
        if min_seconds is None:
            if rounds >= runs:  # type: ignore[operator]
                break
        elif rounds > 0 and clock() - start >= limit_ns:
            break
        for j in range(n):
            i = (j + rounds) % n
            r = runners[i]
            t0 = timer()
            r.invoke()
            t1 = timer()
            samples[i].append((t1 - t0) / 1e6)
        rounds += 1
    return samples


def measure(
    runner: Invocable,
    x: Any,
    *,
    warmup: int = DEFAULT_WARMUP,
    warmup_seconds: float = DEFAULT_WARMUP_SECONDS,
    runs: int | None = DEFAULT_RUNS,
    min_seconds: float | None = None,
) -> LatencyStats:
    """Time `runner.invoke()` on input x after warm-up.

    warmup / warmup_seconds: warm-up continues until both this many runs and this much time.
    runs: timed runs; or min_seconds: time for at least this long instead (runs is then ignored).
    The input is set once (prepare) before warm-up; `first_ms` is the first warm-up invoke.
    """
    plan = {"warmup": warmup, "warmup_seconds": warmup_seconds, "runs": runs}
    return measure_interleaved([runner], x, min_seconds=min_seconds, **plan).stats[0]


@dataclass
class Comparison:
    """Interleaved measurements of several runners and each one's p50 ratio to the first."""

    stats: list[LatencyStats]
    ratios: list[dict[str, float]]  # per runner: ratio, ci_low, ci_high (p50 / p50 of the first)
    confidence: float = 0.95
    resamples: int = 2000

    @property
    def method(self) -> str:
        return (
            f"paired bootstrap over interleaved rounds ({self.resamples} resamples), "
            "percentile interval of the p50 ratio"
        )

    def to_dict(self, *, samples: bool = False) -> dict[str, Any]:
        return {
            "stats": [s.to_dict(samples=samples) for s in self.stats],
            "ratios": self.ratios,
            "confidence": self.confidence,
            "resamples": self.resamples,
            "method": self.method,
        }


def measure_interleaved(
    runners: Sequence[Invocable],
    x: Any | Sequence[Any],
    *,
    warmup: int = DEFAULT_WARMUP,
    warmup_seconds: float = DEFAULT_WARMUP_SECONDS,
    runs: int | None = DEFAULT_RUNS,
    min_seconds: float | None = None,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    clock: Clock = "wall",
) -> Comparison:
    """Measure several runners in interleaved rounds (A B A B ...) on the same input.

    x: one input for all runners, or a list with one input per runner. Interleaving exposes every
    runner to the same machine noise; the p50 ratio's confidence interval is a paired bootstrap
    over rounds, which keeps that shared noise paired.
    clock: "wall" (time.perf_counter_ns) or "cpu" (time.process_time_ns: CPU time of the process
    during each invoke). min_seconds and warm-up times are wall time either way.
    """
    if clock not in CLOCKS:
        raise UsageError(f"clock must be one of {', '.join(CLOCKS)}. Received: {clock!r}")
    check_plan(warmup, warmup_seconds, runs, min_seconds)
    if not runners:
        raise UsageError("No models to measure. Pass at least one model.")
    xs = list(x) if isinstance(x, list | tuple) else [x] * len(runners)
    if len(xs) != len(runners):
        raise UsageError(f"Got {len(xs)} inputs for {len(runners)} models; pass one per model.")
    batches = [int(np.shape(xi)[0]) if np.ndim(xi) else 1 for xi in xs]
    rounds = time_rounds(
        runners, xs, warmup=warmup, warmup_seconds=warmup_seconds, runs=runs,
        min_seconds=min_seconds, timer=CLOCKS[clock],
    )  # fmt: skip
    samples, first = rounds.samples_ms, rounds.first_ms
    stats = []
    for i, s in enumerate(samples):
        st = summarize(s, batch=batches[i])
        st.warmup_runs = rounds.warmup_runs
        st.warmup_seconds = rounds.warmup_seconds
        st.first_ms = first[i] if first[i] is not None else s[0]
        stats.append(st)
    used = bootstrap_resamples(len(samples[0]), resamples)
    ratios = ratio_ci(samples, confidence=confidence, resamples=used, seed=seed)
    return Comparison(stats=stats, ratios=ratios, confidence=confidence, resamples=used)


def bootstrap_resamples(rounds: int, wanted: int = 2000) -> int:
    """Resamples used for `rounds` rounds: fewer for long --min-seconds runs of tiny models, to
    bound the work (resamples x rounds) at about 5 million medians' worth of elements."""
    return min(wanted, max(200, int(5e6 // max(rounds, 1))))


def ratio_ci(
    samples: Sequence[Sequence[float]],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> list[dict[str, float]]:
    """p50(i) / p50(0) for each runner with a paired-bootstrap percentile interval.

    Samples must come from the same rounds (equal length, index = round): a resample draws whole
    rounds, so a slow moment of the machine lands in both numerator and denominator.
    """
    a = np.asarray(samples, dtype=np.float64)  # (runners, rounds)
    n = a.shape[1]
    rng = np.random.default_rng(seed)
    med = np.empty((a.shape[0], resamples))
    step = max(1, int(2e6 // max(n, 1)))
    for s0 in range(0, resamples, step):
        idx = rng.integers(0, n, size=(min(step, resamples - s0), n))
        med[:, s0 : s0 + idx.shape[0]] = np.median(a[:, idx], axis=2)
    base = np.median(a[0])
    lo_q, hi_q = (1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100
    out = []
    for i in range(a.shape[0]):
        r = med[i] / med[0]
        lo, hi = np.percentile(r, [lo_q, hi_q])
        out.append(
            {"ratio": float(np.median(a[i]) / base), "ci_low": float(lo), "ci_high": float(hi)}
        )
    return out
