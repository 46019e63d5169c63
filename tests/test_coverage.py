"""The fast half of the coverage matrix (benchmarks/coverage.py has the whole): models users bring,
built and head-trained as the benchmark does, taken from their files through `edgekit export`
(every path verified) and the recipes. Real TensorFlow, LiteRT, ONNX Runtime and tfmot.

Known limits are asserted as such: their one-line error names the layer and the alternative.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import invoke, one_line_error

ROOT = Path(__file__).resolve().parents[1]


def _matrix():
    name = "edgekit_coverage_matrix"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "coverage.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]


cov = _matrix()
N = cov.SAMPLES  # images per model, as the benchmark: 280 train, 40 val, 40 calib, 40 eval


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """name -> (model file, data spec, training figures), built on first use."""
    made: dict[str, tuple[Path, str, dict]] = {}
    root = tmp_path_factory.mktemp("zoo")

    def get(name: str):
        if name not in made:
            made[name] = cov.prepare(name, root, N)
        return made[name]

    return get


def _cell(zoo, tmp_path, name, path):
    model, spec, figures = zoo(name)
    return cov.run_path(model, spec, path, tmp_path, std=figures["input_std"])


FAST_EXPORTS = [
    (arch, path)
    for arch in ("MobileNetV2", "two_outputs", "nested", "subclassed", "custom_layer")
    for path in cov.EXPORT_PATHS
]


@pytest.mark.parametrize(("arch", "path"), FAST_EXPORTS, ids=[f"{a}-{p}" for a, p in FAST_EXPORTS])
def test_export_paths(zoo, tmp_path, arch, path):
    cell = _cell(zoo, tmp_path, arch, path)
    if arch == "MobileNetV2" and path.endswith("int8"):
        # Made, run and checked (the figures exist), but a random-weight MobileNetV2 does not
        # keep its predictions in int8, in LiteRT or ONNX Runtime (docs/models.md): no verdict.
        assert cell.get("size_bytes") and cell.get("top1_agreement") is not None, cell
        assert cell["logit_rel_error"] == cell["logit_rel_error"]  # a number, not NaN
        return
    assert cell["status"] == "pass", cell
    assert cell["route"].startswith("edgekit")
    if arch == "two_outputs":  # both heads compared, the class head judged as class scores
        assert cell["outputs"] == ["class", "box"]


def test_heads_are_fitted_so_int8_agreement_means_something(zoo):
    _, _, figures = zoo("MobileNetV2")
    assert figures["head_layers"] == ["predictions"] and figures["batchnorm_layers"] == 52
    # Near-uniform outputs would make top-1 agreement a coin toss: the predictions are
    # confident and differ from image to image.
    assert figures["train_accuracy"] >= 0.8, figures
    assert figures["distinct_predictions"] == 10 and figures["median_top1_margin"] > 1, figures


def test_efficientnet_converts_to_tflite(zoo, tmp_path):
    """EfficientNet's swish captures constants in custom gradients; tracing must not need them."""
    cell = _cell(zoo, tmp_path, "EfficientNetB0", "tflite_float")
    assert cell["status"] == "pass", cell


def test_models_that_rescale_pixels_get_raw_pixels(zoo):
    # EfficientNet starts with Rescaling + Normalization (it wants 0-255 pixels), MobileNetV2
    # does not (edgekit's default [0, 1]); every path of the matrix feeds them so.
    assert zoo("EfficientNetB0")[2]["input_std"] == 1.0
    assert zoo("MobileNetV2")[2]["input_std"] == 255.0


def test_train_steps_train_every_layer_first(tmp_path):
    """--train-steps, the control for the int8 columns: every layer trained, then the heads."""
    from edgekit.keras_compat import keras, load_model

    path, _, figures = cov.prepare("nested", tmp_path, N, train_steps=125)
    t = figures["trained_every_layer"]
    assert t["steps"] == 125 and t["images"] == cov.TRAIN_IMAGES, t
    assert 0 <= t["final_train_accuracy"] <= 1, t
    keras().utils.set_random_seed(0)  # as prepare() builds it
    fresh = cov.build("nested").get_layer("backbone").layers[0].get_weights()[0]
    trained = load_model(path).model.get_layer("backbone").layers[0].get_weights()[0]
    assert fresh.shape == trained.shape and np.abs(trained - fresh).max() > 1e-3


def test_quantize_recipe_takes_two_outputs(zoo, tmp_path):
    cell = _cell(zoo, tmp_path, "two_outputs", "quantize")
    assert cell["status"] == "pass", cell
    assert len([a for a in cell["artifacts"] if a.endswith((".tflite", ".onnx"))]) == 8


@pytest.mark.parametrize(
    ("arch", "words"),
    [
        ("subclassed", ["subclassed Keras 3 model", "quantize recipe"]),
        ("custom_layer", ["'channel_scale' (ChannelScale)", "quantize recipe"]),
    ],
)
def test_prune_limits_fail_early_naming_layer_and_alternative(zoo, tmp_path, arch, words):
    model, spec, _ = zoo(arch)
    r = invoke("compress", model, "--recipe", "prune", "--data", spec, "--out", tmp_path / "run",
               "--no-latency")  # fmt: skip
    err = one_line_error(r)
    for w in words:
        assert w in err, err
    # Refused before any training: no stage folder was completed.
    stages = tmp_path / "run" / "stages"
    assert not stages.exists() or not any(p.name[:1].isdigit() for p in stages.iterdir())


@pytest.mark.parametrize("arch", ["nested", "two_outputs"])
def test_prune_recipe_takes_nested_and_two_output_models(zoo, tmp_path, arch):
    cell = _cell(zoo, tmp_path, arch, "prune")
    assert cell["status"] == "pass", cell


def test_export_output_option_names_the_class_head(zoo, tmp_path):
    model, spec, _ = zoo("two_outputs")
    out = tmp_path / "m.tflite"
    r = invoke("export", model, "--data", spec, "--out", out, "--output", "class", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    v = rep["verification"]
    assert rep["class_output"] == "class" and v["class_output"] == "class"
    assert set(v["max_abs_error_per_output"]) == {"class", "box"}
    assert rep["accuracy"]["top1"] == pytest.approx(v["accuracy"], abs=0.2)
    # The box head as "class scores" is allowed (the user says so); a name it lacks is not.
    r = invoke("export", model, "--data", spec, "--out", tmp_path / "b.tflite", "--output", "nope")
    err = one_line_error(r)
    assert "no output 'nope'" in err and "0: class, 1: box" in err
    assert not (tmp_path / "b.tflite").exists()


def test_matrix_table_renders(zoo, tmp_path):
    """The benchmark's own table: one row per architecture, one reason per failed cell."""
    cells = {"tflite_float": {"status": "pass", "route": "keras (Keras 3 ...)"}}
    cells["prune"] = {"status": "fail", "reason": "Layer 'x' (Y) cannot ... | z"}
    text = cov.markdown([{"arch": "A", "cells": cells}], ["tflite_float", "prune"])
    assert text.splitlines()[2] == (
        "| A | pass (via Keras' exporter) | FAIL: Layer 'x' (Y) cannot ... / z |"
    )


def _dead_layer_model(path: Path) -> Path:
    """A depthwise layer whose ReLU6 output is always 0 (a dead layer, common in untrained and
    pruned networks): LiteRT's int16x8 kernel cannot represent its output scale."""
    from edgekit.keras_compat import keras, save_model

    k = keras()
    k.utils.set_random_seed(0)
    inp = k.Input((16, 16, 3))
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = k.layers.DepthwiseConv2D(
        3, padding="same", bias_initializer=k.initializers.Constant(-50.0), name="dead_depthwise"
    )(x)
    x = k.layers.Conv2D(8, 1)(k.layers.ReLU(6.0)(x))
    out = k.layers.Dense(10)(k.layers.GlobalAveragePooling2D()(k.layers.Concatenate()([x, inp])))
    return save_model(k.Model(inp, out, name="dead"), path)


def test_quantize_recipe_drops_a_mode_that_cannot_represent_a_layer(tmp_path):
    model = _dead_layer_model(tmp_path / "dead.keras")
    r = invoke("compress", model, "--recipe", "quantize", "--data", "shapes:size=16,n=200",
               "--set", "quantize.modes=[int16x8,dynamic]", "--set", "quantize.formats=[tflite]",
               "--out", tmp_path / "run", "--no-latency", "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    (dropped,) = [d for s in rep["stages"] for d in s.get("dropped") or []]
    assert (dropped["mode"], dropped["format"], dropped["layer"]) == (
        "int16x8",
        "tflite",
        "dead_depthwise",
    )
    assert "DEPTHWISE_CONV_2D" in dropped["reason"] and "range" in dropped["reason"]
    names = sorted(Path(a["path"]).name for a in rep["artifacts"])
    assert "dead_dynamic.tflite" in names and "dead_int16x8.tflite" not in names
    assert not list((tmp_path / "run").rglob("*int16x8*"))  # nothing half-written left


def test_kernel_refusal_is_not_called_a_damaged_file(tmp_path):
    from edgekit.errors import KernelPrepareError
    from edgekit.export import tflite
    from edgekit.export.validate import check_export
    from edgekit.keras_compat import load_model

    loaded = load_model(_dead_layer_model(tmp_path / "dead.keras"))
    x = np.random.default_rng(0).random((16, 16, 16, 3), dtype=np.float32)
    info = tflite.convert(loaded, tmp_path / "d.tflite", quantization="int16x8", calibration=x)
    with pytest.raises(KernelPrepareError) as e:
        check_export(info["path"], loaded.predict(x), x, precision="int16x8",
                     layer_names=[ly.name for ly in loaded.model.layers])  # fmt: skip
    assert e.value.layer == "dead_depthwise" and e.value.op == "DEPTHWISE_CONV_2D"
    assert "truncated" not in str(e.value) and "layer 'dead_depthwise'" in str(e.value)


# ConvNeXtTiny itself (105 s here) runs in benchmarks/coverage.py; its two blockers, exact GELU
# (Erf) with grouped convolutions to ONNX and LayerScale through the bridge, are tested in
# miniature in test_coverage_units.py.
