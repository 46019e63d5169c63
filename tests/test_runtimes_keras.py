"""The Keras / SavedModel runner on TensorFlow, and eval parity between a Keras model and its
TFLite export (the same preprocessing for every format)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from models import (
    keras3_classifier,
    keras3_two_outputs,
    sample_images,
    tf_keras_classifier,
)

from edgekit import api, keras_compat
from edgekit.data import from_arrays
from edgekit.errors import TargetUnavailableError
from edgekit.runtimes import open_runner


@pytest.fixture(scope="module")
def kmodels(tmp_path_factory):
    d = tmp_path_factory.mktemp("keras")
    paths = {
        "k3": keras_compat.save_model(keras3_classifier(), d / "k3.keras"),
        "tfk_h5": keras_compat.save_model(tf_keras_classifier(), d / "tfk.h5"),
        "tfk_sm": keras_compat.save_model(tf_keras_classifier(), d / "tfk_savedmodel"),
        "two": keras_compat.save_model(keras3_two_outputs(), d / "two.keras"),
    }
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="module")
def x():
    return sample_images(6)


@pytest.mark.parametrize("name", ["k3", "tfk_h5", "tfk_sm"])
def test_keras_runner_matches_keras_predict(kmodels, x, name):
    r = open_runner(kmodels[name])
    (y,) = r.run(x)
    want = keras_compat.load_model(kmodels[name]).predict(x)
    np.testing.assert_allclose(y, want, atol=1e-6)
    d = r.describe()
    assert d["format"] == "keras" and d["runtime"] == "tensorflow" and d["runtime_version"]
    assert d["accelerator"] == "CPU" and d["inputs"][0]["shape"] == [None, 16, 16, 3]


def test_keras_runner_xla_and_prepare_invoke(kmodels, x):
    plain = open_runner(kmodels["k3"])
    xla = open_runner(kmodels["k3"], xla=True)
    assert xla.describe()["xla"] is True and "XLA" in xla.describe()["delegate"]
    xla.prepare(x)
    xla.invoke()
    np.testing.assert_allclose(xla.outputs_float()[0], plain.run(x)[0], atol=1e-5)


def test_keras_two_outputs_in_model_order(kmodels, x):
    r = open_runner(kmodels["two"])
    assert [t.name for t in r.outputs] == ["probs", "aux"]
    probs, aux = r.run(x)
    assert probs.shape == (6, 3) and aux.shape == (6, 2)


def test_keras_runner_batch_size_option_chunks(kmodels, x):
    r = open_runner(kmodels["k3"], batch_size=4)
    np.testing.assert_allclose(r.run(x)[0], open_runner(kmodels["k3"]).run(x)[0], atol=1e-6)


def test_bench_keras_model(kmodels):
    rep = api.bench(kmodels["k3"], runs=10, warmup=2)
    m = rep["models"][0]
    assert m["runtime"] == "tensorflow" and m["latency_ms"]["count"] == 10


def test_keras_gpu_target_without_gpu(kmodels):
    from edgekit.runtimes.keras import tf_gpus

    if tf_gpus():
        pytest.skip("TensorFlow sees a GPU here")
    with pytest.raises(TargetUnavailableError, match="--target cpu"):
        open_runner(kmodels["k3"], target="gpu")


def test_eval_keras_and_its_tflite_export_agree(kmodels, tmp_path):
    from edgekit.export import tflite

    loaded = keras_compat.load_model(kmodels["k3"])
    out = tmp_path / "k3.tflite"
    tflite.convert(loaded, out)
    px = (np.random.default_rng(2).random((40, 16, 16, 3)) * 255).astype(np.uint8)
    ds = from_arrays(px, np.arange(40) % 3)
    r = api.evaluate(str(out), ds, reference=kmodels["k3"], top_k=2)
    ref = r["reference"]
    assert ref["top1_agreement"] == 1.0 and ref["mean_kl"] < 1e-6
    assert ref["top1_drop"] == 0.0
    k = api.evaluate(kmodels["k3"], ds, top_k=2)
    assert k["top1"] == r["top1"] and k["confusion_matrix"] == r["confusion_matrix"]
