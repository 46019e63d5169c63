"""Keras / SavedModel -> ONNX (tf2onnx) and ONNX post-training quantization (ONNX Runtime).

`convert` imports TensorFlow and tf2onnx; `quantize_int8`, `quantize_dynamic` and `inspect_onnx`
only need onnx / onnxruntime and work on any float `.onnx` file.

Default int8 settings (QDQ, activations QUInt8, weights QInt8 per channel, reduce_range=True) are
ONNX Runtime's own advice for x86 CPUs without VNNI: ORT runs 8-bit Conv/MatMul there with
VPMADDUBSW, which adds two u8*s8 products in a saturating int16; 7-bit weights keep that sum in
range. docs/export.md gives the full reasoning.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgekit.artifacts import atomic_path
from edgekit.errors import ModelLoadError, UnsupportedModelError, UsageError

QuantFormat = Literal["QDQ", "QOperator"]
QType = Literal["QInt8", "QUInt8"]
CalibrateMethod = Literal["MinMax", "Entropy", "Percentile"]

_STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
ROUTE_NAMES = {
    "edgekit": "edgekit (frozen inference graph -> tf2onnx, edgekit's op handlers)",
    "keras": "keras (Keras 3 model.export(format='onnx'))",
}
_CALIB_BATCH = 16


def convert(
    loaded: Any,
    out_path: str | os.PathLike,
    *,
    opset: int = 17,
    input_name: str | None = None,
    route: str = "auto",
) -> dict[str, Any]:
    """Convert a loaded model (`edgekit.keras_compat.LoadedModel`) to a float32 `.onnx` file.

    Goes through the model's frozen concrete function (tf2onnx's `from_keras` does not handle
    Keras 3 models) with an explicit input signature whose batch dimension is dynamic.

    Args:
        loaded: the model (Keras 3, tf_keras or SavedModel flavour).
        out_path: where to write the `.onnx` file (atomically).
        opset: ONNX opset, 13 to 21.
        input_name: the graph input's name (default: the model's input name, cleaned).
        route: "edgekit" (the frozen inference graph through tf2onnx, with edgekit's op
            handlers), "keras" (Keras 3's own `model.export(format="onnx")`, Keras 3 models
            only) or "auto" (edgekit's, then Keras' when edgekit's fails). `route` in the
            report says which made the file.

    Returns:
        A dict: path, format, size_bytes, precision, opset, producer, inputs, outputs, op_types.
    """
    if not isinstance(opset, int) or not 13 <= opset <= 21:
        raise UsageError(f"Expected opset between 13 and 21. Received: opset={opset!r}")
    from edgekit.export.tflite import ROUTES, _keras_exportable

    if route not in ROUTES:
        raise UsageError(f"Expected route in {', '.join(ROUTES)}. Received: route={route!r}")
    if route == "keras" and not _keras_exportable(loaded):
        raise UsageError(
            "route='keras' uses Keras 3's model.export(format='onnx'), which needs a Keras 3 "
            f"model; this is a {loaded.flavor} model. Use route='edgekit'."
        )

    import tensorflow as tf
    import tf2onnx

    notes: list[str] = []
    used = route
    if route != "keras":
        try:
            model = _checked(_edgekit_route(loaded, opset, input_name))
            used = "edgekit"
        except UnsupportedModelError as e:
            if route == "edgekit" or not _keras_exportable(loaded):
                raise
            try:
                model = _checked(_keras_route(loaded, opset, input_name))
            except UnsupportedModelError as e2:
                raise UnsupportedModelError(f"{e} Keras' own exporter failed too: {e2}") from e
            used = "keras"
            notes.append(f"edgekit's route failed ({e}); Keras' own ONNX exporter made the file.")
    else:
        model = _checked(_keras_route(loaded, opset, input_name))

    # Which route made the graph travels with the file (quantized models made from it say so).
    entry = model.metadata_props.add()
    entry.key, entry.value = "edgekit_route", ROUTE_NAMES[used]
    data = model.SerializeToString()
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(data)
    info = inspect_onnx(out_path)
    return {
        "path": str(out_path),
        "format": "onnx",
        "size_bytes": len(data),
        "precision": "float32",
        "converter": f"tf2onnx {tf2onnx.__version__}, tensorflow {tf.__version__}",
        "route": ROUTE_NAMES[used],
        "notes": notes,
        **info,
    }


def _edgekit_route(loaded: Any, opset: int, input_name: str | None) -> Any:
    import tf2onnx

    from edgekit.export.tflite import serving_function

    serve = serving_function(loaded, input_name=input_name)
    spec = serve.input_signature[0]
    graph_def, in_names, out_names = _inference_graph(serve)
    try:
        with _quiet_logger():
            model, _ = tf2onnx.convert.from_graph_def(
                graph_def,
                input_names=in_names,
                output_names=out_names,
                opset=opset,
                custom_op_handlers=_custom_op_handlers(),
            )
    except Exception as e:
        raise UnsupportedModelError(f"ONNX conversion (tf2onnx) failed: {_one_line(e)}") from e
    _rename_io(model, [spec.name], [f"output_{i}" for i in range(len(model.graph.output))])
    return model


def _keras_route(loaded: Any, opset: int, input_name: str | None) -> Any:
    import onnx

    from edgekit.export.tflite import _tensor_name

    with tempfile.TemporaryDirectory(prefix="edgekit-keras-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            with _quiet_logger():
                loaded.model.export(str(path), format="onnx", opset_version=opset, verbose=False)
            model = onnx.load(str(path))
        except Exception as e:
            raise UnsupportedModelError(
                f"Keras' ONNX export failed: {type(e).__name__}: {_one_line(e)}"
            ) from e
    name = _tensor_name(input_name or getattr(loaded, "input_name", None) or "input")
    _rename_io(model, [name], [f"output_{i}" for i in range(len(model.graph.output))])
    return model


def _checked(model: Any) -> Any:
    """The converted model, refused when it holds ops ONNX lacks or does not validate."""
    import onnx

    # tf2onnx keeps going past ops it cannot convert and leaves the TensorFlow op in the graph.
    unknown = sorted(
        {
            n.op_type
            for n in model.graph.node
            if n.domain not in _STANDARD_DOMAINS
            or (n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type))
        }
    )
    if unknown:
        raise UnsupportedModelError(
            f"ONNX conversion found TensorFlow ops with no ONNX equivalent: {', '.join(unknown)}. "
            "Replace the layer with standard ops, or export TFLite only (formats: [tflite])."
        )
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise UnsupportedModelError(f"The converted ONNX model is invalid: {_one_line(e)}") from e
    return model


def quantize_int8(
    float_onnx_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: np.ndarray,
    *,
    per_channel: bool = True,
    reduce_range: bool = True,
    quant_format: QuantFormat = "QDQ",
    activation_type: QType = "QUInt8",
    weight_type: QType = "QInt8",
    calibrate_method: CalibrateMethod = "MinMax",
    calibration_samples: int | None = None,
    preprocess: bool = True,
) -> dict[str, Any]:
    """Static int8 quantization of a float `.onnx` model with ONNX Runtime.

    Args:
        float_onnx_path: the float32 model (from `convert`).
        out_path: where to write the quantized `.onnx` (atomically).
        calibration: preprocessed float32 samples (N, H, W, C), fed in batches of 16.
        per_channel: one weight scale per output channel (better accuracy, same speed on CPU).
        reduce_range: 7-bit weights; avoids U8S8 saturation on x86 AVX2/AVX-512 without VNNI.
        quant_format: "QDQ" (QuantizeLinear/DequantizeLinear pairs; ORT's recommended format)
            or "QOperator" (QLinearConv etc.).
        activation_type: "QUInt8" (default; ORT's advice for x86) or "QInt8".
        weight_type: "QInt8" (default) or "QUInt8".
        calibrate_method: "MinMax", "Entropy" or "Percentile".
        calibration_samples: use at most this many samples (default: all of `calibration`).
        preprocess: run ORT's quant_pre_process (shape inference, graph optimisation) first.

    Returns:
        A dict: path, format, size_bytes, precision="int8", the settings used, quantized node
        counts, weight/activation dtypes, and the `inspect_onnx` fields.
    """
    from onnxruntime import quantization as oq

    src = _check_onnx_path(float_onnx_path)
    formats = {"QDQ": oq.QuantFormat.QDQ, "QOperator": oq.QuantFormat.QOperator}
    qtypes = {"QInt8": oq.QuantType.QInt8, "QUInt8": oq.QuantType.QUInt8}
    methods = {
        "MinMax": oq.CalibrationMethod.MinMax,
        "Entropy": oq.CalibrationMethod.Entropy,
        "Percentile": oq.CalibrationMethod.Percentile,
    }
    _check_choice("quant_format", quant_format, formats)
    _check_choice("activation_type", activation_type, qtypes)
    _check_choice("weight_type", weight_type, qtypes)
    _check_choice("calibrate_method", calibrate_method, methods)

    before = inspect_onnx(src)
    input_info = before["inputs"][0]
    calib = _check_calibration(calibration, input_info["shape"], calibration_samples)

    with tempfile.TemporaryDirectory(prefix="edgekit-onnxq-") as tmp:
        model_in = src
        notes: list[str] = []
        if preprocess:
            pre = Path(tmp) / "pre.onnx"
            try:
                # Symbolic shape inference needs sympy (not a dependency) and helps transformers,
                # not CNNs; ONNX shape inference and ORT's graph optimisation do the work here.
                oq.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                model_in = pre
            except Exception as e:
                notes.append(f"quant_pre_process skipped ({_one_line(e)[:120]})")
        reader = _CalibrationReader(input_info["name"], calib)
        try:
            with atomic_path(out_path) as dst, _quiet_logger(""):
                oq.quantize_static(
                    str(model_in),
                    str(dst),
                    reader,
                    quant_format=formats[quant_format],
                    per_channel=per_channel,
                    reduce_range=reduce_range,
                    activation_type=qtypes[activation_type],
                    weight_type=qtypes[weight_type],
                    calibrate_method=methods[calibrate_method],
                )
        except UsageError:
            raise
        except Exception as e:
            raise UnsupportedModelError(f"ONNX int8 quantization failed: {_one_line(e)}") from e

    info = inspect_onnx(out_path)
    if not info["quantized_nodes"]:
        raise UnsupportedModelError(
            "ONNX int8 quantization quantized no node (no Conv/MatMul/Gemm found). "
            "Keep the float ONNX model for this architecture."
        )
    return {
        "path": str(out_path),
        "format": "onnx",
        "size_bytes": Path(out_path).stat().st_size,
        "precision": "int8",
        "quant_format": quant_format,
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "activation_type": activation_type,
        "weight_type": weight_type,
        "calibrate_method": calibrate_method,
        "calibration_samples": len(calib),
        "source": str(src),
        "notes": notes,
        **info,
        "route": before.get("route"),
    }


def quantize_dynamic(
    float_onnx_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    per_channel: bool = False,
    reduce_range: bool = True,
    op_types: tuple[str, ...] = ("MatMul", "Gemm"),
) -> dict[str, Any]:
    """Dynamic-range quantization (int8 weights, activations quantized at run time) with ORT.

    Only MatMul/Gemm by default: ORT's CPU ConvInteger kernel takes uint8 weights only, so
    dynamically quantized Conv layers either fail to load or run slower than float.
    """
    from onnxruntime import quantization as oq

    src = _check_onnx_path(float_onnx_path)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="edgekit-onnxq-") as tmp,
            atomic_path(out_path) as dst,
        ):
            pre = Path(tmp) / "pre.onnx"
            oq.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            oq.quantize_dynamic(
                str(pre),
                str(dst),
                per_channel=per_channel,
                reduce_range=reduce_range,
                weight_type=oq.QuantType.QInt8,
                op_types_to_quantize=list(op_types),
            )
    except Exception as e:
        raise UnsupportedModelError(f"ONNX dynamic quantization failed: {_one_line(e)}") from e
    info = inspect_onnx(out_path)
    return {
        "path": str(out_path),
        "format": "onnx",
        "size_bytes": Path(out_path).stat().st_size,
        "precision": "dynamic",
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "source": str(src),
        "notes": []
        if info["quantized_nodes"]
        else ["no MatMul/Gemm to quantize; weights stay float"],
        **info,
        "route": inspect_onnx(src).get("route"),
    }


def inspect_onnx(path: str | os.PathLike) -> dict[str, Any]:
    """Describe an `.onnx` file: opset, producer, inputs/outputs, op types, quantization nodes."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise ModelLoadError(
            f"{Path(path).name} is not a valid ONNX model ({_one_line(e)[:120]}). Re-export it."
        ) from None
    g = model.graph
    init_names = {i.name for i in g.initializer}
    dtypes = {i.data_type for i in g.initializer}
    counts: dict[str, int] = {}
    for n in g.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    quant_ops = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul")
    int_ops = ("ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "QGemm")
    int8_inits = [i for i in g.initializer if i.data_type == onnx.TensorProto.INT8]
    uint8_inits = [i for i in g.initializer if i.data_type == onnx.TensorProto.UINT8]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "opset": opset,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": [_value_info(v) for v in g.input if v.name not in init_names],
        "outputs": [_value_info(v) for v in g.output],
        "op_types": dict(sorted(counts.items())),
        "quantized_nodes": sum(counts.get(k, 0) for k in quant_ops + int_ops),
        "int8_initializers": len(int8_inits),
        "uint8_initializers": len(uint8_inits),
        "initializer_dtypes": sorted(onnx.TensorProto.DataType.Name(d).lower() for d in dtypes),
        "route": next((p.value for p in model.metadata_props if p.key == "edgekit_route"), None),
    }


# --- the TensorFlow graph tf2onnx converts ---------------------------------------------------

# Function attributes that keep grappler from inlining a call. Keras 3 runs some ops through a
# `tf.function(jit_compile=True)` on CPU (grouped convolutions: ConvNeXt's depthwise layers), and
# tf2onnx leaves such a call as a StatefulPartitionedCall it cannot convert. Inlined, the call is
# a plain Conv2D that tf2onnx maps to a grouped ONNX Conv. TFLite's converter inlines them itself.
_NO_INLINE_ATTRS = ("_XlaMustCompile", "_noinline", "_XlaCompile", "_XlaScope")


def _inference_graph(serve: Any) -> tuple[Any, list[str], list[str]]:
    """The serving function as a frozen GraphDef with every function call inlinable, and its
    input / output tensor names (outputs in output_0, output_1 ... order)."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    cf = serve.get_concrete_function()
    frozen = convert_variables_to_constants_v2(
        cf, lower_control_flow=False, aggressive_inlining=True
    )
    graph_def = frozen.graph.as_graph_def(add_shapes=True)
    for fn in graph_def.library.function:
        for key in _NO_INLINE_ATTRS:
            if key in fn.attr:
                del fn.attr[key]
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    for node in nodes:
        for key in _NO_INLINE_ATTRS:
            if key in node.attr:
                del node.attr[key]
    in_names = [t.name for t in frozen.inputs if t.dtype.name != "resource"]
    # Flattened outputs follow the sorted dict keys (output_0, output_1, output_10, output_2 ...);
    # order them by output index so that output_i of the ONNX model is the model's output i.
    keys = sorted(cf.structured_outputs)
    by_key = dict(zip(keys, [t.name for t in frozen.outputs], strict=True))
    out_names = [by_key[k] for k in sorted(keys, key=lambda k: int(k.rsplit("_", 1)[1]))]
    return graph_def, in_names, out_names


def _custom_op_handlers() -> dict[str, Any]:
    """tf2onnx handlers for TensorFlow ops it has no converter for (name -> (handler, args))."""
    return {"Erfc": (_erfc_handler, [])}


def _erfc_handler(ctx: Any, node: Any, name: str, args: Any) -> None:
    """Erfc(x) = 1 - Erf(x). Keras' exact GELU (ConvNeXt, ViT-style blocks) computes
    0.5 * x * erfc(-x / sqrt(2)); ONNX has Erf but no Erfc."""
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=node.name)
    one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


# --- helpers ---------------------------------------------------------------------------------


class _CalibrationReader:
    """ORT CalibrationDataReader over preprocessed samples, with a progress bar."""

    def __init__(self, input_name: str, x: np.ndarray):
        from edgekit.ui import progress

        starts = range(0, len(x), _CALIB_BATCH)
        self._it: Iterator[int] = iter(
            progress(starts, total=len(starts), description="Calibrating (ONNX)")
        )
        self._name = input_name
        self._x = x

    def get_next(self) -> dict[str, np.ndarray] | None:
        i = next(self._it, None)
        return None if i is None else {self._name: self._x[i : i + _CALIB_BATCH]}

    def rewind(self) -> None:  # ORT calls this for some calibrators; one pass is all we give
        pass


def _check_onnx_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"ONNX model not found: {p}. Export the float model first (onnx.convert).")
    from edgekit.artifacts import detect_format

    if detect_format(p) != "onnx":
        raise UsageError(f"Expected an .onnx model. Received: {p} ({detect_format(p)}).")
    return p


def _check_choice(name: str, value: Any, choices: dict[str, Any]) -> None:
    if value not in choices:
        raise UsageError(f"Expected {name} in {', '.join(choices)}. Received: {name}={value!r}")


def _check_calibration(calibration: Any, shape: list, limit: int | None) -> np.ndarray:
    expected = tuple(d for d in shape[1:])
    if calibration is None or len(calibration) == 0:
        raise UsageError(
            "ONNX int8 quantization needs calibration samples (preprocessed float32 images, "
            "N x H x W x C). Received none. Pass calibration=... (the recipe's calib split)."
        )
    x = np.asarray(calibration)
    fixed = all(isinstance(d, int) and d > 0 for d in expected)
    if x.ndim != 1 + len(expected) or (fixed and tuple(x.shape[1:]) != expected):
        raise UsageError(
            f"Expected calibration samples of shape (N, {', '.join(map(str, expected))}). "
            f"Received: {tuple(x.shape)}. Resize/preprocess them like the model's inputs."
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise UsageError(
            f"Expected preprocessed float32 calibration samples. Received dtype {x.dtype} "
            "(raw pixels?). Apply the recipe's preprocessing first."
        )
    if limit is not None:
        if limit < 1:
            raise UsageError(f"Expected calibration_samples >= 1. Received: {limit}")
        x = x[:limit]
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise UsageError("Calibration samples contain NaN or inf. Clean the calibration data.")
    return x


def _value_info(v: Any) -> dict[str, Any]:
    import onnx

    t = v.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    return {
        "name": v.name,
        "shape": shape,
        "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
    }


def _rename_io(model: Any, inputs: list[str], outputs: list[str]) -> None:
    """Give graph inputs/outputs stable names (tf2onnx names outputs 'Identity:0' etc.)."""
    g = model.graph
    init_names = {i.name for i in g.initializer}
    graph_inputs = [v for v in g.input if v.name not in init_names]
    mapping: dict[str, str] = {}
    for v, new in zip(graph_inputs, inputs, strict=False):
        mapping[v.name] = new
    for v, new in zip(g.output, outputs, strict=False):
        mapping[v.name] = new
    mapping = {k: v for k, v in mapping.items() if k != v}
    if mapping:
        for n in g.node:
            n.input[:] = [mapping.get(s, s) for s in n.input]
            n.output[:] = [mapping.get(s, s) for s in n.output]
        for v in list(g.input) + list(g.output) + list(g.value_info):
            v.name = mapping.get(v.name, v.name)
    # tf2onnx calls the dynamic batch dimension "unk__12"; runtimes and people read "batch".
    for v in graph_inputs + list(g.output):
        dims = v.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"


class _quiet_logger:
    """Silence a chatty logger for a block; EDGEKIT_DEBUG=1 keeps the logs.

    tf2onnx logs each step (INFO) and each op it cannot convert (ERROR); `convert` reports
    unconverted ops itself, in one line. onnxruntime.quantization warns on the root logger about
    every rank-1 tensor it cannot quantize per channel (batch-norm parameters left unfused), which
    are left in float as intended.
    """

    def __init__(self, name: str = "tf2onnx") -> None:
        self._name = name

    def __enter__(self) -> None:
        import logging

        self._logger = logging.getLogger(self._name)
        self._level = self._logger.level
        if not os.environ.get("EDGEKIT_DEBUG"):
            self._logger.setLevel(logging.CRITICAL)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)


def _one_line(e: Any) -> str:
    return " ".join(str(e).split())[:400] or type(e).__name__
