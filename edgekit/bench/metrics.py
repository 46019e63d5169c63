"""Accuracy metrics: top-1/top-k, per-class accuracy, confusion matrix, and agreement and KL
divergence against a reference model. numpy only; backend-agnostic (any predict function)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit.errors import DataError, UsageError

PROB_TOLERANCE = 0.02  # dequantized uint8/int8 softmax rows miss 1.0 by up to ~K * scale / 2
EPS = 1e-7  # floor for probabilities in the KL divergence (quantized outputs hold exact zeros)


def to_probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows that are already distributions (>= 0, summing to 1 within PROB_TOLERANCE) are
    renormalized; anything else is treated as logits and put through a softmax."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        s = s.reshape(s.shape[0], -1)
    sums = s.sum(axis=1)
    if s.size and np.all(s >= 0) and np.all(np.abs(sums - 1.0) <= PROB_TOLERANCE):
        return s / sums[:, None]
    z = s - s.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def kl_divergence(p_ref: np.ndarray, p: np.ndarray) -> np.ndarray:
    """KL(p_ref || p) per row, in nats, with both clipped at EPS and renormalized."""
    a = np.clip(p_ref, EPS, None)
    b = np.clip(p, EPS, None)
    a = a / a.sum(axis=1, keepdims=True)
    b = b / b.sum(axis=1, keepdims=True)
    return np.sum(a * (np.log(a) - np.log(b)), axis=1)


def top_k_hits(probs: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Boolean per row: is the true class among the k highest scores?"""
    k = min(k, probs.shape[1])
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return np.any(top == y[:, None], axis=1)


def confusion_matrix(y: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """cm[true, predicted] counts."""
    idx = y.astype(np.int64) * num_classes + pred.astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


class _Accumulator:
    """Running sums over batches, so evaluation never holds all outputs at once."""

    def __init__(self, num_classes: int, k: int) -> None:
        self.c = num_classes
        self.k = k
        self.n = 0
        self.top1 = 0
        self.topk = 0
        self.cm = np.zeros((num_classes, num_classes), np.int64)
        self.ref_top1 = 0
        self.agree = 0
        self.kl_sum = 0.0
        self.labeled = 0

    def add(self, probs: np.ndarray, y: np.ndarray | None, ref: np.ndarray | None) -> None:
        pred = probs.argmax(axis=1)
        self.n += len(pred)
        if y is not None:
            self.labeled += len(y)
            self.top1 += int(np.sum(pred == y))
            self.topk += int(np.sum(top_k_hits(probs, y, self.k)))
            self.cm += confusion_matrix(y, pred, self.c)
        if ref is not None:
            rpred = ref.argmax(axis=1)
            self.agree += int(np.sum(rpred == pred))
            self.kl_sum += float(np.sum(kl_divergence(ref, probs)))
            if y is not None:
                self.ref_top1 += int(np.sum(rpred == y))


def evaluate(
    predict_fn: Callable[[np.ndarray], np.ndarray],
    dataset: Any,
    preprocessing: Any = None,
    batch_size: int = 64,
    reference_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    top_k: int = 5,
    *,
    description: str = "eval",
) -> dict[str, Any]:
    """Accuracy of predict_fn on a Dataset (and agreement with reference_fn), batched.

    predict_fn / reference_fn: float32 batch (preprocessed) -> scores (N, K), logits or
        probabilities (see to_probabilities).
    dataset: an edgekit.data.Dataset; preprocessing: an edgekit.data.Preprocessing (None: default).
    Returns top1, topk (with k), per_class, confusion_matrix, labels, count and, with a
    reference: top1_agreement, mean_kl, reference_top1 and top1_drop.
    """
    from edgekit.ui import progress

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise UsageError(f"--top-k must be an integer of at least 1. Received: {top_k!r}")
    if len(dataset) == 0:
        raise DataError("The data set is empty. Pass a data set with at least one image.")
    if not dataset.labeled and reference_fn is None:
        raise DataError(
            f"Data set {dataset.name!r} has no labels, so there is no accuracy to compute. "
            "Pass labeled data, or --reference MODEL to measure agreement with another model."
        )
    acc: _Accumulator | None = None
    n_batches = -(-len(dataset) // batch_size)
    batches = dataset.batches(batch_size, preprocessing)
    for xb, yb in progress(batches, total=n_batches, description=description):
        probs = to_probabilities(predict_fn(xb))
        ref = to_probabilities(reference_fn(xb)) if reference_fn is not None else None
        if acc is None:
            k_model = probs.shape[1]
            if dataset.labeled and k_model < dataset.num_classes:
                from edgekit.errors import classes_mismatch

                raise DataError(classes_mismatch("The model", k_model, list(dataset.labels)))
            if ref is not None and ref.shape[1] != k_model:
                raise UsageError(
                    f"The model has {k_model} outputs but the reference model has "
                    f"{ref.shape[1]}. Compare models with the same classes."
                )
            acc = _Accumulator(k_model, min(top_k, k_model))
        acc.add(probs, yb, ref)
    assert acc is not None  # the data set is not empty
    labels = list(dataset.labels) + [f"class {i}" for i in range(len(dataset.labels), acc.c)]
    result: dict[str, Any] = {"count": acc.n, "num_classes": acc.c, "k": acc.k, "labels": labels}
    if dataset.labeled:
        support = acc.cm.sum(axis=1)
        correct = np.diag(acc.cm)
        result.update(
            top1=acc.top1 / acc.labeled,
            topk=acc.topk / acc.labeled,
            per_class=[
                {
                    "label": labels[i],
                    "count": int(support[i]),
                    "correct": int(correct[i]),
                    "accuracy": float(correct[i] / support[i]) if support[i] else None,
                }
                for i in range(acc.c)
            ],
            confusion_matrix=acc.cm.tolist(),
        )
    else:
        result.update(top1=None, topk=None, per_class=None, confusion_matrix=None)
    if reference_fn is not None:
        ref_top1 = acc.ref_top1 / acc.labeled if dataset.labeled else None
        result["reference"] = {
            "top1_agreement": acc.agree / acc.n,
            "mean_kl": acc.kl_sum / acc.n,
            "reference_top1": ref_top1,
            "top1_drop": (ref_top1 - result["top1"]) if ref_top1 is not None else None,
        }
    else:
        result["reference"] = None
    return result
