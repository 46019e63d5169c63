"""Distillation throughput per replica count: images/s of the distill stage's training under
distill.distribute=none (1 replica) and mirrored over 2..N devices.

    .venv/bin/python benchmarks/distributed.py [--replicas 1,2] [--images 2048] [--size 32]

Each replica count runs in its own process (logical devices are set before TensorFlow starts):
with GPUs the replicas are the first N GPUs; without, N logical CPU devices share this machine's
cores (which shows the strategy's overhead, not a speed-up: the cores are the same). A run times
`distill()` for 1 epoch and for 3 epochs of the same data and seed; images/s = 2 epochs of
images / the difference, so graph building and the first epoch's warm-up cancel out. The global
batch is batch_size x replicas (the per-replica batch stays 64), as the stage does it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def child(replicas: int, images: int, size: int) -> dict:
    import numpy as np
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        devices = [f"/gpu:{i}" for i in range(replicas)]
    else:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(max(replicas, 1))]
        )
        devices = [f"/cpu:{i}" for i in range(replicas)]
    from edgekit.stages.distill import DistillConfig, distill

    rng = np.random.default_rng(0)
    x = rng.random((images, size, size, 3), dtype=np.float32)
    t = rng.normal(size=(images, 10)).astype(np.float32)
    seconds = {}
    for epochs in (1, 3):
        config = DistillConfig.model_validate(
            {
                "student": {
                    "arch": "mobilenet_v3_large",
                    "width": 0.5,
                    "minimalistic": True,
                    "input_size": size,
                },
                "epochs": epochs,
                "batch_size": 64,
                "alpha": 0.0,
                "early_stopping": {"enabled": False},
                "distribute": "none" if replicas == 1 else "mirrored",
                "devices": None if replicas == 1 else devices,
            }
        )
        t0 = time.perf_counter()
        result = distill(config, x, t, seed=0)
        seconds[epochs] = time.perf_counter() - t0
    rate = 2 * images / (seconds[3] - seconds[1])
    return {
        "replicas": replicas,
        "devices": result.distribution["devices"],
        "kind": "GPU" if gpus else "logical CPU",
        "images_per_s": rate,
        "seconds_1_epoch": seconds[1],
        "seconds_3_epochs": seconds[3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.images, args.size)), flush=True)
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEKIT_QUIET": "1"}
    rows = []
    for n in (int(r) for r in args.replicas.split(",")):
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(n),
                "--images",
                str(args.images),
                "--size",
                str(args.size),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        line = next((s for s in proc.stdout.splitlines() if s.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"replicas={n} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(line[len("RESULT ") :]))
    base = rows[0]["images_per_s"]
    print(f"{'replicas':>8} {'devices':<36} {'images/s':>9} {'x of 1':>7}")
    for r in rows:
        print(
            f"{r['replicas']:>8} {r['kind'] + ' ' + ','.join(d.split('/')[-1] for d in r['devices']):<36} "
            f"{r['images_per_s']:9.0f} {r['images_per_s'] / base:7.2f}"
        )


if __name__ == "__main__":
    main()
