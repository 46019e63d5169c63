"""edgekit.stages.qat: real tfmot QAT on tiny tf_keras models, converted to int8 TFLite, run in LiteRT."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit import keras_compat
from edgekit.errors import DataError, UsageError
from edgekit.stages import training
from edgekit.stages.qat import (
    FALLBACK_FAKE_QUANT_AFTER,
    FALLBACK_FLOAT,
    FALLBACK_OUTPUT,
    flatten_nested,
    qat,
)
from edgekit.stages.qat_io import load_qat_model, save_qat_model

# The converter's note about float inputs of a QAT model (they are quantized inside): expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")

KERNEL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def color_data(n: int, size: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images in [0, 1] whose mean colour (one of a 3x3x3 grid) gives the class: separable after GAP."""
    rng = np.random.default_rng(seed)
    grid = np.array(
        [[r, g, b] for r in (0.2, 0.5, 0.8) for g in (0.2, 0.5, 0.8) for b in (0.2, 0.5, 0.8)]
    )
    palette = grid[np.random.default_rng(123).permutation(len(grid))[:classes]].astype(np.float32)
    y = rng.integers(0, classes, n)
    x = palette[y][:, None, None, :] + rng.normal(0.0, 0.05, (n, size, size, 3))
    return np.clip(x, 0.0, 1.0).astype(np.float32), y


def tflite_bytes(model, *, via_keras_model: bool = True) -> bytes:
    """Convert a QAT model to int8 TFLite with Optimize.DEFAULT (its FakeQuant ranges give int8)."""
    import tensorflow as tf

    if via_keras_model:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    else:
        # The frozen-graph path: same ops, without from_keras_model's Keras SavedModel export,
        # which takes about a minute for a MobileNetV2 full of quantize wrappers.
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def kernel_dtypes(data: bytes) -> dict[str, set[str]]:
    """{op name: dtypes of its weight (second) input} for the ops that carry kernels."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    out: dict[str, set[str]] = {}
    for op in it._get_ops_details():
        if op["op_name"] in KERNEL_OPS:
            out.setdefault(op["op_name"], set()).add(
                np.dtype(tensors[op["inputs"][1]]["dtype"]).name
            )
    return out


def litert_predict(data: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], list(x.shape))
    it.allocate_tensors()
    it.set_tensor(inp["index"], x.astype(np.float32))
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def tiny_cnn(rescaling: bool = False, name: str = "tiny_cnn"):
    tfk = keras_compat.tf_keras()
    tfk.utils.set_random_seed(0)
    L = tfk.layers
    inp = tfk.Input((16, 16, 3), name="image")
    x = L.Rescaling(2.0, offset=-1.0, name="rescale")(inp) if rescaling else inp
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(x)
    x = L.BatchNormalization(momentum=0.8, name="bn1")(x)  # settles within tiny runs
    x = L.ReLU(name="relu1")(x)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return tfk.Model(inp, L.Dense(3, name="logits")(x), name=name)


@pytest.fixture(scope="module")
def cnn_data():
    return color_data(240, 16, 3)


@pytest.fixture(scope="module")
def cnn(cnn_data):
    x, y = cnn_data
    model = tiny_cnn()
    training.fit(model, x, y, epochs=6, batch_size=32, learning_rate=1e-2, description="pretrain")
    return model


def test_qat_tiny_cnn_converts_to_int8_and_agrees(cnn, cnn_data, tmp_path, capsys):
    x, y = cnn_data
    float_top1 = cnn.predict(x, verbose=0).argmax(1)
    assert np.mean(float_top1 == y) >= 0.9  # a trained reference, so agreement means something
    before = [w.copy() for w in cnn.get_weights()]

    result = qat(cnn, x, y, x_val=x[:64], y_val=y[:64], epochs=1, batch_size=32)

    assert all(np.array_equal(a, b) for a, b in zip(before, cnn.get_weights(), strict=True))
    assert result.unsupported_layers == [] and result.flattened_models == []
    assert {"conv1", "conv2", "logits"} <= set(result.annotated_layers)
    assert any(type(la).__name__ == "QuantizeWrapperV2" for la in result.model.layers)
    assert len(result.history["loss"]) == 1 and "val_accuracy" in result.history
    assert "qat: epoch 1/1" in capsys.readouterr().err

    data = tflite_bytes(result.model)
    assert kernel_dtypes(data) == {"CONV_2D": {"int8"}, "FULLY_CONNECTED": {"int8"}}
    tfl_top1 = litert_predict(data, x).argmax(1)
    assert np.mean(tfl_top1 == float_top1) >= 0.95

    # A saved QAT model loads back (tfmot's classes registered) and predicts the same.
    with pytest.raises(UsageError, match=r"qat\.h5"):  # tfmot's layers do not load from .keras
        save_qat_model(result.model, tmp_path / "qat.keras")
    path = save_qat_model(result.model, tmp_path / "qat.h5")
    loaded = load_qat_model(path)
    np.testing.assert_allclose(
        loaded.predict(x[:16]), result.model.predict(x[:16], verbose=0), atol=1e-5
    )


def test_unsupported_layer_keeps_neighbours_int8(cnn_data):
    """Rescaling is outside tfmot's registry: it stays float with an int8 output, the convs stay int8."""
    x, y = cnn_data
    model = tiny_cnn(rescaling=True, name="with_rescaling")
    training.fit(model, x, y, epochs=4, batch_size=32, learning_rate=1e-2, description="pretrain")
    result = qat(model, x, y, epochs=1, batch_size=32)
    assert result.unsupported_layers == [
        {"layer": "rescale", "class": "Rescaling", "fallback": FALLBACK_OUTPUT}
    ]
    assert "rescale" not in result.annotated_layers
    data = tflite_bytes(result.model)
    assert kernel_dtypes(data) == {"CONV_2D": {"int8"}, "FULLY_CONNECTED": {"int8"}}
    float_top1 = model.predict(x, verbose=0).argmax(1)
    assert np.mean(litert_predict(data, x).argmax(1) == float_top1) >= 0.95


def test_each_unsupported_layer_gets_a_fallback(cnn_data):
    """Layers outside tfmot's registry, one of each kind, in one model; kernels still become int8."""
    import tensorflow as tf

    tfk = keras_compat.tf_keras()
    tfk.backend.clear_session()  # auto-generated op-layer names below must not depend on earlier tests
    tfk.utils.set_random_seed(0)
    L = tfk.layers
    inp = tfk.Input((16, 16, 3))
    h = L.Resizing(12, 12, name="resize")(inp)
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(h)
    h = L.MaxPooling2D(name="pool")(h)
    h = L.BatchNormalization(name="lonely_bn")(h)  # not after a conv: nothing to fold into
    a = L.Conv2D(8, 1, name="gate_a")(h)
    b = L.Conv2D(8, 1, activation="sigmoid", name="gate_b")(h)
    h = L.Multiply(name="mul")([a, b])
    h = L.PReLU(name="prelu")(h)
    h = L.Lambda(lambda t: t * 0.5, name="half")(h)  # Python code: tfmot must clone it anyway
    h = h * 2.0  # a TF op with a constant operand (TFOpLambda): tfmot's wrapper cannot call it
    h = L.Conv2D(8, 1, name="after_op")(h)
    left, right = tf.split(h, 2, axis=-1)  # two outputs: left alone
    h = L.Concatenate(name="concat")([left, right])
    h = L.GlobalAveragePooling2D(name="gap")(h)
    model = tfk.Model(inp, L.Dense(3, name="logits")(h), name="mixed")
    x, y = cnn_data
    result = qat(model, x[:96], y[:96], epochs=1, batch_size=32)
    fallbacks = {u["layer"]: (u["class"], u["fallback"]) for u in result.unsupported_layers}
    assert fallbacks == {
        "resize": ("Resizing", FALLBACK_OUTPUT),
        "lonely_bn": ("BatchNormalization", FALLBACK_OUTPUT),
        "mul": ("Multiply", FALLBACK_OUTPUT),
        "prelu": ("PReLU", FALLBACK_OUTPUT),
        "half": ("Lambda", FALLBACK_OUTPUT),
        "tf.math.multiply": ("TFOpLambda", FALLBACK_FAKE_QUANT_AFTER),
        "tf.split": ("TFOpLambda", FALLBACK_FLOAT),
    }
    assert {"conv", "gate_a", "gate_b", "after_op", "logits"} <= set(result.annotated_layers)
    assert kernel_dtypes(tflite_bytes(result.model)) == {
        "CONV_2D": {"int8"},
        "FULLY_CONNECTED": {"int8"},
    }


def test_bad_input(cnn, cnn_data):
    x, y = cnn_data
    with pytest.raises(DataError, match="y_train is missing"):
        qat(cnn, x, None)
    with pytest.raises(DataError, match=r"shape \(16, 16, 3\)"):
        qat(cnn, x[:, :8, :8], y)
    with pytest.raises(UsageError, match="Expected epochs > 0"):
        qat(cnn, x, y, epochs=0)
    with pytest.raises(UsageError, match="Expected a tf_keras model"):
        qat(object(), x, y)


def nested_mobilenet(size: int = 32, classes: int = 10):
    """A tf_keras MobileNetV2 (alpha 0.35, softmax head) used as a sub-model behind a Rescaling layer."""
    tfk = keras_compat.tf_keras()
    tfk.utils.set_random_seed(0)
    base = tfk.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=0.35, weights=None, classes=classes
    )
    for layer in base.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.momentum = 0.9  # moving statistics settle within a few tiny epochs
    inp = tfk.Input((size, size, 3), name="image")
    x = tfk.layers.Rescaling(2.0, offset=-1.0, name="to_pm1")(inp)
    return tfk.Model(inp, base(x), name="wrapped_mobilenet")


def test_flatten_nested_keeps_outputs_names_and_sharing():
    tfk = keras_compat.tf_keras()
    tfk.utils.set_random_seed(0)
    L = tfk.layers
    inner_in = tfk.Input((16, 16, 8))
    h = L.Conv2D(8, 3, padding="same", name="conv")(inner_in)
    inner = tfk.Model(inner_in, L.BatchNormalization(name="bn")(h), name="block")
    seq = tfk.Sequential([tfk.Input((16, 16, 8)), L.ReLU(name="act")], name="seq")
    inp = tfk.Input((16, 16, 3), name="image")
    x = L.Conv2D(8, 1, name="conv")(inp)  # same name as the block's conv
    x = seq(inner(inner(x)))  # the block is used twice: its weights must stay shared
    out = L.Dense(3, name="logits")(L.GlobalAveragePooling2D(name="gap")(x))
    model = tfk.Model(inp, out, name="nested")
    model.get_layer("block").get_layer("bn").set_weights(
        [np.full(8, v, np.float32) for v in (1.5, 0.2, 0.1, 2.0)]
    )

    flat, names = flatten_nested(model)

    assert names == ["block", "seq"]
    layer_names = [la.name for la in flat.layers]
    assert (
        layer_names.count("conv") == 1 and "block_conv" in layer_names
    )  # top level keeps its name
    assert {"bn", "act", "logits"} <= set(layer_names)
    assert not any(isinstance(la, tfk.Model) for la in flat.layers)
    assert len(flat.get_layer("block_conv")._inbound_nodes) == 2  # shared, not duplicated
    x = color_data(8, 16, 3)[0]
    np.testing.assert_allclose(flat.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


@pytest.mark.slow
def test_qat_nested_mobilenet_v2_int8_in_litert():
    x, y = color_data(256, 32, 10)
    model = nested_mobilenet()
    training.fit(
        model,
        x,
        y,
        epochs=16,
        batch_size=32,
        learning_rate=3e-3,
        schedule="cosine",
        description="pretrain",
    )
    float_out = model.predict(x, verbose=0)
    float_top1 = float_out.argmax(1)
    assert np.mean(float_top1 == y) >= 0.8
    flat, _ = flatten_nested(model)
    np.testing.assert_allclose(flat.predict(x, verbose=0), float_out, atol=1e-5)

    result = qat(model, x, y, epochs=1, batch_size=32, learning_rate=1e-4)

    assert result.flattened_models == ["mobilenetv2_0.35_32"]
    assert [(u["layer"], u["class"]) for u in result.unsupported_layers] == [
        ("to_pm1", "Rescaling")
    ]
    assert len(result.annotated_layers) > 100
    data = tflite_bytes(result.model, via_keras_model=False)
    kernels = kernel_dtypes(data)
    assert set(kernels) == set(KERNEL_OPS)
    assert all(d == {"int8"} for d in kernels.values()), kernels
    tfl_top1 = litert_predict(data, x).argmax(1)
    assert np.mean(tfl_top1 == float_top1) >= 0.85
