"""One conversion and its verification, as the export/quantize stages and `edgekit export` do them.

    info, precision = convert_one(loaded, "tflite", "int8", path, calibration=calib)
    verification = verify_one(path, reference_outputs, x, y, precision=precision, verify=Verification())

`convert_one` imports TensorFlow (through the converters); `verify_one` never does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import UsageError

FORMATS = ("tflite", "onnx")
# Modes ONNX gets: float ("none"), a QAT model's fake-quant graph ("qat"), and ONNX
# Runtime's own int8 (static QDQ) and dynamic quantization.
ONNX_MODES = ("none", "qat", "int8", "dynamic")


def precision_of(fmt: str, mode: str) -> str:
    """The `precision` recorded for an export (ModelArtifact.precision, check_export)."""
    from edgekit.export.tflite import PRECISION

    if fmt == "onnx" and mode == "qat":
        # The fake-quant graph simulates int8 (QuantizeLinear/DequantizeLinear pairs); ORT and TF
        # round values on a step boundary differently, so it is judged like a quantized model.
        return "int8"
    return PRECISION[mode]


def convert_one(
    loaded: Any,
    fmt: str,
    mode: str,
    path: str | os.PathLike,
    *,
    calibration: np.ndarray | None = None,
    calibration_samples: int = 300,
    io_type: str = "float32",
    per_channel: bool = True,
    reduce_range: bool = True,
    opset: int | None = None,
    allow_select_tf_ops: bool = False,
    float_onnx: str | os.PathLike | None = None,
    route: str = "auto",
) -> tuple[dict[str, Any], str]:
    """Convert `loaded` to `path` in one format and quantization mode; returns (info, precision).

    fmt: "tflite" or "onnx". mode: "none", "dynamic", "float16", "int8", "int16x8" or "qat"
        (ONNX: see ONNX_MODES).
    calibration: preprocessed float32 samples for "int8" / "int16x8".
    float_onnx: where the float ONNX model that ONNX quantization starts from is (written there
        first when missing, so several ONNX modes can share it).
    route: "auto" (edgekit's converter, then Keras 3's own exporter if it fails), "edgekit" or
        "keras" (see `tflite.convert`); the info's `route` names the one used.
    """
    from edgekit.export import onnx as onnx_export
    from edgekit.export import tflite as tflite_export

    if fmt not in FORMATS:
        raise UsageError(f"Expected a format in {', '.join(FORMATS)}. Received: {fmt!r}")
    precision = precision_of(fmt, mode) if mode in tflite_export.PRECISION else None
    if precision is None:
        raise UsageError(
            f"Expected a quantization in {', '.join(tflite_export.QUANTIZATIONS)}. Received: {mode!r}"
        )
    if fmt == "tflite":
        kwargs: dict[str, Any] = {"quantization": mode, "route": route}
        if mode in ("none", "qat"):
            kwargs["allow_select_tf_ops"] = allow_select_tf_ops
        else:
            kwargs.update(
                calibration=calibration,
                calibration_samples=calibration_samples,
                io_type=io_type if mode == "int8" else "float32",
                per_channel=per_channel,
            )
        return tflite_export.convert(loaded, path, **kwargs), precision
    if mode not in ONNX_MODES:
        raise UsageError(
            f"ONNX exports are float32, int8 or dynamic; {mode} exists for TFLite only. "
            "Use --format tflite (or --quantize int8 / dynamic for ONNX)."
        )
    opts: dict[str, Any] = {"route": route} if opset is None else {"opset": opset, "route": route}
    if mode in ("none", "qat"):
        return onnx_export.convert(loaded, path, **opts), precision
    if float_onnx is None:
        raise UsageError("ONNX quantization needs a path for the float ONNX model (float_onnx).")
    if not Path(float_onnx).exists():
        onnx_export.convert(loaded, float_onnx, **opts)
    if mode == "int8":
        info = onnx_export.quantize_int8(
            float_onnx, path, calibration, per_channel=per_channel, reduce_range=reduce_range
        )
    else:  # ORT quantizes MatMul/Gemm only: its dynamic Conv kernel lacks int8 weights
        info = onnx_export.quantize_dynamic(float_onnx, path, reduce_range=reduce_range)
    return info, precision


def verify_one(
    path: str | os.PathLike,
    reference: np.ndarray,
    x: np.ndarray,
    y: np.ndarray | None,
    *,
    precision: str,
    verify: Any,
    labels: list[str] | None = None,
    unverifiable: str = "raise",
    loaded: Any = None,
    class_output: int | str | None = None,
) -> dict[str, Any]:
    """`validate.check_export` with a recipe's `verify:` tolerances (edgekit.recipes.Verification):
    float16 exports get `float16_atol`, every other float export `float_atol`.

    loaded: the reference model (a keras_compat.LoadedModel), which names the outputs in messages
        and the layer of a node a runtime refuses; class_output: the output holding the class
        scores (name or index; default the first).
    """
    from edgekit.export.validate import check_export

    return check_export(
        path,
        reference,
        x,
        y,
        precision=precision,
        labels=labels,
        float_atol=verify.float16_atol if precision == "float16" else verify.float_atol,
        min_agreement=verify.min_agreement,
        unverifiable=unverifiable,  # type: ignore[arg-type]
        output_names=list(loaded.output_names) if loaded is not None else None,
        class_output=class_output,
        layer_names=layer_names(loaded) if loaded is not None else None,
    )


def layer_names(loaded: Any) -> list[str] | None:
    """Every layer name of a Keras model, nested models included (None for a SavedModel)."""
    if getattr(loaded, "flavor", None) not in ("keras3", "tf_keras"):
        return None
    names: list[str] = []

    def visit(layer: Any) -> None:
        names.append(str(layer.name))
        for sub in getattr(layer, "layers", None) or []:
            visit(sub)

    visit(loaded.model)
    return names


def class_index(loaded: Any, class_output: int | str | None) -> int:
    """The index of the class-score output (`--output NAME`); 0 by default."""
    from edgekit.export.validate import _class_index

    return _class_index(class_output, [str(n) for n in loaded.output_names])
