"""The conversion-path fixes behind the coverage matrix, each on a tiny model with the same layers
(fast): Keras' exporters as a second route, Erfc and XLA-compiled grouped convolutions to ONNX,
the Keras 3-only layers the bridge rebuilds, multi-output verification, subclassed models."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit import keras_compat
from edgekit.errors import ExportMismatch, UnsupportedModelError, UsageError
from edgekit.export import onnx, tflite
from edgekit.export.validate import check_export

SHAPE = (16, 16, 3)


def _x(n=16, seed=0):
    return np.random.default_rng(seed).random((n, *SHAPE), dtype=np.float32)


def _counter_model():
    """A layer that counts its calls in a variable: the frozen graph cannot hold the assignment,
    so edgekit's route fails and Keras' own exporter must make the file."""
    k = keras_compat.keras()

    class CallCounter(k.layers.Layer):
        def build(self, shape):
            self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False)

        def call(self, x):
            self.calls.assign_add(1.0)
            return x

    k.utils.set_random_seed(0)
    inp = k.Input(SHAPE)
    x = CallCounter()(k.layers.Conv2D(8, 3, activation="relu")(inp))
    return keras_compat.wrap(k.Model(inp, k.layers.Dense(4)(k.layers.GlobalAveragePooling2D()(x))))


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_keras_exporter_is_the_second_route(tmp_path, fmt):
    loaded = _counter_model()
    convert = tflite.convert if fmt == "tflite" else onnx.convert
    with pytest.raises(UnsupportedModelError, match="Could not freeze"):
        convert(loaded, tmp_path / f"e.{fmt}", route="edgekit")
    assert not (tmp_path / f"e.{fmt}").exists()
    info = convert(loaded, tmp_path / f"a.{fmt}")
    assert info["route"].startswith("keras") and "edgekit's route failed" in info["notes"][-1]
    x = _x()
    r = check_export(info["path"], loaded.predict(x), x, precision="float32")
    assert r["max_abs_error"] < 1e-5
    if fmt == "onnx":  # the route travels with the file, so quantized models made from it say it
        q = onnx.quantize_int8(info["path"], tmp_path / "q.onnx", x)
        assert q["route"] == info["route"]


def test_keras_route_refuses_select_tf_ops_unless_asked(tmp_path):
    k = keras_compat.keras()
    inp = k.Input(SHAPE)
    x = k.layers.Lambda(lambda t: k.ops.erf(t))(k.layers.Conv2D(4, 3)(inp))
    loaded = keras_compat.wrap(
        k.Model(inp, k.layers.Dense(3)(k.layers.GlobalAveragePooling2D()(x)))
    )
    with pytest.raises(UnsupportedModelError, match="Erf") as e:
        tflite.convert(loaded, tmp_path / "k.tflite", route="keras")
    assert "allow_select_tf_ops" in str(e.value) and not (tmp_path / "k.tflite").exists()
    info = tflite.convert(loaded, tmp_path / "k.tflite", route="keras", allow_select_tf_ops=True)
    assert info["select_tf_ops"] == ["FlexErf"] and info["route"].startswith("keras")


def test_keras_route_needs_a_keras3_model(tmp_path):
    tfk = keras_compat.tf_keras()
    m = tfk.Sequential([tfk.Input(SHAPE), tfk.layers.Flatten(), tfk.layers.Dense(3)])
    with pytest.raises(UsageError, match="needs a Keras 3 model"):
        tflite.convert(keras_compat.wrap(m), tmp_path / "t.tflite", route="keras")


def _gelu_grouped():
    """ConvNeXt's ONNX blockers in miniature: exact GELU (Erfc) and a grouped convolution,
    which Keras 3 runs through an XLA-compiled function on CPU."""
    k = keras_compat.keras()
    k.utils.set_random_seed(1)
    inp = k.Input(SHAPE)
    x = k.layers.Conv2D(8, 3, padding="same")(inp)
    x = k.layers.Conv2D(8, 3, padding="same", groups=8)(x)  # depthwise, ConvNeXt style
    x = k.layers.Activation(lambda t: k.activations.gelu(t, approximate=False))(x)
    return keras_compat.wrap(k.Model(inp, k.layers.Dense(5)(k.layers.GlobalAveragePooling2D()(x))))


def test_exact_gelu_and_grouped_conv_to_onnx(tmp_path):
    loaded = _gelu_grouped()
    info = onnx.convert(loaded, tmp_path / "g.onnx", route="edgekit")
    ops = info["op_types"]
    assert "Erf" in ops and "Conv" in ops and "StatefulPartitionedCall" not in ops
    x = _x()
    assert check_export(info["path"], loaded.predict(x), x, precision="float32")["passed"]


def test_keras3_only_layers_are_bridged_and_reload(tmp_path):
    k = keras_compat.keras()
    convnext = k.src.applications.convnext
    irv2 = k.src.applications.inception_resnet_v2
    k.utils.set_random_seed(2)
    inp = k.Input(SHAPE)
    x = k.layers.Conv2D(8, 3, padding="same")(inp)
    y = convnext.LayerScale(0.1, 8)(k.layers.Conv2D(8, 3, padding="same")(x))
    y = convnext.StochasticDepth(0.2)(y)
    x = irv2.CustomScaleLayer(0.17)([x, y])
    m = k.Model(inp, k.layers.Dense(3)(k.layers.GlobalAveragePooling2D()(x)))
    result = keras_compat.to_tf_keras(keras_compat.wrap(m), _x())
    kinds = {type(ly).__name__ for ly in result.model.layers}
    assert {"LayerScale", "StochasticDepth", "CustomScaleLayer"} <= kinds
    assert result.max_abs_diff < 1e-5
    path = keras_compat.save_model(result.model, tmp_path / "b.keras")
    again = keras_compat.load_model(path)
    assert again.flavor == "tf_keras"
    np.testing.assert_allclose(again.predict(_x()), m.predict(_x(), verbose=0), atol=1e-5)
    # StochasticDepth drops whole samples while training, and only then
    sd = next(ly for ly in result.model.layers if type(ly).__name__ == "StochasticDepth")
    ones = np.ones((64, 2, 2, 8), np.float32)
    assert np.array_equal(np.asarray(sd(ones, training=False)), ones)
    dropped = np.asarray(sd(ones, training=True))
    assert set(np.unique(dropped).round(4)) <= {0.0, 1.25} and (dropped == 0).any()


def _two_heads():
    k = keras_compat.keras()
    k.utils.set_random_seed(3)
    inp = k.Input(SHAPE)
    f = k.layers.GlobalAveragePooling2D()(k.layers.Conv2D(8, 3, activation="relu")(inp))
    # names that sort the other way round, so that an order mix-up would show
    return keras_compat.wrap(
        k.Model(inp, [k.layers.Dense(4, name="zclass")(f), k.layers.Dense(3, name="abox")(f)])
    )


def test_every_output_is_verified_and_named(tmp_path):
    loaded = _two_heads()
    x = _x(32)
    ref = loaded.predict(x)
    path = tflite.convert(loaded, tmp_path / "two.tflite")["path"]
    r = check_export(path, ref, x, precision="float32", output_names=loaded.output_names)
    assert r["outputs"] == ["zclass", "abox"] and r["class_output"] == "zclass"
    assert set(r["max_abs_error_per_output"]) == {"zclass", "abox"}
    r = check_export(path, ref, x, precision="float32", output_names=loaded.output_names,
                     class_output="abox")  # fmt: skip
    assert r["class_output"] == "abox" and r["compared"]["zclass"].startswith("values")
    moved = [ref[0], ref[1] + 0.5]  # the box head is wrong: named as such
    with pytest.raises(ExportMismatch, match="output 'abox'"):
        check_export(path, moved, x, precision="float32", output_names=loaded.output_names)
    with pytest.raises(UsageError, match="no output 'nope'"):
        check_export(path, ref, x, precision="float32", output_names=loaded.output_names,
                     class_output="nope")  # fmt: skip


def test_int8_other_outputs_judged_on_their_scale(tmp_path):
    loaded = _two_heads()
    x = _x(64)
    path = tflite.convert(loaded, tmp_path / "q.tflite", quantization="int8", calibration=x)
    r = check_export(path["path"], loaded.predict(x), x, precision="int8",
                     output_names=loaded.output_names, min_agreement=0.5)  # fmt: skip
    assert r["max_abs_error_per_output"]["abox"] <= r["value_tolerance"] == 0.1


def test_subclassed_model_is_wrapped(tmp_path):
    k = keras_compat.keras()

    class Net(k.Model):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.conv = k.layers.Conv2D(4, 3)
            self.head = k.layers.Dense(3)

        def call(self, x):
            return self.head(k.ops.mean(self.conv(x), axis=(1, 2)))

    net = Net()
    net(np.zeros((1, *SHAPE), np.float32))
    loaded = keras_compat.wrap(net)
    assert loaded.input_shape == SHAPE and loaded.batch_dim is None  # built on one sample
    x = _x()
    info = tflite.convert(loaded, tmp_path / "s.tflite")
    assert check_export(info["path"], net(x).numpy(), x, precision="float32")["passed"]
    unbuilt = Net()
    with pytest.raises(UnsupportedModelError, match="no defined inputs"):
        keras_compat.wrap(unbuilt)


def test_layer_of_node_reads_fused_tensor_names(tmp_path):
    loaded = _gelu_grouped()
    path = tflite.convert(loaded, tmp_path / "n.tflite")["path"]
    names = [ly.name for ly in loaded.model.layers]
    info = tflite.inspect_tflite(path)
    found = {tflite.layer_of_node(path, i, names) for i in range(len(info["ops"]) + 4)}
    assert found & set(names)
    assert tflite.layer_of_node(path, 10_000, names) is None
