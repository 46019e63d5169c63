"""Keras / SavedModel -> TFLite conversion in every quantization mode, and TFLite file inspection.

`convert` imports TensorFlow; `inspect_tflite` reads the flatbuffer with LiteRT's generated schema
and never imports TensorFlow, so runners and reports can use it on any `.tflite` path.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgekit.errors import EdgekitError, UnsupportedModelError, UsageError

Quantization = Literal["none", "dynamic", "float16", "int8", "int16x8", "qat"]
IoType = Literal["float32", "int8", "uint8"]

QUANTIZATIONS: tuple[str, ...] = ("none", "dynamic", "float16", "int8", "int16x8", "qat")
IO_TYPES: tuple[str, ...] = ("float32", "int8", "uint8")

# The `precision` recorded for each mode (ModelArtifact.precision, validate.check_export).
PRECISION: dict[str, str] = {
    "none": "float32",
    "dynamic": "dynamic",
    "float16": "float16",
    "int8": "int8",
    "int16x8": "int16x8",
    "qat": "int8",  # a QAT model converts to an int8 model; "quantization" keeps "qat"
}

# Ops whose first input is the activation: an int8 activation here means integer kernels run.
_COMPUTE_OPS = frozenset(
    {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV", "CONV_3D"}
)

_SELECT_HINT = (
    "Pass allow_select_tf_ops=True (`--allow-select-tf-ops`, recipe `allow_select_tf_ops: true`) "
    "to embed TensorFlow kernels (Flex ops); such models need the Flex delegate and fail on stock "
    "Android LiteRT. Or replace the layer with one made of TFLite builtin ops."
)


def convert(
    loaded: Any,
    out_path: str | os.PathLike,
    *,
    quantization: Quantization = "none",
    calibration: np.ndarray | None = None,
    calibration_samples: int = 200,
    io_type: IoType = "float32",
    per_channel: bool = True,
    allow_select_tf_ops: bool = False,
    signature_name: str = "serving_default",
    batch_size: int | None = None,
    route: Route = "auto",
) -> dict[str, Any]:
    """Convert a loaded model (`edgekit.keras_compat.LoadedModel`) to a `.tflite` file.

    Args:
        loaded: the model, as returned by `keras_compat.load_model` or `keras_compat.wrap`
            (Keras 3, tf_keras, a tfmot quantize-aware tf_keras model, or a plain SavedModel).
        out_path: where to write the `.tflite` file (atomically; nothing is left on failure).
        quantization: "none" (float32), "dynamic" (int8 weights, float activations), "float16"
            (float16 weights), "int8" (full integer, calibrated), "int16x8" (int16 activations,
            int8 weights, calibrated) or "qat" (a quantize-aware model's own ranges -> int8).
        calibration: preprocessed float32 samples (N, H, W, C) for "int8" / "int16x8".
        calibration_samples: at most this many calibration samples are used.
        io_type: input/output tensor type; "int8"/"uint8" only for "int8" and "qat".
        per_channel: per-channel weight scales for "int8" (False: one scale per tensor).
        allow_select_tf_ops: allow TensorFlow (Flex) kernels for ops with no TFLite builtin.
        signature_name: name of the serving signature written into the model.
        batch_size: fixed batch dimension; None keeps it dynamic (runners resize it).
        route: "edgekit" (the model's frozen inference graph through TFLiteConverter), "keras"
            (Keras 3's own `model.export(format="litert")`, Keras 3 models only) or "auto"
            (edgekit's, then Keras' when edgekit's fails). Select TF ops are refused from
            either unless `allow_select_tf_ops`. The report's `route` says which made the file.

    Returns:
        A dict: path, format, size_bytes, quantization, precision, signature, ops, select_tf_ops,
        custom_ops, inputs/outputs (name, shape, dtype, quantization), input_dtype, output_dtype,
        tensor_dtypes, integer_compute_ops, float_compute_ops, calibration_samples, notes.
    """
    _check_options(quantization, io_type, calibration_samples, signature_name, batch_size)
    if route not in ROUTES:
        raise UsageError(f"Expected route in {', '.join(ROUTES)}. Received: route={route!r}")
    if route == "keras" and not _keras_exportable(loaded):
        raise UsageError(
            "route='keras' uses Keras 3's model.export(format='litert'), which needs a Keras 3 "
            f"model; {getattr(loaded, 'name', 'this model')} is a {loaded.flavor} model. Use "
            "route='edgekit'."
        )
    calib = None
    if quantization in ("int8", "int16x8"):
        calib = _check_calibration(calibration, loaded, quantization, calibration_samples)

    import tensorflow as tf

    notes: list[str] = []
    settings = _settings(tf, quantization, calib, io_type, per_channel, allow_select_tf_ops)
    used = route
    if route != "keras":
        try:
            data = _edgekit_route(loaded, settings, signature_name, batch_size, allow_select_tf_ops)
            used = "edgekit"
        except UnsupportedModelError as e:
            if route == "edgekit" or not _keras_exportable(loaded) or _needs_select(e):
                raise
            try:
                data = _keras_route(loaded, settings, allow_select_tf_ops)
            except UnsupportedModelError as e2:
                raise UnsupportedModelError(f"{e} Keras' own exporter failed too: {e2}") from e
            used = "keras"
            notes.append(f"edgekit's route failed ({e}); Keras' own LiteRT exporter made the file.")
    else:
        data = _keras_route(loaded, settings, allow_select_tf_ops)

    info = inspect_tflite(data)
    if info["select_tf_ops"] and not allow_select_tf_ops:
        raise UnsupportedModelError(
            f"TFLite conversion needs TensorFlow ops with no TFLite builtin: "
            f"{', '.join(info['select_tf_ops'])}. " + _SELECT_HINT
        )
    if quantization == "qat" and not info["integer_compute_ops"]:
        raise UnsupportedModelError(
            "quantization='qat' produced no int8 kernels: the model is not quantize-aware "
            "(no FakeQuant ranges). Run the `qat` stage (tfmot quantize_model) first, or use "
            "quantization='int8' with calibration data."
        )
    if quantization == "int8" and io_type != "float32" and info["input_dtype"] != io_type:
        raise UnsupportedModelError(
            f"Expected a {io_type} input after full-integer conversion. Received: "
            f"{info['input_dtype']}. Use io_type='float32'."
        )
    if info["select_tf_ops"]:
        notes.append(
            "Uses TensorFlow Select (Flex) ops "
            f"({', '.join(info['select_tf_ops'])}): needs the Flex delegate; fails on stock "
            "Android LiteRT."
        )
    if quantization == "dynamic" and not info["tensor_dtypes"].get("int8"):
        notes.append(
            "Dynamic-range quantization left every weight in float32 (TFLite only quantizes "
            "weight tensors with at least 1024 elements)."
        )

    from edgekit.artifacts import write_bytes_atomic

    path = write_bytes_atomic(out_path, data)
    return {
        "path": str(path),
        "format": "tflite",
        "size_bytes": len(data),
        "quantization": quantization,
        "precision": PRECISION[quantization],
        "signature": signature_name,
        "io_type": info["input_dtype"],
        "per_channel": per_channel if quantization in ("int8", "int16x8") else None,
        "calibration_samples": 0 if calib is None else len(calib),
        "allow_select_tf_ops": allow_select_tf_ops,
        "converter": f"tensorflow {tf.__version__}",
        "route": ROUTE_NAMES[used],
        **{k: v for k, v in info.items() if k != "signatures"},
        "notes": notes,
    }


# --- options and calibration -------------------------------------------------------------------


def _check_options(
    quantization: str, io_type: str, calibration_samples: int, signature_name: str, batch_size: Any
) -> None:
    if quantization not in QUANTIZATIONS:
        raise UsageError(
            f"Expected quantization in {', '.join(QUANTIZATIONS)}. Received: quantization={quantization!r}"
        )
    if io_type not in IO_TYPES:
        raise UsageError(
            f"Expected io_type in {', '.join(IO_TYPES)}. Received: io_type={io_type!r}"
        )
    if io_type != "float32" and quantization not in ("int8", "qat"):
        raise UsageError(
            f"io_type={io_type!r} needs a full-integer model. Received: quantization={quantization!r}. "
            "Use quantization='int8' (or 'qat'), or io_type='float32'."
        )
    if not isinstance(calibration_samples, int) or calibration_samples < 1:
        raise UsageError(
            f"Expected calibration_samples >= 1. Received: calibration_samples={calibration_samples!r}"
        )
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", signature_name or ""):
        raise UsageError(
            "Expected signature_name to be an identifier (letters, digits, _). "
            f"Received: signature_name={signature_name!r}"
        )
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise UsageError(f"Expected batch_size >= 1 or None. Received: batch_size={batch_size!r}")


def _check_calibration(
    calibration: np.ndarray | None, loaded: Any, quantization: str, limit: int
) -> np.ndarray:
    if calibration is None or len(calibration) == 0:
        raise UsageError(
            f"quantization={quantization!r} needs calibration samples (preprocessed float32 images, "
            "N x H x W x C). Received none. Pass calibration=... (the recipe's calib split)."
        )
    x = np.asarray(calibration)
    expected = tuple(loaded.input_shape)
    if x.ndim != 1 + len(expected) or any(
        w is not None and w != g for w, g in zip(expected, x.shape[1:], strict=False)
    ):
        raise UsageError(
            f"Expected calibration samples of shape (N, {', '.join(map(str, expected))}). "
            f"Received: {tuple(x.shape)}. Resize/preprocess them like the model's inputs."
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise UsageError(
            f"Expected preprocessed float32 calibration samples. Received dtype {x.dtype} "
            "(raw pixels?). Apply the recipe's preprocessing first."
        )
    x = x[:limit].astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise UsageError("Calibration samples contain NaN or inf. Clean the calibration data.")
    return x


def _settings(
    tf: Any,
    quantization: str,
    calib: np.ndarray | None,
    io_type: str,
    per_channel: bool,
    allow_select_tf_ops: bool,
) -> dict[str, Any]:
    """TFLiteConverter attributes for a mode ("target_spec" holds the target_spec's own); the
    same for edgekit's converter and for Keras' exporter, which passes them on."""
    builtins = tf.lite.OpsSet.TFLITE_BUILTINS
    settings: dict[str, Any] = {}
    spec: dict[str, Any] = {}
    if quantization != "none":
        settings["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        spec["supported_types"] = [tf.float16]
    elif quantization in ("int8", "int16x8"):
        settings["representative_dataset"] = _representative(calib)
        if quantization == "int8":
            builtins = tf.lite.OpsSet.TFLITE_BUILTINS_INT8
            # The converter's own flag; it has no public equivalent.
            settings["_experimental_disable_per_channel"] = not per_channel
        else:
            builtins = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
    if io_type != "float32":
        dtype = {"int8": tf.int8, "uint8": tf.uint8}[io_type]
        settings["inference_input_type"] = dtype
        settings["inference_output_type"] = dtype
    ops = {builtins}
    if allow_select_tf_ops:
        ops.add(tf.lite.OpsSet.SELECT_TF_OPS)
    spec["supported_ops"] = ops
    settings["target_spec"] = spec
    return settings


def _apply(converter: Any, settings: dict[str, Any]) -> None:
    for key, value in settings.items():
        if key == "target_spec":
            for k, v in value.items():
                setattr(converter.target_spec, k, v)
        else:
            setattr(converter, key, value)


# --- the two routes ----------------------------------------------------------------------------

Route = Literal["auto", "edgekit", "keras"]
ROUTES: tuple[str, ...] = ("auto", "edgekit", "keras")
ROUTE_NAMES = {
    "edgekit": "edgekit (frozen inference graph -> TFLiteConverter)",
    "keras": "keras (Keras 3 model.export(format='litert'))",
}


def _edgekit_route(
    loaded: Any,
    settings: dict[str, Any],
    signature_name: str,
    batch_size: int | None,
    allow_select_tf_ops: bool,
) -> bytes:
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="edgekit-tflite-") as tmp:
        saved_dir = _serving_saved_model(loaded, Path(tmp) / "sm", signature_name, batch_size)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(saved_dir), signature_keys=[signature_name]
        )
        _apply(converter, settings)
        return _run_converter(converter, allow_select_tf_ops)


def _keras_exportable(loaded: Any) -> bool:
    return getattr(loaded, "flavor", None) == "keras3" and hasattr(loaded.model, "export")


def _keras_route(loaded: Any, settings: dict[str, Any], allow_select_tf_ops: bool) -> bytes:
    """Keras 3's own LiteRT exporter, with edgekit's converter settings (it enables Select TF
    ops by default; the settings name the op sets allowed)."""
    with tempfile.TemporaryDirectory(prefix="edgekit-keras-litert-") as tmp:
        path = Path(tmp) / "model.tflite"
        try:
            with _quiet_native_stderr():
                loaded.model.export(str(path), format="litert", verbose=False, **settings)
        except Exception as e:
            raise _conversion_error(str(e), allow_select_tf_ops) from e
        return path.read_bytes()


def _needs_select(e: UnsupportedModelError) -> bool:
    """A failure for ops with no builtin: Keras' exporter would need the same ops."""
    return "no TFLite builtin" in str(e)


def _representative(calib: Any) -> Any:
    from edgekit.ui import progress

    def gen() -> Iterator[list[np.ndarray]]:
        for i in progress(range(len(calib)), description="Calibrating (TFLite)"):
            yield [calib[i : i + 1]]

    return gen


# --- the serving function ----------------------------------------------------------------------


def serving_function(loaded: Any, *, batch_size: int | None = None, input_name: str | None = None):
    """A frozen `tf.function` (image -> {"output_0": ..., ...}) for any loaded model flavour.

    Freezing turns variables into constants: without it TF 2.21 keeps Keras 3 weights as
    resource variables (VAR_HANDLE / READ_VARIABLE ops) in the TFLite model, which breaks
    quantization and some runtimes. Also used by the ONNX export.
    """
    import tensorflow as tf

    dims = tuple(loaded.input_shape)
    if any(d is None for d in dims):
        raise UnsupportedModelError(
            f"The model's input shape (N, {', '.join('?' if d is None else str(d) for d in dims)}) "
            "has open height/width/channels; TFLite and ONNX exports need a fixed image size. "
            "Rebuild the model with keras.Input(shape=(H, W, C))."
        )
    batch = batch_size if batch_size is not None else getattr(loaded, "batch_dim", None)
    try:
        cf = loaded.concrete_function(batch)
    except EdgekitError:
        raise
    except Exception as e:  # e.g. a layer that assigns to a variable while it runs
        raise UnsupportedModelError(
            f"Could not freeze the model's inference graph: {type(e).__name__}: {_first_line(e)}"
        ) from e
    name = _tensor_name(input_name or getattr(loaded, "input_name", None) or "input")
    spec = tf.TensorSpec((batch, *(int(d) for d in dims)), tf.float32, name=name)
    call = _caller(cf)

    @tf.function(input_signature=[spec])
    def graph(x):
        return _flat_outputs(call(x), tf)

    frozen = graph.get_concrete_function()
    try:
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        frozen = convert_variables_to_constants_v2(frozen)
    except Exception:
        pass

    n_out = (
        len(frozen.structured_outputs) if isinstance(frozen.structured_outputs, list | tuple) else 1
    )

    @tf.function(input_signature=[spec])
    def serve(x):
        outs = frozen(x)
        if not isinstance(outs, list | tuple):
            outs = [outs]
        return {f"output_{i}": tf.identity(o, name=f"output_{i}") for i, o in enumerate(outs)}

    serve._edgekit_frozen = frozen  # keep the frozen graph alive with the wrapper
    serve._edgekit_outputs = n_out
    return serve


def _caller(cf: Any):
    """SavedModel signature functions take keyword arguments only; Keras functions positional."""
    # A frozen (wrapped) function has no structured signature and takes positional tensors.
    args, kwargs = getattr(cf, "structured_input_signature", None) or ((), {})
    if not args and kwargs and len(kwargs) == 1:
        key = next(iter(kwargs))
        return lambda x: cf(**{key: x})
    return lambda x: cf(x)


def _flat_outputs(out: Any, tf: Any) -> list:
    if isinstance(out, dict):
        return [out[k] for k in sorted(out)]
    if isinstance(out, list | tuple):
        return list(tf.nest.flatten(out))
    return [out]


def _tensor_name(name: str) -> str:
    # TF op names allow [A-Za-z0-9_.\-/]; Keras input names such as "input_layer:0" do not fit.
    clean = re.sub(r"[^A-Za-z0-9_.\-]", "_", name.split(":")[0]).lstrip("_.-")
    return clean or "input"


def _serving_saved_model(
    loaded: Any, path: Path, signature_name: str, batch_size: int | None
) -> Path:
    import tensorflow as tf

    serve = serving_function(loaded, batch_size=batch_size)
    module = tf.Module()
    module.serve = serve
    # An exported model is never differentiated: without this, saving tries to serialize the
    # custom gradients of ops such as Keras 3's swish (tf.nn.silu with its `beta` captured) and
    # fails with "Found invalid capture" on EfficientNet-style models.
    options = tf.saved_model.SaveOptions(experimental_custom_gradients=False)
    try:
        tf.saved_model.save(
            module,
            str(path),
            signatures={signature_name: serve.get_concrete_function()},
            options=options,
        )
    except Exception as e:
        raise UnsupportedModelError(
            f"Could not trace the model into a SavedModel for TFLite conversion: {_first_line(e)}"
        ) from e
    return path


# --- running the converter ---------------------------------------------------------------------


def _run_converter(converter: Any, allow_select_tf_ops: bool) -> bytes:
    try:
        with _quiet_native_stderr():
            return converter.convert()
    except Exception as e:
        raise _conversion_error(str(e), allow_select_tf_ops) from e


def _conversion_error(message: str, allow_select_tf_ops: bool) -> UnsupportedModelError:
    select = _ops_after("TF Select ops:", message)
    custom = _ops_after("Custom ops:", message)
    if select and not allow_select_tf_ops:
        return UnsupportedModelError(
            f"TFLite conversion needs TensorFlow ops with no TFLite builtin: {', '.join(select)}. "
            + _SELECT_HINT
        )
    if custom:
        return UnsupportedModelError(
            f"TFLite conversion found ops with no TFLite builtin and no Select TF kernel: "
            f"{', '.join(custom)}. Replace the layer with supported ops (tensorflow.org/lite/guide/ops_compatibility)."
        )
    if select:
        return UnsupportedModelError(
            f"TFLite conversion failed even with Select TF ops ({', '.join(select)}): "
            f"{_first_line(message)}"
        )
    return UnsupportedModelError(f"TFLite conversion failed: {_first_line(message)}")


def _ops_after(marker: str, message: str) -> list[str]:
    found: set[str] = set()
    for line in message.splitlines():
        if marker in line:
            tail = line.split(marker, 1)[1]
            found.update(op.strip() for op in tail.split(",") if op.strip())
    return sorted(found)


def _first_line(e: Any) -> str:
    text = str(e)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # The converter prefixes messages with MLIR locations; the useful part follows "error:".
    for ln in lines:
        if "error:" in ln:
            return ln.split("error:", 1)[1].strip()[:300]
    return (lines[0] if lines else type(e).__name__)[:300]


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence the converter's C++ logging (written straight to fd 2) unless EDGEKIT_DEBUG is set.

    Python's sys.stderr is pointed at the real stderr meanwhile, so that progress bars
    (calibration runs inside convert()) stay visible.
    """
    if os.environ.get("EDGEKIT_DEBUG"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    old_stderr = sys.stderr
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        visible = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
        sys.stderr = visible
        try:
            yield
        finally:
            sys.stderr = old_stderr
            visible.close()
            os.dup2(saved, 2)
            os.close(saved)


# --- reading .tflite files (no TensorFlow) ----------------------------------------------------


def inspect_tflite(model: str | os.PathLike | bytes) -> dict[str, Any]:
    """Describe a `.tflite` flatbuffer without TensorFlow: ops, I/O tensors, quantization.

    Returns ops (sorted builtin op names), select_tf_ops (Flex ops), custom_ops, inputs and
    outputs (name, shape, dtype, quantization {scale, zero_point} or None), input_dtype,
    output_dtype, signatures, tensor_dtypes (constant tensors by dtype), activation_dtypes (the
    other tensors by dtype), per_channel_tensors (constants with one scale per channel),
    integer_compute_ops / float_compute_ops (conv/matmul ops by activation dtype), subgraphs.
    """
    from ai_edge_litert import schema_py_generated as schema

    data = model if isinstance(model, bytes | bytearray) else Path(model).read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise UsageError("Not a TFLite flatbuffer (no 'TFL3' identifier). Pass a .tflite file.")
    m = schema.Model.GetRootAs(data, 0)
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    dtype_names = {
        v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")
    }

    codes: list[tuple[str, str | None]] = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        name = op_names.get(code, f"BUILTIN_{code}")
        custom = oc.CustomCode().decode() if name == "CUSTOM" and oc.CustomCode() else None
        codes.append((name, custom))

    used: set[int] = set()
    const_counts: dict[str, int] = {}
    act_counts: dict[str, int] = {}
    per_channel = 0
    integer_compute = float_compute = 0
    for s in range(m.SubgraphsLength()):
        sg = m.Subgraphs(s)
        for t in range(sg.TensorsLength()):
            tensor = sg.Tensors(t)
            key = dtype_names.get(tensor.Type(), str(tensor.Type()))
            buf = m.Buffers(tensor.Buffer()) if tensor.Buffer() < m.BuffersLength() else None
            if buf is not None and (buf.DataLength() > 0 or buf.Size() > 0):
                const_counts[key] = const_counts.get(key, 0) + 1
                q = tensor.Quantization()
                if q is not None and q.ScaleLength() > 1:
                    per_channel += 1
            else:
                act_counts[key] = act_counts.get(key, 0) + 1
        for o in range(sg.OperatorsLength()):
            op = sg.Operators(o)
            used.add(op.OpcodeIndex())
            name = codes[op.OpcodeIndex()][0]
            if name in _COMPUTE_OPS and op.InputsLength():
                t_type = sg.Tensors(op.Inputs(0)).Type()
                if t_type in (
                    schema.TensorType.INT8,
                    schema.TensorType.UINT8,
                    schema.TensorType.INT16,
                ):
                    integer_compute += 1
                elif t_type in (schema.TensorType.FLOAT32, schema.TensorType.FLOAT16):
                    float_compute += 1

    builtin = sorted({codes[i][0] for i in used if codes[i][0] != "CUSTOM"})
    customs = sorted({codes[i][1] or "CUSTOM" for i in used if codes[i][0] == "CUSTOM"})
    select = [c for c in customs if c.startswith("Flex")]

    sigs: dict[str, dict[str, list[str]]] = {}
    main = m.Subgraphs(0)
    inputs = [_tensor_info(main, main.Inputs(i), dtype_names) for i in range(main.InputsLength())]
    outputs = [
        _tensor_info(main, main.Outputs(i), dtype_names) for i in range(main.OutputsLength())
    ]
    for i in range(m.SignatureDefsLength()):
        sd = m.SignatureDefs(i)
        key = sd.SignatureKey().decode()
        sigs[key] = {
            "inputs": [sd.Inputs(j).Name().decode() for j in range(sd.InputsLength())],
            "outputs": [sd.Outputs(j).Name().decode() for j in range(sd.OutputsLength())],
        }
        if i == 0 and sd.SubgraphIndex() == 0:
            # Signature names are what runtimes look up; index order follows the signature.
            inputs = [
                {
                    **_tensor_info(main, sd.Inputs(j).TensorIndex(), dtype_names),
                    "name": sd.Inputs(j).Name().decode(),
                }
                for j in range(sd.InputsLength())
            ]
            outputs = [
                {
                    **_tensor_info(main, sd.Outputs(j).TensorIndex(), dtype_names),
                    "name": sd.Outputs(j).Name().decode(),
                }
                for j in range(sd.OutputsLength())
            ]
    return {
        "ops": builtin,
        "select_tf_ops": select,
        "custom_ops": [c for c in customs if not c.startswith("Flex")],
        "inputs": inputs,
        "outputs": outputs,
        "input_dtype": inputs[0]["dtype"] if inputs else None,
        "output_dtype": outputs[0]["dtype"] if outputs else None,
        "signatures": sigs,
        "tensor_dtypes": dict(sorted(const_counts.items())),
        "activation_dtypes": dict(sorted(act_counts.items())),
        "per_channel_tensors": per_channel,
        "integer_compute_ops": integer_compute,
        "float_compute_ops": float_compute,
        "subgraphs": m.SubgraphsLength(),
    }


def _tensor_info(sg: Any, index: int, dtype_names: dict[int, str]) -> dict[str, Any]:
    t = sg.Tensors(index)
    shape = [
        int(d)
        for d in (t.ShapeSignatureAsNumpy() if t.ShapeSignatureLength() else t.ShapeAsNumpy())
    ]
    q = t.Quantization()
    quant = None
    if q is not None and q.ScaleLength():
        scales = [float(s) for s in q.ScaleAsNumpy()]
        zeros = [int(z) for z in q.ZeroPointAsNumpy()] if q.ZeroPointLength() else [0] * len(scales)
        quant = {
            "scale": scales[0] if len(scales) == 1 else scales,
            "zero_point": zeros[0] if len(zeros) == 1 else zeros,
        }
    return {
        "name": t.Name().decode() if t.Name() else f"tensor_{index}",
        "shape": shape,
        "dtype": dtype_names.get(t.Type(), str(t.Type())),
        "quantization": quant,
    }


# TF op names a kernel's own layer ends its tensor name with, per TFLite builtin (a fused
# tensor name lists the activation, the batch norm and the convolution, separated by ';').
_KERNEL_TF_OPS = {
    "CONV_2D": ("convolution", "Conv2D", "BiasAdd"),
    "DEPTHWISE_CONV_2D": ("depthwise", "DepthwiseConv2dNative", "BiasAdd"),
    "FULLY_CONNECTED": ("MatMul", "Tensordot", "BiasAdd"),
    "TRANSPOSE_CONV": ("conv2d_transpose", "Conv2DBackpropInput"),
}


def layer_of_node(
    model: str | os.PathLike | bytes, index: int, layer_names: list[str] | None = None
) -> str | None:
    """The Keras layer a node of the main subgraph was converted from, read from the names of
    its output tensors (None when they name none). With `layer_names`, only those count."""
    from ai_edge_litert import schema_py_generated as schema

    data = model if isinstance(model, bytes | bytearray) else Path(model).read_bytes()
    m = schema.Model.GetRootAs(data, 0)
    sg = m.Subgraphs(0)
    if not 0 <= index < sg.OperatorsLength():
        return None
    op = sg.Operators(index)
    code = m.OperatorCodes(op.OpcodeIndex())
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    kind = op_names.get(max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode())), "")
    parts = [
        part
        for j in range(op.OutputsLength())
        for part in (sg.Tensors(op.Outputs(j)).Name() or b"").decode().split(";")
    ]
    own = _KERNEL_TF_OPS.get(kind, ())
    parts.sort(key=lambda p: 0 if p.rsplit("/", 1)[-1] in own else 1)  # the kernel's own first
    known = set(layer_names or [])
    for part in parts:
        scopes = part.split("/")[:-1]
        for scope in reversed(scopes):
            # Keras 3 name scopes get a "_1" suffix when a model is called again (the serving
            # function calls it once more).
            base = re.sub(r"_\d+$", "", scope)
            if not known:
                if scope and not scope.startswith(("PartitionedCall", "StatefulPartitionedCall")):
                    return base
                continue
            if scope in known:
                return scope
            if base in known:
                return base
    return None
