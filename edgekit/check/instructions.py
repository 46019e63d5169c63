"""Latency as instructions per invoke on an emulated arm64 target: the CI signal without noise.

The `.tflite` model runs in the arm64 LiteRT under qemu-aarch64 with the device profile's core
model and /proc/cpuinfo (edgekit.targets.emulated.qemu); a QEMU plugin counts the guest instructions of
each invoke. The count depends on the model, the LiteRT build and the core's features, not on
the machine that emulates it or its neighbours, so two counts of the same model agree to a small
fraction of a percent (docs/check.md has the figures). It is not a time: a regression in memory
traffic alone (same instructions, more cache misses) does not show.
"""

from __future__ import annotations

import os
from typing import Any

from edgekit.errors import EvaluationError, UnsupportedModelError, UsageError
from edgekit.plans import LATENCY_METRICS

METRICS = LATENCY_METRICS
DEFAULT_RUNS = 5  # counted invokes per measurement (after 2 warm-up invokes)
# The check refuses to decide when the measured run-to-run spread is larger than this fraction of
# the tolerance AND the change lies within that spread of the tolerance.
SPREAD_FRACTION = 0.25


def validate_metric(metric: str | None, option: str = "--latency-metric") -> str | None:
    if metric is not None and metric not in METRICS:
        raise UsageError(f"{option} must be one of {', '.join(METRICS)}. Received: {metric!r}")
    return metric


def emulated_targets() -> list[str]:
    """Bundled profiles that can be emulated (arm64 with a qemu cpu model)."""
    from edgekit.profiles import list_profiles, load_profile

    return [n for n in list_profiles() if load_profile(n).cpu.qemu_cpu]


def resolve_target(target: str | None, option: str = "--target") -> Any:
    """The DeviceProfile for --target; UsageError naming the emulated targets otherwise (and
    `option`, the setting that named the device)."""
    from edgekit.profiles import load_profile

    if not target:
        raise UsageError(
            f"--latency-metric instructions needs {option} DEVICE, the emulated device to count "
            f"on. Emulated targets: {', '.join(emulated_targets())}."
        )
    profile = load_profile(target)  # unknown name: RecipeError listing the known profiles
    if profile.cpu.arch != "aarch64" or not profile.cpu.qemu_cpu:
        raise UsageError(
            f"{option} {target} is not an emulated arm64 device ({profile.cpu.arch}, no "
            f"cpu.qemu_cpu), so nothing can be counted on it. Emulated targets: "
            f"{', '.join(emulated_targets())}."
        )
    return profile


def require_tflite(model: str | os.PathLike | Any) -> None:
    """Only LiteRT models run on the emulated targets (model: a path or a ModelArtifact)."""
    from edgekit.artifacts import ModelArtifact

    art = ModelArtifact.open(model)
    if art.format != "tflite":
        raise UnsupportedModelError(
            f"--latency-metric instructions counts LiteRT invokes of a .tflite model on the "
            f"emulated target; {art.name} is {art.format}. Check its .tflite export, or use "
            "--latency-metric time."
        )


def cores(profile: Any) -> int:
    """All the device's cores: what LiteRT sees in the emulated /proc/cpuinfo."""
    return sum(c.count for c in profile.cpu.clusters) or 1


def setup_info(state: dict[str, Any]) -> dict[str, Any]:
    """What makes a count: the aarch64 LiteRT, the counting plugin and QEMU (provision state)."""
    return {
        "litert_version": (state.get("wheels", {}).get("versions") or {}).get("ai-edge-litert"),
        "plugin_sha256": state.get("plugin", {}).get("source_sha256"),
        "qemu_version": state.get("qemu", {}).get("version"),
    }


def measure_instructions(
    model: str | os.PathLike | Any,
    profile: Any,
    *,
    threads: int = 1,
    runs: int = DEFAULT_RUNS,
) -> dict[str, Any]:
    """Count instructions per invoke of `model` on `profile`'s emulated big core.

    Returns target, qemu_cpu, features, threads, runs, per_invoke (every counted invoke), median,
    spread ((max - min) / median), the LiteRT/plugin/QEMU versions and the compute precision.
    TargetUnavailableError (exit 2, naming `edgekit devices setup`) when not provisioned.
    """
    from edgekit.artifacts import ModelArtifact
    from edgekit.check.latency import compute_precision
    from edgekit.targets.emulated import cache, qemu

    model = ModelArtifact.open(model)
    require_tflite(model)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UsageError(
            f"--latency-threads must be an integer of at least 1. Received: {threads!r}"
        )
    state = cache.require()
    res = qemu.count_instructions(
        model,
        qemu_cpu=profile.cpu.qemu_cpu,
        features=list(profile.cpu.features),
        midr=profile.cpu.midr,
        cores=cores(profile),
        threads=threads,
        runs=runs,
        _state=state,
    )
    if not res["median"]:
        raise EvaluationError(
            f"The emulated {profile.cpu.qemu_cpu} counted no instructions for "
            f"{model.name}; the check could not be made."
        )
    return {
        "metric": "instructions",
        "target": profile.name,
        "target_title": profile.title,
        "qemu_cpu": profile.cpu.qemu_cpu,
        "features": list(profile.cpu.features),
        "threads": threads,
        "runs": runs,
        "per_invoke": [int(x) for x in res["per_invoke"]],
        "median": float(res["median"]),
        "spread": float(res["spread"] or 0.0),
        "marker_overhead": float(res["marker_overhead"]),
        "delegate": res.get("delegate"),
        "runtime_version": res.get("runtime_version"),
        "precision": compute_precision(model),
        **setup_info(state),
    }


def estimate_ms(model: str | os.PathLike | Any, m: dict[str, Any], profile: Any) -> dict[str, Any]:
    """Information only: the profile's latency estimate for the counted instructions
    (edgekit.targets.emulated.estimate; `calibrated: false` and no ms for an uncalibrated profile)."""
    from edgekit.targets.emulated.estimate import estimate_latency
    from edgekit.targets.emulated.static import analyze

    moved = analyze(model, gpu_analyzer=False, xnnpack_check=False)["totals"]["bytes_moved"]
    return estimate_latency(m["median"], moved, m["precision"], profile, m["threads"])


def setup_changes(base: Any, m: dict[str, Any]) -> list[str]:
    """What differs between the baseline's counting setup and this one, as "what a -> b"."""
    out = []
    for key, what in (
        ("litert_version", "LiteRT aarch64"),
        ("plugin_sha256", "counting plugin"),
        ("qemu_cpu", "QEMU cpu model"),
    ):
        a, b = getattr(base, key), m.get(key)
        if a != b:
            if key == "plugin_sha256":
                a, b = (a or "?")[:12], (b or "?")[:12]
            out.append(f"{what} {a} -> {b}")
    diff = [f"-{f}" for f in sorted(set(base.features) - set(m["features"]))]
    diff += [f"+{f}" for f in sorted(set(m["features"]) - set(base.features))]
    if diff:
        out.append("cpu features " + " ".join(diff))
    return out


def decide(change_pct: float, band_pct: float, tol_pct: float) -> tuple[str, str]:
    """(status, reason) for an increase of `change_pct` percent whose run-to-run uncertainty is
    +-`band_pct`, against the allowed `tol_pct`.

    A spread within SPREAD_FRACTION of the tolerance is too small to matter: the medians decide.
    A larger one decides only where the whole band lies on one side of the limit, and is
    otherwise "warn" (not decided), as the time metric's interval that straddles the limit.
    """
    eps = 1e-9  # "more than the allowed" is strict
    if band_pct <= SPREAD_FRACTION * tol_pct:
        if change_pct > tol_pct + eps:
            return "fail", f"more than the allowed {tol_pct:g}%."
        return "pass", f"within the allowed {tol_pct:g}%."
    if change_pct - band_pct > tol_pct + eps:
        return "fail", f"more than the allowed {tol_pct:g}%, even at the near end of the spread."
    if change_pct + band_pct <= tol_pct + eps:
        return "pass", f"within the allowed {tol_pct:g}%, even at the far end of the spread."
    return "warn", (
        f"not decided: the run-to-run spread (+-{band_pct:.2f}%) is more than "
        f"{SPREAD_FRACTION:.0%} of the allowed {tol_pct:g}% and the limit lies within it. Counts "
        "repeat best with one thread (--latency-threads 1) and models of a million "
        "instructions or more."
    )
