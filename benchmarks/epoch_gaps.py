"""Time lost between training epochs, with tf.data's autotuner off (edgekit) and on (the default).

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/epoch_gaps.py [--samples 2000] [--epochs 15] [--rounds 2]

Trains the `distill` recipe's student (as the recipe sets it; docs/data.md's figures were taken
when that was MobileNetV3Large 0.5 minimalistic @56) on random 32x32
images with the recipe's flips and quarter turns, through `edgekit.stages.training.make_dataset`
and tf_keras `fit`, alternating the two settings `--rounds` times in one process. A gap is the
time from one epoch's `on_epoch_end` to the next `on_epoch_begin` (Keras destroys the last
epoch's iterator and makes a new one there). Prints per setting: fit wall time, mean epoch
seconds, total and largest gap, and the share of fit time lost in gaps.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def run(autotune: bool, x: np.ndarray, y: np.ndarray, epochs: int) -> dict[str, float]:
    from edgekit.keras_compat import tf_keras
    from edgekit.recipes import load_recipe
    from edgekit.stages import training
    from edgekit.stages.students import build_student

    tfk = tf_keras()
    student = load_recipe("distill").stages[0].student
    model = build_student(student, x.shape[1:], 10, seed=0)
    model.compile(
        optimizer="adam",
        loss=tfk.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    marks: list[tuple[str, float]] = []

    class Marks(tfk.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            marks.append(("begin", time.perf_counter()))

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            marks.append(("end", time.perf_counter()))

    aug = training.augmenter("both", True, seed=0)
    train = training.make_dataset(
        x, y, batch_size=64, shuffle=True, seed=0, augment=aug, autotune=autotune
    )
    n_val = max(1, len(x) // 8)
    val = training.make_dataset(x[:n_val], y[:n_val], batch_size=64, autotune=autotune)
    t0 = time.perf_counter()
    model.fit(train, validation_data=val, epochs=epochs, verbose=0, callbacks=[Marks()])
    wall = time.perf_counter() - t0
    times = [t for _, t in marks]
    epoch_s = [times[i + 1] - times[i] for i in range(0, len(times), 2)]
    gaps = [times[i + 1] - times[i] for i in range(1, len(times) - 1, 2)]
    return {
        "wall": wall,
        "epoch": float(np.mean(epoch_s[1:])),  # the first epoch traces the graph
        "gaps": float(sum(gaps)),
        "max_gap": float(max(gaps)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    print(
        f"command: benchmarks/epoch_gaps.py --samples {args.samples} --epochs {args.epochs} "
        f"--rounds {args.rounds}"
    )
    rng = np.random.default_rng(0)
    x = rng.random((args.samples, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, args.samples)
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for r in range(args.rounds):
        for autotune in (False, True):
            res = run(autotune, x, y, args.epochs)
            results[autotune].append(res)
            print(
                f"round {r + 1} autotune={'on ' if autotune else 'off'}: fit {res['wall']:.1f} s, "
                f"epoch {res['epoch']:.2f} s, gaps {res['gaps']:.1f} s (largest "
                f"{res['max_gap']:.1f} s)",
                flush=True,
            )
    for autotune in (False, True):
        rs = results[autotune]
        wall = sum(r["wall"] for r in rs)
        gaps = sum(r["gaps"] for r in rs)
        label = "autotune on (tf.data default)" if autotune else "autotune off (edgekit)"
        print(
            f"{label:32s} fit {wall:7.1f} s  gaps {gaps:6.1f} s ({100 * gaps / wall:4.1f}% of fit)"
            f"  largest {max(r['max_gap'] for r in rs):5.1f} s  epoch {np.mean([r['epoch'] for r in rs]):.2f} s"
        )
    off = sum(r["wall"] for r in results[False])
    on = sum(r["wall"] for r in results[True])
    print(f"fit time, autotune off / on: {off / on:.2f}")


if __name__ == "__main__":
    main()
