"""A tiny digits classifier that int8 hurts: one layer's activations carry an outlier channel.

The network is trained for a few seconds on the built-in 8x8 digits; then one channel of the
`spiky` convolution is scaled up K times and the `mix` convolution that reads it scaled down K
times. The float model computes the same function (ReLU is positively homogeneous), but the
`spiky` output now spans K times its former range, so one int8 scale for the whole tensor leaves
the other channels a handful of levels: int8 loses accuracy, and keeping `spiky` and `mix` (the
two ops that touch that tensor) in float recovers it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = "digits:size=8"  # the built-in 8x8 digits (RGB), what the tests pass as --data
FIXTURE = Path(__file__).parent / "fixtures" / "tune_outlier.keras"


def build_outlier_model(folder: Path, *, k: float = 1000.0, epochs: int = 15, seed: int = 0):
    """Save the model as `folder`/m.keras; return its path."""
    from edgekit import keras_compat
    from edgekit.data import load_dataset

    tk = keras_compat.tf_keras()
    tk.utils.set_random_seed(seed)
    ds = load_dataset(DATA)
    x = ds.x.astype(np.float32) / 255.0
    inp = tk.Input(ds.image_shape)
    h = tk.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    h = tk.layers.Conv2D(8, 3, padding="same", activation="relu", name="spiky")(h)
    h = tk.layers.Conv2D(8, 1, activation="relu", name="mix")(h)
    h = tk.layers.Flatten(name="flat")(h)
    out = tk.layers.Dense(ds.num_classes, name="head")(h)
    m = tk.Model(inp, out)
    m.compile(
        tk.optimizers.Adam(3e-3),
        tk.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    m.fit(x, ds.y, epochs=epochs, batch_size=32, verbose=0)
    print("float accuracy", m.evaluate(x, ds.y, verbose=0))
    w, b = m.get_layer("spiky").get_weights()
    w[..., 0] *= k
    b[0] *= k
    m.get_layer("spiky").set_weights([w, b])
    w2, b2 = m.get_layer("mix").get_weights()
    w2[:, :, 0, :] /= k  # mix reads channel 0 K times larger: undo it
    m.get_layer("mix").set_weights([w2, b2])
    mp = Path(folder) / "m.keras"
    bare = tk.models.clone_model(m)  # uncompiled: no optimizer state in the file
    bare.set_weights(m.get_weights())
    bare.save(mp)
    return mp


if __name__ == "__main__":  # rebuild the committed fixture: python tests/tune_models.py
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        shutil.copy(build_outlier_model(Path(d)), FIXTURE)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")
