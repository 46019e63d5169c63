"""edgekit.data: built-in sets, user files, splits, fingerprints and every bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from edgekit.data import (
    BUILTIN_DATASETS,
    DEFAULT_SPLIT,
    SHAPE_CLASSES,
    Dataset,
    Preprocessing,
    from_arrays,
    load_dataset,
)
from edgekit.data import shapes as shapes_mod
from edgekit.errors import DataError, UsageError


def _save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _rand_images(n, h=8, w=8, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


@pytest.fixture(scope="module")
def small_shapes():
    return load_dataset("shapes:n=200,size=16")


# --- import hygiene ----------------------------------------------------------------------------
def test_import_does_not_pull_in_tensorflow_or_heavy_libraries():
    code = (
        "import sys, edgekit.data as d\n"
        "d.Dataset, d.load_dataset, d.from_arrays\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'tf_keras', 'sklearn', 'PIL')]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --- built-in data sets ------------------------------------------------------------------------
def test_shapes_default_is_balanced_rgb_uint8_and_deterministic():
    a = load_dataset("shapes:n=300")
    b = load_dataset("shapes:n=300")
    assert a.image_shape == (32, 32, 3) and a.x.dtype == np.uint8 and len(a) == 300
    assert a.labels == list(SHAPE_CLASSES[:10]) and a.num_classes == 10
    assert np.bincount(a.y).tolist() == [30] * 10
    assert a.fingerprint() == b.fingerprint()
    assert np.array_equal(a.x, b.x)


def test_shapes_options_seed_size_classes():
    base = load_dataset("shapes:n=120,size=16")
    other_seed = load_dataset("shapes:n=120,size=16,seed=1")
    assert base.fingerprint() != other_seed.fingerprint()
    # The seed argument is the default seed; an explicit seed in the spec wins.
    assert load_dataset("shapes:n=120,size=16", seed=1).fingerprint() == other_seed.fingerprint()
    assert load_dataset("shapes:n=120,size=16,seed=0", seed=1).fingerprint() == base.fingerprint()
    assert load_dataset("shapes:48,n=10").image_shape == (48, 48, 3)
    twelve = load_dataset("shapes:n=48,size=16,classes=12")
    assert twelve.num_classes == 12 and twelve.labels[-1] == "tee"
    # The same scenes at another resolution: labels identical, images look alike when shrunk.
    big = load_dataset("shapes:n=120,size=32")
    small = load_dataset("shapes:n=120,size=16")
    assert np.array_equal(big.y, small.y)
    shrunk = big.resized(16).x.astype(float)
    same = np.abs(shrunk - small.x).mean()
    shuffled = np.abs(shrunk - small.x[::-1]).mean()
    assert same < 0.6 * shuffled


def test_shapes_images_show_the_shape_and_vary():
    x, y, _ = shapes_mod.generate(n=60, size=32, seed=3)
    # Not blank, not constant per class: colour and pose vary between images of one class.
    assert x.std() > 20
    per_class = x[y == 0].astype(float)
    assert per_class.std(axis=0).mean() > 20


def test_digits_is_the_real_sklearn_set():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    ref = load_digits()
    assert len(ds) == 1797 and ds.image_shape == (32, 32, 3) and ds.labels == list("0123456789")
    assert np.array_equal(ds.y, ref.target)
    assert np.array_equal(ds.x[..., 0], ds.x[..., 2])  # grey shown as RGB
    native = load_dataset("digits:size=8,channels=1")
    assert native.image_shape == (8, 8, 1)
    assert np.array_equal(native.x[..., 0], np.rint(ref.images * 255 / 16).astype(np.uint8))
    assert load_dataset("digits:size=48").image_shape == (48, 48, 3)


def test_image_size_draws_builtins_at_that_size():
    assert load_dataset("shapes:n=20", image_size=24).image_shape == (24, 24, 3)
    assert load_dataset("shapes:n=20", image_size=(20, 28)).image_shape == (20, 28, 3)
    assert load_dataset("digits", image_size=16).image_shape == (16, 16, 3)


# --- user data ---------------------------------------------------------------------------------
def test_image_folder_with_class_subfolders(tmp_path):
    imgs = _rand_images(6, 10, 12)
    for i, img in enumerate(imgs):
        _save_png(tmp_path / ("cat" if i % 2 else "bird") / f"{i}.png", img)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    ds = load_dataset(str(tmp_path))
    assert ds.labels == ["bird", "cat"] and len(ds) == 6
    assert ds.image_shape == (10, 12, 3)
    assert sorted(ds.y.tolist()) == [0, 0, 0, 1, 1, 1]
    # PNG is lossless: the pixels come back exactly.
    assert np.array_equal(ds.x[0], imgs[0])
    assert load_dataset(tmp_path, image_size=8).image_shape == (8, 8, 3)


def test_image_folder_grey_and_unlabeled(tmp_path):
    for i in range(3):
        _save_png(tmp_path / f"{i}.png", _rand_images(1, 8, 8, 1)[0, ..., 0])
    ds = load_dataset(tmp_path)
    assert not ds.labeled and ds.image_shape == (8, 8, 1) and ds.num_classes == 0


def test_npz_labeled_unlabeled_and_label_names(tmp_path):
    x = _rand_images(10)
    y = np.arange(10) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y, labels=np.array(["a", "b", "c"]))
    ds = load_dataset(tmp_path / "d.npz")
    assert ds.labels == ["a", "b", "c"] and np.array_equal(ds.y, y) and np.array_equal(ds.x, x)
    assert ds.name == "d"
    np.savez(tmp_path / "u.npz", x=x[..., 0].astype(np.float32))  # grey float, no labels
    u = load_dataset(str(tmp_path / "u.npz"))
    assert not u.labeled and u.x.dtype == np.float32 and u.image_shape == (8, 8, 1)
    assert load_dataset(tmp_path / "d.npz", image_size=4).image_shape == (4, 4, 3)


def test_from_arrays_conversions():
    x = _rand_images(6)
    ds = from_arrays(x.astype(np.int32), np.eye(3)[np.arange(6) % 3])  # int pixels, one-hot y
    assert ds.x.dtype == np.uint8 and ds.y.tolist() == [0, 1, 2, 0, 1, 2]
    assert ds.labels == ["0", "1", "2"]
    assert from_arrays(x, np.arange(6.0) % 2).y.dtype == np.int64


# --- splits, fingerprints, batches -------------------------------------------------------------
def test_split_is_deterministic_stratified_and_disjoint(small_shapes):
    parts = small_shapes.split(DEFAULT_SPLIT, seed=0)
    again = small_shapes.split(DEFAULT_SPLIT, seed=0)
    other = small_shapes.split(DEFAULT_SPLIT, seed=1)
    assert [len(p) for p in parts.values()] == [140, 20, 20, 20]
    for k in parts:
        assert parts[k].fingerprint() == again[k].fingerprint()
    assert parts["eval"].fingerprint() != other["eval"].fingerprint()
    # Stratified: 20 images per class in total -> 14/2/2/2 per class.
    for k, part in parts.items():
        expect = {"train": 14}.get(k, 2)
        assert np.bincount(part.y, minlength=10).tolist() == [expect] * 10
    # Disjoint and complete: every image lands in exactly one split.
    rows = np.concatenate([p.x.reshape(len(p), -1) for p in parts.values()])
    assert len(np.unique(rows, axis=0)) == len(small_shapes)
    assert parts["train"].labels == small_shapes.labels


def test_split_unlabeled_partial_and_tiny():
    ds = from_arrays(_rand_images(10))
    parts = ds.split({"calib": 0.5, "eval": 0.3}, seed=0)
    assert [len(p) for p in parts.values()] == [5, 3]
    # The smallest labeled set that still fills every default split.
    tiny = from_arrays(_rand_images(10), np.arange(10) % 2)
    assert [len(p) for p in tiny.split(DEFAULT_SPLIT).values()] == [7, 1, 1, 1]
    with pytest.raises(DataError, match="too few"):
        from_arrays(_rand_images(5), np.arange(5) % 2).split(DEFAULT_SPLIT)
    with pytest.raises(DataError, match="add up"):
        ds.split({"a": 0.7, "b": 0.7})
    with pytest.raises(DataError, match=r"\(0, 1\]"):
        ds.split({"a": -0.1})


def test_fingerprint_tracks_images_labels_and_order(small_shapes):
    fp = small_shapes.fingerprint()
    assert fp["count"] == 200 and len(fp["sha256"]) == 64
    relabeled = from_arrays(small_shapes.x, (small_shapes.y + 1) % 10)
    assert relabeled.fingerprint()["sha256"] != fp["sha256"]
    x = small_shapes.x.copy()
    x[0, 0, 0, 0] ^= 1  # one pixel, one bit
    assert from_arrays(x, small_shapes.y).fingerprint()["sha256"] != fp["sha256"]
    assert small_shapes.subset(np.arange(199, -1, -1)).fingerprint()["sha256"] != fp["sha256"]
    same = from_arrays(small_shapes.x.copy(), small_shapes.y.copy(), small_shapes.labels)
    assert same.fingerprint() == fp


def test_batches_and_preprocessing(small_shapes):
    got = list(small_shapes.batches(64))
    assert [len(xb) for xb, _ in got] == [64, 64, 64, 8]
    xb, yb = got[0]
    assert xb.dtype == np.float32 and xb.min() >= 0 and xb.max() <= 1
    assert np.allclose(xb, small_shapes.x[:64] / 255.0)
    assert np.array_equal(yb, small_shapes.y[:64])
    pre = Preprocessing(mean=(127.5, 127.5, 127.5), std=127.5)
    xb2, _ = next(small_shapes.batches(8, pre))
    assert np.allclose(xb2, small_shapes.x[:8] / 127.5 - 1, atol=1e-6)
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    with pytest.raises(DataError, match="non-zero"):
        Preprocessing(std=0)
    with pytest.raises(DataError, match="channels"):
        Preprocessing(mean=(1.0, 2.0)).apply(small_shapes.x[:1])
    unl = from_arrays(small_shapes.x[:5])
    assert [yb for _, yb in unl.batches(2)] == [None, None, None]


def test_subset_resized_describe(small_shapes):
    sub = small_shapes.subset([3, 1])
    assert np.array_equal(sub.x, small_shapes.x[[3, 1]]) and sub.labels == small_shapes.labels
    assert small_shapes.take(5).fingerprint() == small_shapes.subset(range(5)).fingerprint()
    r = small_shapes.resized((8, 12))
    assert r.image_shape == (8, 12, 3) and r.x.dtype == np.uint8
    assert np.array_equal(r.y, small_shapes.y)
    f = from_arrays(small_shapes.x[:4].astype(np.float32)).resized(8)
    assert f.x.dtype == np.float32 and f.image_shape == (8, 8, 3)
    d = small_shapes.describe()
    assert d["count"] == 200 and d["image_shape"] == [16, 16, 3] and d["num_classes"] == 10
    with pytest.raises(DataError, match="indices"):
        small_shapes.subset([500])


# --- bad input: one DataError (exit 2) each, saying what to do ---------------------------------
def test_data_error_is_a_usage_error_with_exit_code_2():
    assert issubclass(DataError, UsageError) and DataError.exit_code == 2


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "nothing" / "here"))
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("missing.npz")


def test_empty_folder(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_dataset(tmp_path)


def test_folder_with_one_class(tmp_path):
    _save_png(tmp_path / "only" / "0.png", _rand_images(1)[0])
    with pytest.raises(DataError, match="only one class"):
        load_dataset(tmp_path)


def test_unreadable_image(tmp_path):
    _save_png(tmp_path / "a" / "0.png", _rand_images(1)[0])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken\.png"):
        load_dataset(tmp_path)


def test_mixed_image_sizes_name_two_examples(tmp_path):
    _save_png(tmp_path / "a" / "small.png", _rand_images(1, 8, 8)[0])
    _save_png(tmp_path / "b" / "large.png", _rand_images(1, 16, 20)[0])
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path)
    msg = str(e.value)
    assert "small.png" in msg and "large.png" in msg and "image_size" in msg
    assert "\n" not in msg
    assert load_dataset(tmp_path, image_size=8).image_shape == (8, 8, 3)


def test_npz_without_x(tmp_path):
    np.savez(tmp_path / "d.npz", images=_rand_images(2))
    with pytest.raises(DataError, match=r"no array 'x'.*images"):
        load_dataset(tmp_path / "d.npz")


def test_npz_not_a_npz(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="Cannot read"):
        load_dataset(tmp_path / "d.npz")


def test_unsupported_file(tmp_path):
    (tmp_path / "d.csv").write_text("1,2")
    with pytest.raises(DataError, match="image folder"):
        load_dataset(tmp_path / "d.csv")


@pytest.mark.parametrize(
    ("y", "labels", "match"),
    [
        (np.array([0, 1, 5]), ["a", "b"], "outside the class range"),
        (np.array([0, -1, 1]), None, ">= 0"),
        (np.array([0, 1]), None, "one label per image"),
        (np.array([0.5, 1, 0]), None, "fractional"),
        (np.array([0, 0, 0]), None, "at least 2 classes"),
        (np.array(["a", "b", "a"]), None, "integer class indices"),
        (np.array([0, 1, 1]), ["a", "a"], "unique"),
    ],
)
def test_bad_labels(y, labels, match):
    with pytest.raises(DataError, match=match):
        from_arrays(_rand_images(3), y, labels)


def test_bad_label_in_npz_names_the_file(tmp_path):
    np.savez(tmp_path / "d.npz", x=_rand_images(3), y=np.array([0, 1, 9]), labels=["a", "b"])
    with pytest.raises(DataError, match=r"d\.npz.*outside the class range"):
        load_dataset(tmp_path / "d.npz")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf(bad):
    x = _rand_images(3).astype(np.float32)
    x[1, 2, 3, 0] = bad
    with pytest.raises(DataError, match=r"NaN or inf.*image 1"):
        from_arrays(x)


def test_out_of_range_pixels():
    with pytest.raises(DataError, match=r"\[0, 255\]"):
        from_arrays(np.full((2, 4, 4, 3), -1.0, dtype=np.float32))
    with pytest.raises(DataError, match=r"\[0, 255\]"):
        from_arrays(np.full((2, 4, 4, 3), 300, dtype=np.int32))


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((4, 4), "4 dimensions"),
        ((2, 4, 4, 3, 1), "4 dimensions"),
        ((32, 32, 3), "one image"),
        ((2, 3, 8, 8), "channels-first"),
        ((0, 8, 8, 3), "empty"),
    ],
)
def test_wrong_ndim_or_shape(shape, match):
    with pytest.raises(DataError, match=match):
        from_arrays(np.zeros(shape, dtype=np.uint8))


def test_ragged_images():
    with pytest.raises(DataError, match="image_size"):
        from_arrays([np.zeros((4, 4, 3)), np.zeros((5, 5, 3))])


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DataError) as e:
        load_dataset("cifar10")
    for name in BUILTIN_DATASETS:
        assert name in str(e.value)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("shapes:colour=1", "Unknown option 'colour'.*size, n, seed, classes"),
        ("digits:n=5", "Unknown option 'n'"),
        ("shapes:size=big", "integer"),
        ("shapes:size=4", r"\[8, 512\]"),
        ("shapes:classes=13", r"\[2, 12\]"),
        ("shapes:n=0", r"\[1, "),
        ("shapes:abc", "k=v"),
        ("", "Empty"),
    ],
)
def test_bad_spec_options(spec, match):
    with pytest.raises(DataError, match=match):
        load_dataset(spec)


def test_bad_image_size():
    with pytest.raises(DataError, match="image size"):
        load_dataset("shapes:n=4", image_size=(0, 4))


def test_dataset_constructor_validates():
    with pytest.raises(DataError):
        Dataset(np.zeros((2, 4, 4, 3), dtype=np.uint8), np.array([0, 7]), ["a", "b"])


def test_zero_to_one_floats_get_a_warning(capfd, monkeypatch):
    monkeypatch.delenv("EDGEKIT_QUIET", raising=False)
    from_arrays(np.full((2, 4, 4, 3), 0.5, dtype=np.float32))
    assert "[0, 255]" in capfd.readouterr().err
    from_arrays(np.full((2, 4, 4, 3), 128.0, dtype=np.float32))
    assert capfd.readouterr().err == ""
