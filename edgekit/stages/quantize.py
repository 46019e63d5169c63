"""The quantize stage: post-training quantization of the current model into TFLite (every mode)
and ONNX (int8 and dynamic), each export verified against the model.

A mode that cannot represent a layer of the model (no kernel for it, or no quantized conversion)
is dropped with the reason in the stage's report; the other modes go on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from edgekit import ui
from edgekit.artifacts import ModelArtifact
from edgekit.errors import KernelPrepareError, UnsupportedModelError
from edgekit.export.convert import ONNX_MODES, convert_one, verify_one
from edgekit.stages.base import Stage, StageConfig, StageOutput, register
from edgekit.stages.model_io import base_name, class_output_of, export_record, load, verify_samples

if TYPE_CHECKING:
    from edgekit.stages.context import RunContext

QuantMode = Literal["dynamic", "float16", "int8", "int16x8"]


class QuantizeConfig(StageConfig):
    """Post-training quantization of the current model into TFLite (and ONNX for int8/dynamic)."""

    stage: Literal["quantize"] = "quantize"
    modes: list[QuantMode] = Field(
        default_factory=lambda: ["int8"],
        min_length=1,
        description="Quantization modes, each exported and verified (ONNX: int8 and dynamic).",
    )
    formats: list[Literal["tflite", "onnx"]] = Field(
        default_factory=lambda: ["tflite", "onnx"],
        min_length=1,
        description="Formats each mode is exported to.",
    )
    calibration_samples: int = Field(300, ge=1, description="Samples from the calib split.")
    per_channel: bool = Field(True, description="Per-channel weight scales (int8).")
    io_type: Literal["float32", "int8", "uint8"] = Field(
        "float32", description="Input/output type of full-integer TFLite models."
    )
    onnx_reduce_range: bool = Field(
        True,
        description="7-bit weights in ONNX int8: avoids U8S8 saturation on AVX2/AVX-512 without VNNI.",
    )


@register
class Quantize(Stage):
    """Post-training quantization of the current model, each mode and format verified."""

    name = "quantize"
    config_type = QuantizeConfig
    position = 40

    def run(self, ctx: RunContext, model: ModelArtifact, workdir: Path) -> StageOutput:
        c = self.config
        loaded = load(ctx, model)
        x, y = verify_samples(ctx)
        ref = loaded.predict(x)  # every output: each one is compared
        calib = ctx.x("calib", c.calibration_samples)
        base = base_name(model)
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
                        class_output=class_output_of(ctx, loaded),
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
                exports.append(export_record(path, info, verification, model, precision))
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


def _float_problem(e: Exception, float_onnx: Path | None) -> bool:
    """True when a quantize-stage failure is not the mode's: the float ONNX model it starts from
    could not be made (then every ONNX mode fails alike and the error stands)."""
    return float_onnx is not None and not float_onnx.exists()
