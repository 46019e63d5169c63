"""The built-in stages: distill, prune, qat, export (float), quantize (post-training).

Each is a thin adapter between a recipe config and the library functions that do the work
(edgekit.stages.distill / prune / qat, edgekit.export.*). Exports are verified inside the stage
that makes them: a stage that exported an unverified model has failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit import ui
from edgekit.artifacts import ModelArtifact
from edgekit.errors import DataError, UnsupportedModelError
from edgekit.pipeline import as_logits, first_output, teacher_view_outputs
from edgekit.stages.base import Stage, StageOutput, register

if TYPE_CHECKING:
    from edgekit.pipeline import RunContext


def _load(ctx: RunContext, model: ModelArtifact) -> Any:
    from edgekit.keras_compat import load_model

    if model.format in ("tflite", "onnx"):
        raise UnsupportedModelError(
            f"Stage needs a Keras model or SavedModel; received a .{model.format} file ({model.path}). "
            "Start from the Keras model that produced it."
        )
    if model.precision == "qat":
        from edgekit.stages.qat import load_qat_model

        return load_qat_model(model.path)
    return load_model(model.path, unsafe=ctx.unsafe)


def _as_tf_keras(ctx: RunContext, model: ModelArtifact) -> tuple[Any, dict[str, Any]]:
    """The model as a tf_keras model for the tfmot stages (Keras 3 bridged, outputs checked)."""
    from edgekit.keras_compat import to_tf_keras

    loaded = _load(ctx, model)
    if loaded.flavor == "savedmodel":
        raise UnsupportedModelError(
            f"{model.path} is a plain TensorFlow SavedModel without Keras layers; pruning and QAT need the "
            "Keras model (.keras or .h5). Export it from Keras, or use the 'quantize' recipe instead."
        )
    if len(loaded.output_names) > 1:
        # Checked before any training: the fine-tuning loop trains one class output.
        raise UnsupportedModelError(
            f"{Path(model.path).name} has {len(loaded.output_names)} outputs "
            f"({', '.join(loaded.output_names)}); pruning and QAT fine-tune one class output and "
            "cannot train the others. Use the quantize recipe (post-training, every output "
            "verified), or prune a single-output version of the model."
        )
    if loaded.flavor == "tf_keras":
        return loaded.model, {"bridge": "not needed (tf-keras model)"}
    result = to_tf_keras(loaded, ctx.x("val", 16))
    ui.info(f"Keras 3 -> tf-keras bridge: outputs match, max abs diff {result.max_abs_diff:.2e}")
    return result.model, {"bridge_max_abs_diff": float(result.max_abs_diff)}


def _base_name(model: ModelArtifact) -> str:
    stem = Path(model.path).stem
    return stem if stem not in ("part", "") else "model"


def _save_keras(model: Any, path: Path, **metadata: Any) -> ModelArtifact:
    from edgekit.keras_compat import save_model

    save_model(model, path)
    return ModelArtifact.from_path(path, **metadata)


@register
class DistillStageRunner(Stage):
    name = "distill"

    def run(self, ctx: RunContext, model: ModelArtifact, workdir: Path) -> StageOutput:
        from edgekit.stages.distill import (
            distill,
            kept_augmentation,
            rot90_shape_problem,
            teacher_consistency,
        )
        from edgekit.stages.training import apply_view, augment_views

        x_train, x_val = ctx.x("train"), ctx.x("val")
        # Quarter turns of non-square images: dropped (or an error with strict) for what they are,
        # before any teacher is measured, not reported as a teacher that is not invariant to them.
        requested = aug = self.config.augment
        not_square: list[str] = []
        problem = rot90_shape_problem(x_train.shape) if requested.rot90 else None
        if problem and requested.strict:
            raise DataError(f"{problem}. Set --set distill.augment.rot90=false.")
        if problem:
            ui.info(f"warning: {problem}: training without quarter turns.")
            aug, not_square = requested.model_copy(update={"rot90": False}), ["rot90"]
        config = self.config.model_copy(update={"augment": aug})
        # distilling from an intermediate model: run it once per sample as the teacher
        intermediate = model.sha256 != ctx.teacher.sha256
        predict = _load(ctx, model).predict if intermediate else ctx.predict_teacher

        def logits_of(x: np.ndarray) -> np.ndarray:
            return as_logits(first_output(predict(x)))

        t_val = logits_of(x_val) if intermediate else ctx.teacher_outputs["val"]
        consistency: dict[str, float] = {}
        flip, rot90, dropped = aug.flip, aug.rot90, []
        views = None
        if aug.enabled and predict is not None:
            consistency = teacher_consistency(config, logits_of, x_val, t_val)
            figures = ", ".join(f"{n} {100 * a:.1f}%" for n, a in consistency.items())
            ui.info(
                f"distill: teacher agreement with itself on augmented validation images: {figures}"
            )
            kept_flip, kept_rot90, not_invariant = kept_augmentation(aug, consistency)
            if aug.teacher_views is True or (aug.teacher_views == "auto" and not_invariant):
                views = augment_views(flip, rot90)
                why = (
                    f"it is not invariant to {', '.join(not_invariant)}"
                    if not_invariant
                    else "distill.augment.teacher_views=true"
                )
                ui.info(
                    f"distill: running the teacher on {len(views)} views of each training image "
                    f"({why}), so that every augmented image is taught the teacher's answer on it"
                )
            else:
                flip, rot90, dropped = kept_flip, kept_rot90, not_invariant
        if dropped:
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

        def teacher_logits(split: str, x: np.ndarray) -> np.ndarray:
            """The teacher's logits on `x` (the images of `split`), (samples, classes); with
            views (views, samples, classes). The bundled teacher's are cached in OUT/cache."""
            if not intermediate:
                out = teacher_view_outputs(ctx, split, views or [(False, 0)])
                return out if views else out[0]
            if views:
                return np.stack([logits_of(apply_view(x, v)) for v in views])
            return logits_of(x)

        t_train = teacher_logits("train", x_train)
        y_train = ctx.y("train") if config.alpha > 0 else None
        pool = ctx.splits.get("unlabeled") if config.use_unlabeled else None
        n_pool = len(pool) if pool is not None and predict is not None else 0
        if n_pool:
            ui.info(
                f"distill: {n_pool} unlabeled images ({ctx.unlabeled_source}) join the {len(x_train)} "
                "labelled ones, taught by the teacher's outputs alone"
            )
            x_pool = ctx.x("unlabeled")
            t_train = np.concatenate([t_train, teacher_logits("unlabeled", x_pool)], axis=-2)
            x_train = np.concatenate([x_train, x_pool])
            if y_train is not None:
                y_train = np.concatenate(
                    [np.asarray(y_train, np.int64), np.full(n_pool, -1, np.int64)]
                )
        result = distill(
            config,
            x_train,
            t_train,
            y_train,
            x_val=x_val,
            teacher_val=t_val,
            y_val=ctx.y("val"),
            seed=ctx.recipe.seed,
            augment=(flip, rot90),
            teacher_views=views,
        )
        art = _save_keras(
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
                "unlabeled_samples": n_pool,
                "augment": {
                    "requested": requested.model_dump(),
                    "used": {"flip": flip, "rot90": rot90},
                    "teacher_views": len(views) if views else None,
                    "dropped": not_square + dropped,
                    "teacher_agreement": consistency,
                }
                if requested.enabled
                else None,
                "history": result.history,
            },
        )


@register
class PruneStageRunner(Stage):
    name = "prune"

    def run(self, ctx: RunContext, model: ModelArtifact, workdir: Path) -> StageOutput:
        from edgekit.stages.prune import prune

        tfk_model, bridge = _as_tf_keras(ctx, model)
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
        )
        art = _save_keras(
            result.model,
            workdir / f"{_base_name(model)}_pruned.keras",
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
            },
        )


@register
class QatStageRunner(Stage):
    name = "qat"

    def run(self, ctx: RunContext, model: ModelArtifact, workdir: Path) -> StageOutput:
        from edgekit.stages.qat import qat, save_qat_model

        tfk_model, bridge = _as_tf_keras(ctx, model)
        c = self.config
        result = qat(
            tfk_model,
            ctx.x("train"),
            ctx.y("train"),
            x_val=ctx.x("val"),
            y_val=ctx.y("val"),
            epochs=c.epochs,
            batch_size=c.batch_size,
            learning_rate=c.learning_rate,
            seed=ctx.recipe.seed,
        )
        path = (
            workdir / f"{_base_name(model)}_qat.h5"
        )  # tfmot's quantize layers do not reload from .keras
        save_qat_model(result.model, path)
        for u in result.unsupported_layers:
            ui.info(
                f"qat: layer {u['layer']} ({u['class']}) is not supported by tfmot; {u['fallback']}"
            )
        art = ModelArtifact.from_path(
            path, precision="qat", parameters=int(tfk_model.count_params())
        )
        return StageOutput(
            model=art,
            report={
                **bridge,
                "annotated_layers": len(result.annotated_layers),
                "unsupported_layers": result.unsupported_layers,
                "history": result.history,
            },
        )


def _float_problem(e: Exception, float_onnx: Path | None) -> bool:
    """True when a quantize-stage failure is not the mode's: the float ONNX model it starts from
    could not be made (then every ONNX mode fails alike and the error stands)."""
    return float_onnx is not None and not float_onnx.exists()


def _verify_samples(ctx: RunContext) -> tuple[np.ndarray, np.ndarray | None]:
    n = ctx.recipe.verify.samples
    return ctx.x("eval", n), ctx.y("eval", n)


def _export_record(
    path: Path,
    info: dict[str, Any],
    verification: dict[str, Any],
    source: ModelArtifact,
    precision: str,
) -> ModelArtifact:
    return ModelArtifact.from_path(
        path,
        precision=precision,
        parameters=source.metadata.get("parameters"),
        source=Path(source.path).name,
        # the check ran in the stage's partial folder: name the file, not that path
        verification={**verification, "artifact": path.name},
        conversion={k: v for k, v in info.items() if k not in ("path",)},
    )


@register
class ExportStageRunner(Stage):
    name = "export"

    def run(self, ctx: RunContext, model: ModelArtifact, workdir: Path) -> StageOutput:
        from edgekit.export.convert import convert_one, verify_one

        loaded = _load(ctx, model)
        x, y = _verify_samples(ctx)
        ref = loaded.predict(x)  # every output: each one is compared
        base = _base_name(model)
        qat = model.precision == "qat"
        exports = []
        for fmt in self.config.formats:
            if fmt == "tflite":
                path = workdir / f"{base}_{'qat_int8' if qat else 'float32'}.tflite"
            else:
                path = workdir / f"{base}_{'qat_fakequant' if qat else 'float32'}.onnx"
            info, precision = convert_one(
                loaded,
                fmt,
                "qat" if qat else "none",
                path,
                opset=self.config.opset if fmt == "onnx" else None,
                allow_select_tf_ops=self.config.allow_select_tf_ops,
            )
            ui.info(f"export: verifying {path.name} against the Keras model on {len(x)} samples")
            verification = verify_one(
                path,
                ref,
                x,
                y,
                precision=precision,
                verify=ctx.recipe.verify,
                labels=ctx.labels,
                # This LiteRT build has no Flex delegate: Select TF exports are marked unverified.
                unverifiable="skip" if self.config.allow_select_tf_ops else "raise",
                loaded=loaded,
            )
            exports.append(_export_record(path, info, verification, model, precision))
        return StageOutput(
            exports=exports, report={"exports": [Path(a.path).name for a in exports]}
        )


@register
class QuantizeStageRunner(Stage):
    name = "quantize"

    def run(self, ctx: RunContext, model: ModelArtifact, workdir: Path) -> StageOutput:
        from edgekit.errors import KernelPrepareError
        from edgekit.export.convert import ONNX_MODES, convert_one, verify_one

        c = self.config
        loaded = _load(ctx, model)
        x, y = _verify_samples(ctx)
        ref = loaded.predict(x)  # every output: each one is compared
        calib = ctx.x("calib", c.calibration_samples)
        base = _base_name(model)
        exports, notes, dropped = [], [], []
        float_onnx = workdir / ".float_for_quantization.onnx"
        for mode in c.modes:
            for fmt in c.formats:
                if fmt == "onnx" and mode not in ONNX_MODES:
                    notes.append(
                        f"onnx {mode}: not produced (ONNX gets int8 and dynamic; use TFLite for {mode})"
                    )
                    continue
                path = workdir / f"{base}_{mode}.{fmt}"
                try:
                    info, precision = convert_one(
                        loaded,
                        fmt,
                        mode,
                        path,
                        calibration=calib,
                        calibration_samples=c.calibration_samples,
                        io_type=c.io_type,
                        per_channel=c.per_channel,
                        reduce_range=c.onnx_reduce_range,
                        float_onnx=float_onnx,
                    )
                    ui.info(
                        f"quantize: verifying {path.name} against the Keras model on {len(x)} samples"
                    )
                    verification = verify_one(
                        path,
                        ref,
                        x,
                        y,
                        precision=precision,
                        verify=ctx.recipe.verify,
                        labels=ctx.labels,
                        loaded=loaded,
                    )
                except (KernelPrepareError, UnsupportedModelError) as e:
                    if _float_problem(e, float_onnx if fmt == "onnx" else None):
                        raise
                    # This mode cannot represent a layer of this model (no kernel for it, or no
                    # quantized conversion): the other modes still go on.
                    path.unlink(missing_ok=True)
                    layer = getattr(e, "layer", "") or ""
                    dropped.append({"mode": mode, "format": fmt, "layer": layer, "reason": str(e)})
                    ui.info(f"quantize: dropped {fmt} {mode}: {e}")
                    continue
                exports.append(_export_record(path, info, verification, model, precision))
        float_onnx.unlink(missing_ok=True)
        for n in notes:
            ui.info(f"quantize: {n}")
        if not exports:
            reasons = "; ".join(f"{d['format']} {d['mode']}: {d['reason']}" for d in dropped)
            raise UnsupportedModelError(
                f"quantize: no mode could represent this model ({reasons}). Export it in float "
                "(the export stage) or try other modes."
            )
        return StageOutput(
            exports=exports,
            report={
                "exports": [Path(a.path).name for a in exports],
                "notes": notes,
                "dropped": dropped,
            },
        )
