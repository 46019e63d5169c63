"""Image folders and TFRecord files read one batch at a time: data sets larger than memory.

A scan lists the examples without decoding any image: file names (or TFRecord record offsets),
sizes, content hashes and labels, plus one image header for the size and colour mode. The
fingerprint, the stratified splits and the data plan come from that list alone. `StreamedImages`
then stands where a Dataset's pixel array would: `len`, `.shape`, `.dtype` and slicing
(`x[i:j]`, `x[indices]`) decode just those images with PIL, so every consumer that reads a data
set in batches (eval, bench, check, the teacher's cache, calibration) streams. The training
pipelines wrap the same decoder in tf.data (edgekit.stages.training.make_dataset).

numpy, hashlib and PIL only: no TensorFlow here (TFRecords are read with a small reader of the
record framing and of the tf.train.Example wire format).
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgekit.errors import DataError
from edgekit.ui import info, progress

OnCorrupt = Literal["stop", "skip"]
StreamMode = Literal["auto", "on", "off"]
ON_CORRUPT = ("stop", "skip")
STREAM_MODES = ("auto", "on", "off")

# `stream="auto"` keeps a data set in memory when its decoded pixels (uint8) and one float32 copy
# of them fit in this many bytes; above it the data set streams.
CACHE_LIMIT_BYTES = 2 * 1024**3

_GREY_MODES = ("1", "L", "I", "I;16", "F")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def image_files(folder: Path) -> list[Path]:
    """The image files of `folder` (by suffix, hidden files left out), sorted by name."""
    return sorted(
        q
        for q in folder.iterdir()
        if q.is_file() and not q.name.startswith(".") and q.suffix.lower() in IMAGE_SUFFIXES
    )


# --- the scanned list ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ImageSource:
    """The examples of one image folder or TFRecord file, known without decoding an image.

    `paths[i]` is the file of example i; for TFRecords `offsets[i]`/`lengths[i]` locate its record
    (the Example bytes) in that file, for folders they are 0 / the file size. `digests[i]` is the
    sha256 of those bytes, `labels` the class ids (None: unlabeled).
    """

    root: str
    kind: Literal["folder", "tfrecord"]
    paths: np.ndarray  # str, one per example
    offsets: np.ndarray  # int64
    lengths: np.ndarray  # int64
    digests: np.ndarray  # str (sha256 hex)
    labels: np.ndarray | None
    class_names: list[str]
    image_hw: tuple[int, int]  # the first image's size (the size all are resized to, if given)
    channels: int  # 1 (grey) or 3 (RGB)
    mixed_sizes: tuple = ()  # two (name, (H, W)) of different sizes, when sizes differ
    image_key: str = "image"
    skipped_at_scan: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.paths)

    def name_of(self, i: int) -> str:
        if self.kind == "tfrecord":
            return f"record at byte {int(self.offsets[i])} of {self.paths[i]}"
        return str(self.paths[i])

    def read_bytes(self, i: int) -> bytes:
        """The encoded image of example i (PNG/JPEG ... bytes)."""
        path, off, n = str(self.paths[i]), int(self.offsets[i]), int(self.lengths[i])
        with open(path, "rb") as f:
            f.seek(off)
            data = f.read(n)
        if len(data) != n or (
            self.digests[i] and hashlib.sha256(data).hexdigest() != self.digests[i]
        ):
            raise _Corrupt(f"{self.name_of(i)} (changed since the data were scanned)")
        if self.kind == "folder":
            return data
        feats = parse_example(data)
        value = feats.get(self.image_key)
        if not isinstance(value, list) or not value or not isinstance(value[0], bytes):
            raise _Corrupt(f"{self.name_of(i)} has no bytes feature {self.image_key!r}")
        return value[0]


class _Corrupt(Exception):
    """An example that cannot be read or decoded (its name is the message)."""


def scan_folder(
    root: str | os.PathLike, *, on_corrupt: OnCorrupt = "stop", hash_contents: bool = True
) -> ImageSource:
    """List an image folder (one sub-folder per class, or images alone: unlabeled), reading every
    file once for its size and sha256 and its header for the image size; no pixel is decoded."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    class_dirs = sorted(q for q in root.iterdir() if q.is_dir() and not q.name.startswith("."))
    class_files = [(d.name, image_files(d)) for d in class_dirs]
    class_files = [(c, f) for c, f in class_files if f]
    loose = image_files(root)
    if not class_files and not loose:
        raise DataError(
            f"Image folder {root} is empty: no images ({', '.join(IMAGE_SUFFIXES[:4])} ...) in it "
            "or in its sub-folders. Expected one sub-folder of images per class."
        )
    if class_files and len(class_files) < 2:
        raise DataError(
            f"Image folder {root} has only one class ({class_files[0][0]!r}). A labeled data set "
            "needs at least 2 class sub-folders; put images of each class in their own sub-folder."
        )
    if class_files:
        names = [c for c, _ in class_files]
        files = [(f, i) for i, (_, fs) in enumerate(class_files) for f in fs]
    else:
        names, files = [], [(f, -1) for f in loose]
    paths, sizes, digests, labels, skipped = [], [], [], [], []
    hw: tuple[int, int] | None = None
    grey, mixed, first = True, (), ""
    show = progress(files, description=f"scanning {root.name}") if len(files) > 2000 else files
    for f, label in show:
        data = f.read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as im:
                grey &= im.mode in _GREY_MODES
                size = (im.height, im.width)
        except (UnidentifiedImageError, OSError) as e:
            if on_corrupt == "stop":
                raise DataError(
                    f"Cannot read image {f} ({e}). Remove or re-save that file, or pass "
                    "--set data.on_corrupt=skip to leave such files out."
                ) from None
            skipped.append(str(f))
            continue
        if hw is None:
            hw, first = size, f.name
        elif size != hw and not mixed:
            mixed = ((first, hw), (f.name, size))
        paths.append(str(f))
        sizes.append(len(data))
        digests.append(hashlib.sha256(data).hexdigest() if hash_contents else "")
        labels.append(label)
    if not paths:
        raise DataError(f"No readable image in {root} ({len(skipped)} unreadable).")
    if skipped:
        info(f"data: skipped {len(skipped)} unreadable image(s) in {root}, first {skipped[0]}")
    return ImageSource(
        root=str(root),
        kind="folder",
        paths=np.asarray(paths),
        offsets=np.zeros(len(paths), np.int64),
        lengths=np.asarray(sizes, np.int64),
        digests=np.asarray(digests),
        labels=np.asarray(labels, np.int64) if names else None,
        class_names=names,
        image_hw=hw or (1, 1),
        channels=1 if grey else 3,
        mixed_sizes=mixed,
        skipped_at_scan=tuple(skipped),
    )


def scan_tfrecord(
    path: str | os.PathLike,
    *,
    image_key: str = "image",
    label_key: str = "label",
    labels: Sequence[str] | None = None,
) -> ImageSource:
    """List a TFRecord file of tf.train.Example: each record's offset, length, sha256 and label;
    the first record's image header gives the size. A record without the named image feature
    stops the scan with one line naming the features it has."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    offsets, lengths, digests, ys = [], [], [], []
    hw, grey, mixed = None, True, ()
    for i, (off, rec) in enumerate(_records(p)):
        feats = parse_example(rec)
        img = feats.get(image_key)
        if not isinstance(img, list) or not img or not isinstance(img[0], bytes):
            raise DataError(
                f"Record {i} of {p} has no bytes feature {image_key!r} (features: "
                f"{sorted(feats)}). Pass the right key: '{p}:image_key=NAME'."
            )
        lab = feats.get(label_key)
        if isinstance(lab, list) and lab and isinstance(lab[0], int):
            ys.append(int(lab[0]))
        try:
            with Image.open(io.BytesIO(img[0])) as im:
                grey &= im.mode in _GREY_MODES
                size = (im.height, im.width)
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(
                f"Record {i} of {p}: cannot decode {image_key!r} as an image ({e})."
            ) from None
        if hw is None:
            hw = size
        elif size != hw and not mixed:
            mixed = (("record 0", hw), (f"record {i}", size))
        offsets.append(off)
        lengths.append(len(rec))
        digests.append(hashlib.sha256(rec).hexdigest())
    if not offsets:
        raise DataError(f"TFRecord file {p} holds no records. Expected tf.train.Example records.")
    if ys and len(ys) != len(offsets):
        raise DataError(
            f"{len(offsets) - len(ys)} of {len(offsets)} records in {p} have no int64 feature "
            f"{label_key!r}. Label every record, or none (or pass label_key=NAME)."
        )
    y = np.asarray(ys, np.int64) if ys else None
    names = list(labels) if labels else ([str(i) for i in range(int(y.max()) + 1)] if ys else [])
    return ImageSource(
        root=str(p),
        kind="tfrecord",
        paths=np.full(len(offsets), str(p)),
        offsets=np.asarray(offsets, np.int64),
        lengths=np.asarray(lengths, np.int64),
        digests=np.asarray(digests),
        labels=y,
        class_names=names,
        image_hw=hw or (1, 1),
        channels=1 if grey else 3,
        mixed_sizes=mixed,
        image_key=image_key,
    )


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    c ^= 0xFFFFFFFF
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _records(path: Path):
    """(offset of the data, data bytes) of every record of a TFRecord file (framing: uint64
    length, uint32 masked crc32c of it, data, uint32 masked crc32c of the data). The length's
    crc is checked (a file that is not a TFRecord fails there); the data's is not (pure Python
    would be slow), the content hashes stand for it."""
    with open(path, "rb") as f:
        pos = 0
        while True:
            head = f.read(12)
            if not head:
                return
            if len(head) < 12:
                raise DataError(f"{path} ends in the middle of a record: not a TFRecord file?")
            (n,) = struct.unpack("<Q", head[:8])
            if struct.unpack("<I", head[8:])[0] != _masked_crc32c(head[:8]):
                raise DataError(
                    f"Cannot read {path} as a TFRecord file (the record at byte {pos} has a bad "
                    "length checksum). Expected tf.train.Example records."
                )
            data = f.read(n)
            if len(data) != n or len(f.read(4)) != 4:
                raise DataError(
                    f"Cannot read {path} as a TFRecord file (a record at byte {pos} is cut "
                    "short). Expected tf.train.Example records."
                )
            yield pos + 12, data
            pos += 16 + n


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise _Corrupt("truncated protocol buffer")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of a protocol buffer message (value: int or bytes)."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            v, i = buf[i : i + n], i + n
        elif wt == 5:
            v, i = buf[i : i + 4], i + 4
        elif wt == 1:
            v, i = buf[i : i + 8], i + 8
        else:
            raise _Corrupt(f"unsupported protocol buffer wire type {wt}")
        yield num, wt, v


def parse_example(buf: bytes) -> dict[str, list[Any]]:
    """A serialized tf.train.Example as {feature name: list of bytes | float | int}."""
    out: dict[str, list[Any]] = {}
    try:
        for num, _, features in _fields(buf):
            if num != 1:
                continue
            for fnum, _, entry in _fields(features):
                if fnum != 1:
                    continue
                name, value = "", []
                for enum, _, ev in _fields(entry):
                    if enum == 1:
                        name = bytes(ev).decode("utf-8", "replace")
                    elif enum == 2:
                        value = _feature_values(ev)
                out[name] = value
    except (_Corrupt, IndexError, TypeError) as e:
        raise DataError(f"Cannot parse a TFRecord record as a tf.train.Example ({e}).") from None
    return out


def _feature_values(buf: bytes) -> list[Any]:
    values: list[Any] = []
    for kind, _, lst in _fields(buf):  # 1 bytes_list, 2 float_list, 3 int64_list
        for num, wt, v in _fields(lst):
            if num != 1:
                continue
            if kind == 1:
                values.append(bytes(v))
            elif kind == 2:
                # packed (wire type 2) or one fixed32 (5): little-endian float32s either way
                values.extend(float(a) for a in struct.unpack(f"<{len(v) // 4}f", v))
            elif kind == 3:
                if wt == 0:
                    values.append(_signed(v))
                else:
                    j = 0
                    while j < len(v):
                        a, j = _varint(v, j)
                        values.append(_signed(a))
    return values


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


# --- the lazy pixel array -----------------------------------------------------------------------
@dataclass
class _Skips:
    """Examples left out of a stream because they could not be decoded (shared by views)."""

    names: list[str] = field(default_factory=list)
    failure: str | None = None  # the DataError a decode stopped on (tf.data hides it otherwise)

    def add(self, name: str) -> None:
        if name not in self.names:
            self.names.append(name)
            info(f"warning: skipped corrupt image {name} (data.on_corrupt=skip)")


class DecodeCache:
    """Decoded pixels (uint8, at the stream's size) kept in one file after their first decode, so
    that the epochs after the first read them back instead of decoding the image files again.

    One file of `len(source) * H * W * C` bytes, written and read with positional I/O (pread /
    pwrite: safe from tf.data's parallel calls, and the pages stay in the OS page cache instead
    of this process's memory, so a set larger than memory still streams). Only the images
    decoded in this process are read back (an in-memory mask of the filled rows); the file is a
    scratch file, removed by `close` and, if a run is killed, swept by the next one.
    """

    def __init__(self, path: str | os.PathLike, count: int, hw: tuple[int, int], channels: int):
        self.path = Path(path)
        self.shape = (int(count), *map(int, hw), int(channels))
        self.row_bytes = int(np.prod(self.shape[1:]))
        self.filled = np.zeros(count, bool)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.hits = 0

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    def get(self, i: int) -> np.ndarray | None:
        """Row `i` as (H, W, C) uint8, or None when it was not decoded yet."""
        if self._fd is None or not self.filled[i]:
            return None
        buf = os.pread(self._fd, self.row_bytes, i * self.row_bytes)
        if len(buf) != self.row_bytes:  # pragma: no cover - a file truncated under us
            return None
        self.hits += 1
        return np.frombuffer(buf, np.uint8).reshape(self.shape[1:])

    def read_into(self, i: int, out: np.ndarray) -> bool:
        """Row `i` read straight into `out` (a C-contiguous (H, W, C) uint8 array, one copy
        fewer than `get`); False when it was not decoded yet."""
        if self._fd is None or not self.filled[i]:
            return False
        if os.preadv(self._fd, [memoryview(out).cast("B")], i * self.row_bytes) != self.row_bytes:
            return False  # pragma: no cover - a file truncated under us
        self.hits += 1
        return True

    def put(self, i: int, pixels: np.ndarray) -> None:
        """Keep row `i`; a write that fails (a full disk) turns the cache off, the run goes on."""
        if self._fd is None:
            return
        try:
            os.pwrite(
                self._fd, np.ascontiguousarray(pixels, np.uint8).tobytes(), i * self.row_bytes
            )
        except OSError as e:
            info(f"warning: decode cache off ({e.strerror or e}); images are decoded every epoch")
            self.close()
            return
        self.filled[i] = True

    def close(self) -> None:
        """Close and remove the file (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.unlink(missing_ok=True)


@dataclass
class _CacheSlot:
    """The decode cache of a stream, shared by its subsets and views (not by a resized copy)."""

    cache: DecodeCache | None = None


@dataclass(frozen=True, eq=False)
class StreamedImages:
    """The pixels of some examples of an `ImageSource`, decoded when sliced.

    Behaves like the (N, H, W, C) array a Dataset holds: `len`, `.shape`, `.dtype`, `x[i]`,
    `x[i:j]` and `x[indices]` (numpy arrays, decoded with PIL). With `preprocessing` set the
    slices are preprocessed float32; with `view` (mirror, quarter turns) each image is that view.
    `take(indices)` is the lazy subset (nothing decoded).
    """

    source: ImageSource
    index: np.ndarray  # int64 positions in source
    hw: tuple[int, int]
    channels: int
    on_corrupt: OnCorrupt = "stop"
    preprocessing: Any = None  # edgekit.data.Preprocessing
    view: tuple[bool, int] | None = None
    skips: _Skips = field(default_factory=_Skips)
    decoded: _CacheSlot = field(default_factory=_CacheSlot)

    streamed = True

    # array-like description
    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        h, w = self.hw
        if self.view is not None and self.view[1] % 2:
            h, w = w, h
        return (len(self.index), h, w, self.channels)

    @property
    def ndim(self) -> int:
        return 4

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32 if self.preprocessing is not None else np.uint8)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __repr__(self) -> str:
        return f"StreamedImages({self.source.root!r}, shape={self.shape}, dtype={self.dtype})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self[:]
        return a if dtype is None else a.astype(dtype)

    # derived views (nothing decoded)
    def take(self, indices: Any) -> StreamedImages:
        idx = indices if isinstance(indices, slice) else np.asarray(indices)
        return replace(self, index=np.asarray(self.index[idx], np.int64))

    def with_preprocessing(self, preprocessing: Any) -> StreamedImages:
        return replace(self, preprocessing=preprocessing)

    def with_view(self, view: tuple[bool, int] | None) -> StreamedImages:
        return replace(self, view=None if view == (False, 0) else view)

    def resized(self, hw: tuple[int, int]) -> StreamedImages:
        return replace(self, hw=tuple(hw), decoded=_CacheSlot())

    def use_decode_cache(self, cache: DecodeCache | None) -> None:
        """Keep decoded pixels in `cache` (None: stop), for this stream and every subset and
        view taken of it, before or after."""
        want = (len(self.source), *self.hw, self.channels)
        if cache is not None and cache.shape != want:
            raise ValueError(f"decode cache of shape {cache.shape} for a stream of {want}")
        self.decoded.cache = cache

    # decoding
    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self.decode(np.asarray([self.index[key]]))[0][0]
        if isinstance(key, tuple):
            raise TypeError("StreamedImages supports x[i], x[i:j] and x[indices] only")
        return self.decode(self.index[key])[0]

    def decode_positions(self, positions: Any) -> tuple[np.ndarray, np.ndarray]:
        """Images at `positions` (of this view) and a mask of those decoded (False: skipped)."""
        return self.decode(self.index[np.asarray(positions, np.int64)])

    def decode(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(images, ok mask) for source items `items`. A corrupt image stops with DataError naming
        it, or (on_corrupt=skip) is zeros with ok=False, and is counted."""
        c = self.channels
        raw = np.zeros((len(items), *self.hw, c), np.uint8)
        ok = np.ones(len(items), bool)
        cache = self.decoded.cache
        for j, i in enumerate(np.asarray(items, np.int64).tolist()):
            if cache is not None and cache.read_into(i, raw[j]):
                continue
            try:
                raw[j] = self._decode_one(i)
                if cache is not None:
                    cache.put(i, raw[j])
            except _Corrupt as e:
                if self.on_corrupt == "stop":
                    self.skips.failure = (
                        f"Cannot decode image {e}. Remove or re-save that file, or pass "
                        "--set data.on_corrupt=skip to leave it out."
                    )
                    raise DataError(self.skips.failure) from None
                self.skips.add(str(e).split(" (")[0])
                ok[j] = False
        x: np.ndarray = raw
        if self.view is not None:
            mirror, turns = self.view
            if mirror:
                x = x[:, :, ::-1]
            x = np.ascontiguousarray(np.rot90(x, turns, axes=(1, 2)))
        if self.preprocessing is not None:
            x = self.preprocessing.apply(x)
        return x, ok

    def _decode_one(self, i: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        name = self.source.name_of(i)
        try:
            data = self.source.read_bytes(i)
        except FileNotFoundError:
            raise _Corrupt(f"{name} (the file is gone)") from None
        except DataError as e:
            raise _Corrupt(f"{name} ({e})") from None
        try:
            with Image.open(io.BytesIO(data)) as im:
                im = im.convert("L" if self.channels == 1 else "RGB")
                if (im.height, im.width) != self.hw:
                    im = im.resize((self.hw[1], self.hw[0]), Image.Resampling.BILINEAR)
                a = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise _Corrupt(f"{name} ({e})") from None
        return a[..., None] if a.ndim == 2 else a

    @property
    def skipped(self) -> list[str]:
        return list(self.skips.names)

    # identity
    def fingerprint_bytes(self) -> bytes:
        """What the fingerprint hashes: per example its name (relative to the root), byte size
        and content sha256, in order; plus the decoded size and channels."""
        s = self.source
        root = s.root if s.kind == "folder" else str(Path(s.root).parent)
        h = hashlib.sha256(f"files:{s.kind}:{self.hw}:{self.channels}".encode())
        for i in self.index.tolist():
            name = os.path.relpath(str(s.paths[i]), root)
            h.update(f"{name}\0{int(s.offsets[i])}\0{int(s.lengths[i])}\0{s.digests[i]}\n".encode())
        return h.digest()


def concat(a: Any, b: Any) -> Any:
    """Two pixel arrays one after the other: numpy arrays stay numpy; two streams of the same
    source stay a stream; otherwise the streamed side is decoded (said in the log)."""
    sa, sb = isinstance(a, StreamedImages), isinstance(b, StreamedImages)
    if not sa and not sb:
        return np.concatenate([a, b])
    same = ("source", "hw", "channels", "on_corrupt", "preprocessing", "view")
    if (
        sa
        and sb
        and all(getattr(a, k) is getattr(b, k) or getattr(a, k) == getattr(b, k) for k in same)
    ):
        return replace(a, index=np.concatenate([a.index, b.index]))
    info(f"data: joining a streamed set with other images decodes {len(a) + len(b)} images")
    return np.concatenate([np.asarray(a), np.asarray(b)])


DECODE_CACHE_MODES = ("auto", "on", "off")


def attach_decode_caches(
    folder: str | os.PathLike, arrays: Sequence[Any], mode: str = "auto"
) -> list[DecodeCache]:
    """Give every streamed array among `arrays` (split images, the pool) a DecodeCache in
    `folder`, one per stream, so training epochs after the first read decoded pixels back
    instead of decoding the files again. `mode`: "on", "off", or "auto" (on when the disk keeps
    10% and 1 GB free beside the caches; otherwise off, said in the log). Returns the caches:
    close them when the run ends."""
    if mode not in DECODE_CACHE_MODES:
        raise DataError(
            f"Expected data.decode_cache in {', '.join(DECODE_CACHE_MODES)}. Received: {mode!r}."
        )
    slots: dict[int, StreamedImages] = {}
    for a in arrays:
        if isinstance(a, StreamedImages):
            slots.setdefault(id(a.decoded), a)
    streams = [a for a in slots.values() if a.decoded.cache is None]
    if mode == "off" or not streams:
        return []
    from edgekit.artifacts import TMP_SUFFIX

    folder = Path(folder)
    total = sum(len(a.source) * int(np.prod(a.hw)) * a.channels for a in streams)
    if mode == "on":
        require_free_space(folder, total, "the decoded-pixel cache (data.decode_cache=on)")
    else:
        free = free_bytes(folder)
        if free < total * 1.1 + 1e9:
            info(
                f"data: decode cache off: it needs {human_bytes(total)} and {folder} has "
                f"{human_bytes(free)} free; every epoch decodes the images"
            )
            return []
    caches = []
    for k, a in enumerate(streams):
        cache = DecodeCache(folder / f".decoded-{k}{TMP_SUFFIX}", len(a.source), a.hw, a.channels)
        a.use_decode_cache(cache)
        caches.append(cache)
    info(
        f"data: decoded pixels kept in {folder} after their first decode ({human_bytes(total)}, "
        "removed at the end; data.decode_cache=off decodes every epoch)"
    )
    return caches


# --- the plan -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataPlan:
    """Streamed or cached, and why: said in the log and in `edgekit compress`'s first lines."""

    count: int
    classes: int
    image_shape: tuple[int, int, int]
    streamed: bool
    memory_bytes: int  # what caching the pixels (uint8) and one float32 copy would take
    reason: str

    def line(self) -> str:
        h, w, c = self.image_shape
        mode = "streamed" if self.streamed else "cached in memory"
        cls = f"{self.classes} classes" if self.classes else "unlabeled"
        return f"{self.count:,} files, {cls}, {h}x{w}x{c}; {mode} ({self.reason})"


def choose(count: int, image_shape: tuple[int, int, int], classes: int, stream: str) -> DataPlan:
    """Stream or cache a data set of `count` images: `stream` "on", "off" or "auto" (cache when
    the pixels and one float32 copy fit in CACHE_LIMIT_BYTES)."""
    if stream not in STREAM_MODES:
        raise DataError(f"Expected data.stream in {', '.join(STREAM_MODES)}. Received: {stream!r}.")
    need = int(count) * int(np.prod(image_shape)) * 5
    limit = CACHE_LIMIT_BYTES
    if stream == "on":
        streamed, why = True, "data.stream=on"
    elif stream == "off":
        streamed, why = False, f"data.stream=off; {human_bytes(need)} in memory"
    elif need > limit:
        streamed = True
        why = (
            f"in memory it would take {human_bytes(need)}, over {human_bytes(limit)}; "
            "data.stream=off caches it"
        )
    else:
        streamed = False
        why = f"{human_bytes(need)} fits in {human_bytes(limit)}; data.stream=on streams it"
    return DataPlan(count, classes, tuple(image_shape), streamed, need, why)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def free_bytes(folder: str | os.PathLike) -> int:
    """Free bytes on the disk that holds `folder` (or would hold it: its nearest existing
    parent)."""
    import shutil

    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def require_free_space(folder: str | os.PathLike, need: int, what: str) -> None:
    """DiskFull (one line, before anything is written) when `folder`'s disk has less than
    `need` bytes free."""

    from edgekit.errors import DiskFull

    folder = Path(folder)
    free = free_bytes(folder)
    if free < need:
        raise DiskFull(
            f"No space left in {folder} for {what}: {human_bytes(free)} free, "
            f"{human_bytes(need)} needed. Free some space there (or pass another --out), then "
            "rerun the same command; nothing was written for it."
        )
