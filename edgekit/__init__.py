"""edgekit: take a trained Keras model to the edge, with numbers that prove each step.

Importing this package is cheap: TensorFlow, tf2onnx and the runtimes are imported inside the
functions that need them, so `edgekit --help` and `edgekit bench model.tflite` start fast.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
