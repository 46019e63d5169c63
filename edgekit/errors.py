"""Error hierarchy. The CLI maps each class to an exit code and prints its message on one line.

Messages follow the Keras style: say what was expected, what was received, and what to do.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


class EdgekitError(Exception):
    """Base class for every error edgekit raises on purpose."""

    exit_code = 1


class UsageError(EdgekitError):
    """Bad input from the user: a path, an option, a data set or a model file. Exit code 2."""

    exit_code = 2


class DataError(UsageError):
    """A data set that cannot be used as given (empty, one class, NaN, mixed sizes ...)."""


class ModelLoadError(UsageError):
    """A model file that does not exist, is not a model, is truncated or uses unsafe objects."""


class RecipeError(UsageError):
    """A recipe or device profile that does not validate."""


class UnsupportedModelError(UsageError):
    """A model with a layer, op or input a stage or runtime cannot handle."""


class KernelPrepareError(UnsupportedModelError):
    """A runtime refused to prepare one node of a valid model (a kernel that cannot run it with
    these shapes or quantization parameters). `node` is the operator index, `op` its type and
    `layer` the model layer it came from, when known."""

    def __init__(self, message: str, *, node: int = -1, op: str = "", layer: str = ""):
        super().__init__(message)
        self.node = node
        self.op = op
        self.layer = layer


class TargetUnavailableError(UsageError):
    """A requested target (GPU, emulated device, remote host) is not available here."""


class StageError(EdgekitError):
    """A stage failed while running on valid input. Exit code 1."""


class WorkerLost(StageError):
    """A task of a multi-worker training stopped; the run resumes when every task is restarted."""


class ExportMismatch(StageError):
    """An exported model's outputs do not match the reference model within tolerance."""

    def __init__(self, message: str, *, artifact: str = "", output: str = "", **numbers: float):
        super().__init__(message)
        self.artifact = artifact
        self.output = output
        self.numbers = numbers


class BudgetExceeded(EdgekitError):
    """The final artifact missed the recipe's accuracy budget. Artifacts stay on disk. Exit 1."""


class RegressionFound(EdgekitError):
    """`edgekit check` found a significant regression. Exit 1."""


class BaselineError(UsageError):
    """A baseline that cannot be used: missing, not a baseline, from a newer edgekit, or made on
    other data or for a model with other classes. `edgekit check` exits 2."""


class EvaluationError(EdgekitError):
    """A model that loaded but failed while being evaluated or timed: the check could not be
    made. Exit code 2 (never a pass)."""

    exit_code = 2


class RunLocked(UsageError):
    """Another edgekit process holds the lock of this run folder, baseline file or cache. Exit 2;
    nothing was touched."""


class DiskFull(UsageError):
    """A write failed for lack of space (ENOSPC or a quota). Exit 2; the file being written was
    removed and earlier, complete files are kept."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached edgekit; the CLI exits 128 + the signal number (130 / 143).

    A KeyboardInterrupt, so `except Exception` blocks anywhere let it through and `finally`
    blocks (atomic writes, the run lock) clean up on the way out."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def classes_mismatch(model: str, outputs: int, labels: list[str]) -> str:
    """`model` has `outputs` class scores but the data has more classes (`labels`, the data set's
    class names): say it in the data's own terms. Labels that came without names are the ids
    0..max(y), so "the labels go up to 99", not "100 classes" the user never made."""
    if labels == [str(i) for i in range(len(labels))]:
        data = f"the data's labels go up to {len(labels) - 1}"
    else:
        shown = ", ".join(labels[:3]) + (", ..." if len(labels) > 3 else "")
        data = f"the data names {len(labels)} classes ({shown})"
    return (
        f"{model} has {outputs} outputs (labels 0 to {outputs - 1}) but {data}. "
        "Use data with the model's classes, or a model with one output per class."
    )


# -- a full disk (edgekit.artifacts and edgekit.ui raise it) ----------------------------------------------------------------------------

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "errno = 28")


def _chain(e: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and all(cur is not x for x in out):
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def is_disk_full(e: BaseException) -> bool:
    """Whether `e`, or an exception it was raised from, is a full disk. Libraries that wrap the
    OSError (h5py, TensorFlow) keep only its words, so those are recognised too."""
    for cur in _chain(e):
        if isinstance(cur, DiskFull):
            return True
        if isinstance(cur, OSError) and cur.errno in _FULL_ERRNOS:
            return True
        if any(t in str(cur) for t in _FULL_TEXTS):
            return True
    return False


def human_bytes(n: int | float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def disk_full_from(
    e: BaseException,
    dest: str | os.PathLike | None = None,
    *,
    needed: int | None = None,
    written: int = 0,
) -> DiskFull | None:
    """The one-line DiskFull for `e` if it is a full disk (else None): the folder, what is free
    there, and the space needed (exact when known, else more than what was written)."""
    chain = _chain(e)
    known = next((x for x in chain if isinstance(x, DiskFull)), None)
    if known is not None:  # already said, perhaps wrapped by a library or a stage
        return known
    if not is_disk_full(e):
        return None
    if dest is None:
        name = next((x.filename for x in chain if getattr(x, "filename", None)), None)
        dest = Path(name) if name else None
    if dest is None:
        return DiskFull(
            "No space left on the device (a write failed with ENOSPC). Free some space, then "
            "rerun the same command; complete files are kept."
        )
    dest = Path(dest)
    folder = dest.parent
    try:
        free = human_bytes(shutil.disk_usage(folder).free)
    except OSError:
        free = "?"
    if folder.name.startswith(".") and folder.name.endswith(".partial"):
        folder = folder.with_name(folder.name[1 : -len(".partial")])  # a stage's own folder
    need = (
        f"{human_bytes(needed)} needed"
        if needed
        else f"more than {human_bytes(max(written, 4096))} needed"
    )
    return DiskFull(
        f"No space left in {folder} while writing {dest.name}: {free} free, {need}. Free some "
        "space there (or choose another folder), then rerun the same command; complete files "
        "are kept and nothing half-written is left."
    )
