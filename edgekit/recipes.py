"""Recipe schema: an ordered list of typed stages plus data split, seeds and an accuracy budget.

Recipes are YAML (`recipes/*.yaml`, also shipped in the wheel). Every model rejects unknown keys
(`extra="forbid"`), so a typo is an error that names the key path, not a silently ignored option.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from edgekit.errors import RecipeError
from edgekit.schema import Strict
from edgekit.stages.base import stage_class, stage_classes, stage_names


def _stage_union(configs: tuple[type, ...]) -> Any:
    """The recipe's `stages:` item type: the registered stage configs, told apart by `stage`."""
    return Annotated[Union[configs], Field(discriminator="stage")]  # noqa: UP007 (a runtime tuple)


def _configs() -> tuple[type, ...]:
    return tuple(c.config_type for c in stage_classes())


_STAGES_FIELD = {"min_length": 1, "description": "The stages, run in this order."}


class Split(Strict):
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


class PreprocessingConfig(Strict):
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


class DataConfig(Strict):
    split: Split = Split()
    seed: int = Field(0, description="Seed of the split.")
    preprocessing: PreprocessingConfig = PreprocessingConfig()
    max_eval_samples: int | None = Field(
        None, gt=0, description="Cap on evaluated samples (None: all)."
    )
    stream: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Image folders and TFRecords: stream them batch by batch from their files "
        "(on), decode them into memory (off), or choose by size (auto: in memory when the pixels "
        "and one float32 copy fit in 2 GB). The choice is said in the run's first lines.",
    )
    decode_cache: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Streamed data: keep each image's decoded pixels (uint8, at the model's "
        "size) in a scratch file in OUT/cache after its first decode, so later epochs read them "
        "instead of decoding the files again (on), decode every epoch (off), or on when the "
        "disk has room (auto). The file is removed when the run ends.",
    )
    on_corrupt: Literal["stop", "skip"] = Field(
        "stop",
        description="An image that cannot be decoded: stop the run naming it, or skip it (left "
        "out, counted in the log).",
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


# One entry of `stages:`: the stage configs registered when this module is imported (the built-in
# stages, edgekit/stages/*.py); a stage registered later is in `recipe_model()`'s union.
AnyStage = _stage_union(_configs())


class Verification(Strict):
    float_atol: float = Field(
        1e-3, gt=0, description="Max abs error on probabilities for float32 exports."
    )
    float16_atol: float = Field(2e-2, gt=0)
    min_agreement: float = Field(
        0.9, gt=0, le=1, description="Top-1 agreement floor for quantized exports."
    )
    samples: int = Field(256, ge=1)


class Budget(Strict):
    max_accuracy_drop: float | None = Field(
        None, ge=0, description="Points of top-1 the final artifact may lose against the teacher."
    )


class Recipe(Strict):
    name: str
    description: str = ""
    seed: int = 0
    data: DataConfig = DataConfig()
    stages: list[AnyStage] = Field(**_STAGES_FIELD)
    verify: Verification = Verification()
    budget: Budget = Budget()
    latency_runs: int = Field(
        50, ge=1, description="Timed runs for each artifact's p50 (1 thread)."
    )
    class_output: int | str | None = Field(
        None,
        description="Multi-output teachers: the output (name or index) holding the class scores "
        "[default: the first]. Distillation learns it, accuracy is measured on it, and every "
        "output is verified.",
    )
    compare_teacher_tflite: bool = Field(
        True,
        description="Also convert the teacher to float TFLite, so size and speed ratios compare like with like.",
    )

    @model_validator(mode="after")
    def _stage_order(self) -> Recipe:
        quantized = None  # the first quantization-aware stage so far
        for s in self.stages:
            cls = stage_class(s.stage)
            if quantized and cls.trains_float_weights:
                raise ValueError(
                    f"stage '{s.stage}' cannot come after '{quantized}' (it would undo the "
                    "quantization)"
                )
            if cls.quantization_aware and quantized is None:
                quantized = s.stage
        return self


_MODELS: dict[tuple[type, ...], type[Recipe]] = {_configs(): Recipe}


def recipe_model() -> type[Recipe]:
    """The Recipe model whose stage union holds every stage registered now: `Recipe` itself, or
    a subclass of it when stages were registered after this module was imported (a plugin, a
    test)."""
    configs = _configs()
    if configs not in _MODELS:
        _MODELS[configs] = create_model(
            "Recipe",
            __base__=Recipe,
            __module__=__name__,
            stages=(list[_stage_union(configs)], Field(**_STAGES_FIELD)),
        )
    return _MODELS[configs]


def _format_validation_error(
    source: str,
    err: ValidationError,
    raw: Any = None,
    overrides: list[tuple[str, tuple[Any, ...]]] | None = None,
) -> str:
    from edgekit.schema import format_validation_error

    names = stage_names()
    hint = f"unknown stage; expected one of {', '.join(names)}"
    return format_validation_error(
        "recipe",
        source,
        err,
        union_tag_hint=hint,
        tag_names=names,
        model=recipe_model(),
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
        if parts[0] in stage_names():
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
            if written in stage_names()
            else f"start each stage with `- stage: NAME`, NAME one of {', '.join(stage_names())}"
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
        return recipe_model().model_validate(raw)
    except ValidationError as e:
        raise RecipeError(_format_validation_error(source, e, raw, _applied)) from None
