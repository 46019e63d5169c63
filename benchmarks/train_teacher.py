"""Train the bundled example teacher for the `shapes` reference task, and a scratch student.

Reproduces edgekit/assets/teacher_shapes.keras (a Keras 3 ResNet-style CNN) and its card
edgekit/assets/teacher_shapes.json, then trains the default student (MobileNetV2, width 0.35,
from scratch, labels only) with the budget of recipes/distill.yaml, so that the README can quote
teacher vs scratch student on the same evaluation split.

Data: `shapes` (the default spec: 6000 images, 32x32, seed 0) split with Dataset.split(
{"train": .7, "val": .1, "calib": .1, "eval": .1}, seed=0) -- the split `edgekit compress` uses --
so the eval split is data the teacher never saw. The teacher trains on the train split plus
freshly generated scenes each epoch (`shapes:seed=1000+epoch`, independent of seed 0), with
flips and 90-degree turns (every class keeps its label under them). Input: pixels / 255 ([0, 1]),
the default edgekit Preprocessing. Output: 10 logits.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/train_teacher.py

takes about 20-30 minutes on 2 CPU cores. `--quick` runs a small smoke version (minutes) that
writes to /tmp instead of the package.

This script lives outside the package and imports Keras 3 directly (the teacher is a Keras 3
file on purpose: edgekit's loader bridges it to tf_keras).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgekit.artifacts import atomic_path, sha256_path, write_json_atomic  # noqa: E402
from edgekit.data import DEFAULT_SPLIT, Preprocessing, load_dataset  # noqa: E402
from edgekit.data import shapes as shapes_mod  # noqa: E402

DATA_SPEC = "shapes"
SPLIT_SEED = 0
FRESH_SEED_BASE = 1000  # fresh training scenes use seeds 1000 + epoch (never seed 0)
WIDTHS = (32, 64, 128, 256, 512)  # one residual block per stage; stages 2-5 halve the size


def build_teacher(num_classes: int = 10, input_shape=(32, 32, 3)):
    """ResNet-style CNN: stem, five stages of one basic residual block, global pooling, logits."""
    import keras
    from keras import layers

    def block(x, width: int, stride: int, name: str):
        y = layers.Conv2D(
            width, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_c1"
        )(x)
        y = layers.BatchNormalization(name=f"{name}_bn1")(y)
        y = layers.ReLU(name=f"{name}_r1")(y)
        y = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_c2")(y)
        y = layers.BatchNormalization(name=f"{name}_bn2")(y)
        shortcut = x
        if stride != 1 or x.shape[-1] != width:
            shortcut = layers.Conv2D(width, 1, strides=stride, use_bias=False, name=f"{name}_proj")(
                x
            )
            shortcut = layers.BatchNormalization(name=f"{name}_bnp")(shortcut)
        return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))

    inp = keras.Input(input_shape, name="image")
    x = layers.Conv2D(WIDTHS[0], 3, padding="same", use_bias=False, name="stem_conv")(inp)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i, w in enumerate(WIDTHS):
        x = block(x, w, 1 if i == 0 else 2, name=f"stage{i + 1}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    out = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inp, out, name="teacher_shapes_resnet")


def count_macs(model) -> int:
    """Multiply-accumulates of one forward pass (convolutions and dense layers)."""
    from keras import layers

    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            _, h, w, _ = layer.output.shape
            total += int(np.prod(layer.kernel.shape)) * h * w
        elif isinstance(layer, layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random 90-degree turns and mirror flips (label-preserving for every shapes class)."""
    x = x.copy()
    turns = rng.integers(0, 4, len(x))
    flips = rng.random(len(x)) < 0.5
    for k in range(1, 4):
        idx = np.flatnonzero(turns == k)
        x[idx] = np.rot90(x[idx], k, axes=(1, 2))
    x[flips] = x[flips][:, :, ::-1]
    return x


def accuracy(model, x_pixels: np.ndarray, y: np.ndarray, pre: Preprocessing) -> float:
    logits = model.predict(pre.apply(x_pixels), batch_size=256, verbose=0)
    return float((logits.argmax(1) == y).mean())


def log(msg: str) -> None:
    print(msg, flush=True)


def train_teacher(args, parts, pre: Preprocessing):
    import keras

    train, val = parts["train"], parts["val"]
    model = build_teacher(train.num_classes, train.image_shape)
    per_epoch = len(train) + args.fresh_per_epoch
    steps = args.epochs * int(np.ceil(per_epoch / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=steps - steps // 20,
        warmup_target=args.lr,
        warmup_steps=steps // 20,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(args.seed)
    xv = pre.apply(val.x)
    history = []
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        te = time.perf_counter()
        fresh = load_dataset(
            f"shapes:n={args.fresh_per_epoch},seed={FRESH_SEED_BASE + epoch}",
            image_size=train.image_shape[:2],
        )
        x = np.concatenate([train.x, fresh.x])
        y = np.concatenate([train.y, fresh.y])
        order = rng.permutation(len(x))
        x, y = augment(x[order], rng), y[order]
        h = model.fit(
            pre.apply(x), y, batch_size=args.batch_size, epochs=1, verbose=0, shuffle=False
        )
        _, val_acc = model.evaluate(xv, val.y, batch_size=256, verbose=0)
        row = {
            "epoch": epoch + 1,
            "loss": round(float(h.history["loss"][-1]), 4),
            "train_accuracy": round(float(h.history["accuracy"][-1]), 4),
            "val_accuracy": round(float(val_acc), 4),
            "seconds": round(time.perf_counter() - te, 1),
        }
        history.append(row)
        log(f"teacher epoch {row}")
    return model, history, time.perf_counter() - t0


def train_scratch_student(args, parts, pre: Preprocessing):
    """MobileNetV2 0.35 from scratch on labels only, with recipes/distill.yaml's budget."""
    import keras

    train, val = parts["train"], parts["val"]
    model = keras.applications.MobileNetV2(
        input_shape=train.image_shape,
        alpha=0.35,
        weights=None,
        include_top=True,
        classes=train.num_classes,
        classifier_activation=None,
    )
    # keras.applications builds MobileNetV2 with batch-norm momentum 0.999: after the ~800 steps of
    # this budget the moving statistics would still be ~45% their initial values and inference
    # would sit at chance. 0.9 lets them follow the weights (architecture and inference unchanged).
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    steps = args.student_epochs * int(np.ceil(len(train) / 64))
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(0.002, steps)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", patience=4, restore_best_weights=True, mode="max"
    )
    t0 = time.perf_counter()
    h = model.fit(
        pre.apply(train.x),
        train.y,
        validation_data=(pre.apply(val.x), val.y),
        batch_size=64,
        epochs=args.student_epochs,
        callbacks=[stop],
        verbose=0,
    )
    return model, h.history, time.perf_counter() - t0


def save_keras3(model, path: Path, num_classes: int, image_shape) -> Path:
    """Save weights into a fresh, uncompiled copy (no optimizer state in the file)."""
    clean = build_teacher(num_classes, image_shape)
    clean.set_weights(model.get_weights())
    with atomic_path(path) as tmp:
        clean.save(tmp)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--fresh-per-epoch", type=int, default=12000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.02)
    p.add_argument("--student-epochs", type=int, default=12, help="recipes/distill.yaml: 12")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "edgekit/assets/teacher_shapes.keras")
    p.add_argument("--quick", action="store_true", help="small smoke run written to /tmp")
    p.add_argument("--skip-student", action="store_true")
    p.add_argument(
        "--skip-teacher",
        action="store_true",
        help="reuse the saved teacher and its card; train and record only the scratch student",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.fresh_per_epoch, args.student_epochs = 2, 2000, 2
        if args.out == p.get_default("out"):
            args.out = Path("/tmp/teacher_shapes_quick.keras")
    card_path = args.out.with_suffix(".json")
    command = "TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/train_teacher.py" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:])
        if (argv if argv is not None else sys.argv[1:])
        else ""
    )
    log(f"command: {command}")

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    pre = Preprocessing()  # pixels / 255 -> [0, 1]
    data = load_dataset(DATA_SPEC)
    parts = data.split(DEFAULT_SPLIT, seed=SPLIT_SEED)
    log(
        f"data: {DATA_SPEC!r} ({len(data)} images {data.image_shape}, {data.num_classes} classes), "
        f"split {DEFAULT_SPLIT} seed {SPLIT_SEED}: "
        + ", ".join(f"{k}={len(v)}" for k, v in parts.items())
    )
    fresh_check = load_dataset("shapes:n=5000,seed=999")  # larger held-out sample, tighter CI

    previous = None
    if args.skip_teacher:
        previous = json.loads(card_path.read_text())
        model = keras.saving.load_model(args.out)
        history, seconds = previous["training"]["history"], previous["training"]["seconds"]
    else:
        model, history, seconds = train_teacher(args, parts, pre)
    params = int(model.count_params())
    macs = count_macs(model)
    acc = {k: round(accuracy(model, parts[k].x, parts[k].y, pre), 4) for k in ("val", "eval")}
    acc["fresh_5000_seed999"] = round(accuracy(model, fresh_check.x, fresh_check.y, pre), 4)
    log(f"teacher: params={params:,} MACs={macs / 1e6:.1f}M accuracy={acc} train {seconds:.0f}s")

    if not args.skip_teacher:
        save_keras3(model, args.out, data.num_classes, data.image_shape)
        reloaded = keras.saving.load_model(args.out)
        same = np.abs(
            reloaded.predict(pre.apply(parts["eval"].x[:64]), verbose=0)
            - model.predict(pre.apply(parts["eval"].x[:64]), verbose=0)
        ).max()
        size_mb = args.out.stat().st_size / 1e6
        log(f"saved {args.out} ({size_mb:.1f} MB), reload max |diff| {same:.2e}")

    student = None
    if not args.skip_student:
        smodel, shist, sseconds = train_scratch_student(args, parts, pre)
        student = {
            "arch": "MobileNetV2 (keras.applications), alpha 0.35, weights=None, 10 classes",
            "params": int(smodel.count_params()),
            "macs": count_macs(smodel),
            "training": "labels only, train split, no augmentation, Adam lr 0.002 cosine, batch 64, "
            f"up to {args.student_epochs} epochs, early stopping on val_accuracy (patience 4, best "
            "weights restored) -- the budget of recipes/distill.yaml",
            "batch_norm_momentum": 0.9,
            "epochs_run": len(shist["loss"]),
            "val_accuracy_per_epoch": [round(float(v), 4) for v in shist["val_accuracy"]],
            "train_seconds": round(sseconds, 1),
            "accuracy": {
                k: round(accuracy(smodel, parts[k].x, parts[k].y, pre), 4) for k in ("val", "eval")
            },
        }
        student["accuracy"]["fresh_5000_seed999"] = round(
            accuracy(smodel, fresh_check.x, fresh_check.y, pre), 4
        )
        log(
            f"scratch student: params={student['params']:,} MACs={student['macs'] / 1e6:.2f}M "
            f"accuracy={student['accuracy']} ({student['epochs_run']} epochs, {sseconds:.0f}s)"
        )
        log(f"teacher/student params: {params / student['params']:.1f}x")
        student["command"] = command

    card = {
        "model": args.out.name,
        "format": "keras3",
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "sha256": sha256_path(args.out),
        "size_bytes": args.out.stat().st_size,
        "architecture": (
            "ResNet-style CNN: 3x3 stem (32), five stages of one basic residual block "
            f"(widths {list(WIDTHS)}; stages 2-5 stride 2, 1x1 projection shortcuts), batch norm, "
            "ReLU, global average pooling, dropout 0.2, dense logits"
        ),
        "params": params,
        "macs": macs,
        "input": {
            "name": "image",
            "shape": list(data.image_shape),
            "dtype": "float32",
            "preprocessing": pre.to_dict(),
            "note": "pixels / 255, i.e. RGB in [0, 1]: edgekit's default Preprocessing()",
        },
        "output": {"kind": "logits", "classes": data.num_classes, "labels": data.labels},
        "data": {
            "spec": DATA_SPEC,
            "count": len(data),
            "image_shape": list(data.image_shape),
            "fingerprint": data.fingerprint(),
            "split": DEFAULT_SPLIT,
            "split_seed": SPLIT_SEED,
            "split_fingerprints": {k: v.fingerprint() for k, v in parts.items()},
            "difficulty": {k: list(v) for k, v in shapes_mod.DIFFICULTY.items()},
            "teacher_training_data": (
                f"train split ({len(parts['train'])}) + {args.fresh_per_epoch} fresh images per "
                f"epoch from shapes:seed={FRESH_SEED_BASE}+epoch; random 90-degree turns and flips"
            ),
        },
        "training": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "optimizer": f"AdamW lr {args.lr} (5% warmup, cosine), weight decay {args.weight_decay}",
            "seed": args.seed,
            "seconds": round(seconds, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), no GPU",
            "history": history,
        },
        "accuracy": acc,
        "scratch_student": student,
        "command": command,
    }
    if previous is not None:  # the teacher was not retrained: keep its record
        for key in ("training", "command", "keras_version", "tensorflow_version"):
            card[key] = previous[key]
        card["data"]["teacher_training_data"] = previous["data"]["teacher_training_data"]
    write_json_atomic(card_path, card)
    log(f"card: {card_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
