"""Build the latency reference network that `edgekit check` times beside every candidate model.

    python tools/make_reference_network.py [--out edgekit/assets]

Writes `check_reference_{float32,int8}.{tflite,onnx}`: one small MobileNet-style network (fixed
seeded weights, 128x128x3 input, 16 M multiply-accumulates, 37 k parameters) in float32 and in int8
(full-integer TFLite with float I/O; QDQ ONNX with edgekit's quantize_int8 defaults), in both
formats. A check times a model against the reference of its own format and compute precision. A baseline records which file it was measured against (name and sha256); checks
time the same file, so regenerating these files (new TensorFlow, new weights) means baselines
must be recreated. Needs TensorFlow and tf2onnx (build time only; edgekit never imports them to
run the check on a .tflite or .onnx model).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's edgekit (quantize_int8)
SIZE = 128
SEED = 20240501
# (kind, stride, output channels): a stem conv, depthwise-separable blocks, a 10-way head.
LAYERS = [
    ("conv", 2, 24),
    ("sep", 1, 32),
    ("sep", 2, 48),
    ("sep", 1, 48),
    ("sep", 2, 96),
    ("sep", 1, 96),
    ("sep", 2, 128),
]
CLASSES = 10
FORMATS = ("tflite", "onnx")
PRECISIONS = ("float32", "int8")


def weights() -> list:
    import numpy as np

    rng = np.random.default_rng(SEED)
    params = []
    cin = 3
    for kind, _, cout in LAYERS:
        if kind == "conv":
            w = rng.normal(0, (2 / (9 * cin)) ** 0.5, (3, 3, cin, cout))
            params.append([w.astype(np.float32), np.zeros(cout, np.float32)])
        else:
            dw = rng.normal(0, (2 / 9) ** 0.5, (3, 3, cin, 1))
            pw = rng.normal(0, (2 / cin) ** 0.5, (1, 1, cin, cout))
            params.append(
                [
                    dw.astype(np.float32),
                    np.zeros(cin, np.float32),
                    pw.astype(np.float32),
                    np.zeros(cout, np.float32),
                ]
            )
        cin = cout
    head = rng.normal(0, (1 / cin) ** 0.5, (cin, CLASSES)).astype(np.float32)
    params.append([head, np.zeros(CLASSES, np.float32)])
    return params


def build(out: Path) -> dict[str, Path]:
    import numpy as np
    import tensorflow as tf
    import tf2onnx

    params = weights()

    class Reference(tf.Module):
        def __init__(self) -> None:
            self.vars = [[tf.Variable(a) for a in p] for p in params]

        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, "image")])
        def __call__(self, x):
            for (kind, stride, _), v in zip(LAYERS, self.vars[:-1], strict=True):
                if kind == "conv":
                    x = tf.nn.relu6(tf.nn.conv2d(x, v[0], stride, "SAME") + v[1])
                else:
                    x = tf.nn.depthwise_conv2d(x, v[0], [1, stride, stride, 1], "SAME") + v[1]
                    x = tf.nn.relu6(x)
                    x = tf.nn.relu6(tf.nn.conv2d(x, v[2], 1, "SAME") + v[3])
            x = tf.reduce_mean(x, axis=[1, 2])
            return tf.nn.softmax(tf.matmul(x, self.vars[-1][0]) + self.vars[-1][1])

    m = Reference()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED + 1)
    calib = rng.random((32, SIZE, SIZE, 3), dtype=np.float32)
    paths = {
        f"{fmt}_{p}": out / f"check_reference_{p}.{fmt}" for fmt in FORMATS for p in PRECISIONS
    }
    cf = m.__call__.get_concrete_function()
    paths["tflite_float32"].write_bytes(
        tf.lite.TFLiteConverter.from_concrete_functions([cf], m).convert()
    )
    # Full-integer int8 with float input and output: what `edgekit export --quantization int8`
    # and most shipped edge models look like.
    conv = tf.lite.TFLiteConverter.from_concrete_functions([cf], m)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([calib[i : i + 1]] for i in range(len(calib)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    paths["tflite_int8"].write_bytes(conv.convert())
    tf2onnx.convert.from_function(
        m.__call__,
        input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, "image")],
        opset=17,
        output_path=str(paths["onnx_float32"]),
    )
    from edgekit.export.onnx import quantize_int8

    quantize_int8(paths["onnx_float32"], paths["onnx_int8"], calib)  # QDQ, edgekit's defaults
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "edgekit" / "assets")
    args = ap.parse_args(argv)
    paths = build(args.out)
    for p in paths.values():
        sha = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        print(f"{p}  {p.stat().st_size:,} bytes  sha256 {sha}...")
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))


if __name__ == "__main__":
    main()
