"""Process wall time of `edgekit --help` and of `edgekit bench` on a tiny .tflite (budget: 1.5 s each).

    .venv/bin/python benchmarks/startup_time.py [--runs 5]

Prints the median of N runs and whether TensorFlow was imported.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def wall(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    print(f"command: {sys.executable} benchmarks/startup_time.py --runs {args.runs}")
    help_s = wall([sys.executable, "-m", "edgekit", "--help"], args.runs)
    probe = "import sys, edgekit.cli; print('tensorflow' in sys.modules)"
    tf = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True
    ).stdout.strip()
    print(f"edgekit --help: median {help_s:.3f} s over {args.runs} runs (budget 1.5 s) -> "
          f"{'OK' if help_s < 1.5 else 'OVER BUDGET'}")  # fmt: skip
    print(f"tensorflow imported by `import edgekit.cli`: {tf}")
    from edgekit.resources import asset

    tiny = asset("check_reference_float32.tflite")  # a small bundled network
    bench_s = wall([sys.executable, "-m", "edgekit", "bench", str(tiny)], args.runs)
    print(f"edgekit bench {tiny.name} (default runs): median {bench_s:.3f} s over {args.runs} runs "
          f"(budget 1.5 s) -> {'OK' if bench_s < 1.5 else 'OVER BUDGET'}")  # fmt: skip


if __name__ == "__main__":
    main()
