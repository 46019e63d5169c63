"""Real data: a Keras 3 teacher trained on Fashion-MNIST, then the distill, prune and quantize recipes.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/fashion_mnist.py [--out runs/fashion]
        [--recipes distill,prune,quantize] [--teacher-epochs 10] [--skip-scratch] [--set K=V ...]

Data: Fashion-MNIST from Debian's `dataset-fashion-mnist` package (`--data fashion-mnist`; the
original IDX files): 60,000 training and 10,000 test images, 28x28 grey, 10 classes. edgekit keeps
the published test part whole as the `eval` split, so every top-1 below is on those 10,000 images
and compares with published figures; train / val / calib divide the 60,000 (46,667 / 6,667 /
6,667 with the recipes' split).

1. The teacher: a Keras 3 ResNet-style CNN (stem, three stages of one basic residual block, widths
   32-64-128), trained on the train split with random mirror images and shifts of up to 2 pixels,
   AdamW with warm-up and cosine decay, seed 0. Cached in benchmarks/.cache (not committed);
   `--retrain` trains it again.
2. `edgekit compress TEACHER --data fashion-mnist --recipe R` for each recipe (distill with the
   student at 32x32, grey, and no mirror-or-turn augmentation the teacher is not invariant to:
   the stage measures that itself). Every artifact's top-1 and the interleaved latency of the
   float and int8 TFLite files against the teacher's float TFLite (LiteRT, 1 thread).
3. The same student trained from scratch on the labels (same augmentation and steps): what
   distillation adds on real data.

Published figures on the same test set (Zalando's benchmark table and papers): plain CNNs 89-92%,
ResNet-18-class networks 93-95% with augmentation, MobileNet-class 90-93%.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CACHE = ROOT / "benchmarks" / ".cache"
SPLIT = {"train": 0.7, "val": 0.1, "calib": 0.1, "eval": 0.1}
WIDTHS = (32, 64, 128)
# The distill recipe, adapted to 28x28 grey images: the student sees them at 32x32 (the smallest
# MobileNet input), and fashion photos are not mirror- or turn-symmetric upside down: only
# horizontal mirror images, which the teacher was trained with.
DISTILL_OVERRIDES = [
    "distill.student.input_size=32",
    "distill.augment.flip=horizontal",
    "distill.augment.rot90=false",
    "distill.epochs=30",
    "distill.early_stopping.patience=30",
]


def log(msg: str) -> None:
    print(msg, flush=True)


def build_teacher(num_classes: int = 10, input_shape=(28, 28, 1)):
    import keras
    from keras import layers

    def block(x, width: int, stride: int, name: str):
        y = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_c1")(x)  # fmt: skip
        y = layers.BatchNormalization(name=f"{name}_bn1")(y)
        y = layers.ReLU(name=f"{name}_r1")(y)
        y = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_c2")(y)
        y = layers.BatchNormalization(name=f"{name}_bn2")(y)
        if stride != 1 or x.shape[-1] != width:
            x = layers.Conv2D(width, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
            x = layers.BatchNormalization(name=f"{name}_bnp")(x)
        return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([x, y]))

    inp = keras.Input(input_shape, name="image")
    x = layers.Conv2D(WIDTHS[0], 3, padding="same", use_bias=False, name="stem")(inp)
    x = layers.ReLU(name="stem_relu")(layers.BatchNormalization(name="stem_bn")(x))
    for i, w in enumerate(WIDTHS):
        x = block(x, w, 1 if i == 0 else 2, f"s{i + 1}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    out = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inp, out, name="fashion_teacher")


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal mirror images and shifts of up to 2 pixels (zero padding)."""
    n, h, w, _ = x.shape
    flip = rng.random(n) < 0.5
    x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    dy, dx = rng.integers(0, 5, n), rng.integers(0, 5, n)
    out = np.empty_like(x)
    for i in range(n):
        out[i] = padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    return out


def train_teacher(parts, epochs: int, path: Path) -> dict:
    import keras

    from edgekit.artifacts import atomic_path
    from edgekit.data import Preprocessing

    keras.utils.set_random_seed(0)
    pre = Preprocessing()
    x_tr, y_tr = parts["train"].x, parts["train"].y
    x_va, y_va = pre.apply(parts["val"].x), parts["val"].y
    model = build_teacher()
    steps = epochs * int(np.ceil(len(x_tr) / 128))
    lr = keras.optimizers.schedules.CosineDecay(
        0.0, steps, warmup_target=2e-3, warmup_steps=steps // 20
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(lr, weight_decay=0.02),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(0)
    history = []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        t1 = time.perf_counter()
        h = model.fit(pre.apply(augment(x_tr, rng)), y_tr, batch_size=128, epochs=1, verbose=0,
                      validation_data=(x_va, y_va))  # fmt: skip
        row = {k: round(float(v[-1]), 4) for k, v in h.history.items()}
        row.update(epoch=epoch + 1, seconds=round(time.perf_counter() - t1, 1))
        history.append(row)
        log(f"teacher epoch {epoch + 1}/{epochs}: {row}")
    with atomic_path(path) as tmp:  # keeps the .keras suffix Keras checks
        model.save(tmp)
    return {"epochs": epochs, "seconds": round(time.perf_counter() - t0, 1), "history": history}


def accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    from edgekit.runtimes import open_runner

    with open_runner(path, threads=os.cpu_count() or 1) as r:
        pred = np.concatenate([r.run(x[i : i + 256])[0] for i in range(0, len(x), 256)]).argmax(1)
    return float((pred == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/fashion")
    ap.add_argument("--recipes", default="distill,prune,quantize")
    ap.add_argument("--teacher-epochs", type=int, default=10)
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--skip-scratch", action="store_true")
    ap.add_argument("--runs", type=int, default=200, help="Timed runs per model (interleaved).")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    log("command: " + shlex.join([sys.executable, *sys.argv]))

    from edgekit import api
    from edgekit.bench.latency import measure_interleaved
    from edgekit.data import Preprocessing, load_dataset
    from edgekit.export import tflite as tflite_export
    from edgekit.keras_compat import load_model
    from edgekit.runtimes import open_runner

    ds = load_dataset("fashion-mnist")
    parts = ds.split(SPLIT, seed=0)
    log(f"data: {ds}; splits { ({k: len(v) for k, v in parts.items()}) }")
    pre = Preprocessing()
    x_eval, y_eval = pre.apply(parts["eval"].x), parts["eval"].y

    teacher = CACHE / f"fashion_teacher_e{args.teacher_epochs}.keras"
    card = teacher.with_suffix(".json")
    if args.retrain or not teacher.is_file():
        info = train_teacher(parts, args.teacher_epochs, teacher)
        card.write_text(json.dumps(info, indent=1))
    info = json.loads(card.read_text()) if card.is_file() else {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_tflite = out / "teacher_float32.tflite"
    if not t_tflite.is_file():
        tflite_export.convert(load_model(teacher), t_tflite)
    t_acc = accuracy(t_tflite, x_eval, y_eval)
    log(f"\nteacher: {teacher.name}, trained {info.get('epochs')} epochs in "
        f"{info.get('seconds', 0) / 60:.1f} min: top-1 {100 * t_acc:.2f}% on the 10,000 test images")  # fmt: skip

    rows = []
    for recipe in [r.strip() for r in args.recipes.split(",") if r.strip()]:
        extra = (DISTILL_OVERRIDES if recipe == "distill" else []) + args.overrides
        t0 = time.perf_counter()
        report = api.compress(teacher, recipe=recipe, data="fashion-mnist", out=out / recipe,
                              overrides=extra)  # fmt: skip
        minutes = (time.perf_counter() - t0) / 60
        log(f"\n[{recipe}] edgekit compress: {minutes:.1f} min")
        tfl = [a for a in report["artifacts"] if a["format"] == "tflite"]
        paths = [t_tflite] + [out / recipe / a["path"] for a in tfl]
        runners = [open_runner(p, threads=1) for p in paths]
        cmp = measure_interleaved(runners, x_eval[:1], runs=args.runs, warmup=20)
        for r in runners:
            r.close()
        base = cmp.stats[0].p50
        for a, p, st in zip(tfl, paths[1:], cmp.stats[1:], strict=True):
            acc = accuracy(p, x_eval, y_eval)
            rows.append((recipe, Path(a["path"]).name, p.stat().st_size, acc, st.p50, base / st.p50,
                         t_tflite.stat().st_size / p.stat().st_size, minutes))  # fmt: skip
        if recipe == "distill" and not args.skip_scratch:
            from edgekit.recipes import load_recipe
            from edgekit.stages.distill import distill

            cfg = load_recipe("distill", extra).stages[0].model_copy(update={"alpha": 1.0})
            t1 = time.perf_counter()
            res = distill(cfg, pre.apply(parts["train"].x), None, parts["train"].y,
                          x_val=pre.apply(parts["val"].x), y_val=parts["val"].y, seed=0,
                          num_classes=10)  # fmt: skip
            pred = res.model.predict(x_eval, verbose=0, batch_size=256).argmax(1)
            scratch = float((pred == y_eval).mean())
            d_acc = next(r[3] for r in rows if r[0] == "distill" and "float32" in r[1])
            log(f"scratch student (labels only, same augmentation and steps, "
                f"{(time.perf_counter() - t1) / 60:.1f} min): {100 * scratch:.2f}%; distilled float "
                f"{100 * d_acc:.2f}%; teacher {100 * t_acc:.2f}%")  # fmt: skip

    log(f"\nteacher float32 TFLite: {t_tflite.stat().st_size / 1024:.0f} KB, p50 {base:.3f} ms "
        f"(last run), top-1 {100 * t_acc:.2f}%")  # fmt: skip
    log(f"{'recipe':9} {'artifact':34} {'size KB':>8} {'x smaller':>9} {'top-1':>7} {'drop':>6} "
        f"{'p50 ms':>7} {'x faster':>8} {'min':>5}")  # fmt: skip
    for recipe, name, size, acc, p50, faster, smaller, minutes in rows:
        log(f"{recipe:9} {name:34} {size / 1024:8.0f} {smaller:9.1f} {100 * acc:6.2f}% "
            f"{100 * (t_acc - acc):6.2f} {p50:7.3f} {faster:8.1f} {minutes:5.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
