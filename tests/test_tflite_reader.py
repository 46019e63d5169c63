"""edgekit.tflite.reader (the one .tflite reader) and ModelArtifact.open, on the bundled reference
networks (files made by tools/make_reference_network.py, not by these tests); no TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgekit.artifacts import ModelArtifact, sha256_path
from edgekit.errors import ModelLoadError, UsageError
from edgekit.export.tflite import inspect_tflite
from edgekit.resources import asset
from edgekit.tflite.reader import COMPUTE_OPS, TFLiteModel

INT8 = asset("check_reference_int8.tflite")
FLOAT = asset("check_reference_float32.tflite")


def test_summary_is_inspect_tflite_and_the_same_from_bytes():
    m = TFLiteModel.read(INT8)
    assert m.summary() == inspect_tflite(INT8) == TFLiteModel.read(INT8.read_bytes()).summary()
    s = m.summary()
    assert s["integer_compute_ops"] > 0 and s["float_compute_ops"] == 0
    assert s["inputs"][0]["shape"][1:] == [128, 128, 3] and s["outputs"][0]["shape"][-1] == 10
    f = TFLiteModel.read(FLOAT).summary()
    assert f["float_compute_ops"] > 0 and f["integer_compute_ops"] == 0


def test_summary_is_a_copy():
    m = TFLiteModel.read(INT8)
    m.summary()["inputs"][0]["name"] = "changed"
    m.inputs.clear()
    assert m.summary()["inputs"][0]["name"] != "changed" and len(m.inputs) == 1


def test_graph_counts_the_tensors_and_ops_of_subgraph_0():
    m = TFLiteModel.read(INT8)
    g = m.graph()
    assert g is m.graph()  # read once
    assert len(g.ops) > 0 and all(
        0 <= i < len(g.tensors) for op in g.ops for i in op.inputs if i >= 0
    )
    assert [op.index for op in g.ops] == list(range(len(g.ops)))
    compute = [op for op in g.ops if op.name in COMPUTE_OPS]
    assert len(compute) == m.summary()["integer_compute_ops"]
    weights = [t for t in g.tensors if t.const]
    assert weights and all(t.nbytes > 0 for t in weights)
    assert g.inputs and g.outputs


def test_not_a_flatbuffer_is_one_usage_error(tmp_path):
    with pytest.raises(UsageError, match="TFL3"):
        TFLiteModel.read(b"not a model at all")
    p = tmp_path / "x.tflite"
    p.write_bytes(b"\0" * 64)
    with pytest.raises(UsageError, match="TFL3"):
        TFLiteModel.read(p)


def test_an_artifact_is_opened_once():
    art = ModelArtifact.open(INT8)
    assert art.format == "tflite" and art.name == INT8.name and str(INT8) == art.path
    assert ModelArtifact.open(art) is art
    assert art.tflite is art.tflite  # parsed once
    assert art.tflite.summary() == inspect_tflite(INT8)
    assert not art.sha256 and art.digest() == sha256_path(INT8) == art.sha256
    onnx = ModelArtifact.open(asset("check_reference_int8.onnx"))
    assert onnx.format == "onnx"
    with pytest.raises(UsageError, match=r"not a \.tflite"):
        _ = onnx.tflite
    with pytest.raises(ModelLoadError):
        ModelArtifact.open(INT8.with_name("missing.tflite"))


def test_reader_never_imports_tensorflow():
    code = (
        "import sys\nfrom edgekit.tflite.reader import TFLiteModel\nfrom edgekit.resources import asset\n"
        "TFLiteModel.read(asset('check_reference_int8.tflite')).graph()\n"
        "sys.exit('tensorflow' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
