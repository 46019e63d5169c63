"""`edgekit check` on .tflite models (LiteRT): a model, a harmless copy and a copy with one layer's
weights damaged in the flatbuffer; the .tflite/.onnx check path never imports TensorFlow; a Keras
model checked against its own TFLite export (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from check_models import labels_for, make_pixels, perturb_tflite, predict, save_npz
from click.testing import CliRunner
from test_runtimes_models import zoo

from edgekit.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def tflite_models(request, tmp_path_factory):
    base = zoo(request.config)["f32_dyn.tflite"]
    d = tmp_path_factory.mktemp("tflite_check")
    return {
        "base": base,
        "harmless": perturb_tflite(base, d / "harmless.tflite", scale=1e-4),
        "damaged": perturb_tflite(base, d / "damaged.tflite", scale=1.0),
    }


@pytest.fixture(scope="module")
def setup(tflite_models, tmp_path_factory):
    d = tmp_path_factory.mktemp("tflite_data")
    pixels = make_pixels(300)
    data = save_npz(d / "eval.npz", pixels, labels_for(tflite_models["base"], pixels))
    baseline = d / "baseline.json"
    r = invoke(
        "baseline", "create", tflite_models["base"], "-d", data, "-o", baseline,
        "--latency-seconds", "0.3",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return data, baseline


def test_damaged_copy_really_differs(tflite_models):
    pixels = make_pixels(300)
    base = predict(tflite_models["base"], pixels)
    assert (predict(tflite_models["harmless"], pixels) == base).all()
    assert (predict(tflite_models["damaged"], pixels) != base).mean() > 0.1
    assert tflite_models["damaged"].read_bytes() != tflite_models["base"].read_bytes()


def test_tflite_baseline_uses_the_tflite_reference(setup):
    doc = json.loads(setup[1].read_text())
    assert doc["model"]["runtime"] in ("litert", "tflite_runtime")
    assert doc["latency"]["reference"]["name"] == "check_reference_float32.tflite"
    assert doc["latency"]["reference_runtime"] == doc["model"]["runtime"]


def test_tflite_pass_and_fail(tflite_models, setup):
    _, baseline = setup
    r = invoke("check", tflite_models["harmless"], "-b", baseline, "--no-config", "--json",
               "--latency-seconds", "0.3", "--max-latency-increase", "50")  # fmt: skip
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["criteria"][0]["drop_pts"] == 0 and rep["criteria"][2]["status"] in ("pass", "warn")
    r = invoke("check", tflite_models["damaged"], "-b", baseline, "--no-config", "--no-latency")
    assert r.exit_code == 1 and "regression in top-1 accuracy" in r.stderr


NO_TF_SCRIPT = """
import sys
from edgekit import api
model, data, out = sys.argv[1:4]
api.create_baseline(model, data, out, latency_seconds=0.2)
rep = api.check(model, out, config=False, latency_seconds=0.2, max_latency_increase=100)
assert rep["verdict"] == "pass", rep["criteria"]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
print("HEAVY", heavy)
"""


@pytest.mark.parametrize("kind", ["tflite", "onnx"])
def test_check_path_never_imports_tensorflow(kind, tflite_models, setup, request, tmp_path):
    model = tflite_models["base"] if kind == "tflite" else zoo(request.config)["f32_dyn.onnx"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "EDGEKIT_QUIET": "1"}
    out = subprocess.run(
        [sys.executable, "-c", NO_TF_SCRIPT, str(model), str(setup[0]), str(tmp_path / "b.json")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout, out.stdout


@pytest.mark.slow
def test_keras_model_against_its_own_tflite_export(tmp_path):
    """Cross-format: a baseline of a Keras model; its float TFLite export passes the check."""
    from models import IMAGE_SHAPE, keras3_classifier

    from edgekit.export import tflite
    from edgekit.keras_compat import load_model, save_model

    keras_path = save_model(keras3_classifier(num_classes=3), tmp_path / "m.keras")
    pixels = make_pixels(200, shape=IMAGE_SHAPE)
    labels = labels_for(keras_path, pixels, classes=3)
    data = save_npz(tmp_path / "d.npz", pixels, labels, classes=3)
    tfl = tmp_path / "m.tflite"
    tflite.convert(load_model(keras_path), tfl)
    b = tmp_path / "b.json"
    r = invoke("baseline", "create", keras_path, "-d", data, "-o", b, "--latency-seconds", "0.3")
    assert r.exit_code == 0, r.output
    assert (
        json.loads(b.read_text())["latency"]["reference"]["name"]
        == "check_reference_float32.tflite"
    )
    r = invoke("check", tfl, "-b", b, "--no-config", "--json", "--no-latency")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["accuracy"]["top1_agreement"] > 0.97 and rep["verdict"] == "pass"


def test_reference_matches_the_models_compute_precision(request):
    from edgekit.check.latency import bundled_reference, compute_precision

    z = zoo(request.config)
    assert compute_precision(z["int8_b1.tflite"]) == "int8"
    assert compute_precision(z["uint8_dyn.tflite"]) == "int8"
    assert compute_precision(z["f32_dyn.tflite"]) == "float32"
    assert compute_precision(z["int8_qdq.onnx"]) == "int8"
    assert compute_precision(z["f32_dyn.onnx"]) == "float32"
    # The bundled int8 references really compute in int8, the float ones in float.
    for fmt in ("tflite", "onnx"):
        for p in ("float32", "int8"):
            assert compute_precision(bundled_reference(fmt, p)) == p
            assert bundled_reference(fmt, p).stat().st_size < 200_000


def test_int8_model_baseline_uses_the_int8_reference(request, tmp_path):
    model = zoo(request.config)["int8_b1.tflite"]
    pixels = make_pixels(40)
    data = save_npz(tmp_path / "d.npz", pixels, labels_for(model, pixels))
    b = tmp_path / "b.json"
    r = invoke("baseline", "create", model, "-d", data, "-o", b, "--latency-seconds", "0.2")
    assert r.exit_code == 0, r.output
    assert (
        json.loads(b.read_text())["latency"]["reference"]["name"] == "check_reference_int8.tflite"
    )
