"""A zoo of tiny real models for the runtime, bench and eval tests, and checks that it is what it
claims (quantized I/O really is int8/uint8, the QDQ model really holds QuantizeLinear nodes ...).

Models are built with TensorFlow (tf.Module + tf.function -> TFLiteConverter / tf2onnx) and
onnxruntime.quantization, once per machine and builder version, in pytest's cache folder (shared by
xdist workers; built into a temporary folder and renamed into place). Import `zoo(config)` from the
other test modules.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

H, W, C, K = 8, 8, 3, 4  # image size, channels and classes of every zoo model
SEED = 0

NAMES = (
    "f32_b1.tflite",  # float, batch fixed at 1
    "f32_dyn.tflite",  # float, dynamic batch
    "int8_b1.tflite",  # int8 in/out, batch 1
    "uint8_dyn.tflite",  # uint8 in/out, dynamic batch
    "two_out.tflite",  # two outputs: logits and probabilities
    "logits_dyn.tflite",  # float logits (no softmax), dynamic batch
    "f32_dyn.onnx",  # float, dynamic batch
    "f32_b2.onnx",  # float, batch fixed at 2
    "int8_qdq.onnx",  # QDQ int8 from onnxruntime.quantization.quantize_static
    "uint8_io.onnx",  # uint8 input/output with DequantizeLinear/QuantizeLinear at the edges
    "two_out.onnx",
    "dyn_hw.onnx",  # dynamic height and width
    "string_in.onnx",  # a string input
    "two_in.onnx",  # two inputs
    "trunc.tflite",
    "trunc.onnx",
    "not_a_model.onnx",
    "not_a_model.bin",
)


def _weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    w1 = rng.normal(0, 0.6, (3, 3, C, 6)).astype(np.float32)
    w2 = rng.normal(0, 1.0, (6, K)).astype(np.float32)
    return w1, w2


def calibration(n: int = 16, batch: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(SEED + 1)
    return [rng.random((batch, H, W, C), dtype=np.float32) for _ in range(n)]


def _build(out: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import onnx
    import tensorflow as tf
    import tf2onnx
    from onnx import TensorProto, helper, numpy_helper

    w1, w2 = _weights()

    class Tiny(tf.Module):
        def __init__(self) -> None:
            self.w1 = tf.Variable(w1)
            self.w2 = tf.Variable(w2)

        def logits(self, x):
            y = tf.nn.relu(tf.nn.conv2d(x, self.w1, 1, "SAME"))
            return tf.matmul(tf.reduce_mean(y, axis=[1, 2]), self.w2)

        def probs(self, x):
            return tf.nn.softmax(self.logits(x))

        def both(self, x):
            lg = self.logits(x)
            return {"logits": lg, "probs": tf.nn.softmax(lg)}

    m = Tiny()

    def spec(batch):
        return [tf.TensorSpec([batch, H, W, C], tf.float32, name="image")]

    def cf(fn, batch):
        return tf.function(fn, input_signature=spec(batch)).get_concrete_function()

    def tflite(fn, batch, name, io=None):
        conv = tf.lite.TFLiteConverter.from_concrete_functions([cf(fn, batch)], m)
        if io:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([x] for x in calibration())
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = getattr(tf, io)
            conv.inference_output_type = getattr(tf, io)
        (out / name).write_bytes(conv.convert())

    tflite(m.probs, 1, "f32_b1.tflite")
    tflite(m.probs, None, "f32_dyn.tflite")
    tflite(m.probs, 1, "int8_b1.tflite", io="int8")
    tflite(m.probs, None, "uint8_dyn.tflite", io="uint8")
    tflite(m.both, 1, "two_out.tflite")
    tflite(m.logits, None, "logits_dyn.tflite")

    def to_onnx(fn, batch, name):
        tf2onnx.convert.from_function(
            tf.function(fn), input_signature=spec(batch), opset=17, output_path=str(out / name)
        )

    to_onnx(m.probs, None, "f32_dyn.onnx")
    to_onnx(m.probs, 2, "f32_b2.onnx")
    to_onnx(lambda x: tuple(m.both(x).values()), None, "two_out.onnx")
    tf2onnx.convert.from_function(
        tf.function(m.probs),
        input_signature=[tf.TensorSpec([None, None, None, C], tf.float32, name="image")],
        opset=17,
        output_path=str(out / "dyn_hw.onnx"),
    )

    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter({"image": x} for x in calibration())

        def get_next(self):
            return next(self.it, None)

    quantize_static(
        str(out / "f32_dyn.onnx"),
        str(out / "int8_qdq.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )

    # uint8 I/O ONNX: image -> DQ -> mean over H, W -> MatMul -> Softmax -> Q -> scores.
    inits = [
        numpy_helper.from_array(np.array(1 / 255, np.float32), "in_scale"),
        numpy_helper.from_array(np.array(0, np.uint8), "in_zp"),
        numpy_helper.from_array(np.array(1 / 256, np.float32), "out_scale"),
        numpy_helper.from_array(np.array(0, np.uint8), "out_zp"),
        numpy_helper.from_array(
            np.random.default_rng(SEED).normal(0, 2, (C, K)).astype(np.float32), "wq"
        ),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["image", "in_scale", "in_zp"], ["xf"]),
        helper.make_node("ReduceMean", ["xf"], ["pooled"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["pooled", "wq"], ["lg"]),
        helper.make_node("Softmax", ["lg"], ["pr"], axis=-1),
        helper.make_node("QuantizeLinear", ["pr", "out_scale", "out_zp"], ["scores"]),
    ]
    g = helper.make_graph(
        nodes,
        "uint8_io",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", H, W, C])],
        [helper.make_tensor_value_info("scores", TensorProto.UINT8, ["N", K])],
        inits,
    )
    _save_onnx(onnx, helper, g, out / "uint8_io.onnx")

    g = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["out"])],
        "string_in",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("out", TensorProto.STRING, ["N"])],
    )
    _save_onnx(onnx, helper, g, out / "string_in.onnx")

    g = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        "two_in",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", H, W, C]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", H, W, C]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", H, W, C])],
    )
    _save_onnx(onnx, helper, g, out / "two_in.onnx")

    data = (out / "f32_b1.tflite").read_bytes()
    (out / "trunc.tflite").write_bytes(data[: len(data) // 2])
    data = (out / "f32_dyn.onnx").read_bytes()
    (out / "trunc.onnx").write_bytes(data[: len(data) // 2])
    (out / "not_a_model.onnx").write_text("this is a text file, not a model\n")
    (out / "not_a_model.bin").write_bytes(os.urandom(64))


def _save_onnx(onnx, helper, graph, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what this onnxruntime reads for opset 17
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def zoo(config: pytest.Config) -> dict[str, Path]:
    """Paths of the zoo models, building them on first use (cached by builder source hash)."""
    from importlib.metadata import version

    h = hashlib.sha256(Path(__file__).read_bytes())
    for pkg in ("tensorflow", "tf2onnx", "onnxruntime", "onnx"):
        h.update(version(pkg).encode())
    key = h.hexdigest()[:12]
    root = Path(config.cache.mkdir("edgekit-zoo"))
    final = root / key
    if not (final / NAMES[-1]).exists():
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
        try:
            _build(tmp)
            # If another xdist worker finished first, keep its copy.
            with contextlib.suppress(OSError):
                os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {n: final / n for n in NAMES}


@pytest.fixture(scope="module")
def models(request: pytest.FixtureRequest) -> dict[str, Path]:
    return zoo(request.config)


def test_zoo_quantized_io_is_really_quantized(models):
    from ai_edge_litert.interpreter import Interpreter

    for name, dtype in (("int8_b1.tflite", np.int8), ("uint8_dyn.tflite", np.uint8)):
        it = Interpreter(model_path=str(models[name]))
        d_in, d_out = it.get_input_details()[0], it.get_output_details()[0]
        assert d_in["dtype"] == dtype and d_out["dtype"] == dtype
        assert d_in["quantization"][0] > 0


def test_zoo_qdq_onnx_holds_quantize_nodes(models):
    import onnx

    ops = {n.op_type for n in onnx.load(str(models["int8_qdq.onnx"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_zoo_batch_shapes(models):
    from ai_edge_litert.interpreter import Interpreter

    sig = Interpreter(model_path=str(models["f32_dyn.tflite"])).get_input_details()[0]
    assert list(sig["shape_signature"]) == [-1, H, W, C]
    sig = Interpreter(model_path=str(models["f32_b1.tflite"])).get_input_details()[0]
    assert list(sig["shape_signature"]) == [1, H, W, C]
