"""The online teacher (function matching): the teacher runs inside each training step, on exactly
the augmented batch the student sees.

With the teacher's outputs cached (the default on a CPU) an augmented image is taught the logits
of an image the teacher saw once: the original, or one of the at most eight mirror/quarter-turn
views. Online, every image the student trains on (mirrored, turned, cropped, mixed with another)
is taught the teacher's answer on that very image: consistent targets for any augmentation,
which is what makes strong augmentation (mixup, random resized crops) and long schedules pay off
in distillation (Beyer et al. 2022, "Knowledge distillation: A good teacher is patient and
consistent"). It costs one teacher forward pass per training image and epoch, which a GPU
affords and a CPU rarely does.

`OnlineDistiller(student, teacher)` is a tf_keras model that trains `student` on targets
[labels (K) | teacher logits (K)], the teacher's half computed in the step; `strong_augmenter`
adds random resized crops and mixup to the mirror/turn augmentation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit.errors import UsageError


class _Frozen:
    """Holds the teacher function out of sight of tf_keras' attribute tracking, so that none
    of the teacher's variables ever becomes one of the student's (trainable or saved)."""

    def __init__(self, fn: Callable[[Any], Any]):
        self.fn = fn


def teacher_function(loaded: Any, class_index: int, probabilities: bool) -> Callable[[Any], Any]:
    """A graph function x -> the teacher's class logits (float32), for a `LoadedModel` of any
    flavor: output `class_index` of a multi-output model, log-probabilities when the model ends
    in a softmax (`probabilities`), in inference mode (batch norm on its moving statistics)."""
    import tensorflow as tf

    def fn(x: Any) -> Any:
        out = loaded(x)
        if isinstance(out, list | tuple):  # context.first_output's rule (importing it: a circle)
            out = out[class_index] if len(out) > 1 else out[0]
        out = tf.cast(out, tf.float32)
        if probabilities:
            return tf.math.log(tf.clip_by_value(out, 1e-12, 1.0))
        return out

    return fn


def online_distiller(student: Any, teacher: Callable[[Any], Any]) -> Any:
    """A tf_keras model wrapping `student` whose training step appends `teacher(x)` (no
    gradient) to the labels of each batch x, after augmentation: targets [labels | teacher].
    Validation batches pass through unchanged (they carry the teacher's cached logits already:
    the validation images are not augmented). Training it trains `student` in place; the
    wrapper holds no weights of its own, so `get_weights` / best-weight restoring see the
    student's."""
    import tensorflow as tf

    from edgekit.keras_compat import tf_keras

    tfk = tf_keras()

    class OnlineDistiller(tfk.Model):
        def __init__(self, student: Any, teacher: Callable[[Any], Any]):
            super().__init__(name=f"online_{student.name}")
            self.student = student
            self._teacher = _Frozen(teacher)

        def call(self, x: Any, training: Any = None) -> Any:
            return self.student(x, training=training)

        def train_step(self, data: Any) -> Any:
            x, y = data
            t = tf.stop_gradient(self._teacher.fn(x))
            return super().train_step((x, tf.concat([tf.cast(y, tf.float32), t], axis=1)))

    return OnlineDistiller(student, teacher)


def strong_augmenter(
    base: Callable[[Any, Any], Any] | None,
    *,
    crop: float = 1.0,
    mixup: float = 0.0,
    seed: int = 0,
) -> Callable[..., Any] | None:
    """The online teacher's augmentation of a batch and its labels: `base` (mirror images and
    quarter turns, `training.augmenter`) first, then a random resized crop per image (`crop` < 1:
    the crop keeps a random share in [crop, 1] of the image's area, aspect ratio in [3/4, 4/3],
    resized back to the image size) and mixup (`mixup` > 0: each image blended with another of
    the batch with a weight drawn from Beta(mixup, mixup), its labels blended alike). Labels
    are one-hot rows (all zero for an unlabeled image). Draws are stateless, keyed by (`seed`,
    batch index). None when nothing is asked."""
    import tensorflow as tf

    if not 0 < crop <= 1:
        raise UsageError(f"Expected 0 < crop <= 1 (the least area a crop keeps). Received: {crop}")
    if mixup < 0:
        raise UsageError(f"Expected mixup >= 0 (0 = off). Received: {mixup}")
    if base is None and crop == 1 and mixup == 0:
        return None

    def apply(xb: Any, index: Any, yb: Any) -> Any:
        if base is not None:
            xb = base(xb, index)
        n = tf.shape(xb)[0]
        key = tf.stack([tf.constant(seed + 7919, tf.int64), tf.cast(index, tf.int64)])
        if crop < 1:
            xb = _random_resized_crop(xb, crop, key)
        if mixup > 0:
            lam = _beta(mixup, n, tf.random.experimental.stateless_fold_in(key, 1))
            order = tf.argsort(
                tf.random.stateless_uniform(
                    [n], seed=tf.random.experimental.stateless_fold_in(key, 2)
                )
            )
            lam_x = tf.reshape(lam, [-1, 1, 1, 1])
            xb = lam_x * xb + (1.0 - lam_x) * tf.gather(xb, order)
            yb = tf.cast(yb, tf.float32)
            lam_y = tf.reshape(lam, [-1, 1])
            yb = lam_y * yb + (1.0 - lam_y) * tf.gather(yb, order)
        return xb, yb

    apply.with_targets = True  # type: ignore[attr-defined]
    return apply


def _beta(concentration: float, n: Any, key: Any) -> Any:
    """n draws from Beta(c, c), as X / (X + Y) of two Gamma(c) draws (stateless)."""
    import tensorflow as tf

    g = tf.random.stateless_gamma([2, n], seed=key, alpha=float(concentration))
    return g[0] / tf.maximum(g[0] + g[1], 1e-12)


def _random_resized_crop(xb: Any, least_area: float, key: Any) -> Any:
    """Per image a random box of area share in [least_area, 1] and aspect ratio in [3/4, 4/3]
    (clipped to the image), resized back to the image's size (bilinear)."""
    import tensorflow as tf

    n = tf.shape(xb)[0]
    h, w = tf.shape(xb)[1], tf.shape(xb)[2]
    u = tf.random.stateless_uniform([n, 4], seed=key)
    area = least_area + (1.0 - least_area) * u[:, 0]
    log_ratio = np.log(3 / 4) + (np.log(4 / 3) - np.log(3 / 4)) * u[:, 1]
    ratio = tf.exp(log_ratio)  # width / height, in units of the image's own sides
    bh = tf.minimum(tf.sqrt(area / ratio), 1.0)
    bw = tf.minimum(tf.sqrt(area * ratio), 1.0)
    y0 = (1.0 - bh) * u[:, 2]
    x0 = (1.0 - bw) * u[:, 3]
    boxes = tf.stack([y0, x0, y0 + bh, x0 + bw], axis=1)
    return tf.image.crop_and_resize(xb, boxes, tf.range(n), tf.stack([h, w]))
