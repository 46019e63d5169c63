"""The prune stage: magnitude pruning with tfmot, fine-tuning, then strip_pruning (the
architecture is kept).

This file holds the stage's recipe config (`PruneConfig`), the stage (`Prune`) and the pruning
itself (`prune()`, usable on its own with a tf_keras model and NumPy arrays).

`prune()` takes a tf_keras model (the stage bridges Keras 3 models first) and never mutates it:
it works on `training.copy_model(model)`. Layers are wrapped one by one with tfmot's
`prune_low_magnitude` through `clone_model`, so a model that holds layers tfmot cannot prune still
gets its supported layers pruned; the others are listed in `PruneResult.skipped_layers`.

A model with several outputs (a class head and a box head, say) is fine-tuned on the labels at
its class output (`class_output`) while every other output is held where it was: its target is
the unpruned model's own prediction (mean squared error over that output's variance), so pruning
for the class head does not wreck the others. How far each held output moved is measured on the
validation data and reported (`PruneResult.held_outputs`).
"""

from __future__ import annotations

import gzip
import math
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
from pydantic import Field, field_validator

from edgekit import ui
from edgekit.artifacts import ModelArtifact
from edgekit.errors import DataError, UnsupportedModelError, UsageError
from edgekit.stages import training
from edgekit.stages.base import Stage, StageConfig, StageOutput, register
from edgekit.stages.distribute import plan_distribution
from edgekit.stages.model_io import as_tf_keras, base_name, class_output_of, save_keras

if TYPE_CHECKING:
    from edgekit.stages.context import RunContext

SCHEDULES = ("polynomial", "constant")
POLICIES = ("xnnpack",)
# Pruning updates the masks this many times over [begin_step, end_step] unless `frequency` is given.
_TARGET_UPDATES = 8
# Without an explicit end_step, the last ~20% of the fine-tuning runs with fixed masks (recovery).
_RECOVERY_FRACTION = 0.2


class PruneConfig(StageConfig):
    """Magnitude pruning with tfmot, fine-tuning, then strip_pruning (the architecture is kept).

    `distribute`: one device, or mirrored over this machine's GPUs. multi_worker is distill's
    (fine-tuning takes an epoch or two); qat has no such setting: tfmot's quantization-aware
    training does not support tf.distribute (a roadmap item of tfmot; under MirroredStrategy its
    replicas' gradients do not even match in shape), so it trains on one device."""

    stage: Literal["prune"] = "prune"
    distribute: Literal["auto", "none", "mirrored"] = Field(
        "auto",
        description="Where the fine-tuning trains: none (one device), mirrored (MirroredStrategy "
        "over this machine's GPUs or `devices`); auto = mirrored with 2+ GPUs, else none. "
        "batch_size is per replica and the learning rate is scaled linearly with the replicas.",
    )
    devices: list[str] | None = Field(
        None,
        description='Devices for distribute=mirrored (e.g. ["/gpu:0", "/gpu:1"]); default all GPUs.',
    )
    target_sparsity: float = Field(
        0.5, description="Fraction of prunable weights set to zero, in [0, 1)."
    )
    schedule: Literal["polynomial", "constant"] = Field(
        "polynomial",
        description="polynomial: sparsity rises from initial_sparsity to the target; constant: "
        "the target from the first update.",
    )
    initial_sparsity: float = Field(
        0.0, description="Starting sparsity of the polynomial schedule, in [0, target_sparsity]."
    )
    epochs: int = Field(2, ge=1, description="Epochs of fine-tuning while pruning.")
    batch_size: int = Field(64, ge=1, description="Images per fine-tuning step.")
    learning_rate: float = Field(5e-4, gt=0, description="Learning rate of the fine-tuning.")
    frequency: int | None = Field(
        None, ge=1, description="Steps between pruning updates (None: derived)."
    )
    m_by_n: tuple[int, int] | None = Field(None, description="Structured sparsity, e.g. [2, 4].")
    policy: Literal["xnnpack"] | None = Field(
        None, description="tfmot's PruneForLatencyOnXNNPack policy."
    )

    @field_validator("target_sparsity", "initial_sparsity")
    @classmethod
    def _sparsity_range(cls, v: float, info: Any) -> float:
        if not 0 <= v < 1:
            raise ValueError(
                f"Expected {info.field_name} in [0, 1). Received: {info.field_name}={v}"
            )
        return v


@register
class Prune(Stage):
    """Magnitude pruning of the current model, fine-tuned on the labels."""

    name = "prune"
    config_type = PruneConfig
    position = 20
    trains_float_weights = True

    def needs_labels(self) -> str | None:
        return "prune"

    def run(self, ctx: RunContext, model: ModelArtifact, workdir: Path) -> StageOutput:
        tfk_model, bridge = as_tf_keras(ctx, model, several_outputs=True)
        c = self.config
        result = prune(
            tfk_model,
            ctx.x("train"),
            ctx.y("train"),
            x_val=ctx.x("val"),
            y_val=ctx.y("val"),
            target_sparsity=c.target_sparsity,
            schedule=c.schedule,
            initial_sparsity=c.initial_sparsity,
            frequency=c.frequency,
            epochs=c.epochs,
            batch_size=c.batch_size,
            learning_rate=c.learning_rate,
            m_by_n=tuple(c.m_by_n) if c.m_by_n else None,
            policy=c.policy,
            seed=ctx.recipe.seed,
            distribute=c.distribute,
            devices=c.devices,
            class_output=class_output_of(ctx, tfk_model),
        )
        art = save_keras(
            result.model,
            workdir / f"{base_name(model)}_pruned.keras",
            parameters=int(result.model.count_params()),
            sparsity=float(result.overall_sparsity),
        )
        return StageOutput(
            model=art,
            report={
                **bridge,
                "overall_sparsity": float(result.overall_sparsity),
                "per_layer_sparsity": {k: float(v) for k, v in result.per_layer_sparsity.items()},
                "gzip_size_bytes": int(result.gzip_size_bytes),
                "skipped_layers": list(getattr(result, "skipped_layers", []) or []),
                "history": result.history,
                "distribution": result.distribution,
                **({"held_outputs": result.held_outputs} if result.held_outputs else {}),
            },
        )


@dataclass
class PruneResult:
    """What `prune()` produced. `model` is the stripped tf_keras model (same architecture as the input)."""

    model: Any
    per_layer_sparsity: dict[str, float]
    overall_sparsity: float
    gzip_size_bytes: int
    baseline_gzip_size_bytes: int
    history: dict[str, list[float]]
    skipped_layers: list[dict[str, str]] = field(default_factory=list)
    schedule: dict[str, Any] = field(default_factory=dict)
    distribution: dict[str, Any] | None = None  # strategy, replicas, devices, workers
    # a multi-output model's non-class outputs: {name: {rms_change, relative_rms_change}}
    held_outputs: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (everything but the model)."""
        return {
            "overall_sparsity": self.overall_sparsity,
            "per_layer_sparsity": dict(self.per_layer_sparsity),
            "gzip_size_bytes": self.gzip_size_bytes,
            "baseline_gzip_size_bytes": self.baseline_gzip_size_bytes,
            "skipped_layers": [dict(s) for s in self.skipped_layers],
            "schedule": dict(self.schedule),
            "history": {k: list(v) for k, v in self.history.items()},
            "held_outputs": {k: dict(v) for k, v in self.held_outputs.items()},
        }


def prune(
    model: Any,
    x_train: np.ndarray,
    y_train: np.ndarray | None = None,
    *,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    teacher_logits: np.ndarray | None = None,
    target_sparsity: float = 0.5,
    schedule: str = "polynomial",
    initial_sparsity: float = 0.0,
    begin_step: int = 0,
    end_step: int | None = None,
    frequency: int | None = None,
    epochs: int = 2,
    batch_size: int = 64,
    learning_rate: float = 5e-4,
    optimizer: str = "adam",
    lr_schedule: str = "constant",
    weight_decay: float = 0.0,
    m_by_n: tuple[int, int] | None = None,
    policy: str | None = None,
    skip_unsupported: bool = True,
    seed: int = 0,
    distribute: str = "none",
    devices: list[str] | None = None,
    class_output: int = 0,
) -> PruneResult:
    """Prune `model` to `target_sparsity` while fine-tuning it; return the stripped model and figures.

    Args:
        model: a built tf_keras Sequential or Functional model (left untouched).
        x_train, y_train: preprocessed float inputs and integer class ids (or (N, classes) targets).
        x_val, y_val: optional validation data, reported per epoch.
        teacher_logits: (N, classes) logits of a teacher for `x_train`; when given, the fine-tuning
            target is softmax(teacher_logits) instead of `y_train` (distillation-style).
        target_sparsity: fraction of each pruned kernel set to zero, in [0, 1).
        schedule: "polynomial" (from `initial_sparsity` up to the target) or "constant".
        initial_sparsity: starting sparsity of the polynomial schedule, in [0, target_sparsity].
        begin_step, end_step, frequency: pruning updates happen at the training steps
            begin_step + k * frequency up to end_step (steps count from 1). Defaults: end_step
            about 80% into the fine-tuning and ~8 updates; end_step - begin_step is kept a multiple
            of the frequency so that the last update reaches the target.
        epochs, batch_size, learning_rate, optimizer, lr_schedule, weight_decay: the fine-tuning.
        m_by_n: structured sparsity, e.g. (2, 4): at least 2 zeros in every 4 consecutive input-channel
            weights (the layout sparse kernels need). The sparsity is then m/n; `target_sparsity` and
            `schedule` are not used. Only 2-D (Dense) and 4-D (Conv2D) kernels are pruned.
        policy: None, or "xnnpack" for tfmot's PruneForLatencyOnXNNPack (prunes only 1x1 Conv2D
            layers of a model that XNNPACK's sparse inference can run; other models are rejected).
        skip_unsupported: prune the layers tfmot supports and leave the others dense (listed in
            `skipped_layers`); False raises UnsupportedModelError on the first such layer.
        seed: seeds shuffling and initialisation of the fine-tuning.
        distribute, devices: where it trains (`distribute.plan_distribution`): `batch_size` is
            per replica, the learning rate scaled with the replicas.
        class_output: for a model with several outputs, the index of the class-score output the
            labels (or teacher_logits) belong to; the other outputs are held at the unpruned
            model's predictions (in-memory data only) and their drift is reported.
    """
    import tensorflow_model_optimization as tfmot

    sparsity = tfmot.sparsity.keras
    _check_options(target_sparsity, schedule, initial_sparsity, m_by_n, policy)
    training.check_positive("epochs", epochs, integer=True)
    training.check_positive("batch_size", batch_size, integer=True)
    training.require_tf_keras_model(model)
    _check_class_output(model, class_output)
    several = len(model.outputs) > 1
    label_output = class_output if several else None  # the labels' output, checked against it
    x, targets = _training_targets(model, x_train, y_train, teacher_logits, label_output)
    val_x, val_y = _validation(model, x_val, y_val, soft=targets.ndim == 2, output=label_output)
    held = _HeldOutputs.of(model, class_output, x, val_x) if several else None
    dist = plan_distribution(distribute, devices)
    ui.info(dist.describe())
    batch_size = dist.global_batch(batch_size)

    steps = training.steps_per_epoch(len(x), batch_size)
    total_steps = steps * epochs
    plan = _plan_steps(total_steps, begin_step, end_step, frequency)
    plan.update(
        {
            "schedule": "m_by_n" if m_by_n else schedule,
            "target_sparsity": (m_by_n[0] / m_by_n[1]) if m_by_n else float(target_sparsity),
            "initial_sparsity": float(initial_sparsity)
            if schedule == "polynomial" and not m_by_n
            else None,
            "steps_per_epoch": steps,
            "total_steps": total_steps,
            "m_by_n": list(m_by_n) if m_by_n else None,
            "policy": policy,
        }
    )
    params = _pruning_params(plan, target_sparsity, initial_sparsity, m_by_n)
    with dist.scope():  # the copy, its pruning wrappers and the optimizer: one per replica
        work = training.copy_model(model)
        xnn_policy = _xnnpack_policy(work, model.name) if policy == "xnnpack" else None
        loss: Any = training.classification_loss(work, targets, x, class_output)
        wrapped = _wrap_prunable(work, params, m_by_n, xnn_policy, skip_unsupported, model.name)
        skipped = wrapped["skipped"]
        pruned = wrapped["model"]
        ui.info(
            f"prune: {len(wrapped['records'])} layer(s) to {plan['target_sparsity']:.0%} sparsity "
            f"({plan['schedule']}); masks updated every {plan['frequency']} step(s) from step "
            f"{plan['begin_step']} to {plan['end_step']} of {total_steps}"
        )
        fit_y: Any = targets
        fit_val_y: Any = val_y
        metrics: Any = ("accuracy",)
        if held is not None:  # every output trained: the class one on labels, the others held
            fit_y, fit_val_y = held.targets(targets, val_y)
            loss, metrics = held.losses(loss), {pruned.output_names[class_output]: ["accuracy"]}
        history = training.fit(
            pruned,
            x,
            fit_y,
            x_val=val_x,
            y_val=fit_val_y,
            metrics=metrics,
            epochs=epochs,
            batch_size=batch_size,
            optimizer=optimizer,
            learning_rate=dist.scaled_learning_rate(learning_rate),
            schedule=lr_schedule,
            weight_decay=weight_decay,
            loss=loss,
            callbacks=[sparsity.UpdatePruningStep()],
            seed=seed,
            description="prune",
        )
    stripped = sparsity.strip_pruning(pruned)
    held_outputs: dict[str, dict[str, float]] = {}
    if held is not None:
        history = held.plain_history(history, list(pruned.output_names))
        held_outputs = held.moved(stripped, x, val_x)
        for name, m in held_outputs.items():
            ui.info(
                f"prune: held output '{name}' moved by {m['rms_change']:.3g} RMS "
                f"({m['relative_rms_change']:.1%} of its spread)"
            )
    per_layer, overall = _measure(wrapped["records"])
    ui.info(f"prune: overall sparsity {overall:.3f} over {len(per_layer)} layer(s)")
    return PruneResult(
        model=stripped,
        per_layer_sparsity=per_layer,
        overall_sparsity=overall,
        gzip_size_bytes=gzip_size(stripped),
        baseline_gzip_size_bytes=gzip_size(model),
        history=history,
        skipped_layers=skipped,
        schedule=plan,
        distribution=dist.record(),
        held_outputs=held_outputs,
    )


def _pruning_params(
    plan: dict[str, Any],
    target_sparsity: float,
    initial_sparsity: float,
    m_by_n: tuple[int, int] | None,
) -> dict[str, Any]:
    """tfmot's prune_low_magnitude parameters for the step plan: the sparsity schedule (constant
    for m_by_n) and the m_by_n block."""
    import tensorflow_model_optimization as tfmot

    sparsity = tfmot.sparsity.keras
    steps = {k: plan[k] for k in ("begin_step", "end_step", "frequency")}
    if m_by_n or plan["schedule"] == "constant":
        pruning_schedule = sparsity.ConstantSparsity(float(target_sparsity), **steps)
    else:
        pruning_schedule = sparsity.PolynomialDecay(
            initial_sparsity=float(initial_sparsity),
            final_sparsity=float(target_sparsity),
            **steps,
        )
    params: dict[str, Any] = {"pruning_schedule": pruning_schedule}
    if m_by_n:
        params["sparsity_m_by_n"] = tuple(int(v) for v in m_by_n)
    return params


def _xnnpack_policy(work: Any, name: str) -> Any:
    """tfmot's PruneForLatencyOnXNNPack, once it accepts the model (an error names why not)."""
    import tensorflow_model_optimization as tfmot

    xnn_policy = tfmot.sparsity.keras.PruneForLatencyOnXNNPack()
    try:
        xnn_policy.ensure_model_supports_pruning(work)
    except ValueError as e:
        reason = " ".join(str(e).split())
        raise UnsupportedModelError(
            f"policy='xnnpack' needs a model XNNPACK's sparse inference can run, and {name!r} is not one: "
            f"{reason}. Use policy=None to prune every supported layer instead."
        ) from None
    return xnn_policy


def _wrap_prunable(
    work: Any,
    params: dict[str, Any],
    m_by_n: tuple[int, int] | None,
    xnn_policy: Any,
    skip_unsupported: bool,
    name: str,
) -> dict[str, Any]:
    """`_wrap_layers` with its outcome checked: a layer tfmot cannot prune is an error unless
    `skip_unsupported` (then it is said and listed in "skipped"), and so is a model with nothing
    to prune."""
    wrapped, skipped = _wrap_layers(work, params, m_by_n=m_by_n, xnn_policy=xnn_policy)
    if skipped and not skip_unsupported:
        first = skipped[0]
        raise UnsupportedModelError(
            f"Layer {first['layer']!r} ({first['class']}) cannot be pruned: {first['reason']}. "
            "Pass skip_unsupported=True to prune the supported layers and leave it dense."
        )
    if not wrapped["records"]:
        what = (
            "1x1 Conv2D layer" if xnn_policy is not None else "layer with weights tfmot can prune"
        )
        raise UnsupportedModelError(
            f"Model {name!r} has no {what} (Dense, Conv, Embedding ...); there is nothing to prune."
        )
    for s in skipped:
        ui.info(f"prune: skipping layer {s['layer']!r} ({s['class']}): {s['reason']}")
    return {**wrapped, "skipped": skipped}


def _check_options(
    target_sparsity: float,
    schedule: str,
    initial_sparsity: float,
    m_by_n: tuple[int, int] | None,
    policy: str | None,
) -> None:
    for name, value in (
        ("target_sparsity", target_sparsity),
        ("initial_sparsity", initial_sparsity),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise UsageError(f"Expected {name} in [0, 1). Received: {name}={value!r}")
    if schedule not in SCHEDULES:
        raise UsageError(f"Expected schedule in {list(SCHEDULES)}. Received: schedule={schedule!r}")
    if schedule == "polynomial" and initial_sparsity > target_sparsity:
        raise UsageError(
            "Expected initial_sparsity <= target_sparsity for the polynomial schedule. "
            f"Received: initial_sparsity={initial_sparsity}, target_sparsity={target_sparsity}"
        )
    if m_by_n is not None:
        ok = (
            isinstance(m_by_n, tuple | list)
            and len(m_by_n) == 2
            and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in m_by_n)
            and 0 < m_by_n[0] < m_by_n[1]
        )
        if not ok:
            raise UsageError(
                f"Expected m_by_n as two integers (m, n) with 0 < m < n, e.g. (2, 4). Received: m_by_n={m_by_n!r}"
            )
    if policy is not None and policy not in POLICIES:
        raise UsageError(
            f"Expected policy None or one of {list(POLICIES)}. Received: policy={policy!r}"
        )


def _training_targets(
    model: Any, x_train: Any, y_train: Any, teacher_logits: Any, output: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    if teacher_logits is None:
        if y_train is None:
            raise DataError(
                "Pruning fine-tunes the model and needs targets: y_train is None. "
                "Pass y_train (integer class ids) or teacher_logits (N, classes)."
            )
        x, y = training.check_training_data(model, x_train, y_train, what="x_train", output=output)
        return x, cast(np.ndarray, y)
    x, _ = training.check_training_data(model, x_train, None, what="x_train", labels_required=False)
    logits = np.asarray(teacher_logits, dtype=np.float64)
    if logits.ndim != 2 or len(logits) != len(x):
        raise DataError(
            f"Expected teacher_logits of shape ({len(x)}, classes), one row per x_train sample. "
            f"Received: teacher_logits.shape={logits.shape}"
        )
    logits = logits - logits.max(axis=1, keepdims=True)
    soft = np.exp(logits)
    soft /= soft.sum(axis=1, keepdims=True)
    _, checked = training.check_training_data(
        model, x, soft.astype(np.float32), what="x_train", output=output
    )
    return x, cast(np.ndarray, checked)


def _validation(
    model: Any, x_val: Any, y_val: Any, *, soft: bool, output: int | None = None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    if x_val is None or y_val is None:
        return None, None
    x, checked = training.check_training_data(model, x_val, y_val, what="x_val", output=output)
    y = cast(np.ndarray, checked)
    if soft and y.ndim == 1:
        # Soft (teacher) training targets: score validation against one-hot labels with the same loss.
        shape = model.output_shape if output is None else model.output_shape[output]
        y = np.eye(int(shape[-1]), dtype=np.float32)[y]
    return x, y


def _check_class_output(model: Any, class_output: int) -> None:
    n = len(model.outputs)
    if isinstance(class_output, bool) or not isinstance(class_output, int | np.integer):
        raise UsageError(f"Expected class_output to be an integer. Received: {class_output!r}")
    if not 0 <= class_output < n:
        names = ", ".join(f"{i}: {o}" for i, o in enumerate(model.output_names))
        raise UsageError(
            f"Expected class_output in [0, {n}) (the model's outputs: {names}). "
            f"Received: class_output={class_output}"
        )


@dataclass
class _HeldOutputs:
    """The non-class outputs of a multi-output model, held at the unpruned model's predictions
    while the class output is fine-tuned: their targets, losses and how far they moved."""

    names: list[str]
    class_output: int
    train: list[np.ndarray]  # the unpruned model's predictions on x_train, every output
    val: list[np.ndarray] | None  # ... on x_val
    variance: list[float]  # of each output's training predictions (the loss scale)

    @classmethod
    def of(cls, model: Any, class_output: int, x: Any, x_val: Any) -> _HeldOutputs:
        if getattr(x, "streamed", False) or getattr(x_val, "streamed", False):
            raise UnsupportedModelError(
                f"{model.name!r} has {len(model.outputs)} outputs: pruning holds the outputs "
                "other than the class one at the unpruned model's predictions, which needs the "
                "data in memory, and this data set is streamed. Lower data.stream_above_mb so "
                "that it loads in memory, or use the quantize recipe."
            )
        train = _predict_all(model, x)
        val = _predict_all(model, x_val) if x_val is not None else None
        variance = [max(float(np.var(p)), 1e-12) for p in train]
        return cls(list(model.output_names), class_output, train, val, variance)

    def targets(self, labels: np.ndarray, val_labels: np.ndarray | None) -> tuple[Any, Any]:
        def with_labels(preds: list[np.ndarray], y: np.ndarray) -> tuple[np.ndarray, ...]:
            return tuple(y if i == self.class_output else p for i, p in enumerate(preds))

        val = None
        if self.val is not None and val_labels is not None:
            val = with_labels(self.val, val_labels)
        return with_labels(self.train, labels), val

    def losses(self, class_loss: Any) -> list[Any]:
        return [
            class_loss if i == self.class_output else _held_loss(v)
            for i, v in enumerate(self.variance)
        ]

    def plain_history(
        self, history: dict[str, list[float]], trained_names: list[str]
    ) -> dict[str, list[float]]:
        """Keras names a multi-output model's metrics after its output layers (tfmot's wrappers
        here): those take the model's output names back, and the class output's accuracy the
        single-output names (accuracy, val_accuracy) that reports read."""
        cls = trained_names[self.class_output]
        renamed = {f"{cls}_accuracy": "accuracy", f"val_{cls}_accuracy": "val_accuracy"}
        out = {}
        for key, values in history.items():
            key = renamed.get(key, key)
            for trained, name in zip(trained_names, self.names, strict=True):
                key = key.replace(f"{trained}_", f"{name}_")
            out[key] = values
        return out

    def moved(self, model: Any, x_train: Any, x_val: Any) -> dict[str, dict[str, float]]:
        """RMS change of each held output between the unpruned and the pruned model, on the
        validation data when there was some, else on the training data."""
        x, before = (x_val, self.val) if self.val is not None else (x_train, self.train)
        after = _predict_all(model, x)
        out: dict[str, dict[str, float]] = {}
        for i, name in enumerate(self.names):
            if i == self.class_output:
                continue
            rms = float(np.sqrt(np.mean((after[i] - before[i]) ** 2)))
            out[name] = {
                "rms_change": rms,
                "relative_rms_change": rms / math.sqrt(self.variance[i]),
            }
        return out


def _predict_all(model: Any, x: np.ndarray) -> list[np.ndarray]:
    out = model.predict(x, batch_size=256, verbose=0)
    return [np.asarray(o, dtype=np.float32) for o in (out if isinstance(out, list) else [out])]


def _held_loss(variance: float) -> Any:
    """Mean squared error to the held prediction, over the output's variance (1.0 = as far off
    as predicting its mean), so outputs of any scale weigh like the class loss."""
    import tensorflow as tf

    def held_output_mse(y_true: Any, y_pred: Any) -> Any:
        d = tf.reshape(tf.square(y_pred - y_true), [tf.shape(y_pred)[0], -1])
        return tf.reduce_mean(d, axis=1) / variance

    return held_output_mse


def _plan_steps(
    total_steps: int, begin_step: int, end_step: int | None, frequency: int | None
) -> dict[str, int]:
    """Pick begin/end/frequency so that every mask update falls inside the fine-tuning.

    Training steps count from 1 (tfmot's UpdatePruningStep); updates happen at
    begin_step + k * frequency <= end_step.
    """
    if (
        isinstance(begin_step, bool)
        or not isinstance(begin_step, int | np.integer)
        or begin_step < 0
    ):
        raise UsageError(
            f"Expected begin_step >= 0 (an integer). Received: begin_step={begin_step!r}"
        )
    if frequency is not None:
        training.check_positive("frequency", frequency, integer=True)
    if begin_step >= total_steps:
        raise UsageError(
            f"Expected begin_step < the number of fine-tuning steps ({total_steps} = epochs x steps per epoch). "
            f"Received: begin_step={begin_step}. Lower begin_step or train for more epochs."
        )
    if end_step is not None:
        if isinstance(end_step, bool) or not isinstance(end_step, int | np.integer):
            raise UsageError(f"Expected end_step to be an integer. Received: end_step={end_step!r}")
        if not begin_step < end_step <= total_steps:
            raise UsageError(
                f"Expected begin_step < end_step <= {total_steps} (the fine-tuning's steps, so that the target "
                f"sparsity is reached). Received: begin_step={begin_step}, end_step={end_step}"
            )
        span = end_step - begin_step
        if frequency is None:
            ceiling = max(1, span // _TARGET_UPDATES)
            frequency = max(d for d in range(1, ceiling + 1) if span % d == 0)
        elif span % frequency:
            raise UsageError(
                f"Expected end_step - begin_step to be a multiple of frequency so the last update lands on end_step. "
                f"Received: begin_step={begin_step}, end_step={end_step}, frequency={frequency}"
            )
        return {
            "begin_step": int(begin_step),
            "end_step": int(end_step),
            "frequency": int(frequency),
        }
    end = total_steps - math.floor(_RECOVERY_FRACTION * total_steps)
    span = max(1, end - begin_step)
    if frequency is None:
        frequency = max(1, span // _TARGET_UPDATES)
    if frequency > total_steps - begin_step:
        raise UsageError(
            f"Expected frequency <= {total_steps - begin_step} (the steps left after begin_step) so that pruning "
            f"happens at all. Received: frequency={frequency}"
        )
    span = max(frequency, (span // frequency) * frequency)
    return {
        "begin_step": int(begin_step),
        "end_step": int(begin_step + span),
        "frequency": int(frequency),
    }


def _wrap_layers(
    work: Any, params: dict[str, Any], *, m_by_n: tuple[int, int] | None, xnn_policy: Any
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Wrap each prunable layer of `work` (a copy we own) with prune_low_magnitude, via clone_model.

    Returns {"model": pruned model, "records": [(path, wrapper)]} and the skipped layers.
    """
    import tensorflow_model_optimization as tfmot

    from edgekit.keras_compat import tf_keras

    tfk = tf_keras()
    records: list[tuple[str, Any]] = []
    skipped: list[dict[str, str]] = []

    def clone_fn(prefix: str) -> Any:
        def fn(layer: Any) -> Any:
            path = f"{prefix}{layer.name}"
            if isinstance(layer, tfk.Model):
                if not (
                    isinstance(layer, tfk.Sequential) or getattr(layer, "_is_graph_network", False)
                ):
                    skipped.append(
                        {
                            "layer": path,
                            "class": type(layer).__name__,
                            "reason": "subclassed sub-model; left dense",
                        }
                    )
                    return layer
                return tfk.models.clone_model(layer, clone_function=clone_fn(f"{path}/"))
            if not layer.weights:
                return layer
            if xnn_policy is not None and not xnn_policy.allow_pruning(layer):
                return layer
            try:
                wrapper = tfmot.sparsity.keras.prune_low_magnitude(layer, **params)
            except ValueError:
                skipped.append(
                    {
                        "layer": path,
                        "class": type(layer).__name__,
                        "reason": "not supported by tfmot pruning; left dense",
                    }
                )
                return layer
            weights = list(wrapper.layer.get_prunable_weights())
            if not weights:
                # Registered without prunable weights (BatchNormalization, DepthwiseConv2D ...): by design.
                return layer
            if m_by_n and any(len(w.shape) not in (2, 4) for w in weights):
                skipped.append(
                    {
                        "layer": path,
                        "class": type(layer).__name__,
                        "reason": "m_by_n sparsity needs 2-D or 4-D kernels; left dense",
                    }
                )
                return layer
            records.append((path, wrapper))
            return wrapper

        return fn

    pruned = tfk.models.clone_model(work, clone_function=clone_fn(""))
    return {"model": pruned, "records": records}, skipped


def _measure(records: list[tuple[str, Any]]) -> tuple[dict[str, float], float]:
    """Fraction of exact zeros in each pruned kernel (the stripped model keeps these variables)."""
    per_layer: dict[str, float] = {}
    zeros = total = 0
    for path, wrapper in records:
        z = n = 0
        for w in wrapper.layer.get_prunable_weights():
            v = np.asarray(w.numpy())
            z += int(np.count_nonzero(v == 0))
            n += int(v.size)
        per_layer[path] = z / n if n else 0.0
        zeros += z
        total += n
    return per_layer, (zeros / total if total else 0.0)


def gzip_size(model: Any) -> int:
    """Size in bytes of the gzip-compressed .h5 file of `model` (weights only if it cannot be saved whole).

    Zeros compress, so this shows what pruning saves on disk or on the wire.
    """
    with tempfile.TemporaryDirectory(prefix="edgekit-gzip-") as tmp:
        path = Path(tmp) / "model.h5"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "HDF5 is legacy": this file is only measured
                model.save(path, include_optimizer=False, save_format="h5")
        except Exception:
            # Custom layers without get_config cannot be saved whole; their weights can.
            path.unlink(missing_ok=True)
            model.save_weights(path)
        return len(gzip.compress(path.read_bytes(), compresslevel=9))
