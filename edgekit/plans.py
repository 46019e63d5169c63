"""The typed plans of `bench` and `eval`: what to measure, where, and how to reach the target.

    plan = BenchPlan(target="pixel-4", runs=5)                 # api.bench builds the same
    report = edgekit.bench.benchmark.bench(["m.tflite"], plan)

A plan is frozen: the CLI fills it through edgekit.api, and bench, eval and every target
(edgekit.targets) read the same fields. Options that only some targets take live in
`TargetOptions`; a target refuses any it does not take, in one line, before it runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Literal, get_args

Delegate = Literal["xnnpack", "gpu", "nnapi", "none"]
GraphOptimization = Literal["all", "extended", "basic", "disabled"]
LatencyMetric = Literal["time", "instructions"]  # what `check` compares (edgekit.check)
DELEGATES: tuple[str, ...] = get_args(Delegate)
GRAPH_OPTIMIZATIONS: tuple[str, ...] = get_args(GraphOptimization)
LATENCY_METRICS: tuple[str, ...] = get_args(LatencyMetric)


@dataclass(frozen=True)
class TargetOptions:
    """How to reach a target that is not this process, and what a device profile may waive.
    None (False): the target's own default."""

    # ssh://user@host
    remote_python: str | None = None  # the Python on the board [python3]
    ssh_key: str | os.PathLike | None = None  # private key file
    known_hosts: str | os.PathLike | None = None  # known_hosts file [ssh's own]
    connect_timeout: int | None = None  # seconds [10]
    remote_timeout: float | None = None  # seconds for the whole job [600]
    # adb[:SERIAL]
    benchmark_binary: str | os.PathLike | None = None  # benchmark_model to push, or its device path
    adb: str | os.PathLike | None = None  # the adb executable [found on PATH]
    adb_timeout: float | None = None  # seconds per adb call [600]
    # device profiles
    ignore_limits: bool = False  # run even when static analysis finds an error

    def given(self) -> list[str]:
        """The names of the options set (not left to the target's default)."""
        return [f.name for f in fields(self) if getattr(self, f.name) not in (None, False)]


@dataclass(frozen=True)
class BenchPlan:
    """How `edgekit bench` measures (docs/bench.md). warmup / warmup_seconds / runs None: the
    target's defaults (10, 0.1 s, 100; an emulated device 1, 0 s, 5); min_seconds: time for at
    least this long instead of a count."""

    target: str = "cpu"
    threads: int | None = 1
    batch: int = 1
    warmup: int | None = None
    warmup_seconds: float | None = None
    runs: int | None = None
    min_seconds: float | None = None
    xnnpack: bool = True  # LiteRT's XNNPACK delegate (False: builtin reference kernels)
    samples: bool = False  # every timed run in the report
    seed: int = 0
    graph_optimization: GraphOptimization | None = None  # ONNX Runtime [all]
    xla: bool = False  # Keras / SavedModel: compile with XLA
    delegate: Delegate | None = None  # benchmark_model over adb [xnnpack]
    taskset: str | None = None  # benchmark_model over adb: CPU affinity mask in hex
    options: TargetOptions = field(default_factory=TargetOptions)

    def given(self) -> list[str]:
        """The options set beyond the measurement plan: the runtimes', adb's, the target's."""
        own = [
            name
            for name in ("graph_optimization", "xla", "delegate", "taskset")
            if getattr(self, name) not in (None, False)
        ]
        return own + self.options.given()


@dataclass(frozen=True)
class EvalPlan:
    """Where and how `edgekit eval` runs the model. threads None: every core here (an emulated
    device: 1)."""

    target: str = "cpu"
    threads: int | None = None
    batch_size: int = 64
    options: TargetOptions = field(default_factory=TargetOptions)

    def given(self) -> list[str]:
        return self.options.given()
