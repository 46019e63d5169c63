"""How much does edgekit's latency harness add? Compare edgekit's p50 with LiteRT's own Python
benchmark tool (ai_edge_litert/tools/benchmark_litert_model.py, shipped in the wheel) on the same
models, in the same process, in alternating rounds (edgekit then tool, tool then edgekit, ...).

    python benchmarks/bench_harness_overhead.py [--rounds 15] [--runs 30] [--size 224]

Models: MobileNetV2 (tf_keras.applications, weights=None, 1000 classes) converted to float32 and
int8 (float I/O) TFLite by edgekit.export, built once into the cache folder (--models-dir).
Prints the exact command, the machine, per-round p50s and edgekit's p50 relative to the tool's;
the target is within 3%. Both sides use 1 thread and the CPU (XNNPACK) path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgekit-bench"


def conv_macs(model: Any) -> int:
    """Multiply-accumulates of one inference: Conv2D, DepthwiseConv2D and Dense layers."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in ("Conv2D", "DepthwiseConv2D", "Dense"):
            continue
        out = layer.output.shape
        w = layer.get_weights()[0].shape
        if kind == "Conv2D" or kind == "DepthwiseConv2D":  # kernel (kh, kw, cin, cout)
            total += out[1] * out[2] * w[0] * w[1] * w[2] * w[3]
        else:  # Dense (cin, cout)
            total += w[0] * w[1]
    return int(total)


def build_models(models_dir: Path = DEFAULT_DIR, size: int = 224) -> dict[str, Any]:
    """MobileNetV2 as float / int8 TFLite and ONNX, built once; returns paths and MACs."""
    out = Path(models_dir) / f"mobilenetv2_{size}"
    meta_path = out / "meta.json"
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    import numpy as np

    from edgekit import keras_compat
    from edgekit.export import onnx as onnx_export
    from edgekit.export import tflite

    tfk = keras_compat.tf_keras()
    tfk.utils.set_random_seed(0)
    model = tfk.applications.MobileNetV2(weights=None, input_shape=(size, size, 3), classes=1000)
    loaded = keras_compat.wrap(model)
    calib = np.random.default_rng(0).random((32, size, size, 3), dtype=np.float32)
    print(f"building MobileNetV2 {size}x{size} models in {out} (once) ...", file=sys.stderr)
    paths = {
        "float.tflite": out / "mobilenetv2_float.tflite",
        "int8.tflite": out / "mobilenetv2_int8.tflite",
        "float.onnx": out / "mobilenetv2_float.onnx",
        "int8.onnx": out / "mobilenetv2_int8.onnx",
    }
    tflite.convert(loaded, paths["float.tflite"])
    tflite.convert(loaded, paths["int8.tflite"], quantization="int8", calibration=calib)
    onnx_export.convert(loaded, paths["float.onnx"])
    onnx_export.quantize_int8(paths["float.onnx"], paths["int8.onnx"], calib)
    meta = {
        "network": f"MobileNetV2 {size}x{size}x3, 1000 classes, weights=None (tf_keras.applications)",
        "params": int(model.count_params()),
        "macs": conv_macs(model),
        "paths": {k: str(v) for k, v in paths.items()},
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta


def _tool_p50(model: str, runs: int, warmup: int) -> float:
    """One run of LiteRT's benchmark tool (its median, ms), called in this process."""
    from ai_edge_litert.tools import benchmark_litert_model as tool

    args = argparse.Namespace(
        model=model,
        signature="",
        use_cpu=True,
        no_cpu=False,
        use_gpu=False,
        use_npu=False,
        require_full_delegation=False,
        dispatch_library_path="",
        compiler_plugin_path="",
        runtime_path="",
        num_runs=runs,
        warmup_runs=warmup,
        num_threads=1,
        result_json="",
        verbose=False,
    )
    from edgekit.runtimes.litert import native_stderr

    # The tool prints its own report (we print ours) and LiteRT logs accelerators and plugins.
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), native_stderr():
        res = tool.run_benchmark(args)
    # The tool's JSON rounds to 0.01 ms; it keeps the unrounded median nowhere else.
    return float(res["latency"]["median_ms"])


def _edgekit_p50(model: str, runs: int, warmup: int) -> float:
    import numpy as np

    from edgekit.bench.latency import measure
    from edgekit.runtimes import open_runner

    with open_runner(model, threads=1) as r:
        x = np.random.default_rng(0).random((1, *r.input.shape[1:]), dtype=np.float32)
        return measure(r, x, warmup=warmup, warmup_seconds=0.0, runs=runs).p50


def _median_ci(values: list[float], resamples: int = 5000) -> tuple[float, float]:
    import numpy as np

    a = np.asarray(values)
    idx = np.random.default_rng(0).integers(0, len(a), (resamples, len(a)))
    lo, hi = np.percentile(np.median(a[idx], axis=1), [2.5, 97.5])
    return float(lo), float(hi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--runs", type=int, default=30, help="timed runs per round and side")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--models-dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args()

    import logging

    logging.getLogger("benchmark_litert_model").setLevel(logging.WARNING)
    from edgekit.bench.machine import machine_line

    meta = build_models(a.models_dir, a.size)
    print("command: python " + " ".join(shlex.quote(s) for s in sys.argv))
    print(f"machine: {machine_line()}")
    print(f"network: {meta['network']}, {meta['macs'] / 1e6:.0f} M MACs")
    print(f"plan: {a.rounds} rounds x {a.runs} timed runs (warm-up {a.warmup}), 1 thread, CPU")
    results = {}
    for key in ("float.tflite", "int8.tflite"):
        path = meta["paths"][key]
        ek, tool = [], []
        for i in range(a.rounds):  # alternate which side goes first
            if i % 2:
                tool.append(_tool_p50(path, a.runs, a.warmup))
                ek.append(_edgekit_p50(path, a.runs, a.warmup))
            else:
                ek.append(_edgekit_p50(path, a.runs, a.warmup))
                tool.append(_tool_p50(path, a.runs, a.warmup))
        ratios = [e / t for e, t in zip(ek, tool, strict=True)]
        # Each round pairs two measurements taken seconds apart, so the per-round ratio cancels
        # slow drifts of a shared machine; the verdict is on its median (bootstrap 95% interval).
        rel = statistics.median(ratios) - 1
        lo, hi = _median_ci(ratios)
        rel_of_medians = statistics.median(ek) / statistics.median(tool) - 1
        results[key] = {
            "edgekit_p50_ms": ek,
            "litert_tool_p50_ms": tool,
            "round_ratios": ratios,
            "edgekit_vs_tool": rel,
            "ci95": [lo - 1, hi - 1],
            "ratio_of_medians": rel_of_medians,
            "within_3pct": abs(rel) <= 0.03,
        }
        print(
            f"\n{key}: p50 per round (ms)\n"
            f"  edgekit     : {'  '.join(f'{v:7.2f}' for v in ek)}   median {statistics.median(ek):.2f}\n"
            f"  LiteRT tool : {'  '.join(f'{v:7.2f}' for v in tool)}   median {statistics.median(tool):.2f}\n"
            f"  edgekit / tool per round: {'  '.join(f'{r:.3f}' for r in ratios)}\n"
            f"  edgekit p50 vs tool p50 (median of round ratios): {rel:+.1%} "
            f"[95% CI {lo - 1:+.1%}, {hi - 1:+.1%}] "
            f"({'within' if abs(rel) <= 0.03 else 'OUTSIDE'} 3%); "
            f"ratio of the medians: {rel_of_medians:+.1%}"
        )
    if a.json:
        a.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
