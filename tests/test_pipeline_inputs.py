"""What compress runs on: the bundled example with its pool, `--unlabeled none`, and
`data.labelled_fraction` (the label-scarce setting: part of the training labels kept, the rest
unlabeled)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.data import load_dataset
from edgekit.errors import DataError, RecipeError, UsageError
from edgekit.pipeline import EXAMPLE_POOL, make_splits, resolve_inputs
from edgekit.recipes import load_recipe


def test_the_bundled_example_brings_its_pool_and_says_so_in_one_line():
    rec = load_recipe("distill")
    path, data, pool, line = resolve_inputs(rec, None, None, None)
    assert path.name == "teacher_shapes.keras" and data == "shapes" and pool == EXAMPLE_POOL
    assert EXAMPLE_POOL in line and "--unlabeled none" in line and "\n" not in line
    # 'none' leaves it out; another pool replaces it
    _, _, pool, line = resolve_inputs(rec, None, None, "none")
    assert pool is None and "unlabeled" not in line
    _, _, pool, line = resolve_inputs(rec, None, None, "shapes:seed=5,n=100")
    assert pool == "shapes:seed=5,n=100" and pool in line
    # a recipe that uses no unlabeled images gets no pool
    assert resolve_inputs(load_recipe("quantize"), None, None, None)[2] is None
    # the user's own data: no pool unless asked
    assert resolve_inputs(rec, None, "digits", None)[2] is None


def test_own_model_needs_data():
    with pytest.raises(UsageError, match="Pass --data"):
        resolve_inputs(load_recipe("distill"), "m.keras", None, None)


def test_the_pool_is_distinct_from_the_labelled_data_and_the_eval_split():
    pool = load_dataset(EXAMPLE_POOL)
    labelled = load_dataset("shapes")
    assert 8000 <= len(pool) <= 12000
    seen = {row.tobytes() for row in labelled.x}
    assert not any(row.tobytes() in seen for row in pool.x[:2000])


def test_labelled_fraction_keeps_a_stratified_part_of_the_training_labels():
    ds = load_dataset("shapes:n=2000")
    rec = load_recipe("distill", ["data.labelled_fraction=0.1"])
    full = make_splits(load_recipe("distill"), ds)
    scarce = make_splits(rec, ds, "shapes:seed=9,n=300")
    assert "unlabeled" not in full
    assert len(scarce["train"]) == round(0.1 * len(full["train"]))
    assert set(np.bincount(scarce["train"].y)) <= {13, 14, 15}  # ~14 per class of 10
    pool = scarce["unlabeled"]
    assert not pool.labeled and len(pool) == len(full["train"]) - len(scarce["train"]) + 300
    assert "data.labelled_fraction=0.1" in pool.source and "shapes:seed=9,n=300" in pool.source
    # the kept images and the unlabeled ones are the training split, nothing else
    train = {r.tobytes() for r in full["train"].x}
    kept = {r.tobytes() for r in scarce["train"].x}
    rest = {r.tobytes() for r in pool.x[: len(pool) - 300]}
    assert kept | rest == train and not kept & rest
    for k in ("val", "calib", "eval"):  # the other splits do not move
        assert scarce[k].fingerprint() == full[k].fingerprint()


def test_labelled_fraction_is_checked():
    with pytest.raises(RecipeError, match="labelled_fraction"):
        load_recipe("distill", ["data.labelled_fraction=0"])
    with pytest.raises(RecipeError, match="labelled_fraction"):
        load_recipe("distill", ["data.labelled_fraction=1.5"])
    unlabeled = load_dataset("shapes:n=200").subset(slice(None))
    unlabeled.y = None
    with pytest.raises(DataError, match="data are unlabeled"):
        make_splits(load_recipe("distill", ["data.labelled_fraction=0.5"]), unlabeled)
