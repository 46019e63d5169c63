"""compress on a multi-output teacher: `--output NAME` picks the class-score head; distillation
learns it, accuracy is measured on it, and every output of every export is verified.

The teacher is a tiny Keras 3 CNN with a box head first (2 values: each image's brightness mean
and spread, a regression) and the classifier second (4 classes), trained a few seconds on 32x32
digits 0-3, so the class head is meaningful and the default (the first output) is the wrong one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import invoke, one_line_error

# Its own group: sharing "compress" would interleave it with test_compress.py on one worker,
# and every switch between modules rebuilds their module fixtures (a distill run each).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("compress_outputs")]

TINY = ["latency_runs=2", "verify.samples=48", "data.max_eval_samples=96"]


@pytest.fixture(scope="module")
def four_digits(tmp_path_factory) -> Path:
    from edgekit.data import load_dataset

    ds = load_dataset("digits:size=32")
    keep = np.flatnonzero(ds.y < 4)[:480]
    path = tmp_path_factory.mktemp("data") / "digits4.npz"
    np.savez(path, x=ds.x[keep], y=ds.y[keep], labels=np.array(ds.labels[:4]))
    return path


@pytest.fixture(scope="module")
def two_head_teacher(tmp_path_factory, four_digits) -> Path:
    from edgekit.keras_compat import keras

    k = keras()
    k.utils.set_random_seed(0)
    d = np.load(four_digits)
    x, y = d["x"].astype("float32") / 255.0, d["y"]
    inp = k.Input((32, 32, 3))
    h = k.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    h = k.layers.Flatten()(k.layers.MaxPooling2D()(h))
    box = k.layers.Dense(2, name="box")(h)
    cls = k.layers.Dense(4, activation="softmax", name="cls")(h)
    model = k.Model(inp, [box, cls])
    model.compile("adam", loss=["mse", "sparse_categorical_crossentropy"])
    box = 4 * np.stack([x.mean(axis=(1, 2, 3)), x.std(axis=(1, 2, 3))], axis=1)  # a regression
    model.fit(x, [box, y], epochs=10, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("teacher") / "two_heads.keras"
    model.save(path)
    return path


def compress(teacher, data, out, recipe, *extra, output=None):
    args = ["compress", teacher, "--recipe", recipe, "--data", data, "--out", out, "--json"]
    if output is not None:
        args += ["--output", output]
    for s in [*TINY, *extra]:
        args += ["--set", s]
    return invoke(*args)


def test_quantize_measures_and_verifies_the_named_class_output(tmp_path, two_head_teacher, four_digits):  # fmt: skip
    r = compress(two_head_teacher, four_digits, tmp_path / "q", "quantize", "quantize.modes=[int8]",
                 "quantize.formats=[tflite,onnx]", output="cls")  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    teacher = report["teacher"]
    assert teacher["accuracy"] > 0.7  # the class head, not the box head (4 classes: chance 25%)
    rows = {Path(a["path"]).name: a for a in report["artifacts"]}
    int8 = rows["two_heads_int8.tflite"]
    assert int8["verification"]["class_output"] == "cls"
    assert int8["verification"]["outputs"] == ["box", "cls"]  # every output compared
    assert int8["accuracy"] > teacher["accuracy"] - 0.1 and int8["agreement_with_teacher"] > 0.85
    assert rows["two_heads_int8.onnx"]["verification"]["class_output"] == "cls"


def test_the_wrong_output_says_which_and_how_to_pick(tmp_path, two_head_teacher, four_digits):
    # Default: the first output (box, 2 values) against 4 classes: the error names --output.
    err = one_line_error(compress(two_head_teacher, four_digits, tmp_path / "a", "quantize"))
    assert "'box'" in err and "--output" in err
    err = one_line_error(
        compress(two_head_teacher, four_digits, tmp_path / "b", "quantize", output="scores")
    )
    assert "no output 'scores'" in err and "0: box, 1: cls" in err
    assert not (tmp_path / "b" / "report.json").exists()


def test_distillation_is_taught_by_the_named_head(two_head_teacher, four_digits):
    """Distillation learns from the teacher outputs the pipeline computes once per split: those
    are the named head's scores (an end-to-end distill run is in test_compress.py)."""
    from edgekit.artifacts import ModelArtifact
    from edgekit.keras_compat import load_model
    from edgekit.pipeline import _teacher_predictor

    teacher = ModelArtifact.from_path(two_head_teacher)
    predict, shape, index, names = _teacher_predictor(teacher, False, "cls")
    assert (shape, index, names) == ((32, 32, 3), 1, ["box", "cls"])
    x = np.load(four_digits)["x"][:40].astype("float32") / 255.0
    expected = load_model(two_head_teacher).predict(x)[1]
    np.testing.assert_allclose(predict(x), expected, rtol=1e-5, atol=1e-6)
    assert _teacher_predictor(teacher, False, None)[0](x).shape == (40, 2)  # the first, by default


def test_prune_tunes_the_named_head_and_holds_the_other(tmp_path, two_head_teacher, four_digits):
    """prune on two outputs: the class head fine-tuned on the labels, the box head held at the
    unpruned model's predictions (its drift reported), every output of every export verified."""
    from edgekit.keras_compat import load_model

    r = compress(two_head_teacher, four_digits, tmp_path / "p", "prune", "prune.epochs=3",
                 "prune.learning_rate=0.002",
                 "quantize.modes=[int8]", "quantize.formats=[tflite]", output="cls")  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    stage = next(s for s in report["stages"] if s["stage"] == "prune")
    assert stage["overall_sparsity"] == pytest.approx(0.5, abs=0.02)
    moved = stage["held_outputs"]
    assert set(moved) == {"box"}, moved
    # Held at the unpruned model's predictions (the control, unheld, is in test_stage_prune.py).
    assert 0 < moved["box"]["relative_rms_change"] < 1.0, moved
    assert "val_accuracy" in stage["history"]
    rows = {Path(a["path"]).name: a for a in report["artifacts"]}
    pruned = next(a for n, a in rows.items() if n.endswith("_pruned.keras"))
    model = load_model(tmp_path / "p" / pruned["path"]).model
    assert [o.shape[-1] for o in model.outputs] == [2, 4]
    int8 = next(a for n, a in rows.items() if n.endswith("_int8.tflite"))
    assert int8["verification"]["outputs"] == ["box", "cls"]
    assert int8["accuracy"] > report["teacher"]["accuracy"] - 0.15, int8


def test_qat_refuses_two_outputs_before_training_and_names_the_alternatives(tmp_path, two_head_teacher, four_digits):  # fmt: skip
    """QAT trains one class output: a model with two is refused with the way out, exit 2."""
    recipe = tmp_path / "qat.yaml"
    recipe.write_text("stages:\n  - stage: qat\n    epochs: 1\n  - stage: export\n")
    r = compress(two_head_teacher, four_digits, tmp_path / "f", str(recipe), output="cls")
    err = one_line_error(r)
    assert r.exit_code == 2
    assert "has 2 outputs (box, cls)" in err and "quantization-aware training" in err, err
    assert "quantize recipe" in err and "prune recipe" in err, err
