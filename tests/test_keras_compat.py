"""edgekit.keras_compat: loading every Keras format, the LoadedModel interface, the Keras 3 ->
tf_keras bridge. Real TensorFlow on tiny models; TF work is shared through module-scoped fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

# tests/ is on sys.path under pytest (no __init__.py, rootdir-relative import); "tests" itself is
# not importable as a package here because a site-packages "tests" namespace shadows it.
import models  # tiny shared model builders: tests/models.py
import numpy as np
import pytest

from edgekit import keras_compat as kc
from edgekit.artifacts import detect_format, sha256_path
from edgekit.errors import (
    DataError,
    ModelLoadError,
    StageError,
    UnsupportedModelError,
    UsageError,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
TEACHER = REPO / "edgekit" / "assets" / "teacher_shapes.keras"


def _max_diff(a, b) -> float:
    a = a if isinstance(a, list) else [a]
    b = b if isinstance(b, list) else [b]
    assert len(a) == len(b)
    return max(
        float(np.max(np.abs(np.asarray(p) - np.asarray(q)))) for p, q in zip(a, b, strict=True)
    )


# ------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return models.sample_images(8)


@pytest.fixture(scope="module")
def files(tmp_path_factory, x):
    """Every format written once: {"name": (path, expected outputs, expected param count)}."""
    d = tmp_path_factory.mktemp("models")
    k3 = models.keras3_classifier()
    tfk = models.tf_keras_classifier()
    k3_out = np.asarray(k3(x, training=False))
    tfk_out = np.asarray(tfk(x, training=False))
    k3.save(d / "k3.keras")
    tfk.save(d / "tfk.keras")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tfk.save(d / "tfk.h5")
        tfk.save(d / "tfk_savedmodel", save_format="tf")
        k3.export(d / "k3_savedmodel", verbose=False)
    n3, n2 = k3.count_params(), tfk.count_params()
    return {
        "k3.keras": (d / "k3.keras", k3_out, n3),
        "tfk.keras": (d / "tfk.keras", tfk_out, n2),
        "tfk.h5": (d / "tfk.h5", tfk_out, n2),
        "tfk_savedmodel": (d / "tfk_savedmodel", tfk_out, n2),
        "k3_savedmodel": (d / "k3_savedmodel", k3_out, n3),
    }


@pytest.fixture(scope="module")
def loaded(files):
    return {name: kc.load_model(path) for name, (path, _, _) in files.items()}


# ------------------------------------------------------------------------------------------------
# the module stays light


def test_import_is_light_and_tf_start_up_is_quiet():
    code = (
        "import sys, edgekit.keras_compat as kc\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "kc.keras()\n"
        "assert 'tensorflow' in sys.modules and 'keras' in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True)
    err = res.stderr.decode()
    assert res.returncode == 0, err[-2000:]
    # TF's native start-up chatter (absl, oneDNN, CUDA stubs) is held back
    assert "InitializeLog" not in err and "cudart_stub" not in err, err[-2000:]


# ------------------------------------------------------------------------------------------------
# loading


def test_keras_zip_metadata_tells_keras3_from_tf_keras(files):
    for name, version_start, fmt in [("k3.keras", "3.", "keras3"), ("tfk.keras", "2.", "tf_keras")]:
        path = files[name][0]
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read("metadata.json"))
        assert str(meta["keras_version"]).startswith(version_start)
        assert detect_format(path) == fmt


@pytest.mark.parametrize(
    "name, flavor",
    [
        ("k3.keras", "keras3"),
        ("tfk.keras", "tf_keras"),
        ("tfk.h5", "tf_keras"),
        ("tfk_savedmodel", "tf_keras"),
        ("k3_savedmodel", "savedmodel"),
    ],
)
def test_load_each_format(files, loaded, x, name, flavor):
    path, expected, n_params = files[name]
    m = loaded[name]
    assert m.flavor == flavor
    assert m.path == path
    assert m.input_shape == (16, 16, 3)
    assert m.num_classes == 3
    assert len(m.output_names) == 1
    assert m.input_name  # a usable TensorSpec name
    assert m.count_params() == n_params
    assert m.sha256 == sha256_path(path)
    got = m.predict(x)
    assert isinstance(got, np.ndarray) and got.shape == (8, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # rows are probabilities (softmax head), and differ between images: the numbers are real
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert np.ptp(got[:, 0]) > 1e-4


def test_keras3_legacy_h5_loads_with_keras3(tmp_path, x):
    import warnings

    m = models.keras3_classifier()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.save(tmp_path / "k3.h5")  # Keras 3 still writes the legacy format on request
    back = kc.load_model(tmp_path / "k3.h5")
    assert back.flavor == "keras3"
    np.testing.assert_allclose(back.predict(x), kc.wrap(m).predict(x), atol=1e-6)


def test_input_names(loaded):
    assert loaded["k3.keras"].input_name == "image"
    assert loaded["tfk.h5"].input_name == "image"
    assert loaded["k3.keras"].output_names == ["probs"]


def test_predict_batches_and_checks_shape(loaded, x):
    m = loaded["k3.keras"]
    np.testing.assert_allclose(m.predict(x, batch_size=3), m.predict(x), atol=1e-6)
    assert m.predict(x[:0]).shape == (0, 3)
    with pytest.raises(DataError, match=r"Expected input of shape \(N, 16, 16, 3\)"):
        m.predict(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(DataError, match="received"):
        m.predict(np.zeros((16, 16, 3), np.float32))


def test_predict_pads_a_fixed_batch():
    keras = kc.keras()
    inp = keras.Input(batch_shape=(2, 4, 4, 1))
    m = kc.wrap(keras.Model(inp, keras.layers.Flatten()(inp)))
    assert m.batch_dim == 2
    x = models.sample_images(5, (4, 4, 1))
    np.testing.assert_allclose(m.predict(x), x.reshape(5, 16))


def test_missing_path(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        kc.load_model(tmp_path / "nope.keras")


def test_random_bytes_named_keras(tmp_path):
    p = tmp_path / "junk.keras"
    p.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(ModelLoadError, match=r"not a valid \.keras file"):
        kc.load_model(p)


def test_runtime_formats_are_refused(tmp_path):
    p = tmp_path / "m.tflite"
    p.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    with pytest.raises(ModelLoadError, match="TFLITE model; this step needs the Keras model"):
        kc.load_model(p)


@pytest.mark.parametrize("name", ["k3.keras", "tfk.keras", "tfk.h5"])
def test_truncated_files(files, tmp_path, name):
    src = files[name][0]
    data = src.read_bytes()
    p = tmp_path / src.name
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="damaged or truncated") as info:
        kc.load_model(p)
    assert "\n" not in str(info.value)


def test_h5_with_weights_only(tmp_path):
    m = models.tf_keras_classifier()
    p = tmp_path / "w.weights.h5"
    m.save_weights(p)
    with pytest.raises(ModelLoadError, match="only weights"):
        kc.load_model(p)


@pytest.fixture(scope="module")
def lambda_files(tmp_path_factory):
    import warnings

    d = tmp_path_factory.mktemp("lambda")
    models.keras3_with_lambda().save(d / "k3_lambda.keras")
    tfk = models.tf_keras_with_lambda()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tfk.save(d / "tfk_lambda.keras")
        tfk.save(d / "tfk_lambda.h5")
        tfk.save(d / "tfk_lambda_savedmodel", save_format="tf")
    return d


@pytest.mark.parametrize(
    "name", ["k3_lambda.keras", "tfk_lambda.keras", "tfk_lambda.h5", "tfk_lambda_savedmodel"]
)
def test_lambda_refused_unless_unsafe(lambda_files, name):
    path = lambda_files / name
    with pytest.raises(ModelLoadError) as info:
        kc.load_model(path)
    msg = str(info.value)
    assert "Lambda layer 'to_pm1'" in msg and "--unsafe" in msg and "unsafe=True" in msg
    m = kc.load_model(path, unsafe=True)
    # The lambda really runs: a constant image c becomes 2c - 1 before pooling and the head.
    a = m.predict(np.full((1, 16, 16, 3), 0.25, np.float32))
    b = m.predict(np.full((1, 16, 16, 3), 0.75, np.float32))
    assert a.shape == (1, 3) and not np.allclose(a, b)


def _rewrite_keras_zip(src: Path, dest: Path, edit) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "config.json":
                data = json.dumps(edit(json.loads(data))).encode()
            zout.writestr(item, data)


def _rename_relu2(cfg: dict) -> dict:
    for layer in cfg["config"]["layers"]:
        if layer["config"]["name"] == "relu2":
            layer.update(module=None, class_name="SwishPlus", registered_name="acme>SwishPlus")
    return cfg


@pytest.mark.parametrize("name", ["k3.keras", "tfk.h5"])
def test_unknown_layer_class_names_it(files, tmp_path, name):
    """A file whose layer class comes from someone else's code (simulated by renaming a class)."""
    import shutil

    import h5py

    src, expected, _ = files[name]
    p = tmp_path / src.name
    if name.endswith(".keras"):
        _rewrite_keras_zip(src, p, _rename_relu2)
        activation = kc.keras().layers.Activation
    else:
        shutil.copy(src, p)
        with h5py.File(p, "r+") as f:
            f.attrs["model_config"] = json.dumps(_rename_relu2(json.loads(f.attrs["model_config"])))
        activation = kc.tf_keras().layers.Activation
    with pytest.raises(ModelLoadError) as info:
        kc.load_model(p)
    msg = str(info.value)
    assert "'SwishPlus'" in msg and "layer 'relu2'" in msg and "custom_objects" in msg
    assert "\n" not in msg

    key = "acme>SwishPlus" if name.endswith(".keras") else "SwishPlus"
    m = kc.load_model(p, custom_objects={key: activation})
    np.testing.assert_allclose(m.predict(models.sample_images(4)), expected[:4], atol=1e-5)


def test_wrap_refuses_two_inputs_and_non_models():
    keras = kc.keras()
    a, b = keras.Input((8, 8, 3), name="a"), keras.Input((8, 8, 3), name="b")
    m = keras.Model([a, b], keras.layers.Add()([a, b]))
    with pytest.raises(UnsupportedModelError, match="2 inputs"):
        kc.wrap(m)
    with pytest.raises(UnsupportedModelError, match="Expected a Keras 3 or tf_keras Model"):
        kc.wrap(object())


def test_wrap_in_memory_models(x):
    k3 = kc.wrap(models.keras3_classifier())
    tfk = kc.wrap(models.tf_keras_classifier())
    assert (k3.flavor, tfk.flavor) == ("keras3", "tf_keras")
    assert k3.path is None and k3.sha256 is None
    assert kc.wrap(k3) is k3
    two = kc.wrap(models.keras3_two_outputs())
    out = two.predict(x)
    assert two.output_names == ["probs", "aux"]
    assert [o.shape for o in out] == [(8, 3), (8, 2)]
    assert two.num_classes == 3


# ------------------------------------------------------------------------------------------------
# concrete functions: TFLite and tf2onnx


def _tflite_run(tflite_bytes: bytes, x: np.ndarray) -> tuple[np.ndarray, str]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=tflite_bytes)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], x.shape)
    it.allocate_tensors()
    it.set_tensor(inp["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]), inp["name"]


@pytest.mark.parametrize("name", ["k3.keras", "tfk.h5", "k3_savedmodel"])
def test_concrete_function_converts_to_tflite(loaded, x, name):
    import tensorflow as tf

    m = loaded[name]
    fn = m.concrete_function()
    spec = fn.structured_input_signature[0][0]
    assert spec.name == m.input_name and tuple(spec.shape) == (None, 16, 16, 3)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    got, tfl_input = _tflite_run(conv.convert(), x)
    assert m.input_name in tfl_input
    np.testing.assert_allclose(got, m.predict(x), atol=1e-5)
    fixed = m.concrete_function(batch_size=1)
    assert tuple(fixed.structured_input_signature[0][0].shape) == (1, 16, 16, 3)


@pytest.mark.parametrize("name", ["k3.keras", "tfk_savedmodel", "k3_savedmodel"])
def test_tf_function_converts_with_tf2onnx(loaded, x, name):
    import onnxruntime as ort
    import tf2onnx

    m = loaded[name]
    proto, _ = tf2onnx.convert.from_function(
        m.tf_function(), input_signature=m.input_signature(), opset=17
    )
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].name == m.input_name
    (got,) = sess.run(None, {m.input_name: x})
    np.testing.assert_allclose(got, m.predict(x), atol=1e-5)


def test_concrete_function_two_outputs_keep_order(x):
    import tensorflow as tf

    m = kc.wrap(models.keras3_two_outputs())
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.concrete_function()])
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=conv.convert())
    shapes = [tuple(d["shape"][1:]) for d in it.get_output_details()]
    assert sorted(shapes) == [(2,), (3,)]
    fn_out = m.concrete_function().structured_outputs
    assert [tuple(t.shape)[1:] for t in fn_out] == [(3,), (2,)]


# ------------------------------------------------------------------------------------------------
# saving


@pytest.mark.parametrize(
    "builder, dest, flavor",
    [
        (models.keras3_classifier, "a.keras", "keras3"),
        (models.tf_keras_classifier, "b.keras", "tf_keras"),
        (models.tf_keras_classifier, "c.h5", "tf_keras"),
        (models.tf_keras_classifier, "d_savedmodel", "tf_keras"),
        (models.keras3_classifier, "e_savedmodel", "savedmodel"),
    ],
)
def test_save_model_roundtrip(tmp_path, x, builder, dest, flavor):
    m = builder()
    out = kc.save_model(m, tmp_path / dest)
    assert out == tmp_path / dest and out.exists()
    assert sorted(q.name for q in tmp_path.iterdir()) == [dest]  # no temporary leftovers
    back = kc.load_model(out)
    assert back.flavor == flavor
    np.testing.assert_allclose(back.predict(x), kc.wrap(m).predict(x), atol=1e-5)


def test_save_model_refuses_bad_targets(tmp_path):
    with pytest.raises(UsageError, match=r"saved as \.keras"):
        kc.save_model(models.keras3_classifier(), tmp_path / "m.h5")
    with pytest.raises(UsageError, match=r"expected a \.keras or \.h5"):
        kc.save_model(models.keras3_classifier(), tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


def test_module_accessors():
    assert kc.keras().__version__.startswith("3.")
    assert kc.tf_keras().__version__.startswith("2.")


# ------------------------------------------------------------------------------------------------
# the Keras 3 -> tf_keras bridge


def _assert_tf_keras(model):
    tfk = kc.tf_keras()
    assert isinstance(model, tfk.Model)
    for layer in model.layers:
        assert type(layer).__module__.startswith("tf_keras."), type(layer)


def test_bridge_two_outputs_shared_layer(x):
    src = models.keras3_two_outputs()
    res = kc.to_tf_keras(kc.wrap(src), x)
    _assert_tf_keras(res.model)
    assert res.source_flavor == "keras3"
    assert res.max_abs_diff < 1e-5 and len(res.output_diffs) == 2
    assert res.n_samples == 8
    names = [layer.name for layer in res.model.layers]
    assert names.count("shared_dense") == 1  # still one shared layer
    assert res.model.output_names == ["probs", "aux"]
    probs = res.model.get_layer("probs")
    assert type(probs.kernel_regularizer).__name__ == "L2"
    assert type(probs.kernel_constraint).__name__ == "MaxNorm"
    assert res.n_weights == len(src.weights)
    # the check is sensitive: the same architecture without the copied weights differs a lot
    bridge = kc._Bridge(flatten=False)
    fresh = bridge.build(src)
    assert _max_diff(kc.wrap(fresh).predict(x), kc.wrap(src).predict(x)) > 1e-2


def test_bridge_mismatch_raises_stage_error(x):
    with pytest.raises(StageError, match="max abs diff"):
        kc.to_tf_keras(models.keras3_classifier(), x, atol=-1.0)


def test_bridge_sequential(x):
    src = models.keras3_sequential()
    res = kc.to_tf_keras(src, x)
    assert type(res.model).__name__ == "Sequential"
    _assert_tf_keras(res.model)
    assert res.max_abs_diff < 1e-5
    assert res.model.layers[3].alpha == pytest.approx(0.1)  # LeakyReLU negative_slope -> alpha


@pytest.mark.parametrize("flatten", [False, True])
def test_bridge_nested_submodels(x, flatten):
    src = models.keras3_nested()
    res = kc.to_tf_keras(src, x * 255.0, flatten=flatten)
    assert res.max_abs_diff < 1e-4
    assert res.flattened is flatten
    tfk = kc.tf_keras()
    nested = [layer for layer in res.model.layers if isinstance(layer, tfk.Model)]
    if flatten:
        assert nested == []
        names = [layer.name for layer in res.model.layers]
        assert len(names) == len(set(names))
        assert "head_gap" in names  # a repeated name, prefixed with its sub-model
        assert not res.model.get_layer("conv1").trainable  # frozen backbone stays frozen
    else:
        assert [m.name for m in nested] == ["backbone", "head"]
        assert not nested[0].trainable and nested[1].trainable
    assert len(res.model.trainable_weights) == 4  # only the head's two Dense layers


@pytest.mark.parametrize("flatten", [False, True])
def test_bridged_model_trains_like_keras3(flatten):
    """In training mode the rebuild behaves as Keras 3 does: BatchNorm uses batch statistics and
    Dropout drops, in nested sub-models too, even one called with `training=False` (Keras 3
    records training=False on every node and overrides it at run time; the bridge must not
    freeze those layers in inference mode for tfmot's fine-tuning)."""
    keras = kc.keras()
    keras.utils.set_random_seed(3)
    layers = keras.layers
    b_in = keras.Input((16,))
    base = keras.Model(b_in, layers.BatchNormalization()(layers.Dense(8)(b_in)), name="base")
    inp = keras.Input((4, 4, 1))
    x_flat = layers.Flatten()(inp)
    src = keras.Model(inp, layers.Dense(2)(base(x_flat, training=False)))
    models.randomize_batchnorm(src)
    x = models.sample_images(16, (4, 4, 1))
    res = kc.to_tf_keras(src, x, flatten=flatten)
    k3_train = np.asarray(src(x, training=True))
    assert not np.allclose(k3_train, np.asarray(src(x, training=False)), atol=1e-3)
    np.testing.assert_allclose(np.asarray(res.model(x, training=True)), k3_train, atol=1e-4)

    drop = keras.Sequential([keras.Input((16,)), layers.Dropout(0.5)])
    rebuilt = kc.to_tf_keras(keras.Model(inp, drop(x_flat)), x, flatten=flatten).model
    y = np.asarray(rebuilt(x, training=True))
    assert np.mean(y == 0.0) > 0.2  # dropping in training mode
    np.testing.assert_allclose(np.asarray(rebuilt(x)), x.reshape(16, 16))


def test_bridge_mobilenetv2():
    keras = kc.keras()
    keras.utils.set_random_seed(1)
    src = models.randomize_batchnorm(
        keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3))
    )
    x = models.sample_images(4, (96, 96, 3)) * 2.0 - 1.0
    res = kc.to_tf_keras(src, x)
    _assert_tf_keras(res.model)
    assert res.max_abs_diff < 1e-4
    assert res.model.count_params() == src.count_params()
    assert res.n_layers == sum(1 for layer in src.layers if layer.weights)


@pytest.mark.slow
def test_bridge_resnet50():
    keras = kc.keras()
    keras.utils.set_random_seed(2)
    src = models.randomize_batchnorm(
        keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    )
    x = models.sample_images(2, (64, 64, 3)) * 255.0 - 128.0
    res = kc.to_tf_keras(src, x)
    assert res.max_abs_diff < 1e-4
    assert res.model.count_params() == src.count_params()


def test_bridge_lambda_layer(x):
    res = kc.to_tf_keras(models.keras3_with_lambda(), x)
    assert res.max_abs_diff < 1e-5
    assert type(res.model.get_layer("to_pm1")).__name__ == "Lambda"


def test_bridge_tf_keras_passes_through(x):
    m = models.tf_keras_classifier()
    res = kc.to_tf_keras(m, x)
    assert res.model is m and res.max_abs_diff == 0.0 and res.source_flavor == "tf_keras"


def test_bridge_refuses_savedmodel_and_custom_layers(loaded, x):
    with pytest.raises(UnsupportedModelError, match="plain TF SavedModel"):
        kc.to_tf_keras(loaded["k3_savedmodel"], x)
    keras = kc.keras()

    class Twice(keras.layers.Layer):
        def call(self, t):
            return t * 2.0

    inp = keras.Input((16, 16, 3))
    out = keras.layers.Dense(2)(keras.layers.Flatten()(Twice(name="twice")(inp)))
    with pytest.raises(UnsupportedModelError, match=r"Layer 'twice' \(Twice\)"):
        kc.to_tf_keras(keras.Model(inp, out), x)


@pytest.mark.slow
def test_bridged_model_works_with_tfmot(x):
    """The reason the bridge exists: tfmot prunes and quantizes the rebuilt models."""
    import tensorflow_model_optimization as tfmot

    tfk = kc.tf_keras()
    flat = kc.to_tf_keras(models.keras3_nested(), x, flatten=True).model

    def prune(layer):
        if isinstance(layer, tfk.layers.Conv2D | tfk.layers.Dense):
            return tfmot.sparsity.keras.prune_low_magnitude(layer)
        return layer

    pruned = tfk.models.clone_model(flat, clone_function=prune)
    assert sum("prune_low_magnitude" in layer.name for layer in pruned.layers) == 3
    bridged = kc.to_tf_keras(models.keras3_classifier(), x).model
    qat = tfmot.quantization.keras.quantize_model(bridged)
    assert qat.predict(x, verbose=0).shape == (8, 3)


def test_bridged_model_saves_and_reloads(tmp_path, x):
    res = kc.to_tf_keras(models.keras3_two_outputs(), x)  # uses the edgekit>hard_silu activation
    path = kc.save_model(res.model, tmp_path / "bridged.keras")
    back = kc.load_model(path)
    assert back.flavor == "tf_keras"
    assert _max_diff(back.predict(x), res.loaded.predict(x)) < 1e-6


@pytest.mark.skipif(
    not TEACHER.exists(),
    reason=f"{TEACHER.relative_to(REPO)} not built yet (another task trains it)",
)
def test_bridge_bundled_teacher():
    m = kc.load_model(TEACHER)
    shape = tuple(d or 64 for d in m.input_shape)
    x = models.sample_images(4, shape)
    res = kc.to_tf_keras(m, x)
    assert res.max_abs_diff < 1e-4
