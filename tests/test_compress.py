"""End-to-end compress runs on tiny settings, through the CLI, against real TF / tfmot / LiteRT / ORT.

The teacher is a small Keras 3 CNN trained for a few seconds on 32x32 digits; every bundled recipe
runs on it with epochs and sample counts cut down via --set.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import cli

# The fixtures below are session-scoped: a worker may run other modules' tests between this
# module's, and module-scoped ones would then be rebuilt (a teacher and a distill run each time).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("compress")]

TINY = [
    "latency_runs=3",
    "verify.samples=64",
    "data.max_eval_samples=120",
]


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory) -> Path:
    """600 digits at 32x32 RGB (a subset keeps the runs short)."""
    from edgekit.data import load_dataset

    ds = load_dataset("digits:size=32")
    idx = np.random.default_rng(0).permutation(len(ds))[:600]
    path = tmp_path_factory.mktemp("data") / "digits600.npz"
    np.savez(path, x=ds.x[idx], y=ds.y[idx], labels=np.array(ds.labels))
    return path


@pytest.fixture(scope="session")
def teacher_keras3(tmp_path_factory, digits_npz) -> Path:
    from edgekit.keras_compat import keras

    k = keras()
    k.utils.set_random_seed(0)
    d = np.load(digits_npz)
    x, y = d["x"].astype("float32") / 255.0, d["y"]
    inp = k.Input((32, 32, 3))
    h = k.layers.Conv2D(16, 3, activation="relu", padding="same")(inp)
    h = k.layers.MaxPooling2D()(h)
    h = k.layers.Conv2D(32, 3, activation="relu", padding="same")(h)
    h = k.layers.GlobalAveragePooling2D()(h)
    out = k.layers.Dense(10)(h)
    model = k.Model(inp, out)
    model.compile(
        "adam", k.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("teacher") / "teacher.keras"
    model.save(path)
    return path


def run_cli(args: list[str]):
    # env= is set for the call only: other tests in this worker still see progress lines
    return CliRunner(env={"EDGEKIT_QUIET": "1"}).invoke(cli, args, catch_exceptions=False)


def compress(teacher, data, out, recipe, *extra):
    args = [
        "compress",
        str(teacher),
        "--recipe",
        recipe,
        "--data",
        str(data),
        "--out",
        str(out),
        "--json",
    ]
    for s in [*TINY, *extra]:
        args += ["--set", s]
    return run_cli(args)


@pytest.fixture(scope="session")
def distill_run(tmp_path_factory, teacher_keras3, digits_npz):
    out = tmp_path_factory.mktemp("runs") / "distill"
    r = compress(
        teacher_keras3,
        digits_npz,
        out,
        "distill",
        "distill.epochs=3",
        "quantize.calibration_samples=64",
    )
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout)


def test_distill_writes_four_verified_exports(distill_run):
    out, report = distill_run
    assert report == json.loads((out / "report.json").read_text())
    by_kind = {(a["format"], a["precision"]): a for a in report["artifacts"]}
    assert {
        ("keras", "float32"),
        ("tflite", "float32"),
        ("onnx", "float32"),
        ("tflite", "int8"),
        ("onnx", "int8"),
    } <= set(by_kind)
    for key in [("tflite", "float32"), ("onnx", "float32")]:
        v = by_kind[key]["verification"]
        assert v["passed"] and v["max_abs_error"] < 1e-3
    for key in [("tflite", "int8"), ("onnx", "int8")]:
        v = by_kind[key]["verification"]
        assert v["passed"] and v["top1_agreement"] >= 0.9
    for a in report["artifacts"]:
        assert (out / a["path"]).exists()
        for field in (
            "size_bytes",
            "parameters",
            "accuracy",
            "agreement_with_teacher",
            "latency_ms_p50",
        ):
            assert a[field] is not None, (a["path"], field)
        assert 0 <= a["accuracy"] <= 1
    ref = report["teacher_tflite"]
    assert (
        ref["format"] == "tflite" and ref["precision"] == "float32" and (out / ref["path"]).exists()
    )
    assert ref["agreement_with_teacher"] > 0.97 and report["ratios_against"].startswith(
        "teacher float32 TFLite"
    )
    int8 = by_kind[("tflite", "int8")]
    assert int8["size_ratio_to_teacher"] == round(ref["size_bytes"] / int8["size_bytes"], 3)
    t = report["teacher"]
    assert t["format"] == "keras" and t["agreement_with_teacher"] == 1.0 and t["latency_ms_p50"] > 0
    # the int8 TFLite is the deliverable and is much smaller than the float one
    assert report["final_artifact"].endswith("_int8.tflite")
    assert (
        by_kind[("tflite", "int8")]["size_bytes"]
        < by_kind[("tflite", "float32")]["size_bytes"] / 2.5
    )


def test_distill_run_folder(distill_run):
    out, report = distill_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["versions"]["tensorflow"].startswith("2.21")
    assert manifest["recipe"]["name"] == "distill"
    assert manifest["inputs"]["model"]["sha256"] == report["teacher"]["sha256"]
    assert all(manifest["outputs"].values())
    assert "distill: epoch 1/3" in (out / "run.log").read_text()
    md = (out / "report.md").read_text()
    assert "| artifact |" in md and "_int8.tflite" in md
    assert not list(out.glob("stages/.*partial"))


def test_rerun_reuses_every_stage(distill_run, teacher_keras3, digits_npz):
    out, first = distill_run
    r = compress(
        teacher_keras3,
        digits_npz,
        out,
        "distill",
        "distill.epochs=3",
        "quantize.calibration_samples=64",
    )
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert all(s["reused"] for s in report["stages"])
    assert [a["sha256"] for a in report["artifacts"]] == [a["sha256"] for a in first["artifacts"]]


def test_changed_config_reruns_from_that_stage(tmp_path, distill_run, teacher_keras3, digits_npz):
    import shutil

    src, _ = distill_run
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    # a killed run leaves a partial folder behind: it must be ignored and replaced
    (out / "stages" / ".02-quantize.partial").mkdir()
    shutil.rmtree(out / "stages" / "02-quantize")
    r = compress(
        teacher_keras3,
        digits_npz,
        out,
        "distill",
        "distill.epochs=3",
        "quantize.calibration_samples=32",
    )
    assert r.exit_code == 0, r.output
    reused = {s["stage"]: s["reused"] for s in json.loads(r.stdout)["stages"]}
    assert reused == {"distill": True, "export": True, "quantize": False}
    assert not (out / "stages" / ".02-quantize.partial").exists()


def test_quantize_recipe_every_mode(tmp_path, teacher_keras3, digits_npz):
    r = compress(
        teacher_keras3, digits_npz, tmp_path / "q", "quantize", "quantize.calibration_samples=64"
    )
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    tfl = {a["precision"] for a in report["artifacts"] if a["format"] == "tflite"}
    assert tfl == {"float32", "dynamic", "float16", "int8", "int16x8"}
    assert all(a["verification"]["passed"] for a in report["artifacts"] if a["format"] != "keras")


def test_prune_recipe_reaches_sparsity(tmp_path, teacher_keras3, digits_npz):
    r = compress(
        teacher_keras3,
        digits_npz,
        tmp_path / "p",
        "prune",
        "prune.epochs=1",
        "quantize.formats=[tflite]",
    )
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    prune = next(s for s in report["stages"] if s["stage"] == "prune")
    assert abs(prune["overall_sparsity"] - 0.5) < 0.05
    assert "bridge_max_abs_diff" in prune and prune["bridge_max_abs_diff"] < 1e-4


def test_full_recipe(tmp_path, teacher_keras3, digits_npz):
    r = compress(
        teacher_keras3, digits_npz, tmp_path / "f", "full",
        "distill.epochs=2", "prune.epochs=1", "qat.epochs=1", "verify.min_agreement=0.8",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    # channel_prune is in the recipe, off unless asked (channel_prune.enabled=true)
    assert [s["stage"] for s in report["stages"]] == [
        "distill", "channel_prune", "prune", "qat", "export"
    ]  # fmt: skip
    qat_tflite = next(a for a in report["artifacts"] if a["format"] == "tflite")
    assert qat_tflite["precision"] == "int8" and qat_tflite["verification"]["passed"]
    qat_onnx = next(a for a in report["artifacts"] if a["format"] == "onnx")
    # the fake-quant ONNX graph is judged like a quantized model: by top-1 agreement
    assert (
        qat_onnx["precision"] == "int8" and qat_onnx["verification"]["criterion"] != "max_abs_error"
    )
    assert qat_onnx["verification"]["passed"]


def test_onnx_teacher_distills(tmp_path, distill_run, digits_npz):
    """The teacher is only run for inference, so an ONNX teacher works too."""
    out, _ = distill_run
    onnx_teacher = next((out / "stages" / "01-export").glob("*.onnx"))
    r = compress(onnx_teacher, digits_npz, tmp_path / "o", "distill", "distill.epochs=1",
                 "quantize.formats=[tflite]", "export.formats=[tflite]")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["teacher"]["format"] == "onnx"


def test_budget_exceeded_exits_1_and_keeps_artifacts(tmp_path, teacher_keras3, digits_npz):
    out = tmp_path / "b"
    r = compress(teacher_keras3, digits_npz, out, "distill", "distill.epochs=1", "budget.max_accuracy_drop=0",
                 "quantize.formats=[tflite]", "export.formats=[tflite]")  # fmt: skip
    assert r.exit_code == 1
    assert "budget" in r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["budget"]["passed"] is False
    assert (out / report["final_artifact"]).exists()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--recipe", "distil"], "Known recipes"),
        (["--set", "distill.temperature=0"], "greater than 0"),
        (["--set", "prune.target_sparsity=0.5"], "has no 'prune' stage"),
    ],
)
def test_bad_recipe_input_exit_2(tmp_path, teacher_keras3, digits_npz, extra, fragment):
    out = tmp_path / "bad"
    r = run_cli(
        ["compress", str(teacher_keras3), "--data", str(digits_npz), "--out", str(out), *extra]
    )
    assert r.exit_code == 2 and fragment in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() or not any(out.iterdir())


def test_unlabeled_data_needs_alpha_zero(tmp_path, teacher_keras3, digits_npz):
    d = np.load(digits_npz)
    unlabeled = tmp_path / "unlabeled.npz"
    np.savez(unlabeled, x=d["x"])
    r = run_cli(
        ["compress", str(teacher_keras3), "--data", str(unlabeled), "--out", str(tmp_path / "u")]
    )
    assert r.exit_code == 2 and "needs labels" in r.stderr and "distill.alpha=0" in r.stderr


def test_missing_model_and_unwritable_out(tmp_path, teacher_keras3, digits_npz):
    r = run_cli(["compress", str(tmp_path / "nope.keras"), "--data", str(digits_npz)])
    assert r.exit_code == 2 and "does not exist" in r.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_cli(["compress", str(teacher_keras3), "--data", str(digits_npz), "--out", str(blocker)])
    assert r.exit_code == 2 and "not a folder" in r.stderr
