"""The stage registry: a stage is one file (its config and its run). A tiny stage registered from
this test module validates in recipes, is named in messages and `--set`, is asked by the pipeline
what it needs, and runs through a real compress run (a Keras 3 model, LiteRT for the export)."""

from __future__ import annotations

import json
import shutil
import typing
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from pydantic import BaseModel, Field

from edgekit.artifacts import ModelArtifact
from edgekit.errors import DataError, RecipeError
from edgekit.recipes import apply_overrides, load_recipe, validate_recipe
from edgekit.stages import base
from edgekit.stages.base import Stage, StageConfig, StageOutput, register, stage_classes

BUILT_IN = ("distill", "channel_prune", "prune", "qat", "quantize", "tune", "export")


class CopyConfig(StageConfig):
    """Copy the current model under a new name (a stage that changes nothing)."""

    stage: Literal["copy_model"] = "copy_model"
    suffix: str = Field("copy", description="Added to the file's stem.")
    labelled: bool = Field(False, description="Pretend to need labels.")


class CopyModel(Stage):
    name = "copy_model"
    config_type = CopyConfig
    trains_float_weights = True  # so that the ordering rule applies to it

    def needs_labels(self) -> str | None:
        return "copy_model" if self.config.labelled else None

    def teacher_splits(self) -> tuple[str, ...]:
        return ("val",)

    def run(self, ctx, model: ModelArtifact, workdir: Path) -> StageOutput:
        src = Path(model.path)
        path = workdir / f"{src.stem}_{self.config.suffix}{src.suffix}"
        shutil.copyfile(src, path)
        return StageOutput(
            model=ModelArtifact.from_path(path),
            report={
                "copied": path.name,
                # what the pipeline computed because this stage asked for it
                "val_teacher_outputs": len(ctx.teacher_outputs["val"]),
            },
        )


@pytest.fixture
def copy_stage():
    stage_classes()  # the built-in stages first, as any first read of the registry does
    register(CopyModel)
    yield CopyModel
    base._REGISTRY.pop(CopyModel.name)


def test_built_in_stages_are_one_file_each():
    classes = {c.name: c for c in stage_classes()}
    assert tuple(classes) == BUILT_IN
    for name, cls in classes.items():
        # the config and the stage live in the stage's own module, edgekit/stages/<name>.py
        assert cls.__module__ == cls.config_type.__module__ == f"edgekit.stages.{name}"


def _undescribed(model: type[BaseModel], prefix: str = "") -> list[str]:
    missing = []
    for key, f in model.model_fields.items():
        if key == "stage":
            continue
        if not f.description:
            missing.append(prefix + key)
        for t in [f.annotation, *typing.get_args(f.annotation)]:
            if isinstance(t, type) and issubclass(t, BaseModel):
                missing += _undescribed(t, f"{prefix}{key}.")
    return missing


def test_every_stage_config_field_has_a_description():
    for cls in stage_classes():
        assert cls.config_type.model_config.get("extra") == "forbid", cls.name
        assert _undescribed(cls.config_type) == [], cls.name


def test_a_registered_stage_is_in_the_recipe_schema_and_messages(copy_stage):
    r = validate_recipe({"name": "t", "stages": [{"stage": "copy_model", "suffix": "x"}]})
    assert isinstance(r.stages[0], CopyConfig) and r.stages[0].suffix == "x"
    # unknown keys are named with the stage's own fields
    with pytest.raises(RecipeError, match=r"stages\.0\.copy_model\.sufix: unknown key .*'suffix'"):
        validate_recipe({"name": "t", "stages": [{"stage": "copy_model", "sufix": "x"}]})
    # the list of valid stages names it (after the built-in ones)
    with pytest.raises(RecipeError, match=f"expected one of {', '.join(BUILT_IN)}, copy_model"):
        validate_recipe({"name": "t", "stages": [{"stage": "sharpen"}]})
    # --set finds it by name
    raw = {"name": "t", "stages": [{"stage": "copy_model"}]}
    assert apply_overrides(raw, ["copy_model.suffix=y"])["stages"][0]["suffix"] == "y"
    # the ordering rule reads the stage's class attributes
    with pytest.raises(RecipeError, match="'copy_model' cannot come after 'qat'"):
        validate_recipe({"name": "t", "stages": [{"stage": "qat"}, {"stage": "copy_model"}]})
    # the built-in recipes still validate
    assert [s.stage for s in load_recipe("distill").stages] == ["distill", "export", "quantize"]


def test_without_the_stage_the_schema_is_the_built_in_one():
    with pytest.raises(RecipeError, match="unknown stage; expected one of distill, channel_prune, prune, qat, quantize, tune, export"):  # fmt: skip
        validate_recipe({"name": "t", "stages": [{"stage": "copy_model"}]})


@pytest.fixture(scope="module")
def tiny_model_and_data(tmp_path_factory):
    from models import keras3_classifier

    folder = tmp_path_factory.mktemp("registry")
    model = keras3_classifier(input_shape=(16, 16, 3), num_classes=3)
    path = folder / "tiny.keras"
    model.save(path)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (120, 16, 16, 3)).astype(np.uint8)
    data = folder / "tiny.npz"
    np.savez(data, x=x, y=rng.integers(0, 3, 120), labels=np.array(["a", "b", "c"]))
    return path, data


def _recipe(folder: Path, *stages: str) -> Path:
    path = folder / "custom.yaml"
    path.write_text(
        "name: custom\ncompare_teacher_tflite: false\nlatency_runs: 1\n"
        "data: {max_eval_samples: 24}\nverify: {samples: 16}\nstages:\n"
        + "".join(f"  - {s}\n" for s in stages)
    )
    return path


def test_a_registered_stage_runs_through_a_recipe(copy_stage, tiny_model_and_data, tmp_path):
    from edgekit import api

    model, data = tiny_model_and_data
    recipe = _recipe(
        tmp_path, "{stage: copy_model, suffix: copied}", "{stage: export, formats: [tflite]}"
    )
    out = tmp_path / "run"
    report = api.compress(model, recipe=str(recipe), data=str(data), out=out, measure_latency=False)
    first, export = report["stages"]
    assert first["stage"] == "copy_model" and first["copied"] == "tiny_copied.keras"
    assert first["val_teacher_outputs"] == 12  # the val split (0.1 of 120), computed as asked
    assert (out / "stages" / "00-copy_model" / "tiny_copied.keras").is_file()
    # the next stage starts from its model: the export is named after the copy
    assert export["exports"] == ["tiny_copied_float32.tflite"]
    assert report["final_artifact"] == "stages/01-export/tiny_copied_float32.tflite"
    assert json.loads((out / "report.json").read_text())["stages"][0]["copied"] == first["copied"]
    # a re-run reuses it, keyed like every stage
    again = api.compress(model, recipe=str(recipe), data=str(data), out=out, measure_latency=False)
    assert [s["reused"] for s in again["stages"]] == [True, True]


def test_a_registered_stage_says_it_needs_labels(copy_stage, tiny_model_and_data, tmp_path):
    from edgekit import api

    model, _ = tiny_model_and_data
    data = tmp_path / "unlabeled.npz"
    np.savez(data, x=np.zeros((60, 16, 16, 3), np.uint8))
    recipe = _recipe(tmp_path, "{stage: copy_model, labelled: true}")
    with pytest.raises(DataError, match="Stage copy_model needs labels"):
        api.compress(model, recipe=str(recipe), data=str(data), out=tmp_path / "r")


SHARPEN = '''
from typing import Literal

from pydantic import Field

from edgekit.stages.base import Stage, StageConfig, StageOutput, register


class SharpenConfig(StageConfig):
    """A stage that only has to exist."""

    stage: Literal["sharpen"] = "sharpen"
    amount: float = Field(0.5, gt=0, description="How much.")


@register
class Sharpen(Stage):
    name = "sharpen"
    config_type = SharpenConfig
    position = 45

    def run(self, ctx, model, workdir):
        return StageOutput()
'''


def test_a_file_in_the_stages_package_is_all_it_takes(tmp_path, monkeypatch):
    """The registry imports every module of edgekit.stages: a new file there adds a stage (here
    the package's search path gains a folder holding sharpen.py; the source tree is left alone)."""
    import sys

    import edgekit.stages as package

    (tmp_path / "sharpen.py").write_text(SHARPEN)
    stage_classes()
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    monkeypatch.setattr(base, "_discovered", False)
    try:
        assert base.stage_names() == (*BUILT_IN[:5], "sharpen", *BUILT_IN[5:])
        r = validate_recipe({"name": "t", "stages": [{"stage": "sharpen", "amount": 2}]})
        assert type(r.stages[0]).__module__ == "edgekit.stages.sharpen"
        with pytest.raises(RecipeError, match=r"sharpen\.amount"):
            validate_recipe({"name": "t", "stages": [{"stage": "sharpen", "amount": 0}]})
    finally:
        base._REGISTRY.pop("sharpen", None)
        sys.modules.pop("edgekit.stages.sharpen", None)
