"""Training throughput of the distill student: images/s of the training loop, before and after.

    .venv/bin/python benchmarks/train_throughput.py [--baseline-rev REV] [--images 4096]
        [--epochs 2] [--rounds 3] [--variant NAME:key=value,...] [--numerics]

Each variant runs in its own process (thread settings only take effect before TensorFlow starts)
and trains the `distill` recipe's student exactly as the stage does (its student, loss, metrics,
optimizer, batch size and augmentation with a teacher logit per view) on `--images` shapes images:
one warm-up epoch, then `--epochs` timed epochs; a variant's figure is its best timed epoch.
Variants run in turn, round after round (A B A B ...), and each round's ratios to the first
variant are taken within the round, so that a busy machine moves both sides of a ratio.

A variant is `NAME:key=value,...` with keys `rev` (a git revision of edgekit to run, checked out
into a temporary folder; default: this working tree), `spe` (steps_per_execution; default: what
this tree's distill uses), `bs` (batch size), `intra` / `inter` (TensorFlow thread pools),
`jit` (1: XLA). Default variants: `before` (`--baseline-rev`, one step per execution) and `after`
(this tree).

`--numerics` also trains one epoch of the same seed with `edgekit.stages.distill.distill` in the
baseline revision and in this tree and prints the largest difference of the trained weights and
of the epoch's loss: the faster loop must compute the same thing within float tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def worker(args: argparse.Namespace) -> None:
    """One variant, in a process of its own: print one JSON line of figures."""
    import tensorflow as tf

    opts = json.loads(args.worker)
    if opts.get("intra"):
        tf.config.threading.set_intra_op_parallelism_threads(int(opts["intra"]))
    if opts.get("inter"):
        tf.config.threading.set_inter_op_parallelism_threads(int(opts["inter"]))
    from edgekit.data import load_dataset
    from edgekit.keras_compat import tf_keras
    from edgekit.recipes import load_recipe
    from edgekit.stages import distill as distill_mod
    from edgekit.stages import training
    from edgekit.stages.students import build_student

    cfg = load_recipe("distill").stages[0]
    bs = int(opts.get("bs") or cfg.batch_size)
    spe = int(opts.get("spe") or getattr(distill_mod, "STEPS_PER_EXECUTION", 1))
    ds = load_dataset(f"shapes:n={args.images}")
    x = ds.x.astype(np.float32) / 255.0
    views = training.augment_views(cfg.augment.flip, cfg.augment.rot90)
    teacher = np.random.default_rng(0).normal(size=(len(views), len(x), 10)).astype(np.float32)
    student = build_student(cfg.student, x.shape[1:], 10, seed=0)
    opt = cfg.optimizer
    student.compile(
        optimizer=training.make_optimizer(
            opt.name, opt.learning_rate, schedule=opt.schedule, total_steps=10_000
        ),
        loss=distill_mod.distillation_loss(10, cfg.alpha, cfg.temperature),
        metrics=distill_mod._metrics(10, True),
        steps_per_execution=spe,
        jit_compile=bool(int(opts.get("jit") or 0)),
    )
    data = training.make_dataset(
        x,
        distill_mod.pack_targets(ds.y, teacher),
        batch_size=bs,
        shuffle=True,
        seed=0,
        augment=training.view_augmenter(views, 10, seed=0),
    )
    seconds = []

    class Timer(tf_keras().callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append((time.perf_counter() - self.t0, time.process_time() - self.c0))

    student.fit(data, epochs=1 + args.epochs, verbose=0, callbacks=[Timer()])
    wall, cpu = min(seconds[1:])
    print(json.dumps({"images_per_s": len(x) / wall, "cpu_s_per_1k": 1000 * cpu / len(x),
                      "bs": bs, "spe": spe}))  # fmt: skip


def numerics(args: argparse.Namespace) -> None:
    """One epoch of distill() on a fixed seed; prints the weights and loss as JSON."""
    from edgekit.data import load_dataset
    from edgekit.recipes import load_recipe
    from edgekit.stages import training
    from edgekit.stages.distill import distill

    # The same settings in both trees (a recipe file written from this tree's recipe, with the
    # fields both versions know): only the training loop differs, so the weights must agree
    # within float tolerance.
    cfg = load_recipe(args.numerics_config).stages[0]
    ds = load_dataset("shapes:n=1024")
    x = ds.x.astype(np.float32) / 255.0
    views = training.augment_views(cfg.augment.flip, cfg.augment.rot90)
    teacher = np.random.default_rng(0).normal(size=(len(views), len(x), 10)).astype(np.float32)
    res = distill(cfg, x, teacher, ds.y, seed=0, teacher_views=views)
    out = Path(args.numerics_out)
    np.savez(out, *res.model.get_weights(), loss=np.array(res.history["loss"]))


def _tree(rev: str | None, tmp: Path) -> Path:
    if not rev:
        return ROOT
    dest = tmp / rev.replace("/", "_")
    if not dest.exists():
        dest.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "edgekit", "recipes"],
                                 check=True, capture_output=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        (dest / "pyproject.toml").write_text("")  # edgekit.resources: a checkout, recipes beside it
    return dest


def _run(tree: Path, extra: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, __file__, *extra], env=env, capture_output=True,
                          text=True, check=False)  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"worker failed ({' '.join(extra)}):\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline-rev", default="fd22e0c", help="edgekit revision of 'before'.")
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--epochs", type=int, default=2, help="Timed epochs per variant and round.")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variant", action="append", default=[], help="NAME:key=value,...")
    ap.add_argument("--numerics", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--numerics-out", help=argparse.SUPPRESS)
    ap.add_argument("--numerics-config", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.numerics_out:
        numerics(args)
        return
    print("command:", shlex.join([sys.executable, *sys.argv]))
    specs = args.variant or [f"before:rev={args.baseline_rev},spe=1", "after"]
    variants = []
    for spec in specs:
        name, _, rest = spec.partition(":")
        opts = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
        variants.append((name, opts))
    with tempfile.TemporaryDirectory() as tmp:
        rounds: list[dict[str, dict]] = []
        for r in range(args.rounds):
            row = {}
            for name, opts in variants:
                tree = _tree(opts.get("rev"), Path(tmp))
                line = _run(tree, ["--worker", json.dumps(opts), "--images", str(args.images),
                                   "--epochs", str(args.epochs)])  # fmt: skip
                row[name] = json.loads(line)
                print(f"round {r + 1} {name:>12}: {row[name]['images_per_s']:7.0f} images/s "
                      f"({row[name]['cpu_s_per_1k']:.2f} CPU s per 1000 images)", flush=True)  # fmt: skip
            rounds.append(row)
        first = variants[0][0]
        if rounds:
            _summary(rounds, variants, first)
        if args.numerics:
            _numerics(args, Path(tmp))


def _summary(rounds: list[dict[str, dict]], variants: list, first: str) -> None:
    print(f"\n{'variant':>12} {'images/s (median)':>18} {'x ' + first + ' (per round)':>28}")
    for name, _ in variants:
        ips = [r[name]["images_per_s"] for r in rounds]
        ratios = [r[name]["images_per_s"] / r[first]["images_per_s"] for r in rounds]
        print(f"{name:>12} {np.median(ips):18.0f} {np.median(ratios):10.2f} "
              f"({', '.join(f'{q:.2f}' for q in ratios)})")  # fmt: skip


def _numerics(args: argparse.Namespace, tmp: Path) -> None:
    """One epoch of distill() with the same settings in the baseline tree and this one."""
    from edgekit.recipes import load_recipe

    known = {"student", "alpha", "temperature", "batch_size", "optimizer", "augment"}
    stage = load_recipe("distill").stages[0]
    config = {**stage.model_dump(mode="json", include=known), "epochs": 1,
              "early_stopping": {"enabled": False}}  # fmt: skip
    config["augment"] = {k: config["augment"][k] for k in ("flip", "rot90")}
    import yaml

    recipe = tmp / "numerics.yaml"
    recipe.write_text(
        yaml.safe_dump({"name": "numerics", "stages": [{"stage": "distill", **config}]})
    )
    trees = [_tree(args.baseline_rev, tmp), ROOT]
    outs = [tmp / f"w{i}.npz" for i in range(2)]
    for tree, out in zip(trees, outs, strict=True):
        _run(tree, ["--numerics-out", str(out), "--numerics-config", str(recipe)])
    a, b = np.load(outs[0]), np.load(outs[1])
    keys = [k for k in a.files if k != "loss"]
    diff = max(float(np.max(np.abs(a[k] - b[k]))) for k in keys)
    print(f"\nnumerics, one epoch of distill() on 1024 images, seed 0, the same settings "
          f"({json.dumps(config)}) in both: loss {a['loss'][0]:.6f} before, {b['loss'][0]:.6f} "
          f"after; largest weight difference {diff:.2e} over {len(keys)} arrays")  # fmt: skip


if __name__ == "__main__":
    main()
