"""Static analysis of a `.tflite` file: MACs, bytes moved, peak activation memory, precision and
delegate support (XNNPACK, GPU, NNAPI) per operator, and findings against a device profile.

Reads the flatbuffer with edgekit.tflite.reader (LiteRT's generated schema) and, for the XNNPACK
cross-check, runs LiteRT's Interpreter; never imports TensorFlow.

    from edgekit.targets.emulated.static import analyze
    result = analyze("model.tflite", profile=load_profile("pixel-7"))   # a JSON-able dict

What each number means and where the delegate rules come from: docs/static-analysis.md.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from edgekit.errors import ModelLoadError, UsageError
from edgekit.tflite.reader import COMPUTE_OPS, Op, Tensor, TFLiteModel

# Ops whose work is multiply-accumulates; the formulas are in _macs().
MAC_OPS = COMPUTE_OPS
# Ops counted as one operation per output element (arithmetic and activations).
_ELEMENTWISE = frozenset(
    {
        "ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "POW", "PRELU",
        "RELU", "RELU6", "RELU_N1_TO_1", "LEAKY_RELU", "LOGISTIC", "TANH", "HARD_SWISH", "ELU",
        "GELU", "EXP", "LOG", "SQRT", "RSQRT", "SQUARE", "ABS", "NEG", "SIN", "COS", "FLOOR",
        "CEIL", "ROUND", "FLOOR_DIV", "FLOOR_MOD", "SOFTMAX", "LOG_SOFTMAX", "QUANTIZE",
        "DEQUANTIZE", "CAST", "SELECT", "SELECT_V2", "ATAN2", "SIGN",
    }
)  # fmt: skip
# Ops counted as one operation per input element (reductions and pooling windows).
_REDUCING = frozenset(
    {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "AVERAGE_POOL_2D", "MAX_POOL_2D",
     "L2_POOL_2D", "CUMSUM", "ARG_MAX", "ARG_MIN"}
)  # fmt: skip

_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
DELEGATES = ("xnnpack", "gpu", "nnapi")

PEAK_NOTE = (
    "Largest sum of live activation tensors over the execution order: a tensor lives from the op "
    "that writes it (graph inputs: from the start) to its last reader (graph outputs: to the end). "
    "It is the lower bound an arena planner can reach without running ops in place; LiteRT's "
    "arena is this or larger, plus the weights and the runtime's own buffers."
)


def _opt(op: Op, method: str, default: Any = None) -> Any:
    fn = getattr(op.options, method, None)
    return fn() if fn is not None else default


def _activation(op: Op) -> str:
    return _ACTIVATIONS.get(_opt(op, "FusedActivationFunction", 0), "NONE")


# --- counting ----------------------------------------------------------------------------------


def _macs(op: Op, T: list[Tensor]) -> int:
    """Multiply-accumulates of one op, from its stored shapes (dynamic dimensions count as 1)."""
    if op.name not in MAC_OPS or not op.outputs:
        return 0

    def shape(k: int) -> list[int]:
        return T[op.inputs[k]].shape if k < len(op.inputs) and op.inputs[k] >= 0 else []

    out = T[op.outputs[0]]
    if op.name == "CONV_2D":  # filter [OC, KH, KW, IC / groups]
        f = shape(1)
        return out.elements() * (f[1] * f[2] * f[3] if len(f) == 4 else 0)
    if op.name == "DEPTHWISE_CONV_2D":  # filter [1, KH, KW, OC]
        f = shape(1)
        return out.elements() * (f[1] * f[2] if len(f) == 4 else 0)
    if op.name == "CONV_3D":  # filter [KD, KH, KW, IC, OC]
        f = shape(1)
        return out.elements() * (f[0] * f[1] * f[2] * f[3] if len(f) == 5 else 0)
    if op.name == "FULLY_CONNECTED":  # weights [units, depth]
        w = shape(1)
        return out.elements() * (w[-1] if w else 0)
    if op.name == "BATCH_MATMUL":  # out [..., M, N]; the shared dimension K from the lhs
        a = shape(0)
        if len(a) < 2:
            return 0
        k = a[-2] if _opt(op, "AdjX", False) else a[-1]
        return out.elements() * k
    if op.name == "TRANSPOSE_CONV":  # inputs: output_shape, filter [OC, KH, KW, IC], input
        f, x = shape(1), shape(2)
        if len(f) != 4 or not x:
            return 0
        n = 1
        for d in x:
            n *= d
        return n * f[0] * f[1] * f[2]  # each input element scatters into KH*KW*OC outputs
    return 0


def _elementwise(op: Op, T: list[Tensor]) -> int:
    if op.name in _ELEMENTWISE and op.outputs:
        return T[op.outputs[0]].elements()
    if op.name in _REDUCING and op.inputs:
        return T[op.inputs[0]].elements()
    return 0


def _op_precision(op: Op, T: list[Tensor], producers: dict[int, Op]) -> str:
    """int8 / uint8 / int16 / float32 / float16 / hybrid for compute ops; else the data's dtype."""
    acts = [T[i] for i in op.inputs if i >= 0 and not T[i].const]
    first = acts[0] if acts else (T[op.inputs[0]] if op.inputs and op.inputs[0] >= 0 else None)
    if first is None:
        return T[op.outputs[0]].dtype if op.outputs else "none"
    if op.name in MAC_OPS:
        w_idx = 2 if op.name == "TRANSPOSE_CONV" else 1
        w = T[op.inputs[w_idx]] if len(op.inputs) > w_idx and op.inputs[w_idx] >= 0 else None
        w_dtype = w.dtype if w is not None else None
        if w is not None and not w.const and w.index in producers:
            src = producers[w.index]
            if src.name == "DEQUANTIZE" and src.inputs and T[src.inputs[0]].const:
                w_dtype = T[src.inputs[0]].dtype  # float16 (or int8) weights unpacked at load
        if first.dtype in ("float32", "float16"):
            if w_dtype in ("int8", "int4", "uint8") and w is not None and w.const:
                return "hybrid"  # dynamic-range: integer weights, float activations
            return "float16" if w_dtype == "float16" else "float32"
        if first.dtype in ("int8", "uint8", "int16"):
            return first.dtype
        return first.dtype
    if op.name == "DEQUANTIZE" and op.inputs and T[op.inputs[0]].const:
        return T[op.inputs[0]].dtype
    if op.name == "QUANTIZE" and op.outputs:
        return T[op.outputs[0]].dtype  # the precision it converts to
    return first.dtype


# --- delegate rules ----------------------------------------------------------------------------

# XNNPACK. Sources: https://github.com/google-ai-edge/LiteRT/blob/main/tflite/delegates/xnnpack/README.md
# ("Limitations and supported operators") and the switch in VisitNode() of
# tflite/delegates/xnnpack/xnnpack_delegate.cc in the same repository, which is what LiteRT runs
# (the README lags it: GELU, BATCH_MATMUL, SUM, reductions ... are taken but not documented).
_XNN_FLOAT_ONLY = frozenset(
    {
        "ABS", "CEIL", "COS", "EXP", "FLOOR", "GELU", "HARD_SWISH", "LOG", "NEG", "RELU",
        "RELU6", "RELU_N1_TO_1", "ROUND", "RSQRT", "SIN", "SQRT", "SQUARE", "DIV", "MAXIMUM",
        "MINIMUM", "PRELU", "SQUARED_DIFFERENCE", "AVERAGE_POOL_2D", "SUM", "REDUCE_MAX",
        "REDUCE_MIN", "SOFTMAX",
    }
)  # fmt: skip
_XNN_FLOAT_OR_Q8 = frozenset(
    {
        "ADD", "SUB", "MUL", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV",
        "BATCH_MATMUL", "CONCATENATION", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "ELU", "LEAKY_RELU",
        "LOGISTIC", "TANH", "MAX_POOL_2D", "MEAN", "PAD", "RESHAPE", "EXPAND_DIMS",
        "RESIZE_BILINEAR", "SLICE", "SPLIT", "STRIDED_SLICE", "TRANSPOSE", "QUANTIZE",
        "DEQUANTIZE",
    }
)  # fmt: skip
_FUSED_ACT_OPS = frozenset(
    {"ADD", "SUB", "MUL", "DIV", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
     "AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION", "TRANSPOSE_CONV"}
)  # fmt: skip

# GPU. Source: CheckGpuDelegateCompatibility() in
# https://github.com/google-ai-edge/LiteRT/blob/main/tflite/tools/versioning/gpu_compatibility.cc
# (the same switch as tensorflow/lite/tools/versioning/gpu_compatibility.cc): the builtin ops it
# accepts; anything else is "Not supported op". A few parameter checks of that file follow below.
_GPU_OPS = frozenset(
    {
        "ADD", "ADD_N", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CAST", "CONCATENATION", "CONV_2D",
        "CUMSUM", "DENSIFY", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "DEQUANTIZE",
        "EMBEDDING_LOOKUP", "DYNAMIC_UPDATE_SLICE", "FULLY_CONNECTED", "GATHER", "HARD_SWISH",
        "LSTM", "MAX_POOL_2D", "MEAN", "MUL", "PACK", "ONE_HOT", "QUANTIZE", "RELU_N1_TO_1",
        "PRELU", "RESHAPE", "SELECT", "SELECT_V2", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT",
        "SPLIT_V", "STRIDED_SLICE", "TILE", "TRANSPOSE", "TRANSPOSE_CONV", "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR", "RELU", "RELU6", "LEAKY_RELU", "REDUCE_MAX", "REDUCE_MIN",
        "REDUCE_PROD", "SUM", "PAD", "PADV2", "MIRROR_PAD", "ABS", "CEIL", "COS", "ELU", "EXP",
        "FLOOR", "GELU", "LOG", "LOGISTIC", "NEG", "RSQRT", "SIGN", "SIN", "SQRT", "SQUARE",
        "TANH", "ATAN2", "DIV", "EQUAL", "FLOOR_DIV", "FLOOR_MOD", "GREATER", "GREATER_EQUAL",
        "LOGICAL_AND", "LESS", "LESS_EQUAL", "MAXIMUM", "MINIMUM", "NOT_EQUAL", "POW",
        "SQUARED_DIFFERENCE", "SUB", "STABLEHLO_CLAMP",
    }
)  # fmt: skip
_GPU_CUSTOM_OPS = frozenset({"Convolution2DTransposeBias", "MaxPoolingWithArgmax2D",
                             "MaxUnpooling2D", "Resampler"})  # fmt: skip

# NNAPI. Source: the switch in NNAPIDelegateKernel::Validate() of
# https://github.com/google-ai-edge/LiteRT/blob/main/tflite/delegates/nnapi/nnapi_delegate.cc;
# the value is the lowest Android API level that op needs there (27 = NNAPI 1.0; "FL6"/"FL7" =
# NNAPI feature level 6/7). Not cross-checked here: that needs an Android device with drivers.
_NNAPI_OPS: dict[str, int | str] = {
    **dict.fromkeys(
        ["ABS", "ADD", "ARG_MAX", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "COS",
         "DENSIFY", "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "EMBEDDING_LOOKUP",
         "EQUAL", "EXP", "FLOOR", "FULLY_CONNECTED", "GREATER", "GREATER_EQUAL", "HARD_SWISH",
         "HASHTABLE_LOOKUP", "L2_NORMALIZATION", "L2_POOL_2D", "LEAKY_RELU", "LESS",
         "LESS_EQUAL", "LOCAL_RESPONSE_NORMALIZATION", "LOG", "LOGICAL_AND", "LOGICAL_OR",
         "LOGISTIC", "LSH_PROJECTION", "LSTM", "MAX_POOL_2D", "MAXIMUM", "MUL", "PAD",
         "REDUCE_MIN", "REDUCE_PROD", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE",
         "RESIZE_BILINEAR", "RNN", "SOFTMAX", "SPACE_TO_DEPTH", "SUB", "SVDF", "TANH"],
        27,
    ),
    **dict.fromkeys(
        ["BATCH_TO_SPACE_ND", "DIV", "MEAN", "PADV2", "SPACE_TO_BATCH_ND",
         "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "TRANSPOSE"],
        28,
    ),
    **dict.fromkeys(
        ["ARG_MIN", "BIDIRECTIONAL_SEQUENCE_LSTM", "CAST", "EXPAND_DIMS", "GATHER",
         "LOG_SOFTMAX", "LOGICAL_NOT", "MINIMUM", "NEG", "NOT_EQUAL", "POW", "PRELU", "QUANTIZE",
         "REDUCE_ANY", "REDUCE_MAX", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SELECT", "SIN",
         "SLICE", "SPLIT", "SQRT", "SUM", "TILE", "TOPK_V2", "TRANSPOSE_CONV",
         "UNIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN"],
        29,
    ),
    **dict.fromkeys(["ELU", "FILL", "PACK", "SPLIT_V", "UNPACK"], 30),
    "BATCH_MATMUL": "FL6",
    "MIRROR_PAD": "FL7",
    "REVERSE_V2": "FL7",
}  # fmt: skip


def _unsupported_custom(op: Op) -> str:
    name = op.custom or "CUSTOM"
    if name.startswith("Flex"):
        return f"{name} is a TensorFlow (Flex) op: it runs on the CPU with the Flex delegate"
    return f"custom op {name} has no kernel in this delegate"


def _xnnpack_rule(
    op: Op, T: list[Tensor], model: TFLiteModel, producers: dict[int, Op]
) -> str | None:
    """None if XNNPACK takes the op, else the reason it does not."""
    if op.name == "CUSTOM":
        return _unsupported_custom(op)
    if op.name not in _XNN_FLOAT_ONLY and op.name not in _XNN_FLOAT_OR_Q8:
        return f"XNNPACK has no {op.name} kernel"
    acts = [T[i] for i in op.inputs if i >= 0 and not T[i].const] + [T[i] for i in op.outputs]
    dtypes = {t.dtype for t in acts}
    if op.name == "QUANTIZE":
        ok = dtypes <= {"float32", "int8", "uint8"} and T[op.outputs[0]].dtype in ("int8", "uint8")
        if not ok:
            return f"QUANTIZE {'/'.join(sorted(dtypes))} is not an 8-bit quantization"
    elif op.name == "DEQUANTIZE":
        src = T[op.inputs[0]]
        if src.dtype not in ("int8", "uint8", "float16"):
            return f"DEQUANTIZE from {src.dtype} is not supported"
        if src.dtype != "float16" and src.per_channel and not src.const:
            return "DEQUANTIZE of a per-channel quantized tensor is not supported"
    else:
        allowed = {"float32", "float16"}
        if op.name in _XNN_FLOAT_OR_Q8:
            allowed |= {"int8", "uint8"}
        # Shape and axis operands are int32 and constant; only activations count here.
        bad = sorted(d for d in dtypes if d not in allowed)
        if bad:
            kind = "float32" if op.name in _XNN_FLOAT_ONLY else "float32 or 8-bit quantized"
            return f"{op.name} on {'/'.join(bad)} tensors (XNNPACK takes {kind})"
    if op.name in _FUSED_ACT_OPS and _activation(op) in ("TANH", "SIGN_BIT"):
        return f"fused {_activation(op)} activation is not supported"
    if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED"):
        w = T[op.inputs[2 if op.name == "TRANSPOSE_CONV" else 1]]
        static = w.const or (
            w.index in producers
            and producers[w.index].name == "DEQUANTIZE"
            and T[producers[w.index].inputs[0]].const
        )
        if not static:
            return "the filter is not a constant (XNNPACK needs static weights)"
    if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D") and (len(op.inputs) < 3 or op.inputs[2] < 0):
        return f"{op.name} without bias is not supported"
    if op.name == "SOFTMAX" and abs(_opt(op, "Beta", 1.0) - 1.0) > 1e-6:
        return "SOFTMAX with beta != 1 is not supported"
    if op.name == "STRIDED_SLICE":
        strides = model.const_int32(T[op.inputs[3]]) if len(op.inputs) > 3 else None
        if strides is None or any(s != 1 for s in strides):
            return "STRIDED_SLICE needs constant strides of 1"
        if _opt(op, "EllipsisMask", 0) or _opt(op, "NewAxisMask", 0):
            return "STRIDED_SLICE with an ellipsis or new-axis mask is not supported"
    if op.name in ("DEPTH_TO_SPACE", "SPACE_TO_DEPTH") and _opt(op, "BlockSize", 2) <= 1:
        return f"{op.name} block size must be greater than 1"
    if op.name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "RESHAPE", "PAD", "SLICE",
                   "TRANSPOSE", "RESIZE_BILINEAR"):  # fmt: skip
        spec = [T[i] for i in op.inputs[1:] if i >= 0]
        if any(not t.const for t in spec):
            return f"{op.name} needs its shape/axes/padding operand to be a constant"
    return None


def _gpu_rule(op: Op, T: list[Tensor]) -> str | None:
    """None if gpu_compatibility.cc's checks (the subset edgekit mirrors) pass, else why not."""
    if op.name == "CUSTOM":
        if op.custom in _GPU_CUSTOM_OPS:
            return None
        return f"Not supported custom op {op.custom or 'CUSTOM'}"
    if op.name not in _GPU_OPS:
        return f"Not supported op {op.name}"
    if op.name in ("CONV_2D", "MUL", "DIV", "SUB") and _activation(op) == "SIGN_BIT":
        return "fused SIGN_BIT activation is not supported"
    if op.name == "SOFTMAX" and abs(_opt(op, "Beta", 1.0) - 1.0) > 1e-6:
        return "Softmax.beta != 1 is not supported."
    if op.name == "STRIDED_SLICE":
        if _opt(op, "EllipsisMask", 0) or _opt(op, "NewAxisMask", 0):
            return "Slice does not support ellipsis_mask / new_axis_mask."
        if _opt(op, "ShrinkAxisMask", 0):
            return "Slice does not support shrink_axis_mask parameter."
        if len(T[op.inputs[0]].shape) not in (3, 4):
            return "STRIDED_SLICE supports for 3 or 4 dimensional tensors only."
    if op.name == "SLICE" and len(T[op.inputs[0]].shape) not in (3, 4):
        return "SLICE supports for 3 or 4 dimensional tensors only."
    if op.name == "FULLY_CONNECTED":
        if _opt(op, "WeightsFormat", 0) != 0:
            return "Unsupported FullyConnected weights format"
        if T[op.inputs[0]].const:
            return "FullyConnected doesn't support constant input."
    if op.name == "DEQUANTIZE" and T[op.inputs[0]].dtype == "int16":
        return "Unsupported dequantization type."
    if op.name == "MIRROR_PAD" and _opt(op, "Mode", 0) != 0:
        return "Only Reflective padding is supported for Mirror Pad operation."
    if op.name == "CAST":
        a, b = T[op.inputs[0]].dtype, T[op.outputs[0]].dtype
        ok = (
            (a == "bool" and b in ("float16", "float32"))
            or (a in ("float16", "float32") and b == "bool")
            or (a in ("float32", "int32") and b in ("float32", "int32"))
        )
        if not ok:
            return f"Not supported Cast case. Input type: {a} and output type: {b}"
    if op.name == "GATHER" and T[op.inputs[0]].dtype == "int32":
        return "Does not accept INT32 input."
    reduce = op.name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD")
    if reduce and (len(op.inputs) < 2 or not T[op.inputs[1]].const):
        return "Axes must be an int32 constant."
    return None


def _nnapi_rule(op: Op, T: list[Tensor]) -> str | None:
    if op.name == "CUSTOM":
        return _unsupported_custom(op)
    level = _NNAPI_OPS.get(op.name)
    if level is None:
        return f"the NNAPI delegate has no mapping for {op.name}"
    dtypes = {T[i].dtype for i in op.inputs + op.outputs if i >= 0 and not T[i].const}
    if "int16" in dtypes and op.name not in ("QUANTIZE", "DEQUANTIZE"):
        return "int16 activations are not supported by the NNAPI delegate"
    if dtypes & {"int64", "string", "complex64", "float64"} and op.name != "ARG_MAX":
        return f"{'/'.join(sorted(dtypes))} tensors are not supported by the NNAPI delegate"
    return None


def _nnapi_level(op: Op) -> int | str | None:
    return _NNAPI_OPS.get(op.name)


# --- the GPU analyzer shipped with LiteRT ------------------------------------------------------

_OP_LINE = re.compile(r"^\s*Op#(\d+) (\S+?)\(")
_WARN = "GPU COMPATIBILITY WARNING: "


def parse_gpu_analyzer(text: str, subgraph: int = 0) -> dict[str, Any]:
    """Per-op GPU warnings from the text LiteRT's model analyzer prints (gpu_compatibility=True).

    The analyzer writes "GPU COMPATIBILITY WARNING: <reason>" after an op's "Op#N NAME(...)"
    line, then "GPU COMPATIBILITY WARNING: Subgraph#K has GPU delegate compatibility issues at
    nodes ..." (LiteRT tflite/python/analyzer_wrapper/model_analyzer.cc).
    Returns {ops: {index: name}, warnings: {index: reason}, flagged_nodes: [..], compatible}.
    """
    ops: dict[int, str] = {}
    warnings: dict[int, str] = {}
    flagged: list[int] = []
    current_sg = -1
    last_op: int | None = None
    for line in text.splitlines():
        s = line.strip()
        m_sg = re.match(r"^Subgraph#(\d+)[ (]", s)
        if m_sg and "has GPU delegate" not in s:
            current_sg, last_op = int(m_sg.group(1)), None
            continue
        m = _OP_LINE.match(line)
        if m and current_sg == subgraph:
            last_op = int(m.group(1))
            ops[last_op] = m.group(2)
            continue
        if s.startswith(_WARN):
            body = s[len(_WARN) :]
            summary = re.match(
                r"Subgraph#(\d+) has GPU delegate compatibility issues at nodes ([\d, ]+)", body
            )
            if summary:
                if int(summary.group(1)) == subgraph:
                    flagged = [int(v) for v in summary.group(2).replace(" ", "").split(",") if v]
            elif last_op is not None and current_sg == subgraph:
                warnings[last_op] = body
        elif s.startswith("Tensors of"):
            last_op = None
    compatible = "looks compatible with GPU delegate" in text
    return {"ops": ops, "warnings": warnings, "flagged_nodes": flagged, "compatible": compatible}


def run_gpu_analyzer(path: str | os.PathLike) -> tuple[str | None, str]:
    """(analyzer text or None, a note saying which analyzer ran or why none did)."""
    try:
        from ai_edge_litert import _pywrap_analyzer_wrapper as wrapper
    except ImportError as e:
        return None, f"LiteRT's model analyzer is not importable here ({e})"
    try:
        import ai_edge_litert

        version = getattr(ai_edge_litert, "__version__", "unknown")
        return wrapper.ModelAnalyzer(str(path), True, True), f"ai-edge-litert {version}"
    except Exception as e:  # a build without the analyzer, or a model it cannot map
        return None, f"LiteRT's model analyzer failed ({' '.join(str(e).split())[:200]})"


# --- XNNPACK in the real interpreter -----------------------------------------------------------


def xnnpack_observed(path: str | os.PathLike) -> dict[str, Any]:
    """Which ops LiteRT's Interpreter (XNNPACK on, as by default) hands to XNNPACK.

    After allocate_tensors the node list holds the original ops and one DELEGATE node per
    partition; the ops of a partition are those reached walking back from the DELEGATE's outputs
    to its inputs. Returns {delegated: [op indices], partitions, runtime} or {error}.
    """
    from edgekit.runtimes.litert import import_interpreter, native_stderr

    try:
        mod, runtime, version = import_interpreter()
    except Exception as e:
        return {"error": str(e)}
    err = None
    with native_stderr():
        try:
            it = mod.Interpreter(
                model_path=str(path),
                num_threads=1,
                experimental_op_resolver_type=mod.OpResolverType.AUTO,
            )
            it.allocate_tensors()
            details = it._get_ops_details()  # no public accessor for the node list
        except Exception as e:
            err = " ".join(str(e).split())[:200]
    if err is not None:
        return {"error": f"LiteRT could not load the model with XNNPACK: {err}"}
    originals = [d for d in details if d.get("op_name") != "DELEGATE"]
    producer = {int(o): d["index"] for d in originals for o in d["outputs"]}
    by_index = {d["index"]: d for d in originals}
    delegated: set[int] = set()
    partitions = 0
    for d in details:
        if d.get("op_name") != "DELEGATE":
            continue
        partitions += 1
        boundary = {int(i) for i in d["inputs"]}
        stack = [int(o) for o in d["outputs"]]
        seen: set[int] = set()
        while stack:
            t = stack.pop()
            if t in seen or t in boundary or t not in producer:
                continue
            seen.add(t)
            node = producer[t]
            if node in delegated:
                continue
            delegated.add(node)
            stack.extend(int(i) for i in by_index[node]["inputs"] if int(i) >= 0)
    return {
        "delegated": sorted(delegated),
        "partitions": partitions,
        "runtime": f"{runtime} {version}",
    }


# --- the analysis ------------------------------------------------------------------------------


def _peak(
    T: list[Tensor], ops: list[Op], graph_in: list[int], graph_out: list[int]
) -> dict[str, Any]:
    n = len(ops)
    start: dict[int, int] = {}
    end: dict[int, int] = {}
    for i in graph_in:
        if i >= 0 and not T[i].const:
            start[i] = 0
            end[i] = 0
    for op in ops:
        for t in op.outputs:
            if t >= 0 and not T[t].const:
                start.setdefault(t, op.index)
                end[t] = max(end.get(t, op.index), op.index)
        for t in op.inputs:
            if t >= 0 and not T[t].const:
                start.setdefault(t, 0)  # read before any op writes it (a variable, a state)
                end[t] = max(end.get(t, op.index), op.index)
    for t in graph_out:
        if t >= 0 and t in start:
            end[t] = max(n - 1, 0)
    for t in T:
        if t.variable and t.index in start:  # resource/state tensors persist across runs
            start[t.index], end[t.index] = 0, max(n - 1, 0)
    best, best_at, best_live = 0, 0, []
    for k in range(max(n, 1)):
        live = [t for t in start if start[t] <= k <= end[t]]
        total = sum(T[t].nbytes for t in live)
        if total > best:
            best, best_at, best_live = total, k, live
    return {
        "bytes": int(best),
        "op_index": best_at if ops else None,
        "op": ops[best_at].name if ops else None,
        "live_tensors": [
            {
                "index": t,
                "name": T[t].name,
                "shape": T[t].shape,
                "dtype": T[t].dtype,
                "bytes": int(T[t].nbytes),
            }
            for t in sorted(best_live, key=lambda t: -T[t].nbytes)
        ],
        "note": PEAK_NOTE,
    }


def _tensor_json(t: Tensor) -> dict[str, Any]:
    d: dict[str, Any] = {"index": t.index, "shape": t.signature, "dtype": t.dtype}
    if t.const:
        d["constant"] = True
    return d


def _model_precision(info: dict[str, Any], per_op: list[dict[str, Any]]) -> str:
    """The model's precision class from its conv/matmul ops (inspect_tflite counts)."""
    compute = [o["precision"] for o in per_op if o["op"] in MAC_OPS]
    if info["integer_compute_ops"] and not info["float_compute_ops"]:
        if "int16" in compute:
            return "int16x8"
        return "uint8" if compute and all(p == "uint8" for p in compute) else "int8"
    if info["float_compute_ops"] and info["integer_compute_ops"]:
        return "mixed"
    if "hybrid" in compute:
        return "dynamic"
    if "float16" in compute:
        return "float16"
    return "float32"


def _op_entry(
    op: Op, T: list[Tensor], model: TFLiteModel, producers: dict[int, Op]
) -> dict[str, Any]:
    """One op's counts, precision and what each delegate's rules say of it."""
    ins = [T[i] for i in op.inputs if i >= 0]
    outs = [T[i] for i in op.outputs if i >= 0]
    seen: set[int] = set()
    moved = 0
    for t in ins + outs:
        if t.index not in seen:
            seen.add(t.index)
            moved += t.nbytes
    name = op.custom if op.name == "CUSTOM" and op.custom else op.name
    rules = {
        "xnnpack": _xnnpack_rule(op, T, model, producers),
        "gpu": _gpu_rule(op, T),
        "nnapi": _nnapi_rule(op, T),
    }
    entry: dict[str, Any] = {
        "index": op.index,
        "op": name,
        "inputs": [_tensor_json(t) for t in ins],
        "outputs": [_tensor_json(t) for t in outs],
        "macs": _macs(op, T),
        "elementwise_ops": _elementwise(op, T),
        "bytes_moved": int(moved),
        "weights_bytes": int(sum(t.nbytes for t in {t.index: t for t in ins}.values() if t.const)),
        "precision": _op_precision(op, T, producers),
        "delegates": {
            k: {"supported": why is None, "reason": why, "source": "rules"}
            for k, why in rules.items()
        },
    }
    level = _nnapi_level(op)
    if level is not None and rules["nnapi"] is None:
        entry["delegates"]["nnapi"]["min_android_api"] = level
    return entry


def _totals(per_op: list[dict[str, Any]], T: list[Tensor], file_size: int) -> dict[str, Any]:
    by_type: dict[str, int] = {}
    for o in per_op:
        by_type[o["op"]] = by_type.get(o["op"], 0) + 1
    weights = sum(t.nbytes for t in T if t.const)
    totals = {
        "ops": len(per_op),
        "ops_by_type": dict(sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))),
        "macs": int(sum(o["macs"] for o in per_op)),
        "elementwise_ops": int(sum(o["elementwise_ops"] for o in per_op)),
        "bytes_moved": int(sum(o["bytes_moved"] for o in per_op)),
        "weights_bytes": int(weights),
        "file_size_bytes": file_size,
        "macs_by_precision": {},
    }
    for o in per_op:
        if o["macs"]:
            mp = totals["macs_by_precision"]
            mp[o["precision"]] = mp.get(o["precision"], 0) + o["macs"]
    return totals


def analyze(
    path: str | os.PathLike,
    profile: Any | None = None,
    *,
    gpu_analyzer: bool = True,
    xnnpack_check: bool = True,
) -> dict[str, Any]:
    """Static analysis of a `.tflite` file; JSON-able.

    Args:
        path: the `.tflite` file.
        profile: a device profile (edgekit.profiles.DeviceProfile or any object with
            `name`, `memory.app_memory_mb`, `accelerators`, `cpu.dotprod`, `cpu.fp16`); adds
            findings for that device.
        gpu_analyzer: also run LiteRT's model analyzer for GPU compatibility.
        xnnpack_check: also load the model in LiteRT's Interpreter and record which ops XNNPACK
            really took (compared with the rules' prediction).

    Returns:
        A dict: path, file_size_bytes, subgraphs, precision, inputs, outputs, ops (per op:
        index, op, inputs, outputs, macs, elementwise_ops, bytes_moved, weights_bytes,
        precision, delegates {xnnpack, gpu, nnapi: {supported, reason}}), totals, peak_activation,
        delegates (per delegate: source, fallback_ops, and for XNNPACK the interpreter's
        outcome), findings [{level, code, message}].
    """
    p = Path(path)  # a path or a ModelArtifact, whose file is read once
    if not p.is_file():
        raise UsageError(f"Expected a .tflite file. Received: {path} (no such file).")
    # An artifact's parsed file, else the file read now (UsageError if it is not a TFLite one).
    opened = getattr(path, "format", None) == "tflite"
    model = path.tflite if opened else TFLiteModel.read(p)  # type: ignore[union-attr]
    data = model.data
    info = model.summary()
    try:
        g = model.graph()
        T, ops, graph_in, graph_out = g.tensors, g.ops, g.inputs, g.outputs
    except Exception as e:
        raise ModelLoadError(
            f"Cannot read the TFLite flatbuffer {p.name}: {e}. The file is truncated or "
            "damaged; re-export it."
        ) from None
    producers = {o: op for op in ops for o in op.outputs if o >= 0}
    per_op = [_op_entry(op, T, model, producers) for op in ops]
    delegates = {
        "xnnpack": _xnnpack_summary(p, per_op, xnnpack_check),
        "gpu": _gpu_summary(p, per_op, gpu_analyzer),
        "nnapi": {
            "source": "edgekit rules from the NNAPI delegate's Validate() (LiteRT "
            "tflite/delegates/nnapi/nnapi_delegate.cc)",
            "checked_against_runtime": False,
            "note": "Not cross-checked: NNAPI needs an Android device and its drivers, and "
            "drivers may still reject ops the delegate accepts. NNAPI is deprecated from "
            "Android 15.",
        },
    }
    for k in ("xnnpack", "gpu", "nnapi"):
        delegates[k]["fallback_ops"] = [
            o["index"] for o in per_op if not o["delegates"][k]["supported"]
        ]

    result: dict[str, Any] = {
        "path": str(p),
        "file_size_bytes": len(data),
        "subgraphs": model.subgraphs,
        "analyzed_subgraph": 0,
        "precision": _model_precision(info, per_op),
        "inputs": info["inputs"],
        "outputs": info["outputs"],
        "select_tf_ops": info["select_tf_ops"],
        "custom_ops": info["custom_ops"],
        "dynamic_dimensions": any(-1 in t.signature for t in T),
        "ops": per_op,
        "totals": _totals(per_op, T, len(data)),
        "peak_activation": _peak(T, ops, graph_in, graph_out),
        "delegates": delegates,
        "findings": [],
    }
    result["findings"] = findings(result, profile)
    return result


def _xnnpack_summary(path: Any, per_op: list[dict[str, Any]], check: bool) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "source": "edgekit rules from LiteRT's XNNPACK delegate (tflite/delegates/xnnpack/"
        "README.md and xnnpack_delegate.cc)",
        "checked_against_runtime": False,
    }
    predicted = [o["index"] for o in per_op if o["delegates"]["xnnpack"]["supported"]]
    summary["predicted_partitions"] = _partitions(predicted, len(per_op))
    if not check:
        return summary
    seen = xnnpack_observed(path)
    if "error" in seen:
        summary["runtime_error"] = seen["error"]
        return summary
    real = set(seen["delegated"])
    summary.update(
        checked_against_runtime=True,
        runtime=seen["runtime"],
        partitions=seen["partitions"],
        delegated_ops=sorted(real),
        disagreements=[
            {
                "index": o["index"],
                "op": o["op"],
                "predicted": o["delegates"]["xnnpack"]["supported"],
                "interpreter": o["index"] in real,
            }
            for o in per_op
            if o["delegates"]["xnnpack"]["supported"] != (o["index"] in real)
        ],
    )
    # The interpreter is the authority for this runtime: per-op verdicts follow it, the rule's
    # reason stays for the ops it rejected.
    for o in per_op:
        x = o["delegates"]["xnnpack"]
        took = o["index"] in real
        if took != x["supported"]:
            x["rule_said"] = x["supported"]
            x["supported"] = took
            x["reason"] = (
                None
                if took
                else x["reason"] or "LiteRT's XNNPACK delegate did not take it (reason unknown)"
            )
        x["source"] = "interpreter"
    return summary


def _partitions(indices: list[int], n: int) -> int:
    """Runs of consecutive supported ops (execution order); an approximation of partitions."""
    runs, prev = 0, -2
    for i in indices:
        if i != prev + 1:
            runs += 1
        prev = i
    return runs


def _gpu_summary(path: Any, per_op: list[dict[str, Any]], use_analyzer: bool) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "source": "edgekit rules from gpu_compatibility.cc (LiteRT tflite/tools/versioning)",
        "checked_against_runtime": False,
    }
    if not use_analyzer:
        return summary
    text, note = run_gpu_analyzer(path)
    if text is None:
        summary["analyzer"] = {"ran": False, "note": note}
        return summary
    parsed = parse_gpu_analyzer(text)
    rules_reject = [o["index"] for o in per_op if not o["delegates"]["gpu"]["supported"]]
    for i, reason in parsed["warnings"].items():
        if 0 <= i < len(per_op):
            g = per_op[i]["delegates"]["gpu"]
            g.update(supported=False, reason=reason, source="analyzer")
    analyzer: dict[str, Any] = {
        "ran": True,
        "version": note,
        "flagged_ops": sorted(parsed["warnings"]),
        "says_compatible": parsed["compatible"],
    }
    if parsed["compatible"] and rules_reject:
        # LiteRT's model_analyzer.cc no longer calls CheckGpuDelegateCompatibility: it prints
        # "looks compatible" for any model (even Flex ops). Our rules decide then.
        analyzer["note"] = (
            f"The analyzer in {note} reported no GPU issue although edgekit's rules reject "
            f"{len(rules_reject)} op(s); this build's analyzer does not check ops, so the rules "
            "decided."
        )
        analyzer["checks_ops"] = False
    summary["analyzer"] = analyzer
    summary["source"] = (
        f"LiteRT model analyzer ({note}) + edgekit rules from gpu_compatibility.cc"
        if parsed["warnings"]
        else summary["source"]
    )
    return summary


# --- findings ----------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def findings(result: dict[str, Any], profile: Any | None) -> list[dict[str, str]]:
    """Findings for people and gates: [{level: error|warning|info, code, message}]."""
    out: list[dict[str, str]] = []

    def add(level: str, code: str, message: str) -> None:
        out.append({"level": level, "code": code, "message": message})

    tot = result["totals"]
    if result["select_tf_ops"]:
        add(
            "warning",
            "flex-ops",
            f"Uses TensorFlow (Flex) ops {', '.join(result['select_tf_ops'])}: they need the "
            "Flex delegate, run on the CPU, and fail on stock Android LiteRT.",
        )
    if result["subgraphs"] > 1:
        add(
            "info",
            "subgraphs",
            f"The model has {result['subgraphs']} subgraphs (control flow); only the main one "
            "is counted.",
        )
    if result["dynamic_dimensions"]:
        add("info", "dynamic-shape", "Dynamic dimensions (-1) are counted as 1.")
    if profile is None:
        return out

    name = getattr(profile, "name", "the device")
    mem = getattr(profile, "memory", None)
    budget_mb = getattr(mem, "app_memory_mb", None) if mem is not None else None
    limit = "app memory budget"
    if not budget_mb and mem is not None and getattr(mem, "ram_mb", None):
        # No documented per-app limit: the installed RAM is the one bound that is known.
        budget_mb = mem.ram_mb
        limit = "RAM (the profile gives no app_memory_mb, so its ram_mb is the limit used)"
    if budget_mb:
        budget = float(budget_mb) * 1024 * 1024
        need = tot["file_size_bytes"] + result["peak_activation"]["bytes"]
        if need > budget:
            add(
                "error",
                "memory-exceeded",
                f"Model ({_mb(tot['file_size_bytes'])}) + peak activations "
                f"({_mb(result['peak_activation']['bytes'])}) = {_mb(need)} exceeds {name}'s "
                f"{limit}: {budget_mb} MB. "
                + (
                    "Quantize it (int8 weights are 4x smaller) or use a smaller model."
                    if result["precision"] in ("float32", "mixed")
                    else "Use a smaller model or a lower input resolution."
                ),
            )
        elif need > 0.5 * budget:
            add(
                "warning",
                "memory-high",
                f"Model + peak activations = {_mb(need)}, over half of {name}'s {limit}: "
                f"{budget_mb} MB; the runtime and the app need room too.",
            )
    for acc in getattr(profile, "accelerators", None) or []:
        d = result["delegates"].get(acc)
        if d is None:
            continue
        fb = d["fallback_ops"]
        if fb:
            kinds = sorted({result["ops"][i]["op"] for i in fb})
            add(
                "warning",
                f"{acc}-fallback",
                f"{len(fb)} of {tot['ops']} ops would fall back from {acc} to the CPU on {name} "
                f"({', '.join(kinds[:6])}{' ...' if len(kinds) > 6 else ''}); each switch "
                "copies tensors between the delegate and the CPU.",
            )
    cpu = getattr(profile, "cpu", None)
    prec = result["precision"]
    if cpu is not None and getattr(cpu, "arch", "aarch64") == "aarch64":
        if prec in ("int8", "uint8", "int16x8") and not getattr(cpu, "dotprod", True):
            add(
                "warning",
                "no-dotprod",
                f"{name}'s CPU has no dot-product instructions (asimddp): int8 convolutions run "
                "on slower widening multiplies; expect a smaller int8 speed-up than on newer "
                "cores.",
            )
        if prec == "float16" and not getattr(cpu, "fp16", True):
            add(
                "info",
                "no-fp16-arith",
                f"{name}'s CPU has no fp16 arithmetic (asimdhp): float16 weights are unpacked to "
                "float32 at load, saving file size but not compute time or activation memory.",
            )
    return out
