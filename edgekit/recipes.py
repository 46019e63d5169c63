"""Recipe schema: an ordered list of typed stages plus data split, seeds and an accuracy budget.

Recipes are YAML (`recipes/*.yaml`, also shipped in the wheel). Every model rejects unknown keys
(`extra="forbid"`), so a typo is an error that names the key path, not a silently ignored option.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgekit.errors import RecipeError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)


class Split(_Strict):
    """Fractions of the data set used for each purpose. `eval` is never trained or calibrated on."""

    train: float = Field(0.7, gt=0, lt=1, description="Fraction used to train / fine-tune.")
    val: float = Field(
        0.1, gt=0, lt=1, description="Fraction for early stopping and model selection."
    )
    calib: float = Field(0.1, gt=0, lt=1, description="Fraction for quantization calibration.")
    eval: float = Field(
        0.1, gt=0, lt=1, description="Held-out fraction for every reported accuracy."
    )

    @model_validator(mode="after")
    def _sums_to_at_most_one(self) -> Split:
        total = self.train + self.val + self.calib + self.eval
        if total > 1.0 + 1e-9:
            raise ValueError(
                f"split fractions must add up to at most 1. Received a total of {total:.3f}"
            )
        return self

    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "calib": self.calib, "eval": self.eval}


class PreprocessingConfig(_Strict):
    """Model input = (pixel - mean) / std, with pixels in [0, 255]. Defaults give [0, 1]."""

    mean: float | list[float] = 0.0
    std: float | list[float] = 255.0

    @field_validator("std")
    @classmethod
    def _positive(cls, v: float | list[float]) -> float | list[float]:
        values = v if isinstance(v, list) else [v]
        if any(s <= 0 for s in values):
            raise ValueError(f"std must be > 0. Received: std={v}")
        return v


class DataConfig(_Strict):
    split: Split = Split()
    seed: int = Field(0, description="Seed of the split.")
    preprocessing: PreprocessingConfig = PreprocessingConfig()
    max_eval_samples: int | None = Field(
        None, gt=0, description="Cap on evaluated samples (None: all)."
    )
    labelled_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Fraction of the training split whose labels are kept (stratified by class, "
        "seeded by `seed`); the other images of the training split join the unlabeled ones, which "
        "distillation teaches with the teacher's outputs alone. 1 keeps every label. For "
        "measuring what a teacher adds when labels are scarce.",
    )


class Optimizer(_Strict):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    learning_rate: float = Field(1e-3, gt=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    weight_decay: float = Field(0.0, ge=0)


class EarlyStopping(_Strict):
    enabled: bool = True
    patience: int = Field(4, ge=1)
    monitor: Literal["val_accuracy", "val_loss"] = "val_accuracy"


class StudentConfig(_Strict):
    arch: Literal["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"] = "mobilenet_v2"
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
    dropout: float = Field(0.0, ge=0, lt=1)
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


class Augment(_Strict):
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

    @property
    def enabled(self) -> bool:
        return self.flip != "none" or self.rot90


class DistillStage(_Strict):
    """Knowledge distillation of the model (the teacher) into a MobileNet student."""

    stage: Literal["distill"] = "distill"
    student: StudentConfig = StudentConfig()
    alpha: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Weight of the label cross-entropy; 1 - alpha weighs the distillation KL.",
    )
    temperature: float = Field(
        4.0, gt=0, description="Softmax temperature T of the distillation term."
    )
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Optimizer = Optimizer(learning_rate=2e-3)
    early_stopping: EarlyStopping = EarlyStopping()
    augment: Augment = Augment()
    use_unlabeled: bool = Field(
        True,
        description="Add the run's unlabeled images (compress --unlabeled) to the training set, "
        "taught by the teacher's outputs alone (no label term). An epoch then passes over both. "
        "No unlabeled images given: nothing changes.",
    )


class PruneStage(_Strict):
    """Magnitude pruning with tfmot, fine-tuning, then strip_pruning (the architecture is kept)."""

    stage: Literal["prune"] = "prune"
    target_sparsity: float = Field(
        0.5, description="Fraction of prunable weights set to zero, in [0, 1)."
    )
    schedule: Literal["polynomial", "constant"] = "polynomial"
    initial_sparsity: float = 0.0
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(5e-4, gt=0)
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


class QatStage(_Strict):
    """Quantization-aware training (tfmot quantize_model); exports become int8."""

    stage: Literal["qat"] = "qat"
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(2e-4, gt=0)


QuantMode = Literal["dynamic", "float16", "int8", "int16x8"]


class QuantizeStage(_Strict):
    """Post-training quantization of the current model into TFLite (and ONNX for int8/dynamic)."""

    stage: Literal["quantize"] = "quantize"
    modes: list[QuantMode] = Field(default_factory=lambda: ["int8"], min_length=1)
    formats: list[Literal["tflite", "onnx"]] = Field(
        default_factory=lambda: ["tflite", "onnx"], min_length=1
    )
    calibration_samples: int = Field(300, ge=1, description="Samples from the calib split.")
    per_channel: bool = True
    io_type: Literal["float32", "int8", "uint8"] = Field(
        "float32", description="Input/output type of full-integer TFLite models."
    )
    onnx_reduce_range: bool = Field(
        True,
        description="7-bit weights in ONNX int8: avoids U8S8 saturation on AVX2/AVX-512 without VNNI.",
    )


class ExportStage(_Strict):
    """Float exports of the current model, each verified against it."""

    stage: Literal["export"] = "export"
    formats: list[Literal["tflite", "onnx"]] = Field(
        default_factory=lambda: ["tflite", "onnx"], min_length=1
    )
    opset: int = Field(17, ge=13, le=21)
    allow_select_tf_ops: bool = Field(
        False,
        description="Allow TensorFlow (Flex) ops in TFLite; such models fail on stock Android LiteRT.",
    )


StageConfig = Annotated[
    DistillStage | PruneStage | QatStage | QuantizeStage | ExportStage, Field(discriminator="stage")
]
STAGE_NAMES = ("distill", "prune", "qat", "quantize", "export")


class Verification(_Strict):
    float_atol: float = Field(
        1e-3, gt=0, description="Max abs error on probabilities for float32 exports."
    )
    float16_atol: float = Field(2e-2, gt=0)
    min_agreement: float = Field(
        0.9, gt=0, le=1, description="Top-1 agreement floor for quantized exports."
    )
    samples: int = Field(256, ge=1)


class Budget(_Strict):
    max_accuracy_drop: float | None = Field(
        None, ge=0, description="Points of top-1 the final artifact may lose against the teacher."
    )


class Recipe(_Strict):
    name: str
    description: str = ""
    seed: int = 0
    data: DataConfig = DataConfig()
    stages: list[StageConfig] = Field(min_length=1)
    verify: Verification = Verification()
    budget: Budget = Budget()
    latency_runs: int = Field(
        50, ge=1, description="Timed runs for each artifact's p50 (1 thread)."
    )
    compare_teacher_tflite: bool = Field(
        True,
        description="Also convert the teacher to float TFLite, so size and speed ratios compare like with like.",
    )

    @model_validator(mode="after")
    def _stage_order(self) -> Recipe:
        names = [s.stage for s in self.stages]
        for later in ("distill", "prune"):
            if later in names and "qat" in names and names.index(later) > names.index("qat"):
                raise ValueError(
                    f"stage '{later}' cannot come after 'qat' (it would undo the quantization)"
                )
        return self


def _format_validation_error(
    source: str,
    err: ValidationError,
    raw: Any = None,
    overrides: list[tuple[str, tuple[Any, ...]]] | None = None,
) -> str:
    from edgekit.schema import format_validation_error

    hint = f"unknown stage; expected one of {', '.join(STAGE_NAMES)}"
    return format_validation_error(
        "recipe",
        source,
        err,
        union_tag_hint=hint,
        tag_names=STAGE_NAMES,
        model=Recipe,
        raw=raw,
        overrides=overrides or [],
    )


def bundled_recipes() -> dict[str, Path]:
    from edgekit.resources import bundled

    return bundled("recipes")


def load_recipe_dict(name_or_path: str) -> tuple[dict[str, Any], str]:
    """Read a recipe by bundled name or YAML path; returns the raw dict and where it came from."""
    from edgekit.schema import read_yaml_mapping

    p = Path(name_or_path)
    known = bundled_recipes()
    if name_or_path in known:
        p = known[name_or_path]
    elif not (p.suffix in (".yaml", ".yml") and p.is_file()):
        hint = ", ".join(known) or "(none found)"
        if p.suffix in (".yaml", ".yml"):
            raise RecipeError(f"Recipe file {p} does not exist. Bundled recipes: {hint}.")
        raise RecipeError(
            f"Unknown recipe '{name_or_path}'. Known recipes: {hint}; or pass a .yaml path."
        )
    raw = read_yaml_mapping(p, "Recipe", "'name' and 'stages'")
    raw.setdefault("name", p.stem)
    return raw, str(p)


def parse_override(item: str) -> tuple[str, Any]:
    """Parse one `--set key.path=value` (the value is read as YAML: 3, 0.5, true, [2, 4])."""
    import yaml

    if "=" not in item:
        raise RecipeError(
            f"Expected --set key=value (for example distill.epochs=3). Received: {item!r}"
        )
    key, _, value = item.partition("=")
    key = key.strip()
    if not key:
        raise RecipeError(f"Expected --set key=value with a non-empty key. Received: {item!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `--set` overrides. A first path part naming a stage (`distill.epochs`) targets that stage."""
    return _apply_overrides(raw, overrides)[0]


def _apply_overrides(
    raw: dict[str, Any], overrides: list[str]
) -> tuple[dict[str, Any], list[tuple[str, tuple[Any, ...]]]]:
    """The overridden recipe, and for each override its text and the path it set in the recipe
    (so that a validation error there names the override, not the file)."""
    out = copy.deepcopy(raw)
    applied: list[tuple[str, tuple[Any, ...]]] = []
    for item in overrides:
        key, value = parse_override(item)
        parts = key.split(".")
        target: Any = out
        path: list[Any] = []
        if parts[0] in STAGE_NAMES:
            stages = out.get("stages") or []
            if not isinstance(stages, list):
                raise RecipeError(
                    f"--set {key}: the recipe's 'stages' is not a list of stages, so there is no "
                    f"'{parts[0]}' stage to set. Fix 'stages' in the recipe."
                )
            matches = [
                j
                for j, s in enumerate(stages)
                if isinstance(s, dict) and s.get("stage") == parts[0]
            ]
            if not matches:
                raise RecipeError(_no_stage_message(key, parts[0], out))
            target, parts, path = stages[matches[0]], parts[1:], ["stages", matches[0]]
        if not parts:
            raise RecipeError(
                f"--set {key}: name a field of the stage, for example {key}.epochs=3."
            )
        for i, part in enumerate(parts[:-1]):
            if isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
                path.append(int(part))
            elif isinstance(target, dict):
                if target.get(part, "") is None:
                    target[part] = {}  # `budget:` with nothing under it is an empty section
                if not isinstance(target.get(part, {}), dict | list):
                    raise RecipeError(
                        f"--set {key}: '{'.'.join(parts[: i + 1])}' is a value "
                        f"({target[part]!r}), not a section with fields."
                    )
                target = target.setdefault(part, {})
                path.append(part)
            else:
                raise RecipeError(
                    f"--set {key}: '{'.'.join(parts[: i + 1])}' is not a section of the recipe."
                )
        last = parts[-1]
        if isinstance(target, list) and last.isdigit() and int(last) < len(target):
            target[int(last)] = value
            path.append(int(last))
        elif isinstance(target, dict):
            target[last] = value
            path.append(last)
        else:
            raise RecipeError(f"--set {key}: cannot set a field inside a {type(target).__name__}.")
        applied.append((item, tuple(path)))
    return out, applied


def _no_stage_message(key: str, name: str, recipe: dict[str, Any]) -> str:
    stages = recipe.get("stages") or []
    kinds = [s.get("stage") for s in stages if isinstance(s, dict)]
    unnamed = [
        i
        for i, s in enumerate(stages)
        if not isinstance(s, dict) or not isinstance(s.get("stage"), str)
    ]
    if unnamed:
        i = unnamed[0]
        s = stages[i]
        written = next(iter(s), None) if isinstance(s, dict) and len(s) == 1 else None
        fix = (
            f"write `- stage: {written}` with its settings beside it, not `- {written}: {{...}}`"
            if written in STAGE_NAMES
            else f"start each stage with `- stage: NAME`, NAME one of {', '.join(STAGE_NAMES)}"
        )
        return (
            f"--set {key}: recipe '{recipe.get('name')}' has no '{name}' stage: its stage "
            f"{i} has no 'stage' key ({fix})."
        )
    present = ", ".join(str(k) for k in kinds) or "none"
    return f"--set {key}: recipe '{recipe.get('name')}' has no '{name}' stage (stages: {present})."


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    """Resolve a bundled name or a path, apply `--set` overrides and validate. An error caused
    by an override names it; one in the file names the file and line."""
    raw, source = load_recipe_dict(name_or_path)
    raw, applied = _apply_overrides(raw, overrides or [])
    return validate_recipe(raw, source, _applied=applied)


def validate_recipe(
    raw: dict[str, Any],
    source: str = "<dict>",
    *,
    _applied: list[tuple[str, tuple[Any, ...]]] | None = None,
) -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(_format_validation_error(source, e, raw, _applied)) from None
