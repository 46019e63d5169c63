"""Keras / SavedModel runner on TensorFlow (CPU or GPU, tf.function, optional XLA).

Models are loaded through edgekit.keras_compat (the only module that imports keras / tf_keras);
TensorFlow itself is imported here, inside the runner, and only when a Keras model is opened.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edgekit.errors import TargetUnavailableError
from edgekit.runtimes.base import Runner, TensorInfo


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def tf_gpus() -> list[str]:
    """GPUs TensorFlow can see (imports TensorFlow)."""
    return [d.name for d in _tf().config.list_physical_devices("GPU")]


def _set_threads(tf: Any, threads: int | None) -> bool:
    """Set TF's intra-op threads; False when TF already started and keeps its own setting."""
    if threads is None:
        return True
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        return True
    except RuntimeError:  # "cannot be modified after initialization"
        return tf.config.threading.get_intra_op_parallelism_threads() == threads


class KerasRunner(Runner):
    """A Keras 3, tf-keras or SavedModel classifier called through one tf.function."""

    format = "keras"
    runtime = "tensorflow"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        target: str = "cpu",
        threads: int | None = 1,
        xla: bool = False,
        unsafe: bool = False,
        custom_objects: dict[str, Any] | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(path, target=target, threads=threads)
        tf = _tf()
        self.runtime_version = tf.__version__
        self.threads_applied = _set_threads(tf, threads)
        if target == "gpu":
            gpus = tf.config.list_physical_devices("GPU")
            if not gpus:
                raise TargetUnavailableError(
                    "--target gpu: TensorFlow sees no GPU here (needs a CUDA GPU and "
                    "tensorflow[and-cuda]). Use --target cpu."
                )
            self.device = "/GPU:0"
        else:
            self.device = "/CPU:0"
        from edgekit import keras_compat

        with tf.device(self.device):
            self.loaded = keras_compat.load_model(
                path, unsafe=unsafe, custom_objects=custom_objects
            )
        lm = self.loaded
        self.flavor = lm.flavor
        self.xla = bool(xla)
        self.max_batch = batch_size  # run() splits dynamic-batch inputs into chunks of this size
        self.inputs = [
            TensorInfo(name=lm.input_name, shape=(lm.batch_dim, *lm.input_shape), dtype="float32")
        ]
        self.outputs = [
            TensorInfo(name=n, shape=tuple(s), dtype="float32")
            for n, s in zip(lm.output_names, lm.output_shapes, strict=True)
        ]
        self._validate_io()
        # A fresh tf.function around the model call, with XLA when asked for.
        self._fn = tf.function(
            lm.tf_function().python_function, jit_compile=self.xla, reduce_retracing=True
        )
        self._x = None
        self._y: list[Any] = []

    def _set_input(self, x: np.ndarray) -> None:
        tf = _tf()
        with tf.device(self.device):
            # The copy to the device happens here, outside the timed invoke.
            self._x = tf.identity(tf.constant(x))

    def invoke(self) -> None:
        tf = _tf()
        with tf.device(self.device):
            y = self._fn(self._x)
        self._y = y if isinstance(y, list | tuple) else [y]
        if self.device != "/CPU:0":
            # GPU kernels run asynchronously: wait for them so the time is the computation's.
            tf.test.experimental.sync_devices()

    def outputs_float(self) -> list[np.ndarray]:
        return [np.asarray(y, dtype=np.float32) for y in self._y]

    def run(self, x: Any) -> list[np.ndarray]:
        if self.max_batch and self.fixed_batch is None:
            x = self.check_input(x)
            parts = [
                super(KerasRunner, self).run(x[i : i + self.max_batch])
                for i in range(0, len(x), self.max_batch)
            ]
            return [np.concatenate([p[i] for p in parts]) for i in range(len(self.outputs))]
        return super().run(x)

    def _describe(self) -> dict[str, Any]:
        return {
            "accelerator": "GPU" if self.device.startswith("/GPU") else "CPU",
            "device": self.device,
            "flavor": self.flavor,
            "xla": self.xla,
            "delegate": f"tf.function{' + XLA' if self.xla else ''} on {self.device}",
            "threads_applied": self.threads_applied,
            "note": None
            if self.threads_applied
            else "TensorFlow was already running in this process; its thread setting was kept",
        }

    def close(self) -> None:
        self._fn = None
        self._x = None
        self._y = []
