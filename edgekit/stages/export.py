"""The export stage: float exports of the current model to TFLite and ONNX, each verified against it.

A QAT model (the qat stage's output) exports as int8 TFLite and as ONNX with its fake-quant graph.
Verification runs each export in LiteRT / ONNX Runtime through `edgekit.export.validate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from edgekit import ui
from edgekit.artifacts import ModelArtifact
from edgekit.export.convert import convert_one, verify_one
from edgekit.stages.base import Stage, StageConfig, StageOutput, register
from edgekit.stages.model_io import base_name, class_output_of, export_record, load, verify_samples

if TYPE_CHECKING:
    from edgekit.stages.context import RunContext


class ExportConfig(StageConfig):
    """Float exports of the current model, each verified against it."""

    stage: Literal["export"] = "export"
    formats: list[Literal["tflite", "onnx"]] = Field(
        default_factory=lambda: ["tflite", "onnx"],
        min_length=1,
        description="Formats to export to, each verified.",
    )
    opset: int = Field(17, ge=13, le=21, description="ONNX opset of the ONNX export.")
    allow_select_tf_ops: bool = Field(
        False,
        description="Allow TensorFlow (Flex) ops in TFLite; such models fail on stock Android LiteRT.",
    )


@register
class Export(Stage):
    """Float exports of the current model (a QAT model: int8 TFLite), each verified."""

    name = "export"
    config_type = ExportConfig
    position = 50

    def run(self, ctx: RunContext, model: ModelArtifact, workdir: Path) -> StageOutput:
        loaded = load(ctx, model)
        x, y = verify_samples(ctx)
        ref = loaded.predict(x)  # every output: each one is compared
        base = base_name(model)
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
                class_output=class_output_of(ctx, loaded),
            )
            exports.append(export_record(path, info, verification, model, precision))
        return StageOutput(
            exports=exports, report={"exports": [Path(a.path).name for a in exports]}
        )
