"""Errors in the user's own words: a recipe error names the file and line, an error caused by
`--set` names the override (not the bundled recipe it was applied to), a stage written the wrong
way round lists the valid stage names, and labels beyond a model's outputs are reported as the
labels go (not as a class count the user never made)."""

from __future__ import annotations

import numpy as np
import pytest
from check_models import build_onnx_models, make_pixels
from cli_helpers import invoke, one_line_error

from edgekit.errors import RecipeError
from edgekit.recipes import load_recipe


def write(tmp_path, text: str, name: str = "mine.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_stage_written_as_a_key_says_how_to_write_it(tmp_path):
    path = write(
        tmp_path,
        "name: mine\nstages:\n  - stage: export\n  - distill: {epochs: 3}\n",
    )
    err = one_line_error(invoke("recipes", "show", path))
    assert f"Invalid recipe {path}: line 4: stages.1:" in err
    assert "write `- stage: distill` with the distill settings beside it" in err
    assert "valid stages: distill, channel_prune, prune, qat, quantize, tune, export" in err
    assert "Unable to extract tag" not in err and "discriminator" not in err
    # the same recipe with an override of that stage: the stage's form is what is wrong
    err = one_line_error(invoke("recipes", "show", path, "--set", "distill.epochs=1"))
    assert "its stage 1 has no 'stage' key (write `- stage: distill`" in err


@pytest.mark.parametrize(
    ("stages", "fragment"),
    [
        ("  - sharpen\n", "stages.0: Input should be a valid dictionary"),
        ("  - distill\n", "write `- stage: distill` (a mapping), not the bare name 'distill'"),
        (
            "  - {stage: sharpen}\n",
            "unknown stage; expected one of distill, channel_prune, prune, qat, quantize",
        ),
        ("  - {epochs: 3}\n", "no 'stage' key (received the keys epochs); start each entry with"),
    ],
)
def test_union_errors_list_the_stage_names(tmp_path, stages, fragment):
    err = one_line_error(invoke("recipes", "show", write(tmp_path, f"stages:\n{stages}")))
    assert fragment in err and "line 2" in err, err


def test_a_bad_set_value_names_the_override_not_the_bundled_file():
    err = one_line_error(invoke("recipes", "show", "distill", "--set", "distill.temperature=0"))
    assert err.startswith("error: Invalid --set distill.temperature=0 (applied to recipe ")
    assert "stages.0.distill.temperature: Input should be greater than 0 (received 0)" in err
    assert "Invalid recipe" not in err
    # two overrides wrong: both named; a typo gets the key it meant
    err = one_line_error(
        invoke("recipes", "show", "distill", "--set", "seed=x", "--set", "distill.epochz=3")
    )
    assert "--set seed=x: seed: Input should be a valid integer" in err
    assert (
        "--set distill.epochz=3: stages.0.distill.epochz: unknown key (did you mean 'epochs'?"
        in err
    )


def test_an_error_in_the_file_names_file_and_line_even_with_overrides(tmp_path):
    path = write(
        tmp_path,
        "name: mine\n"
        "stages:\n"
        "  - stage: distill\n"
        "    student:\n"
        "      width: -1\n"
        "  - stage: export\n"
        "    formats: [tflite, tf]\n",
    )
    with pytest.raises(RecipeError) as e:
        load_recipe(str(path), ["distill.epochs=2"])  # a fine override does not take the blame
    msg = str(e.value)
    assert msg.startswith(f"Invalid recipe {path}: ")
    assert "line 5: stages.0.distill.student.width: Input should be greater than 0" in msg
    assert "line 7: stages.1.export.formats.1: Input should be 'tflite' or 'onnx'" in msg
    assert "--set" not in msg
    # an override that replaces the bad part takes it over: the file is fine then
    r = load_recipe(str(path), ["distill.student.width=0.5", "export.formats=[tflite]"])
    assert r.stages[0].student.width == 0.5


def test_set_into_a_value_says_it_is_a_value():
    err = one_line_error(invoke("recipes", "show", "distill", "--set", "distill.temperature.x=1"))
    assert "'temperature' is a value (1.0), not a section with fields" in err


def test_device_profile_errors_name_the_line(tmp_path):
    from edgekit.resources import bundled

    text = bundled("devices")["pixel-4"].read_text()
    lines = text.splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith("kind:"))
    lines[i] = "kind: toaster"
    path = write(tmp_path, "\n".join(lines) + "\n", "board.yaml")
    err = one_line_error(invoke("devices", "show", path))
    assert f"Invalid device profile {path}: line {i + 1}: kind:" in err, err


def test_compress_reports_labels_beyond_the_teacher_as_the_labels_go(tmp_path):
    teacher = build_onnx_models(tmp_path / "m")["base"]  # 8x8x3, 4 outputs
    y = np.arange(200) % 4
    y[:3] = 99
    np.savez(tmp_path / "d.npz", x=make_pixels(200), y=y)
    err = one_line_error(
        invoke("compress", teacher, "--data", tmp_path / "d.npz", "--out", tmp_path / "run")
    )
    assert "The model has 4 outputs (labels 0 to 3) but the data's labels go up to 99" in err
    assert "100 classes" not in err
