"""The target interface (edgekit.targets): which --target names what, which options each takes,
and the one bench report edgekit.bench builds from whatever a target measured."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.artifacts import ModelArtifact
from edgekit.bench import latency
from edgekit.bench.benchmark import report, with_defaults
from edgekit.errors import UsageError
from edgekit.plans import BenchPlan, EvalPlan, TargetOptions
from edgekit.resources import asset
from edgekit.targets import open_target
from edgekit.targets.base import BenchRun, ModelRun, ThisMachine


def test_open_target_names_every_kind():
    from edgekit.targets.adb import AndroidDevice
    from edgekit.targets.emulated.target import DesktopProfile, EmulatedDevice
    from edgekit.targets.ssh import LinuxBoard

    here = open_target("CPU")
    assert isinstance(here, ThisMachine) and here.runs_here == "CPU" and not here.emulated
    board = open_target("ssh://pi@raspberrypi.local:2222")
    assert isinstance(board, LinuxBoard) and board.name == "ssh://pi@raspberrypi.local:2222"
    assert board.runs_here is None
    assert isinstance(open_target("adb:R58M"), AndroidDevice)
    phone = open_target("pixel-4")
    assert isinstance(phone, EmulatedDevice) and phone.emulated and phone.runs_here is None
    desk = open_target("desktop-cpu")
    assert isinstance(desk, DesktopProfile) and desk.runs_here == "cpu" and not desk.emulated
    with pytest.raises(UsageError, match=r"Unknown target 'tpu'.*pixel-4"):
        open_target("tpu")
    with pytest.raises(UsageError):
        open_target("ssh://-oProxyCommand=x")


def test_plan_options_and_what_each_target_refuses():
    plan = BenchPlan(graph_optimization="basic", delegate="gpu", options=TargetOptions(ssh_key="k"))
    assert plan.given() == ["graph_optimization", "delegate", "ssh_key"]
    assert BenchPlan().given() == [] and EvalPlan().given() == []
    assert TargetOptions(ignore_limits=True, adb_timeout=5.0).given() == [
        "adb_timeout",
        "ignore_limits",
    ]
    open_target("cpu").refuse(["graph_optimization", "xla"])  # the runtimes' own: taken here
    with pytest.raises(UsageError, match="delegate, ssh_key apply to device profile"):
        open_target("cpu").refuse(plan.given())
    with pytest.raises(UsageError, match="delegate, graph_optimization do not apply to ssh"):
        open_target("ssh://pi@host").refuse(plan.given()[:2])
    with pytest.raises(UsageError, match="ssh_key do not apply to adb targets"):
        open_target("adb").refuse(["delegate", "ssh_key"])
    with pytest.raises(UsageError, match="do not apply to the emulated pixel-4 target"):
        open_target("pixel-4").refuse(["graph_optimization", "ignore_limits"])
    open_target("desktop-cpu").refuse(["graph_optimization", "ignore_limits"])


def test_device_defaults_fill_only_what_the_plan_leaves_open():
    p = with_defaults(BenchPlan(), emulated=True)
    assert (p.warmup, p.warmup_seconds, p.runs) == (1, 0.0, 5)
    p = with_defaults(BenchPlan(warmup=3, min_seconds=1.0), emulated=False)
    assert (p.warmup, p.warmup_seconds, p.runs) == (3, latency.DEFAULT_WARMUP_SECONDS, None)


def _run(samples, **kw):
    arts = [ModelArtifact.open(asset(n)) for n in ("check_reference_int8.tflite",) * len(samples)]
    plan = with_defaults(BenchPlan(seed=3), emulated=False)
    runtime = {"format": "tflite", "runtime": "fake", "runtime_version": "0", "target": "x"}
    runs = [
        ModelRun(model=a, runtime=dict(runtime), load_ms=1.0, samples_ms=s, first_warmup_ms=9.0)
        for a, s in zip(arts, samples, strict=True)
    ]
    return BenchRun(
        models=runs, plan=plan, target="x", clock="a clock", machine={"cpu": "c"}, source="src",
        warmup_runs=10, warmup_seconds=0.1, settings={"own": 1}, **kw,
    )  # fmt: skip


def test_one_report_from_any_targets_timings():
    rng = np.random.default_rng(0)
    a = list(rng.uniform(1.0, 1.2, 40))
    b = list(2 * np.asarray(a))
    rep = report(_run([a, b]))
    want = latency.summarize(a)
    row = rep["models"][0]
    assert row["latency_ms"]["p50"] == want.p50 and row["latency_ms"]["count"] == 40
    assert "first_ms" not in row["latency_ms"] and "samples_ms" not in row["latency_ms"]
    assert row["latency_ms"]["warmup_runs"] == 10 and row["source"] == "src"
    assert row["runtime"] == "fake" and row["load_ms"] == 1.0
    assert rep["settings"]["target"] == "x" and rep["settings"]["own"] == 1
    assert rep["settings"]["clock"] == "a clock" and rep["settings"]["runs"] == 100
    cmp = rep["comparison"]
    assert cmp["rows"][1]["ratio"] == pytest.approx(2.0) and cmp["rows"][1]["significant"]
    assert cmp["rows"] == report(_run([a, b]))["comparison"]["rows"]  # seeded bootstrap


def test_emulated_timings_are_kept_apart_and_summaries_pass_through():
    rep = report(_run([[5.0, 6.0]], emulated_note="not a latency"))
    row = rep["models"][0]
    assert row["latency_ms"] is None and row["load_ms"] is None and "rss_before_mb" not in row
    assert row["emulated_ms"]["p50"] == 5.5 and row["emulated_ms"]["note"] == "not a latency"
    assert row["emulated_ms"]["load_ms"] == 1.0
    run = _run([[1.0], [1.0]], interleaved=False, comparison_note="one after the other")
    for m in run.models:
        m.samples_ms, m.latency_ms = None, {"mean": 3.0}
    rep = report(run)
    assert rep["models"][1]["latency_ms"] == {"mean": 3.0} and rep["comparison"] is None
    assert rep["comparison_note"] == "one after the other"


def test_eval_refuses_options_of_other_targets_alike():
    from edgekit import api

    model = asset("check_reference_int8.tflite")
    with pytest.raises(UsageError, match="remote_python apply to device profile"):
        api.evaluate(model, "shapes:size=128,n=8", remote_python="python3")
    with pytest.raises(UsageError, match="ignore_limits do not apply to ssh targets"):
        api.evaluate(model, "shapes:size=128,n=8", target="ssh://pi@host", ignore_limits=True)
    with pytest.raises(UsageError, match="benchmark_model on a phone"):
        api.evaluate(model, "shapes:size=128,n=8", target="adb")
