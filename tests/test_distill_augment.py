"""Distillation with augmentation: the batch augmenter, the teacher-consistency check that decides
which augmentations may reuse the teacher's cached logits, and the stage end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.stages.distill import DistillConfig, kept_augmentation, teacher_consistency
from edgekit.stages.training import (
    apply_view,
    augment_views,
    augmenter,
    make_dataset,
    view_augmenter,
)
from tests.test_compress import compress, digits_npz, teacher_keras3  # noqa: F401 - fixtures


def _dihedral(img: np.ndarray) -> list[np.ndarray]:
    out = []
    for m in (img, img[:, ::-1]):
        out += [np.rot90(m, k) for k in range(4)]
    return out


def test_augmenter_off_is_none():
    assert augmenter("none", False) is None


def test_augmenter_only_mirrors_and_turns_each_image_and_repeats():
    rng = np.random.default_rng(0)
    x = rng.random((64, 6, 6, 2)).astype(np.float32)
    f = augmenter("both", True, seed=5)
    a = np.asarray(f(x, 0))
    b = np.asarray(f(x, 0))
    np.testing.assert_array_equal(a, b)  # same key, same draws
    assert not np.array_equal(a, np.asarray(f(x, 1)))  # another batch index, other draws
    seen = set()
    for img, out in zip(x, a, strict=True):
        matches = [i for i, v in enumerate(_dihedral(img)) if np.array_equal(v, out)]
        assert matches, "every output is a mirror image / quarter turn of its input"
        seen.add(matches[0])
    assert len(seen) >= 6  # 64 images draw (nearly) all 8 transforms


def test_horizontal_flip_only_mirrors_columns():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 3, 4, 2).repeat(32, axis=0)
    out = np.asarray(augmenter("horizontal", False, seed=1)(x, 0))
    flipped = [np.array_equal(o, x[0][:, ::-1]) for o in out]
    same = [np.array_equal(o, x[0]) for o in out]
    assert all(f or s for f, s in zip(flipped, same, strict=True))
    assert 0 < sum(flipped) < 32


def test_dataset_augments_images_and_keeps_targets():
    x = np.random.default_rng(1).random((16, 4, 4, 3)).astype(np.float32)
    y = np.arange(16)
    ds = make_dataset(x, y, batch_size=8, augment=augmenter("vertical", False, seed=0))
    xs, ys = zip(*[(a.numpy(), b.numpy()) for a, b in ds], strict=True)
    np.testing.assert_array_equal(np.concatenate(ys), y)
    got = np.concatenate(xs)
    assert all(
        np.array_equal(g, o) or np.array_equal(g, o[::-1]) for g, o in zip(got, x, strict=True)
    )
    assert not np.array_equal(got, x)


def test_dataset_runs_without_the_tf_data_autotuner():
    # With it, destroying each epoch's iterator waited seconds for the autotune thread
    # (benchmarks/epoch_gaps.py measures the gaps); the pipeline must still yield every sample.
    x = np.random.default_rng(2).random((20, 4, 4, 3)).astype(np.float32)
    ds = make_dataset(x, np.arange(20), batch_size=8, shuffle=True, augment=augmenter("both", True))
    assert ds.options().autotune.enabled is False
    assert sorted(np.concatenate([b.numpy() for _, b in ds]).tolist()) == list(range(20))
    on = make_dataset(x, batch_size=8, autotune=True)
    assert on.options().autotune.enabled is True


@pytest.mark.parametrize(
    ("flip", "rot90", "count"),
    [("none", False, 1), ("horizontal", False, 2), ("vertical", False, 2), ("both", False, 4),
     ("none", True, 4), ("horizontal", True, 8), ("vertical", True, 8), ("both", True, 8)],
)  # fmt: skip
def test_augment_views_are_the_distinct_views_the_augmenter_draws(flip, rot90, count):
    rng = np.random.default_rng(3)
    x = rng.random((256, 5, 5, 1)).astype(np.float32)
    views = augment_views(flip, rot90)
    assert len(views) == count and views[0] == (False, 0)
    images = [apply_view(x[:1], v)[0] for v in views]
    assert all(not np.array_equal(a, b) for i, a in enumerate(images) for b in images[:i])
    # every image the random augmenter draws is one of these views, and all of them come up
    f = augmenter(flip, rot90, seed=1)
    drawn = np.asarray(f(x, 0)) if f is not None else x
    hits = [
        [j for j, v in enumerate(views) if np.array_equal(apply_view(x[i : i + 1], v)[0], d)]
        for i, d in enumerate(drawn)
    ]
    assert all(len(h) == 1 for h in hits)
    counts = np.bincount([h[0] for h in hits], minlength=count)
    assert counts.min() > 256 / count / 2  # each about equally likely


def test_view_augmenter_teaches_each_image_the_logits_of_the_view_it_drew():
    rng = np.random.default_rng(4)
    n, k = 64, 3
    x = rng.random((n, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, k, n)
    views = augment_views("both", True)
    # the "teacher" answers view v of image i with logits (v, i, -v): recognisable after the gather
    teacher = np.stack(
        [np.stack([np.full(n, v), np.arange(n), np.full(n, -v)], 1) for v in range(8)]
    )
    onehot = np.eye(k, dtype=np.float32)[y]
    targets = np.concatenate([onehot, *teacher.astype(np.float32)], axis=1)
    f = view_augmenter(views, k, seed=2)
    xa, ya = (np.asarray(t) for t in f(x, 0, targets))
    assert ya.shape == (n, 2 * k)
    np.testing.assert_array_equal(ya[:, :k], onehot)  # labels unchanged
    np.testing.assert_array_equal(ya[:, k + 1], np.arange(n))  # each row keeps its own image
    for i in range(n):
        v = int(ya[i, k])
        np.testing.assert_array_equal(xa[i], apply_view(x[i : i + 1], views[v])[0])
    assert len(set(ya[:, k].tolist())) >= 6
    _, yb = (np.asarray(t) for t in f(x, 0, targets))
    np.testing.assert_array_equal(ya, yb)  # stateless: the same batch index draws the same views
    # through make_dataset: every batch goes through it, shuffled rows stay matched
    ds = make_dataset(x, targets, batch_size=16, shuffle=True, seed=0, augment=f)
    for xa, ya in ds:
        for img, row in zip(xa.numpy(), ya.numpy(), strict=True):
            i, v = int(row[k + 1]), int(row[k])
            np.testing.assert_array_equal(img, apply_view(x[i : i + 1], views[v])[0])


def test_view_augmenter_on_non_square_images_mirrors_and_half_turns_only():
    rng = np.random.default_rng(5)
    n, k = 32, 2
    x = rng.random((n, 6, 4, 3)).astype(np.float32)  # not square: no quarter turns
    views = augment_views("both", False)
    assert {t for _, t in views} == {0, 2}
    teacher = np.stack([np.stack([np.full(n, v), np.arange(n)], 1) for v in range(len(views))])
    targets = np.concatenate([np.zeros((n, k), np.float32), *teacher.astype(np.float32)], axis=1)
    xa, ya = (np.asarray(t) for t in view_augmenter(views, k, seed=3)(x, 0, targets))
    assert xa.shape == x.shape
    for i in range(n):
        np.testing.assert_array_equal(xa[i], apply_view(x[i : i + 1], views[int(ya[i, k])])[0])
    assert len(set(ya[:, k].tolist())) == len(views)


def test_distill_checks_the_per_view_teacher_logits_match_the_views():
    from edgekit.errors import UsageError
    from edgekit.stages.distill import distill

    x = np.zeros((4, 8, 8, 3), np.float32)
    cfg = _stage(flip="horizontal")
    with pytest.raises(UsageError, match="views"):
        distill(cfg, x, np.zeros((4, 3), np.float32), np.zeros(4, np.int64),
                teacher_views=augment_views("horizontal", False))  # fmt: skip
    with pytest.raises(UsageError, match="views"):
        distill(cfg, x, np.zeros((2, 4, 3), np.float32), np.zeros(4, np.int64),
                teacher_views=augment_views("both", False))  # fmt: skip


def _stage(**augment):
    return DistillConfig.model_validate({"augment": augment})


def test_consistency_keeps_what_the_teacher_is_invariant_to():
    rng = np.random.default_rng(2)
    x = rng.random((200, 8, 8, 3)).astype(np.float32)

    def top_vs_bottom(v):  # class 0 when the top half is brighter: not invariant to vertical flips
        top, bottom = v[:, :4].mean(axis=(1, 2, 3)), v[:, 4:].mean(axis=(1, 2, 3))
        return np.stack([top - bottom, bottom - top], axis=1)

    cfg = _stage(flip="both", rot90=True)
    logits = top_vs_bottom(x)
    agree = teacher_consistency(cfg, top_vs_bottom, x, logits)
    assert set(agree) == {"flip_horizontal", "flip_vertical", "rot90"}
    assert agree["flip_horizontal"] == 1.0 and agree["flip_vertical"] == 0.0
    assert agree["rot90"] < 0.9
    flip, rot90, dropped = kept_augmentation(cfg.augment, agree)
    assert (flip, rot90, dropped) == ("horizontal", False, ["flip_vertical", "rot90"])


def test_augment_schema_rejects_unknown_values():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        _stage(flip="sideways")
    with pytest.raises(ValidationError):
        _stage(shear=0.1)


def test_rot90_needs_square_images():
    from edgekit.errors import DataError
    from edgekit.stages.distill import distill

    x = np.zeros((4, 32, 40, 3), np.float32)
    with pytest.raises(DataError, match="square"):
        distill(_stage(rot90=True), x, np.zeros((4, 3), np.float32), np.zeros(4, np.int64))


@pytest.mark.slow
def test_digit_teacher_is_not_mirror_invariant(tmp_path, teacher_keras3, digits_npz):  # noqa: F811
    """Digits change meaning when mirrored. With teacher_views off the stage measures that and
    drops the mirror images (or stops, with strict); by default (auto) it runs the teacher on every
    view instead, so the mirrors stay, each taught its own logits."""
    off = "distill.augment.teacher_views=false"
    r = compress(teacher_keras3, digits_npz, tmp_path / "s", "distill", "distill.epochs=1",
                 "distill.augment.flip=both", "distill.augment.rot90=false", "distill.augment.strict=true",
                 off, "quantize.formats=[tflite]", "export.formats=[tflite]")  # fmt: skip
    assert r.exit_code == 2
    assert "not invariant to flip_horizontal" in r.stderr and "strict=false" in r.stderr
    r = compress(teacher_keras3, digits_npz, tmp_path / "d", "distill", "distill.epochs=1",
                 "distill.augment.flip=both", "distill.augment.rot90=false", off,
                 "quantize.formats=[tflite]", "export.formats=[tflite]")  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    aug = report["stages"][0]["augment"]
    assert aug["requested"]["flip"] == "both"
    assert set(aug["teacher_agreement"]) == {"flip_horizontal", "flip_vertical"}
    assert aug["dropped"] and aug["used"]["flip"] != "both"
    assert all(0 <= a <= 1 for a in aug["teacher_agreement"].values())
    assert aug["teacher_views"] is None
    # default (auto), not invariant: the teacher runs on the 4 views {identity, mirror, vertical
    # mirror, half turn}, and strict has nothing to stop
    args = ("distill", "distill.epochs=1", "distill.augment.flip=both", "distill.augment.rot90=false",
            "distill.augment.strict=true", "quantize.formats=[tflite]", "export.formats=[tflite]")  # fmt: skip
    r = compress(teacher_keras3, digits_npz, tmp_path / "v", *args)
    assert r.exit_code == 0, r.output
    aug = json.loads(r.stdout)["stages"][0]["augment"]
    assert aug["dropped"] == [] and aug["used"] == {"flip": "both", "rot90": False}
    assert aug["teacher_views"] == 4
    assert aug["teacher_agreement"]["flip_horizontal"] < 0.95  # measured and reported all the same
    cache = sorted((tmp_path / "v" / "cache").glob("teacher-train-*"))
    assert len(cache) == 4  # the identity view is the plain teacher-train file
    assert {p.name.split("-")[2] for p in cache if p.name.count("-") == 3} == {"mr0", "mr2", "r2"}
    # the per-view logits are really the teacher's answers on the mirrored images
    from edgekit.keras_compat import load_model
    from edgekit.stages.context import as_logits

    x = np.load(digits_npz)["x"].astype(np.float32) / 255.0
    model = load_model(teacher_keras3)
    mirrored = as_logits(np.asarray(model.predict(x[:, :, ::-1])))
    cached_mr0 = np.load(next((tmp_path / "v" / "cache").glob("teacher-train-mr0-*")))
    rows = [np.abs(mirrored - row).max(axis=1).min() for row in cached_mr0[:20]]
    assert max(rows) < 1e-4, rows
    # the stage re-run with other settings reuses the cached views instead of recomputing them
    stamps = {p.name: p.stat().st_mtime_ns for p in cache}
    r = compress(teacher_keras3, digits_npz, tmp_path / "v", *args, "distill.epochs=2")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["stages"][0]["reused"] is False
    assert {p.name: p.stat().st_mtime_ns for p in cache} == stamps


def test_stage_drops_rot90_on_non_square_images_for_that_reason(tmp_path):
    """Quarter turns of non-square images cannot apply: the stage drops them saying why (an error
    with strict) instead of measuring the teacher and calling it "not invariant to rot90"."""
    from edgekit.keras_compat import keras

    k = keras()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (80, 32, 40, 3)).astype(np.uint8)
    data = tmp_path / "wide.npz"
    np.savez(data, x=x, y=np.arange(80) % 4)
    inp = k.Input((32, 40, 3))
    model = k.Model(inp, k.layers.Dense(4)(k.layers.GlobalAveragePooling2D()(inp)))
    teacher = tmp_path / "wide.keras"
    model.save(teacher)
    import yaml

    from edgekit.resources import bundled

    # distill + export only: an int8 step would judge a 1-epoch student on random images
    recipe = yaml.safe_load(bundled("recipes")["distill"].read_text())
    recipe["stages"] = [s for s in recipe["stages"] if s["stage"] in ("distill", "export")]
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    tiny = ["distill.epochs=1", "distill.student.input_size=32", "distill.augment.rot90=true",
            "distill.augment.flip=none", "export.formats=[tflite]"]  # fmt: skip
    r = compress(teacher, data, tmp_path / "strict", str(tmp_path / "r.yaml"), *tiny,
                 "distill.augment.strict=true")  # fmt: skip
    assert r.exit_code == 2, r.output
    assert "rot90 needs square images; these are 32x40" in r.stderr
    assert "not invariant" not in r.stderr and "Traceback" not in r.stderr
    r = compress(teacher, data, tmp_path / "lenient", str(tmp_path / "r.yaml"), *tiny)
    assert r.exit_code == 0, r.output
    log = (tmp_path / "lenient" / "run.log").read_text()
    assert "rot90 needs square images; these are 32x40: training without quarter turns" in log
    assert "not invariant" not in log
    aug = json.loads(r.stdout)["stages"][0]["augment"]
    assert aug["dropped"] == ["rot90"] and aug["used"] == {"flip": "none", "rot90": False}
    assert aug["teacher_agreement"] == {}


def _square_run(tmp_path, *extra):
    """A 1-epoch distill + export on 16 random square images per class with a teacher that is
    exactly invariant to mirrors and turns (global average pooling of the pixels)."""
    import yaml

    from edgekit.keras_compat import keras
    from edgekit.resources import bundled

    k = keras()
    data, teacher = tmp_path / "sq.npz", tmp_path / "sq.keras"
    if not data.exists():
        rng = np.random.default_rng(0)
        np.savez(
            data, x=rng.integers(0, 256, (64, 32, 32, 3)).astype(np.uint8), y=np.arange(64) % 4
        )
        inp = k.Input((32, 32, 3))
        k.Model(inp, k.layers.Dense(4)(k.layers.GlobalAveragePooling2D()(inp))).save(teacher)
        recipe = yaml.safe_load(bundled("recipes")["distill"].read_text())
        recipe["stages"] = [s for s in recipe["stages"] if s["stage"] in ("distill", "export")]
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    tiny = ["distill.epochs=1", "distill.student.input_size=32", "export.formats=[tflite]"]
    out = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    r = compress(teacher, data, out, str(tmp_path / "r.yaml"), *tiny, *extra)
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout)["stages"][0]["augment"]


def test_invariant_teacher_keeps_one_pass_unless_asked(tmp_path):
    out, aug = _square_run(tmp_path)  # the recipe's flips and quarter turns, teacher_views auto
    assert aug["teacher_agreement"] == {"flip_horizontal": 1.0, "flip_vertical": 1.0, "rot90": 1.0}
    assert aug["teacher_views"] is None and aug["dropped"] == []
    assert len(list((out / "cache").glob("teacher-train-*"))) == 1
    out, aug = _square_run(tmp_path, "distill.augment.teacher_views=true")
    assert aug["teacher_views"] == 8 and aug["used"] == {"flip": "both", "rot90": True}
    assert len(list((out / "cache").glob("teacher-train-*"))) == 8
