"""The Runner interface every runtime implements, and the float <-> quantized conversions.

Callers feed float32 arrays that are already preprocessed (see edgekit.data.Preprocessing) and read
float32 outputs; a runner quantizes inputs and dequantizes outputs itself, using the scale and zero
point stored in the model. Nothing here imports a runtime or TensorFlow.
"""

from __future__ import annotations

import abc
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import UnsupportedModelError, UsageError

TARGETS = ("cpu", "gpu")


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output as the model declares it (before any float conversion)."""

    name: str
    shape: tuple[int | None, ...]  # None marks a dynamic dimension
    dtype: str  # numpy dtype name as stored in the model: float32, int8, uint8, ...
    # (scale, zero_point) of an affine-quantized integer tensor; None for float tensors
    quantization: tuple[float, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["quantization"] = list(self.quantization) if self.quantization else None
        return d


def quantize(x: np.ndarray, dtype: str, scale: float, zero_point: int) -> np.ndarray:
    """Float -> integer with the model's affine parameters (round half to even, then saturate)."""
    info = np.iinfo(dtype)
    q = np.round(x.astype(np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer -> float32 with the model's affine parameters."""
    return ((q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


def shape_str(shape: tuple[int | None, ...] | list) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


class Runner(abc.ABC):
    """A loaded model for one target: describe its inputs/outputs and run float batches.

    `run(x)` handles any batch size (it splits or pads to what the model accepts). For timing,
    `prepare(x)` sets the inputs (quantizing them) and `invoke()` runs the model alone; `prepare`
    only accepts a batch the model can take in one invoke.
    """

    format: str = ""  # tflite | onnx | keras
    runtime: str = ""  # litert | tflite_runtime | onnxruntime | tensorflow
    runtime_version: str = ""

    def __init__(self, path: str | os.PathLike, *, target: str, threads: int | None) -> None:
        self.path = str(path)
        self.target = target
        self.threads = threads
        self.inputs: list[TensorInfo] = []
        self.outputs: list[TensorInfo] = []
        self._prepared_batch: int | None = None

    # --- what subclasses implement -------------------------------------------------------------
    @abc.abstractmethod
    def _set_input(self, x: np.ndarray) -> None:
        """Set the (already checked, float32) batch as the model input, quantizing as needed."""

    @abc.abstractmethod
    def invoke(self) -> None:
        """Run the model once on the prepared input. The only thing latency timing covers."""

    @abc.abstractmethod
    def outputs_float(self) -> list[np.ndarray]:
        """The outputs of the last invoke as float32 arrays (dequantized), in model order."""

    def _describe(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:  # noqa: B027 - most runtimes need nothing beyond dropping references
        """Release the runtime's resources."""

    # --- shared behaviour -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def input(self) -> TensorInfo:
        return self.inputs[0]

    @property
    def fixed_batch(self) -> int | None:
        """The batch size fixed in the model's input shape, or None when it is dynamic."""
        shape = self.input.shape
        return shape[0] if shape else None

    @property
    def batching(self) -> str:
        """How `run` feeds a batch of N: one invoke (dynamic batch) or a loop over fixed chunks."""
        b = self.fixed_batch
        if b is None:
            return "dynamic batch: one invoke per batch (input resized)"
        return f"fixed batch {b}: run() loops over chunks of {b} (last one zero-padded)"

    def _validate_io(self) -> None:
        """Refuse, at load time, models this interface cannot feed with one float image batch."""
        if len(self.inputs) != 1:
            names = ", ".join(f"'{t.name}' {shape_str(t.shape)}" for t in self.inputs)
            raise UnsupportedModelError(
                f"{self.name} has {len(self.inputs)} inputs ({names}); edgekit runs models with "
                "exactly one image input. Export the model with a single input."
            )
        t = self.input
        if t.dtype in ("str", "object", "bytes_", "string") or t.dtype.startswith(("str", "bytes")):
            raise UnsupportedModelError(
                f"Input '{t.name}' of {self.name} is a string tensor; edgekit runs image models "
                "whose input is a float32 (or quantized int8/uint8) tensor. Export the model "
                "without string preprocessing."
            )
        if t.dtype not in ("float32", "float16", "float64") and t.quantization is None:
            raise UnsupportedModelError(
                f"Input '{t.name}' of {self.name} has dtype {t.dtype} without quantization "
                "parameters; edgekit feeds float32 images (quantized to int8/uint8 with the "
                "model's scale and zero point). Export the model with a float or quantized input."
            )
        if len(t.shape) < 2 or any(d is None for d in t.shape[1:]):
            raise UnsupportedModelError(
                f"Input '{t.name}' of {self.name} has shape {shape_str(t.shape)} with a dynamic "
                "dimension other than the batch; edgekit supports a dynamic batch dimension only "
                "(height, width and channels must be fixed). Re-export with a fixed input size."
            )

    def check_input(self, x: Any) -> np.ndarray:
        """Return x as a float32 array shaped like the model input, or raise a UsageError."""
        x = np.asarray(x)
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        want = self.input.shape
        if x.ndim != len(want) or tuple(x.shape[1:]) != tuple(want[1:]):
            got = shape_str((None, *x.shape[1:])) if x.ndim >= 1 else "()"
            raise UsageError(
                f"Input batch has per-item shape {got} but {self.name} expects "
                f"{shape_str((None, *want[1:]))} (input '{self.input.name}'). Resize the data to "
                "the model's input size and channels, or use a model made for this data."
            )
        if x.shape[0] < 1:
            raise UsageError("Input batch is empty (0 items). Pass at least one item.")
        return x

    def check_batch(self, n: int) -> None:
        """Raise a UsageError when a single invoke cannot take a batch of n items."""
        b = self.fixed_batch
        if b is not None and n != b:
            raise UsageError(
                f"Batch size {n} does not fit {self.name}: its input '{self.input.name}' has a "
                f"fixed shape {shape_str(self.input.shape)}. Use --batch {b}, or export the "
                "model with a dynamic batch dimension."
            )

    def prepare(self, x: Any) -> None:
        """Set x (float32, preprocessed) as the input for the next `invoke()`."""
        x = self.check_input(x)
        self.check_batch(x.shape[0])
        self._set_input(x)
        self._prepared_batch = x.shape[0]

    def run(self, x: Any) -> list[np.ndarray]:
        """Run a float32 batch of any size; return the float32 outputs, one array per output."""
        x = self.check_input(x)
        n = x.shape[0]
        b = self.fixed_batch
        if b is None or n == b:
            self._set_input(x)
            self._prepared_batch = n
            self.invoke()
            return self.outputs_float()
        chunks: list[list[np.ndarray]] = []
        for start in range(0, n, b):
            part = x[start : start + b]
            if part.shape[0] < b:  # pad the last chunk; its extra rows are dropped below
                pad = np.zeros((b - part.shape[0], *part.shape[1:]), np.float32)
                part = np.concatenate([part, pad])
            self._set_input(part)
            self._prepared_batch = b
            self.invoke()
            chunks.append(self.outputs_float())
        return [np.concatenate([c[i] for c in chunks])[:n] for i in range(len(self.outputs))]

    def describe(self) -> dict[str, Any]:
        """Runtime, version, target, threads, delegate/provider actually used, fallbacks, I/O."""
        d: dict[str, Any] = {
            "model": self.path,
            "format": self.format,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "target": self.target,
            "threads": self.threads,
            "batching": self.batching,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }
        d.update(self._describe())
        d.setdefault("fallback", None)
        return d

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.runtime} {self.target}>"


def check_target(target: str) -> str:
    t = str(target).lower()
    if t not in TARGETS:
        raise UsageError(f"Unknown target {target!r}. Expected one of: {', '.join(TARGETS)}.")
    return t


def check_threads(threads: int | None) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UsageError(f"--threads must be an integer of at least 1. Received: {threads!r}")
    return threads
