"""What every stage may read: the run context, and the teacher's outputs cached in the run folder.

The pipeline builds one `RunContext` per run (recipe, data splits, preprocessing, the teacher and a
function that runs it) and hands it to each stage. The teacher runs once per sample and split (and
per augmented view, for distillation): its logits are cached under OUT/cache, keyed by the teacher's
hash, the split's fingerprint and the preprocessing, so stages and re-runs share them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import ui
from edgekit.artifacts import ModelArtifact
from edgekit.errors import UsageError

# A view of an image (mirrored?, quarter turns), as `training.augment_views` lists them.
View = tuple[bool, int]


def hash_json(obj: Any) -> str:
    """sha256 of `obj` as canonical JSON (sorted keys): the cache keys of stages and teacher outputs."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def first_output(out: Any, index: int = 0) -> np.ndarray:
    """The class scores of a model's prediction: output `index` of a multi-output model (the
    recipe's `class_output`, the first by default); a single output as it is."""
    if isinstance(out, list | tuple):
        return out[index] if len(out) > 1 else out[0]
    return out


def are_probabilities(outputs: np.ndarray) -> bool:
    """True when the rows are probabilities (>= 0, summing to 1): a model that ends in a softmax."""
    out = np.asarray(outputs, dtype=np.float32)
    return bool(out.ndim == 2 and (out >= 0).all() and np.allclose(out.sum(axis=1), 1.0, atol=1e-3))


def as_logits(outputs: np.ndarray) -> np.ndarray:
    """Teacher outputs as logits: probabilities (rows >= 0 summing to 1) become log-probabilities."""
    out = np.asarray(outputs, dtype=np.float32)
    if are_probabilities(out):
        return np.log(np.clip(out, 1e-12, 1.0))
    return out


@dataclass
class RunContext:
    """What every stage may read: the recipe, the data splits, teacher outputs, the run folder."""

    recipe: Any  # edgekit.recipes.Recipe
    out: Path
    splits: dict[str, Any]  # name -> edgekit.data.Dataset ("unlabeled": the pool, if any)
    preprocessing: Any  # edgekit.data.Preprocessing
    labels: list[str]
    teacher: ModelArtifact
    teacher_outputs: dict[str, np.ndarray] = field(default_factory=dict)  # split -> logits
    unsafe: bool = False
    predict_teacher: Any = None  # x (preprocessed float32) -> teacher outputs; None in tests
    class_index: int = 0  # the teacher's class-score output (recipe `class_output`), resolved
    teacher_output_names: list[str] = field(default_factory=list)  # when it has several
    # Where the running stage keeps its per-epoch training checkpoints (stages/checkpoints.py):
    # checkpoint_root/NN-stage-KEY, set by the pipeline, kept until the stage finishes. The root
    # is OUT/cache/checkpoints of the chief's run folder (every worker reads the chief's).
    checkpoint_dir: Path | None = None
    checkpoint_root: Path | None = None
    worker: str | None = None  # "worker:1" in a non-chief task of a multi_worker run

    def __post_init__(self) -> None:
        if self.checkpoint_root is None:
            self.checkpoint_root = self.out / "cache" / "checkpoints"

    def x(self, split: str, limit: int | None = None) -> np.ndarray:
        """The split's images, preprocessed float32. A streamed split gives its lazy
        `StreamedImages` (decoded a slice at a time) unless `limit` asks for a few."""
        ds = self.splits[split]
        if getattr(ds, "streamed", False):
            x = ds.x.with_preprocessing(self.preprocessing)
            return x[:limit] if limit else x
        x = self.preprocessing.apply(ds.x[:limit] if limit else ds.x)
        return np.asarray(x, dtype=np.float32)

    def y(self, split: str, limit: int | None = None) -> np.ndarray | None:
        ds = self.splits[split]
        if ds.y is None:
            return None
        return ds.y[:limit] if limit else ds.y

    @property
    def labeled(self) -> bool:
        return self.splits["train"].y is not None

    @property
    def unlabeled_source(self) -> str | None:
        """Where the unlabeled images came from (a spec or a path); None without any."""
        pool = self.splits.get("unlabeled")
        return pool.source if pool is not None else None

    def compute_teacher_outputs(self, split_names: list[str]) -> None:
        """Run the teacher once per sample of each split; the logits go to `teacher_outputs` and
        OUT/cache (keyed by teacher and data)."""
        for name in split_names:
            self.teacher_outputs[name] = self.teacher_logits(name)

    def teacher_view_outputs(self, split: str, views: list[View]) -> np.ndarray:
        """The teacher's logits on every view (see `training.augment_views`) of every image of
        `split`, as (views, samples, classes); each view computed once and cached in OUT/cache."""
        out = []
        for view in views:
            if view == (False, 0) and split in self.teacher_outputs:
                out.append(self.teacher_outputs[split])
            else:
                out.append(self.teacher_logits(split, view))
        return np.stack(out)  # (views, N, classes): N x classes floats per view, no images

    def cache_path(self, name: str, view: View | None = None) -> Path:
        """Where the teacher's logits on split `name` (one view of it) are cached."""
        if view == (False, 0):
            view = None  # the original images: the plain per-split cache file
        parts: list[Any] = [
            self.teacher.sha256,
            self.splits[name].fingerprint(),
            self.preprocessing.to_dict(),
            name,
        ]
        label = name
        if view is not None:
            parts.append(list(view))
            label = f"{name}-{'m' if view[0] else ''}r{view[1]}"
        key = hash_json(parts)[:16]
        return self.out / "cache" / f"teacher-{label}-{key}.npy"

    def cache_bytes_missing(self, split_names: list[str], classes: int) -> int:
        """The disk the teacher's cached outputs on these splits will still take (the files not
        already in OUT/cache), for `classes` scores per image."""
        return sum(
            len(self.splits[n]) * max(classes, 1) * 4 + 4096
            for n in split_names
            if not self.cache_path(n).is_file()
        )

    def teacher_logits(self, name: str, view: View | None = None) -> np.ndarray:
        """The teacher's logits on split `name` (one view of it), from OUT/cache or computed."""
        if view == (False, 0):
            view = None
        label = name if view is None else f"{name}-{'m' if view[0] else ''}r{view[1]}"
        path = self.cache_path(name, view)
        if path.is_file():
            return np.load(path, mmap_mode="r")
        x = self.x(name)
        if view is not None:
            from edgekit.stages.training import apply_view

            x = apply_view(x, view)
        return self._write_logits(path, x, label)

    def _write_logits(self, path: Path, x: Any, label: str) -> np.ndarray:
        """Run the teacher on `x` (an array or a stream) batch by batch into a memory-mapped .npy
        written under a temporary name and renamed when complete; return it memory-mapped."""
        from edgekit.artifacts import atomic_path
        from edgekit.data.stream import require_free_space

        n, step = len(x), 256
        predict = self.predict_teacher
        path.parent.mkdir(parents=True, exist_ok=True)
        first = as_logits(first_output(predict(x[:step])))
        self._check_classes(first)
        require_free_space(
            path.parent, n * first.shape[1] * 4 + 4096, f"The teacher's outputs on {label}"
        )
        with atomic_path(path) as tmp:
            out = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.float32, shape=(n, first.shape[1])
            )
            out[: len(first)] = first
            starts = range(step, n, step)
            for i in (
                ui.progress(starts, description=f"teacher outputs ({label})") if n > step else []
            ):
                out[i : i + step] = as_logits(first_output(predict(x[i : i + step])))
            out.flush()
            del out
        return np.load(path, mmap_mode="r")

    def _check_classes(self, logits: np.ndarray) -> None:
        """The teacher gives one score per class of the data's labels."""
        classes = len(self.labels) if self.labeled else None
        names = self.teacher_output_names
        hint = (
            f" These are the scores of its output '{names[self.class_index]}' (of "
            f"{', '.join(names)}): pass --output with the one holding the class scores."
            if len(names) > 1
            else ""
        )
        if logits.ndim != 2:
            raise UsageError(
                f"The model outputs shape {logits.shape[1:]}, not one score per class. Use a "
                f"classifier whose last layer has one output per class.{hint}"
            )
        if classes is not None and logits.shape[1] != classes:
            from edgekit.errors import classes_mismatch

            if logits.shape[1] > classes:
                raise UsageError(
                    f"The model has {logits.shape[1]} outputs but the data's labels cover "
                    f"{classes} classes. Use a classifier whose last layer matches the labels.{hint}"
                )
            raise UsageError(
                classes_mismatch("The model", int(logits.shape[1]), self.labels) + hint
            )
