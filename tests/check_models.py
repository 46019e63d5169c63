"""Tiny real models for the `edgekit check` tests: a classifier, a harmless copy, copies with one
layer's weights damaged, one with other classes and a much heavier one; built with onnx.helper in
milliseconds (no TensorFlow). `perturb_tflite` damages a .tflite model's weights in place of the
flatbuffer, also without TensorFlow.

    paths = build_onnx_models(tmp_path)     # {"base": ..., "harmless": ..., "damaged": ...}
    pixels, labels = make_data(paths["base"], n=300)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

H, W, C, K = 8, 8, 3, 4
SEED = 0


def _weights(seed: int = SEED) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv_w": rng.normal(0, 0.6, (8, C, 3, 3)).astype(np.float32),  # OIHW
        "conv_b": rng.normal(0, 0.1, (8,)).astype(np.float32),
        "fc_w": rng.normal(0, 1.0, (8, K)).astype(np.float32),
        "fc_b": np.zeros(K, np.float32),
    }


def _onnx_classifier(
    path: Path,
    weights: dict[str, np.ndarray],
    *,
    classes: int = K,
    heavy: int = 0,
    features: bool = False,
    nan: bool = False,
) -> Path:
    """NHWC image -> conv 3x3 -> relu [-> `heavy` wide convs] -> global average -> dense -> softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = dict(weights)
    if classes != K:
        rng = np.random.default_rng(SEED + 7)
        w["fc_w"] = rng.normal(0, 1.0, (8, classes)).astype(np.float32)
        w["fc_b"] = np.zeros(classes, np.float32)
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "conv_w", "conv_b"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
    ]
    x = "r1"
    rng = np.random.default_rng(SEED + 11)
    width = 8
    for i in range(heavy):
        # Wide 3x3 convolutions that cost time; a final 1x1 back to 8 channels keeps the head.
        out_w = 192
        w[f"h{i}_w"] = (rng.normal(0, 0.05, (out_w, width, 3, 3))).astype(np.float32)
        nodes += [
            helper.make_node("Conv", [x, f"h{i}_w"], [f"h{i}"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"h{i}"], [f"hr{i}"]),
        ]
        x, width = f"hr{i}", out_w
    if heavy:
        w["back_w"] = rng.normal(0, 0.05, (8, width, 1, 1)).astype(np.float32)
        nodes.append(helper.make_node("Conv", [x, "back_w"], ["back"]))
        x = "back"
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc_w"], ["mm"]),
        helper.make_node("Add", ["mm", "fc_b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["sm"], axis=-1),
    ]
    if nan:  # scores of NaN for every image, as a model with broken weights gives
        w["nan"] = np.full((classes,), np.nan, np.float32)
        nodes.append(helper.make_node("Add", ["sm", "nan"], ["probs"]))
    else:
        nodes.append(helper.make_node("Identity", ["sm"], ["probs"]))
    out = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])
    if features:  # the input of the dense head, to centre its logits
        out = helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["N", 8])
    graph = helper.make_graph(
        nodes,
        "tiny_check",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", H, W, C])],
        [out],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_onnx_models(folder: Path) -> dict[str, Path]:
    """base; harmless (every fc weight moved by 1e-5); damaged (fc weights + strong noise: one
    layer, a large accuracy loss); nudged (fc weights + mild noise: a small loss); other_classes
    (3 classes); heavy (the base plus wide convolutions, far slower)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = _weights()
    # Centre and scale the head on sample images so that every class gets predicted.
    feat_model = _onnx_classifier(folder / "features.onnx", base, features=True)
    feats = _run(feat_model, make_pixels(400, seed=123))
    fc_w = base["fc_w"] / feats.std(axis=0)[:, None]
    base = dict(base, fc_w=fc_w.astype(np.float32), fc_b=(-feats.mean(0) @ fc_w).astype(np.float32))
    rng = np.random.default_rng(SEED + 3)
    noise = rng.normal(0, 1.0, base["fc_w"].shape).astype(np.float32)
    out = {"base": _onnx_classifier(folder / "base.onnx", base)}
    harmless = dict(base, fc_w=base["fc_w"] + 1e-5 * noise)
    out["harmless"] = _onnx_classifier(folder / "harmless.onnx", harmless)
    damaged = dict(base, fc_w=base["fc_w"] + 1.5 * noise)
    out["damaged"] = _onnx_classifier(folder / "damaged.onnx", damaged)
    nudged = dict(base, fc_w=base["fc_w"] + 0.04 * noise)
    out["nudged"] = _onnx_classifier(folder / "nudged.onnx", nudged)
    out["other_classes"] = _onnx_classifier(folder / "other_classes.onnx", base, classes=3)
    out["heavy"] = _onnx_classifier(folder / "heavy.onnx", base, heavy=3)
    out["nan_scores"] = _onnx_classifier(folder / "nan_scores.onnx", base, nan=True)
    out["fails_at_run"] = _fails_at_run(folder / "fails_at_run.onnx")
    return out


def _fails_at_run(path: Path) -> Path:
    """Loads and runs batches of exactly 64 images; any other batch fails inside ONNX Runtime
    (a Reshape to a fixed shape), as a model broken in a way loading cannot see."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Reshape", ["image", "shape"], ["r"]),
        helper.make_node("ReduceMean", ["r"], ["probs"], axes=[2], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "fails_at_run",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", H, W, C])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", K])],
        [numpy_helper.from_array(np.array([64, K, H * W * C // K], np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _run(model: Path, pixels: np.ndarray) -> np.ndarray:
    from edgekit.runtimes import open_runner

    r = open_runner(model)
    try:
        return r.run(pixels.astype(np.float32) / 255.0)[0]
    finally:
        r.close()


def predict(model: Path, pixels: np.ndarray) -> np.ndarray:
    """Top-1 class of each image through edgekit's runner (pixels / 255, as the default)."""
    return _run(model, pixels).argmax(axis=1)


def make_pixels(n: int, seed: int = 5, shape: tuple[int, int, int] = (H, W, C)) -> np.ndarray:
    """Images of one random colour each plus noise (pure noise would average to the same
    features for every image, and the model would give every image the same class)."""
    rng = np.random.default_rng(seed)
    colour = rng.random((n, 1, 1, shape[2])) * 255
    noise = rng.normal(0, 25, (n, *shape))
    return np.clip(colour + noise, 0, 255).astype(np.uint8)


def labels_for(
    model: Path, pixels: np.ndarray, flip: float = 0.1, seed: int = 9, classes: int = K
) -> np.ndarray:
    """The model's own predictions as labels, a `flip` fraction of them changed to another class
    (so the model is right on about 1 - flip of the images, and a candidate can also gain)."""
    y = predict(model, pixels).astype(np.int64)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(y), size=round(flip * len(y)), replace=False)
    y[idx] = (y[idx] + rng.integers(1, classes, size=len(idx))) % classes
    return y


def save_npz(path: Path, pixels: np.ndarray, y: np.ndarray, classes: int = K) -> Path:
    np.savez(path, x=pixels, y=y, labels=np.array([f"c{i}" for i in range(classes)]))
    return path


def perturb_tflite(src: Path, dst: Path, *, scale: float, seed: int = 0) -> Path:
    """Copy a .tflite model with noise added to one layer's float32 weights: the constant tensor
    with the most elements among those feeding a FULLY_CONNECTED or BATCH_MATMUL op (the head), or
    else the largest float32 constant. `scale` is relative to that tensor's standard deviation."""
    from ai_edge_litert import schema_py_generated as schema

    data = bytearray(Path(src).read_bytes())
    m = schema.Model.GetRootAs(data, 0)
    sg = m.Subgraphs(0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def const_f32(t: int) -> np.ndarray | None:
        tensor = sg.Tensors(t)
        if tensor.Type() != schema.TensorType.FLOAT32:
            return None
        buf = m.Buffers(tensor.Buffer())
        if buf is None or buf.DataLength() == 0:
            return None
        return buf.DataAsNumpy()  # a uint8 view into `data`

    heads, everything = [], []
    for o in range(sg.OperatorsLength()):
        op = sg.Operators(o)
        oc = m.OperatorCodes(op.OpcodeIndex())
        name = names.get(max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode())), "")
        for j in range(op.InputsLength()):
            if op.Inputs(j) < 0:  # an optional input left out
                continue
            view = const_f32(op.Inputs(j))
            if view is not None:
                everything.append(view)
                if name in ("FULLY_CONNECTED", "BATCH_MATMUL"):
                    heads.append(view)
    target = max(heads or everything, key=len)
    w = target.view(np.float32)
    rng = np.random.default_rng(seed)
    w += (scale * (float(w.std()) or 1.0) * rng.normal(size=w.shape)).astype(np.float32)
    Path(dst).write_bytes(bytes(data))
    return Path(dst)
