"""`edgekit eval`: accuracy of a model on a data set, and its agreement with a reference model.

Every format is fed the same preprocessed float32 batches (edgekit.data.Preprocessing, the one
place preprocessing is defined); runners handle quantization themselves. The model runs here
(edgekit.runtimes) or on a target that returns its outputs (edgekit.targets: an ssh board, an
emulated device); the metrics and the report are computed here either way, with the same code.
A reference model always runs here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from edgekit.errors import DataError, UsageError
from edgekit.targets.base import SOURCE_LOCAL, Predictor


def pick_output(
    name: str, outputs: list[tuple[str, Any]], output: int | str | None, num_classes: int | None
) -> int:
    """Index of the class-score output among `outputs` ((name, shape) pairs): the only one, the
    one named/indexed, or the first whose last dimension is the number of classes."""
    if output is not None:
        if isinstance(output, int) or str(output).isdigit():
            i = int(output)
            if 0 <= i < len(outputs):
                return i
        else:
            for i, (n, _) in enumerate(outputs):
                if n == output:
                    return i
        names = ", ".join(f"{i}: {n}" for i, (n, _) in enumerate(outputs))
        raise UsageError(f"{name} has no output {output!r}. Its outputs are {names}.")
    if len(outputs) == 1:
        return 0
    for i, (_, shape) in enumerate(outputs):
        if num_classes and shape and shape[-1] == num_classes:
            return i
    return 0


def runner_outputs(runner: Any) -> list[tuple[str, Any]]:
    """(name, shape) of each output of a Runner."""
    return [(t.name, t.shape) for t in runner.outputs]


def check_images(name: str, input_shape: tuple[Any, ...], dataset: Any) -> None:
    """A DataError naming both shapes when the data's images do not fit the model's input."""
    want = tuple(input_shape)
    got = tuple(dataset.image_shape)
    if want != got:
        hint = (
            f"resize the data to {want[0]}x{want[1]} (image_size= / a spec option such as "
            f"shapes:size={want[0]})"
            if len(want) == 3 and want[2] == got[2]
            else "use data with the model's channels"
        )
        raise DataError(
            f"Data set {dataset.name!r} has images of shape (H, W, C) = {got} but "
            f"{name} expects {want}: {hint}, or evaluate a model made for this data."
        )


def evaluate(
    model: str | os.PathLike | Any,
    data: Any,
    *,
    reference: str | os.PathLike | None = None,
    top_k: int = 5,
    mean: float | tuple[float, ...] = 0.0,
    std: float | tuple[float, ...] = 255.0,
    output: int | str | None = None,
    limit: int | None = None,
    plan: Any = None,
) -> dict[str, Any]:
    """Top-1/top-k, per-class accuracy, confusion matrix; agreement and KL with a reference.

    plan: an EvalPlan (edgekit.plans): the target, threads, batch size and target options.
    """
    from edgekit.artifacts import ModelArtifact
    from edgekit.data import Dataset, Preprocessing, load_dataset
    from edgekit.plans import EvalPlan
    from edgekit.targets import open_target

    plan = plan or EvalPlan()
    b = plan.batch_size
    if isinstance(b, bool) or not isinstance(b, int) or b < 1:
        raise UsageError(f"--batch-size must be an integer of at least 1. Received: {b!r}")
    pre = Preprocessing(mean=mean, std=std)
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    if limit is not None:
        if limit < 1:
            raise UsageError(f"--limit must be at least 1. Received: {limit}")
        ds = ds.take(limit)
    target = open_target(plan.target)
    target.refuse(plan.given())
    art = ModelArtifact.open(model)
    if target.runs_here is None:
        with target.predictor(art, plan) as p:
            return report(
                p, art, ds, pre, reference=reference, top_k=top_k, output=output, plan=plan
            )
    notes = target.annotate([art], plan)
    from edgekit.runtimes import open_runner

    threads = plan.threads or os.cpu_count() or 1
    runner = open_runner(art, target=target.runs_here, threads=threads)
    with LocalPredictor(runner, threads) as p:
        result = report(p, art, ds, pre, reference=reference, top_k=top_k, output=output, plan=plan)
    return {**result, **notes.report, **notes.rows[0]}


class LocalPredictor(Predictor):
    """A Runner of this process, batch by batch."""

    runs_here = True

    def __init__(self, runner: Any, threads: int) -> None:
        self.runner, self.threads, self.name = runner, threads, runner.name
        self.local_target = runner.target
        self.label = f"eval {runner.name}"

    def input_shape(self) -> tuple[Any, ...]:
        return tuple(self.runner.input.shape[1:])

    def outputs(self) -> list[tuple[str, Any]]:
        return runner_outputs(self.runner)

    def start(self, batches: Callable[[], Iterable[np.ndarray]]) -> Callable[[np.ndarray], list]:
        return self.runner.run

    def describe(self) -> dict[str, Any]:
        d = self.runner.describe()
        return {
            "format": d["format"],
            "runtime": d["runtime"],
            "runtime_version": d["runtime_version"],
            "target": d["target"],
            "batching": d["batching"],
            "source": SOURCE_LOCAL,
        }

    def close(self) -> None:
        self.runner.close()


def report(
    p: Any,
    model: Any,
    ds: Any,
    pre: Any,
    *,
    reference: str | os.PathLike | None,
    top_k: int,
    output: int | str | None,
    plan: Any,
) -> dict[str, Any]:
    """The eval report of a model whose outputs `p` (a Predictor) gives, here or on a target."""
    from edgekit.bench.metrics import evaluate as _metrics
    from edgekit.runtimes import open_runner

    check_images(p.name, p.input_shape(), ds)
    k = ds.num_classes if ds.labeled else None
    outputs = p.outputs()
    oi = pick_output(p.name, outputs, output, k)
    batch_size = plan.batch_size
    ref_runner = None
    ref_fn = None
    try:
        if reference is not None:
            ref_runner = open_runner(reference, target=p.local_target, threads=p.threads)
            check_images(ref_runner.name, tuple(ref_runner.input.shape[1:]), ds)
            ri = pick_output(ref_runner.name, runner_outputs(ref_runner), None, k)
            ref_fn = lambda xb: ref_runner.run(xb)[ri]  # noqa: E731
        t0 = time.perf_counter()
        fn = p.start(lambda: (xb for xb, _ in ds.batches(batch_size, pre)))
        metrics = _metrics(
            lambda xb: fn(xb)[oi],
            ds,
            pre,
            batch_size,
            reference_fn=ref_fn,
            top_k=top_k,
            description=p.label,
        )
        seconds = time.perf_counter() - t0
    finally:
        if ref_runner is not None:
            ref_runner.close()
    d = p.describe()
    result: dict[str, Any] = {
        "model": model.path,
        "name": model.name,
        "format": d["format"],
        "runtime": d["runtime"],
        "runtime_version": d["runtime_version"],
        "target": d["target"],
        "output": outputs[oi][0],
        "reference_model": str(reference) if reference is not None else None,
        "data": ds.describe(),
        "preprocessing": pre.to_dict(),
        "batch_size": batch_size,
        "batching": d["batching"],
        "seconds": seconds,
        **metrics,
        "source": d["source"],
    }
    if not p.runs_here:
        result["machine"] = d["machine"]
        result["reference_source"] = None if reference is None else SOURCE_LOCAL
    result.update(p.extras(result, ds))
    return result
