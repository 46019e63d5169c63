"""A latency target for channel pruning: find the MAC fraction whose slim model's estimated latency
on an emulated phone is at most a given fraction of the unpruned model's.

MACs are a poor stand-in for latency: a layer at a low resolution with many channels does few MACs
per weight, so it is bound by moving its weights, and how much a MAC target buys depends on where
the channels go. A latency target measures instead. Each probe prunes the model to a MAC fraction
(`channel_prune`, no recovery), converts it to TFLite (float32, or int8 calibrated on the
calibration images) and counts the instructions of one invoke on the device's emulated big core;
the device profile turns instructions and bytes moved into milliseconds
(`edgekit.check.instructions.estimate_ms`; its formula and error band are in docs/emulation.md).
The ratio of those milliseconds to the unpruned model's is what the target bounds. The search
interpolates between probes (starting from "latency follows MACs"), keeps the largest MAC fraction
that meets the target, and stops within `tolerance` below it or after `max_probes` probes.

A ratio of estimates on the same device and precision: the profile's constants mostly cancel, so
it is the instruction and memory mix that decides it, not the calibration's error band.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import ui
from edgekit.errors import UsageError

PRECISIONS = ("float32", "int8")
MAX_PROBES = 6
TOLERANCE = 0.03  # a probe within this much below the target ends the search
FLOOR = 0.02  # the smallest MAC fraction probed


def target_problem(target_latency: Any) -> str | None:
    from edgekit.stages.training import fraction_problem

    return fraction_problem(
        "target_latency",
        target_latency,
        "the fraction of the unpruned model's estimated latency to keep",
        "e.g. 0.625 for 1.6x faster",
    )


def device_profile(device: str | None) -> Any:
    """The emulated device profile to estimate on, checked to be provisioned (UsageError when the
    name is missing or not an emulated arm64 device, TargetUnavailableError (exit 2, naming
    `edgekit devices setup`) when the emulator is not installed)."""
    from edgekit.check.instructions import emulated_targets, resolve_target
    from edgekit.targets.emulated import cache

    if not device:
        raise UsageError(
            "channel_prune.target_latency needs channel_prune.latency_device, the emulated device "
            f"to estimate the latency on: one of {', '.join(emulated_targets())}."
        )
    profile = resolve_target(device, option="latency_device")
    cache.require()
    return profile


@dataclass
class Probe:
    macs_target: float  # the MAC fraction asked of channel_prune
    macs_kept: float  # what it reached
    instructions: float
    ms: float | None
    ratio: float  # estimated latency (or instructions, uncalibrated) over the unpruned model's

    def to_dict(self) -> dict[str, Any]:
        return {
            "macs_target": round(self.macs_target, 4),
            "macs_kept": round(self.macs_kept, 4),
            "instructions": int(self.instructions),
            "ms": None if self.ms is None else round(self.ms, 4),
            "latency_ratio": round(self.ratio, 4),
        }


@dataclass
class LatencySearch:
    """How the MAC fraction for a latency target was found: every probe, the chosen one."""

    device: str
    precision: str
    target: float
    measure: str  # "estimated ms" or "instructions" (a profile without latency constants)
    unpruned: dict[str, Any]
    probes: list[Probe] = field(default_factory=list)
    chosen: Probe | None = None

    @property
    def reached(self) -> bool:
        return self.chosen is not None and self.chosen.ratio <= self.target + 1e-9

    def summary(self) -> dict[str, Any]:
        return {
            "target_latency": self.target,
            "device": self.device,
            "precision": self.precision,
            "measure": self.measure,
            "unpruned": self.unpruned,
            "probes": [p.to_dict() for p in self.probes],
            "chosen": None if self.chosen is None else self.chosen.to_dict(),
            "speedup_estimated": (None if self.chosen is None else round(1 / self.chosen.ratio, 3)),
            "target_reached": self.reached,
        }


def estimate(model: Any, profile: Any, precision: str, x_calib: Any, workdir: Path) -> dict:
    """Instructions per invoke and estimated ms of `model` (Keras) on `profile`, as `precision`
    TFLite (int8 calibrated on `x_calib`)."""
    from edgekit.check.instructions import estimate_ms, measure_instructions
    from edgekit.export import tflite
    from edgekit.keras_compat import wrap

    path = workdir / f"probe_{precision}.tflite"
    kw: dict[str, Any] = {}
    if precision == "int8":
        if x_calib is None or not len(x_calib):
            raise UsageError(
                "latency_precision int8 needs calibration images (x_calib); pass some or use "
                "latency_precision float32."
            )
        kw = {"quantization": "int8", "calibration": np.asarray(x_calib), "calibration_samples": len(x_calib)}  # fmt: skip
    tflite.convert(wrap(model), path, **kw)
    m = measure_instructions(path, profile, runs=3)
    est = estimate_ms(path, m, profile)
    return {"instructions": float(m["median"]), "ms": est.get("ms"), "bytes_moved": est.get("bytes_moved")}  # fmt: skip


def _next_guess(probes: list[Probe], target: float, floor: float) -> float:
    """The MAC fraction to probe next: interpolation between the closest probes on either side of
    the target, or, while every probe is above it, the line through the two lowest ((1.0, 1.0),
    the unpruned model, counts as a probe)."""
    points = sorted([(1.0, 1.0)] + [(p.macs_kept, p.ratio) for p in probes], key=lambda pt: pt[1])
    above = [pt for pt in points if pt[1] > target]
    below = [pt for pt in points if pt[1] <= target]
    if below:
        a, b = above[0], below[-1]
    else:
        b, a = points[0], points[1]
    if abs(a[1] - b[1]) < 1e-9 or (a[0] - b[0]) * (a[1] - b[1]) <= 0:
        # flat or not monotone here: latency assumed to follow MACs from the lowest probe
        m = target * points[0][0] / points[0][1] if not below else (a[0] + b[0]) / 2
    else:
        m = b[0] + (target - b[1]) * (a[0] - b[0]) / (a[1] - b[1])
    return float(min(max(m, floor), 0.999))


def search(
    prune_at: Callable[[float], Any],
    measure: Callable[[Any], dict],
    unpruned: dict,
    target: float,
    *,
    device: str,
    precision: str,
    max_probes: int = MAX_PROBES,
    tolerance: float = TOLERANCE,
) -> tuple[Any, LatencySearch]:
    """Probe MAC fractions until a pruned model's latency ratio lies in [target - tolerance,
    target]; return the pruning result with the largest MAC fraction that meets the target (the
    lowest ratio when none does) and the search record.

    prune_at(macs) -> a ChannelPruneResult; measure(keras model) -> {"instructions", "ms"};
    unpruned: measure() of the unpruned model."""
    use_ms = unpruned.get("ms") is not None
    key = "ms" if use_ms else "instructions"
    base = float(unpruned[key])
    record = LatencySearch(
        device=device,
        precision=precision,
        target=float(target),
        measure="estimated ms" if use_ms else "instructions",
        unpruned={k: unpruned.get(k) for k in ("instructions", "ms", "bytes_moved")},
    )
    results: list[tuple[Probe, Any]] = []
    guess = target
    for i in range(max_probes):
        res = prune_at(guess)
        if any(abs(p.macs_kept - res.macs_kept) < 1e-6 for p, _ in results):
            break  # the minimums stop the model here: another probe would repeat one
        m = measure(res.model)
        probe = Probe(guess, res.macs_kept, m["instructions"], m.get("ms"), float(m[key]) / base)
        results.append((probe, res))
        ui.info(
            f"channel_prune: latency probe {i + 1}: {probe.macs_kept:.1%} of the MACs -> "
            f"{probe.ratio:.3f} of the unpruned model's {record.measure} on {device} ({precision}), "
            f"target {target:.3f}"
        )
        if target - tolerance <= probe.ratio <= target:
            break
        if probe.ratio > target and not res.target_reached:
            break  # the minimums stopped it above the MACs asked: nothing smaller to try
        guess = _next_guess([p for p, _ in results], target, FLOOR)
    record.probes = [p for p, _ in results]
    meeting = [(p, r) for p, r in results if p.ratio <= target + 1e-9]
    if meeting:
        chosen = max(meeting, key=lambda pr: pr[0].macs_kept)
    else:
        chosen = min(results, key=lambda pr: pr[0].ratio)
    record.chosen = chosen[0]
    return chosen[1], record
