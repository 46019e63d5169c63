"""Device-profile targets (profiles: edgekit.profiles): static analysis of .tflite files against
a profile, arm64 LiteRT under user-mode QEMU (provisioned once into edgekit's cache), and latency
estimates from counted instructions.

Nothing here imports TensorFlow: `edgekit bench --target DEVICE` runs on a machine with only a
runtime.
"""
