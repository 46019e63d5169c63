"""The one reader of `.tflite` flatbuffers, with LiteRT's generated schema; never TensorFlow.

    model = TFLiteModel.read("model.tflite")     # or the file's bytes
    model.summary()          # ops, I/O tensors (as the signature names them), dtypes, quantization
    graph = model.graph()    # subgraph 0: every tensor and the ops in execution order
    model.metadata(name)     # a metadata entry's buffer (export.android reads TFLite metadata)

`edgekit.export.tflite.inspect_tflite` is `summary()`; the static analysis
(edgekit.targets.emulated.static) counts over `graph()`; a ModelArtifact reads its file once
through here.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from edgekit.errors import UsageError

# Bytes per element of each TensorType; int4 weights are packed two to a byte.
ITEMSIZE = {
    "float32": 4.0,
    "float16": 2.0,
    "bfloat16": 2.0,
    "float64": 8.0,
    "int32": 4.0,
    "uint32": 4.0,
    "int64": 8.0,
    "uint64": 8.0,
    "int16": 2.0,
    "uint16": 2.0,
    "int8": 1.0,
    "uint8": 1.0,
    "bool": 1.0,
    "int4": 0.5,
    "complex64": 8.0,
    "complex128": 16.0,
    "string": 0.0,
    "resource": 0.0,
    "variant": 0.0,
}

# Ops whose work is multiply-accumulates and whose first input is the activation: an int8
# activation here means integer kernels run.
COMPUTE_OPS = frozenset(
    {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV", "CONV_3D"}
)


class Tensor:
    """One tensor of a subgraph as stored (`shape` holds 1 where the signature has -1)."""

    __slots__ = (
        "const",
        "dtype",
        "index",
        "name",
        "nbytes",
        "per_channel",
        "quantized",
        "shape",
        "signature",
        "variable",
    )  # fmt: skip

    def elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= max(int(d), 0)
        return n


class Op:
    """One operator: its builtin name (or CUSTOM and the custom code), tensors and options table."""

    __slots__ = ("custom", "index", "inputs", "name", "options", "outputs", "version")


@dataclass
class Graph:
    """A subgraph: its tensors, its ops in execution order, its input and output tensor indices."""

    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]


class TFLiteModel:
    """A `.tflite` file read once: the parsed flatbuffer and what is derived from it."""

    def __init__(self, data: bytes, path: str | os.PathLike | None = None) -> None:
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise UsageError("Not a TFLite flatbuffer (no 'TFL3' identifier). Pass a .tflite file.")
        from ai_edge_litert import schema_py_generated as schema

        self.data = bytes(data)
        self.path = None if path is None else str(path)
        self.schema = schema
        self.model = schema.Model.GetRootAs(self.data, 0)

    @classmethod
    def read(cls, model: str | os.PathLike | bytes) -> TFLiteModel:
        """From a path or the file's bytes."""
        if isinstance(model, bytes | bytearray):
            return cls(bytes(model))
        return cls(Path(model).read_bytes(), model)

    @property
    def subgraphs(self) -> int:
        return self.model.SubgraphsLength()

    @cached_property
    def _names(self) -> tuple[dict[int, str], dict[int, str], dict[int, str]]:
        """(op names, dtype names, builtin option table names) by their schema codes."""
        s = self.schema
        return (
            {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")},
            {v: k.lower() for k, v in vars(s.TensorType).items() if not k.startswith("_")},
            {v: k for k, v in vars(s.BuiltinOptions).items() if not k.startswith("_")},
        )

    def _op_code(self, index: int) -> tuple[str, str | None, int]:
        """(builtin name, custom code, version) of the operator code at `index`."""
        oc = self.model.OperatorCodes(index)
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        name = self._names[0].get(code, f"BUILTIN_{code}")
        custom = oc.CustomCode().decode() if name == "CUSTOM" and oc.CustomCode() else None
        return name, custom, int(oc.Version())

    def metadata(self, name: str) -> bytes | None:
        """The buffer of the model's metadata entry `name` (TFLite metadata: "TFLITE_METADATA"),
        or None when it has none."""
        m = self.model
        for i in range(m.MetadataLength()):
            e = m.Metadata(i)
            if (e.Name() or b"").decode(errors="replace") == name:
                return m.Buffers(e.Buffer()).DataAsNumpy().tobytes()
        return None

    # --- the summary (export.tflite.inspect_tflite) ---------------------------------------------

    def summary(self) -> dict[str, Any]:
        """ops (sorted builtin op names), select_tf_ops (Flex ops), custom_ops, inputs and outputs
        (name, shape, dtype, quantization {scale, zero_point} or None), input_dtype,
        output_dtype, signatures, tensor_dtypes (constant tensors by dtype), activation_dtypes
        (the other tensors by dtype), per_channel_tensors (constants with one scale per channel),
        integer_compute_ops / float_compute_ops (conv/matmul ops by activation dtype), subgraphs.
        A copy: callers may change it."""
        return copy.deepcopy(self._summary)

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return self.summary()["inputs"]

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return self.summary()["outputs"]

    @cached_property
    def _summary(self) -> dict[str, Any]:
        m, schema = self.model, self.schema
        dtype_names = self._names[1]
        codes = [self._op_code(i)[:2] for i in range(m.OperatorCodesLength())]

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
                if name in COMPUTE_OPS and op.InputsLength():
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
        io = lambda i: _tensor_info(main, i, dtype_names)  # noqa: E731
        inputs = [io(main.Inputs(i)) for i in range(main.InputsLength())]
        outputs = [io(main.Outputs(i)) for i in range(main.OutputsLength())]
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
                    {**io(sd.Inputs(j).TensorIndex()), "name": sd.Inputs(j).Name().decode()}
                    for j in range(sd.InputsLength())
                ]
                outputs = [
                    {**io(sd.Outputs(j).TensorIndex()), "name": sd.Outputs(j).Name().decode()}
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

    # --- the graph (static analysis) -------------------------------------------------------------

    def graph(self) -> Graph:
        """Subgraph 0: its tensors (sizes in bytes: a constant's buffer, else elements x dtype
        size), its ops in execution order (with their builtin options tables), its I/O."""
        return self._graph

    @cached_property
    def _graph(self) -> Graph:
        m, schema = self.model, self.schema
        _, dtype_names, option_names = self._names
        sg = m.Subgraphs(0)
        tensors = []
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            x = Tensor()
            x.index = i
            x.name = t.Name().decode(errors="replace") if t.Name() else f"tensor_{i}"
            # `shape` holds 1 where the signature has -1 (a dynamic batch): counted as 1.
            x.shape = [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []
            x.signature = (
                [int(d) for d in t.ShapeSignatureAsNumpy()] if t.ShapeSignatureLength() else x.shape
            )
            x.dtype = dtype_names.get(t.Type(), str(t.Type()))
            buf = m.Buffers(t.Buffer()) if 0 < t.Buffer() < m.BuffersLength() else None
            size = 0
            if buf is not None:
                # Large models keep buffers outside the flatbuffer (offset/size); both count.
                size = buf.DataLength() or int(buf.Size())
            x.const = size > 0
            x.nbytes = size if x.const else int(x.elements() * ITEMSIZE.get(x.dtype, 4.0))
            x.variable = bool(t.IsVariable())
            q = t.Quantization()
            x.quantized = q is not None and q.ScaleLength() > 0
            x.per_channel = q is not None and q.ScaleLength() > 1
            tensors.append(x)
        ops = []
        for i in range(sg.OperatorsLength()):
            o = sg.Operators(i)
            op = Op()
            op.index = i
            op.name, op.custom, op.version = self._op_code(o.OpcodeIndex())
            op.inputs = [int(v) for v in o.InputsAsNumpy()] if o.InputsLength() else []
            op.outputs = [int(v) for v in o.OutputsAsNumpy()] if o.OutputsLength() else []
            op.options = None
            name = option_names.get(o.BuiltinOptionsType())
            table = o.BuiltinOptions()
            if name and name != "NONE" and table is not None and hasattr(schema, name):
                op.options = getattr(schema, name)()
                op.options.Init(table.Bytes, table.Pos)
            ops.append(op)
        ins = [int(v) for v in sg.InputsAsNumpy()] if sg.InputsLength() else []
        outs = [int(v) for v in sg.OutputsAsNumpy()] if sg.OutputsLength() else []
        return Graph(tensors, ops, ins, outs)

    def const_int32(self, tensor: Tensor) -> list[int] | None:
        """Values of a small int32 constant (axes, strides) of subgraph 0; None if not one."""
        if not tensor.const or tensor.dtype != "int32" or tensor.nbytes > 64:
            return None
        import numpy as np

        t = self.model.Subgraphs(0).Tensors(tensor.index)
        raw = self.model.Buffers(t.Buffer()).DataAsNumpy()
        return [int(v) for v in np.frombuffer(raw.tobytes(), dtype="<i4")]


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
