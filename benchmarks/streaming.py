"""Data larger than memory: peak resident memory of `edgekit eval` and a short `edgekit compress`
on a generated image folder, and streamed vs in-memory training throughput.

    .venv/bin/python benchmarks/streaming.py                    # the issue's target: 50,000 224x224
    .venv/bin/python benchmarks/streaming.py --n 5000 --dir /tmp/stream5k   # a smaller one

1. Writes a seeded image folder (JPEG, one sub-folder per class; `--dir`, default under /tmp:
   never commit it) unless it is already there with the same settings.
2. Runs `edgekit eval TINY.tflite --data DIR` and `edgekit compress TEACHER.keras --recipe distill
   --data DIR --set distill.epochs=1 ...` as child processes and reports each one's own peak RSS
   (os.wait4's ru_maxrss), next to what the in-memory path would hold (the pixels as uint8 plus
   one float32 copy, the figure `data.stream=auto` decides by).
3. Trains the same small tf_keras CNN on a subset that fits both ways (`--train-n` images),
   streamed (`stream=on`) and in memory (`stream=off`), interleaved A B A B, and reports images per
   second of the epochs after the first and the ratio, plus whether the histories are identical.

Every figure is printed with the command that produced it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_folder(root: Path, n: int, size: int, classes: int, seed: int) -> None:
    """n seeded JPEGs: a class-coloured disc at a random place on a gradient, with noise."""
    from PIL import Image

    stamp = root / ".edgekit-bench.json"
    want = {"n": n, "size": size, "classes": classes, "seed": seed}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        print(f"reusing {root} ({n} images)")
        return
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 226, size=(classes, 3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    t0 = time.perf_counter()
    for i in range(n):
        c = i % classes
        d = root / f"class{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        g = rng.uniform(0, 120, size=3)
        img = (g[None, None] * (xx[..., None] + yy[..., None]) / 2).astype(np.float32)
        cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img[mask] = colours[c]
        img += rng.normal(0, 12, size=(size, size, 1))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{i:06d}.jpg", quality=90)
        if (i + 1) % 5000 == 0:
            print(f"  wrote {i + 1}/{n} images ({time.perf_counter() - t0:.0f} s)", flush=True)
    stamp.write_text(json.dumps(want))
    print(f"wrote {n} images to {root} in {time.perf_counter() - t0:.0f} s")


def models(work: Path, size: int, classes: int) -> tuple[Path, Path]:
    """A small Keras teacher at size x size (trained for nothing: memory is what is measured)
    and its float TFLite."""
    import tensorflow as tf

    from edgekit.keras_compat import save_model, tf_keras

    tfk = tf_keras()
    tfk.utils.set_random_seed(0)
    inp = tfk.Input((size, size, 3))
    h = tfk.layers.Conv2D(8, 3, strides=4, activation="relu")(inp)
    h = tfk.layers.Conv2D(16, 3, strides=2, activation="relu")(h)
    h = tfk.layers.GlobalAveragePooling2D()(h)
    model = tfk.Model(inp, tfk.layers.Dense(classes)(h))
    keras_path = save_model(model, work / "teacher.keras")
    tfl = work / "teacher.tflite"
    tfl.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return keras_path, tfl


def peak_rss(cmd: list[str]) -> tuple[int, float, float, str]:
    """(exit code, peak RSS in GB of that child, wall seconds, last lines of its output)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    t0 = time.perf_counter()
    with open(os.devnull, "w") as _:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        out = p.stdout.read().decode(errors="replace")  # type: ignore[union-attr]
        _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    tail = "\n".join(out.strip().splitlines()[-6:])
    return p.returncode, usage.ru_maxrss / 1024**2, time.perf_counter() - t0, tail


def throughput(folder: Path, n: int, epochs: int, rounds: int) -> dict:
    """Images/s of streamed vs in-memory training on the first n images of `folder` (one class
    folder after another, then split off by the data set's stratified split): streamed with
    every epoch decoding the files ("on"), streamed with the decode cache that compress uses
    (data.decode_cache, "cached": epochs after the first read decoded pixels back), and in
    memory ("off"), interleaved in each round."""
    from edgekit.data import Preprocessing, from_arrays, load_dataset
    from edgekit.data.stream import attach_decode_caches
    from edgekit.keras_compat import tf_keras
    from edgekit.stages import training

    pre = Preprocessing()
    results: dict[str, list[float]] = {"on": [], "cached": [], "off": []}
    histories: dict[str, dict] = {}
    ds = load_dataset(f"{folder}:stream=on")
    frac = min(1.0, n / len(ds))
    ds = ds.split({"train": frac}, seed=0)["train"] if frac < 1 else ds
    # The same images both ways: the subset streamed, and decoded once into memory.
    sets = {"on": ds, "cached": ds, "off": from_arrays(np.asarray(ds.x), ds.y, ds.labels)}
    for r in range(rounds):
        for stream in ("on", "cached", "off"):
            ds = sets[stream]
            caches = []
            if stream == "cached":  # a fresh cache each round: its first epoch decodes
                caches = attach_decode_caches(folder.parent / f"{folder.name}-work", [ds.x], "on")
            x = ds.x.with_preprocessing(pre) if ds.streamed else pre.apply(ds.x)
            tfk = tf_keras()
            tfk.utils.set_random_seed(0)
            h, w, c = ds.image_shape
            inp = tfk.Input((h, w, c))
            t = tfk.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
            t = tfk.layers.Conv2D(16, 3, strides=2, activation="relu")(t)
            t = tfk.layers.GlobalAveragePooling2D()(t)
            model = tfk.Model(inp, tfk.layers.Dense(ds.num_classes)(t))

            class Timer(tfk.callbacks.Callback):
                def __init__(self):
                    super().__init__()
                    self.times: list[float] = []

                def on_epoch_begin(self, epoch, logs=None):
                    self.t0 = time.perf_counter()

                def on_epoch_end(self, epoch, logs=None):
                    self.times.append(time.perf_counter() - self.t0)

            hist = training.fit(
                model, x, ds.y, epochs=epochs, batch_size=64, seed=0, callbacks=[timer := Timer()]
            )
            times = timer.times
            for cache in caches:
                cache.close()
                ds.x.use_decode_cache(None)
            results[stream] += [len(ds) / s for s in times[1:]]
            histories.setdefault(stream, hist)
            del x
            print(
                f"  round {r + 1} stream={stream}: epochs {', '.join(f'{s:.1f}' for s in times)} s"
            )
    med = {k: float(np.median(v)) for k, v in results.items()}
    return {
        "images": len(sets["on"]),
        "images_per_s_streamed": round(med["on"], 1),
        "images_per_s_streamed_decode_cache": round(med["cached"], 1),
        "images_per_s_in_memory": round(med["off"], 1),
        "ratio_streamed_over_in_memory": round(med["on"] / med["off"], 3),
        "ratio_decode_cache_over_in_memory": round(med["cached"] / med["off"], 3),
        "same_history": histories["on"] == histories["off"] == histories["cached"],
        "loss_streamed": histories["on"]["loss"],
        "loss_in_memory": histories["off"]["loss"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=None, help="where the image folder goes")
    ap.add_argument("--n", type=int, default=50_000, help="images (the issue's target: 50,000)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-n", type=int, default=2000, help="images of the throughput set")
    ap.add_argument(
        "--epochs", type=int, default=3, help="throughput epochs (the first is not timed)"
    )
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], choices=["eval", "compress", "throughput"])
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        help="more --set overrides for the compress run (e.g. data.split.train=0.1 to train on "
        "part of a large folder: the scan and fingerprint still cover all of it)",
    )
    a = ap.parse_args()
    folder = a.dir or Path(f"/tmp/edgekit-stream-{a.n}-{a.size}")
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    write_folder(folder, a.n, a.size, a.classes, a.seed)
    work = folder.parent / f"{folder.name}-work"
    work.mkdir(exist_ok=True)
    from edgekit.data.stream import human_bytes

    in_memory = a.n * a.size * a.size * 3 * 5
    print(
        f"in-memory path would hold {human_bytes(in_memory)} "
        f"({a.n} x {a.size}x{a.size}x3 pixels as uint8 plus one float32 copy)"
    )
    report: dict = {"n": a.n, "size": a.size, "in_memory_bytes": in_memory}
    py = [sys.executable, "-m", "edgekit"]
    if {"eval", "compress"} - set(a.skip):
        keras_path, tfl = models(work, a.size, a.classes)
    if "eval" not in a.skip:
        cmd = [*py, "eval", str(tfl), "--data", str(folder), "--json"]
        rc, gb, secs, tail = peak_rss(cmd)
        print(f"eval: exit {rc}, peak RSS {gb:.2f} GB, {secs:.0f} s\n  {shlex.join(cmd)}")
        if rc:
            print(tail)
        report["eval"] = {"rc": rc, "peak_rss_gb": round(gb, 3), "seconds": round(secs, 1)}
    if "compress" not in a.skip:
        out = work / "run"
        cmd = [
            *py, "compress", str(keras_path), "--recipe", "distill", "--data", str(folder),
            "--out", str(out), "--set", "distill.epochs=1", "--set", "distill.augment.flip=none",
            "--set", "distill.augment.rot90=false", "--set", "latency_runs=3",
            "--set", "data.max_eval_samples=500",
        ]  # fmt: skip
        for extra in a.sets:
            cmd += ["--set", extra]
        rc, gb, secs, tail = peak_rss(cmd)
        print(f"compress: exit {rc}, peak RSS {gb:.2f} GB, {secs:.0f} s\n  {shlex.join(cmd)}")
        print(tail)
        report["compress"] = {"rc": rc, "peak_rss_gb": round(gb, 3), "seconds": round(secs, 1)}
    if "throughput" not in a.skip:
        t = throughput(folder, a.train_n, a.epochs, a.rounds)
        print(
            f"training throughput on {t['images']} images: streamed "
            f"{t['images_per_s_streamed']} img/s (ratio {t['ratio_streamed_over_in_memory']}), "
            f"streamed with the decode cache {t['images_per_s_streamed_decode_cache']} img/s "
            f"(ratio {t['ratio_decode_cache_over_in_memory']}), in memory "
            f"{t['images_per_s_in_memory']} img/s; same history: {t['same_history']}"
        )
        report["throughput"] = t
    print(json.dumps(report))


if __name__ == "__main__":
    main()
