"""Emulated mobile targets: device profiles, static analysis of .tflite files, arm64 LiteRT under
user-mode QEMU, and latency estimates from counted instructions.

Nothing here imports TensorFlow: `edgekit bench --target DEVICE` runs on a machine with only a
runtime.
"""
