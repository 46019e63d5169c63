"""channel_prune: dependency groups, MAC counts, the rebuild (exact when the removed channels are
zero), recovery by distillation, and bad input; Keras 3 and tf-keras, tiny real models."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit import keras_compat
from edgekit.errors import UnsupportedModelError, UsageError
from edgekit.stages import channel_prune as cp

SHAPE = (16, 16, 3)


def _x(n: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *SHAPE), dtype=np.float32)


def _module(flavor: str):
    return keras_compat.keras() if flavor == "keras3" else keras_compat.tf_keras()


def tiny_net(flavor: str, *, unknown: bool = False):
    """Residual add, concat, depthwise, squeeze-excite, flatten + dense head (and, with
    `unknown`, a LayerNormalization the stage does not reason about)."""
    K = _module(flavor)
    L = K.layers
    K.utils.set_random_seed(0)
    i = L.Input(SHAPE, name="image")
    stem = L.ReLU(name="stem_relu")(
        L.BatchNormalization(name="stem_bn")(L.Conv2D(8, 3, padding="same", name="stem")(i))
    )
    b = L.ReLU(name="b1_relu")(
        L.BatchNormalization(name="b1_bn")(L.Conv2D(8, 3, padding="same", name="b1")(stem))
    )
    b = L.BatchNormalization(name="b2_bn")(L.Conv2D(8, 3, padding="same", name="b2")(b))
    x = L.ReLU(name="res_relu")(L.Add(name="res")([stem, b]))
    side = L.Conv2D(8, 1, name="side")(x)
    x = L.Concatenate(name="cat")([x, side])  # 16 channels: 8 of the residual group, 8 of side
    x = L.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x)
    x = L.ReLU(name="dw_relu")(L.BatchNormalization(name="dw_bn")(x))
    se = L.GlobalAveragePooling2D(name="se_gap")(x)
    se = L.Dense(4, activation="relu", name="se_down")(se)
    se = L.Dense(16, activation="sigmoid", name="se_up")(se)
    se = L.Reshape((1, 1, 16), name="se_reshape")(se)
    x = L.Multiply(name="se_mul")([x, se])
    x = L.Conv2D(8, 1, name="head_conv")(x)
    if unknown:
        x = L.LayerNormalization(name="ln")(x)
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.Flatten(name="flat")(x)
    out = L.Dense(3, name="logits")(x)
    model = K.Model(i, out, name=f"tiny_{flavor}")
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            g, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, g.shape),
                    rng.normal(0, 0.3, beta.shape),
                    rng.normal(0, 0.3, mean.shape),
                    rng.uniform(0.5, 1.5, var.shape),
                ]
            )
    return model  # fmt: skip


def _zero(model, graph, removed: np.ndarray) -> None:
    """Zero everything that makes the channels of `removed` components, so that they are 0."""
    for spec in graph.layers:
        layer = model.get_layer(spec.name)
        w = layer.get_weights()
        if not w or spec.name not in graph.atoms_out:
            continue
        out_hit = np.isin(graph.atoms_out[spec.name], removed)
        if spec.kind in cp.DEPTHWISE:
            w[0][..., out_hit, :] = 0.0
            for arr in w[1:]:
                arr[out_hit] = 0.0
        elif spec.kind in cp.PRODUCERS:
            for arr in w:
                arr[..., out_hit] = 0.0
        elif spec.kind == "BatchNormalization":
            w[0][out_hit] = 0.0
            w[1][out_hit] = 0.0
        layer.set_weights(w)


@pytest.mark.parametrize("flavor", ["keras3", "tf_keras"])
def test_groups_macs_and_exact_rebuild(flavor):
    model = tiny_net(flavor)
    graph = cp.analyze(model)
    # stem, b2 (residual add) and se_up (multiply) share one channel set; side joins through the
    # concatenation + multiply with squeeze-excite; b1 and se_down are groups of their own.
    by_first = {g.producers[0]: g for g in graph.groups}
    assert set(by_first) == {"stem", "b1", "se_down", "head_conv"} or "stem" in by_first
    resid = next(g for g in graph.groups if "b2" in g.producers)
    assert {"stem", "b2", "se_up", "side"} <= set(resid.producers)
    assert resid.channels == 16  # 8 residual channels + 8 of side, tied to the SE gate
    b1 = next(g for g in graph.groups if g.producers == ["b1"])
    assert b1.channels == 8
    assert not any(g for g in graph.groups if "logits" in g.producers)  # the model output stays
    assert graph.left_whole == []
    # MACs: conv 16x16x(3x3x3)x8 for the stem, depthwise 8x8x9x16, dense 4x4x8x3 ...
    assert graph.macs["stem"] == 16 * 16 * 27 * 8
    assert graph.macs["b1"] == 16 * 16 * 9 * 8 * 8
    assert graph.macs["dw"] == 8 * 8 * 9 * 16
    assert graph.macs["se_up"] == 4 * 16
    assert graph.macs["logits"] == 4 * 4 * 8 * 3

    x = _x()
    scores = cp.importance(model, graph, "l1")
    removed, keep = [], {}
    for g in graph.groups:
        comps = graph.group_components[g.id]
        keep[g.id] = comps[::2]
        removed.append(comps[1::2])
    _zero(model, graph, np.concatenate(removed))
    reference = np.asarray(model(x, training=False))
    mask = cp.keep_mask(graph, keep)
    slim = cp.rebuild(model, graph, mask)
    np.testing.assert_allclose(np.asarray(slim(x, training=False)), reference, atol=1e-5)
    assert slim.get_layer("b1").get_config()["filters"] == 4
    assert slim.get_layer("stem").get_config()["filters"] == 4
    assert slim.get_layer("side").get_config()["filters"] == 4
    assert slim.get_layer("se_reshape").get_config()["target_shape"][-1] == 8
    assert slim.get_layer("logits").get_config()["units"] == 3
    assert type(slim).__module__.split(".")[0] == type(model).__module__.split(".")[0]
    # zeroed channels score lowest under L1, so the ranking removes exactly them
    scores = cp.importance(model, graph, "l1")
    for g in graph.groups:
        comps = graph.group_components[g.id]
        lowest = comps[np.argsort(scores[g.id])[: len(comps) // 2]]
        assert set(lowest.tolist()) == set(comps[1::2].tolist())
    # the analytic MAC count is the rebuilt model's
    after = cp.macs_after(graph, mask)
    rebuilt = cp.analyze(slim).macs
    assert after == rebuilt


@pytest.mark.parametrize("flavor", ["keras3", "tf_keras"])
def test_channel_prune_meets_target_and_leaves_input(flavor):
    model = tiny_net(flavor, unknown=True)
    weights = [w.copy() for w in model.get_weights()]
    result = cp.channel_prune(model, target_macs=0.5, min_channels=1, multiple_of=1)
    assert result.macs_after <= 0.5 * result.macs_before
    assert result.macs_after == sum(cp.analyze(result.model).macs.values())
    assert [w.shape for w in model.get_weights()] == [w.shape for w in weights]  # untouched
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights, strict=True))
    assert result.model.count_params() < model.count_params()
    # the LayerNormalization is listed and left whole; head_conv feeds it, so it keeps all 8
    assert [w["layer"] for w in result.graph.left_whole] == ["ln"]
    assert result.model.get_layer("head_conv").get_config()["filters"] == 8
    rows = {r["layer"]: r for r in result.summary()["layers"]}
    assert rows["b1"]["channels_before"] == 8 and rows["b1"]["channels_after"] < 8
    assert rows["b1"]["macs_after"] < rows["b1"]["macs_before"]
    out = np.asarray(result.model(_x(), training=False))
    assert out.shape == (8, 3) and np.isfinite(out).all()


def test_criteria_and_recovery_tf_keras():
    model = tiny_net("keras3")
    x = _x(64, seed=3)
    teacher = np.asarray(model(x, training=False))
    for criterion in ("bn_scale", "taylor"):
        r = cp.channel_prune(
            model, target_macs=0.6, criterion=criterion, min_channels=2, multiple_of=2,
            x_calib=x[:16],
        )  # fmt: skip
        assert r.macs_after <= 0.6 * r.macs_before
    rec = cp.recover(
        r.model, x[:48], teacher[:48], None, x_val=x[48:], teacher_val=teacher[48:],
        epochs=2, batch_size=16, patience=1,
    )  # fmt: skip
    tfk = keras_compat.tf_keras()
    assert isinstance(rec.model, tfk.Model)  # Keras 3 bridged to tf-keras for training
    assert rec.bridge_max_abs_diff is not None and rec.bridge_max_abs_diff < 1e-4
    assert 1 <= rec.epochs_run <= 2 and "val_agreement" in rec.history


def _plain(flavor: str, head: str):
    K = _module(flavor)
    L = K.layers
    i = L.Input(SHAPE)
    if head == "dense_only":
        out = L.Dense(3)(L.Flatten()(i))
    else:  # a conv straight into the output
        out = L.GlobalAveragePooling2D()(L.Conv2D(3, 3)(i))
    return K.Model(i, out)


@pytest.mark.parametrize("target", [0, 1, 1.5, -0.2, True])
def test_bad_target(target):
    with pytest.raises(UsageError, match=r"target_macs .* in \(0, 1\)"):
        cp.channel_prune(_plain("tf_keras", "dense_only"), target_macs=target)


def test_nothing_to_prune_says_why():
    with pytest.raises(UnsupportedModelError, match=r"no channel group.*a model output"):
        cp.channel_prune(_plain("tf_keras", "conv_out"), target_macs=0.5)


def test_config_rejects_bad_target():
    from pydantic import ValidationError

    with pytest.raises((ValidationError, UsageError)):
        cp.ChannelPruneConfig(target_macs=1.0)


@pytest.mark.slow
def test_slim_run_through_compress(tmp_path):
    """The stage in a compress run (Keras 3 teacher): per-layer figures in the stage report, and
    every 'x faster' measured interleaved against the reference with its interval."""
    import json

    from click.testing import CliRunner

    from edgekit.cli import cli

    model = tiny_net("keras3")
    teacher = tmp_path / "tiny.keras"
    model.save(teacher)
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.integers(0, 256, (160, *SHAPE), dtype=np.uint8), y=rng.integers(0, 3, 160))
    recipe = tmp_path / "slim.yaml"
    recipe.write_text(
        "name: slim-test\nseed: 0\nlatency_runs: 20\nverify: {samples: 16}\n"
        "data: {split: {train: 0.7, val: 0.1, calib: 0.1, eval: 0.1}, max_eval_samples: 16}\n"
        "stages:\n  - {stage: channel_prune, target_macs: 0.5, min_channels: 2, multiple_of: 2,"
        " epochs: 1, batch_size: 32}\n  - {stage: export, formats: [tflite]}\n"
    )
    args = ["compress", str(teacher), "--recipe", str(recipe), "--data", str(data)]
    r = CliRunner(env={"EDGEKIT_QUIET": "1"}).invoke(
        cli, [*args, "--out", str(tmp_path / "run"), "--json"], catch_exceptions=False
    )
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    stage = next(s for s in report["stages"] if s["stage"] == "channel_prune")
    assert stage["macs_after"] <= 0.5 * stage["macs_before"]
    assert {"layer", "channels_before", "channels_after", "macs_before", "macs_after"} <= set(
        stage["layers"][0]
    )
    assert stage["recovery"]["epochs"] == 1
    for row in report["artifacts"]:
        s = row["speedup"]
        assert s["ci_low"] <= s["ratio"] <= s["ci_high"] and s["rounds"] == 20
        assert s["verdict"] in ("faster", "slower", "no measurable change")
    md = (tmp_path / "run" / "report.md").read_text()
    assert "95% CI" in md and "| layer | class | channels | MACs |" in md


def test_cli_bad_input_exit_2(tmp_path):
    """One line and exit 2: a target out of range, a model with nothing to prune."""
    from click.testing import CliRunner

    from edgekit.cli import cli

    model = _plain("keras3", "conv_out")
    path = tmp_path / "conv_out.keras"
    model.save(path)
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.integers(0, 256, (40, *SHAPE), dtype=np.uint8), y=rng.integers(0, 3, 40))
    base = ["compress", str(path), "--recipe", "slim", "--data", str(data)]
    run = CliRunner(env={"EDGEKIT_QUIET": "1"})
    r = run.invoke(
        cli, [*base, "--out", str(tmp_path / "a"), "--set", "channel_prune.target_macs=1"]
    )
    assert r.exit_code == 2 and "target_macs" in r.output and "Traceback" not in r.output
    r = run.invoke(cli, [*base, "--out", str(tmp_path / "b"), "--set", "channel_prune.epochs=0"])
    assert r.exit_code == 2, r.output
    assert "no channel group that can be pruned" in r.output and "a model output" in r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("flavor", ["keras3", "tf_keras"])
def test_recalibrate_batchnorm_takes_the_data_statistics(flavor):
    K = _module(flavor)
    model = tiny_net(flavor)
    x = _x(32, seed=5)
    assert cp.recalibrate_batchnorm(model, x, batches=2, batch_size=16) == 4
    conv = np.asarray(K.Model(model.input, model.get_layer("stem").output)(x, training=False))
    bn = model.get_layer("stem_bn")
    mean = np.asarray(bn.moving_mean)
    # two shuffled batches of 16 cover all 32 images: their average is the mean over all
    np.testing.assert_allclose(mean, conv.mean((0, 1, 2)), atol=1e-4)
    assert bn.momentum == pytest.approx(0.99)


@pytest.mark.parametrize("flavor", ["keras3", "tf_keras"])
def test_sequential_model(flavor):
    K = _module(flavor)
    L = K.layers
    model = K.Sequential(
        [L.Input(SHAPE), L.Conv2D(8, 3, name="c1"), L.BatchNormalization(name="bn"),
         L.ReLU(name="r"), L.Conv2D(8, 3, name="c2"), L.GlobalAveragePooling2D(name="gap"),
         L.Dense(3, name="out")]
    )  # fmt: skip
    result = cp.channel_prune(model, target_macs=0.5, min_channels=1, multiple_of=1)
    assert result.macs_after <= 0.5 * result.macs_before
    assert type(result.model).__name__ == "Sequential"
    assert np.asarray(result.model(_x(2), training=False)).shape == (2, 3)


def test_regrowth_favours_high_resolution_layers():
    """Rounding to 16 leaves budget after the one keep ratio; groups take channels back where a
    MAC brings the fewest weights (the high-resolution convs), not where MACs are cheapest (the
    low-resolution, weight-heavy ones that bound latency at batch 1)."""
    K = keras_compat.keras()
    L = K.layers
    K.utils.set_random_seed(0)
    i = L.Input((32, 32, 3))
    x = i
    for n, (filters, stride) in enumerate([(32, 1), (64, 2), (128, 2), (256, 2)]):
        x = L.ReLU()(L.Conv2D(filters, 3, strides=stride, padding="same", name=f"c{n}")(x))
    model = K.Model(i, L.Dense(10)(L.GlobalAveragePooling2D()(x)))
    result = cp.channel_prune(model, target_macs=0.5, min_channels=8, multiple_of=16)
    kept = {r["layer"]: r["channels_after"] / r["channels_before"] for r in result.layers}
    assert result.macs_after <= 0.5 * result.macs_before
    assert kept["c0"] > kept["c3"], kept
    graph = cp.analyze(model)
    assert graph.positions["c0"] == 32 * 32 and graph.positions["c3"] == 4 * 4
    weights = sum(graph.macs[n] / graph.positions[n] for n in graph.macs if graph.macs[n])
    assert (
        weights
        == model.count_params()
        - sum(  # kernels only: biases are not MACs
            int(np.prod(w.shape)) for layer in model.layers for w in layer.weights[1:2]
        )
    )
