"""Saving and loading quantization-aware (QAT) models: tfmot's quantize objects and edgekit's
fallback QuantizeConfig, which a saved QAT model refers to.

Used by the qat stage (which saves its model), by every stage that loads the current model
(`model_io.load`) and by the compress report (which measures it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit.errors import UsageError


def float_output_config_class() -> type:
    """The QuantizeConfig for layers tfmot does not support: float compute, int8-quantized output.

    Registered as "edgekit>FloatOutputQuantizeConfig" for tf_keras deserialization; load saved QAT
    models inside `qat_scope()`.
    """
    global _FLOAT_OUTPUT_CONFIG
    if _FLOAT_OUTPUT_CONFIG is not None:
        return _FLOAT_OUTPUT_CONFIG
    import tensorflow_model_optimization as tfmot

    from edgekit.keras_compat import tf_keras

    q = tfmot.quantization.keras

    class FloatOutputQuantizeConfig(q.QuantizeConfig):
        """Quantize nothing inside the layer; fake-quantize its output (asymmetric, per tensor, 8 bits)."""

        def get_weights_and_quantizers(self, layer: Any) -> list:
            return []

        def get_activations_and_quantizers(self, layer: Any) -> list:
            return []

        def set_quantize_weights(self, layer: Any, quantize_weights: list) -> None:
            pass

        def set_quantize_activations(self, layer: Any, quantize_activations: list) -> None:
            pass

        def get_output_quantizers(self, layer: Any) -> list:
            return [
                q.quantizers.MovingAverageQuantizer(
                    num_bits=8, per_axis=False, symmetric=False, narrow_range=False
                )
            ]

        def get_config(self) -> dict:
            return {}

    _FLOAT_OUTPUT_CONFIG = tf_keras().utils.register_keras_serializable(package="edgekit")(
        FloatOutputQuantizeConfig
    )
    return _FLOAT_OUTPUT_CONFIG


_FLOAT_OUTPUT_CONFIG: type | None = None


@contextlib.contextmanager
def qat_scope() -> Iterator[None]:
    """Scope for loading a saved QAT model: tfmot's quantize objects plus edgekit's fallback config."""
    import tensorflow_model_optimization as tfmot

    cls = float_output_config_class()
    with tfmot.quantization.keras.quantize_scope({"FloatOutputQuantizeConfig": cls}):
        yield


def qat_custom_objects() -> dict[str, Any]:
    """Every class a saved QAT model refers to (tfmot's quantize objects and edgekit's fallback config).

    Pass it as `custom_objects` to `keras_compat.load_model` (or use `load_qat_model`).
    """
    import tensorflow_model_optimization as tfmot

    cls = float_output_config_class()
    objects: dict[str, Any] = {}
    for d in tfmot.quantization.keras.quantize_scope().custom_objects:
        objects.update(d)
    objects.update({"FloatOutputQuantizeConfig": cls, "edgekit>FloatOutputQuantizeConfig": cls})
    return objects


def save_qat_model(model: Any, path: str | os.PathLike) -> Path:
    """Save a QAT model atomically as `.h5` or a SavedModel folder (via keras_compat.save_model).

    `.keras` is refused: tfmot's QuantizeLayer does not load back from it (its variables are
    created twice on load; tensorflow/model-optimization PR #1123, unmerged in tfmot 0.8.1).
    """
    from edgekit.keras_compat import save_model

    if Path(path).suffix.lower() == ".keras":
        raise UsageError(
            f"Cannot save a QAT model as {Path(path).name}: tfmot's quantize layers do not load back from "
            f".keras files. Use {Path(path).with_suffix('.h5').name} (or a folder name for a SavedModel)."
        )
    with qat_scope():
        return save_model(model, path)


def load_qat_model(path: str | os.PathLike) -> Any:
    """Load a QAT model saved by `save_qat_model` as a `keras_compat.LoadedModel`."""
    from edgekit.keras_compat import load_model

    with qat_scope():
        return load_model(path, custom_objects=qat_custom_objects())
