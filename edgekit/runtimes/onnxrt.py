"""ONNX Runtime runner: CPU execution provider, or CUDA / TensorRT when that build is installed.

Imports `onnxruntime` inside functions; never TensorFlow. `onnx` itself is imported only for models
with integer inputs or outputs, to read their scale and zero point from the graph.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ModelLoadError, TargetUnavailableError, UsageError
from edgekit.runtimes.base import Runner, TensorInfo, dequantize, quantize

GRAPH_OPTIMIZATION = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
    "tensor(string)": "str",
}


def import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise TargetUnavailableError(
            "Running .onnx models needs ONNX Runtime: pip install onnxruntime (or onnxruntime-gpu)."
        ) from None
    return onnxruntime


def onnx_gpu_providers() -> list[str]:
    """GPU execution providers this onnxruntime build offers (TensorRT before CUDA)."""
    ort = import_ort()
    avail = set(ort.get_available_providers())
    return [p for p in GPU_PROVIDERS if p in avail]


def _dim(d: Any) -> int | None:
    return int(d) if isinstance(d, int) and d >= 0 else None


def _io_quantization(path: str, names: list[str], *, outputs: bool) -> dict[str, tuple[float, int]]:
    """Scale/zero point of integer graph inputs (read by a DequantizeLinear) or outputs (made by
    a QuantizeLinear), from the model's initializers."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path, load_external_data=False)
    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consts = {}
    for node in g.node:  # constants may also be Constant nodes
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(a.t)
    values = {**consts, **inits}
    found: dict[str, tuple[float, int]] = {}
    for node in g.node:
        if outputs and node.op_type == "QuantizeLinear" and node.output[0] in names:
            key = node.output[0]
        elif not outputs and node.op_type == "DequantizeLinear" and node.input[0] in names:
            key = node.input[0]
        else:
            continue
        scale = values.get(node.input[1])
        zp = values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else 0
        if scale is None or np.size(scale) != 1:
            continue
        found[key] = (float(np.asarray(scale).reshape(())), int(np.asarray(zp).reshape(())))
    return found


class OnnxRunner(Runner):
    """An onnxruntime InferenceSession fed through IOBinding, so invoke() is the run alone."""

    format = "onnx"
    runtime = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        target: str = "cpu",
        threads: int | None = 1,
        graph_optimization: str = "all",
        providers: list[str] | None = None,
    ) -> None:
        super().__init__(path, target=target, threads=threads)
        ort = import_ort()
        self.runtime_version = ort.__version__
        if graph_optimization not in GRAPH_OPTIMIZATION:
            raise UsageError(
                f"Unknown graph optimization level {graph_optimization!r}. "
                f"Expected one of: {', '.join(GRAPH_OPTIMIZATION)}."
            )
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION[graph_optimization]
        )
        so.log_severity_level = 3  # errors only: warnings about unused initializers are noise
        self.graph_optimization = graph_optimization
        if providers is None:
            if target == "gpu":
                gpu = onnx_gpu_providers()
                if not gpu:
                    have = ", ".join(ort.get_available_providers())
                    raise TargetUnavailableError(
                        "--target gpu needs onnxruntime-gpu with the CUDA or TensorRT execution "
                        f"provider; this onnxruntime offers {have}. "
                        "Install onnxruntime-gpu or use --target cpu."
                    )
                providers = [*gpu, "CPUExecutionProvider"]
            else:
                providers = ["CPUExecutionProvider"]
        self.requested_providers = list(providers)
        try:
            self._sess = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as e:
            msg = " ".join(str(e).split())
            if "execution provider" in msg.lower() or "provider" in type(e).__name__.lower():
                raise TargetUnavailableError(
                    f"ONNX Runtime could not start {providers}: {msg}. Use --target cpu."
                ) from None
            raise ModelLoadError(
                f"ONNX Runtime cannot load {Path(path).name}: {msg[:300]}. The file is truncated, "
                "damaged or not an ONNX model; re-export it."
            ) from None
        self.providers = list(self._sess.get_providers())
        ins, outs = self._sess.get_inputs(), self._sess.get_outputs()
        iq: dict[str, tuple[float, int]] = {}
        oq: dict[str, tuple[float, int]] = {}
        int_types = ("tensor(int8)", "tensor(uint8)", "tensor(int16)", "tensor(uint16)")
        if any(i.type in int_types for i in ins) or any(o.type in int_types for o in outs):
            iq = _io_quantization(str(path), [i.name for i in ins], outputs=False)
            oq = _io_quantization(str(path), [o.name for o in outs], outputs=True)
        self.inputs = [self._info(i, iq) for i in ins]
        self.outputs = [self._info(o, oq) for o in outs]
        self._validate_io()
        self._binding = self._sess.io_binding()
        self._device = "cuda" if self.providers[0] in GPU_PROVIDERS else "cpu"

    @staticmethod
    def _info(arg: Any, quant: dict[str, tuple[float, int]]) -> TensorInfo:
        dtype = _ORT_TYPES.get(arg.type, arg.type)
        shape = tuple(_dim(d) for d in (arg.shape or []))
        return TensorInfo(name=arg.name, shape=shape, dtype=dtype, quantization=quant.get(arg.name))

    def _set_input(self, x: np.ndarray) -> None:
        t = self.inputs[0]
        if t.quantization is not None:
            x = quantize(x, t.dtype, *t.quantization)
        elif t.dtype != "float32":
            x = x.astype(t.dtype)
        self._x = np.ascontiguousarray(x)  # the binding refers to this memory; keep it alive
        b = self._binding
        b.clear_binding_inputs()
        b.clear_binding_outputs()
        b.bind_cpu_input(t.name, self._x)
        for o in self.outputs:
            b.bind_output(o.name, self._device)

    def invoke(self) -> None:
        self._sess.run_with_iobinding(self._binding)

    def outputs_float(self) -> list[np.ndarray]:
        res = []
        for y, t in zip(self._binding.copy_outputs_to_cpu(), self.outputs, strict=True):
            if t.quantization is not None:
                y = dequantize(y, *t.quantization)
            elif y.dtype != np.float32:
                y = y.astype(np.float32)
            res.append(y)
        return res

    def _describe(self) -> dict[str, Any]:
        used = self.providers[0] if self.providers else "unknown"
        fallback = None
        if self.target == "gpu" and used not in GPU_PROVIDERS:
            fallback = f"requested {self.requested_providers[0]} but the session runs on {used}"
        elif self.requested_providers and used != self.requested_providers[0]:
            fallback = f"requested {self.requested_providers[0]}; the session uses {used}"
        return {
            "accelerator": "GPU" if used in GPU_PROVIDERS else "CPU",
            "provider": used,
            "providers": self.providers,
            "graph_optimization": self.graph_optimization,
            "fallback": fallback,
        }

    def close(self) -> None:
        self._sess = None
        self._binding = None
