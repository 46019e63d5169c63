"""Structured (channel) pruning against magnitude pruning: does removing half of the MACs cut the
latency, and what does recovery by distillation give back?

For each model (the bundled ResNet-style teacher, a MobileNetV2 trained on the same task):
- `channel_prune` to `--target` of the MACs (L1 criterion, the slim recipe's settings), then
  recovery by distillation from the unpruned model (`--epochs`, on `--train-samples` images);
- top-1 on the eval split (Keras, float): unpruned, pruned before recovery, after recovery;
- float32 and int8 TFLite of the unpruned and the slim model: p50 latency ratio (LiteRT, 1
  thread, interleaved rounds in this process, 95% paired-bootstrap interval) and instructions per
  invoke on the emulated pixel-4 (qemu, when provisioned);
- with `--floor`, the smallest model the minimums allow (same graph, every group at its
  minimum): the latency and instructions that removing channels cannot take away;
- side by side, tfmot magnitude pruning at 50% sparsity (`--prune-epochs` of fine-tuning): its
  float latency ratio and gzip size.

Targets (issue 25): >= 1.6x lower p50 latency and instructions, float32 and int8; top-1 within 1.0
point of the unpruned model after recovery.

    python benchmarks/channel_prune.py --out /tmp/cp [--mobilenet STUDENT.keras] [--epochs 2]
    python benchmarks/channel_prune.py --out /tmp/cp-lat --target-latency 0.625 [--latency-precision int8]

`--target-latency` prunes to a fraction of the estimated latency on the emulated `--latency-device`
(instructions counted per probe, the MAC fraction searched) instead of a MAC fraction.

Without --mobilenet, a MobileNetV2 (width 0.35, input 64, as the `full` recipe's student) is
distilled from the teacher first (`--mnv2-epochs`). Prints the figures and the command; writes
OUT/channel_prune.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _splits(seed: int) -> dict[str, Any]:
    from edgekit.data import Preprocessing, load_dataset
    from edgekit.pipeline import bundled_teacher, make_splits
    from edgekit.recipes import load_recipe

    recipe = load_recipe("slim")
    teacher_path, spec = bundled_teacher()
    ds = load_dataset(spec, seed=recipe.data.seed)
    prep = Preprocessing(mean=recipe.data.preprocessing.mean, std=recipe.data.preprocessing.std)
    splits = make_splits(recipe, ds, None)
    xs = {k: np.asarray(prep.apply(v.x), np.float32) for k, v in splits.items()}
    ys = {k: v.y for k, v in splits.items()}
    return {"teacher": teacher_path, "recipe": recipe, "x": xs, "y": ys}


def _top1(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    out = np.concatenate(
        [np.asarray(model(x[i : i + 256], training=False)) for i in range(0, len(x), 256)]
    )
    return float((out.argmax(1) == y).mean())  # fmt: skip


def _logits(model: Any, x: np.ndarray) -> np.ndarray:
    from edgekit.stages.context import as_logits

    return as_logits(np.concatenate([np.asarray(model(x[i : i + 256], training=False)) for i in range(0, len(x), 256)]))  # fmt: skip


def _tflite(model: Any, path: Path, calib: np.ndarray, int8: bool) -> Path:
    from edgekit.export import tflite
    from edgekit.keras_compat import wrap

    if not path.is_file():
        kw = (
            {"quantization": "int8", "calibration": calib, "calibration_samples": 300}
            if int8
            else {}
        )
        tflite.convert(wrap(model), path, **kw)
    return path


def _interleaved(paths: list[Path], x1: np.ndarray, runs: int) -> list[dict[str, float]]:
    from edgekit.bench.latency import measure_interleaved
    from edgekit.runtimes import open_runner

    runners = [open_runner(p, threads=1) for p in paths]
    try:
        cmp = measure_interleaved(runners, x1, runs=runs, warmup=10, warmup_seconds=0.5)
    finally:
        for r in runners:
            r.close()
    out = []
    for st, r in zip(cmp.stats, cmp.ratios, strict=True):
        # lower latency by: p50(reference) / p50(model), interval inverted accordingly
        out.append(
            {"p50_ms": st.p50, "speedup": 1 / r["ratio"], "ci": [1 / r["ci_high"], 1 / r["ci_low"]]}
        )
    return out  # fmt: skip


def _instructions(path: Path) -> float | None:
    from edgekit.check.instructions import measure_instructions
    from edgekit.errors import EdgekitError
    from edgekit.profiles import load_profile

    try:
        return measure_instructions(path, load_profile("pixel-4"), runs=3)["median"]
    except EdgekitError as e:
        print(f"  (no instruction count: {e})", flush=True)
        return None


def _gzip(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), compresslevel=9))


def _mobilenet(ctx: dict[str, Any], teacher: Any, epochs: int, out: Path) -> Any:
    from edgekit.keras_compat import load_model, save_model
    from edgekit.stages.distill import DistillConfig, distill
    from edgekit.stages.students import StudentConfig

    path = out / f"mobilenet_v2_e{epochs}.keras"
    if path.is_file():
        return load_model(path).model
    cfg = DistillConfig(student=StudentConfig(arch="mobilenet_v2", width=0.35, input_size=64), epochs=epochs, alpha=0.3, temperature=4.0)  # fmt: skip
    x, y = ctx["x"], ctx["y"]
    r = distill(cfg, x["train"], _logits(teacher, x["train"]), y["train"], x_val=x["val"], teacher_val=_logits(teacher, x["val"]), y_val=y["val"])  # fmt: skip
    save_model(r.model, path)
    return r.model


def bench_model(
    label: str, model: Any, ctx: dict[str, Any], args: Any, out: Path
) -> dict[str, Any]:
    from edgekit.keras_compat import to_tf_keras, wrap
    from edgekit.stages import channel_prune as cp
    from edgekit.stages import prune as magnitude

    x, y = ctx["x"], ctx["y"]
    n = args.train_samples
    x_tr, y_tr, x_val, y_val = x["train"][:n], y["train"][:n], x["val"], y["val"]
    x_ev, y_ev, calib = x["eval"], y["eval"], x["calib"][:300]
    fig: dict[str, Any] = {"model": label, "multiple_of": args.multiple_of}
    t0 = time.perf_counter()
    fig["top1_unpruned"] = _top1(model, x_ev, y_ev)
    if args.target_latency:
        from edgekit.stages.channel_prune import channel_prune_to_latency

        res, search = channel_prune_to_latency(model, target_latency=args.target_latency, device=args.latency_device, precision=args.latency_precision, x_calib=calib, criterion="l1", multiple_of=args.multiple_of)  # fmt: skip
        fig["latency_search"] = search.summary()
    else:
        res = cp.channel_prune(model, target_macs=args.target, criterion="l1", multiple_of=args.multiple_of)  # fmt: skip
    fig.update(macs_before=res.macs_before, macs_after=res.macs_after, macs_kept=res.macs_kept,
               params_before=int(model.count_params()), params_after=int(res.model.count_params()),
               left_whole=[w["layer"] for w in res.graph.left_whole])  # fmt: skip
    fig["top1_pruned_before_recovery"] = _top1(res.model, x_ev, y_ev)
    t1 = time.perf_counter()
    rec = cp.recover(res.model, x_tr, _logits(model, x_tr), y_tr, x_val=x_val, teacher_val=_logits(model, x_val), y_val=y_val, epochs=args.epochs, batch_size=64, learning_rate=1e-3, alpha=0.3, temperature=2.0, patience=2)  # fmt: skip
    fig["recovery"] = {"epochs_run": rec.epochs_run, "best_epoch": rec.best_epoch, "seconds": round(time.perf_counter() - t1, 1), "train_samples": len(x_tr)}  # fmt: skip
    slim = rec.model
    fig["top1_after_recovery"] = _top1(slim, x_ev, y_ev)
    fig["top1_drop_points"] = round(100 * (fig["top1_unpruned"] - fig["top1_after_recovery"]), 2)
    files = {}
    for tag, m in (("unpruned", model), ("slim", slim)):
        for int8 in (False, True):
            files[(tag, int8)] = _tflite(m, out / f"{label}_{tag}_{'int8' if int8 else 'float32'}.tflite", calib, int8)  # fmt: skip
    # tfmot magnitude pruning at 50% sparsity, same model (tf-keras for tfmot)
    tfk = model if type(model).__module__.startswith("tf_keras") else to_tf_keras(wrap(model), x_val[:16]).model  # fmt: skip
    t2 = time.perf_counter()
    mag = magnitude.prune(tfk, x_tr, y_tr, target_sparsity=0.5, epochs=args.prune_epochs, batch_size=64)  # fmt: skip
    fig["tfmot"] = {"seconds": round(time.perf_counter() - t2, 1), "top1": _top1(mag.model, x_ev, y_ev), "epochs": args.prune_epochs}  # fmt: skip
    mag_file = _tflite(mag.model, out / f"{label}_tfmot50_float32.tflite", calib, False)
    floor = None
    if args.floor:  # the same graph at the minimums: the latency channels cannot remove
        floor = cp.channel_prune(model, target_macs=0.02, criterion="l1", multiple_of=args.multiple_of)  # fmt: skip
        for int8 in (False, True):
            files[("floor", int8)] = _tflite(floor.model, out / f"{label}_floor_{'int8' if int8 else 'float32'}.tflite", calib, int8)  # fmt: skip
    tail = ["floor"] if floor else []  # timed last, in the same rounds
    x1 = x_ev[:1]
    lat_f = _interleaved(
        [files[("unpruned", False)], files[("slim", False)], mag_file]
        + [files[(t, False)] for t in tail], x1, args.runs,
    )  # fmt: skip
    lat_q = _interleaved([files[(t, True)] for t in ["unpruned", "slim", *tail]], x1, args.runs)
    if floor:
        fig["floor"] = {"macs_kept": floor.macs_kept, "params": int(floor.model.count_params()),
                        "speedup_float32": lat_f[3]["speedup"], "ci_float32": lat_f[3]["ci"],
                        "speedup_int8": lat_q[2]["speedup"], "ci_int8": lat_q[2]["ci"]}  # fmt: skip
    fig["latency_float32"] = {"unpruned_p50_ms": lat_f[0]["p50_ms"], "slim_p50_ms": lat_f[1]["p50_ms"], "slim_speedup": lat_f[1]["speedup"], "slim_ci": lat_f[1]["ci"], "tfmot_p50_ms": lat_f[2]["p50_ms"], "tfmot_speedup": lat_f[2]["speedup"], "tfmot_ci": lat_f[2]["ci"]}  # fmt: skip
    fig["latency_int8"] = {"unpruned_p50_ms": lat_q[0]["p50_ms"], "slim_p50_ms": lat_q[1]["p50_ms"], "slim_speedup": lat_q[1]["speedup"], "slim_ci": lat_q[1]["ci"]}  # fmt: skip
    fig["gzip_bytes"] = {"unpruned_float32": _gzip(files[("unpruned", False)]), "slim_float32": _gzip(files[("slim", False)]), "tfmot50_float32": _gzip(mag_file), "slim_int8": _gzip(files[("slim", True)])}  # fmt: skip
    if not args.no_instructions:
        ins = {}
        for prec, int8 in (("float32", False), ("int8", True)):
            a, b = _instructions(files[("unpruned", int8)]), _instructions(files[("slim", int8)])
            ins[prec] = {"unpruned": a, "slim": b, "ratio": (a / b) if a and b else None}
            if floor:
                c = _instructions(files[("floor", int8)])
                ins[prec]["floor_ratio"] = (a / c) if a and c else None
        fig["instructions_pixel4"] = ins
    fig["seconds"] = round(time.perf_counter() - t0, 1)
    return fig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--models", default="teacher,mobilenet_v2")
    p.add_argument("--mobilenet", help="a MobileNetV2 .keras trained on the teacher's task")
    p.add_argument("--mobilenet-label", default="mobilenet_v2", help="its name in the figures")
    p.add_argument("--mnv2-epochs", type=int, default=12)
    p.add_argument("--target", type=float, default=0.5, help="fraction of MACs kept")
    p.add_argument("--multiple-of", type=int, help="channel counts rounded to [the slim recipe's]")
    p.add_argument("--target-latency", type=float, help="instead: fraction of the estimated latency kept")  # fmt: skip
    p.add_argument("--latency-device", default="pixel-4", help="emulated device of --target-latency")  # fmt: skip
    p.add_argument("--latency-precision", default="int8", choices=["float32", "int8"])
    p.add_argument("--epochs", type=int, default=2, help="recovery epochs (early stopping)")
    p.add_argument("--train-samples", type=int, default=8400)
    p.add_argument("--prune-epochs", type=int, default=1)
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--no-instructions", action="store_true")
    p.add_argument("--floor", action="store_true", help="also time the smallest model the minimums allow (the fixed cost channels cannot remove)")  # fmt: skip
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from edgekit.keras_compat import load_model

    ctx = _splits(0)
    if args.multiple_of is None:
        stage = next(st for st in ctx["recipe"].stages if st.stage == "channel_prune")
        args.multiple_of = stage.multiple_of
    teacher = load_model(ctx["teacher"]).model
    results = []
    for label in args.models.split(","):
        if label == "teacher":
            model = teacher
        else:
            model = load_model(args.mobilenet).model if args.mobilenet else _mobilenet(ctx, teacher, args.mnv2_epochs, out)  # fmt: skip
        if label != "teacher":
            label = args.mobilenet_label
        print(f"== {label}", flush=True)
        fig = bench_model(label, model, ctx, args, out)
        print(json.dumps(fig, indent=1), flush=True)
        results.append(fig)
    command = "python " + " ".join(sys.argv)
    (out / "channel_prune.json").write_text(json.dumps({"command": command, "results": results}, indent=1))  # fmt: skip
    print()
    print(f"command: {command}")
    for f in results:
        lf, lq = f["latency_float32"], f["latency_int8"]
        ins = f.get("instructions_pixel4") or {}

        def ratio(d: dict[str, Any] | None) -> str:
            return f"{d['ratio']:.2f}x" if d and d.get("ratio") else "-"

        print(
            f"{f['model']}: MACs kept {f['macs_kept']:.1%}; p50 float32 {lf['slim_speedup']:.2f}x "
            f"[{lf['slim_ci'][0]:.2f}-{lf['slim_ci'][1]:.2f}], int8 {lq['slim_speedup']:.2f}x "
            f"[{lq['slim_ci'][0]:.2f}-{lq['slim_ci'][1]:.2f}]; pixel-4 instructions float32 "
            f"{ratio(ins.get('float32'))}, int8 {ratio(ins.get('int8'))}; top-1 "
            f"{100 * f['top1_unpruned']:.2f}% -> {100 * f['top1_pruned_before_recovery']:.2f}% "
            f"(pruned) -> {100 * f['top1_after_recovery']:.2f}% ({f['recovery']['epochs_run']} "
            f"recovery epochs); tfmot 50%: p50 {lf['tfmot_speedup']:.2f}x "
            f"[{lf['tfmot_ci'][0]:.2f}-{lf['tfmot_ci'][1]:.2f}], gzip "
            f"{f['gzip_bytes']['tfmot50_float32'] / 1e6:.2f} MB vs "
            f"{f['gzip_bytes']['unpruned_float32'] / 1e6:.2f} MB (slim "
            f"{f['gzip_bytes']['slim_float32'] / 1e6:.2f} MB)"
        )
        if f.get("floor"):
            fl = f["floor"]
            print(
                f"  floor (the minimums, {fl['macs_kept']:.1%} of the MACs): p50 float32 "
                f"{fl['speedup_float32']:.2f}x, int8 {fl['speedup_int8']:.2f}x; pixel-4 "
                f"instructions float32 {ratio({'ratio': ins.get('float32', {}).get('floor_ratio')})}, "
                f"int8 {ratio({'ratio': ins.get('int8', {}).get('floor_ratio')})}"
            )


if __name__ == "__main__":
    main()
