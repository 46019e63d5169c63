"""Recipe schema: every bundled recipe validates; bad recipes fail with the key path and value."""

from __future__ import annotations

import pytest

from edgekit.errors import RecipeError
from edgekit.recipes import (
    apply_overrides,
    bundled_recipes,
    load_recipe,
    validate_recipe,
)
from edgekit.stages.base import stage_names


def test_bundled_recipes_present():
    assert {"distill", "prune", "quantize", "full", "slim"} <= set(bundled_recipes())


@pytest.mark.parametrize("name", sorted(bundled_recipes()))
def test_every_bundled_recipe_validates(name):
    recipe = load_recipe(name)
    assert recipe.name == name
    assert all(s.stage in stage_names() for s in recipe.stages)


def test_distill_recipe_shape():
    r = load_recipe("distill")
    assert [s.stage for s in r.stages] == ["distill", "export", "quantize"]
    student = r.stages[0].student
    assert (student.arch, student.width, student.minimalistic) == ("mobilenet_v3_large", 0.5, True)
    assert r.stages[2].modes == ["int8"] and set(r.stages[2].formats) == {"tflite", "onnx"}


def test_quantize_recipe_has_every_mode():
    r = load_recipe("quantize")
    assert set(r.stages[-1].modes) == {"dynamic", "float16", "int8", "int16x8"}


def test_set_overrides_typed_values():
    r = load_recipe("distill", ["distill.epochs=3", "distill.student.width=0.5", "seed=7"])
    assert r.stages[0].epochs == 3 and r.stages[0].student.width == 0.5 and r.seed == 7
    r = load_recipe("prune", ["prune.m_by_n=[2, 4]"])
    assert r.stages[0].m_by_n == (2, 4)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["distill.temperature=0"], "stages.0.distill.temperature"),
        (["distill.temperature=-1"], "greater than 0"),
        (["distill.epochs=many"], "valid integer"),
        (["distill.bogus=1"], "stages.0.distill.bogus: unknown key"),
        (["distill.student.input_size=16"], "at least 32"),
        (["prune.x=1"], "has no 'prune' stage"),
        (["epochs"], "Expected --set key=value"),
    ],
)
def test_bad_overrides(overrides, fragment):
    with pytest.raises(RecipeError) as e:
        load_recipe("distill", overrides)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_sparsity_out_of_range_keras_style():
    with pytest.raises(
        RecipeError, match=r"Expected target_sparsity in \[0, 1\). Received: target_sparsity=1.2"
    ):
        load_recipe("prune", ["prune.target_sparsity=1.2"])


def test_unknown_recipe_lists_known():
    with pytest.raises(RecipeError, match="Known recipes: distill, full, prune, quantize, slim"):
        load_recipe("distil")


def test_unknown_stage_and_missing_file(tmp_path):
    with pytest.raises(
        RecipeError,
        match="unknown stage; expected one of distill, channel_prune, prune, qat, quantize, tune, export",
    ):
        validate_recipe({"name": "x", "stages": [{"stage": "sharpen"}]})
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(str(tmp_path / "missing.yaml"))


def test_recipe_file_path_and_bad_yaml(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("stages:\n  - stage: export\n    formats: [onnx]\n")
    r = load_recipe(str(good))
    assert r.name == "mine" and r.stages[0].formats == ["onnx"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(str(bad))


def test_split_must_fit_and_qat_last():
    with pytest.raises(RecipeError, match="add up to at most 1"):
        validate_recipe(
            {
                "name": "x",
                "data": {"split": {"train": 0.9, "val": 0.1, "calib": 0.1, "eval": 0.1}},
                "stages": [{"stage": "export"}],
            }
        )
    with pytest.raises(RecipeError, match="cannot come after 'qat'"):
        validate_recipe({"name": "x", "stages": [{"stage": "qat"}, {"stage": "prune"}]})


def test_overrides_do_not_mutate_source():
    raw = {"name": "x", "stages": [{"stage": "distill", "epochs": 2}]}
    out = apply_overrides(raw, ["distill.epochs=5"])
    assert raw["stages"][0]["epochs"] == 2 and out["stages"][0]["epochs"] == 5


def test_slim_recipe_and_full_option():
    slim = load_recipe("slim")
    assert slim.stages[0].stage == "channel_prune" and slim.stages[0].target_macs == 0.5
    full = load_recipe("full")
    cp = next(s for s in full.stages if s.stage == "channel_prune")
    assert cp.enabled is False
    on = load_recipe("full", ["channel_prune.enabled=true", "channel_prune.target_macs=0.4"])
    cp = next(s for s in on.stages if s.stage == "channel_prune")
    assert cp.enabled is True and cp.target_macs == 0.4
    with pytest.raises(RecipeError, match="target_macs"):
        load_recipe("slim", ["channel_prune.target_macs=1.0"])
