"""edgekit's LiteRT and ONNX Runtime latency for the same network (float32 and int8) beside the
physical floor for that network on this machine's core.

    python benchmarks/bench_roofline.py [--runs 100] [--size 224] [--ghz G] [--fma-units N]

floor = MACs / (peak multiply-accumulates per second of one core), one thread. The peak comes from
the CPU's vector width and clock:
  float32: (vector bits / 32) lanes x FMA units x clock
  int8:    (vector bits / 8) x FMA units x clock with VNNI (vpdpbusd: 4 int8 MACs per 32-bit
           lane per instruction), (vector bits / 16) x FMA units x clock without it
The FMA unit count cannot be read from /proc/cpuinfo: the default (2, as on server Xeon and recent
desktop cores) is printed and can be changed with --fma-units; the clock is the nominal "cpu MHz"
unless --ghz is given (turbo raises the real peak, so "% of peak" is an upper bound). AMX tile
units, where present, are not counted: they are a separate, much higher int8/bf16 peak.
Models: the MobileNetV2 set built by bench_harness_overhead.py (tf_keras.applications,
weights=None), all four measured interleaved by edgekit.api.bench with 1 thread.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_harness_overhead import DEFAULT_DIR, build_models


def core_peak(fma_units: int, ghz: float | None) -> dict:
    """Peak MAC/s of one core for float32 and int8, from the vector extensions and the clock."""
    from edgekit.bench.machine import _cpuinfo, machine_info

    m = machine_info()
    flags = set((_cpuinfo().get("flags") or _cpuinfo().get("Features") or "").split())
    if "avx512f" in flags:
        bits, isa = 512, "AVX-512"
    elif "avx2" in flags or "avx" in flags:
        bits, isa = 256, "AVX2" if "avx2" in flags else "AVX"
    else:
        bits, isa = 128, "NEON/ASIMD" if {"neon", "asimd"} & flags else "SSE"
    vnni = bool({"avx512_vnni", "avx_vnni", "asimddp"} & flags)
    clock = ghz if ghz else (m["cpu_mhz"] or 0) / 1000
    if not clock:
        raise SystemExit("No clock in /proc/cpuinfo; pass --ghz.")
    f32 = bits / 32 * fma_units
    i8 = (bits / 8 if vnni else bits / 16) * fma_units
    return {
        "isa": isa,
        "vector_bits": bits,
        "vnni": vnni,
        "amx": "amx_int8" in flags,
        "fma_units": fma_units,
        "ghz": clock,
        "clock_source": "--ghz" if ghz else "/proc/cpuinfo cpu MHz (nominal)",
        "f32_macs_per_cycle": f32,
        "int8_macs_per_cycle": i8,
        "f32_gmacs": f32 * clock,
        "int8_gmacs": i8 * clock,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--ghz", type=float, help="core clock (default: /proc/cpuinfo)")
    ap.add_argument("--fma-units", type=int, default=2, help="vector FMA units per core")
    ap.add_argument("--models-dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args()

    from edgekit import api
    from edgekit.bench.machine import machine_line

    meta = build_models(a.models_dir, a.size)
    peak = core_peak(a.fma_units, a.ghz)
    macs = meta["macs"]
    keys = ["float.tflite", "float.onnx", "int8.tflite", "int8.onnx"]
    rep = api.bench([meta["paths"][k] for k in keys], threads=1, runs=a.runs, warmup=a.warmup)

    print("command: python " + " ".join(shlex.quote(s) for s in sys.argv))
    print(f"machine: {machine_line(rep['machine'])}")
    print(
        f"network: {meta['network']}: {macs / 1e6:.1f} M MACs, {meta['params'] / 1e6:.2f} M params"
    )
    print(
        f"core peak: {peak['isa']} ({peak['vector_bits']}-bit), {peak['fma_units']} FMA units, "
        f"{peak['ghz']:.2f} GHz ({peak['clock_source']}), VNNI {'yes' if peak['vnni'] else 'no'}"
        f"{', AMX present (not counted)' if peak['amx'] else ''}\n"
        f"  float32: {peak['f32_macs_per_cycle']:.0f} MAC/cycle = {peak['f32_gmacs']:.1f} GMAC/s; "
        f"int8: {peak['int8_macs_per_cycle']:.0f} MAC/cycle = {peak['int8_gmacs']:.1f} GMAC/s"
    )
    print(f"plan: {a.runs} timed runs each, interleaved, 1 thread, batch 1\n")
    head = f"{'model':<14}{'runtime':<22}{'kernels':<24}{'p50 ms':>8}{'floor ms':>10}"
    print(head + f"{'% of peak':>11}{'  p50 / LiteRT float [95% CI]':>32}")
    rows = []
    for key, m, c in zip(keys, rep["models"], rep["comparison"]["rows"], strict=True):
        prec = key.split(".")[0]
        gmacs = peak["f32_gmacs"] if prec == "float" else peak["int8_gmacs"]
        floor_ms = macs / (gmacs * 1e9) * 1e3
        p50 = m["latency_ms"]["p50"]
        kernels = m.get("delegate") or m.get("provider")
        rt = f"{m['runtime']} {m['runtime_version']}"
        print(
            f"{key:<14}{rt:<22}{kernels:<24}{p50:>8.2f}{floor_ms:>10.2f}{floor_ms / p50:>11.1%}"
            f"    {c['ratio']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]"
        )
        rows.append(
            {
                "model": key,
                "runtime": rt,
                "kernels": kernels,
                "p50_ms": p50,
                "cv": m["latency_ms"]["cv"],
                "floor_ms": floor_ms,
                "pct_of_peak": floor_ms / p50,
                "ratio_to_litert_float": c,
            }
        )
    if a.json:
        a.json.write_text(json.dumps({"meta": meta, "peak": peak, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
