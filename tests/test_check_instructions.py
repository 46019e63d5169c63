"""`edgekit baseline create / check --latency-metric instructions --target DEVICE`, for real: tiny
TFLite classifiers counted under qemu-aarch64 on the emulated Pixel 4 (the provisioned sysroot,
the aarch64 LiteRT wheel and the counting plugin; `make test` runs `edgekit devices setup` first).
The same model passes with about 0% change; the same name holding a model with more than twice
the work fails; metric, target and format mismatches are one-line exit 2; the config file route;
JUnit and step summary; no TensorFlow in the check process.

Skipped only where provisioning is impossible: qemu-aarch64 missing and not root to install it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from check_models import labels_for, make_pixels, save_npz
from click.testing import CliRunner

from edgekit.check.instructions import SPREAD_FRACTION, decide
from edgekit.cli import cli

TARGET = "pixel-4"


def invoke(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env=env)


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in result.stderr
    return lines[-1]


def _classifier(path: Path, *, depth: int, width: int = 16) -> Path:
    """8x8x3 image -> conv3x3(width) -> `depth` x conv3x3(width, width) -> mean -> dense(4) ->
    softmax, seeded random weights (the first layers are the same for every depth)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    ws = [rng.normal(0, 0.5, (3, 3, 3, width))]
    ws += [rng.normal(0, 0.2, (3, 3, width, width)) for _ in range(depth)]
    ws = [tf.constant(w.astype(np.float32)) for w in ws]
    wd = tf.constant(rng.normal(0, 0.3, (width, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
    def net(x):
        for w in ws:
            x = tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME"))
        return tf.nn.softmax(tf.matmul(tf.reduce_mean(x, axis=[1, 2]), wd))

    conv = tf.lite.TFLiteConverter.from_concrete_functions([net.get_concrete_function()], net)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(conv.convert())
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("insn_models")
    # "heavier/model.tflite": the same file name with three inner convolutions instead of one
    # (about 2.4x the instructions): the change a pull request could make without renaming.
    return {
        "base": _classifier(d / "model.tflite", depth=1),
        "heavier": _classifier(d / "heavier" / "model.tflite", depth=3),
    }


@pytest.fixture(scope="module")
def data(models, tmp_path_factory):
    pixels = make_pixels(120)
    path = tmp_path_factory.mktemp("insn_data") / "eval.npz"
    return save_npz(path, pixels, labels_for(models["base"], pixels))


@pytest.fixture(scope="module")
def baseline(provisioned, models, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("insn_baseline") / "baseline.json"
    r = invoke(
        "baseline", "create", models["base"], "-d", data, "-o", out,
        "--latency-metric", "instructions", "--target", TARGET,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "instructions per invoke on the emulated pixel-4" in r.stdout
    return out


def check(model, baseline, *args, env=None):
    return invoke("check", model, "--baseline", baseline, "--no-config", *args, env=env)


def test_baseline_stores_the_counts_and_the_setup(baseline, provisioned):
    from importlib.metadata import version

    lat = json.loads(baseline.read_text())["latency"]
    assert lat["metric"] == "instructions" and lat["target"] == TARGET
    assert lat["qemu_cpu"] == "cortex-a76" and lat["threads"] == 1
    assert len(lat["per_invoke"]) == lat["runs"] == 5
    assert lat["median"] == float(np.median(lat["per_invoke"])) > 10_000
    assert lat["spread"] == pytest.approx(
        (max(lat["per_invoke"]) - min(lat["per_invoke"])) / lat["median"]
    )
    assert lat["litert_version"] == version("ai-edge-litert")
    assert lat["plugin_sha256"] == provisioned["parts"]["plugin"]["source_sha256"]
    assert lat["precision"] == "float32" and "XNNPACK" in (lat["delegate"] or "")
    assert lat["estimate"]["instructions"] == lat["median"] and "calibrated" in lat["estimate"]


def test_same_model_passes_with_about_zero_change(baseline, models):
    r = check(models["base"], baseline, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    lat = next(c for c in rep["criteria"] if c["name"] == "latency")
    assert lat["status"] == "pass" and lat["metric"] == "instructions" and lat["decided"]
    assert abs(lat["change_pct"]) < 0.5, lat  # counts, not times: well under 1%
    assert rep["latency_metric"] == "instructions"
    assert rep["latency"]["target"] == TARGET and len(rep["latency"]["per_invoke"]) == 5
    assert rep["latency"]["setup_changes"] == [] and not rep["warnings"]


def test_more_work_under_the_same_name_fails_latency(baseline, models):
    # --max-accuracy-drop 100: the heavier model's random layers change its answers; this test
    # is about the latency criterion alone.
    r = check(models["heavier"], baseline, "--max-accuracy-drop", "100")
    err = one_line_error(r, code=1)
    assert "regression in latency (instructions)" in err and "allowed +10%" in err
    assert "more than the allowed 10%" in r.stdout and "FAIL" in r.stdout
    rep = json.loads(
        check(models["heavier"], baseline, "--max-accuracy-drop", "100", "--json").stdout
    )
    lat = next(c for c in rep["criteria"] if c["name"] == "latency")
    assert lat["status"] == "fail" and 100 < lat["change_pct"] < 250, lat
    assert rep["failed"] == ["latency"]


def test_metric_and_target_must_match_the_baseline(baseline, models):
    err = one_line_error(check(models["base"], baseline, "--latency-metric", "time"))
    assert "holds instructions per invoke on the emulated pixel-4" in err
    err = one_line_error(check(models["base"], baseline, "--target", "pixel-3a"))
    assert "counted instructions on pixel-4" in err and "pixel-3a" in err
    err = one_line_error(check(models["base"], baseline, "--target", "no-such-phone"))
    assert "Unknown device profile 'no-such-phone'" in err and "pixel-4" in err


def test_time_baseline_refuses_instruction_options(models, data, tmp_path):
    out = tmp_path / "time.json"
    r = invoke("baseline", "create", models["base"], "-d", data, "-o", out,
               "--latency-seconds", "0.2")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["latency"]["metric"] == "time"
    err = one_line_error(check(models["base"], out, "--latency-metric", "instructions"))
    assert "holds CPU time" in err and "--latency-metric instructions" in err
    err = one_line_error(check(models["base"], out, "--target", TARGET))
    assert "--target is for instruction-count baselines" in err


def test_baseline_create_bad_options(provisioned, models, data, tmp_path):
    out = tmp_path / "b.json"
    base = ("baseline", "create", models["base"], "-d", data, "-o", out)
    err = one_line_error(invoke(*base, "--latency-metric", "instructions"))
    assert "needs --target DEVICE" in err and "pixel-4" in err
    err = one_line_error(invoke(*base, "--target", TARGET))
    assert "pass both, or neither" in err
    err = one_line_error(invoke(*base, "--latency-metric", "instructions", "--target", "x"))
    assert "Unknown device profile 'x'" in err
    err = one_line_error(
        invoke(*base, "--latency-metric", "instructions", "--target", "desktop-cpu")
    )
    assert "not an emulated arm64 device" in err and "pixel-4" in err
    assert not out.exists()


def test_onnx_with_instructions_is_exit_2(provisioned, baseline, data, tmp_path):
    from edgekit.resources import asset

    onnx_model = asset("check_reference_float32.onnx")
    out = tmp_path / "b.json"
    r = invoke("baseline", "create", onnx_model, "-d", data, "-o", out,
               "--latency-metric", "instructions", "--target", TARGET)  # fmt: skip
    err = one_line_error(r)
    assert "is onnx" in err and ".tflite" in err and not out.exists()
    # A check of an ONNX candidate against an instruction-count baseline: same refusal.
    err = one_line_error(check(onnx_model, baseline))
    assert "is onnx" in err


def test_unprovisioned_is_the_setup_error(models, data, tmp_path):
    out = tmp_path / "b.json"
    r = invoke(
        "baseline", "create", models["base"], "-d", data, "-o", out,
        "--latency-metric", "instructions", "--target", TARGET,
        env={"EDGEKIT_CACHE": str(tmp_path / "empty-cache")},
    )  # fmt: skip
    err = one_line_error(r)
    assert "not provisioned" in err and "`edgekit devices setup`" in err and not out.exists()


def test_config_file_route(baseline, models, tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()  # the config search stops here
    cfg = tmp_path / "edgekit.yaml"
    cfg.write_text(
        f"check:\n  baseline: {baseline}\n  latency_metric: instructions\n  target: {TARGET}\n"
        "  max_latency_increase: 400\n"
    )
    monkeypatch.chdir(tmp_path)
    r = invoke("check", models["heavier"], "--max-accuracy-drop", "100", "--json")
    assert r.exit_code == 0, r.output  # +140% is within the file's 400%
    rep = json.loads(r.stdout)
    assert rep["config"] == str(cfg) and rep["latency_metric"] == "instructions"
    assert rep["thresholds"]["sources"]["max_latency_increase"] == f"config {cfg}"
    cfg.write_text(f"check:\n  baseline: {baseline}\n  latency_metric: time\n")
    err = one_line_error(invoke("check", models["base"]))
    assert "--latency-metric time does not compare" in err
    cfg.write_text(f"check:\n  baseline: {baseline}\n  latency_metric: cycles\n")
    err = one_line_error(invoke("check", models["base"]))
    assert "check.latency_metric" in err and "'cycles'" in err


def test_junit_summary_and_a_changed_setup(baseline, models, tmp_path):
    # The baseline as if counted with another LiteRT and plugin build: the check still compares,
    # and warns that part of the change may come from the setup.
    doc = json.loads(baseline.read_text())
    doc["latency"].update(litert_version="2.0.0", plugin_sha256="0" * 64)
    older = tmp_path / "older.json"
    older.write_text(json.dumps(doc))
    junit, summary = tmp_path / "check.xml", tmp_path / "summary.md"
    r = check(models["base"], older, "--junit", junit,
              env={"GITHUB_STEP_SUMMARY": str(summary)})  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "warning: The instruction-counting setup changed since the baseline" in r.stdout
    assert "LiteRT aarch64 2.0.0 -> " in r.stdout and "counting plugin 000000000000 -> " in r.stdout
    root = ET.parse(junit).getroot()
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["latency_metric"] == "instructions" and props["target"].startswith(TARGET)
    assert int(props["instructions_baseline"]) == round(doc["latency"]["median"])
    assert int(props["instructions_candidate"]) > 10_000
    assert "latency (instructions)" in [c.get("name") for c in root.iter("testcase")]
    md = summary.read_text()
    assert "latency (instructions)" in md and " instr |" in md and "spread" in md
    assert "**warning** The instruction-counting setup changed" in md


@pytest.mark.parametrize(
    ("change", "band", "status"),
    [
        (0.0, 0.1, "pass"),
        (9.9, 2.5, "pass"),  # band within 25% of 10: the median decides
        (10.2, 2.5, "fail"),
        (5.0, 4.0, "pass"),  # a wide band, all of it below the limit
        (15.0, 4.0, "fail"),  # a wide band, all of it above
        (8.0, 4.0, "warn"),  # a wide band across the limit: not decided
        (11.0, 4.0, "warn"),
    ],
)
def test_decision_rule(change, band, status):
    assert SPREAD_FRACTION == 0.25
    got, reason = decide(change, band, 10.0)
    assert got == status, reason
    assert ("not decided" in reason) == (status == "warn")


NO_TF_SCRIPT = """
import sys
from edgekit import api
model, data, out = sys.argv[1:4]
api.create_baseline(model, data, out, latency_metric="instructions", target="pixel-4")
rep = api.check(model, out, config=False)
assert rep["verdict"] == "pass" and rep["latency_metric"] == "instructions", rep["criteria"]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
print("HEAVY", heavy)
"""


def test_instruction_check_never_imports_tensorflow(provisioned, models, data, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "EDGEKIT_QUIET": "1"}
    out = subprocess.run(
        [sys.executable, "-c", NO_TF_SCRIPT, str(models["base"]), str(data), str(tmp_path / "b.json")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout, out.stdout


@pytest.mark.slow
def test_repeated_counts_agree_well_under_one_percent(provisioned, models):
    """Five counts of one model, each its own qemu process: the medians' largest relative
    difference (the issue asks for well under 1%)."""
    from edgekit.check.instructions import measure_instructions, resolve_target

    profile = resolve_target(TARGET)
    medians = [measure_instructions(models["base"], profile)["median"] for _ in range(5)]
    worst = (max(medians) - min(medians)) / min(medians)
    print(f"5 counts of {models['base'].name} on {TARGET}: {medians}; max difference {worst:.4%}")
    assert worst < 0.005, medians
