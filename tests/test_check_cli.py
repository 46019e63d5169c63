"""`edgekit baseline create` and `edgekit check` through click's CliRunner on real tiny ONNX models
(ONNX Runtime): pass, fail, the not-significant warning, data and class mismatches, bad baselines
and thresholds, exit codes 0 / 1 / 2 with one-line errors, JSON, JUnit XML, the GitHub step
summary and the config file."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from check_models import build_onnx_models, labels_for, make_pixels, predict, save_npz
from click.testing import CliRunner

from edgekit.check.baseline import FORMAT_VERSION, decode_array
from edgekit.cli import cli


def invoke(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env=env)


def one_line_error(result, code: int = 2) -> str:
    err = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert err.startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return err


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_onnx_models(tmp_path_factory.mktemp("check_models"))


@pytest.fixture(scope="module")
def pixels():
    return make_pixels(300)


@pytest.fixture(scope="module")
def labels(models, pixels):
    return labels_for(models["base"], pixels)  # the base model is right on 90% of them


@pytest.fixture(scope="module")
def data(tmp_path_factory, pixels, labels):
    return save_npz(tmp_path_factory.mktemp("data") / "eval.npz", pixels, labels)


@pytest.fixture(scope="module")
def baseline(models, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline") / "baseline.json"
    r = invoke(
        "baseline", "create", models["base"], "--data", data, "--out", out,
        "--latency-seconds", "0.4",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return out


def check(model, baseline, *args, env=None):
    return invoke("check", model, "--baseline", baseline, "--no-config", *args, env=env)


def check_json(model, baseline, *args, code=0):
    r = check(model, baseline, "--json", *args)
    assert r.exit_code == code, r.output
    return json.loads(r.stdout)


# --- baseline create --------------------------------------------------------------------------


def test_baseline_file_holds_what_a_check_needs(baseline, models, data, labels):
    doc = json.loads(baseline.read_text())
    assert doc["format"] == "edgekit-baseline" and doc["format_version"] == FORMAT_VERSION
    assert doc["data"]["count"] == 300 and len(doc["data"]["sha256"]) == 64
    assert doc["data"]["spec"] == str(data)
    assert doc["model"]["num_classes"] == 4 and doc["model"]["runtime"] == "onnxruntime"
    top1 = decode_array(doc["predictions"]["top1"])
    np.testing.assert_array_equal(top1, predict(models["base"], make_pixels(300)))
    correct = decode_array(doc["predictions"]["correct"])
    np.testing.assert_array_equal(correct, top1 == labels)
    assert doc["accuracy"]["top1"] == pytest.approx(0.9)
    assert sum(c["count"] for c in doc["accuracy"]["per_class"]) == 300
    lat = doc["latency"]
    assert (
        lat["reference"]["name"] == "check_reference_float32.onnx"
        and lat["reference"]["path"] == "bundled"
    )
    assert lat["rounds"] == lat["model_ms"]["count"] == lat["reference_ms"]["count"] > 10
    assert lat["ci_low"] <= lat["ratio"] <= lat["ci_high"]
    assert doc["versions"]["onnxruntime"] and doc["machine"]["cpu"]
    assert len(baseline.read_bytes()) < 200_000  # compact: arrays are compressed


def test_baseline_accuracy_equals_edgekit_eval(baseline, models, data):
    r = invoke("eval", models["base"], "--data", data, "--json")
    assert r.exit_code == 0, r.output
    ev = json.loads(r.stdout)
    doc = json.loads(baseline.read_text())
    assert doc["accuracy"]["top1"] == pytest.approx(ev["top1"])
    assert doc["accuracy"]["topk"] == pytest.approx(ev["topk"])
    assert [c["correct"] for c in doc["accuracy"]["per_class"]] == [
        c["correct"] for c in ev["per_class"]
    ]


def test_baseline_create_json_and_table(models, data, tmp_path):
    out = tmp_path / "b.json"
    r = invoke(
        "baseline", "create", models["base"], "-d", data, "-o", out, "--no-latency", "--json"
    )
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["latency"] is None and info["accuracy"]["top1"] == pytest.approx(0.9)
    assert "data" not in info["accuracy"] and out.is_file()
    r = invoke("baseline", "create", models["base"], "-d", data, "-o", out, "--no-latency")
    assert r.exit_code == 0 and "top-1" in r.stdout and "90.00%" in r.stdout


def test_baseline_create_bad_input_is_one_line_and_writes_nothing(models, tmp_path):
    out = tmp_path / "b.json"
    err = one_line_error(
        invoke("baseline", "create", tmp_path / "nope.onnx", "-d", "x.npz", "-o", out)
    )
    assert "does not exist" in err and not out.exists()
    unlabeled = tmp_path / "unlabeled.npz"
    np.savez(unlabeled, x=make_pixels(20))
    err = one_line_error(invoke("baseline", "create", models["base"], "-d", unlabeled, "-o", out))
    assert "no labels" in err and not out.exists()


# --- check: pass, fail, warning -----------------------------------------------------------------


def test_unchanged_model_passes(baseline, models):
    # A generous latency tolerance: a microseconds model timed for 0.4 s on a loaded machine;
    # false-alarm rates at the default are measured by benchmarks/check_latency_false_alarms.py.
    r = check(models["base"], baseline, "--latency-seconds", "0.4", "--max-latency-increase", "200")
    assert r.exit_code == 0, r.output
    assert "top-1 accuracy" in r.stdout and "FAIL" not in r.stdout
    assert "same sha256" in r.stdout and r.stdout.rstrip().endswith("pass")


def test_harmless_copy_passes_with_zero_paired_drop(baseline, models):
    rep = check_json(models["harmless"], baseline, "--no-latency")
    acc = rep["criteria"][0]
    assert rep["verdict"] == "pass" and rep["exit_code"] == 0
    assert acc["lost"] == acc["gained"] == 0 and acc["drop_pts"] == 0 and acc["p_value"] == 1.0
    assert rep["accuracy"]["top1_agreement"] == 1.0
    assert [c["status"] for c in rep["criteria"]] == ["pass", "skipped", "skipped"]


def test_damaged_copy_fails_with_exit_1_and_one_line(baseline, models):
    r = check(models["damaged"], baseline, "--no-latency")
    err = one_line_error(r, code=1)
    assert err.startswith("error: regression in top-1 accuracy: drop ")
    assert "FAIL" in r.stdout
    rep = check_json(models["damaged"], baseline, "--no-latency", code=1)
    acc = rep["criteria"][0]
    assert rep["verdict"] == "fail" and rep["failed"] == ["accuracy"]
    assert acc["status"] == "fail" and acc["drop_pts"] > 30 and acc["p_value"] < 1e-10
    assert acc["ci_low_pts"] < acc["drop_pts"] < acc["ci_high_pts"]
    assert rep["accuracy"]["candidate"]["top1"] < 0.6


def test_significant_drop_within_tolerance_passes(baseline, models):
    rep = check_json(models["nudged"], baseline, "--no-latency", "--max-accuracy-drop", "10")
    acc = rep["criteria"][0]
    assert acc["status"] == "pass" and acc["significant"] and 1 < acc["drop_pts"] < 10


def test_drop_beyond_tolerance_but_not_significant_is_a_warning(models, pixels, labels, tmp_path):
    # 30 images on which the nudged model loses exactly 2 of the base model's correct answers:
    # a drop of 6.7 points, far beyond 1 point, but McNemar p = 0.5.
    base_ok = predict(models["base"], pixels) == labels
    nudged_ok = predict(models["nudged"], pixels) == labels
    lost = np.flatnonzero(base_ok & ~nudged_ok)[:2]
    same = np.flatnonzero(base_ok == nudged_ok)[:28]
    idx = np.sort(np.concatenate([lost, same]))
    small = save_npz(tmp_path / "small.npz", pixels[idx], labels[idx])
    b = tmp_path / "small.json"
    assert (
        invoke("baseline", "create", models["base"], "-d", small, "-o", b, "--no-latency").exit_code
        == 0
    )
    r = check(models["nudged"], b)
    assert r.exit_code == 0, r.output
    assert "WARN" in r.stdout and "would be needed to decide" in r.stdout
    rep = check_json(models["nudged"], b)
    acc = rep["criteria"][0]
    assert acc["status"] == "warn" and acc["lost"] == 2 and acc["gained"] == 0
    assert acc["p_value"] == pytest.approx(0.5) and acc["samples_needed"] > 30
    assert rep["verdict"] == "pass" and rep["warnings"] == [acc["message"]]


def test_per_class_drop_fails_only_when_asked(baseline, models):
    rep = check_json(models["nudged"], baseline, "--no-latency", "--max-accuracy-drop", "10")
    assert rep["criteria"][1]["status"] == "skipped"
    rep = check_json(
        models["nudged"], baseline, "--no-latency", "--max-accuracy-drop", "10",
        "--max-class-drop", "5", code=1,
    )  # fmt: skip
    cls = rep["criteria"][1]
    assert cls["status"] == "fail" and rep["failed"] == ["class_accuracy"]
    assert len(cls["classes"]) == 4 and sum(c["count"] for c in cls["classes"]) == 300
    worst = max(cls["classes"], key=lambda c: c["drop_pts"])
    assert cls["worst"] == worst["label"] and worst["significant"]


def test_nan_scores_count_as_wrong_and_fail(baseline, models):
    rep = check_json(models["nan_scores"], baseline, "--no-latency", code=1)
    assert rep["accuracy"]["candidate"]["nonfinite"] == 300
    assert rep["accuracy"]["candidate"]["top1"] == 0.0
    assert any("NaN or inf" in w for w in rep["warnings"])


# --- check: cannot be made (exit 2) -------------------------------------------------------------


def test_other_data_is_refused_with_how_to_refresh(baseline, models, pixels, labels, tmp_path):
    other = save_npz(tmp_path / "other.npz", pixels[:299], labels[:299])
    err = one_line_error(check(models["base"], baseline, "--data", other, "--no-latency"))
    assert "not the data of the baseline" in err and "edgekit baseline create" in err
    relabeled = save_npz(tmp_path / "relabeled.npz", pixels, (labels + 1) % 4)
    err = one_line_error(check(models["base"], baseline, "--data", relabeled, "--no-latency"))
    assert "not the data of the baseline" in err


def test_missing_data_and_models_are_exit_2(baseline, models, tmp_path):
    err = one_line_error(check(models["base"], baseline, "--data", tmp_path / "gone.npz"))
    assert "gone.npz" in err
    err = one_line_error(check(tmp_path / "gone.onnx", baseline))
    assert "does not exist" in err
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    err = one_line_error(check(junk, baseline))
    assert "junk.onnx" in err


def test_model_with_other_classes_is_refused(baseline, models):
    err = one_line_error(check(models["other_classes"], baseline, "--no-latency"))
    assert "has 3 classes but the baseline's model has 4" in err


def test_model_failing_while_running_is_exit_2_never_a_pass(baseline, models):
    err = one_line_error(check(models["fails_at_run"], baseline, "--no-latency"))
    assert "failed while running" in err and "could not be made" in err


@pytest.mark.parametrize(
    "content,expected",
    [
        ("this is not json", "is not an edgekit baseline (not JSON"),
        ('{"hello": 1}', 'no "format": "edgekit-baseline"'),
        ('["edgekit-baseline"]', "is not an edgekit baseline"),
        ('{"format": "edgekit-baseline", "format_version": 99}', "newer than this edgekit"),
        ('{"format": "edgekit-baseline", "format_version": "1"}', "damaged"),
        ('{"format": "edgekit-baseline", "format_version": 1}', "damaged edgekit baseline"),
    ],
)
def test_bad_baseline_files(models, tmp_path, content, expected):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    err = one_line_error(check(models["base"], bad))
    assert expected in err and str(bad) in err


def test_damaged_baseline_arrays_and_missing_file(baseline, models, tmp_path):
    doc = json.loads(baseline.read_text())
    doc["predictions"]["top1"]["data"] = "AAAA"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert "damaged" in one_line_error(check(models["base"], bad))
    err = one_line_error(check(models["base"], tmp_path / "missing.json"))
    assert "does not exist" in err and "edgekit baseline create" in err
    err = one_line_error(invoke("check", models["base"], "--no-config"))
    assert "No baseline given" in err


@pytest.mark.parametrize(
    "option,value",
    [
        ("--max-accuracy-drop", "-1"),
        ("--max-class-drop", "-0.5"),
        ("--max-latency-increase", "-3"),
        ("--significance", "1.5"),
        ("--significance", "0"),
        ("--latency-seconds", "0"),
    ],
)
def test_bad_thresholds(baseline, models, option, value):
    err = one_line_error(check(models["base"], baseline, option, value))
    assert option in err and value in err


def test_latency_threshold_needs_a_baseline_with_latency(models, data, tmp_path):
    b = tmp_path / "nolat.json"
    assert (
        invoke("baseline", "create", models["base"], "-d", data, "-o", b, "--no-latency").exit_code
        == 0
    )
    rep = check_json(models["base"], b)
    assert (
        rep["criteria"][2]["status"] == "skipped"
        and "--no-latency" in rep["criteria"][2]["message"]
    )
    err = one_line_error(check(models["base"], b, "--max-latency-increase", "5"))
    assert "holds no latency" in err


# --- latency ------------------------------------------------------------------------------------


def test_latency_criterion_catches_a_much_slower_model(baseline, models):
    rep = check_json(models["heavy"], baseline, "--latency-seconds", "0.4", code=1)
    lat = rep["criteria"][2]
    assert lat["status"] == "fail" and "latency" in rep["failed"]
    assert lat["change"] > 3 and lat["ci_low"] > 1.1
    assert rep["latency"]["reference_runtime"] == "onnxruntime"
    assert rep["latency"]["rounds"] > 5


# --- outputs: JUnit, GitHub step summary --------------------------------------------------------


def test_junit_one_testcase_per_criterion(baseline, models, tmp_path):
    xml_path = tmp_path / "out" / "check.xml"
    r = check(models["damaged"], baseline, "--no-latency", "--junit", xml_path)
    assert r.exit_code == 1
    root = ET.parse(xml_path).getroot()
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["top-1 accuracy", "per-class accuracy", "latency"]
    assert (
        suite.get("tests") == "3" and suite.get("failures") == "1" and suite.get("skipped") == "2"
    )
    assert cases[0].find("failure") is not None and "drop" in cases[0].find("failure").get(
        "message"
    )
    assert cases[1].find("skipped") is not None and cases[2].find("skipped") is not None
    r = check(models["harmless"], baseline, "--no-latency", "--junit", xml_path)
    assert r.exit_code == 0
    suite = ET.parse(xml_path).getroot().find("testsuite")
    assert suite.get("failures") == "0" and suite.findall("testcase")[0].find("failure") is None


def test_junit_and_summary_report_a_check_that_could_not_be_made(models, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    xml_path, summary = tmp_path / "check.xml", tmp_path / "summary.md"
    r = check(models["base"], bad, "--junit", xml_path, env={"GITHUB_STEP_SUMMARY": str(summary)})
    one_line_error(r)
    case = ET.parse(xml_path).getroot().find("testsuite/testcase")
    assert case.find("error") is not None and "not an edgekit baseline" in case.find("error").get(
        "message"
    )
    assert "could not be made" in summary.read_text()


def test_github_step_summary_is_appended(baseline, models, tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("## earlier step\n")
    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    assert check(models["damaged"], baseline, "--no-latency", env=env).exit_code == 1
    assert check(models["harmless"], baseline, "--no-latency", env=env).exit_code == 0
    text = summary.read_text()
    assert text.startswith("## earlier step\n")
    assert text.count("| criterion | baseline | candidate |") == 2
    assert "FAIL" in text and "damaged.onnx" in text and "harmless.onnx" in text
    assert "top-1 accuracy" in text


def test_no_summary_without_the_variable(baseline, models, tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    rep = check_json(models["harmless"], baseline, "--no-latency")
    assert "github_step_summary" not in rep


# --- config file ----------------------------------------------------------------------------------


def test_edgekit_yaml_supplies_baseline_and_thresholds(baseline, models, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "ci").mkdir()
    (repo / "ci" / "baseline.json").write_bytes(baseline.read_bytes())
    (repo / "edgekit.yaml").write_text(
        "check:\n  baseline: ci/baseline.json\n  max_accuracy_drop: 60\n  latency: false\n"
        "  junit: ci/check.xml\n"
    )
    sub = repo / "src"
    sub.mkdir()
    monkeypatch.chdir(sub)  # found by walking up to the repository root
    r = invoke("check", models["damaged"], "--json")
    assert r.exit_code == 0, r.output  # a 51-point drop is within the configured 60
    rep = json.loads(r.stdout)
    assert rep["config"] == str(repo / "edgekit.yaml")
    assert rep["thresholds"]["max_accuracy_drop"] == 60
    assert rep["thresholds"]["sources"]["max_accuracy_drop"].startswith("config")
    assert rep["criteria"][2]["status"] == "skipped" and (repo / "ci" / "check.xml").is_file()
    # The command line wins over the file.
    r = invoke("check", models["damaged"], "--max-accuracy-drop", "1")
    assert r.exit_code == 1


def test_pyproject_tool_edgekit_check(baseline, models, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "pyproject.toml").write_text(
        f'[project]\nname = "x"\n\n[tool.edgekit.check]\nbaseline = "{baseline}"\n'
        "max_accuracy_drop = 0.5\nlatency = false\n"
    )
    monkeypatch.chdir(repo)
    rep = json.loads(invoke("check", models["harmless"], "--json").stdout)
    assert rep["config"] == str(repo / "pyproject.toml") and rep["verdict"] == "pass"
    assert rep["thresholds"]["max_accuracy_drop"] == 0.5


@pytest.mark.parametrize(
    "text,expected",
    [
        (
            "check:\n  max_acuracy_drop: 1\n",
            "check.max_acuracy_drop: Extra inputs are not permitted",
        ),
        ("check:\n  max_accuracy_drop: -1\n", "check.max_accuracy_drop: Input should be greater"),
        ("checks:\n  baseline: b.json\n", "checks: Extra inputs"),
        ("check: [1, 2\n", "not valid YAML"),
    ],
)
def test_bad_config_files(models, tmp_path, monkeypatch, text, expected):
    (tmp_path / ".git").mkdir()
    (tmp_path / "edgekit.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    err = one_line_error(invoke("check", models["base"], "--baseline", "b.json"))
    assert expected in err and "edgekit.yaml" in err


def test_bad_timing_options_fail_before_evaluating(models, data, tmp_path):
    out = tmp_path / "b.json"
    for opt, val in (("--latency-seconds", "-1"), ("--latency-threads", "0")):
        err = one_line_error(
            invoke("baseline", "create", models["base"], "-d", data, "-o", out, opt, val)
        )
        assert opt in err and not out.exists()


def test_own_reference_model_is_stored_and_verified(models, data, tmp_path):
    ref = tmp_path / "my_reference.onnx"
    ref.write_bytes(models["heavy"].read_bytes())
    b = tmp_path / "b.json"
    r = invoke("baseline", "create", models["base"], "-d", data, "-o", b, "--reference", ref,
               "--latency-seconds", "0.3")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(b.read_text())["latency"]["reference"]["path"] == str(ref)
    rep = check_json(models["base"], b, "--latency-seconds", "0.3", "--max-latency-increase", "50")
    assert rep["criteria"][2]["status"] in ("pass", "warn") and "change" in rep["criteria"][2]
    ref.write_bytes(models["base"].read_bytes())  # the reference changed since the baseline
    err = one_line_error(check(models["base"], b, "--latency-seconds", "0.3"))
    assert "different reference model" in err and "Recreate the baseline" in err


def test_bundled_reference_changed_since_the_baseline(baseline, models, tmp_path):
    doc = json.loads(baseline.read_text())
    doc["latency"]["reference"]["sha256"] = "0" * 64  # as if made by another edgekit
    b = tmp_path / "b.json"
    b.write_text(json.dumps(doc))
    err = one_line_error(check(models["base"], b))
    assert "bundled reference network" in err and "Recreate the baseline" in err
    assert check(models["base"], b, "--no-latency").exit_code == 0


def test_limit_is_stored_and_reapplied(models, data, tmp_path):
    b = tmp_path / "b.json"
    r = invoke("baseline", "create", models["base"], "-d", data, "-o", b, "--limit", "100",
               "--no-latency")  # fmt: skip
    assert r.exit_code == 0, r.output
    rep = check_json(models["harmless"], b)  # no --data: the baseline's spec, first 100 images
    assert rep["data"]["count"] == 100 and rep["data"]["limit"] == 100
    assert rep["criteria"][0]["count"] == 100 and rep["verdict"] == "pass"
