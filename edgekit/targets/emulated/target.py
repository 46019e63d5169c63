"""`edgekit bench/eval --target DEVICE`: a device profile (bundled name or .yaml) as a target.

An aarch64 profile gets the three levels of emulation:

1. static analysis of the .tflite against the profile (MACs, weights, peak memory, delegate
   fallbacks, findings); an error finding (a model over the device's memory, Flex ops) stops
   the run with one line unless `ignore_limits`;
2. one qemu-aarch64 run of edgekit's runner (the job `--target ssh://` runs on a board) on the
   profile's core, with the instruction counter: the device's exact numerics, instructions per
   invoke, and the emulated wall time, which is NOT a latency;
3. a latency estimate from the counts (edgekit.targets.emulated.estimate), for 1 and N threads, with
   its expected error, or `calibrated: false` and no milliseconds.

A desktop (x86_64) profile runs in this process (cpu / gpu, measured by edgekit.bench) and adds
the static analysis. The targets return their measurements; edgekit.bench builds the reports.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import UnsupportedModelError, UsageError
from edgekit.targets.base import Annotations, BenchRun, ModelRun, Predictor, Target, tflite_models
from edgekit.targets.jobs import RemotePredictor, bench_job, model_runs, run_predict

EMULATED_NOTE = (
    "QEMU wall time of the emulated arm64 code: NOT a latency. QEMU runs arm64 code 30-500x "
    "slower than this machine, at a rate set by the instruction mix and this machine's load; "
    "see `estimate` for the device's latency."
)
LIMITS_HINT = "pass --ignore-limits to run anyway"
_INT_PRECISIONS = ("int8", "uint8", "int16x8")


def profile_for(target: str | os.PathLike) -> Any:
    """The DeviceProfile a target names (bundled name or .yaml path)."""
    from edgekit.profiles import load_profile

    return load_profile(target)


def profile_target(target: str | os.PathLike) -> Target:
    """The Target for a device profile: emulated (arm64) or this machine (a desktop profile)."""
    profile = profile_for(target)
    return EmulatedDevice(profile) if profile.cpu.arch == "aarch64" else DesktopProfile(profile)


def _cores(profile: Any) -> int:
    return sum(c.count for c in profile.cpu.clusters) or 1


def analyze_models(
    models: list[Any], profile: Any, *, ignore_limits: bool = False
) -> list[dict[str, Any] | None]:
    """Level 1 for each model (a ModelArtifact; None for a format static analysis cannot read):
    error findings raise one line (unless ignore_limits), warnings go to stderr and stay in the
    result."""
    from edgekit import ui
    from edgekit.targets.emulated.static import analyze

    out: list[dict[str, Any] | None] = []
    for m in models:
        if m.format != "tflite":
            out.append(None)
            continue
        r = analyze(m, profile, gpu_analyzer="gpu" in profile.accelerators)
        if profile.cpu.arch == "aarch64" and r["select_tf_ops"]:
            raise UnsupportedModelError(
                f"{m.name} uses TensorFlow (Flex) ops that LiteRT on {profile.name} cannot "
                f"run: {', '.join(r['select_tf_ops'])}. Re-export it with builtin ops only "
                "(TFLITE_BUILTINS)."
            )
        errors = [f for f in r["findings"] if f["level"] == "error"]
        if errors and not ignore_limits:
            f = errors[0]
            raise UsageError(f"{m.name} on {profile.name}: {f['message']} ({LIMITS_HINT}.)")
        for f in r["findings"]:
            if f["level"] in ("error", "warning"):
                ui.info(f"{f['level']}: {m.name} on {profile.name}: {f['message']}")
        out.append(r)
    return out


def _device_info(profile: Any) -> dict[str, Any]:
    return {
        **profile.summary(),
        "qemu_cpu": profile.cpu.qemu_cpu,
        "big_cores": profile.cpu.big_cores,
        "max_ghz": profile.cpu.max_ghz,
        "calibration": profile.calibration.status,
    }


class DesktopProfile(Target):
    """An x86_64 profile (desktop-cpu, desktop-gpu): this machine, plus the static analysis."""

    kind = "device profile"
    takes = ("graph_optimization", "xla", "ignore_limits")

    def __init__(self, profile: Any) -> None:
        self.profile, self.name = profile, profile.name
        self.runs_here = "gpu" if "gpu" in profile.accelerators else "cpu"

    def annotate(self, models: list[Any], plan: Any) -> Annotations:
        analyses = analyze_models(models, self.profile, ignore_limits=plan.options.ignore_limits)
        return Annotations(
            rows=[{"static": a} for a in analyses],
            report={"device": _device_info(self.profile)},
            settings={"device": self.profile.name},
        )


class EmulatedDevice(Target):
    """An arm64 profile: LiteRT under qemu-aarch64 on the profile's core (see the module
    docstring)."""

    takes = ("ignore_limits",)
    emulated = True

    def __init__(self, profile: Any) -> None:
        self.profile, self.name = profile, profile.name

    def refusal(self, extra: list[str]) -> str:
        return (
            f"Option(s) {', '.join(extra)} do not apply to the emulated {self.profile.name} "
            "target. Expected: ignore_limits."
        )

    def _run(self, state: dict[str, Any], **count: Any) -> Any:
        """run(files, job) on the profile's emulated core."""
        from edgekit.targets.emulated import qemu

        cpu = self.profile.cpu

        def run(files: dict[str, Path], job: dict[str, Any]) -> dict[str, Any]:
            return qemu.run_job(
                files,
                job,
                qemu_cpu=cpu.qemu_cpu,
                features=list(cpu.features),
                midr=cpu.midr,
                cores=_cores(self.profile),
                _state=state,
                **count,
            )

        return run

    # --- bench ---------------------------------------------------------------------------------

    def bench(self, models: list[Any], plan: Any) -> BenchRun:
        """`edgekit bench --target DEVICE` (see the module docstring)."""
        from dataclasses import replace

        from edgekit import ui
        from edgekit.runtimes.base import check_threads
        from edgekit.targets.emulated import cache, qemu

        profile = self.profile
        threads = check_threads(plan.threads) or 1
        cores = _cores(profile)
        if threads > cores:
            raise UsageError(f"{profile.name} has {cores} cores. Received: --threads {threads}.")
        if plan.min_seconds is not None:
            raise UsageError(
                "--min-seconds times emulated runs for a wall time that means nothing on the "
                "device; use --runs N for an emulated target."
            )
        models = tflite_models(models, f"an emulated target ({profile.name})", batch=plan.batch)
        ignore = plan.options.ignore_limits
        analyses = analyze_models(models, profile, ignore_limits=ignore)
        state = cache.require()
        plan = replace(plan, threads=threads)
        files, job = bench_job(models, plan, markers=True)
        cpu = profile.cpu.qemu_cpu
        ui.info(
            f"bench: running {len(models)} model(s) on an emulated {cpu} ({profile.title}) "
            f"under QEMU, {plan.runs} counted run(s) each"
        )
        res = self._run(state, count_instructions=True)(files, job)
        counts = qemu.split_counts(res, cpu, n_models=len(models))
        runs = model_runs(models, res, target=profile.name, threads=threads)
        n_threads = threads if threads > 1 else (profile.cpu.big_cores or 1)
        for run, c, a in zip(runs, counts["models"], analyses, strict=True):
            run.extra = self._counted(c, a, threads=threads, n_threads=n_threads, counts=counts)
        return BenchRun(
            models=runs,
            plan=plan,
            target=profile.name,
            clock="QEMU wall time around invoke() (emulated, not a latency); instructions "
            "counted per invoke by QEMU's plugin between marker syscalls",
            machine={
                **res["machine"],
                "device": f"{profile.title}, emulated {cpu} under QEMU",
                "emulated": True,
            },
            source="estimated",
            peak_rss_mb=None,
            warmup_runs=res["warmup_runs"],
            warmup_seconds=res["warmup_seconds"],
            settings={"estimate_threads": [1, n_threads], "qemu_cpu": cpu, "ignore_limits": ignore},
            emulated_note=EMULATED_NOTE,
            comparison=instruction_comparison(runs) if len(runs) > 1 else None,
            extra={
                "device": _device_info(profile),
                "sources": {
                    "static": "static analysis of the file",
                    "instructions": "emulated",
                    "emulated_ms": "emulated",
                    "estimate": "estimated",
                },
            },
        )

    def _counted(
        self,
        c: dict[str, Any],
        analysis: dict[str, Any],
        *,
        threads: int,
        n_threads: int,
        counts: dict[str, Any],
    ) -> dict[str, Any]:
        """A model's device fields: the counts under `instructions`, the estimate under
        `estimate`, the static analysis under `static`."""
        from edgekit.targets.emulated.estimate import FORMULA, estimate_latency

        profile = self.profile
        instructions = {
            **c,
            "runs": len(c["per_invoke"]),
            "threads": threads,
            "marker_overhead": counts["marker_overhead"],
            "qemu_cpu": profile.cpu.qemu_cpu,
            "source": "emulated",
            "note": "guest arm64 instructions per invoke (all threads), counted by QEMU's plugin; "
            "the markers' own cost is subtracted",
        }
        precision, why = _precision(analysis)
        moved = analysis["totals"]["bytes_moved"]
        by_threads = [
            estimate_latency(c["median"], moved, precision, profile, threads=t)
            for t in dict.fromkeys((1, n_threads))
        ]
        calibrated = by_threads[0]["calibrated"]
        notes = []
        if threads > 1:
            notes.append(
                f"instructions counted with {threads} threads: the total includes XNNPACK "
                "workers' spin-waiting, so the 1-thread estimate is high"
            )
        if why:
            notes.append(why)
        if calibrated:
            err = by_threads[0]["expected_error"]
            notes.insert(0, f"an estimate from counted instructions, not a measurement: ±{err:.0%}")
            notes.extend(by_threads[0].get("notes", []))  # clamped at the issue width, extrapolated
        else:
            notes.insert(0, f"uncalibrated: {by_threads[0]['reason']}")
        estimate = {
            "source": "estimated",
            "calibrated": calibrated,
            "precision": precision,
            "instructions": c["median"],
            "bytes_moved": moved,
            "expected_error": by_threads[0].get("expected_error"),
            "basis": by_threads[0].get("basis"),
            "extrapolated": by_threads[0].get("extrapolated", False),
            "clamped": by_threads[0].get("clamped", False),
            "formula": FORMULA,
            "by_threads": by_threads,
            "note": "; ".join(notes),
        }
        return {"instructions": instructions, "estimate": estimate, "static": analysis}

    # --- eval ----------------------------------------------------------------------------------

    def predictor(self, model: Any, plan: Any) -> Predictor:
        """`edgekit eval --target DEVICE`: accuracy as the device's CPU kernels compute it
        (aarch64 LiteRT under QEMU) and how its outputs differ from this machine's LiteRT."""
        from edgekit import ui
        from edgekit.runtimes.base import check_threads
        from edgekit.targets.emulated import cache

        profile = self.profile
        threads = check_threads(plan.threads) or 1
        (model,) = tflite_models([model], f"an emulated target ({profile.name})", batch=1)
        (analysis,) = analyze_models([model], profile, ignore_limits=plan.options.ignore_limits)
        run = self._run(cache.require())
        cpu = profile.cpu.qemu_cpu
        batch_size = plan.batch_size

        def predict(x: np.ndarray) -> tuple[list[np.ndarray], dict[str, Any]]:
            # Chunks of a few hundred images: a progress line per chunk, and each QEMU start
            # (about 1.5 s) is spread over many images.
            step = max(batch_size, 256)
            parts, desc = [], {}
            starts = range(0, len(x), step)
            for s in ui.progress(starts, description=f"eval {model.name} on an emulated {cpu}"):
                outs, desc = run_predict(
                    model, x[s : s + step], threads=threads, batch_size=batch_size, run=run
                )
                parts.append(outs)
            outs = [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
            return outs, desc

        return EmulatedPredictor(
            model,
            predict,
            target=profile.name,
            source="emulated",
            batching=f"emulated {cpu}: one invoke per batch",
            threads=threads,
            profile=profile,
            analysis=analysis,
        )


class EmulatedPredictor(RemotePredictor):
    """Outputs from the emulated core, and how they differ from this machine's LiteRT."""

    def __init__(
        self,
        model: Any,
        predict: Any,
        *,
        target: str,
        source: str,
        batching: str,
        threads: int,
        profile: Any,
        analysis: Any,
    ) -> None:
        super().__init__(
            model, predict, target=target, source=source, batching=batching, threads=threads
        )
        self.profile, self.analysis = profile, analysis

    def extras(self, result: dict[str, Any], dataset: Any) -> dict[str, Any]:
        p, cpu = self.profile, self.profile.cpu.qemu_cpu
        return {
            "machine": {**result["machine"], "device": f"{p.title}, emulated {cpu}"},
            "numerics": numerics(
                self.model, self.x, self.outs, result["output"], dataset, self.threads
            ),
            "device": _device_info(p),
            "static": self.analysis,
            "threads": self.threads,
            "note": f"Accuracy as the aarch64 LiteRT CPU kernels (XNNPACK) compute it on {cpu}: "
            "the device's CPU numerics. GPU/NNAPI delegates compute differently and are not "
            "emulated.",
        }


def _precision(analysis: dict[str, Any]) -> tuple[str, str | None]:
    p = analysis["precision"]
    if p in _INT_PRECISIONS:
        return "int8", None if p == "int8" else f"{p} model: the int8 constants are used"
    if p == "float32":
        return "float32", None
    return "float32", f"{p} model: the float32 constants are used"


def instruction_comparison(runs: list[ModelRun]) -> dict[str, Any]:
    """Each model's median instructions per invoke over the first model's: an exact count, so
    the ratio has no sampling interval (only the spread of the counts)."""
    base = runs[0].extra["instructions"]["median"]
    return {
        "baseline": runs[0].model.path,
        "method": "ratio of median guest instructions per invoke (counted, not timed)",
        "confidence": None,
        "rows": [
            {
                "model": r.model.path,
                "name": r.model.name,
                "instructions": r.extra["instructions"]["median"],
                "ratio": r.extra["instructions"]["median"] / base if base else None,
                "spread": r.extra["instructions"]["spread"],
                "estimated_ms": r.extra["estimate"]["by_threads"][0].get("ms"),
            }
            for r in runs
        ],
    }


def numerics(
    path: Any,
    x: np.ndarray,
    device_outs: list[np.ndarray],
    output_name: str,
    ds: Any,
    threads: int,
) -> dict[str, Any]:
    """How the emulated arm64 outputs differ from this machine's LiteRT on the same inputs."""
    from edgekit.runtimes import open_runner

    with open_runner(path, target="cpu", threads=threads) as r:
        host = r.run(x)
        names = [t.name for t in r.outputs]
        d = r.describe()
    oi = names.index(output_name) if output_name in names else 0
    diffs = [
        float(np.max(np.abs(a - b))) if a.size else 0.0
        for a, b in zip(device_outs, host, strict=True)
    ]
    dev_top1 = device_outs[oi].argmax(axis=1)
    host_top1 = host[oi].argmax(axis=1)
    changed = int((dev_top1 != host_top1).sum())
    out: dict[str, Any] = {
        "compared_with": f"{d['runtime']} {d['runtime_version']} on this machine (x86_64, "
        "XNNPACK), same preprocessed inputs",
        "max_abs_diff": max(diffs) if diffs else 0.0,
        "max_abs_diff_per_output": dict(zip(names, diffs, strict=True)),
        "bit_identical": all(v == 0.0 for v in diffs),
        "top1_agreement": float((dev_top1 == host_top1).mean()),
        "changed_predictions": changed,
        "count": len(x),
        "source": "emulated vs measured on this machine",
    }
    if ds.labeled:
        out["x86_top1"] = float((host_top1 == np.asarray(ds.y)).mean())
    return out
