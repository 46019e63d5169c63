"""Artifacts on disk: format detection (without TensorFlow), hashing, atomic writes, run manifest."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from edgekit.errors import ModelLoadError, UsageError

# Model formats edgekit knows. "keras3" and "tf_keras" are both `.keras` zips; "h5" is tf-keras.
ModelFormat = Literal["keras3", "tf_keras", "h5", "savedmodel", "tflite", "onnx"]
KERAS_FORMATS = ("keras3", "tf_keras", "h5", "savedmodel")
RUNTIME_FORMATS = ("tflite", "onnx")


def detect_format(path: str | os.PathLike) -> ModelFormat:
    """Identify a model file by its content, not only its name. Never imports TensorFlow.

    Returns one of "keras3", "tf_keras", "h5", "savedmodel", "tflite", "onnx".
    """
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(
            f"Model path does not exist: {p}. Check the path (and the working directory)."
        )
    if p.is_dir():
        if (p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file():
            return "savedmodel"
        raise ModelLoadError(
            f"{p} is a folder but not a SavedModel (no saved_model.pb inside). "
            "Pass a .keras, .h5, .tflite or .onnx file, or a SavedModel folder."
        )
    if p.stat().st_size == 0:
        raise ModelLoadError(f"{p} is empty (0 bytes). Re-export or re-download the model.")
    with open(p, "rb") as f:
        head = f.read(16)
    if head[4:8] == b"TFL3":
        return "tflite"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "h5"
    if head.startswith(b"PK"):
        return _keras_zip_flavour(p)
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".tflite":
        raise ModelLoadError(
            f"{p} is not a TFLite flatbuffer (no 'TFL3' identifier). The file is damaged or is not a .tflite model."
        )
    if suffix in (".keras", ".h5", ".hdf5"):
        raise ModelLoadError(
            f"{p} is not a valid {suffix} file (wrong header). The file is damaged or truncated."
        )
    raise ModelLoadError(
        f"Cannot tell what kind of model {p} is. Expected a .keras, .h5, .tflite or .onnx file or a SavedModel folder."
    )


def _keras_zip_flavour(p: Path) -> str:
    try:
        with zipfile.ZipFile(p) as z:
            names = set(z.namelist())
            if "config.json" not in names:
                raise ModelLoadError(
                    f"{p} is a zip file but not a .keras model (no config.json inside)."
                )
            meta = json.loads(z.read("metadata.json")) if "metadata.json" in names else {}
    except zipfile.BadZipFile as e:
        raise ModelLoadError(
            f"{p} is a damaged or truncated .keras file ({e}). Save or copy the model again."
        ) from None
    version = str(meta.get("keras_version", ""))
    return "keras3" if version.startswith("3") else "tf_keras"


def sha256_path(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder's files (names and contents, in sorted order)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for q in files:
        if p.is_dir():
            h.update(str(q.relative_to(p)).encode())
        with open(q, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size_bytes(path: str | os.PathLike) -> int:
    p = Path(path)
    if p.is_dir():
        return sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
    return p.stat().st_size


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; move it into place only if the block succeeds.

    Works for files and folders (SavedModels). The temporary name keeps the destination's suffix
    because some writers (Keras, ONNX) check it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sfx = dest.suffix if suffix is None else suffix
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    tmp = tmpdir / f"part{sfx}"
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"Writer produced nothing at {tmp}")
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def write_bytes_atomic(dest: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text_atomic(dest: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(dest, text.encode())


def write_json_atomic(dest: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(
        dest, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    )


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and check we can write there; UsageError otherwise."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"Output path {p} exists and is not a folder. Choose another --out.")
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UsageError(
            f"Cannot write to output folder {p} ({e.strerror}). Choose a writable --out."
        ) from None
    return p


@dataclass
class ModelArtifact:
    """A model file produced or consumed by a stage."""

    path: str
    format: ModelFormat
    precision: str = "float32"  # float32 | float16 | dynamic | int8 | int16x8 | uint8 ...
    sha256: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_path(
        cls, path: str | os.PathLike, precision: str = "float32", **metadata: Any
    ) -> ModelArtifact:
        fmt = detect_format(path)
        return cls(
            path=str(path),
            format=fmt,
            precision=precision,
            sha256=sha256_path(path),
            metadata=metadata,
        )

    @classmethod
    def open(cls, path: str | os.PathLike | ModelArtifact) -> ModelArtifact:
        """A model path opened once, for everything that runs or measures it: its format now (a
        missing or unreadable model fails here, in one line); `digest()` and `tflite` when first
        asked for. An artifact is returned as it is."""
        if isinstance(path, ModelArtifact):
            return path
        return cls(path=str(path), format=detect_format(path))

    @property
    def name(self) -> str:
        return Path(self.path).name

    def __fspath__(self) -> str:
        return self.path

    def digest(self) -> str:
        """sha256 of the file (or SavedModel folder), computed on first use."""
        if not self.sha256:
            self.sha256 = sha256_path(self.path)
        return self.sha256

    @cached_property
    def tflite(self) -> Any:
        """The parsed flatbuffer (edgekit.tflite.reader.TFLiteModel) of a .tflite artifact, read
        once: its inputs, outputs, ops and graph."""
        from edgekit.tflite.reader import TFLiteModel

        if self.format != "tflite":
            raise UsageError(f"{self.name} is a {self.format} model, not a .tflite file.")
        return TFLiteModel.read(self.path)

    @property
    def family(self) -> str:
        """ "keras" for every Keras/SavedModel flavour, else "tflite" or "onnx" (the report's `format`)."""
        return "keras" if self.format in KERAS_FORMATS else self.format

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelArtifact:
        return cls(**d)
