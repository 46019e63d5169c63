"""edgekit.export.onnx on tiny real models: tf2onnx conversion of Keras 3 and tf_keras models,
ONNX Runtime int8 (QDQ) and dynamic quantization, bad input, atomic writes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgekit import keras_compat
from edgekit.errors import UnsupportedModelError, UsageError
from edgekit.export import onnx as onnx_export
from edgekit.runtimes import open_runner

SHAPE = (12, 12, 3)


def separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three classes told apart by the brightest colour channel (noise elsewhere)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.random((n, *SHAPE), dtype=np.float32) * 0.6
    x[np.arange(n), :, :, y] += 0.4
    return x, y


@pytest.fixture(scope="module")
def data():
    return separable(240, 0), separable(120, 1)


@pytest.fixture(scope="module")
def k3(data):
    keras = keras_compat.keras()
    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [
            keras.Input(SHAPE, name="pixels"),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(3),
        ]
    )
    m.compile(keras.optimizers.Adam(0.02), keras.losses.SparseCategoricalCrossentropy(True))
    (x, y), _ = data
    m.fit(x, y, epochs=8, batch_size=32, verbose=0)
    return keras_compat.wrap(m)


@pytest.fixture(scope="module")
def float_onnx(k3, tmp_path_factory):
    return onnx_export.convert(k3, tmp_path_factory.mktemp("onnx") / "float.onnx")


def _run(path, x: np.ndarray) -> np.ndarray:
    runner = open_runner(path)
    try:
        return runner.run(x)[0]
    finally:
        runner.close()


def test_trained_model_separates_the_classes(k3, data):
    (x, y) = data[1]
    assert np.mean(k3.predict(x).argmax(1) == y) >= 0.9  # the int8 agreement test needs this


def test_float_matches_keras(k3, float_onnx, data):
    info = float_onnx
    assert info["format"] == "onnx" and info["precision"] == "float32"
    assert info["opset"] == 17 and info["producer"].startswith("tf2onnx")
    assert info["inputs"] == [{"name": "pixels", "shape": ["batch", *SHAPE], "dtype": "float32"}]
    assert [o["name"] for o in info["outputs"]] == ["output_0"]
    assert info["outputs"][0]["shape"] == ["batch", 3]
    onnx.checker.check_model(onnx.load(info["path"]))
    x = data[1][0]
    assert np.abs(_run(info["path"], x) - k3.predict(x)).max() < 1e-5
    assert np.abs(_run(info["path"], x[:1]) - k3.predict(x[:1])).max() < 1e-5  # dynamic batch


def test_tf_keras_model_and_options(tmp_path, data):
    tfk = keras_compat.tf_keras()
    tfk.utils.set_random_seed(1)
    m = tfk.Sequential(
        [
            tfk.Input(SHAPE, name="pixels"),
            tfk.layers.DepthwiseConv2D(3, activation="relu6"),
            tfk.layers.BatchNormalization(),
            tfk.layers.GlobalAveragePooling2D(),
            tfk.layers.Dense(3, activation="softmax"),
        ]
    )
    loaded = keras_compat.wrap(m)
    info = onnx_export.convert(loaded, tmp_path / "tfk.onnx", opset=13, input_name="image")
    assert info["opset"] == 13 and info["inputs"][0]["name"] == "image"
    x = data[1][0]
    assert np.abs(_run(info["path"], x) - loaded.predict(x)).max() < 1e-5


def test_savedmodel_flavour(k3, tmp_path, data):
    sm = tmp_path / "sm"
    k3.model.export(str(sm), verbose=False)
    loaded = keras_compat.load_model(sm)
    info = onnx_export.convert(loaded, tmp_path / "sm.onnx")
    x = data[1][0]
    assert np.abs(_run(info["path"], x) - k3.predict(x)).max() < 1e-5


def test_bad_opset(k3, tmp_path):
    with pytest.raises(UsageError, match="opset"):
        onnx_export.convert(k3, tmp_path / "m.onnx", opset=9)
    assert list(tmp_path.iterdir()) == []


def test_unconvertible_op_is_refused_and_nothing_written(tmp_path):
    import tensorflow as tf

    keras = keras_compat.keras()
    m = keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Conv2D(4, 3),
            keras.layers.Lambda(lambda t: tf.math.lgamma(tf.abs(t) + 1.0)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    out = tmp_path / "lgamma.onnx"
    with pytest.raises(UnsupportedModelError, match="no ONNX equivalent: Lgamma") as e:
        onnx_export.convert(keras_compat.wrap(m), out)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def _initializers(path) -> dict[str, np.ndarray]:
    g = onnx.load(str(path)).graph
    return {i.name: numpy_helper.to_array(i) for i in g.initializer}


def _weight_ints(path) -> list[np.ndarray]:
    """The integer weights: int8/uint8 initializers with more than one element."""
    return [
        a
        for a in _initializers(path).values()
        if a.dtype in (np.int8, np.uint8) and a.size > 16 and a.ndim >= 2
    ]


@pytest.fixture(scope="module")
def int8_default(float_onnx, data, tmp_path_factory):
    calib = data[0][0][:64]
    return onnx_export.quantize_int8(
        float_onnx["path"], tmp_path_factory.mktemp("q") / "int8.onnx", calib
    )


def test_int8_default_is_qdq_u8s8_7bit(int8_default):
    info = int8_default
    assert info["precision"] == "int8" and info["quant_format"] == "QDQ"
    ops = info["op_types"]
    assert ops.get("QuantizeLinear", 0) >= 3 and ops.get("DequantizeLinear", 0) >= 3
    assert "QLinearConv" not in ops and "Conv" in ops  # QDQ keeps the float op between Q/DQ
    # Activations uint8, weights int8 in the 7-bit range [-64, 64] (reduce_range).
    weights = _weight_ints(info["path"])
    assert weights and all(w.dtype == np.int8 for w in weights)
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64
    g = onnx.load(info["path"]).graph
    inits = _initializers(info["path"])
    act_zero_points = [
        inits[n.input[2]] for n in g.node if n.op_type == "QuantizeLinear" and len(n.input) > 2
    ]
    assert act_zero_points and all(z.dtype == np.uint8 for z in act_zero_points)
    # Per-channel: a weight scale with one entry per output channel.
    assert any(a.dtype == np.float32 and a.ndim == 1 and a.size in (8, 32) for a in inits.values())
    assert info["calibration_samples"] == 64 and info["size_bytes"] > 0


def test_int8_agrees_with_float_on_separable_data(float_onnx, int8_default, data):
    x, y = data[1]
    ref = _run(float_onnx["path"], x)
    got = _run(int8_default["path"], x)
    assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.95
    assert np.mean(got.argmax(1) == y) >= 0.85


def test_int8_options_change_the_model(float_onnx, data, tmp_path):
    calib = data[0][0][:32]
    full = onnx_export.quantize_int8(
        float_onnx["path"], tmp_path / "full.onnx", calib, reduce_range=False
    )
    # Without reduce_range the symmetric per-channel weights use the whole int8 range.
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in _weight_ints(full["path"])) > 100

    s8 = onnx_export.quantize_int8(
        float_onnx["path"],
        tmp_path / "s8.onnx",
        calib,
        activation_type="QInt8",
        per_channel=False,
        calibrate_method="Percentile",
    )
    g = onnx.load(s8["path"]).graph
    inits = _initializers(s8["path"])
    zps = [inits[n.input[2]] for n in g.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zps and all(z.dtype == np.int8 for z in zps)
    assert not any(a.dtype == np.float32 and a.ndim == 1 and a.size == 8 for a in inits.values())

    qop = onnx_export.quantize_int8(
        float_onnx["path"], tmp_path / "qop.onnx", calib, quant_format="QOperator"
    )
    assert "QLinearConv" in qop["op_types"]
    x = data[1][0]
    ref = _run(float_onnx["path"], x).argmax(1)
    for info in (full, s8, qop):
        assert np.mean(_run(info["path"], x).argmax(1) == ref) >= 0.9, info["path"]


def test_dynamic_quantization(float_onnx, data, tmp_path):
    info = onnx_export.quantize_dynamic(float_onnx["path"], tmp_path / "dyn.onnx")
    assert info["precision"] == "dynamic"
    assert info["op_types"].get("MatMulInteger", 0) == 2
    assert "ConvInteger" not in info["op_types"]  # ORT's CPU ConvInteger takes uint8 weights only
    x = data[1][0]
    ref = _run(float_onnx["path"], x)
    assert np.mean(_run(info["path"], x).argmax(1) == ref.argmax(1)) >= 0.95


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"calibration": None}, "needs calibration"),
        ({"calibration": np.zeros((0, *SHAPE), np.float32)}, "needs calibration"),
        ({"calibration": np.zeros((4, 8, 8, 3), np.float32)}, r"shape \(N, 12, 12, 3\)"),
        ({"calibration": np.zeros((4, *SHAPE), np.uint8)}, "raw pixels"),
        ({"activation_type": "QInt4"}, "activation_type"),
        ({"calibrate_method": "Mean"}, "calibrate_method"),
        ({"quant_format": "QDQ2"}, "quant_format"),
    ],
)
def test_int8_bad_input(float_onnx, data, tmp_path, kwargs, match):
    args = {"calibration": data[0][0][:8], **kwargs}
    calib = args.pop("calibration")
    with pytest.raises(UsageError, match=match):
        onnx_export.quantize_int8(float_onnx["path"], tmp_path / "bad.onnx", calib, **args)
    assert list(tmp_path.iterdir()) == []


def test_int8_needs_an_onnx_file(tmp_path, data):
    with pytest.raises(UsageError, match="not found"):
        onnx_export.quantize_int8(tmp_path / "missing.onnx", tmp_path / "q.onnx", data[0][0])
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"TFL3" * 8)
    with pytest.raises(UsageError, match=r"Expected an \.onnx model"):
        onnx_export.quantize_int8(fake, tmp_path / "q.onnx", data[0][0])
    fake.write_bytes(b"\x00garbage" * 8)
    with pytest.raises(UsageError, match="not a valid ONNX"):
        onnx_export.quantize_int8(fake, tmp_path / "q.onnx", data[0][0])
    assert not (tmp_path / "q.onnx").exists()
