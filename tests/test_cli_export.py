"""`edgekit export` through click's CliRunner: the table, --json, ONNX, and one-line errors (exit 2)
that leave nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import invoke, one_line_error
from test_export_android import LABELS, tiny_model_and_data

from edgekit.runtimes import open_runner


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_and_data(tmp_path_factory.mktemp("cli_tiny"), n=160)


def test_export_android_table(tiny, tmp_path):
    model, data = tiny
    r = invoke("export", model, "--data", data, "--android", "--out", tmp_path, "--author", "me")
    assert r.exit_code == 0, r.output
    out = tmp_path / "tiny_float32.tflite"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MODEL.md", "labels.txt", out.name]
    for words in ("edgekit export", "tflite / float32", "passed", "top-1 accuracy",
                  "measured on this machine", "Android metadata", "labels.txt", "Machine for the measured figures"):  # fmt: skip
        assert words in r.stdout, words


def test_export_onnx_dynamic_json(tiny, tmp_path):
    model, data = tiny
    out = tmp_path / "m.onnx"
    r = invoke("export", model, "--format", "onnx", "--quantize", "dynamic", "--data", data,
               "--out", out, "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["output"] == str(out) and rep["format"] == "onnx" and rep["precision"] == "dynamic"
    assert rep["verification"]["passed"] is True and rep["verification"]["inputs"] == "eval split"
    assert rep["android"] is None and rep["accuracy"]["source"] == "measured on this machine"
    assert rep["size_bytes"] == out.stat().st_size
    with open_runner(out) as r2:
        assert r2.format == "onnx"
    # The temporary float model ONNX quantization starts from is not left behind.
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_default_output_name_and_random_verification(tiny, tmp_path, monkeypatch):
    model, _ = tiny
    monkeypatch.chdir(tmp_path)
    r = invoke("export", model, "--quantize", "float16", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["output"] == "tiny_float16.tflite" and (tmp_path / "tiny_float16.tflite").exists()
    assert rep["verification"]["inputs"].startswith("random pixels")
    assert rep["accuracy"] is None and rep["latency"]["p50_ms"] > 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--format", "pb"], "--format must be one of tflite, onnx"),
        (["--quantize", "int4"], "--quantize must be one of"),
        (["--format", "onnx", "--quantize", "float16"], "exists for TFLite only"),
        (["--io-type", "int8"], "needs a full-integer TFLite model"),
        (["--format", "onnx", "--android"], "needs --format tflite"),
        (["--quantize", "int8"], "calibrates on real images: pass --data"),
        (["--android"], "needs the class labels"),
        (["--out", "x.onnx"], "does not end in .tflite"),
        (["--mean", "a,b"], "--mean takes a number"),
    ],
)
def test_bad_input_one_line_nothing_written(tiny, tmp_path, monkeypatch, args, words):
    model, _ = tiny
    monkeypatch.chdir(tmp_path)
    err = one_line_error(invoke("export", model, *args))
    assert words in err, err
    assert list(tmp_path.iterdir()) == []


def test_label_count_mismatch_and_missing_labels_file(tiny, tmp_path):
    model, _ = tiny
    labels = tmp_path / "labels.txt"
    labels.write_text("one\ntwo\n")
    err = one_line_error(
        invoke("export", model, "--android", "--labels", labels, "--out", tmp_path / "o")
    )
    assert "3 scores but 2 labels" in err
    err = one_line_error(invoke("export", model, "--android", "--labels", tmp_path / "nope.txt"))
    assert "does not exist" in err
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []


def test_onnx_or_tflite_input_cannot_be_converted_again(tiny, tmp_path):
    model, data = tiny
    out = tmp_path / "t.tflite"
    assert invoke("export", model, "--out", out).exit_code == 0
    err = one_line_error(invoke("export", out, "--quantize", "int8", "--data", data))
    assert "already a .tflite" in err and "--android" in err
    err = one_line_error(
        invoke("export", out, "--android", "--labels", _labels(tmp_path), "--out", out)
    )
    assert "never overwrites" in err


def test_wrong_image_size_data(tiny, tmp_path):
    import numpy as np

    model, _ = tiny
    data = tmp_path / "gray.npz"
    np.savez(
        data, x=np.zeros((20, 16, 16, 1), np.uint8), y=np.arange(20) % 3, labels=np.array(LABELS)
    )
    err = one_line_error(invoke("export", model, "--data", data, "--out", tmp_path / "o"))
    assert "(16, 16, 1)" in err and "(16, 16, 3)" in err


def _labels(folder: Path) -> Path:
    p = folder / "names.txt"
    p.write_text("\n".join(LABELS) + "\n")
    return p
