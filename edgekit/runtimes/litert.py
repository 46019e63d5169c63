"""LiteRT (.tflite) runners: the Interpreter on CPU (XNNPACK on or off) and the GPU accelerator.

Imports `ai_edge_litert` (or `tflite_runtime` as a fallback) inside functions; never TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import (
    KernelPrepareError,
    ModelLoadError,
    TargetUnavailableError,
    UnsupportedModelError,
)
from edgekit.runtimes.base import Runner, TensorInfo, dequantize, quantize

# LiteRT's message when a kernel refuses one node at allocate_tensors(), and the check it names
# ("kernel_util.cc:349 no_integer_overflow_from_quantization was not true.").
_PREPARE_FAILED = re.compile(r"Node number (?P<node>\d+) \((?P<op>\w+)\) failed to prepare")
_KERNEL_CHECK = re.compile(r"\.cc:\d+ ([^.]+)")
_OUTPUT_N = re.compile(r"output_(\d+)")
_CHECK_HINTS = {
    # The fused activation's bound (6 for ReLU6) divided by the output scale must fit in int32:
    # it does not when the layer's output is (nearly) constant on the calibration images.
    "no_integer_overflow_from_quantization": ": the layer's output range on the calibration "
    "images is (nearly) zero, too small for the kernel's fixed-point scale",
}


def _in_output_order(details: list[dict[str, Any]], names: dict[int, str]) -> list[dict[str, Any]]:
    """Outputs named output_0, output_1 ... (edgekit's and Keras' exports) in that order;
    LiteRT lists a signature's outputs sorted by name (output_10 before output_2)."""
    nums = [_OUTPUT_N.fullmatch(names.get(d["index"], "")) for d in details]
    if not all(nums):
        return details
    order = sorted(range(len(details)), key=lambda i: int(nums[i][1]))  # type: ignore[index]
    return [details[i] for i in order]


def import_interpreter() -> tuple[Any, str, str]:
    """(interpreter module, runtime name, version): ai_edge_litert first, tflite_runtime second."""
    try:
        import ai_edge_litert
        from ai_edge_litert import interpreter as mod

        return mod, "litert", str(getattr(ai_edge_litert, "__version__", "unknown"))
    except ImportError:
        pass
    try:
        import tflite_runtime
        from tflite_runtime import interpreter as mod

        return mod, "tflite_runtime", str(getattr(tflite_runtime, "__version__", "unknown"))
    except ImportError:
        raise TargetUnavailableError(
            "Running .tflite models needs LiteRT: pip install ai-edge-litert "
            "(or tflite-runtime). Neither is installed."
        ) from None


@contextlib.contextmanager
def native_stderr() -> Iterator[dict[str, str]]:
    """Collect what native code writes to file descriptor 2 meanwhile (LiteRT prints an INFO
    line for every XNNPACK delegate it creates); lines other than INFO are written back."""
    got = {"text": ""}
    try:
        saved = os.dup(2)
    except OSError:
        yield got
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield got
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            got["text"] = tmp.read().decode(errors="replace")
    keep = [ln for ln in got["text"].splitlines() if ln.strip() and not ln.startswith("INFO:")]
    if keep:
        os.write(2, ("\n".join(keep) + "\n").encode())


def _np_dtype_name(dtype: Any) -> str:
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(getattr(dtype, "__name__", dtype))


def _tensor_info(d: dict[str, Any], name: str | None = None) -> TensorInfo:
    sig = d.get("shape_signature")
    if sig is None or len(sig) == 0:
        sig = d["shape"]
    shape = tuple(None if int(s) < 0 else int(s) for s in sig)
    dtype = _np_dtype_name(d["dtype"])
    q = d.get("quantization_parameters") or {}
    scales = q.get("scales")
    quant: tuple[float, int] | None = None
    if dtype in ("int8", "uint8", "int16") and scales is not None and len(scales) > 0:
        # Per-channel I/O never comes out of the converter; refuse rather than guess.
        if len(scales) > 1:
            raise UnsupportedModelError(
                f"Tensor '{d['name']}' has per-channel quantization on a model input/output; "
                "edgekit supports per-tensor quantized inputs and outputs. Re-export the model."
            )
        quant = (float(scales[0]), int(q["zero_points"][0]))
    return TensorInfo(name=name or d["name"], shape=shape, dtype=dtype, quantization=quant)


class LiteRTRunner(Runner):
    """LiteRT Interpreter on CPU. Python's default for num_threads is 1; we always pass it."""

    format = "tflite"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        threads: int | None = 1,
        xnnpack: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(path, target="cpu", threads=threads)
        if options:
            raise TypeError(f"Unknown LiteRT runner options: {', '.join(sorted(options))}")
        mod, self.runtime, self.runtime_version = import_interpreter()
        self.xnnpack = xnnpack
        resolver = mod.OpResolverType
        # AUTO applies the default delegate (XNNPACK); the reference kernels need it switched off.
        rtype = resolver.AUTO if xnnpack else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        err = None
        with native_stderr() as native:
            try:
                self._it = mod.Interpreter(
                    model_path=str(path), num_threads=threads, experimental_op_resolver_type=rtype
                )
                self._it.allocate_tensors()
            except (ValueError, RuntimeError) as e:
                err = e
        if err is not None:
            detail = " ".join(f"{err} {native['text']}".split())[:300]
            prepare = _PREPARE_FAILED.search(detail)
            if prepare:
                # A valid file whose node the kernel refuses (e.g. int16x8 depthwise convolutions
                # whose scales overflow the kernel's fixed-point multiplier): not a damaged file.
                before = detail[: prepare.start()]
                checks = _KERNEL_CHECK.findall(before)
                why = checks[-1].strip(" .") if checks else "the kernel refused its parameters"
                why += _CHECK_HINTS.get(why.split(" ", 1)[0], "")
                raise KernelPrepareError(
                    f"LiteRT cannot run {Path(path).name}: node {prepare['node']} "
                    f"({prepare['op']}) failed to prepare ({why}). This LiteRT build has no kernel "
                    "for that op with these quantization parameters; export it in another mode.",
                    node=int(prepare["node"]),
                    op=prepare["op"],
                )
            raise ModelLoadError(
                f"LiteRT cannot load {Path(path).name}: {detail}. The file is truncated, damaged "
                "or uses ops this LiteRT build lacks; re-export it."
            )
        self._in = self._it.get_input_details()
        self._out = self._it.get_output_details()
        in_names, out_names = self._signature_names()
        self._out = _in_output_order(self._out, out_names)
        self.inputs = [_tensor_info(d, in_names.get(d["index"])) for d in self._in]
        self.outputs = [_tensor_info(d, out_names.get(d["index"])) for d in self._out]
        self._validate_io()
        self._cur_shape = tuple(int(s) for s in self._in[0]["shape"])

    def _signature_names(self) -> tuple[dict[int, str], dict[int, str]]:
        """Tensor index -> signature name ('image', 'output_0', a Keras layer name), in and out."""
        try:
            sigs = self._it._get_full_signature_list()  # no public accessor for the index map
            if len(sigs) != 1:
                return {}, {}
            sig = next(iter(sigs.values()))
            ins = {int(idx): name for name, idx in sig["inputs"].items()}
            outs = {int(idx): name for name, idx in sig["outputs"].items()}
            return ins, outs
        except Exception:  # older builds: keep tensor names
            return {}, {}

    def _set_input(self, x: np.ndarray) -> None:
        d = self._in[0]
        if x.shape != self._cur_shape:
            # Only reached for a dynamic batch (check_batch refused other shapes).
            self._it.resize_tensor_input(d["index"], list(x.shape), strict=True)
            self._it.allocate_tensors()
            self._cur_shape = tuple(x.shape)
        t = self.inputs[0]
        if t.quantization is not None:
            x = quantize(x, t.dtype, *t.quantization)
        elif t.dtype != "float32":
            x = x.astype(t.dtype)
        self._it.set_tensor(d["index"], x)

    def invoke(self) -> None:
        self._it.invoke()

    def outputs_float(self) -> list[np.ndarray]:
        res = []
        for d, t in zip(self._out, self.outputs, strict=True):
            y = self._it.get_tensor(d["index"])
            if t.quantization is not None:
                y = dequantize(y, *t.quantization)
            elif y.dtype != np.float32:
                y = y.astype(np.float32)
            res.append(y)
        return res

    def delegate_partitions(self) -> int:
        """Number of delegate kernels in the execution plan (XNNPACK partitions on CPU)."""
        try:
            return sum(1 for op in self._it._get_ops_details() if op.get("op_name") == "DELEGATE")
        except Exception:
            return -1

    def _describe(self) -> dict[str, Any]:
        parts = self.delegate_partitions()
        try:
            n_ops = sum(1 for op in self._it._get_ops_details() if op.get("op_name") != "DELEGATE")
        except Exception:
            n_ops = -1
        if not self.xnnpack:
            delegate, fallback = "none (builtin reference kernels)", None
        elif parts == 1:
            delegate, fallback = "XNNPACK (1 partition)", None
        elif parts > 1:
            delegate = f"XNNPACK ({parts} partitions)"
            fallback = (
                f"XNNPACK took the graph in {parts} partitions; the ops between them run on "
                "builtin CPU kernels"
            )
        elif parts == 0:
            delegate = "none"
            fallback = "XNNPACK was requested but took no ops; the model ran on builtin CPU kernels"
        else:
            delegate, fallback = "XNNPACK (requested; partitions unknown)", None
        return {
            "accelerator": "CPU",
            "delegate": delegate,
            "xnnpack": self.xnnpack,
            "ops": n_ops,
            "fallback": fallback,
        }

    def close(self) -> None:
        self._it = None


# --- GPU: LiteRT CompiledModel with the GPU accelerator -----------------------------------------


def gpu_devices_present() -> list[str]:
    """Device nodes of a GPU this process could use (NVIDIA, or a DRM render node)."""
    found = []
    if Path("/dev/nvidia0").exists():
        found.append("/dev/nvidia0")
    dri = Path("/dev/dri")
    if dri.is_dir():
        found.extend(str(p) for p in sorted(dri.glob("renderD*")))
    return found


def litert_gpu_available() -> tuple[bool, str]:
    """Whether the installed LiteRT build ships a GPU accelerator and the machine has a GPU."""
    try:
        import ai_edge_litert
    except ImportError:
        return False, "ai-edge-litert is not installed (tflite-runtime has no GPU accelerator)"
    libdir = Path(ai_edge_litert.__file__).parent
    libs = sorted(p.name for p in libdir.glob("libLiteRt*Accelerator*.so"))
    if not libs:
        return False, f"this ai-edge-litert build ({libdir}) ships no GPU accelerator library"
    if not gpu_devices_present():
        return False, "no GPU device found (/dev/nvidia0 or /dev/dri/renderD*)"
    return True, ", ".join(libs)


class LiteRTGpuRunner(Runner):
    """LiteRT CompiledModel with GPU | CPU accelerators; reports whether the GPU took every op."""

    format = "tflite"

    def __init__(self, path: str | os.PathLike, *, threads: int | None = 1, **options: Any) -> None:
        super().__init__(path, target="gpu", threads=threads)
        options.pop("xnnpack", None)
        if options:
            raise TypeError(f"Unknown LiteRT GPU runner options: {', '.join(sorted(options))}")
        ok, why = litert_gpu_available()
        if not ok:
            raise TargetUnavailableError(f"--target gpu is not available for .tflite here: {why}.")
        import ai_edge_litert
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.options import CpuOptions, Options

        self.runtime, self.runtime_version = "litert", str(ai_edge_litert.__version__)
        opts = Options(
            hardware_accelerators=HardwareAccelerator.GPU | HardwareAccelerator.CPU,
            cpu_options=CpuOptions(num_threads=threads or 1),
        )
        try:
            self._cm = CompiledModel.from_file(str(path), options=opts)
        except Exception as e:
            why = " ".join(str(e).split())
            raise TargetUnavailableError(
                f"LiteRT could not compile {Path(path).name} for the GPU ({why}). Use --target cpu."
            ) from None
        self._full = bool(self._cm.is_fully_accelerated())
        sigs = self._cm.get_signature_list()
        self._sig = next(iter(sigs)) if sigs else "serving_default"
        ind = self._cm.get_input_tensor_details(self._sig)
        outd = self._cm.get_output_tensor_details(self._sig)
        self._in_names = list(ind)
        self._out_names = list(outd)
        self.inputs = [self._info(n, d) for n, d in ind.items()]
        self.outputs = [self._info(n, d) for n, d in outd.items()]
        self._validate_io()
        cm, sig = self._cm, self._sig
        self._ibuf = {n: cm.create_input_buffer_by_name(sig, n) for n in self._in_names}
        self._obuf = {n: cm.create_output_buffer_by_name(sig, n) for n in self._out_names}

    @staticmethod
    def _info(name: str, d: dict[str, Any]) -> TensorInfo:
        # CompiledModel details carry no quantization parameters; quantized I/O needs the CPU path.
        dtype = str(d.get("dtype", "float32"))
        shape = tuple(int(s) for s in d.get("shape", []))
        return TensorInfo(name=name, shape=shape, dtype=dtype)

    def _set_input(self, x: np.ndarray) -> None:
        t = self.inputs[0]
        if t.dtype != "float32":
            raise UnsupportedModelError(
                f"{self.name} has a {t.dtype} input; the LiteRT GPU path runs float models. "
                "Use --target cpu for quantized models."
            )
        self._ibuf[self._in_names[0]].write(np.ascontiguousarray(x))

    def invoke(self) -> None:
        self._cm.run_by_name(self._sig, self._ibuf, self._obuf)

    def outputs_float(self) -> list[np.ndarray]:
        res = []
        for n, t in zip(self._out_names, self.outputs, strict=True):
            count = int(np.prod(t.shape))
            y = self._obuf[n].read(count, np.float32).reshape(t.shape)
            res.append(y.astype(np.float32))
        return res

    def _describe(self) -> dict[str, Any]:
        return {
            "accelerator": "GPU" if self._full else "GPU+CPU",
            "delegate": "LiteRT GPU accelerator",
            "fallback": None if self._full else "not every op runs on the GPU; the rest run on CPU",
        }

    def close(self) -> None:
        self._cm = None
