"""edgekit.export.validate.check_export on real exports (LiteRT and ONNX Runtime) of a tiny trained
model: faithful exports pass, wrong ones raise ExportMismatch with the numbers."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit import keras_compat
from edgekit.errors import ExportMismatch, UnsupportedModelError, UsageError
from edgekit.export import onnx as onnx_export
from edgekit.export import tflite
from edgekit.export.validate import check_export, is_probabilities, softmax

SHAPE = (12, 12, 3)
LABELS = ["red", "green", "blue"]


def separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three classes told apart by the brightest colour channel."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.random((n, *SHAPE), dtype=np.float32) * 0.6
    x[np.arange(n), :, :, y] += 0.4
    return x, y


def _model(keras, seed: int, softmax_head: bool = False):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(3, activation="softmax" if softmax_head else None),
        ]
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    keras = keras_compat.keras()
    (xt, yt), (x, y) = separable(240, 0), separable(96, 1)
    m = _model(keras, 0)
    m.compile(keras.optimizers.Adam(0.02), keras.losses.SparseCategoricalCrossentropy(True))
    m.fit(xt, yt, epochs=8, batch_size=32, verbose=0)
    loaded = keras_compat.wrap(m)
    d = tmp_path_factory.mktemp("exports")
    paths = {
        "tflite_f32": tflite.convert(loaded, d / "f32.tflite")["path"],
        "tflite_f16": tflite.convert(loaded, d / "f16.tflite", quantization="float16")["path"],
        "tflite_int8": tflite.convert(
            loaded, d / "int8.tflite", quantization="int8", calibration=xt[:64]
        )["path"],
        "onnx_f32": onnx_export.convert(loaded, d / "f32.onnx")["path"],
    }
    paths["onnx_int8"] = onnx_export.quantize_int8(paths["onnx_f32"], d / "int8.onnx", xt[:64])[
        "path"
    ]
    return {"loaded": loaded, "x": x, "y": y, "ref": loaded.predict(x), "paths": paths}


@pytest.mark.parametrize("key", ["tflite_f32", "onnx_f32"])
def test_float_export_passes(setup, key):
    s = setup
    r = check_export(s["paths"][key], s["ref"], s["x"], s["y"], precision="float32", labels=LABELS)
    assert r["passed"] is True and r["criterion"] == "max_abs_error"
    assert r["compared"] == "probabilities" and r["tolerance"] == 1e-3
    assert r["max_abs_error"] < 1e-5 and r["max_abs_error_raw"] < 1e-4
    assert set(r["max_abs_error_per_output"]) == {"output_0"}
    assert r["top1_agreement"] == 1.0 and r["confusions"] == []
    assert r["n_samples"] == len(s["x"])
    assert r["accuracy"] == r["reference_accuracy"] >= 0.9
    assert r["runtime"] and r["threads"] == 1


def test_float16_has_a_looser_default_tolerance(setup):
    s = setup
    path = s["paths"]["tflite_f16"]
    r = check_export(path, s["ref"], s["x"], precision="float16")
    assert r["tolerance"] == 2e-2 and 0 < r["max_abs_error"] < 2e-2
    assert r["accuracy"] is None  # no labels given
    with pytest.raises(ExportMismatch) as e:
        check_export(path, s["ref"], s["x"], precision="float16", float_atol=1e-9)
    assert e.value.numbers["max_abs_error"] == pytest.approx(r["max_abs_error"])
    assert e.value.numbers["tolerance"] == 1e-9
    assert "Raise verify.float16_atol only if" in str(e.value)  # the recipe key that sets it


@pytest.mark.parametrize("key", ["tflite_int8", "onnx_int8"])
def test_quantized_export_passes_by_agreement(setup, key):
    s = setup
    r = check_export(s["paths"][key], s["ref"], s["x"], s["y"], precision="int8")
    assert r["criterion"] == "top1_agreement" and r["tolerance"] == 0.9
    assert r["top1_agreement"] >= 0.9
    assert r["max_abs_error"] > 0  # reported, not judged
    assert abs(r["accuracy"] - r["reference_accuracy"]) <= 0.1


def test_reference_from_another_model_fails_float(setup):
    s = setup
    other = keras_compat.wrap(_model(keras_compat.keras(), 7))
    wrong_ref = other.predict(s["x"])
    with pytest.raises(ExportMismatch) as e:
        check_export(s["paths"]["tflite_f32"], wrong_ref, s["x"], precision="float32")
    msg = str(e.value)
    assert "f32.tflite" in msg and "'output_0'" in msg
    assert "max abs error" in msg and "tolerance 0.001" in msg and "\n" not in msg
    assert e.value.output == "output_0" and e.value.artifact.endswith("f32.tflite")
    assert e.value.numbers["max_abs_error"] > e.value.numbers["tolerance"] == 1e-3


def test_tolerance_applies_to_probabilities(setup):
    s = setup
    path = s["paths"]["onnx_f32"]
    noise = np.random.default_rng(0).normal(size=s["ref"].shape).astype(np.float32)
    check_export(path, s["ref"] + 1e-6 * noise, s["x"], precision="float32")
    # Softmax ignores a shift shared by all classes: same probabilities, so it passes ...
    r = check_export(path, s["ref"] + 5.0, s["x"], precision="float32")
    assert r["max_abs_error"] < 1e-5 and r["max_abs_error_raw"] >= 4.9
    # ... while moving one class's logit enough to change the probabilities fails. (This model
    # is very confident, logit margins ~14: a few units on a losing class move nothing.)
    moved = s["ref"].copy()
    moved[:, 0] += 30.0
    with pytest.raises(ExportMismatch, match=r"max abs error .* on probabilities"):
        check_export(path, moved, s["x"], precision="float32")


def test_quantized_disagreement_fails_with_numbers(setup):
    s = setup
    shuffled = np.roll(s["ref"], 1, axis=0)  # every row now belongs to another sample
    with pytest.raises(ExportMismatch) as e:
        check_export(s["paths"]["tflite_int8"], shuffled, s["x"], s["y"], precision="int8")
    msg = str(e.value)
    assert "int8.tflite" in msg and "top-1 agreement" in msg and "< minimum 0.900" in msg
    assert "accuracy" in msg and "vs reference" in msg
    assert e.value.numbers["top1_agreement"] < 0.6
    assert e.value.numbers["min_agreement"] == 0.9


def test_min_agreement_is_configurable(setup):
    s = setup
    shuffled = np.roll(s["ref"], 1, axis=0)
    r = check_export(s["paths"]["onnx_int8"], shuffled, s["x"], precision="qat", min_agreement=0.01)
    assert r["passed"] and r["tolerance"] == 0.01
    assert r["confusions"] and r["confusions"][0]["count"] >= 1


def test_confusions_use_labels(setup):
    s = setup
    r = check_export(
        s["paths"]["onnx_int8"],
        np.roll(s["ref"], 1, axis=0),
        s["x"],
        precision="dynamic",
        labels=LABELS,
        min_agreement=0.01,
    )
    assert all(c["reference"] in LABELS and c["export"] in LABELS for c in r["confusions"])


def test_probability_outputs_are_compared_as_they_are(tmp_path):
    keras = keras_compat.keras()
    loaded = keras_compat.wrap(_model(keras, 3, softmax_head=True))
    x, _ = separable(32, 2)
    ref = loaded.predict(x)
    assert is_probabilities(ref)
    path = tflite.convert(loaded, tmp_path / "p.tflite")["path"]
    r = check_export(path, ref, x, precision="float32")
    assert r["max_abs_error"] == pytest.approx(r["max_abs_error_raw"])


def test_select_tf_ops_model_cannot_be_verified_here(tmp_path):
    keras = keras_compat.keras()
    keras.utils.set_random_seed(4)
    m = keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Conv2D(4, 3),
            keras.layers.Lambda(lambda t: keras.ops.erf(t)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    loaded = keras_compat.wrap(m)
    x, _ = separable(8, 5)
    path = tflite.convert(loaded, tmp_path / "flex.tflite", allow_select_tf_ops=True)["path"]
    with pytest.raises(UnsupportedModelError, match=r"Select TF ops \(FlexErf\)"):
        check_export(path, loaded.predict(x), x, precision="float32")
    r = check_export(path, loaded.predict(x), x, precision="float32", unverifiable="skip")
    assert r["passed"] is None and "FlexErf" in r["skipped"]


def test_structural_mismatches(setup):
    s = setup
    path = s["paths"]["tflite_f32"]
    with pytest.raises(ExportMismatch, match="has 1 outputs but the reference model has 2"):
        check_export(path, [s["ref"], s["ref"]], s["x"], precision="float32")
    with pytest.raises(ExportMismatch, match="shape"):
        check_export(path, np.zeros((len(s["x"]), 4), np.float32), s["x"], precision="float32")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precision": "int4"}, "Expected precision"),
        ({"precision": "float32", "float_atol": 0.0}, "float_atol"),
        ({"precision": "int8", "min_agreement": 1.5}, "min_agreement"),
        ({"precision": "float32", "labels": ["a", "b"]}, "2 labels"),
        ({"precision": "float32", "y": np.zeros(3)}, "3 labels but x has"),
        ({"precision": "float32", "ref_rows": 5}, "5 rows"),
    ],
)
def test_bad_arguments(setup, kwargs, match):
    s = setup
    kwargs = dict(kwargs)
    ref = s["ref"][: kwargs.pop("ref_rows")] if "ref_rows" in kwargs else s["ref"]
    with pytest.raises(UsageError, match=match):
        check_export(s["paths"]["tflite_f32"], ref, s["x"], **kwargs)


def test_softmax_and_probability_check():
    logits = np.array([[2.0, 1.0, 0.1], [0.0, 0.0, 0.0]], np.float32)
    p = softmax(logits)
    assert np.allclose(p.sum(1), 1) and p[0].argmax() == 0 and np.allclose(p[1], 1 / 3)
    assert is_probabilities(p) and not is_probabilities(logits)
    assert is_probabilities(np.array([[0.2], [0.9]])) and not is_probabilities(np.array([[3.0]]))


def test_checking_and_inspecting_exports_never_imports_tensorflow(setup, tmp_path):
    s = setup
    np.savez(tmp_path / "ref.npz", x=s["x"], ref=s["ref"])
    script = f"""
import sys
import numpy as np
from edgekit.export import onnx, tflite, validate
d = np.load({str(tmp_path / "ref.npz")!r})
p = {s["paths"]!r}
validate.check_export(p["tflite_int8"], d["ref"], d["x"], precision="int8")
validate.check_export(p["onnx_f32"], d["ref"], d["x"], precision="float32")
assert tflite.inspect_tflite(p["tflite_int8"])["integer_compute_ops"] > 0
assert onnx.inspect_onnx(p["onnx_int8"])["quantized_nodes"] > 0
assert "tensorflow" not in sys.modules, "TensorFlow was imported"
print("ok")
"""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
