"""Student networks for distillation: tf_keras Applications MobileNets, built flat.

The student takes the teacher's input (pixels after edgekit's preprocessing; RGB or grey: a grey
student's first convolution has one input channel), resizes inside the model when its input size
differs, and outputs logits. Applications are built on a tensor
(`input_tensor=`) rather than nested as a sub-model, so tfmot's prune and QAT wrappers reach every
layer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgekit.errors import UsageError
from edgekit.schema import Strict


class StudentConfig(Strict):
    """The student network of the distill stage (`distill.student` in a recipe)."""

    arch: Literal["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"] = Field(
        "mobilenet_v2", description="Keras Applications architecture of the student."
    )
    width: float = Field(0.35, gt=0, description="Width multiplier (Keras Applications' `alpha`).")
    input_size: int | None = Field(
        None,
        description="Square input side in pixels; None keeps the teacher's. Resized inside the model.",
    )
    minimalistic: bool = Field(
        False,
        description="MobileNetV3 only: the 'minimalistic' variant (ReLU instead of hard-swish, no "
        "squeeze-excite, 3x3 kernels only). Much faster in int8 on CPUs and edge accelerators.",
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout rate before the logits layer.")
    bn_momentum: float = Field(
        0.99,
        gt=0,
        lt=1,
        description="Batch-norm moving-average momentum. Keras Applications use 0.999, tuned for "
        "ImageNet-length training: over a short distillation the moving statistics would stay near "
        "their initial values and inference-mode accuracy would lag far behind training.",
    )

    @field_validator("input_size")
    @classmethod
    def _min_size(cls, v: int | None) -> int | None:
        if v is not None and v < 32:
            raise ValueError(
                f"MobileNet students need an input of at least 32 pixels. Received: input_size={v}"
            )
        return v

    @model_validator(mode="after")
    def _minimalistic_v3(self) -> StudentConfig:
        if self.minimalistic and self.arch == "mobilenet_v2":
            raise ValueError(
                "minimalistic applies to MobileNetV3 students only. Received: arch=mobilenet_v2, "
                "minimalistic=true; set minimalistic to false, or arch to mobilenet_v3_small or "
                "mobilenet_v3_large"
            )
        return self


def build_student(
    config: StudentConfig, input_shape: tuple[int, int, int], num_classes: int, seed: int = 0
) -> Any:
    """A fresh (randomly initialised) tf_keras student model with logits output."""
    from edgekit.keras_compat import tf_keras

    tfk = tf_keras()
    tfk.utils.set_random_seed(seed)
    h, w, c = input_shape
    size = config.input_size or h
    if min(h, w) < 1 or c not in (1, 3):
        raise UsageError(
            f"MobileNet students take RGB (H, W, 3) or grey (H, W, 1) images. Received a teacher "
            f"input of shape {input_shape}; convert the images to RGB or grey in the data."
        )
    if size < 32:
        raise UsageError(
            f"MobileNet students need an input of at least 32x32. The teacher's input is {h}x{w}: "
            "set the student's input size with --set distill.student.input_size=32 (or larger)."
        )
    inp = tfk.Input(shape=(h, w, c), name="image")
    x = inp
    if (size, size) != (h, w):
        x = tfk.layers.Resizing(size, size, interpolation="bilinear", name="student_resize")(x)
    # edgekit feeds [0, 1] by default; MobileNets are designed around [-1, 1] inputs.
    x = tfk.layers.Rescaling(2.0, offset=-1.0, name="student_rescale")(x)
    apps = tfk.applications
    common: dict[str, Any] = {
        "input_tensor": x,
        "include_top": False,
        "weights": None,
        "alpha": config.width,
    }
    if config.arch == "mobilenet_v2":
        base = apps.MobileNetV2(**common)
    elif config.arch == "mobilenet_v3_small":
        base = apps.MobileNetV3Small(
            **common, minimalistic=config.minimalistic, include_preprocessing=False
        )
    else:
        base = apps.MobileNetV3Large(
            **common, minimalistic=config.minimalistic, include_preprocessing=False
        )
    for layer in base.layers:
        if isinstance(layer, tfk.layers.BatchNormalization):
            layer.momentum = config.bn_momentum
    y = tfk.layers.GlobalAveragePooling2D(name="student_pool")(base.output)
    if config.dropout:
        y = tfk.layers.Dropout(config.dropout, name="student_dropout")(y)
    # float32 logits under a mixed_float16 policy too (Keras' advice: a float16 softmax input
    # loses the small differences distillation at temperature T compares)
    y = tfk.layers.Dense(num_classes, name="logits", dtype="float32")(y)
    return tfk.Model(inp, y, name=f"student_{config.arch}_{config.width:g}")
