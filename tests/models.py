"""Tiny model builders shared by tests (real Keras, seconds to build, no downloads).

Every builder takes `input_shape` (H, W, C) and `num_classes`, seeds its weights, and puts random
values into BatchNormalization statistics so that copying weights wrongly changes the outputs.
Keras modules come from `edgekit.keras_compat` (the only place edgekit imports them).

    from models import keras3_classifier, sample_images   # tests/ is on sys.path under pytest
    model = keras3_classifier()                  # Keras 3 functional, (16, 16, 3) -> 3 classes
    x = sample_images(8)                         # float32 in [0, 1), shape (8, 16, 16, 3)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit import keras_compat

IMAGE_SHAPE = (16, 16, 3)


def sample_images(
    n: int = 8, shape: tuple[int, int, int] = IMAGE_SHAPE, seed: int = 0
) -> np.ndarray:
    """Preprocessed model input: float32 in [0, 1), NHWC."""
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def randomize_batchnorm(model: Any, seed: int = 0) -> Any:
    """Give every BatchNormalization layer (nested ones too) non-trivial weights and statistics."""
    rng = np.random.default_rng(seed)

    def visit(layer: Any) -> None:
        for sub in getattr(layer, "layers", []):
            visit(sub)
        if type(layer).__name__ == "BatchNormalization":
            new = []
            for w in layer.get_weights():
                # gamma, beta, moving_mean, moving_variance: keep the variance positive
                new.append(rng.uniform(0.5, 1.5, w.shape).astype(np.float32))
            new[-2] = rng.normal(0.0, 0.3, new[-2].shape).astype(np.float32)
            layer.set_weights(new)

    visit(model)
    return model


def _trunk(layers: Any, x: Any, width: int = 8, prefix: str = "") -> Any:
    x = layers.Conv2D(width, 3, padding="same", name=f"{prefix}conv1")(x)
    x = layers.BatchNormalization(name=f"{prefix}bn1")(x)
    x = layers.ReLU(6.0, name=f"{prefix}relu1")(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", name=f"{prefix}dw")(x)
    x = layers.BatchNormalization(name=f"{prefix}bn2")(x)
    x = layers.Activation("relu", name=f"{prefix}relu2")(x)
    return layers.GlobalAveragePooling2D(name=f"{prefix}gap")(x)


def keras3_classifier(
    input_shape: tuple[int, int, int] = IMAGE_SHAPE,
    num_classes: int = 3,
    *,
    seed: int = 0,
    name: str = "tiny_k3",
) -> Any:
    """Keras 3 functional: conv / BN / depthwise / GAP / dense softmax."""
    keras = keras_compat.keras()
    keras.utils.set_random_seed(seed)
    inp = keras.Input(input_shape, name="image")
    x = _trunk(keras.layers, inp)
    out = keras.layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return randomize_batchnorm(keras.Model(inp, out, name=name), seed)


def tf_keras_classifier(
    input_shape: tuple[int, int, int] = IMAGE_SHAPE,
    num_classes: int = 3,
    *,
    seed: int = 0,
    name: str = "tiny_tfk",
) -> Any:
    """The same architecture as `keras3_classifier`, built with tf_keras."""
    tfk = keras_compat.tf_keras()
    tfk.utils.set_random_seed(seed)
    inp = tfk.Input(input_shape, name="image")
    x = _trunk(tfk.layers, inp)
    out = tfk.layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return randomize_batchnorm(tfk.Model(inp, out, name=name), seed)


def keras3_sequential(
    input_shape: tuple[int, int, int] = IMAGE_SHAPE, num_classes: int = 3, *, seed: int = 0
) -> Any:
    """Keras 3 Sequential classifier with Rescaling, LeakyReLU, Dropout and a logits head."""
    keras = keras_compat.keras()
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Rescaling(2.0, offset=-1.0),
            layers.Conv2D(6, 3, strides=2, use_bias=False),
            layers.BatchNormalization(),
            layers.LeakyReLU(negative_slope=0.1),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dropout(0.2),
            layers.Dense(num_classes),
        ],
        name="tiny_seq",
    )
    return randomize_batchnorm(model, seed)


def keras3_two_outputs(
    input_shape: tuple[int, int, int] = IMAGE_SHAPE, num_classes: int = 3, *, seed: int = 0
) -> Any:
    """Keras 3 functional with two outputs ("probs": num_classes, "aux": 2), a shared layer,
    a raw op (`x * 0.5`), hard_swish and a regularized, constrained Dense."""
    keras = keras_compat.keras()
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inp = keras.Input(input_shape, name="image")
    x = _trunk(layers, inp * 0.5)
    shared = layers.Dense(8, activation="hard_swish", name="shared_dense")
    a = shared(x)
    b = shared(layers.Dense(8, name="pre_aux")(x))  # the same layer called twice
    probs = layers.Dense(
        num_classes,
        activation="softmax",
        kernel_regularizer=keras.regularizers.L2(1e-4),
        kernel_constraint=keras.constraints.MaxNorm(3.0),
        name="probs",
    )(a)
    aux = layers.Dense(2, name="aux")(layers.Concatenate(name="concat")([a, b]))
    return randomize_batchnorm(keras.Model(inp, [probs, aux], name="two_outputs"), seed)


def keras3_nested(
    input_shape: tuple[int, int, int] = IMAGE_SHAPE, num_classes: int = 3, *, seed: int = 0
) -> Any:
    """Keras 3 model whose backbone is a nested, frozen functional sub-model (as in transfer
    learning), plus a nested Sequential head. Layer names repeat between the parts on purpose."""
    keras = keras_compat.keras()
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    b_in = keras.Input(input_shape, name="backbone_in")
    backbone = keras.Model(b_in, _trunk(layers, b_in), name="backbone")
    backbone.trainable = False
    head = keras.Sequential(
        [
            keras.Input((8,)),
            layers.Dense(8, activation="relu", name="gap"),
            layers.Dense(num_classes),
        ],
        name="head",
    )
    inp = keras.Input(input_shape, name="image")
    x = layers.Rescaling(0.5, offset=0.25, name="rescale")(inp)
    out = head(layers.Dropout(0.1, name="drop")(backbone(x)))
    return randomize_batchnorm(keras.Model(inp, out, name="nested"), seed)


def keras3_with_lambda(
    input_shape: tuple[int, int, int] = IMAGE_SHAPE, num_classes: int = 3
) -> Any:
    """Keras 3 model with a Lambda layer (Python code that loading must refuse unless unsafe)."""
    keras = keras_compat.keras()
    keras.utils.set_random_seed(0)
    inp = keras.Input(input_shape, name="image")
    x = keras.layers.Lambda(lambda t: t * 2.0 - 1.0, name="to_pm1")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(num_classes, name="logits")(x), name="with_lambda")


def tf_keras_with_lambda(
    input_shape: tuple[int, int, int] = IMAGE_SHAPE, num_classes: int = 3
) -> Any:
    """tf_keras counterpart of `keras3_with_lambda` (for .h5 and SavedModel files)."""
    tfk = keras_compat.tf_keras()
    tfk.utils.set_random_seed(0)
    inp = tfk.Input(input_shape, name="image")
    x = tfk.layers.Lambda(lambda t: t * 2.0 - 1.0, name="to_pm1")(inp)
    x = tfk.layers.GlobalAveragePooling2D()(x)
    return tfk.Model(inp, tfk.layers.Dense(num_classes, name="logits")(x), name="with_lambda")
