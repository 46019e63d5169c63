"""edgekit.runtimes against real LiteRT and ONNX Runtime on the tiny zoo models."""

from __future__ import annotations

import numpy as np
import pytest
from test_runtimes_models import C, H, K, W, _weights, zoo

from edgekit.errors import (
    ModelLoadError,
    TargetUnavailableError,
    UnsupportedModelError,
    UsageError,
)
from edgekit.runtimes import available_targets, open_runner
from edgekit.runtimes.base import dequantize, quantize


@pytest.fixture(scope="module")
def models(request):
    return zoo(request.config)


@pytest.fixture(scope="module")
def x5():
    return np.random.default_rng(42).random((5, H, W, C), dtype=np.float32)


def reference_logits(x: np.ndarray) -> np.ndarray:
    """The zoo network in numpy: 3x3 SAME conv, ReLU, global mean, dense."""
    w1, w2 = _weights()
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = np.zeros((x.shape[0], H, W, w1.shape[-1]), np.float64)
    for i in range(3):
        for j in range(3):
            y += np.einsum("nhwc,cd->nhwd", xp[:, i : i + H, j : j + W], w1[i, j])
    return np.maximum(y, 0).mean(axis=(1, 2)) @ w2


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    "name,atol",
    [
        ("f32_b1.tflite", 1e-5),
        ("f32_dyn.tflite", 1e-5),
        ("f32_dyn.onnx", 1e-5),
        ("f32_b2.onnx", 1e-5),
        # Quantized models: the error budget of 8-bit activations on a 4-class softmax.
        ("int8_b1.tflite", 0.06),
        ("uint8_dyn.tflite", 0.06),
        ("int8_qdq.onnx", 0.06),
    ],
)
def test_float_in_float_out_matches_numpy_reference(models, x5, name, atol):
    with open_runner(models[name]) as r:
        (y,) = r.run(x5)
    assert y.dtype == np.float32 and y.shape == (5, K)
    np.testing.assert_allclose(y, softmax(reference_logits(x5)), atol=atol)


def test_quantized_io_uses_model_scale_and_zero_point(models, x5):
    r = open_runner(models["int8_b1.tflite"])
    t_in, t_out = r.inputs[0], r.outputs[0]
    assert t_in.dtype == "int8" and t_out.dtype == "int8"
    scale, zp = t_in.quantization
    assert scale > 0 and -128 <= zp <= 127
    # Scores are dequantized: multiples of the output scale, not raw int8 codes.
    (y,) = r.run(x5[:1])
    codes = y / t_out.quantization[0] + t_out.quantization[1]
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    assert 0.9 < float(y.sum()) < 1.1


def test_onnx_uint8_io_reads_scale_from_dequantize_and_quantize_nodes(models, x5):
    r = open_runner(models["uint8_io.onnx"])
    assert r.inputs[0].quantization == pytest.approx((1 / 255, 0))
    assert r.outputs[0].quantization == pytest.approx((1 / 256, 0))
    (y,) = r.run(x5)
    # The graph in numpy: inputs quantized at 1/255, softmax quantized at 1/256.
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(models["uint8_io.onnx"])).graph
    wq = next(numpy_helper.to_array(i) for i in g.initializer if i.name == "wq")
    xq = np.clip(np.round(x5 * 255), 0, 255) / 255
    want = softmax(xq.mean(axis=(1, 2)) @ wq)
    np.testing.assert_allclose(y, want, atol=1 / 256 + 1e-6)


def test_quantize_rounds_and_saturates():
    q = quantize(np.array([-10.0, -0.5, 0.0, 0.26, 10.0]), "int8", 0.5, 0)
    np.testing.assert_array_equal(q, [-20, -1, 0, 1, 20])
    q = quantize(np.array([-1.0, 1000.0]), "uint8", 1.0, 3)
    np.testing.assert_array_equal(q, [2, 255])
    np.testing.assert_allclose(dequantize(np.array([0, 10], np.int8), 0.5, 2), [-1.0, 4.0])


def test_fixed_batch_one_loops_and_dynamic_batch_resizes(models, x5):
    b1 = open_runner(models["f32_b1.tflite"])
    dyn = open_runner(models["f32_dyn.tflite"])
    assert b1.fixed_batch == 1 and dyn.fixed_batch is None
    assert "loops" in b1.describe()["batching"] and "dynamic" in dyn.describe()["batching"]
    np.testing.assert_allclose(b1.run(x5)[0], dyn.run(x5)[0], atol=1e-6)
    # Each row equals a batch-of-one run: the loop keeps rows in order.
    for i in range(5):
        np.testing.assert_allclose(b1.run(x5[i : i + 1])[0][0], dyn.run(x5)[0][i], atol=1e-6)


def test_fixed_batch_two_pads_the_last_chunk(models, x5):
    r = open_runner(models["f32_b2.onnx"])
    assert r.fixed_batch == 2
    (y,) = r.run(x5)  # 2 + 2 + (1 padded to 2)
    assert y.shape == (5, K)
    np.testing.assert_allclose(y, softmax(reference_logits(x5)), atol=1e-5)


def test_prepare_refuses_a_batch_the_fixed_shape_cannot_take(models, x5):
    r = open_runner(models["f32_b1.tflite"])
    with pytest.raises(UsageError) as e:
        r.prepare(x5)
    msg = str(e.value)
    assert "Batch size 5" in msg and "(1, 8, 8, 3)" in msg and "--batch 1" in msg
    assert "\n" not in msg


def test_prepare_invoke_outputs_equals_run(models, x5):
    for name in ("uint8_dyn.tflite", "f32_dyn.onnx"):
        r = open_runner(models[name])
        r.prepare(x5)
        r.invoke()
        np.testing.assert_allclose(r.outputs_float()[0], r.run(x5)[0], atol=1e-6)


def test_image_size_mismatch_names_both_shapes(models):
    r = open_runner(models["f32_dyn.onnx"])
    with pytest.raises(UsageError) as e:
        r.run(np.zeros((2, 16, 16, 1), np.float32))
    assert "(N, 16, 16, 1)" in str(e.value) and "(N, 8, 8, 3)" in str(e.value)


def test_two_outputs_in_signature_order_with_names(models, x5):
    r = open_runner(models["two_out.tflite"])
    assert sorted(t.name for t in r.outputs) == ["logits", "probs"]
    outs = dict(zip([t.name for t in r.outputs], r.run(x5), strict=True))
    np.testing.assert_allclose(outs["logits"], reference_logits(x5), atol=1e-4)
    np.testing.assert_allclose(outs["probs"], softmax(outs["logits"]), atol=1e-5)
    r = open_runner(models["two_out.onnx"])
    assert len(r.outputs) == 2
    ys = r.run(x5)
    assert [y.shape for y in ys] == [(5, K), (5, K)]


def test_litert_xnnpack_on_off_and_threads(models, x5):
    on = open_runner(models["f32_dyn.tflite"], threads=2)
    off = open_runner(models["f32_dyn.tflite"], xnnpack=False)
    d_on, d_off = on.describe(), off.describe()
    assert d_on["threads"] == 2 and d_on["runtime"] == "litert" and d_on["runtime_version"]
    assert d_on["delegate"].startswith("XNNPACK") and d_on["fallback"] is None
    assert "reference" in d_off["delegate"] and d_off["xnnpack"] is False
    np.testing.assert_allclose(on.run(x5)[0], off.run(x5)[0], atol=1e-5)


def test_onnx_provider_and_graph_optimization_reported(models, x5):
    r = open_runner(models["f32_dyn.onnx"], threads=2, graph_optimization="disabled")
    d = r.describe()
    assert d["provider"] == "CPUExecutionProvider" and d["graph_optimization"] == "disabled"
    assert d["threads"] == 2 and d["runtime"] == "onnxruntime"
    default = open_runner(models["f32_dyn.onnx"])
    np.testing.assert_allclose(r.run(x5)[0], default.run(x5)[0], atol=1e-6)
    with pytest.raises(UsageError, match="graph optimization"):
        open_runner(models["f32_dyn.onnx"], graph_optimization="max")


@pytest.mark.parametrize(
    "name", ["trunc.tflite", "trunc.onnx", "not_a_model.onnx", "not_a_model.bin"]
)
def test_damaged_or_foreign_files_raise_one_line_model_load_error(models, name):
    with pytest.raises(ModelLoadError) as e:
        open_runner(models[name])
    msg = str(e.value)
    assert models[name].name in msg and "\n" not in msg and len(msg) < 400


@pytest.mark.parametrize(
    "name,words",
    [
        ("dyn_hw.onnx", ["'image'", "dynamic", "batch"]),
        ("string_in.onnx", ["'text'", "string", "float32"]),
        ("two_in.onnx", ["2 inputs", "'a'", "'b'", "one image input"]),
    ],
)
def test_unsupported_inputs_explain_which_and_what_is_supported(models, name, words):
    with pytest.raises(UnsupportedModelError) as e:
        open_runner(models[name])
    for w in words:
        assert w in str(e.value)


def test_bad_target_and_threads(models):
    with pytest.raises(UsageError, match="Unknown target"):
        open_runner(models["f32_dyn.onnx"], target="tpu")
    with pytest.raises(UsageError, match="--threads"):
        open_runner(models["f32_dyn.onnx"], threads=0)


def _has_gpu() -> bool:
    t = available_targets()
    return t["tflite"]["gpu"] or t["onnx"]["gpu"]


@pytest.mark.skipif(_has_gpu(), reason="this machine has a usable GPU runtime")
@pytest.mark.parametrize("name", ["f32_dyn.tflite", "f32_dyn.onnx"])
def test_gpu_target_without_gpu_is_one_line_target_unavailable(models, name):
    with pytest.raises(TargetUnavailableError) as e:
        open_runner(models[name], target="gpu")
    assert "--target cpu" in str(e.value) or "GPU" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.gpu
@pytest.mark.skipif(not available_targets()["onnx"]["gpu"], reason="no CUDA/TensorRT provider")
def test_onnx_gpu_provider_runs(models, x5):
    r = open_runner(models["f32_dyn.onnx"], target="gpu")
    assert r.describe()["accelerator"] == "GPU"
    np.testing.assert_allclose(r.run(x5)[0], softmax(reference_logits(x5)), atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not available_targets()["tflite"]["gpu"], reason="no LiteRT GPU accelerator")
def test_litert_gpu_accelerator_runs(models, x5):
    r = open_runner(models["f32_b1.tflite"], target="gpu")
    np.testing.assert_allclose(r.run(x5)[0], softmax(reference_logits(x5)), atol=1e-3)
    assert r.describe()["delegate"] == "LiteRT GPU accelerator"
