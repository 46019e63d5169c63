"""Shared fine-tuning helpers for the training stages (prune, qat, distill).

All models here are tf_keras (Keras 2) models, obtained through `edgekit.keras_compat.tf_keras()`.
TensorFlow is imported inside the functions.

API
---
``copy_model(model) -> tf_keras model``
    An independent copy (new layers, same weights) of a Sequential or Functional model, so that
    training never touches the caller's model. Raises `UnsupportedModelError` for subclassed
    models and unbuilt ones.
``set_seed(seed)``
    Seed Python, NumPy and TensorFlow (tf_keras.utils.set_random_seed).
``check_training_data(model, x, y, *, what="x_train", labels_required=True) -> (x, y)``
    Validate arrays against the model (sample count, input shape, finite values, label range) and
    return them as float32 / int64 (soft targets stay float32). Raises `edgekit.errors.DataError`.
``steps_per_epoch(n, batch_size) -> int``
    Batches per epoch (the last one may be partial).
``make_dataset(x, y=None, *, batch_size, shuffle=False, seed=0, augment=None, autotune=False)
-> tf.data.Dataset``
    Batched (and optionally reshuffled each epoch, seeded) pipeline from NumPy arrays. ``y`` may be
    an array, a tuple of arrays (several targets) or None. ``augment`` maps each image batch.
    tf.data's autotuner is off unless ``autotune``: with it, Keras stalled for seconds between
    epochs (destroying each epoch's iterator waits for the autotune thread).
``augmenter(flip="none", rot90=False, seed=0) -> callable | None``
    A batch-level image augmentation (random mirror images, random quarter turns; each image of a
    batch draws its own), None when both are off. Targets pass through unchanged.
``augment_views(flip, rot90) -> list[View]``
    The distinct views (mirror, quarter turns) that `augmenter(flip, rot90)` draws, identity first;
    it draws each with the same probability. At most the eight symmetries of the square.
``apply_view(x, view) -> np.ndarray``
    One view of an (N, H, W, C) batch in NumPy, pixel for pixel what the TensorFlow side draws.
``view_augmenter(views, num_classes, seed=0) -> callable``
    Distillation with the teacher run on every view: targets are [labels (K) | the teacher's
    logits on each view (V*K)]; each image draws one of `views` and leaves with
    [labels | the teacher's logits on that very view].
``make_optimizer(name="adam", learning_rate=1e-3, *, schedule="constant", total_steps=None,
weight_decay=0.0) -> tf_keras optimizer``
    ``name`` in adam / adamw / sgd (momentum 0.9); ``schedule`` constant or cosine (decays to 0
    over ``total_steps``, which it then needs). ``weight_decay`` is passed as given (adamw's is
    decoupled; with 0 it is plain Adam).
``outputs_are_probabilities(model, x_sample) -> bool``
    True when the model's outputs are non-negative rows that sum to 1 (a softmax head).
``classification_loss(model, y, x_sample) -> tf_keras loss``
    Sparse / categorical cross-entropy matching the labels' form, ``from_logits`` set by probing the
    model's outputs.
``epoch_progress(description, epochs) -> tf_keras callback``
    One `edgekit.ui.info` line per epoch with the logged metrics and the epoch's duration.
``fit(model, x, y, *, x_val=None, y_val=None, epochs, batch_size, optimizer="adam",
learning_rate=1e-3, schedule="constant", weight_decay=0.0, loss=None, metrics=("accuracy",),
callbacks=(), seed=0, description="fine-tune", augment=None, steps_per_execution=1)
-> dict[str, list[float]]``
    Compile ``model`` (with ``loss`` or `classification_loss`) and train it with seeded shuffling
    and per-epoch progress lines; returns the Keras history as plain floats. ``model`` is trained in
    place: callers pass a copy they own.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgekit import ui
from edgekit.errors import DataError, UnsupportedModelError, UsageError, WorkerLost

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")


def _tfk() -> Any:
    from edgekit.keras_compat import tf_keras

    return tf_keras()


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow so that fine-tuning is repeatable."""
    _tfk().utils.set_random_seed(int(seed))


def require_tf_keras_model(model: Any) -> None:
    """Raise UsageError unless `model` is a built tf_keras Sequential or Functional model."""
    tfk = _tfk()
    if not isinstance(model, tfk.Model):
        raise UsageError(
            f"Expected a tf_keras model. Received an object of type {type(model).__module__}.{type(model).__name__}. "
            "Bridge Keras 3 models first with edgekit.keras_compat.to_tf_keras()."
        )
    if not (isinstance(model, tfk.Sequential) or getattr(model, "_is_graph_network", False)):
        raise UnsupportedModelError(
            f"Model {model.name!r} is a subclassed tf_keras model ({type(model).__name__}); tfmot needs a Sequential "
            "or Functional model. Rebuild it with the Functional API."
        )
    if not model.built or not model.inputs:
        raise UnsupportedModelError(
            f"Model {model.name!r} is not built (no input shape). Build it with an Input layer or model.build(shape)."
        )


def copy_model(model: Any) -> Any:
    """An independent copy of a Sequential or Functional tf_keras model: new layers, same weights."""
    require_tf_keras_model(model)
    tfk = _tfk()
    clone = tfk.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Number of batches in one epoch over `n` samples."""
    return max(1, math.ceil(n / batch_size))


def check_positive(name: str, value: float, *, integer: bool = False) -> None:
    """Raise UsageError unless `value` is > 0 (and an int when `integer`)."""
    if integer and (isinstance(value, bool) or not isinstance(value, int | np.integer)):
        raise UsageError(f"Expected {name} to be a positive integer. Received: {name}={value!r}")
    if not value > 0:
        raise UsageError(f"Expected {name} > 0. Received: {name}={value!r}")


def fraction_problem(name: str, value: Any, meaning: str, example: str) -> str | None:
    """The one-line problem when `value` is not a number in (0, 1), else None."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and 0 < value < 1:
        return None
    return f"Expected {name} ({meaning}) in (0, 1), {example}. Received: {name}={value!r}"


def check_training_data(
    model: Any,
    x: Any,
    y: Any,
    *,
    what: str = "x_train",
    labels_required: bool = True,
    output: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate `x` (and `y`) against `model`; return float32 inputs and int64 or float32 targets.

    `y` may be integer class ids of shape (N,) or (N, 1), or (soft) targets of shape (N, classes).
    For a model with several outputs, `output` is the class-score one the labels are checked
    against (unchecked without it).
    """
    label_name = "y" + what[1:] if what.startswith("x") else f"labels of {what}"
    if x is None:
        raise DataError(
            f"{what} is missing. Pass the training images as an array of shape (N, H, W, C)."
        )
    streamed = getattr(
        x, "streamed", False
    )  # edgekit.data.stream.StreamedImages: decoded per batch
    x = x if streamed else np.asarray(x)
    if x.dtype == object or not np.issubdtype(x.dtype, np.number):
        raise DataError(f"Expected {what} to be a numeric array. Received dtype {x.dtype}.")
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"{what} is empty. Pass at least one sample (shape (N, H, W, C)).")
    expected = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    if expected is not None and (
        len(expected) != x.ndim - 1
        or any(e is not None and e != s for e, s in zip(expected, x.shape[1:], strict=False))
    ):
        shown = tuple("?" if e is None else e for e in expected)
        raise DataError(
            f"Expected {what} with samples of shape {shown} (the model's input). Received: {what}.shape={x.shape}. "
            "Resize the data to the model's input size."
        )
    if streamed:
        pass  # decoded pixels through Preprocessing: finite by construction
    else:
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise DataError(
                f"{what} contains NaN or infinite values. Clean the data before fine-tuning."
            )
    if y is None:
        if labels_required:
            raise DataError(
                f"{label_name} is missing. Fine-tuning needs labels: pass integer class ids of shape (N,)."
            )
        return x, None
    y = np.asarray(y)
    if len(y) != len(x):
        raise DataError(
            f"Expected one label per sample: {what} has {len(x)} samples but {label_name} has {len(y)}. "
            "Pass arrays of the same length."
        )
    num_classes = _num_classes(model, output)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 1:
        whole = np.issubdtype(y.dtype, np.floating) and bool(np.all(np.mod(y, 1) == 0))
        if not np.issubdtype(y.dtype, np.integer) and not whole:
            raise DataError(
                f"Expected {label_name} to hold integer class ids. Received dtype {y.dtype}."
            )
        y = y.astype(np.int64)
        if y.min() < 0 or (num_classes and y.max() >= num_classes):
            raise DataError(
                f"Expected {label_name} in [0, {num_classes}) (the model has {num_classes} outputs). "
                f"Received labels from {y.min()} to {y.max()}."
            )
        return x, y
    if y.ndim == 2:
        if num_classes and y.shape[1] != num_classes:
            raise DataError(
                f"Expected {label_name} of shape (N, {num_classes}) to match the model's outputs. "
                f"Received: {label_name}.shape={y.shape}."
            )
        y = y.astype(np.float32)
        if not np.isfinite(y).all():
            raise DataError(f"{label_name} contains NaN or infinite values.")
        return x, y
    raise DataError(
        f"Expected {label_name} of shape (N,) (class ids) or (N, classes). Received: {label_name}.shape={y.shape}."
    )


def _num_classes(model: Any, output: int | None = None) -> int | None:
    shape = model.output_shape
    if isinstance(shape, list):
        if output is None:
            return None
        shape = shape[output]
    return int(shape[-1]) if shape[-1] is not None else None


def make_dataset(
    x: np.ndarray,
    y: np.ndarray | tuple[np.ndarray, ...] | None = None,
    *,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    augment: Any = None,
    autotune: bool = False,
) -> Any:
    """A batched tf.data pipeline over NumPy arrays; shuffled each epoch with `seed` when asked,
    each image batch passed through `augment` (see `augmenter`) when given. `autotune=True` turns
    tf.data's autotuner back on (only benchmarks/epoch_gaps.py does, to measure it)."""
    import tensorflow as tf

    if getattr(x, "streamed", False):
        ds = _streamed_batches(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed)
    else:
        elements: Any = x if y is None else (x, y)
        ds = tf.data.Dataset.from_tensor_slices(elements)
        if shuffle:
            ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
    if augment is not None and getattr(augment, "with_targets", False):
        ds = ds.enumerate().map(
            lambda i, b: augment(b[0], i, b[1]), num_parallel_calls=tf.data.AUTOTUNE
        )
    elif augment is not None:
        # The batch index keys the random draws (stateless, so parallel maps stay reproducible);
        # it restarts every epoch, but the reshuffle puts other images at each position.
        ds = ds.enumerate().map(
            (lambda i, xb: augment(xb, i))
            if y is None
            else (lambda i, b: (augment(b[0], i), b[1])),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    # tf.data's autotuner off: destroying an iterator (Keras makes one per epoch) waited for a
    # thread of the root iterator, the CPU idle, 2-20 s between many epochs on 2 cores; with the
    # autotuner off the waits are gone. AUTOTUNE values then take TensorFlow's static defaults,
    # and epochs run as fast (benchmarks/epoch_gaps.py).
    options = tf.data.Options()
    options.autotune.enabled = bool(autotune)
    # Under a tf.distribute strategy with several workers each takes every n-th batch (DATA):
    # in-memory and streamed sets have no files to split. One worker: no effect.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def _streamed_batches(x: Any, y: Any, *, batch_size: int, shuffle: bool, seed: int) -> Any:
    """The batches of a streamed set (`StreamedImages`): positions shuffled exactly as the
    in-memory pipeline shuffles its rows (the same permutation for a seed and size), batched,
    then each batch decoded by `x`'s PIL decoder in a parallel map (one batch per call, several
    in flight) with its targets gathered from the in-memory `y`. Images that `x` skips
    (on_corrupt=skip) leave the batch with their targets."""
    import tensorflow as tf

    n = len(x)
    _, h, w, c = x.shape
    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ys = None if y is None else (y if isinstance(y, tuple) else (y,))
    ys_np = None if ys is None else [np.asarray(a) for a in ys]
    # The pixels cross into TensorFlow as uint8 and are preprocessed there ((x - mean) / std,
    # the same float32 arithmetic as Preprocessing.apply): a quarter of the bytes through
    # numpy_function, and the arithmetic out of the Python thread that holds the GIL.
    pre = getattr(x, "preprocessing", None)
    raw = x.with_preprocessing(None) if pre is not None else x

    def load(pos: np.ndarray) -> Any:
        xb, ok = raw.decode_positions(pos)
        out = [np.ascontiguousarray(xb[ok])]
        if ys_np is not None:
            out += [a[pos[ok]] for a in ys_np]
        return out

    dtypes = [tf.uint8] + ([tf.as_dtype(a.dtype) for a in ys_np] if ys_np else [])
    if pre is not None:
        mean = tf.constant(np.asarray(pre.mean, np.float32))
        std = tf.constant(np.asarray(pre.std, np.float32))

    def fetch(pos: Any) -> Any:
        parts = tf.numpy_function(load, [pos], dtypes, stateful=False)
        xb = tf.ensure_shape(parts[0], (None, h, w, c))
        xb = (tf.cast(xb, tf.float32) - mean) / std if pre is not None else tf.cast(xb, tf.float32)
        if ys_np is None:
            return xb
        rest = [
            tf.ensure_shape(t, (None, *a.shape[1:])) for t, a in zip(parts[1:], ys_np, strict=True)
        ]
        return xb, rest[0] if len(rest) == 1 and not isinstance(y, tuple) else tuple(rest)

    # Several batches decode at once: PIL releases the GIL while it decodes.
    return ds.map(fetch, num_parallel_calls=max(2, os.cpu_count() or 2), deterministic=True)


def augmenter(flip: str = "none", rot90: bool = False, seed: int = 0) -> Any:
    """Random mirror images and quarter turns of NHWC image batches; None when both are off.

    The returned function takes a batch and its index; each image draws its own transform from a
    stateless generator keyed by (`seed`, index), so runs repeat exactly. Quarter turns need square
    images (checked by the caller).
    """
    import tensorflow as tf

    if flip not in ("none", "horizontal", "vertical", "both"):
        raise UsageError(
            f"Expected flip in none, horizontal, vertical, both. Received: flip={flip!r}"
        )
    if flip == "none" and not rot90:
        return None

    def apply(xb: Any, index: Any = 0) -> Any:
        n = tf.shape(xb)[0]
        key = tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)])
        draws = tf.random.stateless_uniform([n, 3], seed=key)

        def mask(column: int) -> Any:
            return tf.reshape(draws[:, column] < 0.5, [-1, 1, 1, 1])

        if flip in ("horizontal", "both"):
            xb = tf.where(mask(0), tf.reverse(xb, axis=[2]), xb)
        if flip in ("vertical", "both"):
            xb = tf.where(mask(1), tf.reverse(xb, axis=[1]), xb)
        if rot90:
            k = tf.cast(tf.floor(draws[:, 2] * 4.0), tf.int32)
            turns = tf.stack([tf.image.rot90(xb, i) for i in range(4)], axis=1)  # N, 4, H, W, C
            xb = tf.gather(turns, tf.minimum(k, 3), axis=1, batch_dims=1)
        return xb

    return apply


# A view of a square image: mirrored first (the width axis reversed) when view[0], then turned
# view[1] quarter turns counter-clockwise (np.rot90 / tf.image.rot90). A vertical mirror is
# (True, 2); the eight views are the symmetries of the square.
View = tuple[bool, int]


def augment_views(flip: str, rot90: bool) -> list[View]:
    """The distinct views `augmenter(flip, rot90)` draws, identity first. It draws each with the
    same probability: with quarter turns and any mirror all eight (a vertical mirror is a
    horizontal one turned twice); `both` mirrors without turns give {identity, horizontal,
    vertical, half turn}."""
    if rot90:
        mirrors = (False, True) if flip != "none" else (False,)
        return [(m, k) for m in mirrors for k in range(4)]
    views: list[View] = [(False, 0)]
    if flip in ("horizontal", "both"):
        views.append((True, 0))
    if flip in ("vertical", "both"):
        views.append((True, 2))
    if flip == "both":
        views.append((False, 2))
    return views


def apply_view(x: np.ndarray, view: View) -> np.ndarray:
    """`view` of every image of an (N, H, W, C) batch (square images when it turns)."""
    if getattr(x, "streamed", False):
        return x.with_view(view)  # applied to each batch as it is decoded
    mirror, turns = view
    if mirror:
        x = x[:, :, ::-1]
    return np.ascontiguousarray(np.rot90(x, turns, axes=(1, 2)))


def view_augmenter(views: Sequence[View], num_classes: int, seed: int = 0) -> Any:
    """Random views with the teacher's logits for the view drawn (see the module API).

    The returned function takes an image batch, its index and its targets [labels (K) | teacher
    logits per view (len(views) * K), view-major] and returns (views of the images, [labels |
    teacher logits of the view each image drew]). Draws are stateless, keyed by (`seed`, index).
    """
    import tensorflow as tf

    views = list(views)
    k, v = int(num_classes), len(views)
    if v < 1:
        raise UsageError("view_augmenter needs at least one view.")

    mirrors = tf.constant([m for m, _ in views], tf.bool)
    turns_used = sorted({t for _, t in views})  # quarter turns of the views ({0, 2} on non-square)
    turn_slot = tf.constant([turns_used.index(t) for _, t in views], tf.int32)

    def apply(xb: Any, index: Any, yb: Any) -> Any:
        n = tf.shape(xb)[0]
        key = tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)])
        drawn = tf.random.stateless_uniform([n], seed=key, minval=0, maxval=v, dtype=tf.int32)
        # Each image is mirrored or not, then turned: one mirror and one turn per quarter turn
        # in use for the whole batch, not all V views (pixel for pixel the same images).
        mirror = tf.reshape(tf.gather(mirrors, drawn), [-1, 1, 1, 1])
        xb = tf.where(mirror, tf.reverse(xb, axis=[2]), xb)
        if turns_used != [0]:
            turned = tf.stack([tf.image.rot90(xb, t) if t else xb for t in turns_used], axis=1)
            xb = tf.gather(turned, tf.gather(turn_slot, drawn), axis=1, batch_dims=1)
        teacher = tf.reshape(yb[:, k:], [n, v, k])
        return (
            xb,
            tf.concat([yb[:, :k], tf.gather(teacher, drawn, axis=1, batch_dims=1)], axis=1),
        )

    apply.with_targets = True  # type: ignore[attr-defined]
    return apply


def make_optimizer(
    name: str = "adam",
    learning_rate: float = 1e-3,
    *,
    schedule: str = "constant",
    total_steps: int | None = None,
    weight_decay: float = 0.0,
) -> Any:
    """A tf_keras optimizer by name, with a constant or cosine learning-rate schedule."""
    if name not in OPTIMIZERS:
        raise UsageError(f"Expected optimizer in {list(OPTIMIZERS)}. Received: optimizer={name!r}")
    if schedule not in SCHEDULES:
        raise UsageError(f"Expected schedule in {list(SCHEDULES)}. Received: schedule={schedule!r}")
    check_positive("learning_rate", learning_rate)
    if weight_decay < 0:
        raise UsageError(f"Expected weight_decay >= 0. Received: weight_decay={weight_decay}")
    tfk = _tfk()
    lr: Any = float(learning_rate)
    if schedule == "cosine":
        if not total_steps or total_steps < 1:
            raise UsageError(
                "The cosine schedule needs the number of training steps: pass total_steps >= 1."
            )
        lr = tfk.optimizers.schedules.CosineDecay(
            float(learning_rate), decay_steps=int(total_steps)
        )
    wd = float(weight_decay) or None
    if name == "adam":
        return tfk.optimizers.Adam(learning_rate=lr, weight_decay=wd)
    if name == "adamw":
        return tfk.optimizers.AdamW(learning_rate=lr, weight_decay=float(weight_decay))
    return tfk.optimizers.SGD(learning_rate=lr, momentum=0.9, weight_decay=wd)


def outputs_are_probabilities(model: Any, x_sample: np.ndarray, output: int = 0) -> bool:
    """True when output `output` of the model (the only one, or one of several) ends in a
    softmax: non-negative with rows summing to 1."""
    out = model(x_sample[:8], training=False)
    if isinstance(out, list | tuple):
        out = out[output]
    out = np.asarray(out)
    return bool(out.ndim == 2 and out.min() >= 0 and np.allclose(out.sum(axis=1), 1.0, atol=1e-3))


def classification_loss(model: Any, y: np.ndarray, x_sample: np.ndarray, output: int = 0) -> Any:
    """Cross-entropy for integer ids (sparse) or (soft) targets, logits or probabilities as the
    model's output `output` gives them."""
    tfk = _tfk()
    from_logits = not outputs_are_probabilities(model, x_sample, output)
    if y.ndim == 1:
        return tfk.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    return tfk.losses.CategoricalCrossentropy(from_logits=from_logits)


def epoch_progress(description: str, epochs: int) -> Any:
    """A tf_keras callback printing one `ui.info` line per epoch (metrics and seconds)."""
    tfk = _tfk()

    class _EpochProgress(tfk.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._t0 = time.perf_counter()
            ui.step(f"epoch {epoch + 1}/{epochs}")  # for the interrupt line

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            parts = [f"{k}={float(v):.4g}" for k, v in (logs or {}).items() if np.ndim(v) == 0]
            seconds = time.perf_counter() - self._t0
            ui.info(
                f"{description}: epoch {epoch + 1}/{epochs} "
                + " ".join(parts)
                + f" ({seconds:.1f} s)"
            )

    return _EpochProgress()


def _raise_if_worker_lost(exc: Exception, description: str, checkpoint_dir: Any) -> None:
    """A multi-worker collective aborted because another task stopped (killed, preempted, its
    machine lost): one line saying how to go on, instead of TensorFlow's error."""
    import tensorflow as tf

    if not isinstance(exc, tf.errors.UnavailableError) or "Collective ops" not in str(exc):
        return
    text = str(exc)
    lost = re.search(r"\(stopped sending heartbeats\):\s*(\S+)", text)
    who = f" ({lost.group(1)} stopped answering)" if lost else ""
    resume = (
        f": it resumes after its last finished epoch (checkpoints in {checkpoint_dir})"
        if checkpoint_dir
        else ""
    )
    raise WorkerLost(
        f"{description}: a task of the multi_worker run stopped{who}. Start every task again "
        f"with the same command{resume}."
    ) from None


def fit(
    model: Any,
    x: np.ndarray,
    y: np.ndarray | tuple[np.ndarray, ...],
    *,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | tuple[np.ndarray, ...] | None = None,
    epochs: int,
    batch_size: int,
    optimizer: str | Any = "adam",
    learning_rate: float = 1e-3,
    schedule: str = "constant",
    weight_decay: float = 0.0,
    loss: Any = None,
    metrics: Sequence[Any] | dict[str, Any] = ("accuracy",),
    callbacks: Sequence[Any] = (),
    seed: int = 0,
    description: str = "fine-tune",
    augment: Any = None,
    steps_per_execution: int = 1,
    teacher: Any = None,
    checkpoint_dir: Any = None,
) -> dict[str, list[float]]:
    """Compile and train `model` in place; return the history as {metric: [one float per epoch]}.

    `optimizer` is a name (see `make_optimizer`) or a ready tf_keras optimizer. `loss` defaults to
    `classification_loss`; a model with several outputs takes a list of losses, `y` a tuple of
    targets (one per output) and `metrics` a dict {output name: [metrics]}. Validation data is
    used when both `x_val` and `y_val` are given.
    `steps_per_execution` > 1 runs that many steps per call into TensorFlow (the same steps, less
    Python per step); per-batch callbacks then see one batch per call, so keep 1 with callbacks
    that act every step (tfmot's UpdatePruningStep).

    `teacher` (a graph function x -> logits) makes it online distillation: each training batch
    `y` holds the labels alone and the teacher's logits on the (augmented) batch are appended in
    the step (`online.online_distiller`); validation targets are given whole.

    `checkpoint_dir` keeps a checkpoint per epoch there (`checkpoints.resume_callbacks`): the
    same training started again after a kill resumes after its last finished epoch, and the
    history returned covers every epoch.
    """
    check_positive("epochs", epochs, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    set_seed(seed)
    steps = steps_per_epoch(len(x), batch_size)
    if isinstance(optimizer, str):
        optimizer = make_optimizer(
            optimizer,
            learning_rate,
            schedule=schedule,
            total_steps=steps * epochs,
            weight_decay=weight_decay,
        )
    if loss is None:
        if not isinstance(y, np.ndarray):
            raise UsageError("Pass `loss` when the targets are not a single label array.")
        loss = classification_loss(model, y, x)
    check_positive("steps_per_execution", steps_per_execution, integer=True)
    if teacher is not None:
        from edgekit.stages.online import online_distiller

        model = online_distiller(model, teacher)  # trains the student in place
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=dict(metrics) if isinstance(metrics, dict) else list(metrics),
        steps_per_execution=min(int(steps_per_execution), steps),
    )
    train = make_dataset(x, y, batch_size=batch_size, shuffle=True, seed=seed, augment=augment)
    val = None
    if x_val is not None and y_val is not None and len(x_val):
        val = make_dataset(x_val, y_val, batch_size=batch_size)
    ui.info(
        f"{description}: {epochs} epoch(s) of {steps} step(s), batch size {batch_size}, {len(x)} samples"
    )
    resume: list[Any] = []
    if checkpoint_dir is not None:
        from edgekit.stages.checkpoints import resume_callbacks

        resume = resume_callbacks(checkpoint_dir, list(callbacks), epochs, description)
    try:
        history = model.fit(
            train,
            validation_data=val,
            epochs=epochs,
            verbose=0,
            callbacks=[*callbacks, *resume, epoch_progress(description, epochs)],
        )
    except Exception as exc:
        # A streamed image that failed to decode inside tf.data: its one line, not TF's trace.
        for data in (x, x_val):
            failure = getattr(getattr(data, "skips", None), "failure", None)
            if failure:
                raise DataError(failure) from None
        _raise_if_worker_lost(exc, description, checkpoint_dir)
        raise
    for data in (x, x_val):
        skipped = getattr(data, "skipped", None)
        if skipped:
            ui.info(f"{description}: skipped {len(skipped)} corrupt image(s), first {skipped[0]}")
    if resume:
        return resume[1].history  # every epoch's, those before a restart included
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}
