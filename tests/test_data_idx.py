"""IDX files (MNIST, Fashion-MNIST, KMNIST): the reader, folders of them, the published test part
kept as eval, and the real Fashion-MNIST from Debian's dataset-fashion-mnist package."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from edgekit.data import load_dataset
from edgekit.data.idx import FASHION_MNIST_DIRS, read_idx
from edgekit.errors import DataError


def write_idx(path, arr: np.ndarray) -> None:
    """An IDX file written byte by byte from the format's definition (not by edgekit)."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    code = codes[arr.dtype]
    big = arr.astype(arr.dtype.newbyteorder(">"))
    data = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape) + big.tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)


def make_idx_folder(folder, n_train=60, n_test=20, gz=True, size=8) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    parts = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        y = np.arange(n, dtype=np.uint8) % 3
        ext = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", y)
        parts[prefix] = (x, y)
    return parts["train"] + parts["t10k"]


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_read_idx_round_trips_every_dtype_gzipped_or_not(tmp_path, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) * 7).astype(dtype)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, arr)
        out = read_idx(tmp_path / name)
        assert out.dtype.isnative and out.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(out, arr)


def test_idx_folder_loads_train_then_test_with_the_test_part_as_eval(tmp_path):
    x_tr, _, x_te, y_te = make_idx_folder(tmp_path / "mnistlike", gz=False)
    (tmp_path / "mnistlike" / "labels.txt").write_text("zero\none\ntwo\n")
    ds = load_dataset(str(tmp_path / "mnistlike"))
    assert ds.image_shape == (8, 8, 1) and len(ds) == 80
    assert ds.labels == ["zero", "one", "two"]
    np.testing.assert_array_equal(ds.x[:60, ..., 0], x_tr)
    np.testing.assert_array_equal(ds.y[60:], y_te)
    parts = ds.split({"train": 0.7, "val": 0.1, "calib": 0.1, "eval": 0.1}, seed=0)
    np.testing.assert_array_equal(parts["eval"].x[..., 0], x_te)  # the published test part, whole
    assert sum(len(parts[k]) for k in ("train", "val", "calib")) == 60
    assert abs(len(parts["train"]) - 60 * 0.7 / 0.9) < 1  # 0.7 / (1 - eval) of the rest
    train_rows = {r.tobytes() for r in parts["train"].x}
    assert not train_rows & {r.tobytes() for r in parts["eval"].x}
    # the same files give the same fingerprint; the test part is part of it
    again = load_dataset(str(tmp_path / "mnistlike"))
    assert again.fingerprint() == ds.fingerprint()


def test_resize_and_channels_keep_the_test_part(tmp_path):
    make_idx_folder(tmp_path / "m")
    ds = load_dataset(str(tmp_path / "m"), image_size=16)
    assert ds.image_shape == (16, 16, 1)
    assert ds.test_indices is not None and len(ds.test_indices) == 20


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda b: b"\x01\x02" + b[2:], "is not an IDX file"),
        (lambda b: b[:-5], "truncated or damaged"),
        (lambda b: b[:6], "truncated IDX header|truncated or damaged"),
    ],
)
def test_damaged_idx_files_are_one_line_errors(tmp_path, damage, match):
    make_idx_folder(tmp_path / "m", gz=False)
    f = tmp_path / "m" / "train-images-idx3-ubyte"
    f.write_bytes(damage(f.read_bytes()))
    with pytest.raises(DataError, match=match) as e:
        load_dataset(str(tmp_path / "m"))
    assert "\n" not in str(e.value)


def test_images_and_labels_that_do_not_match(tmp_path):
    make_idx_folder(tmp_path / "m", gz=False)
    write_idx(tmp_path / "m" / "train-labels-idx1-ubyte", np.zeros(7, np.uint8))
    with pytest.raises(DataError, match="do not match"):
        load_dataset(str(tmp_path / "m"))


def test_fashion_mnist_missing_says_what_to_install(tmp_path, monkeypatch):
    import edgekit.data.idx as idx

    monkeypatch.setenv("EDGEKIT_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(idx, "FASHION_MNIST_DIRS", (tmp_path / "nowhere",))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as e:
        load_dataset("fashion-mnist")
    assert "\n" not in str(e.value)
    # $EDGEKIT_DATA_DIR/fashion-mnist is found first
    make_idx_folder(tmp_path / "fashion-mnist")
    ds = load_dataset("fashion-mnist:part=test")
    assert len(ds) == 20 and ds.labels[0] == "T-shirt/top"


def test_fashion_mnist_bad_part():
    with pytest.raises(DataError, match="part in all, train, test"):
        load_dataset("fashion-mnist:part=val")


FASHION = next((d for d in FASHION_MNIST_DIRS if (d / "t10k-labels-idx1-ubyte.gz").is_file()), None)


@pytest.mark.skipif(
    FASHION is None, reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)"
)
def test_real_fashion_mnist_from_the_debian_package():
    ds = load_dataset("fashion-mnist")
    assert len(ds) == 70_000 and ds.image_shape == (28, 28, 1) and ds.x.dtype == np.uint8
    assert ds.num_classes == 10 and ds.labels[9] == "Ankle boot"
    # published facts about the files: the first training image is an ankle boot, the first test
    # image too, and both parts are balanced (6,000 and 1,000 per class)
    assert ds.y[0] == 9 and ds.y[60_000] == 9
    assert set(np.bincount(ds.y[:60_000])) == {6000}
    parts = ds.split({"train": 0.7, "val": 0.1, "calib": 0.1, "eval": 0.1}, seed=0)
    assert len(parts["eval"]) == 10_000 and set(np.bincount(parts["eval"].y)) == {1000}
    rgb = load_dataset("fashion-mnist:part=test,channels=3,size=32")
    assert rgb.image_shape == (32, 32, 3) and len(rgb) == 10_000
