"""`edgekit tune` on a model of the reference task that int8 hurts, in one run.

    .venv/bin/python benchmarks/tune.py [--out runs/tune] [--k 1000] [--layer stage3]
        [--eval-samples 2000] [--max-trials 30] [--latency-seconds 10] [--device pixel-4]

The model: the bundled shapes teacher (edgekit/assets/teacher_shapes.keras) with an outlier
channel put into one block, exactly preserving its function: channel 0 of `<layer>_bn1` (gamma and
beta) is scaled up K times and the `<layer>_c2` convolution that reads it (after the ReLU, which is
positively homogeneous) scaled down K times. The float model's outputs are unchanged (printed),
but the tensor between the two now spans K times its range, and one int8 scale for the whole
tensor leaves the other 127 channels almost no levels: full int8 loses accuracy. No training.

Then, as a user would:

    edgekit tune OUT/teacher_outlier.keras --data shapes --max-accuracy-drop 0.5 --out OUT/tune ...

(printed with its real arguments), and, for the emulated phone, the instructions per invoke of
the float model and of the chosen one on --device (edgekit.check.instructions, qemu-aarch64;
needs `edgekit devices setup`). The summary prints every target of issue 23 with its figure and
whether it is met.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(out: Path, k: float, layer: str) -> Path:
    from edgekit.data import Preprocessing, load_dataset
    from edgekit.keras_compat import load_model, save_model

    loaded = load_model(ROOT / "edgekit" / "assets" / "teacher_shapes.keras")
    m = loaded.model
    x = Preprocessing().apply(load_dataset("shapes").x[:256])
    before = loaded.predict(x)
    bn, conv = m.get_layer(f"{layer}_bn1"), m.get_layer(f"{layer}_c2")
    gamma, beta, *stats = bn.get_weights()
    gamma, beta = gamma.copy(), beta.copy()
    gamma[0] *= k
    beta[0] *= k
    bn.set_weights([gamma, beta, *stats])
    w, *rest = conv.get_weights()
    w = w.copy()
    w[:, :, 0, :] /= k
    conv.set_weights([w, *rest])
    after = loaded.predict(x)
    diff = float(np.abs(np.asarray(before) - np.asarray(after)).max())
    agree = float((np.argmax(before, 1) == np.argmax(after, 1)).mean())
    print(f"outlier x{k:g} in {layer}_bn1 channel 0 -> {layer}_c2: float outputs max |diff| "
          f"{diff:.2e}, top-1 agreement {agree:.2%} on 256 images")  # fmt: skip
    path = out / "teacher_outlier.keras"
    save_model(m, path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/tune")
    ap.add_argument("--k", type=float, default=1000.0)
    ap.add_argument("--layer", default="stage3")
    ap.add_argument("--eval-samples", type=int, default=2000)
    ap.add_argument("--max-trials", type=int, default=30)
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--device", default="pixel-4", help="emulated phone ('' to skip)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model = build(out, a.k, a.layer)
    argv = [
        "edgekit", "tune", str(model), "--data", "shapes", "--max-accuracy-drop", "0.5",
        "--max-trials", str(a.max_trials), "--eval-samples", str(a.eval_samples),
        "--latency-seconds", str(a.latency_seconds), "--out", str(out / "tune"),
        "--html", str(out / "tune.html"), "--json",
    ]  # fmt: skip
    print("$", shlex.join(argv), flush=True)
    t1 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "edgekit", *argv[1:]], stdout=subprocess.PIPE, text=True
    )
    tune_s = time.time() - t1
    if proc.returncode not in (0, 1):
        print(f"edgekit tune failed (exit {proc.returncode})")
        return proc.returncode
    r = json.loads(proc.stdout)
    by = {c["name"]: c for c in r["candidates"]}
    float_c, chosen = by["float32"], r["chosen"]
    print(f"\nKeras top-1 {r['keras']['top1']:.2f}% on {r['data']['eval']} eval images; "
          f"{r['trials']['used']} trials; tune ran {tune_s:.0f} s")  # fmt: skip
    print(f"{'candidate':<16}{'top-1':>8}{'drop':>8}{'p50 ms':>9}{'speed-up (95% CI)':>22}"
          f"{'KB':>8}")  # fmt: skip
    for c in r["candidates"]:
        lat = c["latency"]
        ci = lat["ratio_ci"]
        print(f"{c['name']:<16}{c['top1']:>8.2f}{c['drop']:>8.2f}{lat['ms']:>9.3f}"
              f"{lat['speedup']:>9.2f}x ({1 / ci[1]:.2f}-{1 / ci[0]:.2f})"
              f"{c['size_bytes'] / 1e3:>8.0f}")  # fmt: skip
    print("\nsensitivity (top 6):")
    for s in r["sensitivity"][:6]:
        lost = "-" if s["lost_points"] is None else f"{s['lost_points']:.2f}"
        print(f"  {s['rank']:>2} {s['layer']:<14} lost when only it is int8: {lost:>6} pts; "
              f"tensor error {s['tensor_error']:.3f}")  # fmt: skip
    print(f"greedy kept in float: {list(r['greedy']['kept'])}")
    instr = None
    if a.device and chosen:
        from edgekit.check.instructions import measure_instructions
        from edgekit.profiles import load_profile

        profile = load_profile(a.device)
        f = measure_instructions(float_c["path"], profile, runs=3)
        c = measure_instructions(chosen["path"], profile, runs=3)
        instr = f["median"] / c["median"]
        print(f"\nemulated {a.device} ({profile.cpu.qemu_cpu}): float {f['median'] / 1e6:.1f} M "
              f"instructions per invoke, {chosen['name']} {c['median'] / 1e6:.1f} M: "
              f"{instr:.2f}x fewer")  # fmt: skip
    int8_drop = max(by["int8"]["drop"], by.get("int8-mixed", by["int8"])["drop"])
    print("\ntargets (issue 23):")
    rows = [
        ("full int8 loses >= 2 points vs float", f"{by['int8']['drop']:.2f} (converter), "
         f"{by['int8-mixed']['drop']:.2f} (ai-edge-quantizer)", int8_drop >= 2),
        ("a model within 0.5 point of float", f"{chosen['name']}: {chosen['drop']:.2f}"
         if chosen else "none", bool(chosen) and chosen["drop"] <= 0.5),
        (">= 1.5x faster than float on this CPU (interleaved p50)",
         f"{chosen['latency']['speedup']:.2f}x" if chosen else "-",
         bool(chosen) and chosen["latency"]["speedup"] >= 1.5),
        (f">= 1.5x fewer instructions on the emulated {a.device}",
         "-" if instr is None else f"{instr:.2f}x", instr is not None and instr >= 1.5),
        ("within 30 trials", str(r["trials"]["used"]), r["trials"]["used"] <= 30),
    ]  # fmt: skip
    for what, fig, ok in rows:
        print(f"  [{'met' if ok else 'NOT MET'}] {what}: {fig}")
    print(f"\ntotal {time.time() - t0:.0f} s; report {out / 'tune' / 'tune.json'}, page "
          f"{out / 'tune.html'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
