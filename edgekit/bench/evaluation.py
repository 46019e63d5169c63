"""`edgekit eval`: accuracy of a model on a data set, and its agreement with a reference model.

Every format is fed the same preprocessed float32 batches (edgekit.data.Preprocessing, the one
place preprocessing is defined); runners handle quantization themselves.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from edgekit.errors import DataError, UsageError


def _pick_output(runner: Any, output: int | str | None, num_classes: int | None) -> int:
    """Index of the class-score output: the only one, the one named/indexed, or the first whose
    last dimension is the number of classes."""
    outs = runner.outputs
    if output is not None:
        if isinstance(output, int) or str(output).isdigit():
            i = int(output)
            if 0 <= i < len(outs):
                return i
        else:
            for i, t in enumerate(outs):
                if t.name == output:
                    return i
        names = ", ".join(f"{i}: {t.name}" for i, t in enumerate(outs))
        raise UsageError(f"{runner.name} has no output {output!r}. Its outputs are {names}.")
    if len(outs) == 1:
        return 0
    for i, t in enumerate(outs):
        if num_classes and t.shape and t.shape[-1] == num_classes:
            return i
    return 0


def _check_images(runner: Any, dataset: Any) -> None:
    want = tuple(runner.input.shape[1:])
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
            f"{runner.name} expects {want}: {hint}, or evaluate a model made for this data."
        )


def evaluate(
    model: str | os.PathLike,
    data: Any,
    *,
    reference: str | os.PathLike | None = None,
    top_k: int = 5,
    batch_size: int = 64,
    mean: float | tuple[float, ...] = 0.0,
    std: float | tuple[float, ...] = 255.0,
    target: str = "cpu",
    threads: int | None = None,
    output: int | str | None = None,
    limit: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Top-1/top-k, per-class accuracy, confusion matrix; agreement and KL with a reference."""
    from edgekit.bench.metrics import evaluate as _evaluate
    from edgekit.data import Dataset, Preprocessing, load_dataset
    from edgekit.runtimes import open_runner

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"--batch-size must be an integer of at least 1. Received: {batch_size!r}")
    pre = Preprocessing(mean=mean, std=std)
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    if limit is not None:
        if limit < 1:
            raise UsageError(f"--limit must be at least 1. Received: {limit}")
        ds = ds.take(limit)
    threads = threads or os.cpu_count() or 1
    runner = open_runner(model, target=target, threads=threads, **options)
    ref_runner = None
    try:
        _check_images(runner, ds)
        k = ds.num_classes if ds.labeled else None
        oi = _pick_output(runner, output, k)
        ref_fn = None
        if reference is not None:
            ref_runner = open_runner(reference, target=target, threads=threads, **options)
            _check_images(ref_runner, ds)
            ri = _pick_output(ref_runner, None, k)
            ref_fn = lambda xb: ref_runner.run(xb)[ri]  # noqa: E731
        t0 = time.perf_counter()
        metrics = _evaluate(
            lambda xb: runner.run(xb)[oi],
            ds,
            pre,
            batch_size,
            reference_fn=ref_fn,
            top_k=top_k,
            description=f"eval {runner.name}",
        )
        seconds = time.perf_counter() - t0
        d = runner.describe()
        result: dict[str, Any] = {
            "model": str(model),
            "name": Path(model).name,
            "format": d["format"],
            "runtime": d["runtime"],
            "runtime_version": d["runtime_version"],
            "target": d["target"],
            "output": runner.outputs[oi].name,
            "reference_model": str(reference) if reference is not None else None,
            "data": ds.describe(),
            "preprocessing": pre.to_dict(),
            "batch_size": batch_size,
            "batching": d["batching"],
            "seconds": seconds,
            **metrics,
        }
        return result
    finally:
        runner.close()
        if ref_runner is not None:
            ref_runner.close()
