"""edgekit.export.tflite on tiny real models: every quantization mode, each model flavour, QAT,
Select TF ops, bad input, and atomic writes. Real TensorFlow converter and LiteRT runtime."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit import keras_compat
from edgekit.errors import UnsupportedModelError, UsageError
from edgekit.export import tflite
from edgekit.runtimes import open_runner

SHAPE = (12, 12, 3)


def _layers(k):
    # Dense(16 -> 128) has 2048 weights: above TFLite's 1024-element floor for dynamic range.
    return [
        k.Input(SHAPE),
        k.layers.Conv2D(16, 3, activation="relu"),
        k.layers.GlobalAveragePooling2D(),
        k.layers.Dense(128, activation="relu"),
        k.layers.Dense(3),
    ]


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).random((40, *SHAPE), dtype=np.float32)


@pytest.fixture(scope="module")
def k3():
    keras = keras_compat.keras()
    keras.utils.set_random_seed(1)
    return keras_compat.wrap(keras.Sequential(_layers(keras)))


@pytest.fixture(scope="module")
def tfk():
    tfk = keras_compat.tf_keras()
    tfk.utils.set_random_seed(2)
    return keras_compat.wrap(tfk.Sequential(_layers(tfk)))


def _run(path, x: np.ndarray) -> np.ndarray:
    runner = open_runner(path)
    try:
        return runner.run(x)[0]
    finally:
        runner.close()


def test_float32_keras3_is_frozen_and_exact(k3, x, tmp_path):
    info = tflite.convert(k3, tmp_path / "m.tflite")
    assert info["precision"] == "float32" and info["format"] == "tflite"
    assert info["size_bytes"] == (tmp_path / "m.tflite").stat().st_size
    # Keras 3 weights must be constants, not resource variables (TF 2.21 keeps them otherwise).
    assert "VAR_HANDLE" not in info["ops"] and "READ_VARIABLE" not in info["ops"]
    assert info["ops"] == sorted(info["ops"]) and "CONV_2D" in info["ops"]
    assert info["select_tf_ops"] == [] and info["custom_ops"] == []
    assert info["input_dtype"] == info["output_dtype"] == "float32"
    assert info["inputs"][0]["shape"] == [-1, *SHAPE]  # dynamic batch
    assert info["outputs"][0]["name"] == "output_0"
    assert info["signature"] == "serving_default"
    assert set(tflite.inspect_tflite(info["path"])["signatures"]) == {"serving_default"}
    err = np.abs(_run(info["path"], x) - k3.predict(x)).max()
    assert err < 1e-5


def test_custom_signature_name_and_fixed_batch(k3, x, tmp_path):
    info = tflite.convert(k3, tmp_path / "m.tflite", signature_name="classify", batch_size=1)
    assert info["signature"] == "classify"
    assert set(tflite.inspect_tflite(info["path"])["signatures"]) == {"classify"}
    assert info["inputs"][0]["shape"] == [1, *SHAPE]
    assert np.abs(_run(info["path"], x[:3]) - k3.predict(x[:3])).max() < 1e-5


def test_tf_keras_model(tfk, x, tmp_path):
    info = tflite.convert(tfk, tmp_path / "tfk.tflite")
    assert np.abs(_run(info["path"], x) - tfk.predict(x)).max() < 1e-5


def test_plain_savedmodel(tfk, x, tmp_path):
    import tensorflow as tf

    sm = tmp_path / "sm"
    tf.saved_model.save(tfk.model, str(sm))
    loaded = keras_compat.load_model(sm)
    assert loaded.flavor == "savedmodel"
    info = tflite.convert(loaded, tmp_path / "sm.tflite")
    assert np.abs(_run(info["path"], x) - tfk.predict(x)).max() < 1e-5


def test_keras3_exported_savedmodel(k3, x, tmp_path):
    sm = tmp_path / "k3_sm"
    k3.model.export(str(sm), verbose=False)  # Keras 3's own SavedModel export
    loaded = keras_compat.load_model(sm)
    assert loaded.flavor == "savedmodel"
    info = tflite.convert(loaded, tmp_path / "k3_sm.tflite", quantization="dynamic")
    assert np.abs(_run(info["path"], x) - k3.predict(x)).max() < 0.05


def test_dynamic_has_int8_weights_and_float_activations(k3, x, tmp_path):
    info = tflite.convert(k3, tmp_path / "d.tflite", quantization="dynamic")
    assert info["precision"] == "dynamic"
    assert info["tensor_dtypes"].get("int8", 0) >= 1
    assert info["input_dtype"] == info["output_dtype"] == "float32"
    assert info["float_compute_ops"] >= 1  # activations stay float
    assert np.abs(_run(info["path"], x) - k3.predict(x)).max() < 0.05


def test_float16_weights(k3, x, tmp_path):
    info = tflite.convert(k3, tmp_path / "h.tflite", quantization="float16")
    assert info["precision"] == "float16"
    assert info["tensor_dtypes"].get("float16", 0) >= 4  # 2 kernels + 2 biases at least
    assert "float32" not in info["tensor_dtypes"]
    assert "DEQUANTIZE" in info["ops"]
    assert info["input_dtype"] == "float32"
    assert np.abs(_run(info["path"], x) - k3.predict(x)).max() < 1e-2
    assert info["size_bytes"] < tflite.convert(k3, tmp_path / "f.tflite")["size_bytes"]


def test_int8_float_io_is_full_integer(k3, x, tmp_path):
    info = tflite.convert(k3, tmp_path / "q.tflite", quantization="int8", calibration=x)
    assert info["precision"] == "int8" and info["calibration_samples"] == len(x)
    assert info["integer_compute_ops"] >= 3 and info["float_compute_ops"] == 0
    assert info["tensor_dtypes"].get("int8", 0) >= 3 and "float32" not in info["tensor_dtypes"]
    assert info["activation_dtypes"].get("int8", 0) >= 3
    assert info["per_channel_tensors"] >= 1
    assert info["input_dtype"] == "float32" and {"QUANTIZE", "DEQUANTIZE"} <= set(info["ops"])
    ref = k3.predict(x)
    got = _run(info["path"], x)
    assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.9


@pytest.mark.parametrize(("io_type", "zero_point"), [("int8", -128), ("uint8", 0)])
def test_int8_integer_io(k3, x, tmp_path, io_type, zero_point):
    info = tflite.convert(
        k3, tmp_path / f"{io_type}.tflite", quantization="int8", calibration=x, io_type=io_type
    )
    assert info["io_type"] == io_type
    assert info["input_dtype"] == info["output_dtype"] == io_type
    q = info["inputs"][0]["quantization"]
    # Calibration inputs span [0, 1): one step is ~1/255 and 0.0 maps to the type's minimum.
    assert q["zero_point"] == zero_point and q["scale"] == pytest.approx(1 / 255, rel=0.02)
    assert info["outputs"][0]["quantization"] is not None
    ref = k3.predict(x)
    got = _run(info["path"], x)  # the runner quantizes/dequantizes with these parameters
    assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.9


def test_int8_per_tensor(k3, x, tmp_path):
    info = tflite.convert(
        k3, tmp_path / "pt.tflite", quantization="int8", calibration=x, per_channel=False
    )
    assert info["per_channel"] is False and info["per_channel_tensors"] == 0
    assert info["integer_compute_ops"] >= 3


def test_int16x8(k3, x, tmp_path):
    info = tflite.convert(
        k3, tmp_path / "a16.tflite", quantization="int16x8", calibration=x, calibration_samples=16
    )
    assert info["calibration_samples"] == 16
    assert info["activation_dtypes"].get("int16", 0) >= 3
    assert info["tensor_dtypes"].get("int8", 0) >= 3  # weights
    assert info["input_dtype"] == "float32"
    assert np.abs(_run(info["path"], x) - k3.predict(x)).max() < 0.05


@pytest.mark.slow
def test_qat_model_converts_to_int8_kernels(tfk, x, tmp_path):
    import tensorflow_model_optimization as tfmot

    qat = tfmot.quantization.keras.quantize_model(tfk.model)
    qat.compile("adam", "sparse_categorical_crossentropy")
    qat.fit(x, np.arange(len(x)) % 3, epochs=1, verbose=0)  # gives the FakeQuant ranges values
    loaded = keras_compat.wrap(qat)
    info = tflite.convert(loaded, tmp_path / "qat.tflite", quantization="qat")
    assert info["quantization"] == "qat" and info["precision"] == "int8"
    assert info["integer_compute_ops"] >= 3 and info["float_compute_ops"] == 0
    assert info["tensor_dtypes"].get("int8", 0) >= 3
    ref = loaded.predict(x)
    got = _run(info["path"], x)
    assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.9

    io = tflite.convert(loaded, tmp_path / "qat_u8.tflite", quantization="qat", io_type="uint8")
    assert io["input_dtype"] == "uint8"


def test_qat_on_a_float_model_is_refused(k3, tmp_path):
    out = tmp_path / "notqat.tflite"
    with pytest.raises(UnsupportedModelError, match="not quantize-aware"):
        tflite.convert(k3, out, quantization="qat")
    assert not out.exists()


@pytest.fixture(scope="module")
def erf_model():
    """Erf has no TFLite builtin in TF 2.21; conversion needs the Flex (Select TF) kernel."""
    keras = keras_compat.keras()
    keras.utils.set_random_seed(3)
    return keras_compat.wrap(
        keras.Sequential(
            [
                keras.Input(SHAPE),
                keras.layers.Conv2D(4, 3),
                keras.layers.Lambda(lambda t: keras.ops.erf(t)),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(3),
            ]
        )
    )


def test_select_tf_ops_refused_with_one_line(erf_model, tmp_path):
    out = tmp_path / "erf.tflite"
    with pytest.raises(UnsupportedModelError) as e:
        tflite.convert(erf_model, out)
    msg = str(e.value)
    assert "\n" not in msg
    assert "Erf" in msg and "allow_select_tf_ops" in msg and "--allow-select-tf-ops" in msg
    assert "Android" in msg
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing half-written


def test_select_tf_ops_accepted_with_option(erf_model, tmp_path):
    info = tflite.convert(erf_model, tmp_path / "erf.tflite", allow_select_tf_ops=True)
    assert info["select_tf_ops"] == ["FlexErf"]
    assert info["allow_select_tf_ops"] is True
    assert any("Flex" in n for n in info["notes"])
    assert tflite.inspect_tflite(info["path"])["select_tf_ops"] == ["FlexErf"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"quantization": "int8"}, "needs calibration"),
        ({"quantization": "int16x8"}, "needs calibration"),
        ({"quantization": "int4"}, "Expected quantization"),
        ({"io_type": "int8"}, "needs a full-integer model"),
        ({"quantization": "int8", "io_type": "int16"}, "Expected io_type"),
        ({"signature_name": "serving default"}, "identifier"),
        ({"calibration_samples": 0}, "calibration_samples"),
    ],
)
def test_bad_options(k3, tmp_path, kwargs, match):
    with pytest.raises(UsageError, match=match):
        tflite.convert(k3, tmp_path / "bad.tflite", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_bad_calibration(k3, x, tmp_path):
    with pytest.raises(UsageError, match=r"shape \(N, 12, 12, 3\)"):
        tflite.convert(k3, tmp_path / "b.tflite", quantization="int8", calibration=x[:, :8])
    with pytest.raises(UsageError, match="raw pixels"):
        tflite.convert(
            k3, tmp_path / "b.tflite", quantization="int8", calibration=(x * 255).astype(np.uint8)
        )
    nan = x.copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(UsageError, match="NaN"):
        tflite.convert(k3, tmp_path / "b.tflite", quantization="int8", calibration=nan)


def test_inspect_rejects_other_files(tmp_path):
    p = tmp_path / "x.tflite"
    p.write_bytes(b"not a model at all")
    with pytest.raises(UsageError, match="TFL3"):
        tflite.inspect_tflite(p)
