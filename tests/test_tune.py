"""`edgekit tune` on real TensorFlow / LiteRT / ai-edge-quantizer: a tiny 8x8 digits model whose
`spiky` layer carries an outlier channel (tests/tune_models.py), so that int8 hurts and the
search must keep the layers that touch that tensor in float."""

from __future__ import annotations

import json
import re

import pytest
from cli_helpers import invoke, one_line_error
from tune_models import DATA, FIXTURE

from edgekit.export import mixed
from edgekit.tune import Candidate, TuneBudget, TunePlan, _pareto

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One search (int8 from the converter, then the mixed-precision search); its JSON, folder
    and page. The size budget leaves the float model out, so a quantized model is chosen."""
    out = tmp_path_factory.mktemp("tune")
    page = out / "tune.html"
    r = invoke(
        "tune", FIXTURE, "--data", DATA, "--max-accuracy-drop", "0.5", "--modes", "int8",
        "--max-size-mb", "0.02", "--latency-seconds", "0.3", "--out", out / "run",
        "--html", page, "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout), out / "run", page


def test_int8_hurts_and_the_search_keeps_the_outlier_layers(tuned):
    report, _, _ = tuned
    by = {c["name"]: c for c in report["candidates"]}
    assert by["int8"]["drop"] >= 2.0  # the converter's full int8
    assert by["int8-mixed"]["drop"] >= 2.0  # the quantizer's full int8
    # the two layers that touch the outlier tensor come first, by their Keras names
    top = [s["layer"] for s in report["sensitivity"][:2]]
    assert set(top) == {"spiky", "mix"}, report["sensitivity"]
    assert all(s["lost_points"] >= 2.0 for s in report["sensitivity"][:2])
    assert report["sensitivity"][-1]["lost_points"] < 1.0
    # greedy: keeping exactly those in float recovers the accuracy
    assert set(report["greedy"]["kept"]) == {"spiky", "mix"}
    last = by[report["greedy"]["steps"][-1]]
    assert last["drop"] <= 0.5 and last["spec"]["keep"] == {"spiky": "float", "mix": "float"}
    assert report["trials"]["used"] <= 30


def test_the_chosen_model_is_inside_every_budget_verified_and_described(tuned):
    report, run, page = tuned
    c = report["chosen"]
    assert report["verdict"] == "met"
    assert c["drop"] <= 0.5 and c["size_bytes"] <= 0.02e6
    assert c["name"] in report["front"]
    inside = [x for x in report["candidates"] if x["drop"] <= 0.5 and x["size_bytes"] <= 0.02e6]
    assert c["latency"]["ms"] == min(x["latency"]["ms"] for x in inside)  # the fastest of them
    assert report["verification"]  # verify_one raises ExportMismatch when it fails
    precisions = {o["layer"]: o["precision"] for o in report["op_precisions"]}
    assert "int8" in precisions.values() and "float32" in precisions.values()
    assert json.loads((run / "tune.json").read_text())["chosen"]["name"] == c["name"]
    assert "## Sensitivity by Keras layer" in (run / "tune.md").read_text()
    html = page.read_text()
    assert "Sensitivity by Keras layer" in html and "Pareto front" in html and "spiky" in html
    # `edgekit report` draws the page again from the run folder's tune.json
    assert invoke("report", run).exit_code == 0 and "spiky" in (run / "tune.html").read_text()


def test_a_rerun_is_cached_and_a_budget_nothing_meets_exits_1_with_the_front(tuned):
    _, run, _ = tuned
    r = invoke(
        "tune", FIXTURE, "--data", DATA, "--max-accuracy-drop", "0.5", "--modes", "int8",
        "--max-size-mb", "0.001", "--latency-seconds", "0.2", "--out", run,
    )  # fmt: skip
    assert r.exit_code == 1, r.output
    assert "Pareto front" in r.stdout and "Nothing meets the budget" in r.stdout
    assert "error: no candidate meets the budget" in r.stderr
    report = json.loads((run / "tune.json").read_text())
    assert report["verdict"] == "not met" and report["front"]
    assert report["trials"]["cached"] == report["trials"]["used"]  # nothing converted again


def test_a_candidate_that_fails_verification_is_skipped_for_the_next(tuned):
    """The fastest candidate inside a loose budget may fail verification (top-1 agreement under
    its floor): it is recorded and the next one is tried. 100 points allowed and 12 KB leave only
    the two full-int8 models (>= 2 points lost, so under a 0.99 floor): both are recorded and
    nothing is chosen. The search's own results are cached."""
    from edgekit.recipes import Verification
    from edgekit.tune import tune

    _, run, _ = tuned
    report = tune(
        FIXTURE, DATA, out=run, verify=Verification(min_agreement=0.99),
        budget=TuneBudget(max_accuracy_drop=100, max_size_mb=0.012),
        plan=TunePlan(modes=("int8",), latency_seconds=0.2),
    )  # fmt: skip
    failed = {u["candidate"] for u in report["unverified"]}
    assert failed == {"int8", "int8-mixed"}, report["unverified"]
    assert all("agreement" in u["reason"] for u in report["unverified"])
    assert report["chosen"] is None and report["verdict"] == "not met"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--max-accuracy-drop", "half"], "--max-accuracy-drop must be a number"),
        (["--max-latency-ms", "fast"], "--max-latency-ms must be a number"),
        (["--max-size-mb", "-1"], "--max-size-mb must be a positive number"),
        (["--max-trials", "0"], "--max-trials must be an integer of at least 1"),
        (["--modes", "int4"], "--modes takes dynamic, float16, int8, int16x8"),
        (["--target", "desktop-cpu"], "is not an emulated arm64 device"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, expected, tmp_path):
    err = one_line_error(invoke("tune", FIXTURE, "--data", DATA, "--out", tmp_path / "o", *args))
    assert expected in err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_a_target_not_provisioned(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "empty-cache"))
    err = one_line_error(invoke("tune", FIXTURE, "--data", DATA, "--target", "pixel-4"))
    assert "not provisioned" in err and "edgekit devices setup" in err


def test_a_runtime_file_is_refused(tmp_path):
    from pathlib import Path

    import edgekit

    tfl = Path(edgekit.__file__).parent / "assets" / "check_reference_float32.tflite"
    err = one_line_error(invoke("tune", str(tfl), "--data", DATA, "--out", tmp_path / "o"))
    assert "starts from the Keras model" in err


def test_a_model_with_no_quantizable_layer(tmp_path):
    from edgekit import keras_compat

    tk = keras_compat.tf_keras()
    inp = tk.Input((8, 8, 3))
    m = tk.Model(inp, tk.layers.Softmax()(tk.layers.GlobalAveragePooling2D()(inp)))
    m.save(tmp_path / "pool.keras")
    err = one_line_error(
        invoke("tune", tmp_path / "pool.keras", "--data", DATA, "--modes", "int8",
               "--out", tmp_path / "o")
    )  # fmt: skip
    assert "no quantizable layer" in err


def test_an_override_reaches_its_own_op_only():
    # a scope is the op's whole output tensor name: "conv1/Conv2D" must not catch "conv1/Conv2D1"
    ops = [
        {"layer": "a", "op": "CONV_2D", "tensor": "m/conv1/Conv2D"},
        {"layer": "b", "op": "CONV_2D", "tensor": "m/conv1/Conv2D1"},
    ]
    r = mixed.recipe(ops, keep={"a": "float"})
    assert r[0]["regex"] == ".*" and r[1]["algorithm_key"] == "no_quantize"
    assert re.search(r[1]["regex"], "m/conv1/Conv2D")
    assert re.search(r[1]["regex"], "x;m/conv1/Conv2D")
    assert not re.search(r[1]["regex"], "m/conv1/Conv2D1")
    only = mixed.recipe(ops, only=["b"])
    assert len(only) == 1 and re.search(only[0]["regex"], "m/conv1/Conv2D1")
    with pytest.raises(Exception, match="kept precision"):
        mixed.recipe(ops, keep={"a": "int4"})


def test_pareto_front_and_budget_values():
    def c(name, drop, ms, size):
        return Candidate(name, "mode", {}, drop=drop, size_bytes=size, latency={"value": ms})

    cands = [c("a", 0.0, 10, 100), c("b", 1.0, 5, 50), c("c", 1.0, 6, 60), c("d", 0.0, 10, 100)]
    names = [x.name for x in _pareto(cands)]
    assert names == ["b", "a", "d"]  # c is beaten by b on every axis; a and d tie
    with pytest.raises(Exception, match="must be a number"):
        TuneBudget(max_accuracy_drop=float("nan"))
    with pytest.raises(Exception, match="--max-trials"):
        TunePlan(max_trials=True)


def test_compress_can_end_in_a_search(tmp_path):
    from edgekit import api

    recipe = tmp_path / "tune.yaml"
    recipe.write_text(
        "name: tune-test\nseed: 0\n"
        "data: {split: {train: 0.1, val: 0.05, calib: 0.25, eval: 0.6}, seed: 0}\n"
        "stages:\n  - stage: tune\n    max_accuracy_drop: 0.5\n    modes: [int8]\n"
        "    max_size_mb: 0.02\n    latency_seconds: 0.2\n"
    )
    r = api.compress(
        FIXTURE, recipe=str(recipe), data=DATA, out=tmp_path / "run", measure_latency=False
    )
    (art,) = r["artifacts"]
    assert art["path"].endswith("_tuned.tflite") and art["size_bytes"] <= 0.02e6
    assert art["verification"]["top1_agreement"] >= 0.99
    stage = r["stages"][0]
    assert stage["chosen"]["drop"] <= 0.5
    assert {s["layer"] for s in stage["sensitivity"][:2]} == {"spiky", "mix"}


def test_on_an_emulated_phone_the_search_ranks_by_instructions(tuned):
    """--target PROFILE: instructions per invoke under qemu-aarch64 (the targets are provisioned
    here; `edgekit devices setup`). Three trials: float, the converter's and the quantizer's int8;
    only float is inside 0.5 point."""
    _, run, _ = tuned
    r = invoke(
        "tune", FIXTURE, "--data", DATA, "--max-accuracy-drop", "0.5", "--modes", "int8",
        "--max-trials", "3", "--target", "pixel-4", "--out", run, "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert "pixel-4" in report["latency"]["metric"]
    counts = {c["name"]: c["latency"]["instructions"] for c in report["candidates"]}
    assert set(counts) == {"float32", "int8", "int8-mixed"} and all(v > 0 for v in counts.values())
    assert report["chosen"]["name"] == "float32"
    assert report["candidates"][0]["latency"]["ratio_to_float"] == 1.0
    assert report["trials"]["used"] == 3 and report["sensitivity"]  # tensor errors, no probes
