"""Run in its own process by tests/test_distribute.py: 2 logical CPU devices must be configured
before TensorFlow initialises its devices, so that cannot happen inside the pytest process.

Trains the same tiny distillation with distribute=none and distribute=mirrored over the two
logical CPUs and prints one JSON line with both results; with the argument `finetune`, the
same for prune and qat."""

from __future__ import annotations

import json
import sys

import numpy as np


def main() -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    from edgekit.stages.distill import DistillConfig, distill

    rng = np.random.default_rng(0)
    n, k = 96, 3
    y = rng.integers(0, k, n)
    # Class c: a bright square in quadrant c, on noise: learnable in a few epochs.
    x = rng.normal(0.0, 0.1, (n, 16, 16, 1)).astype(np.float32)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, r * 8 : r * 8 + 8, col * 8 : col * 8 + 8] += 1.0
    teacher = np.eye(k, dtype=np.float32)[y] * 6.0 - 3.0
    split = 64
    out = {}
    for mode, devices, batch in (("none", None, 16), ("mirrored", ["/cpu:0", "/cpu:1"], 8)):
        config = DistillConfig.model_validate(
            {
                "student": {"arch": "mobilenet_v2", "width": 0.35, "input_size": 32},
                "epochs": 8,
                "batch_size": batch,
                "optimizer": {"learning_rate": 2e-3, "schedule": "constant"},
                "early_stopping": {"enabled": False},
                "distribute": mode,
                "devices": devices,
            }
        )
        result = distill(
            config,
            x[:split],
            teacher[:split],
            y[:split],
            x_val=x[split:],
            teacher_val=teacher[split:],
            y_val=y[split:],
            seed=0,
        )
        pred = result.model.predict(x[split:], verbose=0).argmax(-1)
        out[mode] = {
            "distribution": result.distribution,
            "val_accuracy": float((pred == y[split:]).mean()),
            "loss": result.history["loss"][-1],
            "first_loss": result.history["loss"][0],
        }
    print("RESULT " + json.dumps(out))
    sys.stdout.flush()


def finetune() -> None:
    """prune of a tiny trained conv net with distribute=none and mirrored over the two logical
    CPUs; one JSON line with both. (qat trains on one device: tfmot's QAT has no tf.distribute
    support.)"""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    from edgekit.keras_compat import tf_keras
    from edgekit.stages.prune import prune

    tfk = tf_keras()
    rng = np.random.default_rng(0)
    n, k = 128, 3
    y = rng.integers(0, k, n)
    x = rng.normal(0.0, 0.1, (n, 16, 16, 1)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, :, int(c) * 5 : int(c) * 5 + 5] += 1.0  # class c: a bright band in third c
    tfk.utils.set_random_seed(0)
    inp = tfk.Input((16, 16, 1))
    h = tfk.layers.Conv2D(8, 3, activation="relu")(inp)
    h = tfk.layers.Flatten()(h)  # where the band lies is the class
    model = tfk.Model(inp, tfk.layers.Dense(k)(h))
    model.compile("adam", tfk.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=20, batch_size=32, verbose=0)
    out = {}
    for mode, devices, batch in (("none", None, 32), ("mirrored", ["/cpu:0", "/cpu:1"], 16)):
        p = prune(model, x, y, target_sparsity=0.5, epochs=2, batch_size=batch,
                  distribute=mode, devices=devices)  # fmt: skip
        pred = np.asarray(p.model.predict(x, verbose=0)).argmax(-1)
        out[mode] = {
            "distribution": p.distribution,
            "sparsity": p.overall_sparsity,
            "loss": p.history["loss"],
            "accuracy": float((pred == y).mean()),
        }
    print("RESULT " + json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    finetune() if sys.argv[1:] == ["finetune"] else main()
