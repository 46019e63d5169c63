"""`edgekit bench --target adb[:SERIAL]`: the benchmark_model output parser against real outputs, and
the adb commands through a stand-in `adb` (tests/fixtures/fake_adb.py) that records every argument
list and tokenizes `adb shell` strings as the device's shell would.

No phone is attached here. The parser fixtures in tests/fixtures/benchmark_model/ are real
benchmark_model outputs copied from public sources; each file's header names its source.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from cli_helpers import invoke, one_line_error

from edgekit.errors import TargetUnavailableError, UsageError
from edgekit.targets import adb
from edgekit.targets.adb import BenchmarkOutputError, BenchmarkPlan, parse_benchmark_output

FIXTURES = Path(__file__).parent / "fixtures"
OUTPUTS = FIXTURES / "benchmark_model"


def output(name: str) -> str:
    return (OUTPUTS / name).read_text().split("=== output ===\n", 1)[1]


# --- the parser ------------------------------------------------------------------------------


def test_parse_phone_cpu_run():
    p = parse_benchmark_output(output("mi11_fp32_cpu.txt"))
    assert p["init_ms"] == pytest.approx(1.430)
    assert p["first_inference_ms"] == pytest.approx(247.583)
    assert p["warmup_avg_ms"] == pytest.approx(222.136)
    assert p["inference_avg_ms"] == pytest.approx(220.000)
    assert p["count"] == 50
    assert p["inference_std_ms"] == pytest.approx(6.795)
    assert p["inference_min_ms"] == pytest.approx(206.675)
    assert p["inference_max_ms"] == pytest.approx(231.957)
    assert p["memory_init_mb"] == pytest.approx(5.66016)
    assert p["memory_overall_mb"] == pytest.approx(140.508)
    assert "peak_memory_mb" not in p and "inference_p50_ms" not in p


def test_parse_picks_the_regular_stat_line_not_the_warmup_one():
    p = parse_benchmark_output(output("tf_issue_42507_android.txt"))
    assert p["count"] == 50 and p["warmup_count"] == 15
    assert p["inference_std_ms"] == pytest.approx(0.450)  # not the warm-up's 3.930
    assert p["inference_avg_ms"] == pytest.approx(33.2094)
    assert p["first_inference_ms"] == pytest.approx(49.060)
    # Older builds call the footprint delta "Peak memory footprint".
    assert p["memory_init_mb"] == 0 and p["memory_overall_mb"] == pytest.approx(12.8672)


def test_parse_ignores_profiling_tables_and_reads_exponents():
    p = parse_benchmark_output(output("riscv_qemu_op_profiling.txt"))
    assert p["inference_avg_ms"] == pytest.approx(2950.34)  # "2.95034e+06" us
    assert p["warmup_avg_ms"] == pytest.approx(3512.39)
    # The stat line before the summary, not "Timings (microseconds): count=50 ... std=109770".
    assert p["inference_std_ms"] == pytest.approx(109.798)
    assert p["inference_max_ms"] == pytest.approx(3189.954)
    assert p["warmup_count"] == 1  # "count=1 curr=3512391": one warm-up run, no avg
    assert p["memory_overall_mb"] == pytest.approx(46.0859)


def test_parse_logcat_line_with_summary_only():
    p = parse_benchmark_output(output("litert_docs_logcat.txt"))
    assert p["inference_avg_ms"] == pytest.approx(14.5752)
    assert p["init_ms"] == pytest.approx(5.685)
    assert "count" not in p and "inference_std_ms" not in p


def test_parse_info_prefix_delegate_and_peak_memory():
    p = parse_benchmark_output(output("chromeos_xnnpack_peak_memory.txt"))
    assert p["count"] == 1061 and p["warmup_count"] == 9
    assert p["inference_std_ms"] == pytest.approx(0.982)
    assert p["peak_memory_mb"] == pytest.approx(93.2383)
    assert p["delegate_line"] == "TfLiteXNNPackDelegate: 58 of 58 nodes, 1 partition(s)"
    assert "fallback" not in p


def test_parse_litert_compiled_model_results_block():
    p = parse_benchmark_output(output("litert_compiled_model_gpu.txt"))
    assert p["tool"].startswith("LiteRT benchmark_model")
    assert p["init_ms"] == pytest.approx(23744.73)
    assert p["first_inference_ms"] == pytest.approx(7441.04)
    assert p["warmup_count"] == 1 and p["count"] == 10
    assert p["inference_avg_ms"] == pytest.approx(7430.20)
    assert p["inference_std_ms"] == pytest.approx(9.92)
    assert p["memory_overall_mb"] == pytest.approx(6391.74)
    assert "peak_memory_mb" not in p  # "Peak memory usage not available"


def test_parse_failed_run_says_why():
    with pytest.raises(BenchmarkOutputError) as e:
        parse_benchmark_output(output("mi11_int8_nnapi_failed.txt"))
    msg = str(e.value)
    assert "ANEURALNETWORKS_BAD_DATA" in msg and "Benchmarking failed" in msg


def test_parse_partial_delegation_is_a_fallback():
    text = output("chromeos_xnnpack_peak_memory.txt").replace(
        "Replacing 58 out of 58", "Replacing 50 out of 58"
    )
    p = parse_benchmark_output(text)
    assert p["fallback"] == "8 of 58 nodes ran on CPU kernels outside TfLiteXNNPackDelegate"


# --- commands through the stand-in adb ---------------------------------------------------------


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """An `adb` on PATH that records its calls; returns a reader of the recorded calls."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "adb"
    exe.write_text(f"#!{sys.executable}\n" + (FIXTURES / "fake_adb.py").read_text())
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "adb.jsonl"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(OUTPUTS / "mi11_fp32_cpu.txt"))
    monkeypatch.setenv("FAKE_ADB_EXECUTABLES", json.dumps(["/data/local/tmp/benchmark_model"]))

    def calls() -> list[dict]:
        if not log.exists():
            return []
        return [json.loads(ln) for ln in log.read_text().splitlines()]

    calls.exe = exe  # type: ignore[attr-defined]
    return calls


@pytest.fixture(scope="module")
def zoo_models(request) -> dict[str, Path]:
    from test_runtimes_models import zoo

    return zoo(request.config)


@pytest.fixture(scope="module")
def model(zoo_models) -> Path:
    """A real float .tflite, batch 1 (the runtime tests' zoo)."""
    return Path(zoo_models["f32_b1.tflite"])


def test_bench_adb_json_report(fake_adb, model):
    r = invoke("bench", model, "--target", "adb", "--threads", "4", "--runs", "50", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    (m,) = rep["models"]
    assert rep["source"] == m["source"] == "measured on the device"
    assert m["latency_ms"]["mean"] == pytest.approx(220.0)
    assert m["latency_ms"]["std"] == pytest.approx(6.795)
    assert m["latency_ms"]["count"] == 50
    assert m["latency_ms"]["p50"] is None  # benchmark_model prints no percentiles here
    assert m["load_ms"] == pytest.approx(1.43) and m["first_inference_ms"] == pytest.approx(247.583)
    assert m["rss_increase_mb"] == pytest.approx(140.508)
    assert m["target"] == "adb:emulator-5554" and m["threads"] == 4
    assert rep["machine"]["device"] == "Google Pixel 7" and rep["machine"]["logical_cores"] == 8
    # The same top-level structure as a local run.
    assert {"machine", "settings", "models", "peak_rss_mb", "comparison", "source"} <= set(rep)

    calls = fake_adb()
    assert calls[0]["argv"] == ["devices"]
    assert all(c["argv"][:2] == ["-s", "emulator-5554"] for c in calls[1:])
    pushes = [c["argv"] for c in calls if c["argv"][2:3] == ["push"]]
    assert len(pushes) == 1 and pushes[0][3] == str(model)
    folder = pushes[0][4].rsplit("/", 1)[0]
    assert (
        folder.startswith("/data/local/tmp/edgekit-") and pushes[0][4] == f"{folder}/model.tflite"
    )
    runs = [cmd for c in calls for cmd in c.get("device", []) if cmd[0].endswith("benchmark_model")]
    assert runs == [
        [
            "/data/local/tmp/benchmark_model",
            f"--graph={folder}/model.tflite",
            "--num_threads=4",
            "--num_runs=50",
            "--min_secs=0",
            "--warmup_runs=10",
            "--warmup_min_secs=0.1",
            "--use_xnnpack=true",
        ]
    ]
    # Clean-up: the pushed folder is removed at the end.
    assert calls[-1]["device"] == [["rm", "-rf", folder]]


def test_delegates_taskset_and_pushed_binary(fake_adb, model, tmp_path):
    binary = tmp_path / "android_aarch64_benchmark_model"
    binary.write_bytes(b"\x7fELF stand-in")
    r = invoke(
        "bench", model, "--target", "adb", "--delegate", "gpu", "--taskset", "f0",
        "--benchmark-binary", binary, "--min-seconds", "2", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    calls = fake_adb()
    pushes = [c["argv"][3:] for c in calls if c["argv"][2:3] == ["push"]]
    folder = pushes[0][1].rsplit("/", 1)[0]
    assert pushes == [
        [str(binary), f"{folder}/benchmark_model"],
        [str(model), f"{folder}/model.tflite"],
    ]
    device = [cmd for c in calls for cmd in c.get("device", [])]
    assert ["chmod", "755", f"{folder}/benchmark_model"] in device
    run = next(cmd for cmd in device if cmd[0] == "taskset")
    assert run[:3] == ["taskset", "f0", f"{folder}/benchmark_model"]
    assert "--use_gpu=true" in run and "--num_runs=1" in run and "--min_secs=2" in run
    assert device[-1] == ["rm", "-rf", folder]
    rep = json.loads(r.stdout)
    assert rep["settings"]["delegate"] == "gpu" and rep["settings"]["taskset"] == "f0"
    assert rep["models"][0]["accelerator"] == "GPU"


def test_hostile_serial_and_path_stay_single_words(fake_adb, model, monkeypatch):
    serial = "emu 5554;reboot"
    path = "/data/local/tmp/my dir/bm;rm -rf /sdcard"
    monkeypatch.setenv("FAKE_ADB_DEVICES", f"{serial}\tdevice\nother\tdevice\n")
    monkeypatch.setenv("FAKE_ADB_EXECUTABLES", json.dumps([path]))
    r = invoke("bench", model, "--target", f"adb:{serial}", "--benchmark-binary", path, "--json")
    assert r.exit_code == 0, r.output
    calls = fake_adb()
    assert all(c["argv"][:2] == ["-s", serial] for c in calls[1:])  # one argv element, no shell
    device = [cmd for c in calls for cmd in c.get("device", [])]
    assert ["test", "-x", path] in device
    assert any(cmd[0] == path for cmd in device)  # the binary ran, under its whole name
    # Nothing else ran: the only rm is edgekit's clean-up of its own folder; no reboot.
    folder = next(cmd[-1] for cmd in device if cmd[0] == "mkdir")
    assert [cmd for cmd in device if cmd[0] == "rm"] == [["rm", "-rf", folder]]
    assert {cmd[0] for cmd in device} <= {"mkdir", "test", "echo", path, "rm", "getprop", "nproc"}


def test_binary_found_on_device_or_explained(fake_adb, model, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_EXECUTABLES", "[]")
    err = one_line_error(invoke("bench", model, "--target", "adb"))
    assert "benchmark_model is not on emulator-5554" in err and "--benchmark-binary" in err
    # The folder made for the run is removed even then.
    calls = fake_adb()
    made = next(cmd for c in calls for cmd in c.get("device", []) if cmd[0] == "mkdir")
    assert calls[-1]["device"] == [["rm", "-rf", made[-1]]]


def test_failed_benchmark_is_one_line_and_cleaned_up(fake_adb, model, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(OUTPUTS / "mi11_int8_nnapi_failed.txt"))
    err = one_line_error(invoke("bench", model, "--target", "adb", "--delegate", "nnapi"))
    assert "ANEURALNETWORKS_BAD_DATA" in err
    assert fake_adb()[-1]["device"][0][:2] == ["rm", "-rf"]


def test_device_selection_errors(fake_adb, model, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_DEVICES", "")
    assert "No Android device attached" in one_line_error(invoke("bench", model, "--target", "adb"))
    monkeypatch.setenv("FAKE_ADB_DEVICES", "A1\tdevice\nB2\tdevice\n")
    err = one_line_error(invoke("bench", model, "--target", "adb"))
    assert "Several Android devices" in err and "A1, B2" in err and "adb:SERIAL" in err
    err = one_line_error(invoke("bench", model, "--target", "adb:C3"))
    assert "'C3' is not attached" in err and "A1, B2" in err
    monkeypatch.setenv("FAKE_ADB_DEVICES", "A1\tunauthorized\n")
    assert "Allow USB debugging" in one_line_error(invoke("bench", model, "--target", "adb"))
    # No call beyond `adb devices` was made.
    assert {tuple(c["argv"]) for c in fake_adb()} == {("devices",)}


def test_no_adb_on_path(model, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    err = one_line_error(invoke("bench", model, "--target", "adb"))
    assert "adb is not on PATH" in err and "platform-tools" in err


def test_bad_options_are_refused_before_adb_runs(fake_adb, model):
    assert "--taskset" in one_line_error(
        invoke("bench", model, "--target", "adb", "--taskset", "f0;reboot")
    )
    assert "--delegate" in one_line_error(
        invoke("bench", model, "--target", "adb", "--delegate", "tpu")
    )
    assert "--batch" in one_line_error(invoke("bench", model, "--target", "adb", "--batch", "2"))
    assert "do not apply" in one_line_error(
        invoke("bench", model, "--target", "adb", "--ssh-key", "k")
    )
    assert "adb targets only" in one_line_error(invoke("bench", model, "--delegate", "gpu"))
    assert not any(c["argv"][2:3] == ["shell"] for c in fake_adb())


def test_onnx_model_is_refused_for_adb(fake_adb, zoo_models):
    err = one_line_error(invoke("bench", zoo_models["f32_dyn.onnx"], "--target", "adb"))
    assert "is a onnx model" in err and ".tflite" in err
    assert [c["argv"] for c in fake_adb()] == []


def test_plan_flags_and_checks():
    assert BenchmarkPlan(threads=2, runs=7, delegate="none").flags("/g.tflite") == [
        "--graph=/g.tflite", "--num_threads=2", "--num_runs=7", "--min_secs=0",
        "--warmup_runs=10", "--warmup_min_secs=0.1", "--use_xnnpack=false",
    ]  # fmt: skip
    with pytest.raises(UsageError):
        BenchmarkPlan(threads=0).check()
    assert adb.parse_devices(
        "List of devices attached\nR58M\tdevice\nemulator-5554\toffline\n\n"
    ) == [("R58M", "device"), ("emulator-5554", "offline")]


def test_adb_bench_imports_no_tensorflow(fake_adb, model):
    import subprocess

    code = (
        "import sys\nfrom edgekit.cli import main\n"
        "try:\n    main(['bench', sys.argv[1], '--target', 'adb', '--json'])\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
    )
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-c", code, str(model)], capture_output=True, text=True, cwd=repo
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["models"][0]["source"] == "measured on the device"


def test_connect_resolves_one_device(fake_adb):
    d = adb.AdbDevice.connect("adb")
    assert d.serial == "emulator-5554" and d.target == "adb:emulator-5554"
    with pytest.raises(TargetUnavailableError):
        adb.AdbDevice.connect("adb:nope")
