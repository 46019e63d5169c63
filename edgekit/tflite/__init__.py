"""`.tflite` files without TensorFlow: edgekit.tflite.reader is the one reader of the flatbuffer."""
