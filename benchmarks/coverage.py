"""The coverage matrix: every architecture users bring, through every export path and recipe.

    python benchmarks/coverage.py                      # the whole matrix (long: see docs/models.md)
    python benchmarks/coverage.py --arch MobileNetV2 --arch two_outputs
    python benchmarks/coverage.py --paths tflite_float,onnx_float --markdown

Each architecture is built untrained (Keras Applications with `weights=None`, 10 classes, a logits
head, the smallest input it accepts), then its head(s) are trained for a few steps on the built-in
`shapes` images with the rest frozen, so that its predictions are confident and int8 verification
(top-1 agreement with the Keras model) means something: an untrained model's near-uniform outputs
would make any argmax comparison a coin toss. The trained model is saved as a file and taken
through what a user runs, from that file:

    tflite_float  tflite_dynamic  tflite_int8  onnx_float  onnx_int8   `edgekit export` (each verified)
    prune  quantize                                                    `edgekit compress --recipe ...`

Every cell is "pass" (with the route that made the file when it was not edgekit's own) or the
one-line reason the path stopped. Each architecture runs in its own process. The table and the
exact command are printed at the end; `--json FILE` keeps every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EXPORT_PATHS = {
    "tflite_float": ("tflite", "none"),
    "tflite_dynamic": ("tflite", "dynamic"),
    "tflite_int8": ("tflite", "int8"),
    "onnx_float": ("onnx", "none"),
    "onnx_int8": ("onnx", "int8"),
}
RECIPES = ("prune", "quantize")
PATHS = (*EXPORT_PATHS, *RECIPES)
# Overrides for the recipe runs: no teacher TFLite baseline (a measurement, not a path) and a
# fixed, small number of verification samples.
# The agreement floor is lowered for the recipes, and the float16 tolerance raised: their int8
# and float16 exports of these random-weight networks drift from the Keras model (the int8
# columns give the int8 figures; each file's own figures are in the JSON, `files`), and a
# recipe cell is about every stage running and every file being made, loaded and checked
# (float32 at the usual 1e-3).
RECIPE_OVERRIDES = [
    "compare_teacher_tflite=false",
    "verify.samples=64",
    "verify.min_agreement=0.01",
    "verify.float16_atol=0.5",
]
CLASSES = 10
RIDGE = 1.0  # ridge strength, relative to the features' mean energy
VARIANCE_FLOOR = 0.01  # BatchNorm variances below 1% of the layer's median are raised to it
SAMPLES = 400  # shapes images per architecture: 280 train, 40 val, 40 calib, 40 eval
TRAIN_IMAGES = 4000  # --train-steps: images (another seed) every layer is trained on


@dataclass(frozen=True)
class Entry:
    """One architecture of the matrix."""

    name: str
    source: str  # where users get it
    size: int  # input height = width
    fast: bool  # part of the test suite's fast half


def _apps() -> dict[str, tuple[str, dict[str, Any], int]]:
    """Keras Applications (Keras 3): constructor name, keyword arguments, smallest input."""
    # Cheapest first, so that a run cut short still has whole rows.
    return {
        "MobileNet": ("MobileNet", {"alpha": 0.25}, 32),
        "MobileNetV2": ("MobileNetV2", {"alpha": 0.35}, 32),
        "MobileNetV3Small": ("MobileNetV3Small", {}, 32),
        "MobileNetV3Large": ("MobileNetV3Large", {}, 32),
        "EfficientNetB0": ("EfficientNetB0", {}, 32),
        "EfficientNetV2B0": ("EfficientNetV2B0", {}, 32),
        "DenseNet121": ("DenseNet121", {}, 32),
        "NASNetMobile": ("NASNetMobile", {}, 32),
        "ConvNeXtTiny": ("ConvNeXtTiny", {}, 32),
        "ResNet50": ("ResNet50", {}, 32),
        "ResNet50V2": ("ResNet50V2", {}, 32),
        "VGG16": ("VGG16", {}, 32),
        "Xception": ("Xception", {}, 71),
        "InceptionV3": ("InceptionV3", {}, 75),
        "InceptionResNetV2": ("InceptionResNetV2", {}, 75),
    }


FAST = {"MobileNetV2", "two_outputs", "nested", "subclassed", "custom_layer"}


def entries() -> dict[str, Entry]:
    out = {}
    for name, what in (
        ("two_outputs", "functional, class + box heads (Keras 3)"),
        ("nested", "functional holding a Sequential backbone (Keras 3)"),
        ("subclassed", "subclassed keras.Model with get_config (Keras 3)"),
        ("custom_layer", "functional with a registered custom layer (Keras 3)"),
    ):
        out[name] = Entry(name, what, 32, name in FAST)
    out["RegNetX002"] = Entry(
        "RegNetX002", "tf_keras.applications.RegNetX002 (tf-keras)", 32, False
    )
    for name, (ctor, _, size) in _apps().items():
        out[name] = Entry(name, f"keras.applications.{ctor}", size, name in FAST)
    return out


# --- the models -------------------------------------------------------------------------------

_registered: dict[str, Any] = {}


def custom_classes() -> dict[str, Any]:
    """The registered custom layer and subclassed model (registered once per process)."""
    if _registered:
        return _registered
    from edgekit.keras_compat import keras

    k = keras()

    @k.saving.register_keras_serializable(package="edgekit_zoo")
    class ChannelScale(k.layers.Layer):
        """x * scale + shift, one learned pair per channel."""

        def build(self, input_shape: Any) -> None:
            c = int(input_shape[-1])
            self.scale = self.add_weight(shape=(c,), initializer="ones", name="scale")
            self.shift = self.add_weight(shape=(c,), initializer="zeros", name="shift")

        def call(self, x: Any) -> Any:
            return x * self.scale + self.shift

    @k.saving.register_keras_serializable(package="edgekit_zoo")
    class TinyNet(k.Model):
        """Conv -> BN -> ReLU -> pool -> Dense, written as a subclass."""

        def __init__(self, classes: int = CLASSES, width: int = 16, **kwargs: Any):
            super().__init__(**kwargs)
            self.classes, self.width = classes, width
            self.conv1 = k.layers.Conv2D(width, 3, strides=2, padding="same")
            self.bn1 = k.layers.BatchNormalization()
            self.conv2 = k.layers.Conv2D(2 * width, 3, strides=2, padding="same")
            self.pool = k.layers.GlobalAveragePooling2D()
            self.head = k.layers.Dense(classes, name="predictions")

        def features(self, x: Any, training: bool = False) -> Any:
            x = k.ops.relu(self.bn1(self.conv1(x), training=training))
            return self.pool(k.ops.relu(self.conv2(x)))

        def call(self, x: Any, training: bool = False) -> Any:
            return self.head(self.features(x, training=training))

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "classes": self.classes, "width": self.width}

    _registered.update(ChannelScale=ChannelScale, TinyNet=TinyNet)
    return _registered


def _trunk(k: Any, x: Any, prefix: str = "") -> Any:
    for i, w in enumerate((16, 32)):
        x = k.layers.Conv2D(w, 3, strides=2, padding="same", name=f"{prefix}conv{i}")(x)
        x = k.layers.BatchNormalization(name=f"{prefix}bn{i}")(x)
        x = k.layers.ReLU(name=f"{prefix}relu{i}")(x)
    return k.layers.GlobalAveragePooling2D(name=f"{prefix}pool")(x)


def build(name: str) -> Any:
    """The untrained model of one matrix entry (logits heads, CLASSES classes)."""
    from edgekit.keras_compat import keras, tf_keras

    e = entries()[name]
    shape = (e.size, e.size, 3)
    apps = _apps()
    if name in apps:
        ctor, kwargs, _ = apps[name]
        k = keras()
        return getattr(k.applications, ctor)(
            weights=None,
            input_shape=shape,
            classes=CLASSES,
            classifier_activation=None,
            **kwargs,
        )
    if name == "RegNetX002":
        tfk = tf_keras()
        return tfk.applications.RegNetX002(
            weights=None, input_shape=shape, classes=CLASSES, classifier_activation=None
        )
    k = keras()
    inp = k.Input(shape, name="image")
    if name == "two_outputs":
        f = _trunk(k, inp)
        cls = k.layers.Dense(CLASSES, name="class")(f)
        box = k.layers.Dense(4, name="box")(f)
        return k.Model(inp, [cls, box], name="two_outputs")
    if name == "nested":
        backbone = k.Sequential(
            [
                k.Input(shape),
                k.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
                k.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
                k.layers.GlobalAveragePooling2D(),
            ],
            name="backbone",
        )
        out = k.layers.Dense(CLASSES, name="predictions")(backbone(inp))
        return k.Model(inp, out, name="nested")
    if name == "subclassed":
        m = custom_classes()["TinyNet"](name="subclassed")
        m(np.zeros((1, *shape), np.float32))  # built: its build config records the input shape
        return m
    if name == "custom_layer":
        x = k.layers.Conv2D(16, 3, strides=2, padding="same")(inp)
        x = custom_classes()["ChannelScale"](name="channel_scale")(x)
        x = _trunk(k, k.layers.ReLU()(x), prefix="t_")
        return k.Model(inp, k.layers.Dense(CLASSES, name="predictions")(x), name="custom_layer")
    raise KeyError(name)


def train_heads(model: Any, x: np.ndarray, y: np.ndarray, *, ridge: float = RIDGE) -> dict:
    """Fit the output layer(s) to the labels in closed form, everything else as initialised.

    BatchNorm statistics are re-estimated on `x` first (below). Each head's kernel is then the
    ridge regression of the (centred) features it sees to the one-hot labels (the box head:
    to the four quadrants' mean brightness), scaled so that the class logits have a spread of
    about 3 per image. The strong ridge keeps the head on the features' large directions of
    variation, so predictions are confident, differ from image to image and do not hang on
    feature differences the size of int8 rounding: what int8 verification (top-1 agreement)
    needs to mean something. Gradient steps on a frozen random backbone barely move such a head
    (features of 1e-2 with Adam's step size), which is why this is closed-form.
    """
    t0 = time.perf_counter()
    n_bn = recalibrate_batchnorm(model, x[:256])
    heads = _head_layers(model)
    feats = _head_inputs(model, heads, x)
    h, w = x.shape[1] // 2, x.shape[2] // 2
    quads = np.stack(
        [q.mean(axis=(1, 2, 3)) for q in (x[:, :h, :w], x[:, :h, w:], x[:, h:, :w], x[:, h:, w:])],
        axis=1,
    )
    for i, (head, f) in enumerate(zip(heads, feats, strict=True)):
        f = np.asarray(f, np.float64).reshape(len(f), -1)
        # Centred, not standardised: a feature that hardly varies keeps a small weight rather
        # than being blown up to the size of the others (int8 rounding would then decide).
        mu = f.mean(axis=0)
        z = f - mu
        # one-hot labels (class head) or quadrant brightness (box head), centred
        target = np.eye(CLASSES)[y] - 1.0 / CLASSES if i == 0 else quads - quads.mean(axis=0)
        gram = z.T @ z
        gram += ridge * float(np.mean(np.diag(gram))) * np.eye(len(gram))
        wz = np.linalg.solve(gram, z.T @ target)
        if i == 0:  # class logits with a spread of ~3 within an image
            wz *= 3.0 / max(float(np.std(z @ wz, axis=1).mean()), 1e-12)
        kernel = wz
        bias = (quads.mean(axis=0) if i else 0.0) - mu @ kernel
        weights = head.get_weights()
        weights[0] = kernel.reshape(weights[0].shape).astype(np.float32)
        if len(weights) > 1:
            weights[1] = np.asarray(bias, np.float32).reshape(weights[1].shape)
        head.set_weights(weights)
    from edgekit.keras_compat import wrap

    preds = wrap(model).predict(x)
    cls = np.asarray(preds[0] if isinstance(preds, list) else preds)
    top2 = np.sort(cls, axis=1)[:, -2:]
    return {
        "method": "BatchNorm statistics re-estimated, heads fitted by ridge regression",
        "batchnorm_layers": n_bn,
        "head_layers": [hd.name for hd in heads],
        "seconds": round(time.perf_counter() - t0, 1),
        "train_accuracy": round(float(np.mean(cls.argmax(axis=1) == y)), 3),
        "distinct_predictions": len(np.unique(cls.argmax(axis=1))),
        "median_top1_margin": round(float(np.median(top2[:, 1] - top2[:, 0])), 3),
    }


def _head_inputs(model: Any, heads: list[Any], x: np.ndarray) -> list[np.ndarray]:
    """What each head layer is fed, on `x` (inference mode)."""
    if not getattr(model, "outputs", None):  # the subclassed model says it itself
        return [np.asarray(model.features(x))]
    k = _keras_module(model)
    probe = k.Model(model.inputs, [hd.input for hd in heads])
    out = probe.predict(x, batch_size=64, verbose=0)
    return list(out) if isinstance(out, list | tuple) else [out]


def recalibrate_batchnorm(model: Any, x: np.ndarray) -> int:
    """Set every BatchNormalization layer's moving statistics to the statistics of `x`.

    At initialisation they are mean 0, variance 1, which leaves an untrained deep network's
    activations vanishing (MobileNetV2 at 32x32: features ~1e-12, all images alike) or
    exploding; with the statistics of real images every layer sees normalised inputs, as in a
    trained network. One forward pass in training mode with momentum 0; no weight changes.
    """
    bns = [ly for ly in _all_layers(model) if type(ly).__name__ == "BatchNormalization"]
    saved = [(ly, ly.momentum, ly.trainable) for ly in bns]
    for ly in bns:
        ly.momentum, ly.trainable = 0.0, True
    try:
        model(x, training=True)
    finally:
        for ly, momentum, trainable in saved:
            ly.momentum, ly.trainable = momentum, trainable
    for ly in bns:
        # A channel that is (nearly) constant on real images would otherwise be amplified by
        # 1/sqrt(variance), up to 1e6 and more: rounding noise of its int8 input, multiplied so,
        # decides the prediction. Trained networks do not do that; the floor keeps it out.
        v = np.asarray(ly.moving_variance)
        floor = VARIANCE_FLOOR * float(np.median(v))
        ly.moving_variance.assign(np.maximum(v, floor).astype(v.dtype))
    return len(bns)


def _keras_module(model: Any) -> Any:
    from edgekit.keras_compat import keras, tf_keras

    return tf_keras() if type(model).__module__.startswith("tf_keras") else keras()


def _all_layers(model: Any) -> list[Any]:
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        out.extend(_all_layers(layer) if hasattr(layer, "layers") else [])
    return out


def _head_layers(model: Any) -> list[Any]:
    """Per output, the last layer with a kernel on its way (the Dense or 1x1 Conv classifier,
    behind any Reshape / Flatten / Activation / Dropout)."""
    if not getattr(model, "outputs", None):  # subclassed: its Dense head
        return [model.head]
    heads = []
    for t in model.outputs:
        op = _producer(t)
        while op is not None and not any("kernel" in v.name for v in op.weights):
            op = _producer(op.input)
        if op is not None:
            heads.append(op)
    return heads


def _producer(t: Any) -> Any:
    hist = getattr(t, "_keras_history", None)
    return getattr(hist, "operation", None) or getattr(hist, "layer", None)


# --- one architecture -------------------------------------------------------------------------


def data_spec(entry: Entry, n: int = SAMPLES) -> str:
    return f"shapes:size={entry.size},n={n}"


def input_std(model: Any) -> float:
    """What the pixels are divided by for this model: 1 (raw 0-255 pixels) when the model
    rescales them itself (Keras Applications' MobileNetV3, EfficientNet, ConvNeXt, RegNet start
    with Rescaling / Normalization layers), else 255 (inputs in [0, 1], edgekit's default).
    Fed [0, 1], MobileNetV3's first tensor would span [-1, -0.992]: int8 keeps nothing of that."""
    first = getattr(model, "layers", [])[:6]
    return (
        1.0 if any(type(ly).__name__ in ("Rescaling", "Normalization") for ly in first) else 255.0
    )


def train_all(model: Any, size: int, steps: int, std: float = 255.0) -> dict[str, Any]:
    """Train every layer for about `steps` Adam steps (batch 32, lr 1e-3) on 4,000 `shapes`
    images drawn with another seed than the matrix's 400: the control for the int8 columns
    (does a failure belong to the conversion, or to the random weights?)."""
    from edgekit.data import Preprocessing, load_dataset

    t0 = time.perf_counter()
    ds = load_dataset(f"shapes:size={size},n={TRAIN_IMAGES},seed=7")
    x = np.asarray(Preprocessing(std=std).apply(ds.x), np.float32)
    k = _keras_module(model)
    model.compile(
        optimizer=k.optimizers.Adam(1e-3),
        loss=k.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    epochs = max(1, round(steps * 32 / len(x)))
    hist = model.fit(x, np.asarray(ds.y), batch_size=32, epochs=epochs, verbose=0)
    return {
        "steps": epochs * -(-len(x) // 32),
        "images": len(x),
        "final_train_accuracy": round(float(hist.history["accuracy"][-1]), 3),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def prepare(
    name: str, folder: Path, n: int = SAMPLES, train_steps: int = 0
) -> tuple[Path, str, dict[str, Any]]:
    """Build, train the heads and save one architecture; returns (model file, data spec, figures).

    train_steps > 0 trains every layer first (`train_all`), then the heads are fitted as usual.
    """
    from edgekit.data import Preprocessing, load_dataset
    from edgekit.keras_compat import keras, save_model

    keras().utils.set_random_seed(0)  # the same weights in every run and process
    entry = entries()[name]
    spec = data_spec(entry, n)
    ds = load_dataset(spec)
    model = build(name)
    std = input_std(model)
    x = np.asarray(Preprocessing(std=std).apply(ds.x), np.float32)
    trained = train_all(model, entry.size, train_steps, std) if train_steps else None
    figures = train_heads(model, x, np.asarray(ds.y))
    figures["input_std"] = std
    if trained:
        figures["trained_every_layer"] = trained
    path = folder / f"{name}.keras"
    save_model(model, path)
    figures["parameters"] = int(model.count_params())
    return path, spec, figures


RANDOM_NOTE = "random weights, see 'int8 and random weights'"


def run_path(
    model_path: Path,
    spec: str,
    path: str,
    folder: Path,
    *,
    std: float = 255.0,
    note: str = RANDOM_NOTE,
) -> dict[str, Any]:
    """One cell: an export path (`edgekit export`) or a recipe (`edgekit compress`).

    std: the preprocessing std (`input_std`), as a user would set it (`--std`,
    `data.preprocessing.std`); note: what a failed quantized cell says about the weights."""
    from edgekit import api
    from edgekit.errors import EdgekitError
    from edgekit.export_job import export

    t0 = time.perf_counter()
    cell: dict[str, Any] = {"path": path}
    try:
        if path in EXPORT_PATHS and EXPORT_PATHS[path][1] != "none":
            cell.update(_quantized_cell(model_path, spec, *EXPORT_PATHS[path], folder, std, note))
        elif path in EXPORT_PATHS:
            fmt, mode = EXPORT_PATHS[path]
            report = export(
                model_path,
                format=fmt,
                quantize=mode,
                data=spec,
                out=folder / f"{model_path.stem}_{path}.{fmt}",
                latency_runs=1,
                std=std,
            )
            v = report["verification"]
            cell.update(
                status="pass",
                route=report.get("route"),
                criterion=v.get("criterion"),
                max_abs_error=v.get("max_abs_error"),
                top1_agreement=v.get("top1_agreement"),
                outputs=v.get("outputs"),
                size_bytes=report["size_bytes"],
            )
        else:
            report = api.compress(
                model_path,
                recipe=path,
                data=spec,
                out=folder / f"run-{path}",
                overrides=[*RECIPE_OVERRIDES, f"data.preprocessing.std={std:g}"],
                measure_latency=False,
            )
            dropped = [d for s in report["stages"] for d in s.get("dropped") or []]
            routes = sorted(
                {
                    (a.get("conversion") or {}).get("route") or ""
                    for a in report["artifacts"]
                    if a["format"] in ("tflite", "onnx")
                }
                - {""}
            )
            cell.update(
                status="pass",
                artifacts=[a["path"] for a in report["artifacts"]],
                files={
                    Path(a["path"]).name: {
                        k: a["verification"].get(k)
                        for k in ("max_abs_error", "tolerance", "top1_agreement")
                        if k in a["verification"]
                    }
                    for a in report["artifacts"]
                    if isinstance(a.get("verification"), dict)
                },
                dropped=[
                    f"{d['format']} {d['mode']}"
                    + (f" (layer {d['layer']})" if d.get("layer") else "")
                    for d in dropped
                ],
                routes=routes,
                skipped_layers=[
                    s.get("layer")
                    for st in report["stages"]
                    for s in st.get("skipped_layers") or []
                ],
            )
    except EdgekitError as e:
        cell.update(status="fail", error=type(e).__name__, reason=_one_line(str(e)))
    except Exception as e:  # a crash is a finding too: say what it was
        cell.update(status="crash", error=type(e).__name__, reason=_one_line(str(e)))
    cell["seconds"] = round(time.perf_counter() - t0, 1)
    return cell


def _quantized_cell(
    model_path: Path, spec: str, fmt: str, mode: str, folder: Path, std: float, note: str
) -> dict:
    """A quantized export made exactly as `edgekit export` makes it, judged as it judges it
    (top-1 agreement >= 0.9 with the Keras model), with the logit error kept beside it.

    `edgekit export` writes no file that fails its check; here the check runs with the
    agreement floor lowered so that both figures can be read: the top-1 agreement that decides
    the cell, and the int8 logits' error relative to the logits' own spread (a broken
    conversion gives logits unrelated to the model's, about 1 or more).
    """
    from edgekit.data import Preprocessing
    from edgekit.export.convert import convert_one, verify_one
    from edgekit.export_job import _data, _samples
    from edgekit.keras_compat import load_model
    from edgekit.recipes import Verification
    from edgekit.runtimes import open_runner
    from edgekit.stages.quantize import QuantizeConfig

    loaded = load_model(model_path)
    _, splits = _data(spec, model_path, loaded)
    pre, shape = Preprocessing(std=std), tuple(loaded.input_shape)
    verify, q = Verification(), QuantizeConfig()
    x, y = _samples(splits, "eval", verify.samples, pre, shape)
    calib = _samples(splits, "calib", q.calibration_samples, pre, shape)[0]
    out = folder / f"{model_path.stem}_{fmt}_{mode}.{fmt}"
    info, precision = convert_one(
        loaded,
        fmt,
        mode,
        out,
        calibration=calib,
        calibration_samples=q.calibration_samples,
        per_channel=q.per_channel,
        reduce_range=q.onnx_reduce_range,
        float_onnx=folder / f"{model_path.stem}_float_for_q.onnx",
    )
    ref = loaded.predict(x)
    check = verify_one(
        out, ref, x, y, precision=precision, verify=verify.model_copy(update={"min_agreement": 0.01}),
        loaded=loaded,
    )  # fmt: skip
    with open_runner(out) as r:
        got = r.run(x)[int(info.get("class_index", 0))]
    r0 = np.asarray(ref[0] if isinstance(ref, list) else ref, np.float64)
    g0 = np.asarray(got, np.float64).reshape(r0.shape)
    spread = np.linalg.norm(r0 - r0.mean(axis=1, keepdims=True))
    rel = float(np.linalg.norm(g0 - r0) / max(spread, 1e-12))
    agree = float(check["top1_agreement"])
    ok = agree >= Verification().min_agreement
    return {
        "status": "pass" if ok else "fail",
        "route": info.get("route"),
        "criterion": f"top1_agreement >= {Verification().min_agreement}",
        "logit_rel_error": round(rel, 3),
        "top1_agreement": agree,
        "accuracy": check.get("accuracy"),
        "reference_accuracy": check.get("reference_accuracy"),
        "outputs": check.get("outputs"),
        "size_bytes": out.stat().st_size,
        **(
            {}
            if ok
            else {
                "reason": f"top-1 agreement {agree:.2f} < 0.9 (accuracy {check['accuracy']:.2f} "
                f"vs Keras {check['reference_accuracy']:.2f}; logit error {rel:.2f} of their spread; "
                f"{note})"
            }
        ),
    }


def run_arch(name: str, paths: list[str], folder: Path, train_steps: int = 0) -> dict[str, Any]:
    t0 = time.perf_counter()
    result: dict[str, Any] = {"arch": name, "source": entries()[name].source}
    try:
        model_path, spec, figures = prepare(name, folder, train_steps=train_steps)
    except Exception as e:
        result.update(
            build={"status": "crash", "reason": _one_line(f"{type(e).__name__}: {e}")},
            cells={p: {"status": "fail", "reason": "model could not be built"} for p in paths},
        )
        return result
    result.update(data=spec, training=figures, cells={})
    for p in paths:
        print(f"[{name}] {p} ...", file=sys.stderr, flush=True)
        note = f"trained {train_steps} steps" if train_steps else RANDOM_NOTE
        cell = run_path(model_path, spec, p, folder, std=figures["input_std"], note=note)
        result["cells"][p] = cell
        print(
            f"[{name}] {p}: {cell['status']} ({cell['seconds']} s) {cell.get('reason', '')}",
            file=sys.stderr,
            flush=True,
        )
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _one_line(text: str, limit: int = 240) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


# --- the table ----------------------------------------------------------------------------------


def cell_text(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "not run"
    if cell["status"] == "pass":
        notes = []
        if cell.get("route") and not str(cell["route"]).startswith("edgekit"):
            notes.append("via Keras' exporter")
        if any(not r.startswith("edgekit") for r in cell.get("routes") or []):
            notes.append("some files via Keras' exporter")
        if cell.get("dropped"):
            notes.append("dropped " + ", ".join(cell["dropped"]))
        if cell.get("logit_rel_error") is not None:
            notes.insert(0, f"err {cell['logit_rel_error']:.2f}, agr {cell['top1_agreement']:.2f}")
        return "pass" + (f" ({'; '.join(notes)})" if notes else "")
    return f"{cell['status'].upper()}: {cell.get('reason', '')}"


def markdown(results: list[dict[str, Any]], paths: list[str]) -> str:
    head = "| architecture | " + " | ".join(paths) + " |"
    rule = "|---" * (len(paths) + 1) + "|"
    rows = [head, rule]
    for r in results:
        cells = [cell_text(r.get("cells", {}).get(p)).replace("|", "/") for p in paths]
        rows.append(f"| {r['arch']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def summary(results: list[dict[str, Any]], paths: list[str]) -> dict[str, int]:
    counts = {"pass": 0, "fail": 0, "crash": 0, "not run": 0}
    for r in results:
        for p in paths:
            counts[r.get("cells", {}).get(p, {}).get("status", "not run")] += 1
    return counts


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", action="append", help="Architecture(s) to run [all].")
    ap.add_argument("--fast", action="store_true", help="Only the test suite's fast half.")
    ap.add_argument("--paths", help=f"Comma-separated columns [{','.join(PATHS)}].")
    ap.add_argument("--json", type=Path, help="Write every figure to this file.")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="Skip cells in --json already (crashed ones run again).",
    )
    ap.add_argument("--markdown", action="store_true", help="Print the table as Markdown only.")
    ap.add_argument(
        "--table-only", action="store_true", help="Print the table of --json; run nothing."
    )
    ap.add_argument(
        "--train-steps",
        type=int,
        default=0,
        help="Train every layer ~N Adam steps before the heads are fitted (the int8 control) [0].",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    paths = args.paths.split(",") if args.paths else list(PATHS)
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        ap.error(f"unknown path(s) {unknown}; choose from {', '.join(PATHS)}")

    if args.worker:  # one architecture, in this process
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with tempfile.TemporaryDirectory(prefix=f"coverage-{args.worker}-") as tmp:
            res = run_arch(args.worker, paths, Path(tmp), args.train_steps)
        args.result.write_text(json.dumps(res, indent=1, default=str))
        return 0

    zoo = entries()
    names = args.arch or [n for n, e in zoo.items() if e.fast or not args.fast]
    bad = [n for n in names if n not in zoo]
    if bad:
        ap.error(f"unknown architecture(s) {bad}; choose from {', '.join(zoo)}")
    done: dict[str, dict[str, Any]] = {}
    if args.resume and args.json and args.json.is_file():
        done = {r["arch"]: r for r in json.loads(args.json.read_text())["results"]}
    t0 = time.perf_counter()
    results = dict(done)
    saved: dict[str, Any] = {}
    if args.table_only:
        if not (args.json and args.json.is_file()):
            ap.error("--table-only needs --json FILE from an earlier run")
        saved = json.loads(args.json.read_text())
        results = {r["arch"]: r for r in saved["results"]}
        for n in names:  # architectures the run did not reach: a row of "not run"
            results.setdefault(n, {"arch": n, "cells": {}})
    for name in [] if args.table_only else names:
        have = results.get(name, {}).get("cells", {})
        todo = [p for p in paths if have.get(p, {}).get("status", "crash") == "crash"]
        if not todo:
            continue
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            out = Path(f.name)
        cmd = [sys.executable, __file__, "--worker", name, "--result", str(out)]
        cmd += ["--paths", ",".join(todo), "--train-steps", str(args.train_steps)]
        proc = subprocess.run(cmd, cwd=ROOT)
        if proc.returncode == 0 and out.stat().st_size:
            res = json.loads(out.read_text())
        else:
            reason = f"worker exited {proc.returncode}"
            res = {"arch": name, "cells": {p: {"status": "crash", "reason": reason} for p in todo}}
        out.unlink(missing_ok=True)
        merged = {**results.get(name, {}), **{k: v for k, v in res.items() if k != "cells"}}
        merged["cells"] = {**have, **res.get("cells", {})}
        merged["seconds_by_run"] = [*results.get(name, {}).get("seconds_by_run", [])]
        merged["seconds_by_run"].append(res.get("seconds"))
        results[name] = merged
        if args.json:
            _write(args.json, list(results.values()), list(PATHS), t0)
    results = [results[n] for n in names if n in results]
    table = markdown(results, paths)
    counts = summary(results, paths)
    command = "python benchmarks/coverage.py " + " ".join(argv or sys.argv[1:])
    if not args.markdown:
        print(f"command: {command.strip()}")
        took = saved.get("seconds") if args.table_only else time.perf_counter() - t0
        print(f"{len(results)} architectures x {len(paths)} paths in {took or 0:.0f} s: {counts}")
    print(table)
    return 0 if counts["crash"] == 0 else 1


def _write(path: Path, results: list[dict[str, Any]], paths: list[str], t0: float) -> None:
    from edgekit.versions import runtime_versions

    path.write_text(
        json.dumps(
            {
                "command": "python benchmarks/coverage.py " + " ".join(sys.argv[1:]),
                "paths": paths,
                "seconds": round(time.perf_counter() - t0, 1),
                "versions": runtime_versions(),
                "results": results,
            },
            indent=1,
            default=str,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
