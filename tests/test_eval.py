"""edgekit.bench.metrics and edgekit.bench.evaluation (api.evaluate) on real runtimes."""

from __future__ import annotations

import numpy as np
import pytest
from test_runtimes_models import C, H, K, W, zoo

from edgekit import api
from edgekit.bench import metrics
from edgekit.data import Preprocessing, from_arrays
from edgekit.errors import DataError, UsageError
from edgekit.runtimes import open_runner


@pytest.fixture(scope="module")
def models(request):
    return zoo(request.config)


@pytest.fixture(scope="module")
def pixels():
    return (np.random.default_rng(7).random((60, H, W, C)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def float_scores(models, pixels):
    return open_runner(models["f32_dyn.onnx"]).run(Preprocessing().apply(pixels))[0]


# --- metrics ----------------------------------------------------------------------------------


def test_to_probabilities_softmaxes_logits_and_keeps_distributions():
    logits = np.array([[2.0, 1.0, -1.0], [0.0, 0.0, 0.0]])
    p = metrics.to_probabilities(logits)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(axis=1, keepdims=True))
    probs = np.array([[0.7, 0.2, 0.1], [0.0, 0.5, 0.5]])
    np.testing.assert_allclose(metrics.to_probabilities(probs), probs)
    # A dequantized softmax that sums to 0.99: renormalized, not put through a second softmax.
    q = np.array([[0.6875, 0.203125, 0.1015625]])
    np.testing.assert_allclose(metrics.to_probabilities(q), q / q.sum())


def test_kl_divergence_values():
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    np.testing.assert_allclose(metrics.kl_divergence(p, p), [0, 0], atol=1e-12)
    q = np.array([[0.25, 0.75]])
    want = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    np.testing.assert_allclose(metrics.kl_divergence(p[:1], q), [want])
    # An exact zero in the model's output (a quantized softmax) stays finite.
    assert np.isfinite(metrics.kl_divergence(p[:1], np.array([[1.0, 0.0]]))).all()


def test_top_k_and_confusion_matrix():
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]])
    y = np.array([2, 1, 2])
    np.testing.assert_array_equal(metrics.top_k_hits(probs, y, 1), [False, False, True])
    np.testing.assert_array_equal(metrics.top_k_hits(probs, y, 2), [True, False, True])
    np.testing.assert_array_equal(metrics.top_k_hits(probs, y, 9), [True, True, True])
    cm = metrics.confusion_matrix(y, probs.argmax(axis=1), 3)
    np.testing.assert_array_equal(cm, [[0, 0, 0], [1, 0, 0], [0, 1, 1]])


# --- evaluate on real models ------------------------------------------------------------------


def test_labels_from_the_float_model_give_full_accuracy(models, pixels, float_scores):
    y = float_scores.argmax(axis=1)
    ds = from_arrays(pixels, y, labels=["a", "b", "c", "d"])
    r = api.evaluate(models["f32_dyn.tflite"], ds, top_k=2, batch_size=16)
    assert r["top1"] == 1.0 and r["topk"] == 1.0 and r["k"] == 2 and r["count"] == 60
    assert r["labels"] == ["a", "b", "c", "d"]
    cm = np.array(r["confusion_matrix"])
    assert cm.sum() == 60 and np.trace(cm) == 60
    per = {c["label"]: c for c in r["per_class"]}
    assert sum(c["count"] for c in per.values()) == 60
    assert all(c["accuracy"] in (1.0, None) for c in per.values())
    assert r["runtime"] == "litert" and r["preprocessing"] == {"mean": 0.0, "std": 255.0}


def test_quantized_model_against_float_reference(models, pixels, float_scores):
    y = np.random.default_rng(3).integers(0, K, len(pixels))
    ds = from_arrays(pixels, y)
    r = api.evaluate(models["int8_b1.tflite"], ds, reference=models["f32_dyn.onnx"], top_k=3)
    q = open_runner(models["int8_b1.tflite"]).run(Preprocessing().apply(pixels))[0]
    # The numbers are what the two runners' outputs say, computed independently here.
    assert r["top1"] == pytest.approx(np.mean(q.argmax(1) == y))
    ref = r["reference"]
    assert ref["top1_agreement"] == pytest.approx(np.mean(q.argmax(1) == float_scores.argmax(1)))
    assert ref["reference_top1"] == pytest.approx(np.mean(float_scores.argmax(1) == y))
    assert ref["top1_drop"] == pytest.approx(ref["reference_top1"] - r["top1"])
    pq, pf = metrics.to_probabilities(q), metrics.to_probabilities(float_scores)
    assert ref["mean_kl"] == pytest.approx(metrics.kl_divergence(pf, pq).mean())
    assert 0 < ref["mean_kl"] < 0.05  # int8 is close to, not equal to, float


def test_logits_model_agrees_with_probabilities_model(models, pixels):
    ds = from_arrays(pixels, np.zeros(len(pixels), int) % K, labels=list("wxyz"))
    r = api.evaluate(models["logits_dyn.tflite"], ds, reference=models["f32_dyn.onnx"])
    assert r["reference"]["top1_agreement"] == 1.0
    assert r["reference"]["mean_kl"] < 1e-6  # softmax(logits) == the other model's softmax


def test_npz_file_via_load_dataset(models, pixels, float_scores, tmp_path):
    path = tmp_path / "eval.npz"
    np.savez(path, x=pixels, y=float_scores.argmax(axis=1))
    r = api.evaluate(models["uint8_io.onnx"], str(path), limit=20)
    assert r["count"] == 20 and r["data"]["count"] == 20 and 0 <= r["top1"] <= 1


def test_preprocessing_is_applied_identically(models, pixels):
    ds = from_arrays(pixels, np.arange(len(pixels)) % K)
    pre = Preprocessing(mean=127.5, std=127.5)
    want = open_runner(models["f32_dyn.onnx"]).run(pre.apply(pixels))[0].argmax(1)
    r = api.evaluate(models["f32_b1.tflite"], ds, mean=127.5, std=127.5)
    assert r["top1"] == pytest.approx(np.mean(want == np.arange(len(pixels)) % K))
    assert r["preprocessing"] == {"mean": 127.5, "std": 127.5}


@pytest.mark.parametrize(
    "shape,words",
    [((16, 16, 3), ["(16, 16, 3)", "(8, 8, 3)", "resize"]), ((8, 8, 1), ["(8, 8, 1)", "channels"])],
)
def test_image_shape_mismatch_names_both_shapes(models, shape, words):
    ds = from_arrays(np.zeros((4, *shape), np.uint8), [0, 1, 2, 3])
    with pytest.raises(DataError) as e:
        api.evaluate(models["f32_dyn.onnx"], ds)
    for w in words:
        assert w in str(e.value)


def test_unlabeled_data_needs_a_reference(models, pixels):
    ds = from_arrays(pixels)
    with pytest.raises(DataError, match="no labels"):
        api.evaluate(models["f32_dyn.onnx"], ds)
    r = api.evaluate(models["uint8_dyn.tflite"], ds, reference=models["f32_dyn.onnx"])
    assert r["top1"] is None and r["confusion_matrix"] is None
    assert 0.8 <= r["reference"]["top1_agreement"] <= 1.0


def test_two_output_model_picks_or_takes_the_named_output(models, pixels, float_scores):
    ds = from_arrays(pixels, float_scores.argmax(axis=1))
    r = api.evaluate(models["two_out.tflite"], ds, output="probs")
    assert r["output"] == "probs" and r["top1"] > 0.95
    r = api.evaluate(models["two_out.tflite"], ds)
    assert r["output"] in ("logits", "probs") and r["top1"] > 0.95
    with pytest.raises(UsageError, match="no output 'scores'"):
        api.evaluate(models["two_out.tflite"], ds, output="scores")


def test_bad_options(models, pixels):
    ds = from_arrays(pixels, np.arange(len(pixels)) % K)
    with pytest.raises(UsageError, match="--top-k"):
        api.evaluate(models["f32_dyn.onnx"], ds, top_k=0)
    with pytest.raises(UsageError, match="--batch-size"):
        api.evaluate(models["f32_dyn.onnx"], ds, batch_size=0)
    six = from_arrays(pixels, np.arange(len(pixels)) % 6)
    with pytest.raises(
        DataError, match=r"4 outputs \(labels 0 to 3\) but the data.s labels go up to 5"
    ):
        api.evaluate(models["f32_dyn.onnx"], six)


def test_progress_is_reported_on_stderr(models, pixels, capsys, monkeypatch):
    monkeypatch.delenv("EDGEKIT_QUIET", raising=False)
    ds = from_arrays(pixels, np.arange(len(pixels)) % K)
    api.evaluate(models["f32_dyn.onnx"], ds, batch_size=10)
    err = capsys.readouterr().err
    assert "eval f32_dyn.onnx" in err and "6/6" in err
