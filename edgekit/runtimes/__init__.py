"""One Runner interface for Keras/SavedModel (TensorFlow), LiteRT and ONNX Runtime models.

    runner = open_runner("model.tflite", threads=1)
    scores = runner.run(images_float32)[0]      # quantization handled inside

Importing this package is cheap: each runtime is imported when a model of its format is opened,
and .tflite / .onnx models never import TensorFlow.
"""

from __future__ import annotations

import os
from typing import Any

from edgekit.errors import UsageError
from edgekit.runtimes.base import Runner, TensorInfo, check_target, check_threads

# Options each runtime takes. An option of another runtime is ignored (so that one bench call can
# pass graph_optimization for its .onnx models and xla for its Keras ones); an unknown one is an
# error.
RUNTIME_OPTIONS = {
    "tflite": (),
    "onnx": ("graph_optimization", "providers"),
    "keras": ("xla", "unsafe", "custom_objects", "batch_size"),
}

__all__ = ["Runner", "TensorInfo", "available_targets", "open_runner"]


def open_runner(
    path: str | os.PathLike,
    *,
    target: str = "cpu",
    threads: int | None = 1,
    xnnpack: bool = True,
    **options: Any,
) -> Runner:
    """Load a model artifact for a target and return its Runner.

    path: a .tflite, .onnx, .keras, .h5 file or a SavedModel folder (format detected by content).
    target: "cpu" or "gpu"; "gpu" raises TargetUnavailableError when this machine or the installed
        runtime has no GPU support.
    threads: CPU threads for the runtime's kernels (None: the runtime's own default).
    xnnpack: LiteRT only: use the XNNPACK delegate (False: builtin reference kernels).
    options: runtime-specific: `graph_optimization` ("all", "extended", "basic", "disabled") and
        `providers` for ONNX Runtime; `xla` and `batch_size` for Keras.
    """
    from edgekit.artifacts import KERAS_FORMATS, detect_format

    target = check_target(target)
    threads = check_threads(threads)
    known = {k for keys in RUNTIME_OPTIONS.values() for k in keys}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(
            f"Unknown runner option(s) {', '.join(unknown)}. Expected: {', '.join(sorted(known))}."
        )
    fmt = detect_format(path)
    family = "keras" if fmt in KERAS_FORMATS else fmt
    options = {k: v for k, v in options.items() if k in RUNTIME_OPTIONS[family]}
    if fmt == "tflite":
        from edgekit.runtimes import litert

        if target == "gpu":
            return litert.LiteRTGpuRunner(path, threads=threads, **options)
        return litert.LiteRTRunner(path, threads=threads, xnnpack=xnnpack, **options)
    if fmt == "onnx":
        from edgekit.runtimes.onnxrt import OnnxRunner

        return OnnxRunner(path, target=target, threads=threads, **options)
    if fmt in KERAS_FORMATS:
        from edgekit.runtimes.keras import KerasRunner

        return KerasRunner(path, target=target, threads=threads, **options)
    raise AssertionError(f"detect_format returned an unknown format {fmt!r}")  # pragma: no cover


def available_targets() -> dict[str, dict[str, Any]]:
    """What each runtime can use here: {"tflite": {"gpu": bool, "why": str}, "onnx": {...}}.

    Does not import TensorFlow (the Keras GPU check does, so it is not included).
    """
    from edgekit.runtimes.litert import litert_gpu_available
    from edgekit.runtimes.onnxrt import onnx_gpu_providers

    ok, why = litert_gpu_available()
    try:
        gpu = onnx_gpu_providers()
        onnx = {"gpu": bool(gpu), "why": ", ".join(gpu) or "no CUDA/TensorRT execution provider"}
    except Exception as e:  # onnxruntime missing
        onnx = {"gpu": False, "why": str(e)}
    return {"tflite": {"gpu": ok, "why": why}, "onnx": onnx}
