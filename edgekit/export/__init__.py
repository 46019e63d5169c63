"""edgekit.export: convert a loaded model to TFLite / ONNX and verify the result.

    from edgekit.export import onnx, tflite, validate

    info = tflite.convert(loaded, "m_int8.tflite", quantization="int8", calibration=calib)
    validate.check_export(info["path"], loaded.predict(x), x, y, precision=info["precision"])

`tflite.convert` and `onnx.convert` import TensorFlow when called; `onnx.quantize_int8`,
`tflite.inspect_tflite`, `onnx.inspect_onnx` and `validate.check_export` never do. Importing this
package imports none of them.
"""

from __future__ import annotations

__all__ = ["onnx", "tflite", "validate"]
