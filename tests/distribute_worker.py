"""Run in its own process by tests/test_distribute.py: 2 logical CPU devices must be configured
before TensorFlow initialises its devices, so that cannot happen inside the pytest process.

Trains the same tiny distillation with distribute=none and distribute=mirrored over the two
logical CPUs and prints one JSON line with both results."""

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


if __name__ == "__main__":
    main()
