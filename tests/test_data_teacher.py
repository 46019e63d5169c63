"""The bundled example teacher and its card agree with the data edgekit generates today.

The teacher was trained on the `train` split of `shapes`; if the generator or Dataset.split
changed, the compress pipeline's eval split could hold images the teacher trained on. These tests
regenerate the data and compare fingerprints with the card, so such a change fails loudly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.artifacts import detect_format, sha256_path
from edgekit.data import DEFAULT_SPLIT, SHAPE_CLASSES, Preprocessing, load_dataset
from edgekit.resources import asset

MODEL = asset("teacher_shapes.keras")
CARD = asset("teacher_shapes.json")


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads(CARD.read_text())


@pytest.fixture(scope="module")
def parts(card):
    data = load_dataset(card["data"]["spec"])
    return data, data.split(card["data"]["split"], seed=card["data"]["split_seed"])


def test_card_describes_the_file(card):
    assert detect_format(MODEL) == "keras3" and card["format"] == "keras3"
    assert sha256_path(MODEL) == card["sha256"]
    assert MODEL.stat().st_size == card["size_bytes"] < 25_000_000
    assert card["input"]["shape"] == [32, 32, 3]
    assert Preprocessing.from_dict(card["input"]["preprocessing"]) == Preprocessing()
    assert card["output"]["labels"] == list(SHAPE_CLASSES[:10])
    assert "benchmarks/train_teacher.py" in card["command"]


def test_card_figures_meet_the_brief(card):
    student = card["scratch_student"]
    # A heavy teacher: at least 10x the default student's parameters, tens of M MACs or more.
    assert card["params"] >= 10 * student["params"]
    assert card["macs"] >= 20_000_000
    assert 0.85 <= card["accuracy"]["eval"] <= 0.97
    assert student["accuracy"]["eval"] < card["accuracy"]["eval"] - 0.05


def test_default_data_and_splits_are_the_ones_the_teacher_was_trained_with(card, parts):
    data, split = parts
    assert card["data"]["split"] == DEFAULT_SPLIT and card["data"]["split_seed"] == 0
    assert data.fingerprint() == card["data"]["fingerprint"]
    for name, part in split.items():
        assert part.fingerprint() == card["data"]["split_fingerprints"][name], name


@pytest.mark.slow
def test_teacher_loads_through_edgekit_and_scores_as_its_card_says(card, parts):
    from edgekit.keras_compat import load_model

    _, split = parts
    loaded = load_model(MODEL)
    assert loaded.input_shape == (32, 32, 3) and loaded.num_classes == 10
    ev = split["eval"]
    logits = loaded.predict(Preprocessing().apply(ev.x), batch_size=128)
    acc = float((np.argmax(logits, axis=1) == ev.y).mean())
    # Same weights, same data: equal up to a borderline image or two (float summation order).
    assert abs(acc - card["accuracy"]["eval"]) <= 2 / len(ev)
