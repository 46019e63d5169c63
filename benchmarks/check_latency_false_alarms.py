"""Does `edgekit check` cry wolf on latency, and does it catch a real slowdown?

    python benchmarks/check_latency_false_alarms.py [--repeats 20] [--latency-seconds 3]
                                                    [--tolerance 10] [--float-repeats 10]

Models (built once into --models-dir): MobileNetV2 224x224 (tf_keras.applications, weights=None)
as int8 TFLite, the shipped model; the same network with width multiplier --heavy-alpha (more
channels everywhere: an artificially heavier model, about 25-30% slower); and the float32 TFLite of
the first (the "forgot to quantize" regression). 64 random images with random labels.

First a clock study: the int8 model and the float32 and int8 reference networks timed interleaved
--study-repeats times, each invoke with wall and CPU time, to show how much the model's ratio to
each reference moves between measurements on this machine, per clock. Then the procedure, as a CI pipeline runs it: one `edgekit baseline create` of the int8 model, then
--repeats rounds, each a fresh `edgekit check` process of the unchanged int8 model and one of the
heavier model against that baseline (alternating, so both see the same machine), then
--float-repeats checks of the float model. Each check times the candidate interleaved with the
bundled reference network for --latency-seconds (1 thread) and judges the latency criterion with
--max-latency-increase --tolerance. The true slowdowns are measured separately, interleaved in one
process for 20 s (ratios of median CPU and wall time). Prints the false alarms, the detections, the spread of the measured change and
the exact command. Accuracy is not the point here (--max-accuracy-drop 100).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's edgekit, also in the `edgekit` subprocesses
DEFAULT_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgekit-bench"
SIZE = 224


def build_models(models_dir: Path, heavy_alpha: float) -> dict[str, str]:
    """int8 and float32 MobileNetV2 (alpha 1.0) and int8 MobileNetV2 (alpha heavy_alpha), once."""
    out = Path(models_dir) / "check_latency"
    meta_path = out / f"meta_alpha{heavy_alpha:g}.json"
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    import numpy as np

    from edgekit import keras_compat
    from edgekit.export import tflite

    tfk = keras_compat.tf_keras()
    calib = np.random.default_rng(0).random((32, SIZE, SIZE, 3), dtype=np.float32)
    paths = {}
    for alpha in (1.0, heavy_alpha):
        tfk.utils.set_random_seed(0)
        model = tfk.applications.MobileNetV2(
            weights=None, alpha=alpha, input_shape=(SIZE, SIZE, 3), classes=1000
        )
        loaded = keras_compat.wrap(model)
        print(f"building MobileNetV2 alpha {alpha:g} in {out} (once) ...", file=sys.stderr)
        p = out / f"mobilenetv2_a{alpha:g}_int8.tflite"
        tflite.convert(loaded, p, quantization="int8", calibration=calib)
        paths["heavy" if alpha != 1.0 else "int8"] = str(p)
        if alpha == 1.0:
            pf = out / "mobilenetv2_a1_float.tflite"
            tflite.convert(loaded, pf)
            paths["float"] = str(pf)
    meta_path.write_text(json.dumps(paths, indent=2))
    return paths


def make_data(folder: Path) -> str:
    """64 random images with random labels of 10 classes (accuracy is not measured here, and a
    network with random weights gives every image the same class)."""
    import numpy as np

    path = Path(folder) / "images_random_labels.npz"
    if not path.exists():
        rng = np.random.default_rng(1)
        x = (rng.random((64, SIZE, SIZE, 3)) * 255).astype(np.uint8)
        np.savez(path, x=x, y=rng.integers(0, 10, 64))
    return str(path)


def true_slowdowns(paths: dict[str, str], seconds: float) -> dict[str, dict[str, float]]:
    """heavy / int8 and float / int8: ratios of median CPU time and of median wall time per
    invoke, the three models interleaved in one process."""
    import numpy as np

    from edgekit.bench.latency import measure_interleaved
    from edgekit.runtimes import open_runner

    out: dict[str, dict[str, float]] = {"heavy": {}, "float": {}, "int8": {}}
    for clock in ("cpu", "wall"):
        runners = [open_runner(paths[k], threads=1) for k in ("int8", "heavy", "float")]
        x = np.random.default_rng(0).random((1, SIZE, SIZE, 3), dtype=np.float32)
        cmp = measure_interleaved(
            runners, x, warmup_seconds=1.0, runs=None, min_seconds=seconds / 2, clock=clock
        )
        for r in runners:
            r.close()
        med = [float(np.median(st.samples_ms)) for st in cmp.stats]
        out["int8"][f"{clock}_ms"] = med[0]
        out["heavy"][clock] = med[1] / med[0]
        out["float"][clock] = med[2] / med[0]
    return out


def clock_study(paths: dict[str, str], repeats: int, seconds: float) -> dict[str, list[float]]:
    """The int8 model and both bundled TFLite reference networks (float32, int8) timed
    interleaved, `repeats` times, every invoke with both clocks: how much the model's ratio to a
    reference moves between measurements, per clock and reference, is what a check sees as noise."""
    import numpy as np

    from edgekit.check.latency import bundled_reference
    from edgekit.runtimes import open_runner

    names = ("float32 reference", "int8 reference")
    stats: dict[str, list[float]] = {
        f"{clock} time, {ref}": [] for clock in ("wall", "cpu") for ref in names
    }
    for _ in range(repeats):
        runners = [
            open_runner(paths["int8"], threads=1),
            open_runner(bundled_reference("tflite", "float32"), threads=1),
            open_runner(bundled_reference("tflite", "int8"), threads=1),
        ]
        rng = np.random.default_rng(0)
        for r in runners:
            r.prepare(rng.random((1, *r.input.shape[1:]), dtype=np.float32))
        wall: list[list[int]] = [[], [], []]
        cpu: list[list[int]] = [[], [], []]
        end = time.perf_counter() + seconds
        k = 0
        while time.perf_counter() < end:
            for j in range(3):
                i = (j + k) % 3
                w0, c0 = time.perf_counter_ns(), time.process_time_ns()
                runners[i].invoke()
                c1, w1 = time.process_time_ns(), time.perf_counter_ns()
                if k >= 10:  # warm-up
                    wall[i].append(w1 - w0)
                    cpu[i].append(c1 - c0)
            k += 1
        for r in runners:
            r.close()
        for clock, a in (("wall", wall), ("cpu", cpu)):
            for ri, ref in ((1, names[0]), (2, names[1])):
                stats[f"{clock} time, {ref}"].append(float(np.median(a[0]) / np.median(a[ri])))
    return stats


def edgekit(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGEKIT_QUIET": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, env=env
    )


def run_check(model: str, baseline: Path, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    p = edgekit(
        "check", model, "--baseline", str(baseline), "--no-config", "--json",
        "--max-accuracy-drop", "100", "--max-latency-increase", f"{args.tolerance:g}",
        "--latency-seconds", f"{args.latency_seconds:g}",
    )  # fmt: skip
    if p.returncode not in (0, 1):
        raise SystemExit(f"check failed to run (exit {p.returncode}): {p.stderr.strip()[-500:]}")
    rep = json.loads(p.stdout)
    lat = next(c for c in rep["criteria"] if c["name"] == "latency")
    return {
        "status": lat["status"],
        "change": lat["change"],
        "ci_low": lat["ci_low"],
        "ci_high": lat["ci_high"],
        "rounds": rep["latency"]["rounds"],
        "reference_speed": rep["latency"]["reference_speed_vs_baseline"],
        "seconds": time.perf_counter() - t0,
        "load": os.getloadavg()[0],
    }


def describe(name: str, runs: list[dict[str, Any]], expect: str) -> str:
    changes = [(r["change"] - 1) * 100 + 0.0 for r in runs]  # + 0.0: no "-0.0"
    lows = [(r["ci_low"] - 1) * 100 for r in runs]
    widths = [(r["ci_high"] - r["ci_low"]) * 100 for r in runs]
    counts = {s: sum(r["status"] == s for r in runs) for s in ("pass", "warn", "fail")}
    verdict = (
        f"false alarms (fail): {counts['fail']}/{len(runs)}, warnings: {counts['warn']}/{len(runs)}"
        if expect == "pass"
        else f"caught (fail): {counts['fail']}/{len(runs)}, warnings: {counts['warn']}, "
        f"missed (pass): {counts['pass']}"
    )
    return (
        f"{name}: {verdict}\n"
        f"    measured change: median {statistics.median(changes) + 0.0:+.1f}%, range "
        f"{min(changes):+.1f}% to {max(changes):+.1f}%; CI lower bound range {min(lows):+.1f}% to "
        f"{max(lows):+.1f}%; CI width median {statistics.median(widths):.1f} points"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20, help="checks of each of unchanged / heavy")
    ap.add_argument("--float-repeats", type=int, default=10, help="checks of the float model")
    ap.add_argument("--latency-seconds", type=float, default=3.0)
    ap.add_argument("--tolerance", type=float, default=10.0, help="--max-latency-increase, %%")
    ap.add_argument("--heavy-alpha", type=float, default=1.25)
    ap.add_argument("--study-repeats", type=int, default=10, help="clock study measurements")
    ap.add_argument("--models-dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--json", type=Path, help="also write every check's numbers here")
    args = ap.parse_args(argv)

    from edgekit.bench.machine import machine_info

    paths = build_models(args.models_dir, args.heavy_alpha)
    paths["data"] = make_data(Path(paths["int8"]).parent)
    t_start = time.perf_counter()
    truth = true_slowdowns(paths, 20.0)
    study = clock_study(paths, args.study_repeats, args.latency_seconds)
    baseline = Path(paths["data"]).parent / "baseline.json"
    p = edgekit(
        "baseline", "create", paths["int8"], "--data", paths["data"], "--out", str(baseline),
        "--latency-seconds", f"{args.latency_seconds:g}",
    )  # fmt: skip
    if p.returncode:
        raise SystemExit(p.stderr)
    base = json.loads(baseline.read_text())["latency"]
    unchanged, heavy, flt = [], [], []
    for i in range(args.repeats):
        unchanged.append(run_check(paths["int8"], baseline, args))
        heavy.append(run_check(paths["heavy"], baseline, args))
        print(
            f"  round {i + 1:2d}: unchanged {unchanged[-1]['status']:4s} "
            f"{(unchanged[-1]['change'] - 1) * 100:+5.1f}%   heavier {heavy[-1]['status']:4s} "
            f"{(heavy[-1]['change'] - 1) * 100:+5.1f}%   load {unchanged[-1]['load']:.2f}",
            file=sys.stderr,
        )
    for _ in range(args.float_repeats):
        flt.append(run_check(paths["float"], baseline, args))
    total = time.perf_counter() - t_start

    m = machine_info()
    print("command:", shlex.join([Path(sys.executable).name, *sys.argv]))
    print(
        f"machine: {m['cpu']}, {m['usable_cores']} usable cores, load average "
        f"{os.getloadavg()[0]:.2f} at the end (other jobs were running)"
    )
    print(
        f"baseline: MobileNetV2 224 int8 = {base['ratio']:.3g}x the reference network "
        f"(median {base['model_p50_ms']:.2f} vs {base['reference_p50_ms']:.3f} ms of "
        f"{base['clock']} time), {base['rounds']} rounds in {args.latency_seconds:g} s; "
        f"tolerance +{args.tolerance:g}%"
    )
    th, tf_ = truth["heavy"], truth["float"]
    print(
        f"true slowdowns (interleaved in one process, 20 s): heavier (alpha {args.heavy_alpha:g}) "
        f"x{th['cpu']:.3f} CPU time, x{th['wall']:.3f} wall time; float32 x{tf_['cpu']:.3f} CPU "
        f"time, x{tf_['wall']:.3f} wall time"
    )
    print(
        f"clock study: int8 model / reference network, {args.study_repeats} measurements of "
        f"{args.latency_seconds:g} s (spread = max / min - 1):"
    )
    for name, vals in study.items():
        print(
            f"    median {name:25s}: ratio {min(vals):7.3f} to {max(vals):7.3f}, spread "
            f"{(max(vals) / min(vals) - 1) * 100:5.1f}%"
        )
    print(describe("unchanged int8 model", unchanged, "pass"))
    print(describe(f"heavier model (true +{(th['cpu'] - 1) * 100:.0f}%)", heavy, "fail"))
    if flt:
        print(describe(f"float32 model (true +{(tf_['cpu'] - 1) * 100:.0f}%)", flt, "fail"))
    secs = [r["seconds"] for r in unchanged + heavy + flt]
    print(
        f"one check: median {statistics.median(secs):.1f} s wall (process start, evaluation of "
        f"64 images, {args.latency_seconds:g} s of timing); whole benchmark {total / 60:.1f} min"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "truth": truth,
                    "clock_study": study,
                    "unchanged": unchanged,
                    "heavy": heavy,
                    "float": flt,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
