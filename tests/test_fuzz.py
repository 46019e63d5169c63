"""Fuzzing the command line with hypothesis: random recipes, `--set` strings, data specs (and
.npz files) and device-profile YAML never end in a traceback, an "internal error" or an exit
code other than 0, 1 or 2.

Bounded for the normal suite: a fixed number of examples per test (EDGEKIT_FUZZ_EXAMPLES, default
40), derandomized so that a run is repeatable, no deadline per example. For a longer, random
hunt: EDGEKIT_FUZZ_EXAMPLES=2000 EDGEKIT_FUZZ_RANDOM=1 pytest tests/test_fuzz.py
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import numpy as np
import pytest
import yaml
from check_models import build_onnx_models
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgekit.cli import cli
from edgekit.recipes import bundled_recipes
from edgekit.stages.base import stage_names

EXAMPLES = int(os.environ.get("EDGEKIT_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("EDGEKIT_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def invoke(*args) -> None:
    """Run edgekit in-process; fail on anything but a clean exit 0/1/2 with one-line errors."""
    result = CliRunner().invoke(
        cli, [str(a) for a in args], catch_exceptions=False, env={"EDGEKIT_QUIET": "1"}
    )
    err = result.stderr
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, err)
    assert "Traceback" not in err and "internal error" not in err, (args, err)
    if result.exit_code:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert lines and lines[-1].startswith("error: "), (args, err)


# -- values and documents -------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["auto", "int8", "tflite", "onnx", "both", "cosine", "adam", "[2, 4]", ""]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(string.ascii_lowercase + "_", max_size=10), inner, max_size=4),
    ),
    max_leaves=12,
)

STAGE_KEYS = [
    "student", "alpha", "temperature", "epochs", "batch_size", "optimizer", "early_stopping",
    "augment", "use_unlabeled", "target_sparsity", "schedule", "modes", "formats",
    "calibration_samples", "io_type", "opset", "m_by_n", "policy", "learning_rate",
]  # fmt: skip
RECIPE_KEYS = ["name", "description", "seed", "data", "verify", "budget", "latency_runs",
               "compare_teacher_tflite", "stages"]  # fmt: skip


@st.composite
def stage_entries(draw):
    kind = draw(st.sampled_from([*stage_names(), "sharpen", None]))
    fields = draw(st.dictionaries(st.sampled_from([*STAGE_KEYS, "bogus"]), values, max_size=4))
    form = draw(st.sampled_from(["tagged", "tagged", "nested", "bare", "junk"]))
    if form == "tagged":
        return {"stage": kind, **fields} if kind is not None else fields
    if form == "nested":  # `- distill: {...}` instead of `- stage: distill`
        return {kind or "distill": fields}
    if form == "bare":
        return kind
    return draw(values)


@st.composite
def recipes(draw):
    doc = draw(st.dictionaries(st.sampled_from([*RECIPE_KEYS, "stagez"]), values, max_size=5))
    if draw(st.booleans()):
        doc["stages"] = draw(st.lists(stage_entries(), max_size=4))
    return doc


def as_yaml(doc) -> str:
    try:
        return yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return "{"


yaml_texts = st.one_of(
    recipes().map(as_yaml),
    st.text(max_size=80),
    st.sampled_from(
        [
            "",
            "- a\n- b\n",
            "stages: [\n",
            "\x00\x01",
            "name: [1, 2\n",
            "!!python/object:os.system {}",
        ]
    ),
)

set_keys = st.one_of(
    st.sampled_from(
        [
            "distill.epochs",
            "distill.student.width",
            "distill.optimizer.name",
            "seed",
            "data.split.train",
            "quantize.modes",
            "export.formats",
            "budget.max_accuracy_drop",
            "verify.samples",
            "distill.augment.flip",
            "stages.0.stage",
            "stages.9.x",
            "data",
            "distill",
            "prune.x",
            "distill.temperature.x",
            "latency_runs",
        ]
    ),
    st.text(string.ascii_letters + string.digits + "._-", max_size=20),
)
set_values = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        ["0", "-1", "1e309", "nan", ".inf", "[2, 4]", "{a: 1}", "[", "true", "null", "~"]
    ),
)
set_items = st.one_of(
    st.tuples(set_keys, set_values).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=30),
)


@given(text=yaml_texts)
@FUZZ
def test_random_recipes(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("recipe") / "recipe.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    invoke("recipes", "show", path)
    # compress validates the recipe before it touches the model or any folder
    out = path.parent / "out"
    invoke("compress", path.parent / "missing.keras", "--recipe", path, "--data", "digits",
           "--out", out)  # fmt: skip
    assert not out.exists()


@given(recipe=st.sampled_from(sorted(bundled_recipes())), items=st.lists(set_items, max_size=3))
@FUZZ
def test_random_set_overrides(recipe, items):
    args = [a for item in items for a in ("--set", item)]
    invoke("recipes", "show", recipe, *args)


# -- data specs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_onnx_models(tmp_path_factory.mktemp("fuzz_models"))["base"]  # 8x8x3, 4 classes


small_ints = st.one_of(st.integers(1, 40), st.sampled_from([0, -1, 2**40, 10**7]))
option = st.one_of(
    st.tuples(st.sampled_from(["size", "channels", "seed", "classes"]), small_ints).map(
        lambda kv: f"{kv[0]}={kv[1]}"
    ),
    st.tuples(st.sampled_from(["size", "n", "bogus", ""]), st.text(max_size=6)).map(
        lambda kv: f"{kv[0]}={kv[1]}"
    ),
    st.text(string.printable, max_size=8),
)


@st.composite
def data_specs(draw):
    kind = draw(st.sampled_from(["shapes", "digits", "text"]))
    if kind == "text":
        return draw(st.text(max_size=30))
    opts = draw(st.lists(option, max_size=3))
    if kind == "shapes":  # keep generated sets small: the default is thousands of images
        opts.append(f"n={draw(st.integers(1, 48))}")
    return f"{kind}:{','.join(opts)}"


@given(spec=data_specs())
@FUZZ
def test_random_data_specs(model, spec):
    invoke("eval", model, "--data", spec, "--limit", "8")


npz_arrays = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.int16, np.float32, np.float64, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9),
)


@st.composite
def npz_contents(draw):
    doc = {}
    if draw(st.booleans()):
        doc["x"] = draw(
            st.one_of(
                npz_arrays,
                hnp.arrays(
                    np.uint8,
                    st.tuples(
                        st.integers(0, 12), st.just(8), st.just(8), st.sampled_from([1, 3, 4])
                    ),
                ),
                hnp.arrays(
                    np.float32, st.tuples(st.integers(1, 12), st.just(8), st.just(8), st.just(3))
                ),
            )
        )
    if draw(st.booleans()):
        doc["y"] = draw(
            st.one_of(
                npz_arrays,
                hnp.arrays(np.int64, st.integers(0, 12), elements=st.integers(-3, 200)),
                hnp.arrays(np.float64, st.integers(0, 12)),
            )
        )
    if draw(st.booleans()):
        doc["labels"] = np.array(
            draw(st.lists(st.text(max_size=4), max_size=6)),
            dtype=object if draw(st.booleans()) else None,
        )
    if draw(st.booleans()):
        doc[draw(st.text(string.ascii_letters, min_size=1, max_size=5))] = np.zeros(2)
    return doc


@given(doc=npz_contents())
@FUZZ
def test_random_npz_files(tmp_path_factory, model, doc):
    path = tmp_path_factory.mktemp("npz") / "data.npz"
    np.savez(path, **doc)
    invoke("eval", model, "--data", path)


# -- device profiles ---------------------------------------------------------------------------


def _bundled_profile() -> dict:
    from edgekit.profiles import list_profiles
    from edgekit.resources import bundled

    name = sorted(list_profiles())[0]
    return yaml.safe_load(bundled("devices")[name].read_text())


@st.composite
def profiles(draw):
    doc = _bundled_profile()
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["drop", "replace", "add", "deep"]))
        keys = list(doc)
        if action == "drop" and keys:
            doc.pop(draw(st.sampled_from(keys)))
        elif action == "replace" and keys:
            doc[draw(st.sampled_from(keys))] = draw(values)
        elif action == "add":
            doc[draw(st.text(string.ascii_lowercase, min_size=1, max_size=8))] = draw(values)
        else:
            nested = [k for k, v in doc.items() if isinstance(v, dict) and v]
            if nested:
                sub = doc[draw(st.sampled_from(nested))]
                sub[draw(st.sampled_from(list(sub)))] = draw(values)
    return doc


@given(text=st.one_of(profiles().map(as_yaml), st.text(max_size=60)))
@FUZZ
def test_random_device_profiles(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("profile") / "board.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    invoke("devices", "show", path)
