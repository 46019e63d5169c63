"""The IDX format of MNIST, Fashion-MNIST and KMNIST (gzipped or not), numpy only.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian int32 per dimension, then the values in row-major order, big-endian. A data set folder
holds image files (`*-images-idx3-ubyte[.gz]`, shape (N, H, W)) and label files
(`*-labels-idx1-ubyte[.gz]`, shape (N,)) for a `train` part and a test part (`t10k` or `test`).

The published test part is the data set's own held-out set: it becomes the `eval` split (see
`Dataset.split`), so accuracies compare with published figures on the same 10,000 images.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from edgekit.errors import DataError

# type code -> numpy dtype (big-endian where it matters)
_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

FASHION_MNIST_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
# Where `--data fashion-mnist` looks, in order: $EDGEKIT_DATA_DIR/fashion-mnist, Debian's
# dataset-fashion-mnist package, Keras' download cache.
FASHION_MNIST_DIRS = (
    Path("/usr/share/datasets/fashion-mnist"),
    Path.home() / ".keras" / "datasets" / "fashion-mnist",
)
_PARTS = {"train": ("train",), "test": ("t10k", "test")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in one IDX file (`.gz` read through gzip), in native byte order."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"Cannot read IDX file {p} ({e}). Re-download or re-install it.") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _TYPES:
        raise DataError(
            f"{p} is not an IDX file (its first bytes are {data[:4].hex() or 'missing'}; expected "
            "00 00, a type code 08-0E and the number of dimensions). Use the original MNIST-style files."
        )
    dtype, ndim = np.dtype(_TYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{p} has a truncated IDX header ({len(data)} bytes). Re-download it.")
    dims = tuple(int(d) for d in np.frombuffer(data, ">i4", count=ndim, offset=4))
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{p} holds {len(data)} bytes but its header {dims} needs {expected}: the file is "
            "truncated or damaged. Re-download it."
        )
    arr = np.frombuffer(data, dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def _find(folder: Path, part: str, kind: str) -> Path | None:
    """The `kind` ("images" or "labels") file of `part` in `folder`, gzipped or not."""
    ndim = 3 if kind == "images" else 1
    for prefix in _PARTS[part]:
        for sep in ("-", "."):
            for suffix in (".gz", ""):
                p = folder / f"{prefix}-{kind}{sep}idx{ndim}-ubyte{suffix}"
                if p.is_file():
                    return p
    return None


def is_idx_folder(folder: Path) -> bool:
    """True when `folder` holds at least one pair of IDX image and label files."""
    return folder.is_dir() and any(
        _find(folder, part, "images") and _find(folder, part, "labels") for part in _PARTS
    )


def load_idx_folder(folder: Path, part: str = "all") -> tuple[np.ndarray, np.ndarray, int]:
    """Images (N, H, W, 1) uint8 and labels of `part` ("train", "test" or "all": train then test),
    and how many of them (from the start) are the training part."""
    if part not in ("train", "test", "all"):
        raise DataError(f"Expected part train, test or all. Received: part={part!r}.")
    parts = ["train", "test"] if part == "all" else [part]
    xs, ys = [], []
    for name in parts:
        images, labels = _find(folder, name, "images"), _find(folder, name, "labels")
        if images is None or labels is None:
            raise DataError(
                f"{folder} has no {name} part: expected {_PARTS[name][0]}-images-idx3-ubyte[.gz] and "
                f"{_PARTS[name][0]}-labels-idx1-ubyte[.gz] (the original MNIST-style file names)."
            )
        x, y = read_idx(images), read_idx(labels)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(
                f"{images.name} and {labels.name} do not match: images {x.shape}, labels {y.shape} "
                "(expected (N, H, W) images and N labels)."
            )
        if x.dtype != np.uint8:
            raise DataError(
                f"{images.name} holds {x.dtype} pixels; expected unsigned bytes (0-255)."
            )
        xs.append(x[..., None])
        ys.append(y.astype(np.int64))
    n_train = len(xs[0]) if part == "all" else (len(xs[0]) if part == "train" else 0)
    return np.concatenate(xs), np.concatenate(ys), n_train


def fashion_mnist_dir() -> Path:
    """The folder holding Fashion-MNIST's IDX files, or a one-line DataError saying how to get it."""
    env = os.environ.get("EDGEKIT_DATA_DIR")
    candidates = ([Path(env) / "fashion-mnist"] if env else []) + list(FASHION_MNIST_DIRS)
    for c in candidates:
        if is_idx_folder(c):
            return c
    raise DataError(
        "Fashion-MNIST is not installed: looked in "
        + ", ".join(str(c) for c in candidates)
        + ". Install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or pass "
        "--data path/to/folder holding its four IDX files."
    )
