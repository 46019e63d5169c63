"""The HTML report opened as a person would: in headless Chromium (Debian's `chromium`, driven by
Playwright's Python package with executable_path; Playwright's own browser download is never
used). A demo-like compress run (the bundled example teacher, tiny settings, one class label a
script tag), a prune run, bench, eval and check pages: no console errors, no request leaves the
file, every plot present and not blank, the injected label shown as text."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from check_models import build_onnx_models, labels_for, make_pixels

from edgekit import api

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("browser")]

INJECTED = "<script>alert(1)</script>"
ASSETS = Path(__file__).parents[1] / "edgekit" / "assets"
# What Chromium needs here: no sandbox (root in a container), no GPU, and nothing that would try
# the network (which is closed) on its own.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    path = chromium_path()
    if path is None:
        pytest.skip(
            "Debian's chromium is not installed (make test installs it as root: "
            "apt-get install chromium)"
        )
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_playwright() as p:
        try:
            ctx = p.chromium.launch_persistent_context(
                str(profile),
                executable_path=path,
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1200, "height": 900},
            )
        except Error as e:
            pytest.skip(f"chromium did not start here: {str(e).splitlines()[0]}")
        # the browser that runs is Debian's (its version), not one Playwright downloaded
        debian = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
        assert ctx.browser is not None and ctx.browser.version in debian, (ctx.browser, debian)
        yield ctx
        ctx.close()


def ink(png: bytes) -> tuple[float, float]:
    """(share of pixels that are not background white, share that are coloured) of a screenshot.
    Axes, ticks and text are black or grey; the data of every plot is drawn in colour."""
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    dark = (a.min(axis=2) < 235).mean()
    coloured = ((a.max(axis=2) - a.min(axis=2)) > 60).mean()
    return float(dark), float(coloured)


def open_page(ctx, path: Path, plots: list[str], *, injected: bool = True):
    """Open a page and check what a person would notice; returns the page for more checks."""
    page = ctx.new_page()
    console, errors, requests, dialogs = [], [], [], []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    url = path.resolve().as_uri()
    page.goto(url)
    page.wait_for_load_state("load")
    assert [m for m in console if m.startswith(("error", "warning"))] == [], console
    assert errors == [] and dialogs == []
    assert requests == [url], "the page fetched something besides itself"
    assert page.evaluate("document.querySelectorAll('script').length") == 0
    shown = page.eval_on_selector_all("figure.plot", "els => els.map(e => e.dataset.plot)")
    assert shown == plots
    for name in plots:
        svg = page.locator(f'figure.plot[data-plot="{name}"] svg')
        box = svg.bounding_box()
        assert box and box["width"] > 250 and box["height"] > 80, (name, box)
        dark, coloured = ink(svg.screenshot())
        assert dark > 0.01 and coloured > 0.002, (name, dark, coloured)
    if injected:  # as text, in the per-class table, once a person unfolds it
        page.locator("summary", has_text="Per-class figures").first.click()
        assert INJECTED in page.inner_text("body")
        assert page.get_by_text(INJECTED, exact=True).first.is_visible()
    return page


def test_a_blank_plot_is_told_apart(browser, tmp_path):
    """The pixel check can fail: axes without data have ink but no colour."""
    from edgekit.report import plots

    with plots.figure() as (fig, ax):
        ax.set_xlabel("nothing drawn")
        svg = plots.to_svg(fig)
    path = tmp_path / "blank.html"
    path.write_text(f'<!DOCTYPE html><figure class="plot" data-plot="blank">{svg}</figure>')
    page = browser.new_page()
    page.goto(path.as_uri())
    dark, coloured = ink(page.locator("svg").screenshot())
    assert dark > 0.005 and coloured == 0.0


# What `make demo` runs, with tiny settings.
DEMO_SETTINGS = [
    "distill.epochs=2",
    "distill.student.input_size=32",
    "distill.augment.flip=none",
    "distill.augment.rot90=false",
    "distill.early_stopping.enabled=false",
    "quantize.calibration_samples=32",
    "verify.samples=32",
    "verify.min_agreement=0.01",  # an untrained student: int8 may change many top-1s
    "latency_runs=3",
    "data.max_eval_samples=80",
]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """400 scenes of the demo's data, one class renamed to a script tag."""
    from edgekit.data import load_dataset

    ds = load_dataset("shapes:n=400")
    labels = list(ds.labels)
    labels[1] = INJECTED
    data = tmp_path_factory.mktemp("data") / "shapes400.npz"
    np.savez(data, x=ds.x, y=ds.y, labels=np.array(labels))
    return data


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, demo_data) -> Path:
    """What `make demo` does (recipe distill on the bundled example teacher), tiny settings."""
    out = tmp_path_factory.mktemp("runs") / "demo"
    with pytest.MonkeyPatch.context() as mp:  # progress silenced here only, not for later tests
        mp.setenv("EDGEKIT_QUIET", "1")
        api.compress(None, recipe="distill", data=str(demo_data), out=out, overrides=DEMO_SETTINGS)
    return out


def test_demo_report_in_a_browser(browser, demo_run):
    assert (demo_run / "report.html").is_file() and (demo_run / "report.json").is_file()
    plots = ["pareto", "timeline", "training-distill", "per-class", "confusion"]
    page = open_page(browser, demo_run / "report.html", plots)
    text = page.inner_text("body")
    assert "Final artifact: stages/02-quantize/student_int8.tflite" in text
    # the manifest is folded away until opened
    versions = page.locator("details", has_text="Versions").first
    assert not versions.locator("table").is_visible()
    versions.locator("summary").click()
    assert versions.locator("table").is_visible()
    # `edgekit report` draws the same page again from report.json alone
    before = (demo_run / "report.html").read_text()
    (demo_run / "report.html").unlink()
    api.report_html(demo_run)
    assert (demo_run / "report.html").read_text() == before


def test_a_rerun_names_the_page_and_says_every_stage_was_reused(browser, demo_run, demo_data):
    """`edgekit compress` again on the same folder: the stages are reused, the CLI names the
    page, and the timeline says why it has no bars instead of drawing bars of 0 s."""
    from click.testing import CliRunner

    from edgekit.cli import cli

    args = ["compress", "--recipe", "distill", "--data", str(demo_data), "--out", str(demo_run)]
    for setting in DEMO_SETTINGS:
        args += ["--set", setting]
    r = CliRunner(env={"EDGEKIT_QUIET": "1"}).invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert f"Report with plots: {demo_run / 'report.html'} (open it in a browser)" in r.stdout
    report = json.loads((demo_run / "report.json").read_text())
    assert all(s["reused"] for s in report["stages"])
    page = open_page(browser, demo_run / "report.html",
                     ["pareto", "training-distill", "per-class", "confusion"])  # fmt: skip
    assert "Every stage was reused from an earlier run in this folder" in page.inner_text("body")


@pytest.fixture(scope="module")
def prune_run(tmp_path_factory) -> Path:
    """The prune recipe on a tiny Keras CNN trained for a few seconds on digits."""
    from edgekit.data import load_dataset
    from edgekit.keras_compat import keras

    ds = load_dataset("digits:size=32")
    idx = np.random.default_rng(0).permutation(len(ds))[:500]
    data = tmp_path_factory.mktemp("digits") / "digits500.npz"
    np.savez(data, x=ds.x[idx], y=ds.y[idx], labels=np.array(ds.labels))
    k = keras()
    k.utils.set_random_seed(0)
    inp = k.Input((32, 32, 3))
    h = k.layers.Conv2D(16, 3, activation="relu", padding="same")(inp)
    h = k.layers.MaxPooling2D()(h)
    h = k.layers.Conv2D(32, 3, activation="relu", padding="same")(h)
    h = k.layers.GlobalAveragePooling2D()(h)
    model = k.Model(inp, k.layers.Dense(10)(h))
    model.compile("adam", k.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(ds.x[idx] / 255.0, ds.y[idx], epochs=5, batch_size=32, verbose=0)
    teacher = tmp_path_factory.mktemp("teacher") / "cnn.keras"
    model.save(teacher)
    out = tmp_path_factory.mktemp("runs") / "prune"
    with pytest.MonkeyPatch.context() as mp:  # progress silenced here only, not for later tests
        mp.setenv("EDGEKIT_QUIET", "1")
        api.compress(
            teacher,
            recipe="prune",
            data=str(data),
            out=out,
            overrides=["prune.epochs=2", "quantize.formats=[tflite]", "quantize.calibration_samples=32",
                       "verify.samples=32", "latency_runs=3", "data.max_eval_samples=60"],
        )  # fmt: skip
    return out


def test_prune_report_in_a_browser(browser, prune_run):
    plots = ["pareto", "timeline", "training-prune", "sparsity", "per-class", "confusion"]
    page = open_page(browser, prune_run / "report.html", plots, injected=False)
    assert "overall sparsity" in page.inner_text("body")


@pytest.fixture(scope="module")
def small_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("check")
    models = build_onnx_models(folder)
    px = make_pixels(300)
    data = folder / "eval.npz"
    np.savez(
        data, x=px, y=labels_for(models["base"], px), labels=np.array(["c0", INJECTED, "c2", "c3"])
    )
    baseline = folder / "baseline.json"
    api.create_baseline(models["base"], str(data), baseline, latency_seconds=0.3)
    return models, data, baseline


def test_bench_eval_and_check_pages_in_a_browser(browser, small_models, tmp_path):
    from edgekit.report.html import write_html

    models, data, baseline = small_models
    bench = api.bench(
        [ASSETS / "check_reference_float32.tflite", ASSETS / "check_reference_int8.tflite"],
        runs=30,
        samples=True,
    )
    write_html(bench, tmp_path / "bench.html", "bench")
    open_page(browser, tmp_path / "bench.html",
              ["latency-distribution", "ratios", "startup", "memory"], injected=False)  # fmt: skip

    ev = api.evaluate(models["damaged"], str(data), reference=models["base"])
    write_html(ev, tmp_path / "eval.html", "eval")
    open_page(browser, tmp_path / "eval.html", ["per-class", "confusion"])

    report = api.check(models["damaged"], baseline, latency_seconds=0.3, max_class_drop=5,
                       config=False, github_summary=False)  # fmt: skip
    assert report["verdict"] == "fail"
    write_html(report, tmp_path / "check.html", "check")
    page = open_page(
        browser,
        tmp_path / "check.html",
        ["accuracy-drop", "class-drops", "per-class", "latency-interval"],
    )
    assert page.locator(".verdict.fail").inner_text().startswith("FAIL: regression in top-1")
    assert page.locator(".badge.fail").count() >= 1
