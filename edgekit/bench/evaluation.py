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
    from edgekit.bench import remote

    kind = remote.dispatch(target)
    if kind == "device":
        from edgekit.targets.emulated.target import evaluate_device

        return evaluate_device(
            model,
            ds,
            pre,
            reference=reference,
            top_k=top_k,
            batch_size=batch_size,
            target=target,
            threads=threads,
            output=output,
            **options,
        )
    threads = threads or os.cpu_count() or 1
    if kind == "ssh":
        return _evaluate_ssh(model, ds, pre, reference, top_k, batch_size, target, threads, options)
    if kind == "adb":
        raise UsageError(
            "eval runs on this machine, on an ssh target or on an emulated device profile: "
            "benchmark_model on a phone times the model but returns no outputs. Use --target "
            "ssh://user@host for a Linux board, or a profile (edgekit devices) such as pixel-4."
        )
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
            "source": "measured on this machine",
        }
        return result
    finally:
        runner.close()
        if ref_runner is not None:
            ref_runner.close()


def _evaluate_ssh(
    model: Any,
    ds: Any,
    pre: Any,
    reference: Any,
    top_k: int,
    batch_size: int,
    target: str,
    threads: int,
    options: dict[str, Any],
) -> dict[str, Any]:
    """The model runs on the board (edgekit's remote runner, one round trip for the whole set);
    the metrics are computed here from its outputs, with the same code as a local run."""
    from edgekit.bench.remote import SOURCE_DEVICE, predict_ssh

    return evaluate_outputs(
        model,
        ds,
        pre,
        reference=reference,
        top_k=top_k,
        batch_size=batch_size,
        threads=threads,
        predict=lambda x: predict_ssh(
            model, x, target=target, threads=threads, batch_size=batch_size, **options
        ),
        target=target,
        source=SOURCE_DEVICE,
        batching="on the device: one invoke per batch",
    )


def evaluate_outputs(
    model: Any,
    ds: Any,
    pre: Any,
    *,
    reference: Any,
    top_k: int,
    batch_size: int,
    threads: int,
    predict: Any,
    target: str,
    source: str,
    batching: str,
    output: int | str | None = None,
) -> dict[str, Any]:
    """Metrics of a .tflite whose outputs come from elsewhere: `predict(x)` -> (outputs, runner
    description) for the whole preprocessed set; computed here with the same code as a local
    run (a reference model runs on this machine)."""
    import numpy as np

    from edgekit.bench.metrics import evaluate as _evaluate
    from edgekit.export.tflite import inspect_tflite

    info = inspect_tflite(model)
    want = tuple(info["inputs"][0]["shape"][1:])
    if tuple(ds.image_shape) != want:
        raise DataError(
            f"Data set {ds.name!r} has images of shape (H, W, C) = {tuple(ds.image_shape)} but "
            f"{Path(model).name} expects {want}: resize the data, or evaluate a model made for it."
        )
    k = ds.num_classes if ds.labeled else None
    oi = _output_index(info["outputs"], output, k, Path(model).name)
    x = np.concatenate([xb for xb, _ in ds.batches(batch_size, pre)])
    t0 = time.perf_counter()
    outs, desc = predict(x)
    scores = outs[oi]
    cursor = {"at": 0}

    def remote_scores(xb: Any) -> Any:
        # metrics.evaluate walks the same batches in the same order: hand out the device's rows.
        a = cursor["at"]
        cursor["at"] = a + len(xb)
        return scores[a : a + len(xb)]

    ref_runner = None
    ref_fn = None
    try:
        if reference is not None:
            from edgekit.runtimes import open_runner

            ref_runner = open_runner(reference, threads=threads)
            _check_images(ref_runner, ds)
            ri = _pick_output(ref_runner, None, k)
            ref_fn = lambda xb: ref_runner.run(xb)[ri]  # noqa: E731
        metrics = _evaluate(
            remote_scores,
            ds,
            pre,
            batch_size,
            reference_fn=ref_fn,
            top_k=top_k,
            description=f"eval {Path(model).name} (outputs from {target})",
        )
    finally:
        if ref_runner is not None:
            ref_runner.close()
    return {
        "model": str(model),
        "name": Path(model).name,
        "format": "tflite",
        "runtime": desc["runtime"],
        "runtime_version": desc["runtime_version"],
        "target": target,
        "output": info["outputs"][oi]["name"],
        "reference_model": str(reference) if reference is not None else None,
        "data": ds.describe(),
        "preprocessing": pre.to_dict(),
        "batch_size": batch_size,
        "batching": batching,
        "seconds": time.perf_counter() - t0,
        **metrics,
        "source": source,
        "machine": desc["machine"],
        "reference_source": None if reference is None else "measured on this machine",
    }


def _output_index(
    outputs: list[dict[str, Any]], output: int | str | None, k: int | None, name: str
) -> int:
    """_pick_output for a .tflite read from its file (no runner)."""
    if output is not None:
        if isinstance(output, int) or str(output).isdigit():
            if 0 <= int(output) < len(outputs):
                return int(output)
        else:
            for i, o in enumerate(outputs):
                if o["name"] == output:
                    return i
        names = ", ".join(f"{i}: {o['name']}" for i, o in enumerate(outputs))
        raise UsageError(f"{name} has no output {output!r}. Its outputs are {names}.")
    return next((i for i, o in enumerate(outputs) if k and o["shape"] and o["shape"][-1] == k), 0)
