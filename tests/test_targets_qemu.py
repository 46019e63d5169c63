"""arm64 LiteRT under user-mode QEMU, for real: the provisioned Debian arm64 sysroot, the aarch64
LiteRT wheel and the instruction-counting plugin (`edgekit devices setup`, which CI runs first;
the session fixture provisions itself where it can). Tiny conv models made here with TensorFlow
run on emulated Cortex-A76 and Cortex-A53 cores and are compared with this machine's LiteRT.

Skipped only where provisioning is impossible: qemu-aarch64 missing and not root to install it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import TargetUnavailableError, UsageError
from edgekit.targets.emulated import cache, provision, qemu

A76, A53 = qemu.CORTEX_A76, qemu.CORTEX_A53


def _cpu(name: str) -> dict:
    spec = A76 if name == "cortex-a76" else A53
    return {"qemu_cpu": name, "features": spec["features"], "midr": spec["midr"], "cores": 4}


def _tiny_tflite(path: Path, *, width: int, size: int, int8: bool) -> Path:
    """conv3x3(width) -> relu -> conv3x3(width) -> relu -> mean -> dense(4), random weights."""
    import tensorflow as tf

    rng = np.random.default_rng(width)
    w1 = tf.constant(rng.normal(0, 0.5, (3, 3, 3, width)).astype(np.float32))
    w2 = tf.constant(rng.normal(0, 0.2, (3, 3, width, width)).astype(np.float32))
    wd = tf.constant(rng.normal(0, 0.3, (width, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32)])
    def net(x):
        y = tf.nn.relu(tf.nn.conv2d(x, w1, 1, "SAME"))
        y = tf.nn.relu(tf.nn.conv2d(y, w2, 1, "SAME"))
        return tf.matmul(tf.reduce_mean(y, axis=[1, 2]), wd)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([net.get_concrete_function()], net)
    if int8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: (
            [rng.random((1, size, size, 3), dtype=np.float32)] for _ in range(8)
        )
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("qemu_models")
    return {
        "int8": _tiny_tflite(d / "small_int8.tflite", width=8, size=16, int8=True),
        "float32": _tiny_tflite(d / "small_f32.tflite", width=8, size=16, int8=False),
        "int8_big": _tiny_tflite(d / "big_int8.tflite", width=32, size=32, int8=True),
    }


def _host_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    """The same computation as the runner's predict mode, on this machine's LiteRT."""
    from ai_edge_litert import interpreter as lite

    it = lite.Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    d, o = it.get_input_details()[0], it.get_output_details()[0]
    if d["dtype"] == np.int8:
        s, z = d["quantization"]
        x = np.clip(np.round(x / np.float32(s)) + z, -128, 127).astype(np.int8)
    it.set_tensor(d["index"], x)
    it.invoke()
    y = it.get_tensor(o["index"])
    if y.dtype == np.int8:
        s, z = o["quantization"]
        y = (y.astype(np.float32) - np.float32(z)) * np.float32(s)
    return y.astype(np.float32)


# --- no provisioning needed ---------------------------------------------------------------------


def test_cpuinfo_text_is_what_an_arm64_kernel_prints():
    text = qemu.cpuinfo_text(A76["features"], A76["midr"], 2)
    blocks = [b for b in text.split("\n\n") if b.strip()]
    assert len(blocks) == 2 and blocks[1].startswith("processor\t: 1\n")
    assert "Features\t: fp asimd evtstrm aes pmull" in text and " asimddp\n" in text
    assert "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\n" in text
    assert "CPU part\t: 0xd0b\nCPU revision\t: 1\n" in text
    with pytest.raises(UsageError, match="cores"):
        qemu.cpuinfo_text(A76["features"], A76["midr"], 0)
    with pytest.raises(UsageError, match="feature words"):
        qemu.cpuinfo_text(["fp", "asimd dp"], None, 1)


def test_unprovisioned_cache_gives_one_line_error(tmp_path, monkeypatch, models):
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "empty-cache"))
    st = cache.status()
    assert not st["provisioned"] and st["fix"] == "edgekit devices setup"
    assert {"sysroot", "wheels", "plugin", "smoke"} <= set(st["missing"])
    assert st["cache"] == str(tmp_path / "empty-cache" / "emulation")
    for call in (
        lambda: qemu.count_instructions(models["int8"], **_cpu("cortex-a76")),
        lambda: qemu.run_job({}, {"mode": "bench"}, **_cpu("cortex-a76")),
    ):
        with pytest.raises(TargetUnavailableError) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg and "`edgekit devices setup`" in msg and "empty-cache" in msg


def test_markers_are_harmless_on_a_real_kernel(tmp_path, models):
    """The same runner on this machine (a real kernel refuses the marker calls with EINVAL):
    the job succeeds and reports which model each marker pair wrapped."""
    from edgekit.targets import remote_runner
    from edgekit.targets.jobs import read_output, stage_job

    job = {
        "mode": "bench", "models": ["a.tflite", "b.tflite"], "threads": 1, "batch": 1,
        "xnnpack": True, "warmup": 1, "warmup_seconds": 0.0, "runs": 3, "min_seconds": None,
        "seed": 0,
    }  # fmt: skip
    files = {"a.tflite": models["int8"], "b.tflite": models["float32"]}
    stage_job(tmp_path, files, {**job, "markers": True})
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "remote_runner.py"), str(tmp_path / "job.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    kind, body = read_output(proc.stdout)
    assert kind == "result", proc.stdout + proc.stderr
    empty = [-1] * remote_runner.EMPTY_PAIRS
    assert body["marker_pairs"] == [*empty, 0, 1, 1, 0, 0, 1]
    assert [len(s) for s in body["samples_ms"]] == [3, 3]
    off = tmp_path / "off"
    off.mkdir()
    stage_job(off, files, job)  # markers off: the result has no new key
    proc = subprocess.run(
        [sys.executable, str(off / "remote_runner.py"), str(off / "job.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "marker_pairs" not in read_output(proc.stdout)[1]


def test_emulation_never_imports_tensorflow():
    code = (
        "import sys, edgekit.targets.emulated.qemu as q, edgekit.targets.emulated.estimate, "
        "edgekit.targets.emulated.provision as p; p.status(); q.cpuinfo_text(['fp'], None, 1); "
        "bad = [m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --- provisioned --------------------------------------------------------------------------------


def test_setup_is_idempotent_and_fast_the_second_time(provisioned):
    root = cache.emulation_dir()
    before = {p: (root / p).stat().st_mtime_ns for p in ("state.json", "sysroot", "site")}
    t0 = time.monotonic()
    again = provision.setup()
    elapsed = time.monotonic() - t0
    assert again["did"] == "already provisioned" and again["provisioned"]
    assert elapsed < 1.0, f"second setup() took {elapsed:.2f} s"
    assert {p: (root / p).stat().st_mtime_ns for p in before} == before  # nothing rebuilt
    state = json.loads((root / "state.json").read_text())
    assert (
        state["wheels"]["versions"]["ai-edge-litert"]
        == provisioned["parts"]["wheels"]["wanted"]["ai-edge-litert"]
    )
    assert state["smoke"]["instructions_per_invoke"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("cpu", ["cortex-a76", "cortex-a53"])
@pytest.mark.parametrize("precision", ["int8", "float32"])
def test_outputs_match_host_litert(provisioned, models, cpu, precision, tmp_path, record_property):
    x = np.random.default_rng(1).random((1, 16, 16, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    job = {"mode": "predict", "models": ["m.tflite"], "inputs": "x.npy", "threads": 1,
           "batch_size": 1, "xnnpack": True}  # fmt: skip
    res = qemu.run_job(
        {"m.tflite": models[precision], "x.npy": tmp_path / "x.npy"}, job, **_cpu(cpu)
    )
    import base64
    import io

    guest = np.load(io.BytesIO(base64.b64decode(res["outputs_npy_b64"][0])))
    host = _host_outputs(models[precision], x)
    diff = float(np.max(np.abs(guest - host)))
    record_property("max_abs_diff", diff)
    print(f"{cpu} {precision}: max |arm64 - x86| = {diff:.3g}")
    assert res["machine"]["arch"] == "aarch64" and "XNNPACK" in res["delegate"]
    if precision == "int8":
        step = float(res["outputs"][0]["quantization"][0])
        assert diff <= step + 1e-7  # bit-identical, or one quantization step at most
    else:
        assert diff < 1e-4 * max(1.0, float(np.max(np.abs(host))))


@pytest.mark.slow
def test_instruction_counts_are_stable_and_grow_with_the_model(provisioned, models):
    a = qemu.count_instructions(models["int8"], **_cpu("cortex-a76"), runs=3)
    b = qemu.count_instructions(models["int8"], **_cpu("cortex-a76"), runs=3)
    big = qemu.count_instructions(models["int8_big"], **_cpu("cortex-a76"), runs=2)
    print("small", a["per_invoke"], b["per_invoke"], "big", big["per_invoke"])
    assert a["median"] > 10_000 and a["marker_overhead"] > 0
    assert abs(a["median"] - b["median"]) / a["median"] < 0.01
    assert a["spread"] < 0.02  # within one run; the tiny model's invokes differ by ~1000
    assert big["median"] > 5 * a["median"]  # 16x the MACs of the small model
    assert a["per_thread"][0]["vcpu"] == a["marker_vcpu"]


@pytest.mark.slow
def test_dotprod_claimed_on_cortex_a53_is_a_one_line_sigill(provisioned, models):
    lying = {**_cpu("cortex-a53"), "features": A76["features"], "midr": A76["midr"]}
    with pytest.raises(TargetUnavailableError) as e:
        qemu.count_instructions(models["int8_big"], **lying, runs=1)
    msg = str(e.value)
    assert "\n" not in msg and "SIGILL" in msg and "cortex-a53" in msg, msg
