"""The HTML report: pages from real reports (a compress run folder kept from a real run, bench on
LiteRT and ONNX Runtime, eval and check on tiny real ONNX models), one file with nothing to fetch,
everything from the user escaped, `edgekit report` and the --html options. The browser test is
tests/test_report_browser.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from check_models import build_onnx_models, labels_for, make_pixels
from click.testing import CliRunner

from edgekit import api
from edgekit.cli import cli
from edgekit.report.html import detect_kind, esc, render_html

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
ASSETS = Path(__file__).parents[1] / "edgekit" / "assets"
INJECTED = "<script>alert(1)</script>"


def invoke(*args):
    return CliRunner(env={"EDGEKIT_QUIET": "1"}).invoke(cli, [str(a) for a in args])


def plots_in(page: str) -> list[str]:
    return re.findall(r'<figure class="plot" data-plot="([^"]+)"><svg', page)


def assert_one_file(page: str) -> None:
    """No script, nothing fetched from anywhere: the page opens from an email attachment."""
    assert "<script" not in page.lower()
    # links only to places in the page; images (matplotlib's heat maps) only as data: URIs
    assert not re.search(r'(src|href)="(?!#|data:image/png;base64,)', page), "a link out"
    assert not re.search(r"url\((?!#)", page) and "@import" not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert page.count("<svg") == len(plots_in(page))


@pytest.fixture(scope="module")
def compress_run(tmp_path_factory) -> Path:
    """A run folder of a real tiny distill run (report.json and manifest.json), as an older
    edgekit left it: no report.html."""
    out = tmp_path_factory.mktemp("run") / "distill-run"
    shutil.copytree(FIXTURES / "compress-distill", out)
    return out


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    return build_onnx_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, onnx_models) -> Path:
    """300 images with labels, one of them a script tag (labels come from the user's file)."""
    px = make_pixels(300)
    y = labels_for(onnx_models["base"], px)
    path = tmp_path_factory.mktemp("data") / "eval.npz"
    np.savez(path, x=px, y=y, labels=np.array(["c0", INJECTED, "c2", "c3"]))
    return path


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, onnx_models, labelled) -> Path:
    out = tmp_path_factory.mktemp("baseline") / "baseline.json"
    api.create_baseline(onnx_models["base"], str(labelled), out, latency_seconds=0.3)
    return out


# --- compress ---------------------------------------------------------------------------------


def test_report_command_renders_an_old_run_folder(compress_run):
    r = invoke("report", compress_run)
    assert r.exit_code == 0, r.output
    page = (compress_run / "report.html").read_text()
    assert r.output.strip() == f"Wrote {compress_run / 'report.html'}"
    assert_one_file(page)
    assert plots_in(page) == [
        "pareto", "timeline", "training-distill", "per-class", "confusion"
    ]  # fmt: skip
    report = json.loads((compress_run / "report.json").read_text())
    final = report["final_artifact"].rsplit("/", 1)[-1]
    # the final artifact is named in the cards and highlighted in the table
    assert f'<tr class="final"><td>{final}</td>' in page
    assert f'<div class="value">{final}</div>' in page
    # the manifest is there, folded away
    manifest = json.loads((compress_run / "manifest.json").read_text())
    assert "<details><summary>Versions</summary>" in page
    assert (
        manifest["versions"]["tensorflow"] in page and manifest["inputs"]["model"]["sha256"] in page
    )
    # per-epoch learning rates are not in the history: said in one line
    assert (
        "Learning rate per epoch: not recorded in this run&#x27;s history (configured: 0.004, cosine)"
        in page
    )


def test_report_without_the_new_fields_still_renders(compress_run, tmp_path):
    """report.json files written before per-class figures and stage configs were recorded."""
    report = json.loads((compress_run / "report.json").read_text())
    for row in [report["teacher"], *report["artifacts"]]:
        row.pop("per_class", None)
        row.pop("confusion_matrix", None)
    for s in report["stages"]:
        s.pop("config", None)
    (tmp_path / "report.json").write_text(json.dumps(report))
    out = api.report_html(tmp_path)
    page = out.read_text()
    assert out == tmp_path / "report.html"
    assert plots_in(page) == ["pareto", "timeline", "training-distill"]
    assert "No per-class figures in this report" in page
    assert "No manifest.json beside this report" in page
    assert "not recorded in this run&#x27;s history." in page


def test_the_same_report_draws_the_same_page(compress_run):
    report = json.loads((compress_run / "report.json").read_text())
    first = render_html(report)
    render_html(json.loads((FIXTURES / "bench-pixel-4.json").read_text()))  # another page between
    assert render_html(report) == first


def test_pareto_marks_the_final_artifact_and_falls_back_without_latency(compress_run):
    report = json.loads((compress_run / "report.json").read_text())
    page = render_html(report)
    n = 2 + len(report["artifacts"])  # teacher, its float TFLite, every artifact
    svg = page.split('data-plot="pareto">')[1].split("</svg>")[0]
    assert svg.count("<path") > n
    for row in [report["teacher"], report["teacher_tflite"], *report["artifacts"]]:
        row["latency_ms_p50"] = None
    page = render_html(report)
    assert "pareto" in plots_in(page)
    assert "No latency was measured (--no-latency): file size stands in for it." in page


def test_everything_from_the_user_is_escaped(compress_run):
    report = json.loads((compress_run / "report.json").read_text())
    report["recipe"] = INJECTED
    report["data"]["name"] = INJECTED
    report["data"]["labels"][3] = INJECTED
    report["teacher"]["per_class"][3]["label"] = INJECTED
    report["artifacts"][0]["path"] = f"stages/00-distill/{INJECTED}.keras"
    report["notes"] = [f'a note with "quotes" & {INJECTED}']
    report["stages"][0]["stage"] = INJECTED
    report["stages"][0]["history"][INJECTED] = [1.0, 2.0]
    manifest = json.loads((compress_run / "manifest.json").read_text())
    manifest["recipe"]["description"] = INJECTED
    manifest["versions"][INJECTED] = INJECTED
    page = render_html(report, extras={"manifest": manifest})
    assert INJECTED not in page
    assert "<script" not in page
    assert esc(INJECTED) == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert page.count(esc(INJECTED)) >= 8
    assert "&quot;quotes&quot; &amp;" in page
    # the label reaches the plots too, drawn as glyph outlines, never as markup
    assert "per-class" in plots_in(page)


def test_a_plot_that_cannot_be_drawn_is_one_line(compress_run):
    report = json.loads((compress_run / "report.json").read_text())
    report["stages"][0]["per_layer_sparsity"] = {"conv": "not a number"}
    page = render_html(report)
    assert "This part could not be drawn from the report (ValueError: could not convert" in page
    assert "pareto" in plots_in(page)


def test_per_layer_sparsity_of_a_prune_stage(compress_run):
    report = json.loads((compress_run / "report.json").read_text())
    report["stages"].insert(
        1,
        {
            "stage": "prune",
            "seconds": 3.0,
            "reused": False,
            "config": {"stage": "prune", "target_sparsity": 0.5},
            "overall_sparsity": 0.49,
            "per_layer_sparsity": {"conv2d": 0.5, "conv2d_1": 0.48, "dense": 0.5},
            "history": {"loss": [0.5, 0.4], "accuracy": [0.8, 0.85]},
        },
    )
    page = render_html(report)
    assert "sparsity" in plots_in(page) and "training-prune" in plots_in(page)
    assert "overall sparsity 49.0%" in page


# --- bench, eval, check ------------------------------------------------------------------------


def test_bench_page_from_a_real_interleaved_run(tmp_path):
    models = [ASSETS / "check_reference_float32.tflite", ASSETS / "check_reference_int8.tflite",
              ASSETS / "check_reference_float32.onnx"]  # fmt: skip
    out = tmp_path / "bench.html"
    r = invoke("bench", *models, "--runs", 20, "--html", out, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    # --html draws every timed run, --json without --samples still leaves them out
    assert all("samples_ms" not in m["latency_ms"] for m in report["models"])
    assert f"Wrote {out}" in r.stderr
    page = out.read_text()
    assert_one_file(page)
    assert plots_in(page) == ["latency-distribution", "ratios", "startup", "memory"]
    for row in report["comparison"]["rows"][1:]:
        assert f"{row['ratio']:.3f}" in page
    assert "20" in page.split("runs counted")[1][:200]


def test_bench_page_of_an_emulated_device():
    """A real `bench --target pixel-4` report kept from a run: static analysis, instruction
    counts and the estimate with its error band."""
    report = json.loads((FIXTURES / "bench-pixel-4.json").read_text())
    page = render_html(report)
    assert detect_kind(report) == "bench"
    assert_one_file(page)
    assert plots_in(page) == ["macs-by-op", "estimate"]
    assert "Static analysis" in page and "17 of 18 ops (1 fall back to the CPU)" in page
    assert "NOT a latency" in page
    # each estimate with the band of its own precision (int8's is far wider than float32's)
    bands = set()
    for m in report["models"]:
        for est in m["estimate"]["by_threads"]:
            assert est["low_ms"] < est["ms"] < est["high_ms"]
            assert f"<td>{est['ms']:.3g}</td>" in page
            bands.add(f"<td>±{100 * est['expected_error']:.0f}%</td>")
    assert len(bands) == 2 and all(b in page for b in bands)
    assert "<td>fitted</td>" in page


def test_eval_page_shows_the_injected_label_as_text(tmp_path, onnx_models, labelled):
    out = tmp_path / "eval.html"
    r = invoke("eval", onnx_models["damaged"], "--data", labelled, "--reference",
               onnx_models["base"], "--html", out, "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert_one_file(page)
    assert plots_in(page) == ["per-class", "confusion"]
    assert INJECTED not in page and f"<td>{esc(INJECTED)}</td>" in page
    drop = 100 * json.loads(r.stdout)["reference"]["top1_drop"]  # the damaged model is worse
    assert drop > 0 and f"{drop:.2f} pts below the reference" in page


@pytest.mark.parametrize(
    ("candidate", "verdict", "code"), [("harmless", "pass", 0), ("damaged", "fail", 1)]
)
def test_check_page_criteria_mcnemar_and_latency(tmp_path, onnx_models, baseline, candidate, verdict, code):  # fmt: skip
    out = tmp_path / "check.html"
    r = invoke(
        "check",
        onnx_models[candidate],
        "--baseline",
        baseline,
        "--no-config",
        "--latency-seconds",
        0.3,
        "--max-latency-increase",
        200,
        "--max-class-drop",
        5,
        "--json",
        "--html",
        out,
    )  # fmt: skip  (a generous latency limit: timing is noisy here)
    assert r.exit_code == code, r.output
    report = json.loads(r.stdout)
    page = out.read_text()  # written for a failed check too
    assert_one_file(page)
    assert report["verdict"] == verdict
    assert f'<div class="verdict {verdict}">{"PASS" if verdict == "pass" else "FAIL"}' in page
    for c in report["criteria"]:
        assert f"<td>{esc(c['title'])}</td>" in page
    acc = next(c for c in report["criteria"] if c["name"] == "accuracy")
    assert (
        f"<td>{acc['lost']:,} (lost)</td>" in page
        and f"<td>{acc['gained']:,} (gained)</td>" in page
    )
    expected = ["accuracy-drop", "class-drops", "per-class", "latency-interval"]
    assert plots_in(page) == expected
    assert INJECTED not in page


# --- errors, kinds, imports --------------------------------------------------------------------


def test_report_command_errors_are_one_line(tmp_path):
    r = invoke("report", tmp_path / "missing")
    assert r.exit_code == 2 and "does not exist" in r.stderr
    r = invoke("report", tmp_path)
    assert r.exit_code == 2 and "has no report.json" in r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = invoke("report", bad)
    assert r.exit_code == 2 and "is not readable JSON" in r.stderr
    bad.write_text('{"hello": 1}')
    r = invoke("report", bad)
    assert r.exit_code == 2 and "not an edgekit report" in r.stderr
    assert not (tmp_path / "bad.html").exists()
    with pytest.raises(Exception, match="needs out="):
        api.report_html({"models": [], "settings": {}})


def test_report_json_file_to_a_chosen_path(tmp_path):
    src = tmp_path / "dev.json"
    shutil.copy(FIXTURES / "bench-pixel-4.json", src)
    r = invoke("report", src, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["html"] == str(tmp_path / "dev.html")
    r = invoke("report", src, "--out", tmp_path / "sub" / "page.html")
    assert r.exit_code == 0 and (tmp_path / "sub" / "page.html").is_file()
    assert not list(tmp_path.rglob("*.edgekit-tmp"))


def test_importing_the_cli_and_renderer_loads_no_matplotlib():
    code = (
        "import sys, edgekit.cli, edgekit.api, edgekit.report.html, edgekit.report.plots; "
        "print('matplotlib' in sys.modules, 'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_drawing_uses_agg_and_no_tensorflow():
    code = (
        "import json, sys; from edgekit.report import plots; "
        "from edgekit.report.html import render_html; "
        f"render_html(json.load(open({str(FIXTURES / 'bench-pixel-4.json')!r}))); "
        "cm = plots.figure(); fig, ax = cm.__enter__(); "
        "print(type(fig.canvas).__name__, 'matplotlib.pyplot' in sys.modules, "
        "'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["FigureCanvasAgg", "False", "False"]
