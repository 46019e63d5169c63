"""`edgekit export --android`: TFLite model metadata written from the published schema, read back by
our reader and by an independent one (tflite-support's MetadataDisplayer, in an isolated virtual
environment), and the annotated model run in LiteRT. Real TensorFlow converter and LiteRT.
"""

from __future__ import annotations

import ctypes.util
import fcntl
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgekit import api
from edgekit.errors import UsageError
from edgekit.export import android as A
from edgekit.export.tflite import inspect_tflite
from edgekit.runtimes import open_runner

LABELS = ["circle", "square", "triangle"]
TFLITE_SUPPORT = "tflite-support==0.4.4"  # the last release; its wheels cover Python 3.11


def tiny_model_and_data(folder: Path, n: int = 240) -> tuple[Path, Path]:
    """A tiny Keras 3 classifier (16x16 RGB -> 3 classes, softmax) and a labeled .npz of pixels."""
    from models import keras3_classifier

    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "tiny.keras"
    keras_model = keras3_classifier()
    keras_model.save(model)
    rng = np.random.default_rng(0)
    x = (rng.random((n, 16, 16, 3)) * 255).astype(np.uint8)
    y = rng.integers(0, 3, n)
    data = folder / "data.npz"
    np.savez(data, x=x, y=y, labels=np.array(LABELS))
    return model, data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_and_data(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def android_f32(tiny, tmp_path_factory):
    model, data = tiny
    return api.export(model, data=data, android=True, out=tmp_path_factory.mktemp("f32"))


@pytest.fixture(scope="module")
def android_int8(tiny, tmp_path_factory):
    model, data = tiny
    return api.export(
        model,
        quantize="int8",
        io_type="int8",
        data=data,
        android=True,
        out=tmp_path_factory.mktemp("int8") / "tiny_shapes.tflite",
        name="Tiny shapes",
        author="edgekit tests",
        license="Apache-2.0",
        version="2.1",
    )


@pytest.fixture(scope="module")
def plain_int8(tiny, tmp_path_factory):
    model, data = tiny
    return api.export(
        model, quantize="int8", io_type="int8", data=data, out=tmp_path_factory.mktemp("plain")
    )


def test_metadata_fields(android_int8):
    path = Path(android_int8["output"])
    meta = A.read_metadata(path)
    assert meta == android_int8["android"]["metadata"]
    assert (meta["name"], meta["version"], meta["author"], meta["license"]) == (
        "Tiny shapes",
        "2.1",
        "edgekit tests",
        "Apache-2.0",
    )
    assert "3 classes (circle, square, triangle)" in meta["description"]
    assert meta["min_parser_version"] == "1.0.0"
    (sub,) = meta["subgraph_metadata"]
    (tin,) = sub["input_tensor_metadata"]
    assert tin["content"]["content_properties_type"] == "ImageProperties"
    assert tin["content"]["content_properties"] == {
        "color_space": "RGB",
        "default_size": {"width": 16, "height": 16},
    }
    assert tin["process_units"] == [
        {"options_type": "NormalizationOptions", "options": {"mean": [0.0], "std": [255.0]}}
    ]
    assert "quantized to int8" in tin["description"]
    assert "stats" not in tin  # an int8 input: tflite-support records no value range either
    (tout,) = sub["output_tensor_metadata"]
    assert tout["name"] == "probability"
    assert tout["associated_files"] == [
        {
            "name": "labels.txt",
            "description": "Labels for the class scores, one per line, in output order.",
            "type": "TENSOR_AXIS_LABELS",
        }
    ]
    # The labels travel inside the model (zip appended) and beside it.
    beside = Path(android_int8["android"]["labels_file"])
    assert beside.read_text() == "circle\nsquare\ntriangle\n"
    assert A.associated_files(path) == {"labels.txt": beside.read_bytes()}


def test_annotated_model_runs_in_litert_exactly_like_the_plain_one(android_int8, plain_int8):
    x = np.random.default_rng(4).random((16, 16, 16, 3), dtype=np.float32)
    with open_runner(android_int8["output"]) as a, open_runner(plain_int8["output"]) as b:
        ya, yb = a.run(x)[0], b.run(x)[0]
        assert a.input.dtype == "int8"
    assert np.array_equal(ya, yb)
    assert android_int8["android"]["litert_check"]["outputs_identical_to_plain_model"] is True
    ia, ib = inspect_tflite(android_int8["output"]), inspect_tflite(plain_int8["output"])
    assert ia["ops"] == ib["ops"] and ia["inputs"] == ib["inputs"]
    assert A.read_metadata(plain_int8["output"]) is None


def test_populate_is_idempotent_and_keeps_buffers_aligned(plain_int8, android_f32):
    plain = Path(plain_int8["output"]).read_bytes()
    info = inspect_tflite(plain)
    spec = A.AndroidMetadata(name="m", labels=LABELS, mean=(0.0,), std=(255.0,))
    meta = A.build_metadata(info, spec)
    once = A.populate(plain, meta, {"labels.txt": b"a\nb\nc\n"})
    assert A.populate(once, meta, {"labels.txt": b"a\nb\nc\n"}) == once
    assert A.metadata_buffer(once) == meta
    from ai_edge_litert import schema_py_generated as schema

    m = schema.Model.GetRootAs(once, 0)
    base = np.frombuffer(once, np.uint8).ctypes.data
    offsets = [
        m.Buffers(i).DataAsNumpy().ctypes.data - base
        for i in range(m.BuffersLength())
        if m.Buffers(i).DataLength()
    ]
    assert offsets and all(o % 16 == 0 for o in offsets)  # the schema's force_align: 16


def test_float_export_metadata_and_model_card(android_f32):
    meta = android_f32["android"]["metadata"]
    tin = meta["subgraph_metadata"][0]["input_tensor_metadata"][0]
    assert tin["stats"] == {"max": [1.0], "min": [0.0]}  # (pixels - 0) / 255
    tout = meta["subgraph_metadata"][0]["output_tensor_metadata"][0]
    assert tout["stats"] == {"max": [1.0], "min": [0.0]}
    card = Path(android_f32["android"]["model_card"]).read_text()
    acc, lat = android_f32["accuracy"], android_f32["latency"]
    assert f"top-1 {acc['top1'] * 100:.2f}% on {acc['samples']} held-out images" in card
    assert f"p50 {lat['p50_ms']:.3f} ms" in card
    assert card.count("Source: measured on this machine") == 2
    assert "```kotlin" in card and "Interpreter(FileUtil.loadMappedFile(context" in card
    assert "NormalizeOp(floatArrayOf(0f), floatArrayOf(255f))" in card
    assert (
        "QuantizeOp" not in card
        and "import org.tensorflow.lite.support.common.ops.QuantizeOp" not in card
    )
    assert "[1, 16, 16, 3] (batch dimension dynamic" in card


def test_int8_model_card_quantizes_by_hand(android_int8):
    card = Path(android_int8["android"]["model_card"]).read_text()
    q = android_int8["conversion"]["inputs"][0]["quantization"]
    assert f"q = round(x / {q['scale']:.8g}) + {q['zero_point']}" in card
    assert "coerceIn(-128, 127).toByte()" in card  # no CastOp for INT8 in the support library
    assert "Dequantize:" in card


def test_normalization_given_for_an_int8_input_it_does_not_fit(android_int8, tmp_path):
    """The int8 input is quantized for (pixels - 0) / 255 in [0, 1]; metadata claiming
    (pixels - 0) / 1 would make apps feed [0, 255] into it."""
    out = tmp_path / "bad.tflite"
    with pytest.raises(UsageError) as e:
        api.export(android_int8["output"], android=True, mean=0.0, std=1.0, labels=LABELS, out=out)
    msg = str(e.value)
    assert (
        "maps pixels 0..255 to [0, 255]" in msg
        and "int8 input is already quantized for [0, " in msg
    )
    assert "Pass the --mean/--std the model was calibrated with" in msg
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_tflite_gets_metadata(plain_int8, tmp_path):
    labels = tmp_path / "names.txt"
    labels.write_text("circle\nsquare\ntriangle\n")
    rep = api.export(plain_int8["output"], android=True, labels=labels, out=tmp_path / "out/")
    assert rep["verification"]["skipped"] == "not converted by edgekit"
    assert rep["accuracy"] is None and rep["latency"]["source"] == "measured on this machine"
    meta = A.read_metadata(rep["output"])
    assert meta["subgraph_metadata"][0]["output_tensor_metadata"][0]["name"] == "probability"
    with open_runner(rep["output"]) as r:
        assert r.run(np.zeros((1, 16, 16, 3), np.float32))[0].shape == (1, 3)


def test_logits_output_is_described_as_logits(tmp_path):
    from models import keras3_sequential

    keras_model = keras3_sequential()
    keras_model.save(tmp_path / "seq.keras")
    rep = api.export(tmp_path / "seq.keras", android=True, labels=LABELS, out=tmp_path / "o/")
    tout = rep["android"]["metadata"]["subgraph_metadata"][0]["output_tensor_metadata"][0]
    assert tout["name"] == "logits" and "apply a softmax" in tout["description"]
    assert "stats" not in tout
    assert rep["verification"]["inputs"].startswith("random pixels")


def test_check_options_refusals():
    info = {
        "inputs": [{"shape": [-1, 16, 16, 3], "dtype": "float32", "quantization": None}],
        "outputs": [{"shape": [-1, 3], "dtype": "float32", "name": "output_0"}],
    }
    ok = A.AndroidMetadata(name="m", labels=LABELS, mean=(0.0,), std=(255.0,))
    A.check_options(info, ok, normalization_given=False)
    cases = [
        (A.AndroidMetadata(name="m", labels=LABELS[:2], mean=(0.0,), std=(255.0,)), "3 scores but 2 labels"),
        (A.AndroidMetadata(name="m", labels=LABELS, mean=(0.0, 1.0), std=(255.0,)), "--mean has 2 values"),
        (A.AndroidMetadata(name="m", labels=LABELS, mean=(0.0,), std=(0.0,)), "--std must be non-zero"),
        (A.AndroidMetadata(name="m", labels=[], mean=(0.0,), std=(255.0,)), "needs the class labels"),
    ]  # fmt: skip
    for spec, words in cases:
        with pytest.raises(UsageError, match=words.replace("(", r"\(")):
            A.check_options(info, spec, normalization_given=True)


# --- the independent read-back: tflite-support in its own virtual environment -------------------


READ_BACK = textwrap.dedent(
    """
    import json, sys
    from tflite_support import metadata as md
    from tensorflow_lite_support.metadata.cc.python import _pywrap_metadata_version as version
    from tflite_support.metadata_writers import image_classifier, writer_utils

    model, plain, labels, mean, std = sys.argv[1:6]
    d = md.MetadataDisplayer.with_model_file(model)
    files = d.get_packed_associated_file_list()
    out = {
        "metadata": json.loads(d.get_metadata_json()),
        "files": files,
        "labels": d.get_associated_file_buffer("labels.txt").decode() if "labels.txt" in files else None,
        "min_parser_version": version.GetMinimumMetadataParserVersion(bytes(d.get_metadata_buffer())),
    }
    # tflite-support's own writer on the same model without metadata, for comparison.
    w = image_classifier.MetadataWriter.create_for_inference(
        writer_utils.load_file(plain), [float(mean)], [float(std)], [labels])
    out["reference"] = json.loads(w.get_metadata_json())
    print("READBACK " + json.dumps(out))
    """
)


@pytest.fixture(scope="session")
def tflite_support_python(pytestconfig) -> str:
    """Python of a cached virtual environment with tflite-support (which pins protobuf < 4 and so
    cannot sit beside current TensorFlow)."""
    if ctypes.util.find_library("usb-1.0") is None:
        pytest.skip(
            "tflite-support's Python package loads libusb-1.0 when imported and it is not installed "
            "(Debian: apt-get install -y libusb-1.0-0); the independent metadata read-back needs it"
        )
    root = Path(pytestconfig.cache.mkdir("tflite-support-venv"))
    venv = root / "venv"
    python = venv / "bin" / "python"
    done = venv / ".installed"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one xdist worker builds it, the other waits
        if not done.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            proc = subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", TFLITE_SUPPORT],
                capture_output=True,
                text=True,
                timeout=900,
            )
            if proc.returncode != 0:
                pytest.fail(f"pip install {TFLITE_SUPPORT} failed: {proc.stderr[-1500:]}")
            done.write_text(TFLITE_SUPPORT)
    return str(python)


def read_back(
    python: str, model: str | Path, plain: str | Path, labels: str | Path, mean, std
) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run(
        [python, "-c", READ_BACK, str(model), str(plain), str(labels), str(mean), str(std)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("READBACK ")), None)
    assert line is not None, proc.stderr[-3000:]
    return json.loads(line[len("READBACK ") :])


@pytest.mark.slow
@pytest.mark.parametrize("which", ["android_f32", "android_int8"])
def test_tflite_support_reads_the_metadata_back(
    which, request, tflite_support_python, tiny, tmp_path
):
    rep = request.getfixturevalue(which)
    ours = A.read_metadata(rep["output"])
    # The same model without metadata, for tflite-support's own writer to annotate.
    plain = _write(tmp_path / "plain.tflite", _strip(Path(rep["output"]).read_bytes()))
    got = read_back(
        tflite_support_python, rep["output"], plain, rep["android"]["labels_file"], 0.0, 255.0
    )
    assert got["metadata"] == ours  # every field, as tflite-support's flatbuffers parser reads it
    assert got["files"] == ["labels.txt"] and got["labels"] == "circle\nsquare\ntriangle\n"
    assert got["min_parser_version"] == ours["min_parser_version"] == "1.0.0"
    ref = got["reference"]["subgraph_metadata"][0]
    mine = ours["subgraph_metadata"][0]
    # (tflite-support writes an empty stats table where we write none.)
    for key in ("process_units", "stats"):
        a = mine["input_tensor_metadata"][0].get(key) or None
        assert a == (ref["input_tensor_metadata"][0].get(key) or None)
    ref_color = ref["input_tensor_metadata"][0]["content"]["content_properties"]["color_space"]
    assert (
        mine["input_tensor_metadata"][0]["content"]["content_properties"]["color_space"]
        == ref_color
    )
    ro, mo = ref["output_tensor_metadata"][0], mine["output_tensor_metadata"][0]
    assert mo["name"] == ro["name"] and (mo.get("stats") or None) == (ro.get("stats") or None)
    assert [(f["name"], f["type"]) for f in mo["associated_files"]] == [
        (f["name"], f["type"]) for f in ro["associated_files"]
    ]


def _strip(model: bytes) -> bytes:
    """The model without its TFLITE_METADATA entry (the appended zip goes with the re-pack)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model, 0))
    m.metadata = [e for e in m.metadata if e.name.decode() != A.METADATA_NAME]
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), b"TFL3")
    return bytes(b.Output())


@pytest.mark.slow
def test_example_student_android_export_reads_back_and_runs(tflite_support_python, tmp_path):
    """The distill recipe's student (as built by the recipe) on shapes data, int8 with float I/O,
    Android-ready: tflite-support reads the metadata, LiteRT runs the file."""
    from edgekit.keras_compat import save_model
    from edgekit.recipes import load_recipe
    from edgekit.stages.students import build_student

    student = build_student(load_recipe("distill").stages[0].student, (32, 32, 3), 4, seed=0)
    path = save_model(student, tmp_path / "student.keras")
    rep = api.export(
        path,
        quantize="int8",
        data="shapes:size=32,n=200,classes=4",
        android=True,
        out=tmp_path / "android/",
        name="edgekit example student",
    )
    assert rep["verification"]["passed"] is True
    meta = A.read_metadata(rep["output"])
    labels = Path(rep["android"]["labels_file"]).read_text().split()
    assert len(labels) == 4
    got = read_back(
        tflite_support_python,
        rep["output"],
        _write(tmp_path / "plain.tflite", _strip(Path(rep["output"]).read_bytes())),
        rep["android"]["labels_file"],
        0.0,
        255.0,
    )
    assert got["metadata"] == meta and got["files"] == ["labels.txt"]
    with open_runner(rep["output"]) as r:
        scores = r.run(np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32))[0]
    assert scores.shape == (2, 4) and np.isfinite(scores).all()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
