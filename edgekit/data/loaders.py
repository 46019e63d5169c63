"""Turn a data spec (a built-in name with options, or a path) into a Dataset.

Spec grammar: `NAME`, `NAME:SIZE`, `NAME:k=v,k=v`, or a path to an image folder, a .npz or a
.tfrecord file (a path may carry options the same way: `data.tfrecord:image_key=img`).
A built-in name wins over a file of the same name in the working directory; write `./shapes`
for the file. PIL, scikit-learn and TensorFlow are imported inside the loaders that need them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data import shapes as _shapes
from edgekit.data.dataset import Dataset, _as_hw, _check_labels, resize_images
from edgekit.errors import DataError

TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec")

# Built-in data sets: name -> (options with their defaults, loader, one-line description).
_BUILTIN_OPTIONS: dict[str, dict[str, int]] = {
    "shapes": {
        "size": _shapes.DEFAULT_SIZE,
        "n": _shapes.DEFAULT_N,
        "seed": 0,
        "classes": _shapes.DEFAULT_CLASSES,
    },
    "digits": {"size": 32, "channels": 3},
    "fashion-mnist": {"size": 28, "channels": 1, "part": 0},
}
_IDX_PARTS = ("all", "train", "test")
BUILTIN_DATASETS: dict[str, str] = {
    "shapes": (
        f"procedural shapes, {_shapes.DEFAULT_CLASSES} classes "
        f"(up to {len(_shapes.SHAPE_CLASSES)}), "
        f"{_shapes.DEFAULT_N} RGB images {_shapes.DEFAULT_SIZE}x{_shapes.DEFAULT_SIZE}, "
        "options size, n, seed, classes"
    ),
    "digits": (
        "UCI handwritten digits from scikit-learn, 1797 images, 10 classes, options size, channels"
    ),
    "fashion-mnist": (
        "Zalando's Fashion-MNIST (Debian package dataset-fashion-mnist): 70,000 grey 28x28 product "
        "photos, 10 classes, its 10,000 test images held out as eval; options size, channels, "
        "part (all, train, test)"
    ),
}
_PATH_OPTIONS: dict[str, dict[str, str]] = {
    "tfrecord": {
        "image_key": "image",
        "label_key": "label",
        "stream": "auto",
        "on_corrupt": "stop",
    },
    "folder": {"stream": "auto", "on_corrupt": "stop"},
    "npz": {},
}


def load_dataset(
    spec: str | os.PathLike,
    *,
    image_size: int | tuple[int, int] | None = None,
    seed: int = 0,
    stream: str = "auto",
    on_corrupt: str = "stop",
) -> Dataset:
    """Load a data set from a spec: "shapes", "shapes:64", "digits:size=48", or a path.

    Args:
        spec: a built-in name with options, or a path (image folder, .npz, .tfrecord).
        image_size: resize every image to this (H, W) (or N for N x N); built-in sets are drawn
            at this size directly. Needed for folders whose images differ in size.
        seed: the generation seed of procedural sets when the spec does not give one.
        stream: image folders and TFRecords: "auto" keeps them in memory when they fit
            (`edgekit.data.stream.CACHE_LIMIT_BYTES`) and streams them otherwise; "on" always
            streams, "off" always decodes everything. The choice is said in the log.
        on_corrupt: an image that cannot be decoded: "stop" (DataError naming it) or "skip"
            (left out, counted in the log).
    """
    from edgekit.data.stream import ON_CORRUPT, STREAM_MODES

    if stream not in STREAM_MODES:
        raise DataError(f"Expected stream in {', '.join(STREAM_MODES)}. Received: {stream!r}.")
    if on_corrupt not in ON_CORRUPT:
        raise DataError(
            f"Expected on_corrupt in {', '.join(ON_CORRUPT)}. Received: {on_corrupt!r}."
        )
    hw = None if image_size is None else _as_hw(image_size)
    text = os.fspath(spec).strip()
    if not text:
        raise DataError(f"Empty data spec. Use a built-in name ({_known()}) or a path.")
    name, _, opts_text = text.partition(":")
    if name in BUILTIN_DATASETS and not Path(text).exists():
        return _load_builtin(name, opts_text, text, hw, seed)
    path, opts = _split_path_options(text)
    # `folder:stream=on` and `data.tfrecord:on_corrupt=skip` win over the arguments: a spec
    # carries them to every command that takes one (eval, check, bench, compress --data).
    stream, on_corrupt = opts.pop("stream", stream), opts.pop("on_corrupt", on_corrupt)
    if stream not in STREAM_MODES or on_corrupt not in ON_CORRUPT:
        raise DataError(
            f"Expected stream in {', '.join(STREAM_MODES)} and on_corrupt in "
            f"{', '.join(ON_CORRUPT)}. Received: {text}."
        )
    ds = _load_path(path, opts, hw, stream, on_corrupt)
    if hw is not None and ds.image_shape[:2] != hw:
        ds = ds.resized(hw)
    return ds


def _known() -> str:
    return ", ".join(BUILTIN_DATASETS)


def _parse_options(text: str, allowed: dict[str, Any], what: str) -> dict[str, str]:
    opts: dict[str, str] = {}
    if not text:
        return opts
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq:
            # "shapes:64" is short for "shapes:size=64".
            if "size" in allowed and not opts and part.isdigit():
                opts["size"] = part
                continue
            raise DataError(
                f"Cannot read option {part!r} of {what}. Expected k=v pairs separated by commas "
                f"(known options: {', '.join(allowed) or 'none'})."
            )
        if key not in allowed:
            raise DataError(
                f"Unknown option {key!r} for {what}. Known options: {', '.join(allowed) or 'none'}."
            )
        opts[key] = value.strip()
    return opts


def _int_option(opts: dict[str, str], key: str, default: int, lo: int, hi: int, what: str) -> int:
    if key not in opts:
        return default
    try:
        v = int(opts[key])
    except ValueError:
        raise DataError(
            f"Expected an integer for {key} in {what}. Received: {opts[key]!r}."
        ) from None
    if not lo <= v <= hi:
        raise DataError(f"Expected {key} in [{lo}, {hi}] for {what}. Received: {key}={v}.")
    return v


def _load_builtin(
    name: str, opts_text: str, spec: str, hw: tuple[int, int] | None, seed: int
) -> Dataset:
    allowed = _BUILTIN_OPTIONS[name]
    opts = _parse_options(opts_text, allowed, f"data set {name!r}")
    what = f"data set {name!r}"
    # Draw at the size the model needs when the spec does not fix one (sharper than resizing).
    default_size = hw[0] if hw is not None and hw[0] == hw[1] else allowed["size"]
    size = _int_option(opts, "size", default_size, 8, 512, what)
    if name == "shapes":
        n = _int_option(opts, "n", allowed["n"], 1, 1_000_000, what)
        s = _int_option(opts, "seed", seed, 0, 2**32 - 1, what)
        k = _int_option(opts, "classes", allowed["classes"], 2, len(_shapes.SHAPE_CLASSES), what)
        x, y, labels = _shapes.generate(n=n, size=size, seed=s, classes=k)
        ds = Dataset._trusted(x, y, labels, "shapes", spec)
    else:
        channels = _int_option(opts, "channels", allowed["channels"], 1, 3, what)
        if channels == 2:
            raise DataError(f"Expected channels 1 or 3 for {what}. Received: channels=2.")
        if name == "digits":
            ds = _load_digits(size, channels, spec)
        else:
            part = opts.get("part", "all")
            if part not in _IDX_PARTS:
                raise DataError(
                    f"Expected part in {', '.join(_IDX_PARTS)} for {what}. Received: part={part!r}."
                )
            from edgekit.data.idx import FASHION_MNIST_LABELS, fashion_mnist_dir

            ds = load_idx(fashion_mnist_dir(), part=part, labels=FASHION_MNIST_LABELS, spec=spec)
            ds = _with_channels(ds, channels)
            if size != ds.image_shape[0]:
                ds = ds.resized((size, size))
    if hw is not None and ds.image_shape[:2] != hw:
        ds = ds.resized(hw)
    return ds


def _load_digits(size: int, channels: int, spec: str) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 17 grey levels (0..16), white strokes on black, 8x8.
    grey = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    if size != 8:
        grey = resize_images(grey, (size, size))
    x = np.repeat(grey, 3, axis=-1) if channels == 3 else grey
    y = np.asarray(bunch.target, dtype=np.int64)
    return Dataset._trusted(x, y, [str(i) for i in range(10)], "digits", spec)


def _split_path_options(text: str) -> tuple[Path, dict[str, str]]:
    p = Path(text)
    if p.exists():
        return p, {}
    head, sep, tail = text.rpartition(":")
    if sep and "=" in tail and Path(head).exists():
        kind = _path_kind(Path(head))
        return Path(head), _parse_options(tail, _PATH_OPTIONS[kind], f"{kind} {head}")
    looks_like_path = any(c in text for c in "/\\") or Path(text).suffix.lower() in (
        (".npz", *TFRECORD_SUFFIXES)
    )
    if looks_like_path:
        raise DataError(
            f"Data path does not exist: {text}. Check the path (relative to {Path.cwd()})."
        )
    raise DataError(
        f"Unknown data set {text!r}: not a built-in name and no such file or folder. "
        f"Known data sets: {_known()}; or give a path to an image folder, a .npz or a "
        ".tfrecord file."
    )


def _path_kind(p: Path) -> str:
    if p.is_dir():
        return "folder"
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix in TFRECORD_SUFFIXES:
        return "tfrecord"
    raise DataError(
        f"Cannot read {p} as data: expected an image folder (one sub-folder per class), "
        "a .npz file with arrays x[, y, labels] or a .tfrecord file. "
        f"Received a file with suffix {suffix or '(none)'!r}."
    )


def _load_path(
    p: Path, opts: dict[str, str], hw: tuple[int, int] | None, stream: str, on_corrupt: str
) -> Dataset:
    kind = _path_kind(p)
    if kind == "folder":
        from edgekit.data.idx import is_idx_folder

        if is_idx_folder(p):
            return load_idx(p)
        return load_image_folder(p, image_size=hw, stream=stream, on_corrupt=on_corrupt)
    if kind == "npz":
        return load_npz(p)
    return load_tfrecord(p, image_size=hw, stream=stream, on_corrupt=on_corrupt, **opts)


# --- IDX (MNIST, Fashion-MNIST, KMNIST) --------------------------------------------------------
def load_idx(
    folder: str | os.PathLike,
    *,
    part: str = "all",
    labels: Sequence[str] | None = None,
    spec: str | None = None,
) -> Dataset:
    """A folder of MNIST-style IDX files (`train-*` and `t10k-*`, gzipped or not) as one data set:
    the training part, then the test part, which is kept whole as the `eval` split (see
    `edgekit.data.idx`). Class names come from `labels`, a `labels.txt` beside the files, or
    "0", "1", ..."""
    from edgekit.data.idx import load_idx_folder

    root = Path(folder)
    x, y, n_train = load_idx_folder(root, part)
    if labels is None and (root / "labels.txt").is_file():
        labels = [ln.strip() for ln in (root / "labels.txt").read_text().splitlines() if ln.strip()]
    if labels is None:
        labels = [str(i) for i in range(int(y.max()) + 1)]
    test = np.arange(n_train, len(x)) if part == "all" and n_train < len(x) else None
    try:
        return Dataset(x, y, labels, name=root.name or str(root), source=spec or str(root),
                       test_indices=test)  # fmt: skip
    except DataError as e:
        raise DataError(f"{root}: {e}") from None


def _with_channels(ds: Dataset, channels: int) -> Dataset:
    if ds.image_shape[2] == channels:
        return ds
    x = np.repeat(ds.x, channels, axis=-1) if ds.image_shape[2] == 1 else ds.x[..., :1]
    return Dataset._trusted(x, ds.y, ds.labels, ds.name, ds.source, ds.test_indices)


# --- .npz --------------------------------------------------------------------------------------
def load_npz(path: str | os.PathLike) -> Dataset:
    """A .npz with `x` (N, H, W[, C]) pixels in [0, 255], optional `y` (N,) and `labels` (K,)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = set(z.files)
            if "x" not in keys:
                raise DataError(
                    f"{p} has no array 'x' (found: {sorted(keys) or 'nothing'}). Expected x "
                    "(images), optional y (labels) and labels (class names): "
                    "np.savez(path, x=images, y=labels)."
                )
            x = z["x"]
            y = z["y"] if "y" in keys else None
            labels = z["labels"].tolist() if "labels" in keys else None
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise DataError(
            f"Cannot read {p} as a .npz file ({type(e).__name__}: {e}). "
            "Save it with numpy.savez (no pickled objects)."
        ) from None
    try:
        return Dataset(x, y, labels, name=p.stem, source=str(p))
    except DataError as e:
        raise DataError(f"{p}: {e}") from None


# --- image folder ------------------------------------------------------------------------------
def load_image_folder(
    path: str | os.PathLike,
    *,
    image_size: int | tuple[int, int] | None = None,
    stream: str = "auto",
    on_corrupt: str = "stop",
) -> Dataset:
    """An image folder: one sub-folder per class (sorted names are the labels).

    A folder holding only images (no class sub-folders) loads as unlabeled data, which is
    enough for calibration and distillation. The folder is scanned first (names, sizes, content
    hashes and image headers, no decoding); then it streams or is decoded into memory (`stream`,
    see `load_dataset`).
    """
    from edgekit.data.stream import scan_folder

    root = Path(path)
    hw = None if image_size is None else _as_hw(image_size)
    source = scan_folder(root, on_corrupt=on_corrupt)  # type: ignore[arg-type]
    if hw is None and source.mixed_sizes:
        (f1, s1), (f2, s2) = source.mixed_sizes
        raise DataError(
            f"Images in {root} have different sizes, e.g. {f1} is {s1[1]}x{s1[0]} and "
            f"{f2} is {s2[1]}x{s2[0]}. Pass image_size (e.g. --image-size "
            f"{s1[1]}) to resize them all."
        )
    return _from_source(source, hw, stream, on_corrupt, root.name or str(root), str(root))


def _from_source(
    source: Any, hw: tuple[int, int] | None, stream: str, on_corrupt: str, name: str, where: str
) -> Dataset:
    """A scanned source as a Dataset: streamed, or decoded into memory, as the plan says."""
    from edgekit.data.stream import StreamedImages, choose
    from edgekit.ui import info

    hw = hw or source.image_hw
    x = StreamedImages(
        source, np.arange(len(source), dtype=np.int64), tuple(hw), source.channels, on_corrupt
    )
    plan = choose(len(source), x.shape[1:], len(source.class_names), stream)
    info(f"data: {where}: {plan.line()}")
    y = source.labels
    origin = None
    if not plan.streamed:
        pixels, ok = x.decode(x.index)
        origin = x  # its fingerprint is the files', as when it streams
        if not ok.all():
            pixels, y = pixels[ok], None if y is None else y[ok]
            origin = x.take(np.flatnonzero(ok))
            info(f"data: skipped {int((~ok).sum())} corrupt image(s) of {where}")
        x = pixels
    try:
        _check_labels(source.class_names or None, y)
    except DataError as e:
        raise DataError(f"{where}: {e}") from None
    return Dataset._trusted(x, y, source.class_names, name, where, origin=origin)


# --- TFRecord and tf.data ----------------------------------------------------------------------
def load_tfrecord(
    path: str | os.PathLike,
    *,
    image_key: str = "image",
    label_key: str = "label",
    image_size: int | tuple[int, int] | None = None,
    labels: Sequence[str] | None = None,
    stream: str = "auto",
    on_corrupt: str = "stop",
) -> Dataset:
    """A TFRecord file of tf.train.Example with encoded image bytes and (optional) int64 labels.

    Read without TensorFlow: the records are listed (offsets, sizes, content hashes, labels),
    then streamed or decoded into memory (`stream`, see `load_dataset`)."""
    from edgekit.data.stream import scan_tfrecord

    p = Path(path)
    hw = None if image_size is None else _as_hw(image_size)
    source = scan_tfrecord(p, image_key=image_key, label_key=label_key, labels=labels)
    if hw is None and source.mixed_sizes:
        (f1, s1), (f2, s2) = source.mixed_sizes
        raise DataError(
            f"Images in {p} have different sizes, e.g. {f1} is {s1} and {f2} is {s2}. "
            "Pass image_size to resize them all."
        )
    return _from_source(source, hw, stream, on_corrupt, p.stem, str(p))


def from_tf_data(
    ds: Any,
    labels: Sequence[str] | None = None,
    limit: int | None = None,
    name: str = "tf.data",
    *,
    stream: str = "auto",
    spill_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Read a tf.data.Dataset (batched or not) of images, (images, labels) or {"image", "label"}.

    Reads at most `limit` examples. Images must be pixels in [0, 255]. A tf.data pipeline has no
    random access, so it is read once: into memory (`stream="off"`), or written as it is read to
    a TFRecord file of PNG images in `spill_dir` (lossless; default: a temporary folder removed
    when the process exits) and then streamed from it like any TFRecord file (`"on"`); `"auto"`
    keeps it in memory until its pixels and one float32 copy would pass the in-memory limit of
    `load_dataset`, then spills. Only whole-number pixels (uint8, or floats holding integers)
    can spill.
    """
    from edgekit.data.stream import CACHE_LIMIT_BYTES, STREAM_MODES

    if not hasattr(ds, "as_numpy_iterator"):
        raise DataError(
            f"Expected a tf.data.Dataset. Received {type(ds).__name__}. "
            "Use from_arrays for numpy arrays."
        )
    if stream not in STREAM_MODES:
        raise DataError(f"Expected stream in {', '.join(STREAM_MODES)}. Received: {stream!r}.")
    xs: list[np.ndarray] = []
    ys: list[np.ndarray | None] = []
    count = held = 0
    labelled: bool | None = None
    spill: _Spill | None = None
    unpack = _element_unpacker(ds.element_spec)
    batched = _batched(ds.element_spec)
    for elem in ds.as_numpy_iterator():
        x, y = unpack(elem)
        x = np.asarray(x)
        if not batched:
            x = x[None]
            y = None if y is None else np.asarray(y)[None]
        if limit is not None:
            x = x[: limit - count]
            y = None if y is None else np.asarray(y)[: len(x)]
        if labelled is None:
            labelled = y is not None
        elif labelled != (y is not None):
            raise DataError("Some tf.data elements have labels and some do not. Label all or none.")
        xs.append(x)
        ys.append(None if y is None else np.asarray(y))
        count += len(x)
        held += x.size * 5
        if spill is None and (stream == "on" or (stream == "auto" and held > CACHE_LIMIT_BYTES)):
            spill = _Spill(spill_dir, name)
        if spill is not None:  # what was held so far goes to the file too; then nothing is held
            spill.write(xs, ys)
            xs, ys, held = [], [], 0
        if limit is not None and count >= limit:
            break
    if count == 0:
        raise DataError("The tf.data source yielded no examples. Check the pipeline (take/filter).")
    if spill is not None:
        path = spill.close()
        from edgekit.ui import info

        info(f"data: {name}: {count:,} images written to {path} as PNG, streamed from there")
        out = load_tfrecord(path, labels=labels, stream="on")
        out.name = name
        return out
    x_all = np.concatenate(xs)
    y_all = np.concatenate(ys) if labelled else None
    return Dataset(x_all, y_all, labels, name=name, source=name)


class _Spill:
    """tf.data examples written to a TFRecord file of tf.train.Example (PNG `image`, int64
    `label`) as they are read."""

    def __init__(self, folder: str | os.PathLike | None, name: str) -> None:
        import tensorflow as tf

        if folder is None:
            import atexit
            import shutil
            import tempfile

            folder = tempfile.mkdtemp(prefix="edgekit-tfdata-")
            atexit.register(shutil.rmtree, folder, True)
        Path(folder).mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "tfdata"
        self.path = Path(folder) / f"{safe}.tfrecord"
        self._tf = tf
        self._writer = tf.io.TFRecordWriter(str(self.path))

    def write(self, xs: list[np.ndarray], ys: list[np.ndarray | None]) -> None:
        import io

        from PIL import Image

        tf = self._tf
        for k, x in enumerate(xs):
            pixels = np.asarray(x)
            if pixels.dtype != np.uint8:
                if not (
                    np.all(np.mod(pixels, 1) == 0) and pixels.min() >= 0 and pixels.max() <= 255
                ):
                    raise DataError(
                        "tf.data images with fractional or out-of-range pixel values cannot be "
                        "streamed (they are kept as PNG). Pass stream='off' to hold them in "
                        "memory, or yield uint8 pixels."
                    )
                pixels = pixels.astype(np.uint8)
            if pixels.ndim == 4 and pixels.shape[-1] == 1:
                pixels = pixels[..., 0]
            for j, img in enumerate(pixels):
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="PNG", compress_level=1)
                feats = {
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[buf.getvalue()]))
                }
                if ys[k] is not None:
                    label = (
                        int(np.asarray(ys[k][j]).reshape(-1).argmax())
                        if np.ndim(ys[k][j])
                        else int(ys[k][j])
                    )
                    feats["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))
                example = tf.train.Example(features=tf.train.Features(feature=feats))
                self._writer.write(example.SerializeToString())

    def close(self) -> Path:
        self._writer.close()
        return self.path


def _batched(spec: Any) -> bool:
    # Batched: (N, H, W, C), or (None, H, W) for grey batches; one image: (H, W[, C]).
    s = spec[0] if isinstance(spec, tuple) else spec
    if isinstance(s, dict):
        s = s["image"]
    shape = getattr(s, "shape", None)
    if shape is None or shape.rank is None:
        raise DataError("The tf.data source has images of unknown rank. Expected (H, W, C) images.")
    return shape.rank == 4 or (shape.rank == 3 and shape[0] is None)


def _element_unpacker(spec: Any) -> Callable[[Any], tuple[Any, Any]]:
    if isinstance(spec, tuple):
        if len(spec) == 1:
            return lambda e: (e[0], None)
        if len(spec) == 2:
            return lambda e: (e[0], e[1])
        raise DataError(
            f"Expected tf.data elements (image,) or (image, label). Received {len(spec)}-tuples."
        )
    if isinstance(spec, dict):
        if "image" not in spec:
            raise DataError(
                f"Expected tf.data dict elements with an 'image' key. Received keys {sorted(spec)}."
            )
        return lambda e: (e["image"], e.get("label"))
    return lambda e: (e, None)
