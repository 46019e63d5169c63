"""Per-sample evaluation for baselines and checks: top-1 prediction and correctness of every image,
top-k, per-class accuracy.

Built from the same pieces as `edgekit eval` (edgekit.runtimes, Dataset.batches with one
Preprocessing, bench.metrics.to_probabilities / top_k_hits, bench.evaluation's output and shape
checks), so a baseline and `edgekit eval` see the same numbers. It keeps one int per image instead
of only running sums because the check pairs samples (McNemar).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import DataError, EdgekitError, EvaluationError, UsageError

NONFINITE = -1  # the top-1 "prediction" stored for an image whose scores hold NaN or inf


@dataclass
class SampleResults:
    """What one model did on every image of a data set."""

    top1: np.ndarray  # int32 per image; NONFINITE where the scores were not finite
    correct: np.ndarray  # bool per image
    y: np.ndarray  # true class per image
    topk_correct: int
    k: int
    num_classes: int
    labels: list[str]
    model: dict[str, Any] = field(default_factory=dict)  # format, runtime, output ...

    @property
    def count(self) -> int:
        return len(self.top1)

    @property
    def nonfinite(self) -> int:
        return int(np.sum(self.top1 == NONFINITE))

    def accuracy(self) -> dict[str, Any]:
        """top1, topk, k, count, nonfinite and per_class [{label, count, correct, accuracy}]."""
        n = self.count
        support = np.bincount(self.y, minlength=self.num_classes)
        hits = np.bincount(self.y[self.correct], minlength=self.num_classes)
        return {
            "count": n,
            "top1": float(self.correct.sum() / n),
            "topk": self.topk_correct / n,
            "k": self.k,
            "nonfinite": self.nonfinite,
            "per_class": [
                {
                    "label": self.labels[i],
                    "count": int(support[i]),
                    "correct": int(hits[i]),
                    "accuracy": float(hits[i] / support[i]) if support[i] else None,
                }
                for i in range(self.num_classes)
            ],
        }


def output_classes(runner: Any, index: int) -> int | None:
    """The class count an output declares (its last dimension), or None when it is dynamic."""
    shape = runner.outputs[index].shape
    return int(shape[-1]) if shape and shape[-1] is not None else None


def evaluate_samples(
    model: str | os.PathLike,
    dataset: Any,
    preprocessing: Any,
    *,
    batch_size: int = 64,
    top_k: int = 5,
    threads: int | None = None,
    target: str = "cpu",
    output: int | str | None = None,
    expected_classes: int | None = None,
    description: str = "",
) -> SampleResults:
    """Run `model` on every image of a labeled `dataset` and keep each image's top-1 prediction.

    expected_classes: the class count the model must have (a baseline's); a different one is a
        BaselineError before the evaluation starts (or after the first batch, for a dynamic one).
    Errors raised by the runtime while running are EvaluationError (exit 2: no check was made).
    """
    from edgekit.bench.evaluation import check_images, pick_output, runner_outputs
    from edgekit.runtimes import open_runner

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"--batch-size must be an integer of at least 1. Received: {batch_size!r}")
    if len(dataset) == 0:
        raise DataError("The data set is empty. Pass a data set with at least one image.")
    if not dataset.labeled:
        raise DataError(
            f"Data set {dataset.name!r} has no labels. A check compares accuracy, so it needs "
            "labeled data (an image folder with one sub-folder per class, or a .npz with y)."
        )
    runner = open_runner(model, target=target, threads=threads or os.cpu_count() or 1)
    try:
        check_images(runner.name, tuple(runner.input.shape[1:]), dataset)
        oi = pick_output(
            runner.name, runner_outputs(runner), output, expected_classes or dataset.num_classes
        )
        declared = output_classes(runner, oi)
        if expected_classes is not None and declared is not None:
            _check_classes(runner.name, declared, expected_classes)
        top1, topk, k, num_classes, seen = _predictions(
            runner, oi, dataset, preprocessing, batch_size, top_k, expected_classes, description
        )
        # Images a streamed set skipped (data.on_corrupt=skip) are left out of every figure; the
        # same data skip the same images, so a baseline and a check still pair image by image.
        y = np.asarray(dataset.y, dtype=np.int64)[seen]
        top1 = top1[seen]
        labels = list(dataset.labels) + [
            f"class {j}" for j in range(len(dataset.labels), num_classes)
        ]
        d = runner.describe()
        info = {
            "format": d["format"],
            "runtime": d["runtime"],
            "runtime_version": d["runtime_version"],
            "output": runner.outputs[oi].name,
            "num_classes": num_classes,
            "name": runner.name,
        }
        return SampleResults(
            top1=top1,
            correct=top1 == y,
            y=y,
            topk_correct=topk,
            k=k,
            num_classes=num_classes,
            labels=labels,
            model=info,
        )
    finally:
        runner.close()


def _predictions(
    runner: Any,
    oi: int,
    dataset: Any,
    preprocessing: Any,
    batch_size: int,
    top_k: int,
    expected_classes: int | None,
    description: str,
) -> tuple[np.ndarray, int, int, int, np.ndarray]:
    """Every image's top-1 prediction (NONFINITE for NaN/inf scores), the top-k hits, k, the
    class count of output `oi` and which images were evaluated (a streamed set with
    on_corrupt=skip leaves out the ones it cannot decode), batch by batch."""
    from edgekit.bench.metrics import to_probabilities, top_k_hits
    from edgekit.ui import progress

    n = len(dataset)
    top1 = np.empty(n, np.int32)
    seen = np.zeros(n, bool)
    topk = 0
    k = num_classes = 0
    batches = dataset.batches_with_positions(batch_size, preprocessing)
    total = -(-n // batch_size)
    for xb, yb, at in progress(batches, total=total, description=description or runner.name):
        scores = np.asarray(_run(runner, xb)[oi], dtype=np.float64).reshape(len(xb), -1)
        if not num_classes:
            num_classes = scores.shape[1]
            if expected_classes is not None:
                _check_classes(runner.name, num_classes, expected_classes)
            if num_classes < dataset.num_classes:
                from edgekit.errors import classes_mismatch

                raise DataError(classes_mismatch(runner.name, num_classes, list(dataset.labels)))
            k = min(top_k, num_classes)
        # A row with NaN/inf is a wrong prediction, counted and reported; not a crash and not
        # a silent argmax of NaN (which numpy would answer with class 0).
        finite = np.all(np.isfinite(scores), axis=1)
        probs = to_probabilities(np.where(finite[:, None], scores, 0.0))
        pred = probs.argmax(axis=1).astype(np.int32)
        pred[~finite] = NONFINITE
        top1[at] = pred
        seen[at] = True
        topk += int(np.sum(top_k_hits(probs, yb, k) & finite))
    if not seen.any():
        raise EvaluationError(
            f"None of the {n} images could be evaluated; the check could not be made."
        )
    return top1, topk, k, num_classes, seen


def _run(runner: Any, xb: np.ndarray) -> list[np.ndarray]:
    try:
        return runner.run(xb)
    except EdgekitError:
        raise
    except Exception as e:  # the runtime failed on valid input: no check can be made
        raise EvaluationError(
            f"{runner.name} failed while running on the data ({type(e).__name__}: "
            f"{_shorten(str(e))}); the check could not be made."
        ) from None


def _check_classes(name: str, got: int, want: int) -> None:
    from edgekit.errors import BaselineError

    if got != want:
        raise BaselineError(
            f"{name} has {got} classes but the baseline's model has {want}: a check compares "
            "models with the same classes. Create a new baseline for this model."
        )


def _shorten(text: str, limit: int = 300) -> str:
    """A runtime's error message on one line, cut to `limit` characters (they can be pages)."""
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 3] + "..."
