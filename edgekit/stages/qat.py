"""The qat stage: quantization-aware training with tfmot's default 8-bit scheme.

This file holds the stage's recipe config (`QatConfig`), the stage (`Qat`) and the training itself
(`qat()`, usable on its own with a tf_keras model and NumPy arrays); saving and loading QAT models
is in `edgekit.stages.qat_io`.

`qat()` takes a tf_keras model (left untouched) and returns a quantize-aware copy, fine-tuned, that
`tf.lite.TFLiteConverter` with `Optimize.DEFAULT` turns into an int8 model.

tfmot quantizes neither nested models nor layers outside its registry. Here:
- nested Functional/Sequential sub-models (an Applications backbone used as a layer) are flattened
  first: the graph is rebuilt with copies of their layers, so every layer is visible to tfmot;
- `quantize_model` is used when tfmot supports every layer. A layer it does not support is
  annotated with `FloatOutputQuantizeConfig` (float compute, int8 output) so that its neighbours
  stay int8; a layer tfmot's wrapper cannot call (a TF op with constant operands, such as the
  `x + 3` of hard-swish) is left as it is with an int8 fake-quant layer inserted after it; a layer
  with several or non-float outputs is left in float. Each is reported in
  `QatResult.unsupported_layers` with the fallback taken.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from edgekit import ui
from edgekit.artifacts import ModelArtifact
from edgekit.errors import StageError, UnsupportedModelError
from edgekit.stages import training
from edgekit.stages.base import Stage, StageConfig, StageOutput, register
from edgekit.stages.model_io import as_tf_keras, base_name
from edgekit.stages.qat_io import float_output_config_class, qat_scope, save_qat_model

if TYPE_CHECKING:
    from edgekit.stages.context import RunContext

FALLBACK_OUTPUT = (
    "computed in float; output fake-quantized to int8 so neighbouring layers stay int8"
)
FALLBACK_FAKE_QUANT_AFTER = (
    "computed in float; an int8 fake-quant inserted after it keeps the next layers int8"
)
FALLBACK_FLOAT = "left in float (no fake-quant)"
# Layers outside tfmot's registry that its layout transforms quantize (BN folded into the conv before it,
# separable convs split into depthwise + pointwise).
_TRANSFORMED = {"BatchNormalization", "SeparableConv1D", "SeparableConv2D"}
_UNSUPPORTED_RE = re.compile(r"Layer (.+?):<class")


class QatConfig(StageConfig):
    """Quantization-aware training (tfmot quantize_model); exports become int8."""

    stage: Literal["qat"] = "qat"
    epochs: int = Field(2, ge=1, description="Epochs of quantization-aware fine-tuning.")
    batch_size: int = Field(64, ge=1, description="Images per fine-tuning step.")
    learning_rate: float = Field(
        2e-4,
        gt=0,
        description="Learning rate of the fine-tuning (small: the model is trained already).",
    )


@register
class Qat(Stage):
    """Quantization-aware fine-tuning of the current model; its exports become int8."""

    name = "qat"
    config_type = QatConfig
    position = 30
    quantization_aware = True

    def needs_labels(self) -> str | None:
        return "qat"

    def run(self, ctx: RunContext, model: ModelArtifact, workdir: Path) -> StageOutput:
        tfk_model, bridge = as_tf_keras(ctx, model)
        c = self.config
        result = qat(
            tfk_model,
            ctx.x("train"),
            ctx.y("train"),
            x_val=ctx.x("val"),
            y_val=ctx.y("val"),
            epochs=c.epochs,
            batch_size=c.batch_size,
            learning_rate=c.learning_rate,
            seed=ctx.recipe.seed,
        )
        path = (
            workdir / f"{base_name(model)}_qat.h5"
        )  # tfmot's quantize layers do not reload from .keras
        save_qat_model(result.model, path)
        for u in result.unsupported_layers:
            ui.info(
                f"qat: layer {u['layer']} ({u['class']}) is not supported by tfmot; {u['fallback']}"
            )
        art = ModelArtifact.from_path(
            path, precision="qat", parameters=int(tfk_model.count_params())
        )
        return StageOutput(
            model=art,
            report={
                **bridge,
                "annotated_layers": len(result.annotated_layers),
                "unsupported_layers": result.unsupported_layers,
                "history": result.history,
            },
        )


@dataclass
class QatResult:
    """What `qat()` produced. `model` is the quantize-aware tf_keras model (convert with Optimize.DEFAULT)."""

    model: Any
    annotated_layers: list[str]
    unsupported_layers: list[dict[str, str]] = field(default_factory=list)
    flattened_models: list[str] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (everything but the model)."""
        return {
            "annotated_layers": list(self.annotated_layers),
            "unsupported_layers": [dict(u) for u in self.unsupported_layers],
            "flattened_models": list(self.flattened_models),
            "history": {k: list(v) for k, v in self.history.items()},
        }


def qat(
    model: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    epochs: int = 1,
    batch_size: int = 64,
    learning_rate: float = 2e-4,
    optimizer: str = "adam",
    lr_schedule: str = "constant",
    seed: int = 0,
) -> QatResult:
    """Make a quantize-aware copy of `model` and fine-tune it.

    Args:
        model: a built tf_keras Sequential or Functional model (left untouched).
        x_train, y_train: preprocessed float inputs and integer class ids (or (N, classes) targets).
        x_val, y_val: optional validation data, reported per epoch.
        epochs, batch_size, learning_rate, optimizer, lr_schedule: the fine-tuning (a small learning
            rate: the model is already trained, QAT only adapts it to int8 rounding).
        seed: seeds shuffling and initialisation.
    """
    training.check_positive("epochs", epochs, integer=True)
    training.check_positive("batch_size", batch_size, integer=True)
    training.require_tf_keras_model(model)
    x, y = training.check_training_data(model, x_train, y_train, what="x_train")
    val_x = val_y = None
    if x_val is not None and y_val is not None:
        val_x, val_y = training.check_training_data(model, x_val, y_val, what="x_val")

    flat, flattened = flatten_nested(model)
    if flattened:
        ui.info(
            f"qat: flattened nested model(s) {', '.join(flattened)} so tfmot can reach their layers"
        )
    loss = training.classification_loss(flat, y, x)
    qmodel, modes = quantize_layers(flat)
    history = training.fit(
        qmodel,
        x,
        y,
        x_val=val_x,
        y_val=val_y,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        learning_rate=learning_rate,
        schedule=lr_schedule,
        loss=loss,
        seed=seed,
        description="qat",
    )
    annotated, unsupported = _describe(qmodel, flat, modes)
    return QatResult(
        model=qmodel,
        annotated_layers=annotated,
        unsupported_layers=unsupported,
        flattened_models=flattened,
        history=history,
    )


def flatten_nested(model: Any) -> tuple[Any, list[str]]:
    """A copy of `model` with nested Functional/Sequential sub-models inlined, and their names.

    Without nested models this is `training.copy_model(model)`. Otherwise the graph is replayed
    with fresh copies of every layer (weights copied; shared layers stay shared); a layer whose
    name clashes with another gets its sub-model's name as a prefix. `training=` arguments given to a
    sub-model call are not kept: each layer runs in the mode Keras gives it (a frozen
    BatchNormalization, trainable=False, stays in inference mode in tf_keras).
    """
    from edgekit.keras_compat import tf_keras

    tfk = tf_keras()
    training.require_tf_keras_model(model)
    if not any(isinstance(layer, tfk.Model) for layer in model.layers):
        return training.copy_model(model), []
    return _rebuild(model)


def _rebuild(model: Any, fake_quant_after: frozenset[str] = frozenset()) -> tuple[Any, list[str]]:
    """Replay `model`'s graph with fresh layer copies: sub-models inlined, and an identity layer
    named `<layer>_fq` inserted after each layer named in `fake_quant_after`.

    Returns the new model and the names of the inlined sub-models.
    """
    from edgekit.keras_compat import tf_keras

    tfk = tf_keras()
    flattened: list[str] = []
    copies: dict[int, tuple[Any, Any]] = {}  # id(original layer) -> (original, copy)
    fq_layers: dict[int, Any] = {}
    # Top-level layers keep their names; a nested layer whose name is taken gets its sub-model's prefix.
    top_level = {id(layer) for layer in model.layers if not isinstance(layer, tfk.Model)}
    used_names: set[str] = {
        layer.name for layer in model.layers if not isinstance(layer, tfk.Model)
    }

    def unique(base: str) -> str:
        name, i = base, 1
        while name in used_names:
            name, i = f"{base}_{i}", i + 1
        used_names.add(name)
        return name

    def fresh(layer: Any, prefix: str) -> Any:
        if id(layer) in copies:
            return copies[id(layer)][1]
        config = layer.get_config()
        if id(layer) not in top_level and layer.name in used_names:
            config["name"] = unique(f"{prefix}_{layer.name}" if prefix else layer.name)
        used_names.add(config["name"])
        new = type(layer).from_config(config)
        copies[id(layer)] = (layer, new)
        return new

    def replay(graph: Any, inputs: list[Any], prefix: str) -> list[Any]:
        if not getattr(graph, "_is_graph_network", False):
            raise UnsupportedModelError(
                f"Sub-model {graph.name!r} ({type(graph).__name__}) is subclassed; tfmot cannot quantize "
                "it and edgekit cannot flatten it. Rebuild it with the Functional API."
            )
        tensors: dict[int, Any] = {id(t): v for t, v in zip(graph.inputs, inputs, strict=True)}
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                if node.is_input:
                    continue
                layer = node.layer
                args, kwargs = _map_structure(
                    lambda t: tensors.get(id(t), t), (node.call_args, node.call_kwargs)
                )
                if isinstance(layer, tfk.Model):
                    if layer.name not in flattened:
                        flattened.append(layer.name)
                    sub_inputs = _flatten(args[0] if args else next(iter(kwargs.values())))
                    out_list = replay(layer, sub_inputs, layer.name)
                else:
                    outputs = fresh(layer, prefix)(*args, **kwargs)
                    if layer.name in fake_quant_after:
                        if id(layer) not in fq_layers:
                            fq_layers[id(layer)] = tfk.layers.Activation(
                                "linear", name=unique(f"{layer.name}_fq")
                            )
                        outputs = fq_layers[id(layer)](outputs)
                    out_list = _flatten(outputs)
                for ref, value in zip(_flatten(node.outputs), out_list, strict=True):
                    tensors[id(ref)] = value
        return [tensors[id(t)] for t in graph.outputs]

    new_inputs = []
    for t in model.inputs:
        name = t._keras_history.layer.name
        new_inputs.append(tfk.Input(shape=t.shape[1:], dtype=t.dtype, name=name))
    outputs = replay(model, new_inputs, "")
    rebuilt = tfk.Model(new_inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)
    for old, new in copies.values():
        if old.weights:
            new.set_weights(old.get_weights())
    return rebuilt, flattened


def _flatten(structure: Any) -> list[Any]:
    import tensorflow as tf

    return list(tf.nest.flatten(structure))


def _map_structure(fn: Any, structure: Any) -> Any:
    import tensorflow as tf

    return tf.nest.map_structure(fn, structure)


def quantize_layers(flat: Any) -> tuple[Any, dict[str, str]]:
    """Quantize-aware copy of a flat model; returns it and each original layer's mode.

    Modes: "default" (tfmot's 8-bit config); "output" (FloatOutputQuantizeConfig: float compute,
    int8 output); "float+fq" (not wrappable, e.g. a TF op with constant operands: left as it is, with
    an int8 fake-quant layer inserted after it); "float" (left as it is). `quantize_model` is used
    when every layer is "default"; each layer tfmot rejects is demoted default -> output -> float and
    the quantization retried.
    """
    import tensorflow_model_optimization as tfmot

    from edgekit.keras_compat import tf_keras

    tfk = tf_keras()
    q = tfmot.quantization.keras
    registry = q.default_8bit.Default8BitQuantizeRegistry()
    config_cls = float_output_config_class()
    layers = [layer for layer in flat.layers if not isinstance(layer, tfk.layers.InputLayer)]
    modes: dict[str, str] = {}
    for layer in layers:
        if registry.supports(layer) or type(layer).__name__ in _TRANSFORMED:
            modes[layer.name] = "default"
        else:
            modes[layer.name] = _fallback_mode(layer)
    if not any(m == "default" for m in modes.values()):
        raise UnsupportedModelError(
            f"Model {flat.name!r} has no layer tfmot can quantize "
            f"(classes: {sorted({type(la).__name__ for la in layers})})."
        )

    for _ in range(len(layers) + 1):
        fq = frozenset(n for n, m in modes.items() if m == "float+fq")
        graph = _rebuild(flat, fake_quant_after=fq)[0] if fq else flat
        inserted = {f"{n}_fq" for n in fq}

        def annotate(layer: Any, inserted: set[str] = inserted, modes: dict = modes) -> Any:
            mode = "output" if layer.name in inserted else modes.get(layer.name, "float")
            if mode == "default":
                return q.quantize_annotate_layer(layer)
            if mode == "output":
                return q.quantize_annotate_layer(layer, quantize_config=config_cls())
            return layer

        try:
            with qat_scope(), _lambda_clones_allowed(tfk):
                if all(m == "default" for m in modes.values()):
                    return q.quantize_model(graph), modes
                annotated = tfk.models.clone_model(graph, clone_function=annotate)
                return q.quantize_apply(annotated), modes
        except RuntimeError as e:
            match = _UNSUPPORTED_RE.search(str(e))
            name = match.group(1) if match else None
            if name not in modes or modes[name] != "default":
                raise StageError(
                    f"tfmot could not quantize model {flat.name!r}: {_one_line(e)}"
                ) from e
            modes[name] = _fallback_mode(flat.get_layer(name))
        except (ValueError, TypeError) as e:
            # Wrapping a layer in FloatOutputQuantizeConfig failed in a way tfmot does not
            # attribute: leave all such layers unwrapped (fake-quant after them), once.
            if "output" not in modes.values():
                raise StageError(
                    f"tfmot could not quantize model {flat.name!r}: {_one_line(e)}"
                ) from e
            modes = {k: ("float+fq" if m == "output" else m) for k, m in modes.items()}
    raise StageError(f"tfmot could not quantize model {flat.name!r}: no layer assignment worked.")


def _lambda_clones_allowed(tfk: Any) -> contextlib.AbstractContextManager:
    """Let tfmot rebuild Lambda layers whose Python code is already in this process.

    tfmot's layout transform rebuilds the model with `Model.from_config`, which tf_keras runs in safe
    mode, refusing Lambda code. The model is in memory (whoever loaded it from a file already
    allowed its code), so cloning it runs nothing new.
    """
    lib = getattr(getattr(getattr(tfk, "src", None), "saving", None), "serialization_lib", None)
    scope = getattr(lib, "SafeModeScope", None)
    return scope(False) if scope is not None else contextlib.nullcontext()


def _fallback_mode(layer: Any) -> str:
    """How to keep a layer tfmot does not support in float while its neighbours stay int8."""
    nodes = layer._inbound_nodes
    if not nodes or not all(_one_float_output(n) for n in nodes):
        return "float"
    if all(_one_input_argument(n) for n in nodes):
        return "output"
    return "float+fq"


def _one_input_argument(node: Any) -> bool:
    """The layer was called as layer(x) or layer([x, y, ...]): tfmot's wrapper can call it so."""
    import tensorflow as tf

    if node.call_kwargs or len(node.call_args) != 1:
        return False
    arg = node.call_args[0]
    parts = arg if isinstance(arg, list | tuple) else [arg]
    return (
        bool(parts) and all(tf.is_tensor(t) for t in parts) and len(node.keras_inputs) == len(parts)
    )


def _one_float_output(node: Any) -> bool:
    outputs = _flatten(node.outputs)
    return len(outputs) == 1 and outputs[0].dtype.is_floating


def _describe(
    qmodel: Any, flat: Any, modes: dict[str, str]
) -> tuple[list[str], list[dict[str, str]]]:
    """Annotated layer names (from the QAT model itself) and the unsupported ones with their fallback."""
    import tensorflow_model_optimization as tfmot

    config_cls = float_output_config_class()
    wrapper_cls = tfmot.quantization.keras.QuantizeWrapper
    annotated = []
    output_only = set()
    for layer in qmodel.layers:
        if isinstance(layer, wrapper_cls):
            if isinstance(layer.quantize_config, config_cls):
                output_only.add(layer.layer.name)
            else:
                annotated.append(layer.layer.name)
    unsupported = []
    for name, mode in modes.items():
        if mode == "default":
            continue
        if name in output_only:
            fallback = FALLBACK_OUTPUT
        elif f"{name}_fq" in output_only:
            fallback = FALLBACK_FAKE_QUANT_AFTER
        else:
            fallback = FALLBACK_FLOAT
        unsupported.append(
            {"layer": name, "class": type(flat.get_layer(name)).__name__, "fallback": fallback}
        )
    return annotated, unsupported


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:400]
