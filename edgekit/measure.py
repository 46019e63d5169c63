"""Measure one model artifact the way every compress report does: size, parameters, top-1 accuracy
and agreement with the teacher on the eval split, and CPU p50 latency (1 thread, batch 1)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.artifacts import ModelArtifact, size_bytes


def measure_artifact(
    art: ModelArtifact,
    x: np.ndarray,
    y: np.ndarray | None,
    teacher_logits: np.ndarray,
    *,
    runs: int = 50,
    unsafe: bool = False,
    outputs: np.ndarray | None = None,
    labels: list[str] | None = None,
) -> dict[str, Any]:
    """One report row. `outputs` skips inference when the artifact's outputs are already known.
    `labels` (with `y`): add per-class accuracy and the confusion matrix (`class_figures`)."""
    from edgekit.bench.latency import measure
    from edgekit.runtimes import open_runner

    runner_opts: dict[str, Any] = {"unsafe": unsafe} if art.family == "keras" else {}
    if art.family == "keras" and art.precision == "qat":
        from edgekit.stages.qat import qat_custom_objects

        runner_opts["custom_objects"] = qat_custom_objects()
    runner = open_runner(art.path, threads=1, **runner_opts)
    try:
        if outputs is None:
            outputs = _batched(runner, x)
        pred = np.asarray(outputs).argmax(axis=1)
        latency = None
        if runs > 0:
            latency = measure(runner, x[:1], runs=runs, warmup=5, warmup_seconds=0.2).p50
        runtime = runner.describe()
    finally:
        runner.close()
    row = {
        "path": art.path,
        "format": art.family,
        "precision": art.precision,
        "size_bytes": size_bytes(art.path),
        "parameters": art.metadata.get("parameters") or _count_params(art, unsafe),
        "accuracy": float((pred == y).mean()) if y is not None else None,
        "agreement_with_teacher": float((pred == teacher_logits.argmax(axis=1)).mean()),
        "latency_ms_p50": round(latency, 4) if latency is not None else None,
        "runtime": {
            k: runtime.get(k)
            for k in ("runtime", "runtime_version", "threads", "delegate", "provider")
            if k in runtime
        },
        "sha256": art.sha256,
    }
    for key in ("verification", "sparsity", "conversion"):
        if key in art.metadata:
            row[key] = art.metadata[key]
    if labels is not None and y is not None:
        row.update(class_figures(np.asarray(y), pred, labels))
    return row


# A confusion matrix is kept up to this many classes (a 1000-class one would be 1M numbers).
MAX_CONFUSION_CLASSES = 100


def class_figures(y: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """per_class [{label, count, correct, accuracy}] (as `edgekit eval` reports it) and the
    confusion matrix (rows: true class, columns: predicted; None beyond MAX_CONFUSION_CLASSES)."""
    k = max(len(labels), int(pred.max()) + 1 if pred.size else 0, int(y.max()) + 1 if y.size else 0)
    cm = np.bincount(y.astype(np.int64) * k + pred.astype(np.int64), minlength=k * k).reshape(k, k)
    names = list(labels) + [f"class {i}" for i in range(len(labels), k)]
    support, correct = cm.sum(axis=1), np.diag(cm)
    return {
        "per_class": [
            {
                "label": names[i],
                "count": int(support[i]),
                "correct": int(correct[i]),
                "accuracy": float(correct[i] / support[i]) if support[i] else None,
            }
            for i in range(k)
        ],
        "confusion_matrix": cm.tolist() if k <= MAX_CONFUSION_CLASSES else None,
    }


def _batched(runner: Any, x: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate(
        [runner.run(x[i : i + batch])[0] for i in range(0, len(x), batch)], axis=0
    )


def _count_params(art: ModelArtifact, unsafe: bool) -> int | None:
    if art.family != "keras":
        return None
    from edgekit.keras_compat import load_model

    return load_model(art.path, unsafe=unsafe).count_params()
