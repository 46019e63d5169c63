"""Every promise of docs/security.md, tested: what edgekit runs from a model or data file and
when, how the ssh target quotes what it runs, and that no report, manifest or log holds the
environment. Real Keras, TensorFlow, LiteRT and ONNX Runtime; each hostile file tries to write a
marker file, and the test checks that it could not.
"""

from __future__ import annotations

import json
import pickle
import re
import shlex
import zipfile
from pathlib import Path

import numpy as np
import pytest
from check_models import build_onnx_models, labels_for, make_pixels, save_npz
from cli_helpers import invoke, one_line_error

import edgekit

DOC = Path(edgekit.__file__).resolve().parents[1] / "docs" / "security.md"


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    return build_onnx_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def onnx_data(onnx_models, tmp_path_factory):
    pixels = make_pixels(120)
    path = tmp_path_factory.mktemp("data") / "eval.npz"
    return save_npz(path, pixels, labels_for(onnx_models["base"], pixels))


# -- model files ------------------------------------------------------------------------------


def _lambda_writing(marker: Path):
    """A lambda whose code writes `marker` whenever it runs (a stand-in for any code)."""
    return eval(f"lambda x: x + 0.0 * len(open({str(marker)!r}, 'w').write('ran') * [1])")


@pytest.mark.parametrize("flavour", ["keras3.keras", "tf_keras.h5"])
def test_lambda_layer_code_never_runs_without_unsafe(tmp_path, flavour):
    from edgekit.keras_compat import keras, load_model, tf_keras

    marker = tmp_path / "MARKER"
    k = keras() if flavour.startswith("keras3") else tf_keras()
    inp = k.Input((8, 8, 3))
    h = k.layers.Lambda(_lambda_writing(marker))(inp)
    model = k.Model(inp, k.layers.Dense(4)(k.layers.Flatten()(h)))
    path = tmp_path / flavour
    model.save(path)
    marker.unlink()  # building the model ran the lambda once, here, on purpose
    err = one_line_error(invoke("export", path, "--out", tmp_path / "m.tflite"))
    assert "Lambda layer" in err and "--unsafe" in err
    assert not marker.exists() and not (tmp_path / "m.tflite").exists()
    load_model(path, unsafe=True)  # with --unsafe the file's code runs: that is what it means
    assert marker.read_text() == "ran"


def test_keras_config_cannot_import_other_modules(tmp_path):
    """A .keras whose config names a function of another module (os.system) is refused; Keras's
    safe mode (on unless --unsafe) imports nothing outside keras."""
    from edgekit.keras_compat import keras

    k = keras()
    inp = k.Input((8, 8, 3))
    k.Model(inp, k.layers.Dense(4, activation="relu")(k.layers.Flatten()(inp))).save(
        tmp_path / "ok.keras"
    )
    marker = tmp_path / "MARKER"
    with zipfile.ZipFile(tmp_path / "ok.keras") as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])
    dense = next(L for L in config["config"]["layers"] if L["class_name"] == "Dense")
    dense["config"]["activation"] = {
        "module": "os",
        "class_name": "function",
        "config": "system",
        "registered_name": "system",
    }
    files["config.json"] = json.dumps(config).replace("ok.keras", "x").encode()
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(bad, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    err = one_line_error(invoke("export", bad, "--out", tmp_path / "m.tflite"))
    assert "'system'" in err
    assert not marker.exists() and not (tmp_path / "m.tflite").exists()


def _file_writing_savedmodel(path: Path, marker: Path, *, writes: bool) -> Path:
    import tensorflow as tf

    class Classifier(tf.Module):
        def __init__(self):
            self.w = tf.Variable(tf.ones((8 * 8 * 3, 4)) / 100)

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)])
        def __call__(self, x):
            if writes:
                tf.io.write_file(str(marker), tf.strings.as_string(tf.reduce_sum(x)))
            return tf.matmul(tf.reshape(x, [-1, 8 * 8 * 3]), self.w)

    m = Classifier()
    tf.saved_model.save(m, str(path), signatures=m.__call__)
    return path


def test_savedmodel_that_writes_files_is_refused_before_it_runs(tmp_path, onnx_data):
    from edgekit.keras_compat import load_model
    from edgekit.modelscan import file_ops

    marker = tmp_path / "MARKER"
    bad = _file_writing_savedmodel(tmp_path / "bad", marker, writes=True)
    good = _file_writing_savedmodel(tmp_path / "good", marker, writes=False)
    assert [op for op, _ in file_ops(bad)] == ["WriteFile"] and file_ops(good) == []
    for args in (["eval", bad, "--data", onnx_data], ["bench", bad, "--runs", "2"]):
        err = one_line_error(invoke(*args))
        assert "SavedModel whose graph can run WriteFile" in err and "--unsafe" in err
    assert not marker.exists()
    r = invoke("eval", good, "--data", onnx_data, "--json")
    assert r.exit_code == 0, r.output
    # the same graph run with unsafe=True does write: the check is what keeps it from running
    load_model(bad, unsafe=True).predict(np.zeros((1, 8, 8, 3), np.float32))
    assert marker.exists()


def test_tflite_with_tensorflow_ops_cannot_run_them(tmp_path):
    """A .tflite carrying a TensorFlow op (Flex WriteFile) fails to load: edgekit's LiteRT has
    no Flex delegate and registers no custom ops."""
    import tensorflow as tf

    marker = tmp_path / "MARKER"
    sm = _file_writing_savedmodel(tmp_path / "bad", marker, writes=True)
    conv = tf.lite.TFLiteConverter.from_saved_model(str(sm))
    conv.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS,
        tf.lite.OpsSet.SELECT_TF_OPS,
    ]
    flex = tmp_path / "flex.tflite"
    flex.write_bytes(conv.convert())
    assert b"FlexWriteFile" in flex.read_bytes()
    err = one_line_error(invoke("bench", flex, "--runs", "2"))
    assert "Select TensorFlow op" in err
    assert not marker.exists()


def test_onnx_ops_of_unknown_domains_do_not_load(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Exec", ["x"], ["y"], domain="com.example.shell", command="touch")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example.shell", 1)],
    )
    onnx.save(model, tmp_path / "custom.onnx")
    err = one_line_error(invoke("bench", tmp_path / "custom.onnx", "--runs", "2"))
    assert "com.example.shell:Exec" in err and "not a registered" in err


# -- data and YAML files -----------------------------------------------------------------------


class _WritesWhenUnpickled:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("ran",))


def test_data_files_are_never_unpickled(tmp_path, onnx_models):
    marker = tmp_path / "MARKER"
    y = np.array([_WritesWhenUnpickled(str(marker))] * 4, dtype=object)
    np.savez(tmp_path / "evil.npz", x=make_pixels(4), y=y)
    assert b"write_text" in pickle.dumps(y)
    err = one_line_error(invoke("eval", onnx_models["base"], "--data", tmp_path / "evil.npz"))
    assert "evil.npz" in err
    assert not marker.exists()


@pytest.mark.parametrize("command", [["recipes", "show"], ["devices", "show"]])
def test_yaml_files_cannot_run_python(tmp_path, command):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.yaml"
    path.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\nstages: []\n')
    err = one_line_error(invoke(*command, path))
    assert "evil.yaml" in err and "python/object/apply:os.system" in err
    assert not marker.exists()


# -- remote targets ----------------------------------------------------------------------------

HOSTILE = ["python3; touch /tmp/edgekit-pwned", "$(reboot)", "`id`", "a b", "'", "x\ny", "-rf"]


def test_ssh_remote_command_is_quoted_word_by_word():
    from edgekit.targets.ssh import SshOptions, SshSession, SshTarget

    s = SshSession(SshTarget.parse("ssh://pi@board.local:2222"), SshOptions(python=HOSTILE[0]))
    argv = s.ssh_argv([*HOSTILE, "/tmp/edgekit.x/job.json"])
    assert argv[argv.index("--") + 1] == "pi@board.local"
    # the remote shell splits the one command string back into exactly these words
    assert shlex.split(argv[-1]) == [*HOSTILE, "/tmp/edgekit.x/job.json"]
    assert "BatchMode=yes" in argv and "StrictHostKeyChecking=accept-new" in argv


@pytest.mark.parametrize(
    "url",
    [
        "ssh://-oProxyCommand=touch@x",
        "ssh://pi@-oProxyCommand=x",
        "ssh://pi@host/cmd",
        "ssh://p%20i@h",
    ],
)
def test_ssh_targets_that_ssh_would_read_as_options_are_refused(url):
    err = one_line_error(invoke("bench", "model.tflite", "--target", url))
    assert "ssh" in err


def test_the_board_gets_generated_names_not_local_paths(tmp_path, onnx_models):
    from edgekit.artifacts import ModelArtifact
    from edgekit.plans import BenchPlan
    from edgekit.targets.jobs import bench_job, stage_job

    model = tmp_path / "secret-project" / "customer-model.tflite"
    model.parent.mkdir()
    model.write_bytes(b"x" * 64)
    plan = BenchPlan(threads=1, batch=1, warmup=1, warmup_seconds=0, runs=2, seed=0)
    files, job = bench_job([ModelArtifact(path=str(model), format="tflite")], plan)
    stage = tmp_path / "stage"
    stage.mkdir()
    stage_job(stage, files, job)
    assert sorted(p.name for p in stage.iterdir()) == [
        "job.json",
        "model0.tflite",
        "remote_runner.py",
    ]
    assert "secret-project" not in (stage / "job.json").read_text()


# -- secrets -----------------------------------------------------------------------------------

CANARY = "canary-7f3a9e-not-for-reports"


def _texts(folder: Path) -> dict[str, str]:
    out = {}
    for p in folder.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".md", ".log", ".xml", ".txt", ".lock", ""):
            out[str(p)] = p.read_text(errors="replace")
    return out


def test_reports_manifests_and_logs_hold_no_environment(
    tmp_path, monkeypatch, onnx_models, onnx_data
):
    from edgekit.keras_compat import keras

    for var in ("EDGEKIT_TEST_TOKEN", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "HF_TOKEN"):
        monkeypatch.setenv(var, CANARY)
    k = keras()
    inp = k.Input((8, 8, 3))
    k.Model(inp, k.layers.Dense(4)(k.layers.Flatten()(inp))).save(tmp_path / "teacher.keras")
    run = tmp_path / "run"
    outputs = [
        invoke("compress", tmp_path / "teacher.keras", "--data", onnx_data, "--recipe", "quantize",
               "--out", run, "--json", "--set", "quantize.modes=[int8]", "--set",
               "quantize.formats=[tflite]", "--set", "export.formats=[tflite]", "--set",
               "latency_runs=2", "--set", "verify.min_agreement=0.1", "--set",
               "quantize.calibration_samples=16"),
        invoke("baseline", "create", onnx_models["base"], "--data", onnx_data, "--out",
               tmp_path / "baseline.json", "--latency-seconds", "0.3", "--json"),
        invoke("check", onnx_models["base"], "--baseline", tmp_path / "baseline.json",
               "--junit", tmp_path / "junit.xml", "--json", "--no-config", "--no-latency"),
        invoke("bench", onnx_models["base"], "--runs", "3", "--json"),
        invoke("eval", onnx_models["base"], "--data", onnx_data, "--json"),
    ]  # fmt: skip
    for r in outputs:
        assert r.exit_code == 0, r.output
    texts = {f"stdout {i}": r.output for i, r in enumerate(outputs)} | _texts(tmp_path)
    assert any(name.endswith("manifest.json") for name in texts)
    assert any(name.endswith("run.log") for name in texts)
    for name, text in texts.items():
        assert CANARY not in text, name
        assert "/.ssh/" not in text, name  # no key paths edgekit found by itself
        assert "PATH=" not in text and "HOME=" not in text, name


def test_every_promise_in_docs_security_names_a_test_that_exists():
    text = DOC.read_text()
    refs = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text)
    assert len(refs) >= 15
    for file, name in refs:
        source = (DOC.parents[1] / file).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), f"{file}::{name} is not a test"
