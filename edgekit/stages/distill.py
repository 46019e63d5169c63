"""The distill stage: knowledge distillation of the model (the teacher) into a MobileNet student.

This file holds the stage's recipe config (`DistillConfig`), the stage (`Distill`: what it
needs from the run, and its augmentation and unlabeled-pool policy) and the training itself
(`distill()`, usable on its own with NumPy arrays).

Loss per sample: alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T)),
with t the teacher's logits and s the student's. The teacher's logits are computed once per sample
(once per sample and view when augmentation runs the teacher on every view) by the pipeline (the
teacher may be any format) and passed in; labels and teacher logits travel
packed in one target array so that plain `fit` (and its callbacks) does the training.
alpha = 0 learns from the teacher alone and works with unlabeled data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from edgekit import ui
from edgekit.artifacts import KERAS_FORMATS, ModelArtifact
from edgekit.errors import DataError, UsageError
from edgekit.schema import Strict
from edgekit.stages import training
from edgekit.stages.base import Stage, StageConfig, StageOutput, register
from edgekit.stages.context import are_probabilities, as_logits, first_output
from edgekit.stages.distribute import (
    has_gpu,
    plan_distribution,
    precision_policy,
    resolve_precision,
    start_multi_worker,
    where_it_trains,
)
from edgekit.stages.model_io import class_output_of, load, save_keras
from edgekit.stages.online import strong_augmenter
from edgekit.stages.students import StudentConfig, build_student

if TYPE_CHECKING:
    from edgekit.stages.context import RunContext

# Training steps per call into TensorFlow: the same steps, a Python round trip every 8 of them
# instead of every one (benchmarks/train_throughput.py). Distillation has no per-step callback.
STEPS_PER_EXECUTION = 8


class Optimizer(Strict):
    """The optimizer and learning-rate schedule of the student's training."""

    name: Literal["adam", "adamw", "sgd"] = Field(
        "adam", description="Optimizer (sgd: momentum 0.9)."
    )
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate.")
    schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="Learning-rate schedule over the epochs (cosine decays to 0)."
    )
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (decoupled with adamw).")


class EarlyStopping(Strict):
    """Stop when the validation figure stops improving; the best epoch's weights are kept."""

    enabled: bool = Field(True, description="Stop early and restore the best epoch's weights.")
    patience: int = Field(4, ge=1, description="Epochs without improvement before stopping.")
    monitor: Literal["val_accuracy", "val_loss"] = Field(
        "val_accuracy",
        description="Validation figure watched (val_accuracy falls back to the agreement with "
        "the teacher on unlabeled data).",
    )


class Augment(Strict):
    """Label-preserving augmentation of the training images during distillation.

    Mirror images and quarter turns give at most eight distinct views of an image. The teacher's
    logits on the original image can stand for every view only if the teacher answers the same on
    them: the stage measures that on the validation split (top-1 agreement between each image and
    its transformed copy, per augmentation). `teacher_views` decides what happens then:
    `auto` (default) reuses the original image's logits (one teacher pass) when every augmentation
    reaches `min_teacher_agreement`, and otherwise runs the teacher once on every view the
    augmentation can draw (up to 8 passes over the training split, cached in the run folder) so
    each augmented image is taught the teacher's logits on that very view; `true` always runs it
    on every view; `false` never does and drops an augmentation below `min_teacher_agreement` with
    a warning (or, with `strict`, stops with a one-line error).
    """

    flip: Literal["none", "horizontal", "vertical", "both"] = Field(
        "none", description="Random mirror images (each direction with probability 1/2)."
    )
    rot90: bool = Field(
        False,
        description="Random quarter turns (0, 90, 180 or 270 degrees); square images only "
        "(dropped with a warning on others, an error with strict).",
    )
    teacher_views: bool | Literal["auto"] = Field(
        "auto",
        description="Run the teacher on every distinct augmented view of each training image "
        "(up to 8 passes, cached) and teach each view its own logits: true always, auto only when "
        "the teacher is not invariant to an augmentation, false never (such augmentations are "
        "dropped).",
    )
    min_teacher_agreement: float = Field(
        0.95,
        ge=0,
        le=1,
        description="Least top-1 agreement of the teacher with itself on augmented views for "
        "its original image's logits to stand for them.",
    )
    strict: bool = Field(
        False,
        description="Stop (instead of dropping the augmentation) when the teacher disagrees or "
        "the images are not square (rot90).",
    )
    crop: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Random resized crops keeping at least this share of each image's area "
        "(aspect 3/4 to 4/3, resized back); 1 = off. Needs distill.teacher=online.",
    )
    mixup: float = Field(
        0.0,
        ge=0,
        description="Mixup: each image blended with another of its batch, weight ~ Beta(mixup, "
        "mixup), labels blended alike (0.2-1 are usual); 0 = off. Needs distill.teacher=online.",
    )

    @property
    def enabled(self) -> bool:
        return self.flip != "none" or self.rot90 or self.strong

    @property
    def strong(self) -> bool:
        """Crops or mixup: augmentations only an online teacher can teach consistently."""
        return bool(self.strong_settings())

    def strong_settings(self) -> list[str]:
        """The crop and mixup settings that are on, as the recipe writes them."""
        on = [("crop", self.crop)] * (self.crop < 1) + [("mixup", self.mixup)] * (self.mixup > 0)
        return [f"augment.{name}={value:g}" for name, value in on]


class DistillConfig(StageConfig):
    """Knowledge distillation of the model (the teacher) into a MobileNet student."""

    stage: Literal["distill"] = "distill"
    student: StudentConfig = Field(StudentConfig(), description="The student network.")
    alpha: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Weight of the label cross-entropy; 1 - alpha weighs the distillation KL.",
    )
    temperature: float = Field(
        4.0, gt=0, description="Softmax temperature T of the distillation term."
    )
    epochs: int = Field(12, ge=1, description="Most epochs of training (see early_stopping).")
    batch_size: int = Field(64, ge=1, description="Images per training step.")
    optimizer: Optimizer = Field(
        Optimizer(learning_rate=2e-3), description="Optimizer and learning-rate schedule."
    )
    early_stopping: EarlyStopping = Field(
        EarlyStopping(), description="Early stopping on the validation split."
    )
    augment: Augment = Field(
        Augment(), description="Label-preserving augmentation of the training images."
    )
    distribute: Literal["auto", "none", "mirrored", "multi_worker"] = Field(
        "auto",
        description="Where the student trains (docs/distributed.md): none (one device), mirrored "
        "(MirroredStrategy over this machine's GPUs or `devices`), multi_worker "
        "(MultiWorkerMirroredStrategy from TF_CONFIG); auto = mirrored with 2+ GPUs, else none. "
        "batch_size is per replica and the learning rate is scaled linearly with the replicas.",
    )
    join_timeout_s: float = Field(
        300.0,
        gt=0,
        description="distribute=multi_worker: how long to wait for every worker of TF_CONFIG to "
        "join before stopping with the addresses that did not answer.",
    )
    devices: list[str] | None = Field(
        None,
        description='Devices for distribute=mirrored (e.g. ["/gpu:0", "/gpu:1"]); default all GPUs.',
    )
    precision: Literal["auto", "float32", "mixed_float16"] = Field(
        "auto",
        description="Training precision: mixed_float16 computes in float16 with float32 weights "
        "and loss scaling (about 2x faster on tensor-core GPUs; slow on CPUs); auto = "
        "mixed_float16 on a GPU, float32 otherwise. The saved student is float32 either way.",
    )
    teacher: Literal["auto", "cached", "online"] = Field(
        "auto",
        description="Where the teacher's targets come from: cached (its outputs computed once per "
        "image and view, stored in OUT/cache) or online (the teacher runs in every training "
        "step on the augmented batch the student sees: consistent targets for any augmentation, "
        "augment.crop and augment.mixup included; one teacher pass per image and epoch). auto = "
        "online on a GPU, cached otherwise. Online needs a Keras model or SavedModel teacher.",
    )
    use_unlabeled: bool = Field(
        True,
        description="Add the run's unlabeled images (compress --unlabeled) to the training set, "
        "taught by the teacher's outputs alone (no label term). An epoch then passes over both. "
        "No unlabeled images given: nothing changes.",
    )


@register
class Distill(Stage):
    """Train a fresh student on the teacher's outputs (and the labels, with alpha > 0)."""

    name = "distill"
    config_type = DistillConfig
    position = 10
    trains_float_weights = True

    def needs_labels(self) -> str | None:
        return "distill (alpha > 0)" if self.config.alpha > 0 else None

    def uses_unlabeled(self) -> bool:
        return self.config.use_unlabeled

    def teacher_splits(self) -> tuple[str, ...]:
        # Online, the teacher sees the training images in the training steps: only the
        # (unaugmented) validation outputs are cached.
        return ("val",) if self.teacher_mode() == "online" else ("train", "val")

    def teacher_mode(self, teacher_format: str | None = None) -> str:
        """ "online" or "cached": `teacher`, with auto resolved (online on a GPU when the teacher
        is a TensorFlow model: `teacher_format` one of KERAS_FORMATS, or not known yet)."""
        mode = self.config.teacher
        if mode == "auto":
            runnable = teacher_format is None or teacher_format in KERAS_FORMATS
            mode = "online" if runnable and has_gpu() else "cached"
        return mode

    def preflight(self, teacher: ModelArtifact) -> None:
        where_it_trains(self.config.distribute, self.config.devices)  # a bad TF_CONFIG: now
        if self.config.distribute == "multi_worker":  # must start before any TensorFlow op
            start_multi_worker(self.config.join_timeout_s)
        mode = self.teacher_mode(teacher.format)
        if mode == "online" and teacher.format not in KERAS_FORMATS:
            raise UsageError(
                f"distill.teacher=online runs the teacher inside every training step, which needs "
                f"a TensorFlow model (Keras 3, tf-keras or SavedModel); {Path(teacher.path).name} "
                f"is a .{teacher.format} file. Set --set distill.teacher=cached (its outputs are "
                "computed once), or pass the Keras model it was exported from."
            )
        aug = self.config.augment
        if mode == "cached" and aug.strong:
            asked = ", ".join(aug.strong_settings())
            why = " (auto picks cached without a GPU)" if self.config.teacher == "auto" else ""
            raise UsageError(
                f"distill.{asked} needs the online teacher: cached outputs are the teacher's "
                f"answers on the images before cropping or mixing{why}. Set --set "
                "distill.teacher=online (one teacher pass per image and epoch), or turn it off."
            )

    def plan(self, teacher: ModelArtifact) -> str:
        c = self.config
        where = where_it_trains(c.distribute, c.devices)
        return (
            f"distill trains on {where}, in {resolve_precision(c.precision)}, the teacher's "
            f"targets {self.teacher_mode(teacher.format)}"
        )

    def run(self, ctx: RunContext, model: ModelArtifact, workdir: Path) -> StageOutput:
        self.preflight(model)  # an intermediate model (not the run's teacher) checked here
        x_train, x_val = ctx.x("train"), ctx.x("val")
        teacher = _Teacher(ctx, model)
        online = self.teacher_mode(model.format) == "online"
        plan = plan_augmentation(self.config, teacher, x_train.shape, x_val, online=online)
        t_val = teacher.val_logits(x_val)
        t_train = None if online else teacher.logits("train", x_train, plan.views)
        y_train = ctx.y("train") if self.config.alpha > 0 else None
        x_train, t_train, y_train, n_pool = self._join_pool(
            ctx, teacher, plan.views, x_train, t_train, y_train, online=online
        )
        result = distill(
            plan.config,
            x_train,
            t_train,
            y_train,
            x_val=x_val,
            teacher_val=t_val,
            y_val=ctx.y("val"),
            seed=ctx.recipe.seed,
            augment=(plan.flip, plan.rot90),
            teacher_views=plan.views,
            online_teacher=teacher.online_function() if online else None,
            checkpoint_dir=ctx.checkpoint_dir,
        )
        art = save_keras(
            result.model, workdir / "student.keras", parameters=int(result.model.count_params())
        )
        s = self.config.student
        return StageOutput(
            model=art,
            report={
                "student": f"{s.arch} width {s.width:g}, input {s.input_size or 'as teacher'}",
                "parameters": int(result.model.count_params()),
                "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch,
                "teacher": "online" if online else "cached",
                "unlabeled_samples": n_pool,
                "augment": plan.report() if plan.requested.enabled else None,
                "history": result.history,
                "distribution": result.distribution,
                "precision": result.precision,
            },
        )

    def _join_pool(
        self,
        ctx: RunContext,
        teacher: _Teacher,
        views: list[training.View] | None,
        x_train: np.ndarray,
        t_train: np.ndarray | None,
        y_train: np.ndarray | None,
        online: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, int]:
        """The training set with the run's unlabeled images (if any, and `use_unlabeled`)
        appended, taught by the teacher alone (label -1); and how many joined. Online (no
        `t_train`) the teacher's logits on them come in the training steps."""
        pool = ctx.splits.get("unlabeled") if self.config.use_unlabeled else None
        n_pool = len(pool) if pool is not None and (online or teacher.can_run) else 0
        if not n_pool:
            return x_train, t_train, y_train, 0
        ui.info(
            f"distill: {n_pool} unlabeled images ({ctx.unlabeled_source}) join the {len(x_train)} "
            "labelled ones, taught by the teacher's outputs alone"
        )
        from edgekit.data.stream import concat

        x_pool = ctx.x("unlabeled")
        if t_train is not None:
            t_pool = teacher.logits("unlabeled", x_pool, views)
            t_train = np.concatenate([t_train, t_pool], axis=-2)
        x_train = concat(x_train, x_pool)
        if y_train is not None:
            y_train = np.concatenate([np.asarray(y_train, np.int64), np.full(n_pool, -1, np.int64)])
        return x_train, t_train, y_train, n_pool


@dataclass
class _Teacher:
    """Where the stage's teacher logits come from: the run's teacher (its outputs computed once
    and cached in OUT/cache by the run context) or, when distilling from an intermediate model
    (the current model is not the run's teacher), that model, loaded when first run and run here
    once per sample."""

    ctx: RunContext
    model: ModelArtifact
    _predict: Any = None
    _val: np.ndarray | None = None

    @property
    def intermediate(self) -> bool:
        return self.model.sha256 != self.ctx.teacher.sha256

    @property
    def can_run(self) -> bool:
        return self.intermediate or self.ctx.predict_teacher is not None

    def logits_of(self, x: np.ndarray) -> np.ndarray:
        if self._predict is None:
            self._predict = (
                load(self.ctx, self.model).predict
                if self.intermediate
                else self.ctx.predict_teacher
            )
        return as_logits(first_output(self._predict(x), self.ctx.class_index))

    def val_logits(self, x_val: np.ndarray) -> np.ndarray:
        if self._val is None:
            self._val = (
                self._batched(x_val) if self.intermediate else self.ctx.teacher_outputs["val"]
            )
        return self._val

    def logits(self, split: str, x: np.ndarray, views: list[training.View] | None) -> np.ndarray:
        """The teacher's logits on `x` (the images of `split`), (samples, classes); with views
        (views, samples, classes)."""
        if not self.intermediate:
            out = self.ctx.teacher_view_outputs(split, views or [(False, 0)])
            return out if views else out[0]
        if views:
            return np.stack([self._batched(training.apply_view(x, v)) for v in views])
        return self._batched(x)

    def online_function(self) -> Any:
        """The teacher as a graph function x -> logits, run inside the training steps."""
        from edgekit.stages.online import teacher_function

        loaded = load(self.ctx, self.model)
        index = class_output_of(self.ctx, loaded)
        sample = np.asarray(self.ctx.x("val", 8), np.float32)
        probabilities = are_probabilities(first_output(loaded.predict(sample), index))
        return teacher_function(loaded, index, probabilities)

    def _batched(self, x: Any) -> np.ndarray:
        """logits_of over `x` 256 images at a time (a stream is decoded a batch at a time)."""
        if len(x) == 0:
            return self.logits_of(x)
        return np.concatenate([self.logits_of(x[i : i + 256]) for i in range(0, len(x), 256)])


@dataclass
class AugmentPlan:
    """What the distill stage trains with, once the images and the teacher were looked at."""

    requested: Augment  # the recipe's augment settings
    config: DistillConfig  # the stage's config with what the images allow (rot90 off if not square)
    flip: str
    rot90: bool
    views: list[training.View] | None  # teacher run on every view: the views, else None
    dropped: list[str] = field(default_factory=list)
    teacher_agreement: dict[str, float] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        return {
            "requested": self.requested.model_dump(),
            "used": {"flip": self.flip, "rot90": self.rot90},
            "teacher_views": len(self.views) if self.views else None,
            "dropped": self.dropped,
            "teacher_agreement": self.teacher_agreement,
        }


def plan_augmentation(
    config: DistillConfig,
    teacher: _Teacher,
    shape: tuple[int, ...],
    x_val: np.ndarray,
    online: bool = False,
) -> AugmentPlan:
    """Decide the augmentation: quarter turns of non-square images dropped (or an error with
    strict); then, when the teacher can be run, its agreement with itself on augmented validation
    images decides between reusing its logits (invariant), running it on every view
    (`teacher_views`) or dropping what it is not invariant to (or an error with strict).
    `teacher` gives `can_run`, `logits_of(x)` and `val_logits(x_val)`. An `online` teacher
    sees every augmented image itself: nothing to measure, nothing dropped for it."""
    # Quarter turns of non-square images: dropped (or an error with strict) for what they are,
    # before any teacher is measured, not reported as a teacher that is not invariant to them.
    requested = aug = config.augment
    not_square: list[str] = []
    problem = rot90_shape_problem(shape) if requested.rot90 else None
    if problem and requested.strict:
        raise DataError(f"{problem}. Set --set distill.augment.rot90=false.")
    if problem:
        ui.info(f"warning: {problem}: training without quarter turns.")
        aug, not_square = requested.model_copy(update={"rot90": False}), ["rot90"]
    config = config.model_copy(update={"augment": aug})
    plan = AugmentPlan(requested, config, aug.flip, aug.rot90, None)
    if online:
        strong = f", crops >= {aug.crop:g} of the area" if aug.crop < 1 else ""
        strong += f", mixup {aug.mixup:g}" if aug.mixup > 0 else ""
        ui.info(
            "distill: online teacher: it runs in every training step on the augmented batch "
            f"the student sees (flip {aug.flip}, rot90 {str(aug.rot90).lower()}{strong})"
        )
    elif aug.enabled and teacher.can_run:
        t_val = teacher.val_logits(x_val)
        plan.teacher_agreement = teacher_consistency(config, teacher.logits_of, x_val, t_val)
        figures = ", ".join(f"{n} {100 * a:.1f}%" for n, a in plan.teacher_agreement.items())
        ui.info(f"distill: teacher agreement with itself on augmented validation images: {figures}")
        kept_flip, kept_rot90, not_invariant = kept_augmentation(aug, plan.teacher_agreement)
        if aug.teacher_views is True or (aug.teacher_views == "auto" and not_invariant):
            plan.views = training.augment_views(plan.flip, plan.rot90)
            why = (
                f"it is not invariant to {', '.join(not_invariant)}"
                if not_invariant
                else "distill.augment.teacher_views=true"
            )
            ui.info(
                f"distill: running the teacher on {len(plan.views)} views of each training image "
                f"({why}), so that every augmented image is taught the teacher's answer on it"
            )
        else:
            plan.flip, plan.rot90 = kept_flip, kept_rot90
            if not_invariant:
                _drop_not_invariant(aug, not_invariant)
            plan.dropped = not_invariant
    plan.dropped = not_square + plan.dropped
    return plan


def _drop_not_invariant(aug: Augment, dropped: list[str]) -> None:
    """Say that the augmentations the teacher is not invariant to are dropped (strict: stop)."""
    message = (
        f"The teacher is not invariant to {', '.join(dropped)} (agreement below "
        f"{100 * aug.min_teacher_agreement:.0f}%), so its logits on the original images "
        "would teach wrong targets for those views"
    )
    if aug.strict:
        raise DataError(
            f"{message}. Turn them off (distill.augment.flip / distill.augment.rot90), set "
            "distill.augment.teacher_views=auto to run the teacher on every view, or set "
            "distill.augment.strict=false to drop them automatically."
        )
    ui.info(f"warning: {message}: training without them.")


@dataclass
class DistillResult:
    model: Any  # tf_keras student, best weights restored
    history: dict[str, list[float]]
    best_epoch: int
    epochs_run: int
    distribution: dict[str, Any] | None = None  # strategy, replicas, devices, workers
    precision: str = "float32"  # the dtype policy it trained under (the model is float32)


def pack_targets(y: np.ndarray | None, teacher_logits: np.ndarray) -> np.ndarray:
    """[one-hot labels (zeros when unlabeled) | teacher logits] as one float32 array. A label of
    -1 marks one unlabeled sample among labelled ones. Logits of shape (views, samples, classes)
    are laid out view after view: [labels | view 0 | view 1 ...]."""
    k = teacher_logits.shape[-1]
    logits = np.asarray(teacher_logits, np.float32)
    if logits.ndim == 3:
        logits = np.concatenate(list(logits), axis=1)
    return np.concatenate([pack_labels(y, logits.shape[0], k), logits], axis=1)


def pack_labels(y: np.ndarray | None, samples: int, classes: int) -> np.ndarray:
    """One-hot rows of the labels (all zero for a label of -1, or everywhere when `y` is None):
    the targets of online distillation, whose teacher half the training step appends."""
    onehot = np.zeros((samples, classes), np.float32)
    if y is not None:
        y = np.asarray(y, np.int64)
        rows = np.flatnonzero(y >= 0)
        onehot[rows, y[rows]] = 1.0
    return onehot


def distillation_loss(num_classes: int, alpha: float, temperature: float):
    import tensorflow as tf

    k, t = num_classes, float(temperature)

    def loss(y_true, y_pred):
        onehot, teacher = y_true[:, :k], y_true[:, k:]
        kl = tf.reduce_sum(
            tf.nn.softmax(teacher / t)
            * (tf.nn.log_softmax(teacher / t) - tf.nn.log_softmax(y_pred / t)),
            axis=-1,
        )
        total = (1.0 - alpha) * t * t * kl
        if alpha > 0:
            # Written out rather than tf.nn.softmax_cross_entropy_with_logits: that op's gradient
            # is softmax - labels, which assumes labels sum to 1, so an unlabeled row (all-zero
            # one-hot) would still push its predicted class down. Here such a row adds nothing.
            total -= alpha * tf.reduce_sum(onehot * tf.nn.log_softmax(y_pred), axis=-1)
        return total

    return loss


def _metrics(num_classes: int, labeled: bool, teacher: bool = True) -> list[Any]:
    import tensorflow as tf

    k = num_classes

    def accuracy(y_true, y_pred):
        # Over the labelled rows only (unlabeled ones have an all-zero one-hot): per-sample
        # values whose batch mean is the accuracy of the batch's labelled rows.
        onehot = y_true[:, :k]
        has_label = tf.reduce_sum(onehot, -1)
        correct = tf.cast(tf.equal(tf.argmax(onehot, -1), tf.argmax(y_pred, -1)), tf.float32)
        scale = tf.cast(tf.shape(has_label)[0], tf.float32) / tf.maximum(
            tf.reduce_sum(has_label), 1.0
        )
        return correct * has_label * scale

    def agreement(y_true, y_pred):
        return tf.cast(tf.equal(tf.argmax(y_true[:, k:], -1), tf.argmax(y_pred, -1)), tf.float32)

    return [accuracy] * labeled + [agreement] * teacher


def _view(x: np.ndarray, name: str, start: int = 0) -> np.ndarray | None:
    """One transformed copy of every image (quarter turns cycle 90/180/270 by the image's index,
    `start` being the index of x[0]); None for quarter turns of non-square images."""
    if name == "flip_horizontal":
        return training.apply_view(x, (True, 0))
    if name == "flip_vertical":
        return training.apply_view(x, (True, 2))
    if x.shape[1] != x.shape[2]:
        return None
    return np.stack([np.rot90(img, 1 + (start + i) % 3) for i, img in enumerate(x)])


def rot90_shape_problem(shape: tuple[int, ...]) -> str | None:
    """Why quarter turns cannot apply to (N, H, W, C) images of this shape, or None."""
    if shape[1] != shape[2]:
        return f"distill.augment.rot90 needs square images; these are {shape[1]}x{shape[2]}"
    return None


def wanted_views(aug: Any) -> list[str]:
    names = []
    if aug.flip in ("horizontal", "both"):
        names.append("flip_horizontal")
    if aug.flip in ("vertical", "both"):
        names.append("flip_vertical")
    if aug.rot90:
        names.append("rot90")
    return names


def teacher_consistency(
    config: DistillConfig, predict: Any, x: np.ndarray, teacher_logits: np.ndarray
) -> dict[str, float]:
    """Per augmentation the recipe asks for, the teacher's top-1 agreement on `x` with itself on
    the transformed images. Reusing cached logits for augmented views is sound only where this is
    close to 1."""
    names = wanted_views(config.augment)
    if not names or len(x) == 0:
        return {}
    ref = np.asarray(teacher_logits).argmax(-1)
    agreement = {}
    for n in names:
        if n == "rot90" and x.shape[1] != x.shape[2]:
            continue
        pred = np.concatenate(
            [  # 256 images at a time: a streamed x is decoded a batch at a time
                np.asarray(predict(np.ascontiguousarray(_view(x[i : i + 256], n, i)))).argmax(-1)
                for i in range(0, len(x), 256)
            ]
        )
        agreement[n] = float(np.mean(pred == ref))
    return agreement


def kept_augmentation(aug: Any, consistency: dict[str, float]) -> tuple[str, bool, list[str]]:
    """(flip, rot90) keeping only the augmentations the teacher agrees with itself on, and the
    names of those dropped."""
    ok = {n for n, a in consistency.items() if a >= aug.min_teacher_agreement}
    dropped = [n for n in wanted_views(aug) if n not in ok]
    h, v = "flip_horizontal" in ok, "flip_vertical" in ok
    flip = "both" if h and v else "horizontal" if h else "vertical" if v else "none"
    return flip, "rot90" in ok, dropped


def distill(
    config: DistillConfig,
    x_train: np.ndarray,
    teacher_train: np.ndarray | None,
    y_train: np.ndarray | None = None,
    *,
    x_val: np.ndarray | None = None,
    teacher_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    seed: int = 0,
    augment: tuple[str, bool] | None = None,
    teacher_views: list[training.View] | None = None,
    num_classes: int | None = None,
    online_teacher: Any = None,
    checkpoint_dir: Path | None = None,
) -> DistillResult:
    """Train a fresh student on (x, teacher logits[, labels]); best validation weights restored.

    `augment` = (flip, rot90) overrides the recipe's augmentation (the stage passes what survived
    the teacher-consistency check). With `teacher_views` (the views
    `training.augment_views(flip, rot90)` gives, in that order) `teacher_train` holds the
    teacher's logits on each view, shape (views, samples, classes), and every augmented image is
    taught the logits of the view it drew.

    With `teacher_train=None` the same student trains on labels alone (the from-scratch
    baseline): that needs alpha = 1, labels and `num_classes`, and no agreement is reported.

    With `online_teacher` (a graph function x -> logits, `online.teacher_function`) and no
    `teacher_train`, the teacher runs in every training step on the augmented batch (the
    strong augmentations `augment.crop` and `augment.mixup` allowed); `teacher_val` (its logits
    on the unaugmented validation images) or `num_classes` gives the classes.

    With `checkpoint_dir` the training keeps a checkpoint per epoch there and, started again
    after a kill, resumes after the last finished epoch (`checkpoints`)."""
    online = online_teacher is not None
    if online and teacher_train is not None:
        raise UsageError("Pass teacher_train (cached logits) or online_teacher, not both.")
    with_teacher = teacher_train is not None or online
    if not with_teacher:
        teacher_train, teacher_val = _labels_only_targets(
            config, x_train, y_train, x_val, y_val, num_classes
        )
    if config.alpha > 0 and y_train is None:
        raise DataError(
            f"Distillation with alpha={config.alpha} needs labels but the data are unlabeled. "
            "Set --set distill.alpha=0 to learn from the teacher alone."
        )
    labeled = y_train is not None
    if online:
        num_classes = int(teacher_val.shape[-1]) if teacher_val is not None else num_classes
        if not num_classes:
            raise UsageError("Online distillation needs teacher_val or num_classes.")
    else:
        num_classes = int(teacher_train.shape[-1])
    flip, rot90 = augment if augment is not None else (config.augment.flip, config.augment.rot90)
    problem = rot90_shape_problem(x_train.shape) if rot90 else None
    if problem:
        raise DataError(f"{problem}. Set --set distill.augment.rot90=false.")
    if online:
        aug = config.augment
        base = training.augmenter(flip, rot90, seed=seed)
        augmenter = strong_augmenter(base, crop=aug.crop, mixup=aug.mixup, seed=seed)
    else:
        augmenter = _augmenter(
            config, flip, rot90, teacher_views, teacher_train, len(x_train), seed
        )
    dist = plan_distribution(config.distribute, config.devices)
    precision = resolve_precision(config.precision)
    mixed = "; mixed precision (float16 compute, float32 weights)" if precision != "float32" else ""
    ui.info(dist.describe() + mixed)
    shape = tuple(x_train.shape[1:])
    has_val = x_val is not None and teacher_val is not None and len(x_val) > 0
    callbacks = []
    if config.early_stopping.enabled and has_val:
        callbacks.append(_early_stopping(config, labeled and y_val is not None))
    with precision_policy(precision), dist.scope():
        student = build_student(config.student, shape, num_classes, seed=seed)
        opt = config.optimizer
        history = training.fit(
            student,
            x_train,
            pack_labels(y_train, len(x_train), num_classes)
            if online
            else pack_targets(y_train, teacher_train),
            x_val=x_val if has_val else None,
            y_val=pack_targets(y_val if labeled else None, teacher_val) if has_val else None,
            epochs=config.epochs,
            batch_size=dist.global_batch(config.batch_size),
            optimizer=opt.name,
            learning_rate=dist.scaled_learning_rate(opt.learning_rate),
            schedule=opt.schedule,
            weight_decay=opt.weight_decay,
            loss=distillation_loss(num_classes, config.alpha, config.temperature),
            metrics=_metrics(num_classes, labeled, teacher=with_teacher),
            callbacks=callbacks,
            seed=seed,
            description="distill",
            augment=augmenter,
            steps_per_execution=STEPS_PER_EXECUTION,
            teacher=online_teacher,
            checkpoint_dir=checkpoint_dir,
        )
    epochs_run = len(next(iter(history.values()))) if history else 0
    # EarlyStopping restores the best weights at the end of training, stopped early or not.
    best_epoch = int(callbacks[0].best_epoch) + 1 if callbacks else epochs_run
    return DistillResult(
        model=_in_float32(student, config, shape, num_classes, seed),
        history=history,
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        distribution=dist.record(),
        precision=student.dtype_policy.name,
    )


def _in_float32(student: Any, config: DistillConfig, shape: tuple, classes: int, seed: int) -> Any:
    """The student computing in float32: itself, or (trained under mixed_float16, whose weights
    are float32 already) the same network built in float32 with its weights."""
    if student.dtype_policy.name == "float32":
        return student
    float32 = build_student(config.student, shape, classes, seed=seed)
    float32.set_weights(student.get_weights())
    return float32


def _labels_only_targets(
    config: DistillConfig,
    x_train: np.ndarray,
    y_train: np.ndarray | None,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    num_classes: int | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Zero teacher logits for training without a teacher (train, val), once the settings that
    needs are checked: alpha = 1, labels (for x_val too) and num_classes."""
    no_val_labels = x_val is not None and y_val is None
    if config.alpha != 1.0 or y_train is None or not num_classes or no_val_labels:
        raise UsageError(
            "Training without teacher logits is labels-only: it needs alpha=1, labels (for "
            f"x_val too) and num_classes. Received alpha={config.alpha}, "
            f"labels={'none' if y_train is None else len(y_train)}, "
            f"val labels={'none' if no_val_labels else 'given or no x_val'}, "
            f"num_classes={num_classes}."
        )
    teacher_val = None if x_val is None else np.zeros((len(x_val), num_classes), np.float32)
    return np.zeros((len(x_train), num_classes), np.float32), teacher_val


def _augmenter(
    config: DistillConfig,
    flip: str,
    rot90: bool,
    teacher_views: list[training.View] | None,
    teacher_train: np.ndarray,
    samples: int,
    seed: int,
) -> Any:
    """The training-time augmentation with cached teacher logits: random views of the images,
    each taught the teacher's logits on that view when `teacher_views` are given (checked
    against `teacher_train`). Crops and mixup are refused: cached logits cannot follow them."""
    if config.augment.strong:
        raise UsageError(
            "distill.augment.crop and augment.mixup need the online teacher (cached logits are "
            "of the uncropped, unmixed images): pass online_teacher, or turn them off."
        )
    if teacher_views is None:
        return training.augmenter(flip, rot90, seed=seed)
    expected = training.augment_views(flip, rot90)
    if list(teacher_views) != expected or teacher_train.shape[:2] != (len(expected), samples):
        raise UsageError(
            f"teacher_train must hold the teacher's logits on the views {expected} "
            f"(shape ({len(expected)}, {samples}, classes)); got views "
            f"{list(teacher_views)} and shape {teacher_train.shape}"
        )
    return training.view_augmenter(expected, int(teacher_train.shape[-1]), seed=seed)


def _early_stopping(config: DistillConfig, val_labels: bool) -> Any:
    """Keras' EarlyStopping on the recipe's figure (the agreement with the teacher when the
    validation images have no labels), restoring the best epoch's weights."""
    from edgekit.keras_compat import tf_keras

    monitor = config.early_stopping.monitor
    if monitor == "val_accuracy" and not val_labels:
        monitor = "val_agreement"
    return tf_keras().callbacks.EarlyStopping(
        monitor=monitor,
        mode="min" if monitor == "val_loss" else "max",
        patience=config.early_stopping.patience,
        restore_best_weights=True,
    )
