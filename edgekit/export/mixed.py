"""Selective and mixed-precision TFLite quantization, op by op, with Google's ai-edge-quantizer.

    ops = quantizable_ops(float_tflite, layer_names)          # the ops, by Keras layer
    quantize_mixed(float_tflite, out, calib, keep={"spiky": "float"})   # int8, `spiky` kept float

ai-edge-quantizer takes the float `.tflite` edgekit's converter writes and a recipe: a list of
(scope regex, op, config) entries, the last matching entry winning. edgekit writes one entry for
the whole model (int8 weights and activations, or none) and one per overridden op, whose scope is
the op's own output tensor name, so an override never reaches a neighbour by a shared prefix.
The ops are mapped back to the Keras layers they came from by the names of their output tensors
(`export.tflite.layer_of_node`); an op whose tensors name no layer is reported by its tensor name,
marked `ambiguous`. Nothing here imports TensorFlow (the quantizer runs on LiteRT).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import UnsupportedModelError, UsageError

# Ops whose int8 kernels carry the model's arithmetic; the search keeps these (and the element-wise
# ops between them) in higher precision one Keras layer at a time.
QUANTIZABLE_OPS = frozenset(
    {
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "FULLY_CONNECTED",
        "TRANSPOSE_CONV",
        "BATCH_MATMUL",
        "ADD",
        "MUL",
        "SUB",
        "MEAN",
        "AVERAGE_POOL_2D",
        "MAX_POOL_2D",
        "HARD_SWISH",
        "LOGISTIC",
        "TANH",
        "SOFTMAX",
        "CONCATENATION",
        "PAD",
        "RESHAPE",
        "RELU",
        "RELU6",
        "LEAKY_RELU",
    }
)
# Ops that make a layer worth searching over (ones with weights).
WEIGHTED_OPS = frozenset(
    {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"}
)
KEEP = (
    "float",
    "int16",
)  # what a kept layer runs in: float32, or int8 weights with int16 activations


def quantizable_ops(float_model: str | os.PathLike, layer_names: list[str] | None) -> list[dict]:
    """The main subgraph's quantizable ops: index, op, tensor (its first output), layer (the Keras
    layer, or the tensor name when none is found), ambiguous (True when no Keras layer was found or
    the op's outputs name more than one)."""
    from edgekit.export.tflite import layer_of_node
    from edgekit.tflite.reader import TFLiteModel

    data = Path(float_model).read_bytes()
    graph = TFLiteModel.read(data).graph()
    known = list(layer_names or [])
    out = []
    for i, op in enumerate(graph.ops):
        if op.name not in QUANTIZABLE_OPS or not op.outputs:
            continue
        tensor = graph.tensors[op.outputs[0]].name
        layer = layer_of_node(data, i, known) if known else layer_of_node(data, i)
        named = {s for part in tensor.split(";") for s in part.split("/")[:-1] if s in set(known)}
        if layer is None:  # e.g. the model's output op, named after the signature: its weights
            layer = _layer_of_weights(graph, op, known)
        out.append(
            {
                "index": i,
                "op": op.name,
                "tensor": tensor,
                "layer": layer or tensor,
                "ambiguous": layer is None or len(named) > 1,
                "weighted": op.name in WEIGHTED_OPS,
            }
        )
    return out


def _layer_of_weights(graph: Any, op: Any, known: list[str]) -> str | None:
    for j in op.inputs[1:]:
        if j < 0:
            continue
        for part in graph.tensors[j].name.split(";"):
            for scope in reversed(part.split("/")[:-1]):
                base = re.sub(r"_\d+$", "", scope)
                if scope in known or base in known:
                    return scope if scope in known else base
    return None


def layers_of(ops: list[dict]) -> list[str]:
    """The Keras layers (in graph order) that hold at least one weighted op."""
    seen: list[str] = []
    for o in ops:
        if o["weighted"] and o["layer"] not in seen:
            seen.append(o["layer"])
    return seen


def _scope(tensor: str) -> str:
    # The quantizer's scope of an op is its output tensor names joined by ';' (names may hold ';'
    # themselves): match the whole name, never a prefix of a longer one.
    return f"(?<![^;]){re.escape(tensor)}(?![^;])"


def _config(bits: int) -> dict[str, Any]:
    return {
        "activation_tensor_config": {
            "num_bits": bits,
            "symmetric": bits == 16,
            "granularity": "TENSORWISE",
            "dtype": "INT",
        },
        "weight_tensor_config": {
            "num_bits": 8,
            "symmetric": True,
            "granularity": "CHANNELWISE",
            "dtype": "INT",
        },
        "compute_precision": "INTEGER",
        "explicit_dequantize": False,
        "skip_checks": False,
        "min_weight_elements": 0,
    }


def recipe(
    ops: list[dict], *, keep: dict[str, str] | None = None, only: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """The ai-edge-quantizer recipe: every op int8 except the layers in `keep` (layer -> "float"
    or "int16"); with `only`, every op float except those layers' (int8)."""
    keep = dict(keep or {})
    for how in keep.values():
        if how not in KEEP:
            raise UsageError(f"Expected a kept precision in {', '.join(KEEP)}. Received: {how!r}")
    entries: list[dict[str, Any]] = []
    if only is None:
        entries.append(
            {"regex": ".*", "operation": "*", "algorithm_key": "min_max_uniform_quantize",
             "op_config": _config(8)}
        )  # fmt: skip
        for o in ops:
            how = keep.get(o["layer"])
            if how == "float":
                entries.append({"regex": _scope(o["tensor"]), "operation": "*",
                                "algorithm_key": "no_quantize", "op_config": {}})  # fmt: skip
            elif how == "int16":
                entries.append({"regex": _scope(o["tensor"]), "operation": o["op"],
                                "algorithm_key": "min_max_uniform_quantize",
                                "op_config": _config(16)})  # fmt: skip
        return entries
    wanted = set(only)
    for o in ops:
        if o["layer"] in wanted:
            entries.append({"regex": _scope(o["tensor"]), "operation": o["op"],
                            "algorithm_key": "min_max_uniform_quantize",
                            "op_config": _config(8)})  # fmt: skip
    return entries


def calibrate(float_model: str | os.PathLike, calibration: np.ndarray, recipe_: list) -> Any:
    """The quantizer's calibration result (min/max of every tensor) for a recipe; reusable for
    every recipe of the same float model that quantizes a subset of what `recipe_` does."""
    quantizer, sig, name = _quantizer(float_model, recipe_)
    samples = [{name: calibration[i : i + 1].astype(np.float32)} for i in range(len(calibration))]
    with _quiet():
        return quantizer.calibrate({sig: samples}, num_threads=1)


def quantize_mixed(
    float_model: str | os.PathLike,
    out_path: str | os.PathLike,
    recipe_: list[dict[str, Any]],
    calibration_result: Any,
) -> dict[str, Any]:
    """Write the model `recipe_` quantizes (atomically); returns info with the recipe."""
    from edgekit.artifacts import write_bytes_atomic

    quantizer, _, _ = _quantizer(float_model, recipe_)
    try:
        with _quiet():
            result = quantizer.quantize(calibration_result, enable_progress_report=False)
    except (ValueError, RuntimeError, KeyError) as e:
        raise UnsupportedModelError(
            f"ai-edge-quantizer could not quantize {Path(float_model).name} with this recipe: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    write_bytes_atomic(out_path, bytes(result.quantized_model))
    return {"route": "ai-edge-quantizer", "recipe": recipe_, "bytes": Path(out_path).stat().st_size}


def _quantizer(float_model: str | os.PathLike, recipe_: list) -> tuple[Any, str, str]:
    try:
        from ai_edge_quantizer import quantizer
    except ImportError as e:  # pragma: no cover - a dependency of edgekit
        raise UsageError(
            f"Mixed precision needs ai-edge-quantizer ({e}). Run: pip install ai-edge-quantizer"
        ) from None
    from ai_edge_litert.interpreter import Interpreter

    q = quantizer.Quantizer(str(float_model), recipe_)
    sigs = Interpreter(model_path=str(float_model)).get_signature_list()
    if not sigs:
        raise UnsupportedModelError(
            f"{Path(float_model).name} has no signature; ai-edge-quantizer needs one."
        )
    sig = next(iter(sigs))
    inputs = sigs[sig]["inputs"]
    if len(inputs) != 1:
        raise UnsupportedModelError(f"Expected a model with one image input. Received: {inputs}")
    return q, sig, inputs[0]


class _quiet:
    """The quantizer draws progress bars (tqdm, on sys.stderr) and warns about preserving
    tensors: not edgekit's output. Both are held back while it runs."""

    def __enter__(self) -> None:
        import io
        import sys
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")
        self._stderr, sys.stderr = sys.stderr, io.StringIO()

    def __exit__(self, *exc: Any) -> None:
        import sys

        sys.stderr = self._stderr
        self._w.__exit__(*exc)


def op_precisions(model: str | os.PathLike, layer_names: list[str] | None = None) -> list[dict]:
    """Which ops of a .tflite run at which precision: op, layer, precision (float32, float16, int8,
    int16 activations), from the type of each op's first output and its weights."""
    from edgekit.export.tflite import layer_of_node
    from edgekit.tflite.reader import TFLiteModel

    data = Path(model).read_bytes()
    graph = TFLiteModel.read(data).graph()
    rows = []
    for i, op in enumerate(graph.ops):
        if not op.outputs:
            continue
        out = graph.tensors[op.outputs[0]]
        dtype = out.dtype
        if op.name in ("QUANTIZE", "DEQUANTIZE"):
            precision = "conversion"
        elif dtype == "int16":
            precision = "int16x8"
        elif dtype in ("int8", "uint8"):
            precision = "int8"
        elif dtype == "float32":
            ins = [graph.tensors[j].dtype for j in op.inputs if j >= 0]
            precision = "float32 (int8 weights)" if "int8" in ins[1:] else "float32"
        else:
            precision = dtype
        rows.append(
            {
                "index": i,
                "op": op.name,
                "layer": layer_of_node(data, i, layer_names)
                or _layer_of_weights(graph, op, list(layer_names or []))
                or out.name,
                "precision": precision,
            }
        )
    return rows


def tensor_errors(
    float_model: str | os.PathLike,
    quant_model: str | os.PathLike,
    x: np.ndarray,
    tensors: dict[str, str],
) -> dict[str, float | None]:
    """Per-tensor error of a quantized model against its float model: for each key, the named
    tensor's RMSE in the quantized model (dequantized) over the float tensor's standard deviation,
    channel by channel (last axis), averaged over the channels, on the samples `x` (one invoke
    each): a channel with outliers that crushes the others under one per-tensor scale shows. None
    where the quantized model has no such tensor."""
    f_vals = _tensor_values(float_model, x, list(tensors.values()))
    q_vals = _tensor_values(quant_model, x, list(tensors.values()))
    out: dict[str, float | None] = {}
    for key, name in tensors.items():
        a, b = f_vals.get(name), q_vals.get(name)
        if a is None or b is None or a.shape != b.shape:
            out[key] = None
            continue
        a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        std = a2.std(0)
        rmse = np.sqrt(np.mean((a2 - b2) ** 2, axis=0))
        live = std > 1e-12
        out[key] = float(np.mean(rmse[live] / std[live])) if live.any() else 0.0
    return out


def _tensor_values(model: str | os.PathLike, x: np.ndarray, names: list[str]) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    with _quiet():
        it = Interpreter(model_path=str(model), experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    details = {d["name"]: d for d in it.get_tensor_details()}
    inp = it.get_input_details()[0]
    found = {n: details[n] for n in names if n in details}
    vals: dict[str, list] = {n: [] for n in found}
    for i in range(len(x)):
        xi = x[i : i + 1].astype(np.float32)
        if inp["dtype"] != np.float32:
            s, z = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            xi = np.clip(np.round(xi / s + z), info.min, info.max).astype(inp["dtype"])
        it.set_tensor(inp["index"], xi)
        it.invoke()
        for n, d in found.items():
            v = it.get_tensor(d["index"]).astype(np.float32)
            s, z = d["quantization"]
            if d["dtype"] != np.float32 and s:
                v = (v - z) * s
            vals[n].append(v)
    return {n: np.concatenate(v) for n, v in vals.items() if v}
