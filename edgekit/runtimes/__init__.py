"""One Runner interface for Keras/SavedModel (TensorFlow), LiteRT and ONNX Runtime models.

    runner = open_runner("model.tflite", threads=1)
    scores = runner.run(images_float32)[0]      # quantization handled inside

Importing this package is cheap: each runtime is imported when a model of its format is opened,
and .tflite / .onnx models never import TensorFlow.
"""

from __future__ import annotations

import os
from typing import Any

from edgekit.runtimes.base import Runner, TensorInfo, check_target, check_threads

__all__ = ["Runner", "TensorInfo", "available_targets", "open_runner"]


def open_runner(
    path: str | os.PathLike | Any,
    *,
    target: str = "cpu",
    threads: int | None = 1,
    xnnpack: bool = True,
    graph_optimization: str | None = None,
    providers: list[str] | None = None,
    xla: bool = False,
    unsafe: bool = False,
    custom_objects: dict[str, Any] | None = None,
    batch_size: int | None = None,
) -> Runner:
    """Load a model artifact for a target and return its Runner.

    path: a .tflite, .onnx, .keras, .h5 file or a SavedModel folder (format detected by content),
        or an edgekit.artifacts.ModelArtifact already opened.
    target: "cpu" or "gpu"; "gpu" raises TargetUnavailableError when this machine or the installed
        runtime has no GPU support.
    threads: CPU threads for the runtime's kernels (None: the runtime's own default).
    Each runtime takes its own options and ignores the others' (one bench call can pass
    graph_optimization for its .onnx models and xla for its Keras ones):
    xnnpack: LiteRT: use the XNNPACK delegate (False: builtin reference kernels).
    graph_optimization ("all", "extended", "basic", "disabled"; None: "all"), providers: ONNX
        Runtime. xla, unsafe, custom_objects, batch_size: Keras / SavedModel.
    """
    from edgekit.artifacts import ModelArtifact

    target = check_target(target)
    threads = check_threads(threads)
    art = ModelArtifact.open(path)
    if art.format == "tflite":
        from edgekit.runtimes import litert

        if target == "gpu":
            return litert.LiteRTGpuRunner(art.path, threads=threads)
        return litert.LiteRTRunner(art.path, threads=threads, xnnpack=xnnpack)
    if art.format == "onnx":
        from edgekit.runtimes.onnxrt import OnnxRunner

        return OnnxRunner(
            art.path,
            target=target,
            threads=threads,
            graph_optimization=graph_optimization or "all",
            providers=providers,
        )
    from edgekit.runtimes.keras import KerasRunner  # every Keras / SavedModel format

    return KerasRunner(
        art.path,
        target=target,
        threads=threads,
        xla=xla,
        unsafe=unsafe,
        custom_objects=custom_objects,
        batch_size=batch_size,
    )


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
