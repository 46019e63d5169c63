"""The model a stage works on: loaded from the current artifact (any Keras flavor, a QAT .h5),
bridged to tf_keras for the tfmot stages, saved as a new artifact; export records.

Shared by the stages in this package; a stage file imports what it needs from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit import ui
from edgekit.artifacts import ModelArtifact
from edgekit.errors import UnsupportedModelError

if TYPE_CHECKING:
    from edgekit.stages.context import RunContext


def load(ctx: RunContext, model: ModelArtifact) -> Any:
    """The current model as a keras_compat.LoadedModel (a QAT model as its tf_keras model)."""
    from edgekit.keras_compat import load_model

    if model.format in ("tflite", "onnx"):
        raise UnsupportedModelError(
            f"Stage needs a Keras model or SavedModel; received a .{model.format} file ({model.path}). "
            "Start from the Keras model that produced it."
        )
    if model.precision == "qat":
        from edgekit.stages.qat_io import load_qat_model

        return load_qat_model(model.path)
    return load_model(model.path, unsafe=ctx.unsafe)


def as_tf_keras(
    ctx: RunContext, model: ModelArtifact, *, several_outputs: bool = False
) -> tuple[Any, dict[str, Any]]:
    """The model as a tf_keras model for the tfmot stages (Keras 3 bridged, outputs checked).

    A model with several outputs is refused (before any work) unless the stage trains them all
    (`several_outputs`: prune holds the non-class outputs; QAT does not)."""
    from edgekit.keras_compat import to_tf_keras

    loaded = load(ctx, model)
    if loaded.flavor == "savedmodel":
        raise UnsupportedModelError(
            f"{model.path} is a plain TensorFlow SavedModel without Keras layers; pruning and QAT need the "
            "Keras model (.keras or .h5). Export it from Keras, or use the 'quantize' recipe instead."
        )
    if len(loaded.output_names) > 1 and not several_outputs:
        # Checked before any training: quantization-aware training fine-tunes one class output.
        raise UnsupportedModelError(
            f"{Path(model.path).name} has {len(loaded.output_names)} outputs "
            f"({', '.join(loaded.output_names)}); quantization-aware training fine-tunes one class "
            "output and cannot train the others. Use the quantize recipe (post-training, every "
            "output verified) or the prune recipe (holds the other outputs), or run QAT on a "
            "single-output version of the model."
        )
    if loaded.flavor == "tf_keras":
        return loaded.model, {"bridge": "not needed (tf-keras model)"}
    result = to_tf_keras(loaded, ctx.x("val", 16))
    ui.info(f"Keras 3 -> tf-keras bridge: outputs match, max abs diff {result.max_abs_diff:.2e}")
    return result.model, {"bridge_max_abs_diff": float(result.max_abs_diff)}


def class_output_of(ctx: RunContext, loaded: Any) -> int:
    """The class-score output of `loaded`: the teacher's (recipe `class_output`) for a model with
    several outputs (the teacher, a model derived from it), the only one otherwise."""
    return ctx.class_index if len(loaded.output_names) > 1 else 0


def base_name(model: ModelArtifact) -> str:
    """The stem a stage names its files after."""
    stem = Path(model.path).stem
    return stem if stem not in ("part", "") else "model"


def save_keras(model: Any, path: Path, **metadata: Any) -> ModelArtifact:
    from edgekit.keras_compat import save_model

    save_model(model, path)
    return ModelArtifact.from_path(path, **metadata)


def verify_samples(ctx: RunContext) -> tuple[np.ndarray, np.ndarray | None]:
    """The eval samples (and labels) every export is verified on (`verify.samples` of them)."""
    n = ctx.recipe.verify.samples
    return ctx.x("eval", n), ctx.y("eval", n)


def export_record(
    path: Path,
    info: dict[str, Any],
    verification: dict[str, Any],
    source: ModelArtifact,
    precision: str,
) -> ModelArtifact:
    """The artifact of one verified export, with its conversion and verification figures."""
    return ModelArtifact.from_path(
        path,
        precision=precision,
        parameters=source.metadata.get("parameters"),
        source=Path(source.path).name,
        # the check ran in the stage's partial folder: name the file, not that path
        verification={**verification, "artifact": path.name},
        conversion={k: v for k, v in info.items() if k not in ("path",)},
    )
