"""The in-memory image data set every stage, runner and metric works on, and its preprocessing.

Images are NHWC pixel values in [0, 255]: uint8, or float32 for user arrays. A model sees
`Preprocessing.apply(pixels)`; the default gives [0, 1]. numpy only: no TensorFlow here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import DataError

# Splits used by `edgekit compress`; the bundled teacher was trained on "train" of these.
DEFAULT_SPLIT: dict[str, float] = {"train": 0.7, "val": 0.1, "calib": 0.1, "eval": 0.1}


@dataclass(frozen=True)
class Preprocessing:
    """How pixels become model input: `(pixels - mean) / std`, per channel or for all channels.

    Args:
        mean: a number, or one number per channel.
        std: a number, or one number per channel; every value must be non-zero.
    """

    mean: float | tuple[float, ...] = 0.0
    std: float | tuple[float, ...] = 255.0

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            v = getattr(self, name)
            if isinstance(v, (list, tuple, np.ndarray)):
                object.__setattr__(self, name, tuple(float(a) for a in v))
            else:
                object.__setattr__(self, name, float(v))
        std = np.asarray(self.std, dtype=np.float64)
        if not np.all(np.isfinite(std)) or np.any(std == 0):
            raise DataError(
                f"Expected a non-zero, finite preprocessing std. Received: std={self.std}. "
                "Use std=255 for inputs in [0, 1]."
            )
        if not np.all(np.isfinite(np.asarray(self.mean, dtype=np.float64))):
            raise DataError(f"Expected a finite preprocessing mean. Received: mean={self.mean}.")

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Pixels (any numeric dtype) -> float32 model input."""
        x = np.asarray(x, dtype=np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        c = x.shape[-1]
        if (mean.ndim and mean.shape[0] != c) or (std.ndim and std.shape[0] != c):
            raise DataError(
                f"Preprocessing has per-channel mean/std for {max(mean.size, std.size)} channels "
                f"but the images have {x.shape[-1]}. Give one value or one per channel."
            )
        return (x - mean) / std

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Preprocessing:
        d = dict(d or {})
        unknown = set(d) - {"mean", "std"}
        if unknown:
            raise DataError(
                f"Unknown preprocessing keys {sorted(unknown)}. Expected only 'mean' and 'std'."
            )
        return cls(**d)


class Dataset:
    """Images (NHWC pixels in [0, 255]), optional integer labels and the class names.

    Args:
        x: images, shape (N, H, W, C) (or (N, H, W) for grey images), uint8 or float.
        y: class indices, shape (N,) (or one-hot (N, K)); None for unlabeled data.
        labels: class names; index i names class i. Defaults to "0", "1", ... from y.
        name: a short name for reports ("shapes", "digits", a file name).
        source: where the data came from (a spec or a path), for reports.
        test_indices: the examples of the data set's own published test part (Fashion-MNIST's
            10,000 t10k images), or None. `split` makes them the `eval` split.
    """

    def __init__(
        self,
        x: Any,
        y: Any = None,
        labels: Sequence[str] | None = None,
        name: str = "arrays",
        source: str = "",
        test_indices: Any = None,
    ) -> None:
        x = _check_x(x)
        y = _check_y(y, len(x))
        labels = _check_labels(labels, y)
        self._init(x, y, labels, name, source or name, _check_test_indices(test_indices, len(x)))

    def _init(
        self,
        x: np.ndarray,
        y: np.ndarray | None,
        labels: list[str],
        name: str,
        source: str,
        test_indices: np.ndarray | None = None,
        origin: Any = None,
    ) -> None:
        self.x = x
        self.y = y
        self.labels = labels
        self.name = name
        self.source = source
        self.test_indices = test_indices
        # The files an in-memory set was decoded from (a StreamedImages aligned with x's rows),
        # so that its fingerprint is the files' like a stream's; None for arrays.
        self.origin = origin

    @classmethod
    def _trusted(
        cls,
        x: np.ndarray,
        y: np.ndarray | None,
        labels: list[str],
        name: str,
        source: str,
        test_indices: np.ndarray | None = None,
        origin: Any = None,
    ) -> Dataset:
        # Subsets and splits of a validated data set skip the O(N) checks.
        ds = cls.__new__(cls)
        ds._init(x, y, list(labels), name, source, test_indices, origin)
        return ds

    # --- description -------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        lab = f"{self.num_classes} classes" if self.labeled else "unlabeled"
        return f"Dataset({self.name!r}, {len(self)} images {self.image_shape}, {lab})"

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C)."""
        h, w, c = self.x.shape[1:]
        return int(h), int(w), int(c)

    @property
    def labeled(self) -> bool:
        return self.y is not None

    @property
    def streamed(self) -> bool:
        """True when the images are read from their files batch by batch (`StreamedImages`)."""
        return bool(getattr(self.x, "streamed", False))

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for reports (includes the fingerprint)."""
        return {
            "name": self.name,
            "source": self.source,
            "count": len(self),
            "image_shape": list(self.image_shape),
            "dtype": str(self.x.dtype),
            "labeled": self.labeled,
            "num_classes": self.num_classes,
            "labels": list(self.labels),
            "fingerprint": self.fingerprint(),
            **({} if self.test_indices is None else {"test_part": len(self.test_indices)}),
        }

    def fingerprint(self) -> dict[str, Any]:
        """Count and sha256 over the shape, dtype and bytes of x, and the bytes of y.

        Two data sets with the same fingerprint hold the same images and labels in the same order.
        A data set read from files (an image folder, a TFRecord), streamed or decoded into
        memory, hashes its files instead (names, sizes and content hashes, in order, read when
        it was scanned): the same files give the same fingerprint either way.
        """
        h = hashlib.sha256()
        files = self.x if self.streamed else self.origin
        if files is not None:
            h.update(f"x:{files.dtype.str}:{files.shape}".encode())
            h.update(files.fingerprint_bytes())
        else:
            h.update(f"x:{self.x.dtype.str}:{self.x.shape}".encode())
            h.update(np.ascontiguousarray(self.x).tobytes())
        if self.y is not None:
            h.update(b"y:")
            h.update(np.ascontiguousarray(self.y, dtype="<i8").tobytes())
        if self.test_indices is not None:
            h.update(b"test:")
            h.update(np.ascontiguousarray(self.test_indices, dtype="<i8").tobytes())
        return {"count": len(self), "sha256": h.hexdigest()}

    # --- derived data sets ---------------------------------------------------------------------
    def subset(self, indices: Any) -> Dataset:
        """The examples at `indices` (integer array, slice or boolean mask), in that order."""
        idx = indices if isinstance(indices, slice) else np.asarray(indices)
        if isinstance(idx, np.ndarray) and idx.dtype != bool:
            idx = idx.astype(np.int64)
            if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
                raise DataError(
                    f"Subset indices must be in [0, {len(self)}). "
                    f"Received indices from {idx.min()} to {idx.max()}."
                )
        x = self.x.take(idx) if self.streamed else self.x[idx]
        y = None if self.y is None else self.y[idx]
        origin = None if self.origin is None else self.origin.take(idx)
        return Dataset._trusted(x, y, self.labels, self.name, self.source, origin=origin)

    def take(self, n: int) -> Dataset:
        """The first `n` examples (all of them when there are fewer)."""
        return self.subset(slice(0, max(0, int(n))))

    def split(
        self, fractions: Mapping[str, float] | None = None, seed: int = 0
    ) -> dict[str, Dataset]:
        """Split into named parts, deterministically for a seed, stratified by class when labeled.

        The examples are put in one order in which every class is spread evenly (classes
        interleaved by their rank within a shuffled class), and the order is cut in the order of
        `fractions`; sizes follow the fractions (largest remainder). Fractions may add up to less
        than 1 (the rest is left out). Every named part gets at least one example, else DataError.

        A data set with its own published test part (`test_indices`: Fashion-MNIST's t10k images)
        keeps it whole as `eval`, so accuracies compare with published figures; the other
        fractions then divide the remaining examples (scaled by 1 / (1 - eval)).
        """
        fractions = dict(DEFAULT_SPLIT if fractions is None else fractions)
        if not fractions:
            raise DataError(
                "Expected at least one split fraction, e.g. {'train': 0.8, 'eval': 0.2}."
            )
        for k, f in fractions.items():
            if not isinstance(f, (int, float)) or not np.isfinite(f) or not 0 < f <= 1:
                raise DataError(f"Expected split fractions in (0, 1]. Received: {k}={f!r}.")
        total = float(sum(fractions.values()))
        if total > 1 + 1e-6:
            raise DataError(
                f"Split fractions add up to {total:.3g}; expected at most 1. Received: {fractions}."
            )
        if self.test_indices is not None and "eval" in fractions:
            return self._split_with_test_part(fractions, seed)
        n = len(self)
        counts = _largest_remainder(n, list(fractions.values()), total)
        empty = [k for k, c in zip(fractions, counts, strict=True) if c == 0]
        if empty:
            need = int(np.ceil(1 / min(fractions.values())))
            raise DataError(
                f"{n} examples are too few to split into {fractions}: split(s) {empty} would be "
                f"empty. Use at least {need} examples or larger fractions."
            )
        order = self._stratified_order(seed)
        out: dict[str, Dataset] = {}
        start = 0
        for k, c in zip(fractions, counts, strict=True):
            out[k] = self.subset(order[start : start + c])
            start += c
        return out

    def _split_with_test_part(self, fractions: dict[str, float], seed: int) -> dict[str, Dataset]:
        test = np.asarray(self.test_indices, np.int64)
        rest = np.setdiff1d(np.arange(len(self)), test)
        others = {k: f for k, f in fractions.items() if k != "eval"}
        scale = 1.0 / max(1e-9, 1.0 - fractions["eval"])
        scaled = {k: min(1.0, f * scale) for k, f in others.items()}
        if sum(scaled.values()) > 1:
            total = sum(scaled.values())
            scaled = {k: f / total for k, f in scaled.items()}
        parts = self.subset(rest).split(scaled, seed) if scaled else {}
        out = {k: parts[k] for k in fractions if k != "eval"}
        out["eval"] = self.subset(test)
        return {k: out[k] for k in fractions}

    def _stratified_order(self, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        n = len(self)
        if self.y is None:
            return rng.permutation(n)
        perm = rng.permutation(n)
        y = self.y[perm]
        # Rank of each example within its (shuffled) class, as a fraction of the class size; a
        # random per-class offset breaks ties so that no class is always first.
        order_in_class = np.argsort(y, kind="stable")
        ranks = np.empty(n, dtype=np.float64)
        counts = np.bincount(y, minlength=max(self.num_classes, int(y.max()) + 1))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        ranks[order_in_class] = np.arange(n) - np.repeat(starts, counts)
        tie = rng.random(len(counts))
        key = (ranks + tie[y]) / counts[y]
        return perm[np.argsort(key, kind="stable")]

    def resized(self, size: int | tuple[int, int]) -> Dataset:
        """The images resized to (H, W) (bilinear, antialiased when shrinking); labels unchanged."""
        h, w = _as_hw(size)
        if (h, w) == self.image_shape[:2]:
            return self
        x = self.x.resized((h, w)) if self.streamed else resize_images(self.x, (h, w))
        origin = None if self.origin is None else self.origin.resized((h, w))
        return Dataset._trusted(
            x, self.y, self.labels, self.name, self.source, self.test_indices, origin
        )

    # --- iteration -----------------------------------------------------------------------------
    def batches(
        self, batch_size: int = 64, preprocessing: Preprocessing | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Yield (preprocessed float32 images, labels or None) in order; the last may be short.

        `preprocessing=None` uses the default `Preprocessing()` (pixels / 255). A streamed data
        set decodes one batch at a time; with `on_corrupt="skip"` it leaves out the images it
        cannot decode (and their labels), so a batch may be shorter.
        """
        for xb, yb, _ in self.batches_with_positions(batch_size, preprocessing):
            yield xb, yb

    def batches_with_positions(
        self, batch_size: int = 64, preprocessing: Preprocessing | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray]]:
        """`batches`, each with the positions (in this data set) of the images it holds: all of
        them, except the images a streamed set with `on_corrupt="skip"` could not decode."""
        if int(batch_size) < 1:
            raise DataError(f"Expected batch_size >= 1. Received: batch_size={batch_size}.")
        pre = preprocessing or Preprocessing()
        batch_size = int(batch_size)
        if self.streamed:
            yield from self._streamed_batches(batch_size, pre)
            return
        for i in range(0, len(self), batch_size):
            xb = pre.apply(self.x[i : i + batch_size])
            yb = None if self.y is None else self.y[i : i + batch_size]
            yield xb, yb, np.arange(i, i + len(xb))

    def _streamed_batches(
        self, batch_size: int, pre: Preprocessing
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray]]:
        # The next batch decodes in a thread while this one is used (PIL releases the GIL while
        # it decodes): decoding and inference overlap, and only two batches are held.
        from concurrent.futures import ThreadPoolExecutor

        starts = list(range(0, len(self), batch_size))

        def load(i: int) -> tuple[np.ndarray, np.ndarray]:
            return self.x.decode_positions(np.arange(i, min(i + batch_size, len(self))))

        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(load, starts[0]) if starts else None
            for k, i in enumerate(starts):
                xb, ok = pending.result()  # type: ignore[union-attr]
                if k + 1 < len(starts):
                    pending = pool.submit(load, starts[k + 1])
                yb = None if self.y is None else self.y[i : i + batch_size]
                positions = np.arange(i, i + len(ok))
                if not ok.all():
                    xb, yb, positions = xb[ok], None if yb is None else yb[ok], positions[ok]
                if len(xb):
                    yield pre.apply(xb), yb, positions

    def preprocessed(self, preprocessing: Preprocessing | None = None) -> np.ndarray:
        """All images as one preprocessed float32 array."""
        return (preprocessing or Preprocessing()).apply(self.x)


def from_arrays(
    x: Any, y: Any = None, labels: Sequence[str] | None = None, name: str = "arrays"
) -> Dataset:
    """A Dataset from numpy arrays (validated: shapes, dtypes, NaN/inf, label range)."""
    return Dataset(x, y, labels, name=name, source=name)


# --- validation --------------------------------------------------------------------------------
def _check_x(x: Any) -> np.ndarray:
    try:
        x = np.asarray(x)
    except Exception as e:  # ragged lists and the like
        raise DataError(
            f"Cannot read the images as one array ({e}). Images must all have the same size; "
            "pass image_size to resize them."
        ) from None
    if x.dtype == object:
        raise DataError(
            "Images of different sizes cannot form one array. Expected (N, H, W, C) pixels; "
            "pass image_size to resize them to one size."
        )
    if x.ndim == 3:
        if x.shape[-1] in (3, 4) and x.shape[1] > 4:
            raise DataError(
                f"Expected a batch of images (N, H, W, C). Received shape {x.shape}, which looks "
                "like one image: add a batch axis (x[None])."
            )
        x = x[..., None]  # (N, H, W) grey images
    if x.ndim != 4:
        raise DataError(
            f"Expected images with 4 dimensions (N, H, W, C) (or 3 for grey images). "
            f"Received {x.ndim} dimensions, shape {x.shape}."
        )
    if x.shape[0] == 0:
        raise DataError("The data set is empty (0 images). Check the path or the array you passed.")
    if min(x.shape[1:3]) < 1 or x.shape[3] not in (1, 3, 4):
        raise DataError(
            f"Expected images (N, H, W, C) with 1, 3 or 4 channels last. Received shape {x.shape}. "
            "If your arrays are channels-first, transpose them with x.transpose(0, 2, 3, 1)."
        )
    if x.dtype == np.uint8:
        return x
    if x.dtype == bool or not np.issubdtype(x.dtype, np.number):
        raise DataError(f"Expected numeric pixel values. Received dtype {x.dtype}.")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"Expected real pixel values. Received dtype {x.dtype}.")
    xf = x.astype(np.float32, copy=False)
    finite = np.isfinite(xf)
    if not finite.all():
        bad = int(np.size(finite) - np.count_nonzero(finite))
        first = int(np.argwhere(~finite)[0][0])
        raise DataError(
            f"The images contain {bad} NaN or inf value(s) (first in image {first}). "
            "Remove or fix those images."
        )
    lo, hi = float(xf.min()), float(xf.max())
    if lo < 0 or hi > 255:
        raise DataError(
            f"Expected pixel values in [0, 255]. Received values from {lo:.4g} to {hi:.4g}. "
            "Pass raw pixels; normalisation is done by Preprocessing(mean, std)."
        )
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.uint8)
    if hi <= 1.0:
        from edgekit.ui import info

        info(
            "warning: the images' values are all in [0, 1]; edgekit expects pixels in [0, 255] "
            "and divides by 255 itself (Preprocessing). Multiply by 255 if they are scaled."
        )
    return xf


def _check_y(y: Any, n: int) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[0] == n and y.shape[1] > 1:
        one_hot = np.all((y == 0) | (y == 1)) and np.all(y.sum(1) == 1)
        if np.issubdtype(y.dtype, np.number) and one_hot:
            y = y.argmax(axis=1)  # one-hot rows
        else:
            raise DataError(
                f"Expected labels as class indices (N,) or one-hot rows (N, K). Received shape "
                f"{y.shape} whose rows are not one-hot."
            )
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"Expected labels of shape (N,). Received shape {y.shape}.")
    if y.shape[0] != n:
        raise DataError(f"Got {n} images but {y.shape[0]} labels. Expected one label per image.")
    if not np.issubdtype(y.dtype, np.number) or y.dtype == bool:
        raise DataError(
            f"Expected integer class indices as labels. Received dtype {y.dtype}. "
            "Map class names to 0..K-1 and pass the names as labels=."
        )
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)):
            raise DataError("The labels contain NaN or inf. Expected integer class indices.")
        if not np.all(y == np.round(y)):
            raise DataError("Expected integer class indices as labels. Received fractional values.")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise DataError(
            f"Labels must be class indices >= 0. Received {int(y.min())}. "
            "Map class names to 0..K-1."
        )
    return y


def _check_labels(labels: Sequence[str] | None, y: np.ndarray | None) -> list[str]:
    if labels is None:
        if y is None:
            return []
        labels = [str(i) for i in range(int(y.max()) + 1)]
    else:
        if isinstance(labels, str):
            raise DataError(f"Expected a list of class names. Received a string: {labels!r}.")
        labels = [str(v) for v in np.asarray(labels).reshape(-1).tolist()]
        if len(set(labels)) != len(labels):
            dup = sorted({v for v in labels if labels.count(v) > 1})
            raise DataError(f"Class names must be unique. Received duplicates: {dup}.")
    if y is not None:
        if int(y.max()) >= len(labels):
            raise DataError(
                f"Label {int(y.max())} is outside the class range [0, {len(labels)}) "
                f"({len(labels)} class names). Fix the labels or pass all class names."
            )
        if len(labels) < 2:
            raise DataError(
                f"A labeled data set needs at least 2 classes. Received 1 class ({labels[0]!r}). "
                "Add examples of other classes, or pass the data without labels."
            )
    return labels


def _check_test_indices(indices: Any, n: int) -> np.ndarray | None:
    if indices is None:
        return None
    idx = np.asarray(indices)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or len(idx) == 0:
        raise DataError("Expected test_indices as a non-empty 1-D array of example indices.")
    if idx.min() < 0 or idx.max() >= n or len(np.unique(idx)) != len(idx) or len(idx) >= n:
        raise DataError(
            f"Expected distinct test_indices in [0, {n}) leaving examples to train on. Received "
            f"{len(idx)} indices from {idx.min()} to {idx.max()}."
        )
    return idx.astype(np.int64)


def _largest_remainder(n: int, fractions: list[float], total: float) -> list[int]:
    target = n * min(total, 1.0)
    exact = [n * f for f in fractions]
    counts = [int(np.floor(e + 1e-9)) for e in exact]
    left = round(target) - sum(counts)
    rema = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in rema[: max(0, left)]:
        counts[i] += 1
    return counts


def _as_hw(size: Any) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    else:
        try:
            h, w = (int(v) for v in size)
        except (TypeError, ValueError):
            raise DataError(f"Expected an image size as N or (H, W). Received: {size!r}.") from None
    if h < 1 or w < 1 or h > 4096 or w > 4096:
        raise DataError(f"Expected an image size between 1 and 4096 pixels. Received: {(h, w)}.")
    return h, w


def resize_images(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a batch of NHWC images with PIL (bilinear; antialiased when shrinking)."""
    from PIL import Image

    h, w = size
    n, _, _, c = x.shape
    out = np.empty((n, h, w, c), dtype=x.dtype)
    if x.dtype == np.uint8 and c in (1, 3, 4):
        for i in range(n):
            img = x[i, :, :, 0] if c == 1 else x[i]
            r = np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR))
            out[i] = r[..., None] if c == 1 else r
    else:
        xf = x.astype(np.float32, copy=False)
        for i in range(n):
            for ch in range(c):
                img = Image.fromarray(np.ascontiguousarray(xf[i, :, :, ch]))  # mode "F"
                out[i, :, :, ch] = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR))
        if np.issubdtype(out.dtype, np.floating):
            np.clip(out, 0, 255, out=out)
    return out
