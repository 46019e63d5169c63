"""edgekit.bench.latency and edgekit.bench.benchmark (api.bench) on real LiteRT / ONNX Runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_runtimes_models import C, H, W, zoo

from edgekit import api
from edgekit.bench import latency
from edgekit.bench.machine import current_rss_mb, machine_info, peak_rss_mb
from edgekit.errors import ModelLoadError, UsageError
from edgekit.runtimes import open_runner

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def models(request):
    return zoo(request.config)


@pytest.fixture(scope="module")
def x1():
    return np.random.default_rng(0).random((1, H, W, C), dtype=np.float32)


class Sleeper:
    """A controlled invoke for testing the harness itself: prepare is slow, invoke takes `ms`."""

    def __init__(self, ms: float, log: list | None = None, tag: str = "") -> None:
        self.ms, self.log, self.tag, self.prepared = ms, log, tag, 0

    def prepare(self, x) -> None:
        self.prepared += 1
        time.sleep(0.05)

    def invoke(self) -> None:
        if self.log is not None:
            self.log.append(self.tag)
        end = time.perf_counter() + self.ms / 1000
        while time.perf_counter() < end:
            pass


def test_summarize_known_samples():
    s = latency.summarize(list(range(1, 101)), batch=4)
    assert s.count == 100 and s.min == 1 and s.max == 100
    assert s.mean == pytest.approx(50.5) and s.p50 == pytest.approx(50.5)
    assert s.p90 == pytest.approx(90.1) and s.p99 == pytest.approx(99.01)
    assert s.std == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert s.cv == pytest.approx(s.std / s.mean)
    assert s.throughput == pytest.approx(4 * 1000 / 50.5)


def test_timing_covers_invoke_only_and_prepares_once():
    r = Sleeper(ms=2.0)
    s = latency.measure(r, np.zeros((1, 2)), warmup=2, warmup_seconds=0, runs=20)
    assert r.prepared == 1  # the 50 ms prepare is outside every timed run
    assert s.count == 20 and s.warmup_runs == 2
    assert 1.9 <= s.p50 < 10 and s.min >= 1.9


def test_warmup_runs_until_count_and_time():
    r = Sleeper(ms=1.0)
    s = latency.measure(r, None, warmup=2, warmup_seconds=0.05, runs=3)
    # The time, not the count of 2, ended the warm-up (a busy 2-core machine still fits > 2).
    assert s.warmup_runs > 2 and s.warmup_seconds >= 0.05


def test_min_seconds_runs_for_at_least_that_long():
    t0 = time.perf_counter()
    s = latency.measure(Sleeper(ms=1.0), None, warmup=0, warmup_seconds=0, min_seconds=0.1)
    elapsed = time.perf_counter() - t0
    assert elapsed >= 0.1 and s.count >= 2
    assert sum(s.samples_ms) <= elapsed * 1000 and s.min >= 1.0


def test_interleaved_rounds_rotate_order():
    log: list[str] = []
    runners = [Sleeper(0.01, log, "A"), Sleeper(0.01, log, "B"), Sleeper(0.01, log, "C")]
    latency.measure_interleaved(runners, None, warmup=0, warmup_seconds=0, runs=3)
    assert "".join(log) == "ABC" + "BCA" + "CAB"


def test_ratio_ci_recovers_a_known_ratio_and_covers_one_for_equal_runners():
    rng = np.random.default_rng(1)
    noise = rng.lognormal(0, 0.3, 400)  # machine noise shared by both runners in a round
    a = 1.0 * noise * rng.lognormal(0, 0.02, 400)
    b = 2.0 * noise * rng.lognormal(0, 0.02, 400)
    c = 1.0 * noise * rng.lognormal(0, 0.02, 400)
    base, two, same = latency.ratio_ci([a, b, c])
    assert base == {"ratio": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    assert two["ci_low"] < 2.0 < two["ci_high"] and two["ci_high"] - two["ci_low"] < 0.2
    assert same["ci_low"] <= 1.0 <= same["ci_high"]


def test_bootstrap_work_is_bounded_for_long_runs():
    assert latency.bootstrap_resamples(100) == 2000
    assert latency.bootstrap_resamples(1_000_000) == 200
    assert latency.bootstrap_resamples(10, wanted=50) == 50


@pytest.mark.parametrize(
    "plan,words",
    [
        ({"runs": 0}, "--runs must be at least 1"),
        ({"runs": -3}, "--runs must be at least 1"),
        ({"warmup": -1}, "--warmup"),
        ({"min_seconds": 0.0}, "--min-seconds"),
        ({"warmup_seconds": -1.0}, "--warmup-seconds"),
    ],
)
def test_impossible_plans_are_one_line_usage_errors(x1, plan, words):
    with pytest.raises(UsageError) as e:
        latency.measure(Sleeper(0.01), x1, **plan)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_measure_real_runner_statistics_are_ordered(models, x1):
    s = latency.measure(open_runner(models["int8_b1.tflite"]), x1, runs=50, warmup=3)
    assert s.count == 50 and len(s.samples_ms) == 50
    assert 0 < s.min <= s.p50 <= s.p90 <= s.p95 <= s.p99 <= s.max
    assert s.first_ms is not None and s.first_ms > 0
    d = s.to_dict()
    assert "samples_ms" not in d and len(s.to_dict(samples=True)["samples_ms"]) == 50


def test_bench_report_single_model(models):
    rep = api.bench(models["uint8_dyn.tflite"], batch=4, runs=30, warmup=2)
    (m,) = rep["models"]
    assert m["runtime"] == "litert" and m["runtime_version"] and m["threads"] == 1
    assert m["delegate"].startswith("XNNPACK") and m["fallback"] is None
    assert m["load_ms"] > 0 and m["first_inference_ms"] > 0
    lat = m["latency_ms"]
    assert lat["count"] == 30 and lat["batch"] == 4
    assert lat["throughput"] == pytest.approx(4000 / lat["mean"])
    for key in ("mean", "std", "min", "p50", "p90", "p95", "p99", "max", "cv"):
        assert lat[key] >= 0
    assert m["peak_rss_mb"] >= m["rss_before_mb"] > 0 and m["rss_increase_mb"] >= 0
    assert m["input"]["dtype"] == "uint8"
    assert rep["machine"]["cpu"] and rep["machine"]["logical_cores"] >= 1
    assert rep["comparison"] is None
    json.dumps(rep)  # JSON-ready as it is


def test_bench_several_models_interleaved_with_ratios(models):
    paths = [models["f32_dyn.tflite"], models["f32_dyn.onnx"], models["int8_qdq.onnx"]]
    rep = api.bench(paths, runs=40, warmup=2, graph_optimization="basic")
    assert [m["latency_ms"]["count"] for m in rep["models"]] == [40, 40, 40]
    assert rep["models"][1]["provider"] == "CPUExecutionProvider"
    assert rep["models"][1]["graph_optimization"] == "basic"
    rows = rep["comparison"]["rows"]
    assert rows[0]["ratio"] == 1.0
    for row, m in zip(rows, rep["models"], strict=True):
        assert row["ci_low"] <= row["ratio"] <= row["ci_high"]
        want = m["latency_ms"]["p50"] / rep["models"][0]["latency_ms"]["p50"]
        assert row["ratio"] == pytest.approx(want)


def test_bench_xnnpack_off_is_reported(models):
    rep = api.bench(models["f32_b1.tflite"], runs=5, xnnpack=False)
    assert "reference" in rep["models"][0]["delegate"]


def test_bench_bad_input_is_refused_before_loading(tmp_path):
    with pytest.raises(UsageError, match="--runs must be at least 1"):
        api.bench(tmp_path / "missing.tflite", runs=0)
    with pytest.raises(UsageError, match="--batch"):
        api.bench(tmp_path / "missing.tflite", batch=0)
    with pytest.raises(ModelLoadError, match="does not exist"):
        api.bench(tmp_path / "missing.tflite")


def test_bench_batch_the_fixed_shape_cannot_take(models):
    with pytest.raises(UsageError) as e:
        api.bench(models["int8_b1.tflite"], batch=8, runs=5)
    assert "Batch size 8" in str(e.value) and "(1, 8, 8, 3)" in str(e.value)


def test_machine_and_memory():
    m = machine_info()
    assert m["usable_cores"] >= 1 and m["arch"]
    rss = current_rss_mb()
    assert 10 < rss <= peak_rss_mb() + 1


NO_TF_SCRIPT = """
import sys, time
import edgekit.cli, edgekit.runtimes, edgekit.bench
from edgekit import api
rep = api.bench([sys.argv[1], sys.argv[2]], runs=20)
assert rep["models"][0]["latency_ms"]["count"] == 20
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras", "sklearn"))
print("HEAVY", bad)
"""


def test_tflite_and_onnx_paths_never_import_tensorflow(models):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            NO_TF_SCRIPT,
            str(models["f32_b1.tflite"]),
            str(models["f32_dyn.onnx"]),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=True,
    )
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
