"""Check an exported model against the reference (Keras) model on the same real samples.

Float exports must reproduce the reference's outputs within an absolute tolerance; quantized
exports must agree with the reference's top-1 class on enough samples. Both are compared on
**probabilities**: outputs whose rows are not already probabilities (logits) go through a softmax,
the same for the reference and the export, so that one tolerance means the same thing for every
model whatever its last activation. Never imports TensorFlow (runners do the running).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgekit.errors import ExportMismatch, KernelPrepareError, UnsupportedModelError, UsageError

FLOAT_PRECISIONS = ("float32", "float16")
QUANTIZED_PRECISIONS = ("dynamic", "int8", "uint8", "int16x8", "qat")

# Defaults, also the recipe's `verify:` defaults. Max abs error on probabilities: float32 kernels
# differ from TensorFlow's by rounding only (typically < 1e-5); float16 weights move
# probabilities by up to ~1e-2 on small models.
DEFAULT_FLOAT_ATOL = {"float32": 1e-3, "float16": 2e-2}
DEFAULT_MIN_AGREEMENT = 0.9
# Quantized exports: outputs other than the class scores (box heads, embeddings) may differ by
# this share of the output's scale (max(1, max |reference|)); int8 steps are ~1/256 of a range.
DEFAULT_QUANTIZED_VALUE_TOL = 0.1


def check_export(
    artifact_path: str | os.PathLike,
    reference_outputs: np.ndarray | list[np.ndarray],
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    precision: str,
    labels: list[str] | None = None,
    threads: int = 1,
    float_atol: float | None = None,
    min_agreement: float | None = None,
    batch_size: int = 64,
    runner_options: dict[str, Any] | None = None,
    unverifiable: Literal["raise", "skip"] = "raise",
    output_names: list[str] | None = None,
    class_output: int | str | None = None,
    layer_names: list[str] | None = None,
) -> dict[str, Any]:
    """Run `artifact_path` on `x` and compare with `reference_outputs` (the Keras model on `x`).

    Args:
        artifact_path: the exported `.tflite` / `.onnx` model (any format open_runner takes).
        reference_outputs: the reference model's outputs on `x`: one array, or one per output.
        x: the preprocessed float32 samples the reference outputs came from (N, H, W, C).
        y: integer labels for `x`, optional: then accuracy is reported for both models.
        precision: "float32" or "float16" (judged by max abs error), or "dynamic", "int8",
            "uint8", "int16x8", "qat" (judged by top-1 agreement with the reference).
        labels: class names; checked against the output width and used to name confusions.
        threads: runtime threads.
        float_atol: max abs error allowed on probabilities for float exports (default 1e-3 for
            float32, 2e-2 for float16).
        min_agreement: smallest top-1 agreement allowed for quantized exports (default 0.9).
        batch_size: samples per runner call.
        runner_options: extra keyword arguments for `edgekit.runtimes.open_runner`.
        unverifiable: what to do with a `.tflite` that uses Select TF (Flex) ops, which the
            LiteRT Python runtime cannot run: "raise" (UnsupportedModelError) or "skip" (return
            {"passed": None, "skipped": reason, ...} without running it).
        output_names: the reference model's output names, in the order of `reference_outputs`
            (used in messages and figures; default: the export's own output names).
        class_output: the output (index or name in `output_names`) holding the class scores:
            labels, accuracy, confusions and top-1 agreement concern it (default: the first).
            The other outputs (box heads, embeddings ...) are compared value by value.
        layer_names: the reference model's layer names, to name the layer of a node a runtime
            refuses to prepare.

    Returns:
        {"passed": True, "criterion", "compared": "probabilities", "max_abs_error",
        "max_abs_error_per_output", "max_abs_error_raw", "top1_agreement", "accuracy",
        "reference_accuracy", "tolerance", "n_samples", "precision", "artifact", "runtime", ...}

    Raises:
        ExportMismatch: outputs differ beyond the tolerance, or agreement is below the minimum;
            the message names the artifact, the output and the numbers.
        UsageError: inconsistent arguments (shapes, lengths, unknown precision).
    """
    name = Path(artifact_path).name
    precision, atol, floor = _tolerances(precision, float_atol, min_agreement, batch_size)
    is_float = atol is not None
    x, refs, y = _checked_samples(x, reference_outputs, y)
    n = len(x)

    skipped = _unverifiable(artifact_path, precision, unverifiable)
    if skipped is not None:
        return skipped
    got, export_names, desc = _run_export(
        artifact_path, x, threads, batch_size, runner_options, layer_names
    )
    if len(got) != len(refs):
        raise ExportMismatch(
            f"{name}: has {len(got)} outputs but the reference model has {len(refs)}; "
            "the export is not the same model.",
            artifact=str(artifact_path),
        )
    if output_names is not None and len(output_names) != len(refs):
        raise UsageError(
            f"{len(output_names)} output names given for {len(refs)} reference outputs. Pass the "
            "reference model's output names, in order."
        )
    out_names = [str(o) for o in (output_names or export_names)]
    ci = _class_index(class_output, out_names)
    cmp = _compare_outputs(name, artifact_path, out_names, refs, got, ci)

    # Labels, accuracy and top-1 agreement concern the class output (the classifier head).
    first = out_names[ci]
    width = max(2, int(np.asarray(refs[ci]).reshape(n, -1).shape[1]))
    if labels is not None and len(labels) != width:
        raise UsageError(
            f"{len(labels)} labels given but output '{first}' has {width} classes. "
            "Pass the data set's labels for this model."
        )
    accuracy = ref_accuracy = None
    if y is not None:
        accuracy = float(np.mean(cmp.pred_got == y))
        ref_accuracy = float(np.mean(cmp.pred_ref == y))

    others = {k: v for k, v in cmp.per_output.items() if k != first}
    result: dict[str, Any] = {
        "artifact": str(artifact_path),
        "precision": precision,
        "compared": "probabilities" if not others else cmp.compared,
        "criterion": "max_abs_error" if is_float else "top1_agreement",
        "class_output": first,
        "outputs": out_names,
        "max_abs_error": max(cmp.per_output.values()),
        "max_abs_error_per_output": cmp.per_output,
        "max_abs_error_raw": max(cmp.raw_error.values()),
        "top1_agreement": cmp.agreement[first],
        "top1_agreement_per_output": cmp.agreement,
        "accuracy": accuracy,
        "reference_accuracy": ref_accuracy,
        "tolerance": atol if is_float else floor,
        "n_samples": n,
        "confusions": _confusions(cmp.pred_ref, cmp.pred_got, labels),
        **desc,
    }
    value_tol = atol if atol is not None else DEFAULT_QUANTIZED_VALUE_TOL
    if others:
        result["value_tolerance"] = value_tol
    _judge(name, artifact_path, result, cmp, others, value_tol, atol, floor)
    result["passed"] = True
    return result


def _unverifiable(
    artifact_path: str | os.PathLike, precision: str, unverifiable: str
) -> dict[str, Any] | None:
    """A `.tflite` with Select TF ops cannot run here: the skipped record, or an error."""
    name = Path(artifact_path).name
    if unverifiable not in ("raise", "skip"):
        raise UsageError(f"Expected unverifiable in raise, skip. Received: {unverifiable!r}")
    flex = _flex_ops(artifact_path)
    if flex:
        reason = (
            f"{name} uses Select TF ops ({', '.join(flex)}), which need the Flex delegate; the "
            "LiteRT runtime here has none, so its outputs cannot be checked"
        )
        if unverifiable == "skip":
            return {
                "artifact": str(artifact_path),
                "precision": precision,
                "passed": None,
                "skipped": reason,
                "n_samples": 0,
            }
        raise UnsupportedModelError(
            f"{reason}. Export without allow_select_tf_ops, or verify it on a runtime with Flex."
        )
    return None


def _tolerances(
    precision: str, float_atol: float | None, min_agreement: float | None, batch_size: int
) -> tuple[str, float | None, float]:
    """The checked precision, the float tolerance (None for quantized exports) and the
    agreement floor."""
    if precision == "none":
        precision = "float32"
    if precision not in FLOAT_PRECISIONS + QUANTIZED_PRECISIONS:
        raise UsageError(
            f"Expected precision in {', '.join(FLOAT_PRECISIONS + QUANTIZED_PRECISIONS)}. "
            f"Received: precision={precision!r}"
        )
    atol = (
        float(DEFAULT_FLOAT_ATOL[precision] if float_atol is None else float_atol)
        if precision in FLOAT_PRECISIONS
        else None
    )
    floor = float(DEFAULT_MIN_AGREEMENT if min_agreement is None else min_agreement)
    if atol is not None and not atol > 0:
        raise UsageError(f"Expected float_atol > 0. Received: float_atol={float_atol}")
    if not 0 < floor <= 1:
        raise UsageError(
            f"Expected min_agreement in (0, 1]. Received: min_agreement={min_agreement}"
        )
    if batch_size < 1:
        raise UsageError(f"Expected batch_size >= 1. Received: batch_size={batch_size}")
    return precision, atol, floor


def _checked_samples(
    x: np.ndarray, reference_outputs: Any, y: np.ndarray | None
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray | None]:
    """x as float32, the reference outputs as a list, y flat; every length the same."""
    x = np.asarray(x, dtype=np.float32)
    refs = _as_list(reference_outputs)
    n = len(x)
    if n == 0:
        raise UsageError("No samples to verify the export on (x is empty). Pass real samples.")
    for i, r in enumerate(refs):
        if len(r) != n:
            raise UsageError(
                f"Reference output {i} has {len(r)} rows but x has {n} samples. Pass the "
                "reference model's outputs on exactly these samples."
            )
    if y is not None:
        y = np.asarray(y).reshape(-1)
        if len(y) != n:
            raise UsageError(f"y has {len(y)} labels but x has {n} samples. Pass matching arrays.")
    return x, refs, y


def _run_export(
    artifact_path: str | os.PathLike,
    x: np.ndarray,
    threads: int,
    batch_size: int,
    runner_options: dict[str, Any] | None,
    layer_names: list[str] | None,
) -> tuple[list[np.ndarray], list[str], dict[str, Any]]:
    """The export's outputs on `x` in model output order, their names, and the runtime."""
    from edgekit.runtimes import open_runner

    try:
        runner = open_runner(artifact_path, threads=threads, **(runner_options or {}))
    except KernelPrepareError as e:
        raise _with_layer(e, artifact_path, layer_names) from None
    try:
        order = _output_order([t.name for t in runner.outputs])
        export_names = [runner.outputs[i].name for i in order]
        parts = [runner.run(x[s : s + batch_size]) for s in range(0, len(x), batch_size)]
        desc = {"runtime": f"{runner.runtime} {runner.runtime_version}".strip(), "threads": threads}
    finally:
        runner.close()
    got = [np.concatenate([p[i] for p in parts]).astype(np.float32) for i in order]
    return got, export_names, desc


@dataclass
class _Comparison:
    """Per output: the error judged (on probabilities for the class output, relative to the
    output's scale for the others), the raw error and what was compared; top-1 agreement and
    both models' predictions for the class output."""

    per_output: dict[str, float] = field(default_factory=dict)
    raw_error: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    compared: dict[str, str] = field(default_factory=dict)
    pred_ref: np.ndarray | None = None
    pred_got: np.ndarray | None = None


def _compare_outputs(
    name: str,
    artifact_path: str | os.PathLike,
    out_names: list[str],
    refs: list[np.ndarray],
    got: list[np.ndarray],
    ci: int,
) -> _Comparison:
    n = len(refs[0])
    cmp = _Comparison()
    for i, (oname, r, g) in enumerate(zip(out_names, refs, got, strict=True)):
        r = np.asarray(r, dtype=np.float32).reshape(n, -1)
        g = g.reshape(len(g), -1)
        if g.shape != r.shape:
            raise ExportMismatch(
                f"{name}: output '{oname}' has shape {g.shape[1:]} per sample but the reference "
                f"has {r.shape[1:]}; the export is not the same model.",
                artifact=str(artifact_path),
                output=oname,
            )
        if not np.isfinite(g).all():
            bad = int((~np.isfinite(g)).any(axis=1).sum())
            raise ExportMismatch(
                f"{name}: output '{oname}' is NaN or inf on {bad} of {n} samples.",
                artifact=str(artifact_path),
                output=oname,
            )
        cmp.raw_error[oname] = float(np.max(np.abs(r - g)))
        if i == ci or len(refs) == 1:
            pr, pg = _probabilities(r, g)
            cmp.per_output[oname] = float(np.max(np.abs(pr - pg)))
            cmp.pred_ref, cmp.pred_got = top1(pr), top1(pg)
            cmp.agreement[oname] = float(np.mean(cmp.pred_ref == cmp.pred_got))
            cmp.compared[oname] = "probabilities"
        else:
            # Not class scores (a box head, an embedding): values compared as they are, the
            # error relative to the output's scale (its largest magnitude, at least 1).
            scale = max(1.0, float(np.max(np.abs(r))))
            cmp.per_output[oname] = cmp.raw_error[oname] / scale
            cmp.compared[oname] = "values, relative to max(1, max |reference|)"
    return cmp


def _judge(
    name: str,
    artifact_path: str | os.PathLike,
    result: dict[str, Any],
    cmp: _Comparison,
    others: dict[str, float],
    value_tol: float,
    atol: float | None,
    floor: float,
) -> None:
    """Raise ExportMismatch when an output is further from the reference than allowed."""
    precision, n, first = result["precision"], result["n_samples"], result["class_output"]
    for oname, err in others.items():
        if err > value_tol:
            raise ExportMismatch(
                f"{name}: output '{oname}' differs from the reference model: max abs error "
                f"{cmp.raw_error[oname]:.3g} = {err:.3g} of the output's scale > tolerance "
                f"{value_tol:.3g} ({precision}, {n} samples).",
                artifact=str(artifact_path),
                output=oname,
                max_abs_error=err,
                tolerance=value_tol,
            )
    if atol is not None:
        err = cmp.per_output[first]
        if err > atol:
            raise ExportMismatch(
                f"{name}: output '{first}' differs from the reference model: max abs error "
                f"{err:.3g} on probabilities > tolerance {atol:.3g} ({precision}, {n} samples; "
                f"top-1 agreement {cmp.agreement[first]:.3f}). Raise "
                f"verify.{'float16_atol' if precision == 'float16' else 'float_atol'} only if "
                "this difference is acceptable.",
                artifact=str(artifact_path),
                output=first,
                max_abs_error=err,
                tolerance=atol,
            )
        return
    agree = cmp.agreement[first]
    if agree < floor:
        accuracy, ref_accuracy = result["accuracy"], result["reference_accuracy"]
        acc = (
            f"; accuracy {accuracy:.3f} vs reference {ref_accuracy:.3f}"
            if accuracy is not None
            else ""
        )
        raise ExportMismatch(
            f"{name}: output '{first}' top-1 agreement with the reference model "
            f"{agree:.3f} < minimum {floor:.3f} ({precision}, {n} samples{acc}). Try more or "
            "more representative calibration samples, per-channel quantization, or QAT.",
            artifact=str(artifact_path),
            output=first,
            top1_agreement=agree,
            min_agreement=floor,
        )


def _output_order(names: list[str]) -> list[int]:
    """Runner output indices in model output order: exports name them output_0, output_1 ...,
    which runtimes may list in another order (output_10 before output_2)."""
    nums = [n.rsplit("_", 1)[-1] if n.startswith("output_") else "" for n in names]
    if all(k.isdigit() for k in nums) and sorted(int(k) for k in nums) == list(range(len(names))):
        return sorted(range(len(names)), key=lambda i: int(nums[i]))
    return list(range(len(names)))


def _class_index(class_output: int | str | None, names: list[str]) -> int:
    if class_output is None:
        return 0
    if isinstance(class_output, int) or str(class_output).isdigit():
        i = int(class_output)
        if 0 <= i < len(names):
            return i
    elif str(class_output) in names:
        return names.index(str(class_output))
    listed = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
    raise UsageError(
        f"The model has no output {class_output!r}; its outputs are {listed}. Pass --output with "
        "one of these names (or its index)."
    )


def _with_layer(
    e: KernelPrepareError, path: str | os.PathLike, layer_names: list[str] | None
) -> KernelPrepareError:
    """The runtime's refusal, with the model layer its node came from named."""
    layer = ""
    if str(path).endswith(".tflite") and e.node >= 0:
        from edgekit.export.tflite import layer_of_node

        try:
            layer = layer_of_node(path, e.node, layer_names) or ""
        except Exception:  # an unreadable file: the runtime's own message stands
            layer = ""
    if not layer:
        return e
    message = str(e).replace(f"({e.op})", f"({e.op}, layer '{layer}')", 1)
    return KernelPrepareError(message, node=e.node, op=e.op, layer=layer)


def _flex_ops(path: str | os.PathLike) -> list[str]:
    p = Path(path)
    if not p.is_file():
        return []
    with open(p, "rb") as f:
        if f.read(8)[4:8] != b"TFL3":
            return []
    from edgekit.export.tflite import inspect_tflite

    try:
        return inspect_tflite(p)["select_tf_ops"]
    except Exception:  # a damaged file: let the runner report it
        return []


def top1(p: np.ndarray) -> np.ndarray:
    """Predicted class per row; a single column is a sigmoid score thresholded at 0.5."""
    return (p[:, 0] > 0.5).astype(np.int64) if p.shape[1] == 1 else p.argmax(axis=1)


def is_probabilities(a: np.ndarray, atol: float = 1e-3) -> bool:
    """True when every row is non-negative and sums to 1 (a softmax output), else logits."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    if a.shape[1] < 2:
        return bool(((a >= 0) & (a <= 1)).all())  # a sigmoid score
    return bool((a >= -atol).all() and np.allclose(a.sum(axis=1), 1.0, atol=atol))


def softmax(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _probabilities(ref: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as probabilities, decided by the reference (a quantized export's rows may not sum
    to exactly 1)."""
    if is_probabilities(ref):
        return ref, got
    if ref.shape[1] == 1:  # a single logit: sigmoid
        return _sigmoid(ref), _sigmoid(got)
    return softmax(ref), softmax(got)


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.asarray(a, dtype=np.float64)))).astype(np.float32)


def _as_list(outputs: Any) -> list[np.ndarray]:
    if isinstance(outputs, dict):
        return [np.asarray(outputs[k]) for k in sorted(outputs)]
    if isinstance(outputs, list | tuple):
        return [np.asarray(o) for o in outputs]
    return [np.asarray(outputs)]


def _confusions(ref: np.ndarray, got: np.ndarray, labels: list[str] | None, top: int = 3) -> list:
    """The most frequent (reference class -> export class) disagreements."""
    diff = ref != got
    if not diff.any():
        return []
    pairs, counts = np.unique(np.stack([ref[diff], got[diff]], axis=1), axis=0, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:top]

    def lab(i: int) -> str | int:
        return labels[i] if labels is not None and 0 <= i < len(labels) else int(i)

    return [
        {
            "reference": lab(int(pairs[k][0])),
            "export": lab(int(pairs[k][1])),
            "count": int(counts[k]),
        }
        for k in order
    ]
