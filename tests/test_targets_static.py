"""edgekit.targets.emulated.static on tiny real .tflite files (built here with TensorFlow; the module under
test never imports it): MACs against the hand formulas, peak activation memory against a hand
count, precision classes, GPU rules and LiteRT's analyzer, XNNPACK predictions against LiteRT's
real Interpreter, and device-profile findings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgekit.errors import UsageError
from edgekit.targets.emulated.static import (
    analyze,
    parse_gpu_analyzer,
    run_gpu_analyzer,
    xnnpack_observed,
)

H = W = 8


def _build(out: Path) -> dict[str, Path]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    rng = np.random.default_rng(0)

    def const(*shape):
        return tf.constant(rng.normal(0, 0.5, shape).astype(np.float32))

    w_conv, w_c2, w_c3 = const(3, 3, 3, 4), const(3, 3, 4, 4), const(3, 3, 4, 4)
    w_dw, w_dw2 = const(3, 3, 4, 1), const(3, 3, 4, 2)
    w_fc, w_dense = const(4, 5), const(10, 5)
    b4 = const(4)

    def conv(x, w, stride=1):
        return tf.nn.relu(tf.nn.conv2d(x, w, stride, "SAME") + b4)

    fns = {
        # MAC counts: one op each (plus the converter's nothing-else).
        "conv_s2": ([1, 16, 16, 3], lambda x: tf.nn.conv2d(x, w_conv, 2, "SAME") + b4),
        "dw_m2": ([1, H, W, 4], lambda x: tf.nn.depthwise_conv2d(x, w_dw2, [1, 1, 1, 1], "SAME")),
        "dense": ([1, 10], lambda x: tf.matmul(x, w_dense)),
        # conv -> depthwise -> mean -> dense
        "chain": (
            [1, H, W, 3],
            lambda x: tf.matmul(
                tf.reduce_mean(
                    tf.nn.depthwise_conv2d(conv(x, w_conv), w_dw, [1, 1, 1, 1], "SAME"), [1, 2]
                ),
                w_fc,
            ),
        ),
        # conv1 -> conv2 -> conv3, then conv1's output added back: the skip keeps it alive.
        "residual": (
            [1, H, W, 3],
            lambda x: (lambda a: a + conv(conv(a, w_c2), w_c3))(conv(x, w_conv)),
        ),
        # CUMSUM: no XNNPACK kernel; TOPK_V2: no GPU (nor XNNPACK) kernel; int32 MUL and CAST.
        "cumsum": (
            [1, H, W, 3],
            lambda x: tf.reduce_mean(tf.math.cumsum(conv(x, w_conv), axis=1), [1, 2]),
        ),
        "topk": ([1, H, W, 3], lambda x: tf.math.top_k(tf.reshape(conv(x, w_conv), [1, -1]), 3)[0]),
        "int_ops": ([1, H, W, 3], lambda x: tf.cast(tf.cast(x * 10, tf.int32) * 3, tf.float32)),
    }

    def rep(shape):
        return lambda: ([rng.random(shape, dtype=np.float32)] for _ in range(8))

    paths = {}
    for name, (shape, fn) in fns.items():
        cf = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32)])
        modes = {"": None}
        if name in ("chain", "cumsum"):
            modes.update({"_int8": "int8", "_f16": "float16"})
        for suffix, mode in modes.items():
            c = tf.lite.TFLiteConverter.from_concrete_functions([cf.get_concrete_function()])
            if mode:
                c.optimizations = [tf.lite.Optimize.DEFAULT]
            if mode == "int8":
                c.representative_dataset = rep(shape)
                c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if mode == "float16":
                c.target_spec.supported_types = [tf.float16]
            p = out / f"{name}{suffix}.tflite"
            p.write_bytes(c.convert())
            paths[p.stem] = p
    return paths


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("static"))


def _ops(result, name):
    return [o for o in result["ops"] if o["op"] == name]


def test_macs_match_the_hand_formulas(models):
    conv = _ops(analyze(models["conv_s2"], xnnpack_check=False), "CONV_2D")
    assert len(conv) == 1 and conv[0]["outputs"][0]["shape"] == [1, 8, 8, 4]
    assert conv[0]["macs"] == 8 * 8 * 4 * (3 * 3 * 3)  # OH*OW*OC * KH*KW*IC, stride 2
    dw = _ops(analyze(models["dw_m2"], xnnpack_check=False), "DEPTHWISE_CONV_2D")
    assert len(dw) == 1
    assert dw[0]["macs"] == 8 * 8 * 8 * (3 * 3)  # depth multiplier 2: 8 output channels
    r = analyze(models["dense"], xnnpack_check=False)
    fc = _ops(r, "FULLY_CONNECTED")
    assert len(fc) == 1 and fc[0]["macs"] == 10 * 5
    assert r["totals"]["macs"] == 50
    # bytes moved = input (10 floats) + weights (5x10 floats) + output (5 floats)
    assert fc[0]["bytes_moved"] == 4 * (10 + 50 + 5)
    assert r["totals"]["weights_bytes"] == 4 * 50


def test_peak_activation_on_a_chain(models):
    r = analyze(models["chain"], xnnpack_check=False)
    assert [o["op"] for o in r["ops"]] == [
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "MEAN",
        "FULLY_CONNECTED",
    ]
    # op0: input 8x8x3 + conv out 8x8x4; op1: conv out + dw out (both 8x8x4 float32)
    assert r["peak_activation"]["bytes"] == 4 * 8 * 8 * 4 * 2
    assert r["peak_activation"]["op_index"] == 1
    assert r["totals"]["macs"] == 8 * 8 * 4 * 27 + 8 * 8 * 4 * 9 + 4 * 5


def test_peak_activation_with_a_skip_connection(models):
    r = analyze(models["residual"], xnnpack_check=False)
    assert [o["op"] for o in r["ops"]] == ["CONV_2D", "CONV_2D", "CONV_2D", "ADD"]
    fmap = 4 * 8 * 8 * 4
    # conv3 runs while conv1's output (kept for the ADD), conv2's and its own output are live;
    # a plain chain would need 2 feature maps here.
    assert r["peak_activation"]["bytes"] == 3 * fmap
    assert r["peak_activation"]["op_index"] == 2
    assert len(r["peak_activation"]["live_tensors"]) == 3


def test_precision_classes(models):
    assert analyze(models["chain"], xnnpack_check=False)["precision"] == "float32"
    r8 = analyze(models["chain_int8"], xnnpack_check=False)
    assert r8["precision"] == "int8"
    assert {o["precision"] for o in r8["ops"] if o["macs"]} == {"int8"}
    assert (
        r8["totals"]["weights_bytes"]
        < analyze(models["chain"], xnnpack_check=False)["totals"]["weights_bytes"]
    )
    r16 = analyze(models["chain_f16"], xnnpack_check=False)
    assert r16["precision"] == "float16"
    assert set(r16["totals"]["macs_by_precision"]) == {"float16"}


def test_gpu_rules_reject_topk_and_the_analyzer_runs(models):
    r = analyze(models["topk"], xnnpack_check=False)
    top = _ops(r, "TOPK_V2")[0]
    assert top["delegates"]["gpu"]["supported"] is False
    assert "TOPK_V2" in top["delegates"]["gpu"]["reason"]
    assert r["delegates"]["gpu"]["fallback_ops"] == [top["index"]]
    gpu = r["delegates"]["gpu"]
    text, _ = run_gpu_analyzer(models["topk"])
    if text is None:
        assert gpu["analyzer"]["ran"] is False
        return
    parsed = parse_gpu_analyzer(text)
    # The analyzer's op list is the same execution order edgekit reads.
    assert parsed["ops"] == {o["index"]: o["op"] for o in r["ops"]}
    if parsed["warnings"]:  # a LiteRT build whose analyzer checks ops
        assert top["index"] in parsed["warnings"]
    else:  # ai-edge-litert 2.3.0: model_analyzer.cc no longer checks ops; the rules decide
        assert gpu["analyzer"]["checks_ops"] is False and "rules decided" in gpu["analyzer"]["note"]


def test_gpu_analyzer_warning_lines_are_parsed(models):
    # The warning lines in the form LiteRT's model_analyzer.cc writes them (after the op's line,
    # then a per-subgraph summary), put into the real analyzer text of the topk model.
    text, _ = run_gpu_analyzer(models["topk"])
    if text is None:
        pytest.skip("LiteRT's analyzer is not available")
    lines = []
    for line in text.splitlines():
        lines.append(line)
        if "TOPK_V2(" in line:
            lines.append("GPU COMPATIBILITY WARNING: Not supported op TOPK_V2")
        if line.startswith("Tensors of Subgraph#0"):
            lines.insert(
                len(lines) - 1,
                "GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues "
                "at nodes 1 on TFLite runtime version 2.22.0",
            )
    parsed = parse_gpu_analyzer("\n".join(lines).replace("looks compatible", "is not"))
    idx = next(i for i, n in parsed["ops"].items() if n == "TOPK_V2")
    assert parsed["warnings"] == {idx: "Not supported op TOPK_V2"}
    assert parsed["flagged_nodes"] == [1]
    assert parsed["compatible"] is False


@pytest.mark.parametrize(
    "name,expect_cpu",
    [
        ("chain", set()),
        ("chain_int8", set()),
        ("chain_f16", set()),
        ("residual", set()),
        ("cumsum", {"CUMSUM"}),
        ("cumsum_int8", {"CUMSUM"}),
        ("topk", {"TOPK_V2"}),
        ("int_ops", {"CAST", "MUL"}),
    ],
)
def test_xnnpack_predictions_match_the_interpreter(models, name, expect_cpu):
    r = analyze(models[name], xnnpack_check=False)
    predicted = {o["index"] for o in r["ops"] if o["delegates"]["xnnpack"]["supported"]}
    real = xnnpack_observed(models[name])
    assert "error" not in real, real
    assert predicted == set(real["delegated"]), (name, r["ops"])
    assert {r["ops"][i]["op"] for i in r["delegates"]["xnnpack"]["fallback_ops"]} == expect_cpu
    checked = analyze(models[name])["delegates"]["xnnpack"]
    assert checked["checked_against_runtime"] and checked["disagreements"] == []
    assert checked["partitions"] == real["partitions"]


def test_cumsum_splits_xnnpack_in_two_partitions(models):
    x = analyze(models["cumsum"])["delegates"]["xnnpack"]
    assert x["partitions"] == 2 and x["predicted_partitions"] == 2


def _profile(app_mb, accelerators=("xnnpack",), dotprod=True, fp16=True):
    return SimpleNamespace(
        name="test-phone",
        memory=SimpleNamespace(app_memory_mb=app_mb, ram_mb=4096, bandwidth_gbps=10.0),
        accelerators=list(accelerators),
        cpu=SimpleNamespace(arch="aarch64", dotprod=dotprod, fp16=fp16),
    )


def test_profile_findings(models):
    r = analyze(models["chain"], _profile(0.004), xnnpack_check=False)
    errors = [f for f in r["findings"] if f["level"] == "error"]
    assert [f["code"] for f in errors] == ["memory-exceeded"]
    assert "test-phone" in errors[0]["message"]
    ok = analyze(models["chain"], _profile(512), xnnpack_check=False)
    assert not [f for f in ok["findings"] if f["level"] == "error"]
    gpu = analyze(models["topk"], _profile(512, ("gpu", "xnnpack")), xnnpack_check=False)
    codes = {f["code"] for f in gpu["findings"]}
    assert {"gpu-fallback", "xnnpack-fallback"} <= codes
    old_core = analyze(models["chain_int8"], _profile(512, dotprod=False), xnnpack_check=False)
    assert "no-dotprod" in {f["code"] for f in old_core["findings"]}
    new_core = analyze(models["chain_int8"], _profile(512, dotprod=True), xnnpack_check=False)
    assert "no-dotprod" not in {f["code"] for f in new_core["findings"]}


def test_bad_input(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        analyze(tmp_path / "missing.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(os.urandom(64))
    with pytest.raises(UsageError, match="TFL3"):
        analyze(junk)


def test_static_tables_render(models, capsys):
    from edgekit.report.bench import static_tables

    static_tables(analyze(models["cumsum"], _profile(512)))
    out = capsys.readouterr().out
    assert "Top 1 ops by MACs" in out and "CONV_2D" in out
    assert "XNNPACK has no CUMSUM kernel" in out
    assert "peak activation memory" in out


def test_analysis_never_imports_tensorflow(models):
    code = (
        "import sys, json; from edgekit.targets.emulated.static import analyze; "
        "from edgekit.report.bench import static_tables; "
        f"r = analyze({str(models['cumsum'])!r}); json.dumps(r); "
        "print(sorted(m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
