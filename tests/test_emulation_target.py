"""`edgekit bench/eval --target DEVICE` for real: static analysis, qemu-aarch64 with the
instruction counter, the estimate, and the arm64-vs-x86 numerics, on the zoo's tiny models
(8x8x3 in, 4 classes). The emulated targets are provisioned by `make test` / CI
(`edgekit devices setup`); the fixture provisions where it can and skips only where it cannot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from test_runtimes_models import zoo

from edgekit import api
from edgekit.cli import cli
from edgekit.emulation.profiles import bundled_profiles, list_profiles, load_profile
from edgekit.emulation.static import analyze

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def models(request):
    return zoo(request.config)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def _profile_yaml(tmp_path: Path, base: str, **changes) -> Path:
    """A copy of a bundled profile with some top-level sections changed."""
    raw = yaml.safe_load(bundled_profiles()[base].read_text())
    for key, value in changes.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / f"{base}-test.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def rpi4_report(provisioned, models):
    r = invoke("bench", models["int8_b1.tflite"], "--target", "rpi4", "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_bench_rpi4_reports_static_counts_and_estimate(rpi4_report, models):
    rep = rpi4_report
    (row,) = rep["models"]
    # Defaults for an emulated target: 1 warm-up, 5 counted runs.
    assert rep["settings"]["runs"] == 5 and rep["settings"]["warmup"] == 1
    assert rep["device"]["name"] == "rpi4" and rep["settings"]["qemu_cpu"] == "cortex-a72"
    # Level 1: the same static analysis as edgekit.emulation.static, against the profile.
    static = analyze(models["int8_b1.tflite"], load_profile("rpi4"))
    assert row["static"]["totals"] == static["totals"]
    assert row["static"]["precision"] == "int8" and row["static"]["totals"]["macs"] > 0
    assert "no-dotprod" in {f["code"] for f in row["static"]["findings"]}  # Cortex-A72
    # Level 2: counted instructions per invoke, one per counted run.
    ins = row["instructions"]
    assert ins["source"] == "emulated" and ins["runs"] == 5 and len(ins["per_invoke"]) == 5
    assert ins["median"] > 1000 and min(ins["per_invoke"]) > 0
    assert ins["qemu_cpu"] == "cortex-a72" and row["runtime"] == "litert"
    # Emulated wall time is reported apart and is not a latency.
    assert row["latency_ms"] is None
    assert row["emulated_ms"]["source"] == "emulated" and row["emulated_ms"]["count"] == 5
    assert "NOT a latency" in row["emulated_ms"]["note"]
    # Level 3: rpi4 is calibrated (benchmarks/calibrate_devices.py): milliseconds from the counts.
    from edgekit.emulation.estimate import estimate_latency

    est = row["estimate"]
    assert est["source"] == "estimated" and est["calibrated"] is True
    assert [e["threads"] for e in est["by_threads"]] == [1, 4]  # big cores of a Pi 4
    one, four = (e["ms"] for e in est["by_threads"])
    assert 0 < four < one
    assert est["instructions"] == ins["median"]
    assert est["bytes_moved"] == static["totals"]["bytes_moved"]
    again = estimate_latency(ins["median"], est["bytes_moved"], "int8", load_profile("rpi4"), 1)
    assert again["ms"] == pytest.approx(one)
    assert "ms_1thread" in est["formula"]
    assert rep["source"] == "estimated" and row["source"] == "estimated"


def test_device_bench_table(rpi4_report, capsys):
    from edgekit.bench.render import bench_tables

    bench_tables(rpi4_report)
    out = capsys.readouterr().out
    assert "instructions / invoke" in out and "NOT a latency" in out
    assert "(estimate)" in out and "ms ±" in out and "MACs (static)" in out
    assert "no-dotprod" in out


def test_calibrated_profile_gives_milliseconds_and_exact_ratio(provisioned, models, tmp_path):
    cal = {
        "status": "calibrated",
        "cpi": {"float32": 1.5, "int8": 0.8},
        "parallel_efficiency": 0.7,
        "expected_error": 0.3,
        "method": "test constants",
    }
    # rpi4: one cluster of 4 Cortex-A72, so 2 threads use 2 big cores.
    prof = _profile_yaml(
        tmp_path,
        "rpi4",
        calibration=cal,
        memory={"bandwidth_gbps": 4.0},
        sources={"calibration": "test", "memory.bandwidth_gbps": "test"},
    )
    a, b = models["int8_b1.tflite"], models["f32_b1.tflite"]
    rep = api.bench([a, b], target=str(prof), runs=3, threads=2)
    p = load_profile(prof)
    for row, precision in zip(rep["models"], ("int8", "float32"), strict=True):
        est = row["estimate"]
        assert est["calibrated"] and est["precision"] == precision
        assert est["expected_error"] == 0.3
        one, two = est["by_threads"]
        assert (one["threads"], two["threads"]) == (1, 2)
        ms1 = est["instructions"] * cal["cpi"][precision] / (p.cpu.max_ghz * 1e6) + est[
            "bytes_moved"
        ] / (p.memory.bandwidth_gbps * 1e6)
        assert one["ms"] == pytest.approx(ms1, rel=1e-12)
        assert two["threads_used"] == 2 and two["ms"] == pytest.approx(ms1 / 1.7, rel=1e-12)
        assert one["low_ms"] == pytest.approx(one["ms"] / 1.3)  # a factor band
        assert row["instructions"]["threads"] == 2 and len(row["instructions"]["per_invoke"]) == 3
        assert "spin-waiting" in est["note"]  # counted with 2 threads
    cmp = rep["comparison"]["rows"]
    medians = [r["instructions"]["median"] for r in rep["models"]]
    assert cmp[1]["ratio"] == medians[1] / medians[0] and cmp[0]["ratio"] == 1.0


def test_eval_pixel4_accuracy_and_numerics(provisioned, models):
    m = models["int8_b1.tflite"]
    data = "shapes:size=8,classes=4"
    r = invoke("eval", m, "--data", data, "--limit", "32", "--target", "pixel-4", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    local = json.loads(invoke("eval", m, "--data", data, "--limit", "32", "--json").stdout)
    assert res["source"] == "emulated" and res["count"] == 32
    assert res["machine"]["arch"] == "aarch64" and res["device"]["qemu_cpu"] == "cortex-a76"
    num = res["numerics"]
    # int8 kernels are bit-identical on arm64 and x86 (measured when the emulation was built).
    assert num["max_abs_diff"] == 0.0 and num["bit_identical"]
    assert num["top1_agreement"] == 1.0 and num["changed_predictions"] == 0
    assert num["count"] == 32
    assert res["top1"] == local["top1"] == num["x86_top1"]
    assert res["confusion_matrix"] == local["confusion_matrix"]
    assert res["static"]["precision"] == "int8"


def test_unknown_target_lists_the_valid_ones(models):
    for cmd in (
        ["bench", models["int8_b1.tflite"]],
        ["eval", models["int8_b1.tflite"], "--data", "shapes:size=8"],
    ):
        err = one_line_error(invoke(*cmd, "--target", "pixel-99"))
        assert "'pixel-99'" in err and "ssh://user@host" in err and "adb[:SERIAL]" in err
        assert all(name in err for name in list_profiles())


def test_unprovisioned_device_names_the_setup_command(models, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "empty"))
    err = one_line_error(invoke("bench", models["int8_b1.tflite"], "--target", "pixel-4"))
    assert "not provisioned" in err and "`edgekit devices setup`" in err


def test_min_seconds_and_non_tflite_are_refused_for_emulated_targets(models):
    err = one_line_error(
        invoke("bench", models["int8_b1.tflite"], "--target", "rpi4", "--min-seconds", "1")
    )
    assert "--runs" in err
    err = one_line_error(invoke("bench", models["f32_dyn.onnx"], "--target", "rpi4"))
    assert "export" in err


@pytest.fixture(scope="module")
def big_model(tmp_path_factory):
    """A float dense model with 1.5 MB of weights (more than a 1 MB device)."""
    import tensorflow as tf

    w = tf.constant(np.random.default_rng(0).normal(size=(192, 2048)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
    def net(x):
        return tf.nn.softmax(tf.matmul(tf.reshape(x, [1, 192]), w)[:, :4])

    path = tmp_path_factory.mktemp("big") / "big_f32.tflite"
    conv = tf.lite.TFLiteConverter.from_concrete_functions([net.get_concrete_function()], net)
    path.write_bytes(conv.convert())
    return path


def _small_device(tmp_path: Path) -> Path:
    return _profile_yaml(
        tmp_path, "rpi4", memory={"app_memory_mb": 1}, sources={"memory.app_memory_mb": "test"}
    )


def test_model_over_the_device_memory_is_refused(big_model, tmp_path):
    small = _small_device(tmp_path)
    err = one_line_error(invoke("bench", big_model, "--target", small))
    assert "big_f32.tflite on rpi4-test" in err and "app memory budget: 1 MB" in err
    assert "--ignore-limits" in err
    # No app_memory_mb (as in most bundled profiles): the RAM is the limit, and it says so.
    ram = _profile_yaml(tmp_path, "rpi3", memory={"ram_mb": 1, "app_memory_mb": None})
    err = one_line_error(
        invoke("eval", big_model, "--data", "shapes:size=8,classes=4", "--target", ram)
    )
    assert "RAM" in err and "no app_memory_mb" in err


def test_ignore_limits_runs_and_keeps_the_finding(provisioned, big_model, tmp_path):
    small = _small_device(tmp_path)
    r = invoke("bench", big_model, "--target", small, "--ignore-limits", "--runs", "2", "--json")
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.stdout)["models"]
    assert "memory-exceeded" in {f["code"] for f in row["static"]["findings"]}
    assert row["instructions"]["median"] > 192 * 4  # at least the dense layer's work


def test_desktop_cpu_profile_runs_locally_with_static_analysis(models):
    r = invoke("bench", models["f32_b1.tflite"], "--target", "desktop-cpu", "--runs", "3", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    (row,) = rep["models"]
    assert rep["source"] == "measured on this machine" and row["target"] == "cpu"
    assert row["latency_ms"]["count"] == 3 and row["latency_ms"]["p50"] > 0
    assert rep["settings"]["warmup"] == 10  # this machine's defaults, not the emulated ones
    assert rep["device"]["name"] == "desktop-cpu" and rep["settings"]["device"] == "desktop-cpu"
    assert row["static"]["totals"]["macs"] > 0


def test_device_bench_imports_no_tensorflow(provisioned, models):
    code = (
        "import sys\nfrom edgekit import api\n"
        "rep = api.bench([sys.argv[1]], target='rpi4', runs=2)\n"
        "assert rep['models'][0]['instructions']['median'] > 0\n"
        "print('HEAVY', sorted(m for m in sys.modules\n"
        "      if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(models["int8_b1.tflite"])],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "EDGEKIT_QUIET": "1"},
    )
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
