"""edgekit.stages.prune: real tfmot pruning of tiny tf_keras models on separable synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit import keras_compat
from edgekit.errors import DataError, UnsupportedModelError, UsageError
from edgekit.stages import training
from edgekit.stages.prune import _plan_steps, prune

CLASSES = 3
SHAPE = (8, 8, 3)


def separable_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class c brightens channel c: trivially separable, so fine-tuning has a clear signal."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = rng.normal(0.0, 0.3, (n, *SHAPE)).astype(np.float32)
    for c in range(CLASSES):
        x[y == c, :, :, c] += 1.0
    return x, y


def tiny_cnn(extra_prelu: bool = False, name: str = "tiny_cnn"):
    """Conv(3->8) / Conv(8->16) / GAP / Dense(16->16) / Dense(16->3): every kernel is prunable."""
    tfk = keras_compat.tf_keras()
    tfk.utils.set_random_seed(0)
    inp = tfk.Input(SHAPE, name="image")
    x = tfk.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(inp)
    if extra_prelu:
        x = tfk.layers.PReLU(alpha_initializer=tfk.initializers.Constant(0.25), name="prelu")(x)
    x = tfk.layers.Conv2D(16, 3, activation="relu", name="conv_b")(x)
    x = tfk.layers.GlobalAveragePooling2D(name="gap")(x)
    x = tfk.layers.Dense(16, activation="relu", name="fc")(x)
    out = tfk.layers.Dense(CLASSES, name="logits")(x)
    return tfk.Model(inp, out, name=name)


@pytest.fixture(scope="module")
def data():
    return separable_data(192)


@pytest.fixture(scope="module")
def trained(data):
    x, y = data
    model = tiny_cnn()
    training.fit(model, x, y, epochs=4, batch_size=32, learning_rate=1e-2, description="pretrain")
    return model


def kernel_sparsity(model) -> dict[str, float]:
    """Zeros in each Conv2D / Dense kernel, read straight from the returned model."""
    out = {}
    for layer in model.layers:
        if type(layer).__name__ in ("Conv2D", "Dense"):
            k = layer.kernel.numpy()
            out[layer.name] = float(np.mean(k == 0))
    return out


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


@pytest.mark.parametrize(("schedule", "target"), [("polynomial", 0.6), ("constant", 0.5)])
def test_prune_reaches_target_and_leaves_input_alone(trained, data, schedule, target, capsys):
    x, y = data
    before = [w.copy() for w in trained.get_weights()]
    result = prune(
        trained,
        x,
        y,
        x_val=x[:64],
        y_val=y[:64],
        target_sparsity=target,
        schedule=schedule,
        epochs=2,
        batch_size=32,
        learning_rate=1e-3,
    )
    # The input model is untouched (tfmot wraps layers in place; prune() works on a copy).
    assert all(np.array_equal(a, b) for a, b in zip(before, trained.get_weights(), strict=True))

    # Stripped: same architecture, no pruning wrappers.
    assert [type(la).__name__ for la in result.model.layers] == [
        type(la).__name__ for la in trained.layers
    ]
    measured = kernel_sparsity(result.model)
    assert set(measured) == set(result.per_layer_sparsity) == {"conv_a", "conv_b", "fc", "logits"}
    for name, s in measured.items():
        assert s == pytest.approx(result.per_layer_sparsity[name])
        assert abs(s - target) <= 0.05, (name, s)
    assert abs(result.overall_sparsity - target) <= 0.05

    # Steps were planned inside the fine-tuning, with several mask updates.
    plan = result.schedule
    assert plan["total_steps"] == 2 * 6
    assert plan["end_step"] <= plan["total_steps"]
    assert (plan["end_step"] - plan["begin_step"]) % plan["frequency"] == 0
    assert (plan["end_step"] - plan["begin_step"]) // plan["frequency"] >= 4

    # Zeros compress: the pruned file gzips smaller than the dense one.
    assert 0 < result.gzip_size_bytes < 0.85 * result.baseline_gzip_size_bytes
    assert len(result.history["loss"]) == 2 and "val_accuracy" in result.history
    assert accuracy(result.model, x, y) >= 0.9
    assert result.skipped_layers == []
    err = capsys.readouterr().err
    assert "prune: epoch 1/2" in err and "prune: epoch 2/2" in err


def test_m_by_n_gives_at_most_two_nonzeros_per_block_of_four(trained, data):
    x, y = data
    result = prune(trained, x, y, m_by_n=(2, 4), epochs=1, batch_size=32)
    assert result.schedule["schedule"] == "m_by_n"
    for layer in result.model.layers:
        if type(layer).__name__ not in ("Conv2D", "Dense"):
            continue
        k = layer.kernel.numpy()
        # tfmot groups along the input-channel axis (TFLite's innermost): Dense [in, out],
        # Conv2D [h, w, in, out]. Move it last, pad to a multiple of 4, count per block.
        k = np.moveaxis(k, -2, -1).reshape(-1, k.shape[-2])
        pad = (-k.shape[1]) % 4
        k = np.pad(k, ((0, 0), (0, pad)))
        nonzeros = np.count_nonzero(k.reshape(k.shape[0], -1, 4), axis=2)
        assert nonzeros.max() <= 2, layer.name
        if layer.name != "conv_a":  # 3 input channels: one real zero per padded block
            assert result.per_layer_sparsity[layer.name] == pytest.approx(0.5)
    assert accuracy(result.model, x, y) >= 0.8


def test_unsupported_layer_is_skipped_or_reported(data):
    x, y = data
    model = tiny_cnn(extra_prelu=True, name="with_prelu")
    with pytest.raises(UnsupportedModelError, match=r"'prelu' \(PReLU\).*skip_unsupported=True"):
        prune(model, x, y, skip_unsupported=False, epochs=1, batch_size=64)
    result = prune(model, x, y, target_sparsity=0.5, epochs=1, batch_size=64)
    assert [(s["layer"], s["class"]) for s in result.skipped_layers] == [("prelu", "PReLU")]
    assert "prelu" not in result.per_layer_sparsity
    assert abs(result.overall_sparsity - 0.5) <= 0.05
    prelu = result.model.get_layer("prelu").get_weights()[0]
    assert np.count_nonzero(prelu == 0) == 0  # left dense


def xnnpack_friendly():
    """Stem conv 3x3/2 after ZeroPadding(1), depthwise 3x3 'same', 1x1 convs, GAP: XNNPACK sparse-ready."""
    tfk = keras_compat.tf_keras()
    tfk.utils.set_random_seed(0)
    L = tfk.layers
    inp = tfk.Input((16, 16, 3))
    x = L.ZeroPadding2D(1)(inp)
    x = L.Conv2D(8, 3, strides=2, padding="valid", name="stem")(x)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(16, 1, name="pw")(x)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D(keepdims=True)(x)
    x = L.Flatten()(x)
    return tfk.Model(inp, L.Dense(CLASSES, name="head")(x), name="xnn")


def test_xnnpack_policy(trained, data):
    x, y = data
    with pytest.raises(UnsupportedModelError, match=r"policy='xnnpack'.*tiny_cnn.*policy=None"):
        prune(trained, x, y, policy="xnnpack", epochs=1)
    x16 = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    result = prune(xnnpack_friendly(), x16, y, policy="xnnpack", target_sparsity=0.75, epochs=1)
    assert list(result.per_layer_sparsity) == ["pw"]  # only 1x1 convolutions
    assert abs(result.per_layer_sparsity["pw"] - 0.75) <= 0.05
    assert np.count_nonzero(result.model.get_layer("stem").kernel.numpy() == 0) == 0


def test_teacher_logits_replace_labels(trained, data):
    x, _ = data
    logits = trained.predict(x, verbose=0)
    result = prune(trained, x, None, teacher_logits=logits, target_sparsity=0.5, epochs=2)
    assert abs(result.overall_sparsity - 0.5) <= 0.05
    agree = np.mean(result.model.predict(x, verbose=0).argmax(1) == logits.argmax(1))
    assert agree >= 0.9


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"target_sparsity": 1.2},
            UsageError,
            r"^Expected target_sparsity in \[0, 1\)\. Received: target_sparsity=1\.2$",
        ),
        ({"target_sparsity": -0.1}, UsageError, r"target_sparsity=-0\.1"),
        ({"initial_sparsity": 0.7, "target_sparsity": 0.5}, UsageError, "initial_sparsity <="),
        ({"schedule": "cubic"}, UsageError, r"schedule in \['polynomial', 'constant'\]"),
        ({"m_by_n": (4, 2)}, UsageError, r"0 < m < n"),
        ({"policy": "gpu"}, UsageError, "policy=.gpu."),
        ({"end_step": 999}, UsageError, r"end_step <= 6"),
        ({"begin_step": 6}, UsageError, "begin_step < the number of fine-tuning steps"),
        ({"end_step": 5, "frequency": 2}, UsageError, "multiple of frequency"),
        ({"epochs": 0}, UsageError, "epochs > 0"),
        ({"y": None}, DataError, "needs targets: y_train is None"),
        ({"y": np.zeros(5, int)}, DataError, "one label per sample"),
        ({"y": np.full(192, 7)}, DataError, r"in \[0, 3\)"),
        ({"x": np.zeros((192, 9, 9, 3), np.float32)}, DataError, r"shape \(8, 8, 3\)"),
    ],
)
def test_bad_input_gives_one_line_errors(trained, data, kwargs, error, message):
    x, y = data
    x = kwargs.pop("x", x)
    y = kwargs.pop("y", y)
    with pytest.raises(error, match=message) as info:
        prune(trained, x, y, epochs=kwargs.pop("epochs", 1), batch_size=32, **kwargs)
    assert "\n" not in str(info.value)


def test_plan_steps_keeps_updates_inside_training():
    for total in (1, 2, 3, 7, 12, 100, 1001):
        plan = _plan_steps(total, 0, None, None)
        assert 1 <= plan["frequency"] <= plan["end_step"] <= total
        assert plan["end_step"] % plan["frequency"] == 0
        if total >= 20:
            assert plan["end_step"] <= 0.85 * total  # recovery epochs at fixed masks
            assert plan["end_step"] // plan["frequency"] >= 6
    assert _plan_steps(100, 10, 50, None) == {"begin_step": 10, "end_step": 50, "frequency": 5}
    assert _plan_steps(100, 0, None, 30)["end_step"] == 60


def test_training_helpers(trained, data):
    x, y = data
    opt = training.make_optimizer("sgd", 0.1, schedule="cosine", total_steps=10)
    lr = opt.get_config()["learning_rate"]
    assert lr["class_name"] == "CosineDecay" and lr["config"]["decay_steps"] == 10
    assert type(training.make_optimizer("adamw", 1e-3, weight_decay=0.01)).__name__ == "AdamW"
    with pytest.raises(UsageError, match="optimizer in"):
        training.make_optimizer("rmsprop")
    with pytest.raises(UsageError, match="total_steps"):
        training.make_optimizer(schedule="cosine")
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        training.check_training_data(trained, bad, y)
    with pytest.raises(DataError, match="integer class ids"):
        training.check_training_data(trained, x, y + 0.5)
    xs, ys = training.check_training_data(trained, x, y.astype(np.float32).reshape(-1, 1))
    assert xs.dtype == np.float32 and ys.dtype == np.int64 and ys.shape == (len(x),)
    assert not training.outputs_are_probabilities(trained, x)  # logits head
    batches = list(training.make_dataset(x[:10], y[:10], batch_size=4, shuffle=True, seed=1))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    copy = training.copy_model(trained)
    assert copy is not trained and all(
        np.array_equal(a, b) for a, b in zip(copy.get_weights(), trained.get_weights(), strict=True)
    )


def two_head_cnn():
    """The tiny CNN with a box head first (each channel's mean: a regression) and the class
    head second, trained briefly on both."""
    tfk = keras_compat.tf_keras()
    tfk.utils.set_random_seed(0)
    inp = tfk.Input(SHAPE, name="image")
    h = tfk.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(inp)
    h = tfk.layers.Conv2D(16, 3, activation="relu", name="conv_b")(h)
    h = tfk.layers.GlobalAveragePooling2D(name="gap")(h)
    h = tfk.layers.Dense(16, activation="relu", name="fc")(h)
    box = tfk.layers.Dense(CLASSES, name="box")(h)
    cls = tfk.layers.Dense(CLASSES, name="cls")(h)
    return tfk.Model(inp, [box, cls], name="two_heads")


@pytest.fixture(scope="module")
def two_heads(data):
    x, y = data
    model = two_head_cnn()
    model.compile(
        keras_compat.tf_keras().optimizers.Adam(1e-2),
        loss=["mse", training.classification_loss(model, y, x, output=1)],
    )
    model.fit(x, [x.mean(axis=(1, 2)), y], epochs=8, batch_size=32, verbose=0)
    return model


def test_two_outputs_tune_the_class_head_and_hold_the_other(two_heads, data, monkeypatch):
    """The class output learns from the labels; the box output is held at the unpruned model's
    predictions, and moves clearly less than when its hold is switched off (the control)."""
    import edgekit.stages.prune as prune_module

    x, y = data
    before = two_heads.predict(x[160:], verbose=0)
    kwargs = dict(x_val=x[160:], y_val=y[160:], epochs=4, batch_size=32, class_output=1)
    kwargs["learning_rate"] = 2e-3  # 20 steps: enough to pull the box head back (5e-4 is not)
    held = prune(two_heads, x[:160], y[:160], **kwargs)
    assert len(held.model.outputs) == 2 and held.overall_sparsity == pytest.approx(0.5, abs=0.02)
    np.testing.assert_array_equal(two_heads.predict(x[160:], verbose=0)[0], before[0])  # untouched
    after = held.model.predict(x[160:], verbose=0)
    assert (
        np.mean(np.argmax(after[1], axis=1) == y[160:]) > 0.8
    )  # the class head, still classifying
    drift = held.held_outputs["box"]
    rms = float(np.sqrt(np.mean((after[0] - before[0]) ** 2)))
    assert drift["rms_change"] == pytest.approx(rms, rel=1e-4)
    assert {"accuracy", "val_accuracy", "box_loss", "cls_loss"} <= set(held.history)

    monkeypatch.setattr(prune_module, "_held_loss", lambda variance: _zero_loss)
    free = prune(two_heads, x[:160], y[:160], **kwargs)
    assert drift["rms_change"] < 0.75 * free.held_outputs["box"]["rms_change"], (
        drift,
        free.held_outputs,
    )


def _zero_loss(y_true, y_pred):
    import tensorflow as tf

    return tf.zeros_like(tf.reduce_sum(y_pred, axis=-1))  # the box output trained on nothing


def test_two_outputs_bad_class_output_and_labels(two_heads, data):
    x, y = data
    with pytest.raises(
        UsageError, match=r"class_output in \[0, 2\) \(the model's outputs: 0: box, 1: cls\)"
    ):
        prune(two_heads, x, y, epochs=1, class_output=2)
    with pytest.raises(DataError, match=r"in \[0, 3\)"):  # checked against the class head
        prune(two_heads, x, np.full(len(x), 5), epochs=1, class_output=1)
