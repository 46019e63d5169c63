"""`edgekit bench` and `edgekit eval` through click's CliRunner: tables, --json, exit codes and
one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import one_line_error
from click.testing import CliRunner
from test_runtimes_models import C, H, K, W, zoo

from edgekit.cli import cli
from edgekit.runtimes import available_targets


@pytest.fixture(scope="module")
def models(request):
    return zoo(request.config)


@pytest.fixture(scope="module")
def npz(models, tmp_path_factory):
    from edgekit.runtimes import open_runner

    x = (np.random.default_rng(5).random((40, H, W, C)) * 255).astype(np.uint8)
    y = open_runner(models["f32_dyn.onnx"]).run(x.astype(np.float32) / 255)[0].argmax(1)
    path = tmp_path_factory.mktemp("data") / "eval.npz"
    np.savez(path, x=x, y=y, labels=np.array(["a", "b", "c", "d"]))
    return path


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_bench_table(models):
    r = invoke("bench", models["int8_b1.tflite"], "--runs", "20")
    assert r.exit_code == 0, r.output
    for word in ("p50 (ms)", "p99 (ms)", "first inference", "litert", "XNNPACK", "Machine:"):
        assert word in r.stdout
    assert "Interleaved comparison" not in r.stdout


def test_bench_json_two_models_with_comparison(models):
    r = invoke(
        "bench", models["f32_dyn.tflite"], models["f32_dyn.onnx"], "--batch", "2", "--runs", "15",
        "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert [m["latency_ms"]["count"] for m in rep["models"]] == [15, 15]
    assert rep["settings"]["batch"] == 2 and rep["comparison"]["rows"][0]["ratio"] == 1.0
    assert rep["models"][1]["provider"] == "CPUExecutionProvider"


def test_bench_two_models_table_has_comparison(models):
    r = invoke("bench", models["f32_b1.tflite"], models["int8_b1.tflite"], "--min-seconds", "0.2")
    assert r.exit_code == 0, r.output
    assert "Interleaved comparison" in r.stdout and "95% CI" in r.stdout
    assert "throughput" not in r.stdout  # batch 1: no items/s row


def test_bench_options_reach_the_runtimes(models):
    r = invoke(
        "bench", models["f32_b1.tflite"], models["f32_dyn.onnx"], "--no-xnnpack",
        "--graph-optimization", "disabled", "--threads", "2", "--runs", "5", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    tfl, onx = json.loads(r.stdout)["models"]
    assert "reference" in tfl["delegate"] and tfl["threads"] == 2
    assert onx["graph_optimization"] == "disabled" and onx["threads"] == 2


@pytest.mark.parametrize(
    "args,words",
    [
        (["--runs", "0"], "--runs must be at least 1"),
        (["--runs", "5", "--min-seconds", "1"], "either --runs or --min-seconds"),
        (["--batch", "3"], "Batch size 3"),
        (["--threads", "0"], "--threads"),
        (["--target", "tpu"], "Unknown target"),
        (["--warmup", "-1"], "--warmup"),
    ],
)
def test_bench_bad_options_exit_2_one_line(models, args, words):
    r = invoke("bench", models["f32_b1.tflite"], *args)
    assert words in one_line_error(r)


@pytest.mark.parametrize(
    "name,words",
    [
        ("trunc.tflite", "truncated"),
        ("trunc.onnx", "truncated"),
        ("not_a_model.bin", "Cannot tell what kind of model"),
        ("not_a_model.onnx", "not_a_model.onnx"),
        ("dyn_hw.onnx", "dynamic"),
        ("string_in.onnx", "string"),
    ],
)
def test_bench_bad_models_exit_2_one_line(models, name, words):
    assert words in one_line_error(invoke("bench", models[name]))


@pytest.mark.skipif(
    any(t["gpu"] for t in available_targets().values()), reason="this machine has a GPU runtime"
)
def test_bench_target_gpu_without_gpu_exit_2(models):
    err = one_line_error(invoke("bench", models["f32_dyn.onnx"], "--target", "gpu"))
    assert "--target gpu" in err


def test_eval_table_and_json(models, npz):
    r = invoke(
        "eval", models["uint8_dyn.tflite"], "--data", npz, "--reference", models["f32_dyn.onnx"]
    )
    assert r.exit_code == 0, r.output
    for word in ("top-1 accuracy", "top-4 accuracy", "top-1 agreement", "Per-class", "Confusion"):
        assert word in r.stdout
    r = invoke("eval", models["uint8_dyn.tflite"], "-d", npz, "--top-k", "2", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["k"] == 2 and res["count"] == 40 and res["labels"] == ["a", "b", "c", "d"]
    assert len(res["confusion_matrix"]) == K and res["reference"] is None


def test_eval_mean_std_options(models, npz):
    r = invoke(
        "eval", models["f32_dyn.onnx"], "-d", npz, "--mean", "127.5", "--std", "127.5", "--json"
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["preprocessing"] == {"mean": 127.5, "std": 127.5}
    err = one_line_error(invoke("eval", models["f32_dyn.onnx"], "-d", npz, "--mean", "abc"))
    assert "--mean" in err
    assert "std" in one_line_error(invoke("eval", models["f32_dyn.onnx"], "-d", npz, "--std", "0"))


def test_eval_shape_mismatch_exit_2_names_both_shapes(models, tmp_path):
    path = tmp_path / "big.npz"
    np.savez(path, x=np.zeros((4, 12, 12, 3), np.uint8), y=np.array([0, 1, 0, 1]))
    err = one_line_error(invoke("eval", models["f32_dyn.onnx"], "-d", path))
    assert "(12, 12, 3)" in err and "(8, 8, 3)" in err


def test_eval_bad_model_exit_2(models, npz):
    assert "truncated" in one_line_error(invoke("eval", models["trunc.onnx"], "-d", npz))
