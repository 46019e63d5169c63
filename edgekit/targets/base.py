"""What every target answers: time these models (`bench`), give the outputs of this model
(`predictor`). A target returns measurements; edgekit.bench turns them into the one bench or
eval report, with the same statistics whatever measured. Models that run in this process
(`runs_here`) are measured by edgekit.bench itself, through edgekit.runtimes.

    target = open_target("pixel-4")                    # edgekit.targets
    run = target.bench([ModelArtifact.open(p)], plan)  # -> BenchRun
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import UnsupportedModelError, UsageError

SOURCE_LOCAL = "measured on this machine"
SOURCE_DEVICE = "measured on the device"
SOURCES = (SOURCE_LOCAL, SOURCE_DEVICE, "emulated", "estimated")


@dataclass
class ModelRun:
    """What a target measured of one model in a bench run."""

    model: Any  # the ModelArtifact
    # The row's runtime fields: format, runtime, runtime_version, target, threads, what ran it
    # (accelerator, delegate, provider, xnnpack, graph_optimization, xla), fallback, batching,
    # input, outputs.
    runtime: dict[str, Any]
    load_ms: float | None = None
    first_inference_ms: float | None = None
    rss_before_mb: float | None = None
    rss_increase_mb: float | None = None
    peak_rss_mb: float | None = None
    samples_ms: list[float] | None = None  # every timed invoke, by round
    first_warmup_ms: float | None = None
    latency_ms: dict[str, Any] | None = None  # a target's own summary, when it has no samples
    extra: dict[str, Any] = field(default_factory=dict)  # the target's own row fields


@dataclass
class BenchRun:
    """What a target measured of all the models of one bench call, and how."""

    models: list[ModelRun]
    plan: Any  # the BenchPlan as it ran (the target's defaults and limits applied)
    target: str  # the target as the report names it
    clock: str  # what each timed run measured
    machine: dict[str, Any]
    source: str
    peak_rss_mb: float | None = None
    warmup_runs: int | None = None
    warmup_seconds: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # the target's own settings
    # The samples are wall times of an emulator, not latencies: reported under `emulated_ms`
    # with this note, and the latency fields are left empty.
    emulated_note: str | None = None
    # Samples of every model taken in the same rounds (A B A B ...): p50 ratios to the first
    # model with a paired bootstrap. False: the target ran one model after the other.
    interleaved: bool = True
    comparison: dict[str, Any] | None = None  # the target's own comparison, when not timed
    comparison_note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # the target's own report fields


class Predictor:
    """One model, ready to give its outputs on preprocessed float32 batches (`edgekit eval`)."""

    name: str = ""
    label: str = ""  # what the progress line says
    runs_here: bool = False  # True: in this process (edgekit.runtimes); False: on the target
    threads: int = 1  # as resolved; a reference model runs here with as many
    local_target: str = "cpu"  # where a reference model runs here

    def input_shape(self) -> tuple[int, ...]:
        """The model's per-item input shape (H, W, C)."""
        raise NotImplementedError

    def outputs(self) -> list[tuple[str, list[Any]]]:
        """(name, shape) of each output, in order."""
        raise NotImplementedError

    def start(self, batches: Callable[[], Iterable[np.ndarray]]) -> Callable[[np.ndarray], list]:
        """A function from each batch of `batches()` (in that order) to the model's outputs."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The eval report's fields about what ran: format, runtime, runtime_version, target,
        batching, source (and machine, when not this one)."""
        raise NotImplementedError

    def extras(self, result: dict[str, Any], dataset: Any) -> dict[str, Any]:
        """The target's own report fields, once the metrics are in `result`."""
        return {}

    def close(self) -> None:
        """Release what the model holds."""

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Annotations:
    """What a target adds to a run made in this process (a desktop device profile): fields for
    each model's row, for the report and for its settings."""

    rows: list[dict[str, Any]]
    report: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


class Target:
    """A place to run models. `takes`: the plan options (BenchPlan.given) it accepts.

    runs_here "cpu" / "gpu": the models run in this process (edgekit.bench measures them through
    edgekit.runtimes) and the target only adds its `annotate`; None: the target measures
    (`bench`) and computes outputs (`predictor`) itself."""

    name: str = ""
    kind: str = ""  # how errors name this kind of target
    takes: tuple[str, ...] = ()
    runs_here: str | None = None
    emulated: bool = False  # QEMU: a few counted runs (bench's device defaults)

    def annotate(self, models: list[Any], plan: Any) -> Annotations:
        """Before a run here: what this target adds to it (may refuse a model in one line)."""
        return Annotations(rows=[{} for _ in models])

    def refuse(self, given: list[str]) -> None:
        """A one-line UsageError for options this target does not take."""
        extra = sorted(k for k in given if k not in self.takes)
        if extra:
            raise UsageError(self.refusal(extra))

    def refusal(self, extra: list[str]) -> str:
        return (
            f"Option(s) {', '.join(extra)} do not apply to {self.kind} targets. "
            f"Expected: {', '.join(self.takes)}."
        )

    def bench(self, models: list[Any], plan: Any) -> BenchRun:
        raise NotImplementedError

    def predictor(self, model: Any, plan: Any) -> Predictor:
        raise UsageError(f"eval does not run on {self.name} targets.")


class ThisMachine(Target):
    """`cpu` or `gpu` here: every format edgekit runs, with the runtimes' own options."""

    kind = "this machine's"
    takes = ("graph_optimization", "xla")

    def __init__(self, target: str) -> None:
        self.name = str(target)
        self.runs_here = self.name

    def refusal(self, extra: list[str]) -> str:
        return (
            f"Option(s) {', '.join(extra)} apply to device profile, --target ssh://... or adb "
            f"targets only. Received --target {self.name}."
        )


def batching(shape: list[Any]) -> str:
    """How a runner feeds a batch of N to an input of this shape."""
    b = shape[0] if shape else None
    if b is None or b < 0:
        return "dynamic batch: one invoke per batch (input resized)"
    return f"fixed batch {b}: run() loops over chunks of {b} (last one zero-padded)"


def tflite_models(models: list[Any], where: str, *, batch: int) -> list[Any]:
    """The models a device runner (ssh, adb, qemu) takes: .tflite files only, each with one image
    input whose shape is static and whose fixed batch, if any, is `batch`. Checked on the files
    (the checks a local runner makes at load time, no runtime needed), before anything is sent;
    `where` names the target in the error."""
    for m in models:
        if m.format != "tflite":
            raise UsageError(
                f"{m.name} is a {m.format} model; {where} runs .tflite models (LiteRT on the "
                "device). Export it with `edgekit export MODEL --format tflite` first."
            )
    for m in models:
        ins = m.tflite.inputs
        if len(ins) != 1:
            raise UnsupportedModelError(
                f"{m.name} has {len(ins)} inputs; edgekit runs models with exactly one image input."
            )
        shape = ins[0]["shape"]
        if any(d is None or d < 0 for d in shape[1:]):
            raise UnsupportedModelError(
                f"Input of {m.name} has shape {shape} with a dynamic dimension other than the batch."
            )
        if shape and shape[0] > 0 and shape[0] != batch:
            raise UsageError(
                f"Batch size {batch} does not fit {m.name}: its input has a fixed batch of "
                f"{shape[0]}. Use --batch {shape[0]}."
            )
    return models
