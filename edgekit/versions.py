"""Versions of edgekit's runtimes and converters, for manifests and reports (no heavy imports)."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = (
    "edgekit",
    "tensorflow",
    "tf-keras",
    "keras",
    "tensorflow-model-optimization",
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "ai-edge-litert",
    "tflite-runtime",
    "numpy",
)


def runtime_versions() -> dict[str, str | None]:
    """Installed versions from package metadata (does not import the packages)."""
    out: dict[str, str | None] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name in ("onnxruntime-gpu", "tflite-runtime"):
                continue
            out[name] = None
    return out
