"""How much of a MobileNetV2's latency can removing channels take away? Latency only, no training.

For each `WIDTH@SIZE` (Keras Applications' alpha, input side; the `full` recipe's student is
0.35@64), a MobileNetV2 student is built for the bundled task (32x32 images, resized inside the
model; random weights: latency and instruction counts do not depend on them) and channel-pruned
(L1, the slim recipe's minimums) to 50% of the MACs and to the floor: every group at its minimum,
the same graph with the fewest channels the minimums allow. Float32 and int8 TFLite (int8
calibrated on 100 task images) of the three are timed interleaved (LiteRT, 1 thread, 95%
paired-bootstrap interval) and their instructions per invoke counted on the emulated pixel-4.

What the floor cannot shed is a fixed cost: per-op work that does not scale with channels (at
these sizes, ~65 ops of a few microseconds each) and layers already at their minimum width (the
stem at the highest resolution). When the floor itself is not 1.6x faster, no plan at 50% of the
MACs can be.

    python benchmarks/channel_prune_fixed_cost.py 0.35@64 1.0@64 [--runs 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from channel_prune import _instructions, _interleaved, _splits, _tflite


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="+", help="WIDTH@SIZE, e.g. 0.35@64")
    p.add_argument("--multiple-of", type=int, default=16)
    p.add_argument("--runs", type=int, default=200)
    args = p.parse_args()
    from edgekit.stages import channel_prune as cp
    from edgekit.stages.students import StudentConfig, build_student

    ctx = _splits(0)
    calib, x1 = ctx["x"]["calib"][:100], ctx["x"]["eval"][:1]
    lines = []
    with tempfile.TemporaryDirectory(prefix="edgekit-fixed-cost-") as tmp:
        for config in args.configs:
            width, size = float(config.split("@")[0]), int(config.split("@")[1])
            model = build_student(StudentConfig(arch="mobilenet_v2", width=width, input_size=size), (32, 32, 3), 10)  # fmt: skip
            prepared = cp.prepare(model)
            models = {"unpruned": (1.0, model)}
            for name, target in (("50%", 0.5), ("floor", 0.02)):
                r = cp.prune_prepared(prepared, target_macs=target, multiple_of=args.multiple_of)
                models[name] = (r.macs_kept, r.model)
            for prec in ("float32", "int8"):
                files = [
                    _tflite(m, Path(tmp) / f"{config}_{name}_{prec}.tflite", calib, prec == "int8")
                    for name, (_, m) in models.items()
                ]
                lat = _interleaved(files, x1, args.runs)
                ins = [_instructions(f) for f in files]
                cells = []
                for (name, (kept, _)), t, n in zip(models.items(), lat, ins, strict=True):
                    i = f", {ins[0] / n:.2f}x instr" if ins[0] and n else ""
                    cells.append(f"{name} ({kept:.1%} MACs) {t['p50_ms']:.3f} ms {t['speedup']:.2f}x [{t['ci'][0]:.2f}-{t['ci'][1]:.2f}]{i}")  # fmt: skip
                lines.append(f"MobileNetV2 {config} {prec}: " + "; ".join(cells))
                print(lines[-1], flush=True)
    print()
    print("command: python " + " ".join(sys.argv))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
