"""Artifacts on disk: format detection (without TensorFlow), hashing, atomic writes, run manifest."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

# disk_full_from lives in errors (ui reports a full disk too); callers import it from here too.
from edgekit.errors import ModelLoadError, RunLocked, UsageError, disk_full_from

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


# Temporary files and folders edgekit writes end with this, so that a run holding a folder's
# lock can remove what a killed (kill -9) run left behind, and nothing else.
TMP_SUFFIX = ".edgekit-tmp"


@contextlib.contextmanager
def atomic_path(
    dest: str | os.PathLike, *, suffix: str | None = None, size_hint: int | None = None
) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; move it into place only if the block succeeds.

    Works for files and folders (SavedModels). The temporary name keeps the destination's suffix
    because some writers (Keras, ONNX) check it. A full disk (ENOSPC, a quota) becomes one
    DiskFull line naming the folder and the space needed (`size_hint` when the caller knows the
    size); the temporary is removed on every failure, an interrupt included.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=TMP_SUFFIX, dir=dest.parent))
    except OSError as e:
        raise disk_full_from(e, dest, needed=size_hint) or e from None
    sfx = dest.suffix if suffix is None else suffix
    tmp = tmpdir / f"part{sfx}"
    full = None
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"Writer produced nothing at {tmp}")
        from edgekit.ui import pending_signal

        signum = pending_signal()
        if signum is not None:  # an interrupt that Python swallowed (raised in a __del__)
            from edgekit.errors import Interrupted

            raise Interrupted(signum)
        previous = None
        if dest.is_dir() and not dest.is_symlink():
            # The old folder goes out of the way in one rename, so that an interrupt never
            # leaves half of it; it is deleted below (or swept by the next run after kill -9).
            previous = tmpdir / "previous"
            os.replace(dest, previous)
        try:
            os.replace(tmp, dest)
        except BaseException:
            if previous is not None:
                os.replace(previous, dest)
            raise
    except Exception as e:
        written = _size_or_zero(tmp)
        shutil.rmtree(tmpdir, ignore_errors=True)  # first, so that the message says what is free
        full = disk_full_from(e, dest, needed=size_hint, written=written)
        if full is None:
            raise
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    if full is not None:
        raise full from None


def _size_or_zero(path: Path) -> int:
    try:
        return size_bytes(path) if path.exists() else 0
    except OSError:
        return 0


def write_bytes_atomic(dest: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(dest, size_hint=len(data)) as tmp:
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
        with tempfile.NamedTemporaryFile(dir=p, prefix=".write-test-", suffix=TMP_SUFFIX):
            pass
    except OSError as e:
        full = disk_full_from(e, p / ".write-test")
        if full is not None:
            raise full from None
        raise UsageError(
            f"Cannot write to output folder {p} ({e.strerror}). Choose a writable --out."
        ) from None
    return p


# -- locks ------------------------------------------------------------------------------------


@dataclass
class LockHolder:
    """Who holds a lock, as written in the lock file."""

    pid: int
    host: str
    started: str
    command: str = ""
    ticks: int | None = None  # the process start time (Linux), to tell a reused pid

    def describe(self) -> str:
        cmd = f" ({self.command})" if self.command else ""
        return f"pid {self.pid} on {self.host}, started {self.started}{cmd}"

    def alive(self) -> bool:
        """On this host: whether that process still runs (and is the same process)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's process: it exists
        except OSError:
            return False
        if self.ticks is not None:
            now = _start_ticks(self.pid)
            if now is not None and now != self.ticks:
                return False  # the pid was reused by another process
        return True


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _me() -> LockHolder:
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if prog in ("__main__.py", "-m", "-c", ""):
        prog = "edgekit"
    words = [prog, *[a for a in sys.argv[1:3] if not a.startswith("-")]][:3]
    return LockHolder(
        pid=os.getpid(),
        host=socket.gethostname(),
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        command=" ".join(words),
        ticks=_start_ticks(os.getpid()),
    )


def _read_holder(fd: int) -> LockHolder | None:
    try:
        raw = os.pread(fd, 4096, 0)
        d = json.loads(raw.decode()) if raw.strip() else None
        return LockHolder(**d) if isinstance(d, dict) else None
    except (OSError, ValueError, TypeError):
        return None


class RunLock:
    """An exclusive lock on a run folder, an output file or a cache, held by one process.

    The lock file holds the holder's pid, host and start time. The kernel's flock() on it is
    what excludes: it ends with the process, however it ends (kill -9 too). A second process
    is refused at once (`RunLocked`, one line naming the holder) or, with `wait=True`, waits
    for it. A lock file left by a process that is gone (same host, pid dead) is taken over
    with a note; one naming a process on another host is left alone, since edgekit cannot tell
    whether it still runs there.
    """

    def __init__(self, path: str | os.PathLike, *, what: str, hint: str = "") -> None:
        self.path = Path(path)
        self.what = what  # "run folder runs/x", "baseline baseline.json" ...
        self.hint = hint  # what the refused user can do
        self._fd: int | None = None

    def _refusal(self, holder: LockHolder | None, extra: str = "") -> RunLocked:
        who = holder.describe() if holder else "another edgekit process (starting up)"
        hint = f" {self.hint}" if self.hint else ""
        return RunLocked(f"{self.what} is in use by {who}{extra}; nothing was touched.{hint}")

    def acquire(self, *, wait: bool = False, note: Callable[[str], None] | None = None) -> None:
        import fcntl

        note = note or (lambda message: None)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                full = disk_full_from(e, self.path)
                if full is not None:
                    raise full from None
                raise UsageError(
                    f"Cannot create the lock file {self.path} ({e.strerror}). Choose a writable "
                    "folder."
                ) from None
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _read_holder(fd)
                    if not wait:
                        raise self._refusal(holder) from None
                    who = holder.describe() if holder else "another edgekit process"
                    note(f"waiting for {who} to finish with {self.what}")
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except OSError:
                    pass  # a file system without flock: the pid check below decides
                if not self._same_file(fd):
                    os.close(fd)  # the holder removed the file as we opened it: start again
                    continue
                holder = _read_holder(fd)
                me = _me()
                if holder is not None and (holder.pid, holder.host) != (me.pid, me.host):
                    if holder.host != me.host:
                        raise self._refusal(
                            holder,
                            extra=" (another machine: edgekit cannot tell whether it still "
                            f"runs; if it does not, delete {self.path})",
                        )
                    if holder.alive():
                        # Unlocked yet its holder runs: a file system where flock does not
                        # exclude (or none at all). The pid decides.
                        if not wait:
                            raise self._refusal(holder)
                        os.close(fd)
                        time.sleep(1.0)
                        continue
                    note(
                        f"note: took over the lock of {self.what} from {holder.describe()}, "
                        "which is no longer running"
                    )
                data = json.dumps(asdict(me)).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
                with contextlib.suppress(OSError):
                    os.fsync(fd)
            except BaseException as e:
                with contextlib.suppress(OSError):
                    os.close(fd)
                full = disk_full_from(e, self.path) if isinstance(e, Exception) else None
                if full is not None:
                    raise full from None
                raise
            self._fd = fd
            return

    def _same_file(self, fd: int) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._same_file(fd):
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


LOCK_NAME = ".edgekit.lock"


def lock_folder(
    path: str | os.PathLike,
    *,
    what: str | None = None,
    hint: str = "",
    wait: bool = False,
    note: Callable[[str], None] | None = None,
) -> RunLock:
    """Create `path` if needed and take its RunLock (OUT/.edgekit.lock); release() it when done.

    A second process is refused at once with one line naming the holder (RunLocked, exit 2),
    before anything in the folder is touched; `wait=True` waits for the holder instead. `note`
    receives the notes (a lock taken over; default: edgekit.ui.info)."""
    from edgekit import ui

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"Output path {p} exists and is not a folder. Choose another --out.")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        full = disk_full_from(e, p / LOCK_NAME)
        if full is not None:
            raise full from None
        raise UsageError(
            f"Cannot write to output folder {p} ({e.strerror}). Choose a writable --out."
        ) from None
    lock = RunLock(p / LOCK_NAME, what=what or f"Run folder {p}", hint=hint)
    lock.acquire(wait=wait, note=note or ui.info)
    return lock


def sweep_temporaries(folder: str | os.PathLike, depth: int = 3) -> int:
    """Remove what killed runs left in `folder` (and `depth` levels below): edgekit's temporary
    files (`*.edgekit-tmp`) and partial stage folders (`stages/.NN-name.partial`). Only call it
    while holding the folder's RunLock. Returns how many entries were removed."""
    root = Path(folder)
    removed = 0
    level = [root]
    for _ in range(depth):
        nxt = []
        for d in level:
            try:
                entries = list(d.iterdir())
            except OSError:
                continue
            for q in entries:
                leftover = q.name.startswith(".") and (
                    q.name.endswith(TMP_SUFFIX)
                    or (d.name == "stages" and q.name.endswith(".partial"))
                )
                if leftover:
                    if q.is_dir() and not q.is_symlink():
                        shutil.rmtree(q, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            q.unlink()
                    removed += 1
                elif q.is_dir() and not q.is_symlink():
                    nxt.append(q)
        level = nxt
    return removed


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
