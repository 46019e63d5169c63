"""Per-epoch training checkpoints: a training run that is killed (a lost worker, a preempted
machine, Ctrl-C) resumes from its last finished epoch instead of from zero.

`resume_callbacks(directory, callbacks)` gives the callbacks `training.fit` adds:
- tf_keras' `BackupAndRestore` in `directory/backup`: the model's and the optimizer's state and
  the epoch counter, saved at every epoch's end and restored when the same training starts again
  (so the learning-rate schedule goes on where it stopped); under MultiWorkerMirroredStrategy
  only the chief's copy is kept and the directory must be one all workers see (a shared disk);
- `EpochState` in `directory/state.json` (+ `best-weights.npz`): what BackupAndRestore does not
  keep: the history of the finished epochs (the report's history stays whole) and the state of
  every EarlyStopping callback (its best figure, epoch, patience count and best weights, so the
  weights restored at the end are the best of the whole run, not of its resumed part).

Files are written atomically, by the chief only. The pipeline gives each training stage its
directory (OUT/cache/checkpoints/NN-stage-KEY, the stage's cache key: a changed recipe or data
starts afresh) and removes it once the stage has finished. A resumed run is not bit-identical
to an uninterrupted one: the data order of the epochs after the restart differs.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import ui
from edgekit.artifacts import atomic_path, write_json_atomic

STATE = "state.json"
BEST_WEIGHTS = "best-weights.npz"


def resume_callbacks(
    directory: Path, callbacks: list[Any], epochs: int, description: str
) -> list[Any]:
    """[BackupAndRestore, EpochState] for training whose other callbacks are `callbacks` (the
    EarlyStopping ones among them have their state kept). Put them after `callbacks`."""
    from edgekit.keras_compat import tf_keras
    from edgekit.stages.distribute import is_chief

    tfk = tf_keras()
    directory = Path(directory)
    stoppers = [c for c in callbacks if isinstance(c, tfk.callbacks.EarlyStopping)]
    backup = tfk.callbacks.BackupAndRestore(str(directory / "backup"), delete_checkpoint=False)

    class EpochState(tfk.callbacks.Callback):
        """The history of the finished epochs and the EarlyStopping state, saved at each epoch's
        end and put back when a resumed training begins (after EarlyStopping reset itself)."""

        def __init__(self) -> None:
            super().__init__()
            self.history: dict[str, list[float]] = {}
            self.resumed_epochs = 0

        def on_train_begin(self, logs: dict | None = None) -> None:
            state = _read_state(directory)
            if state is None:
                return
            self.history = {k: list(map(float, v)) for k, v in state["history"].items()}
            self.resumed_epochs = int(state["epochs"])
            best = _read_best_weights(directory)
            for stopper, saved in zip(stoppers, state["stoppers"], strict=False):
                stopper.best = float(saved["best"])
                stopper.best_epoch = int(saved["best_epoch"])
                stopper.wait = int(saved["wait"])
                if saved["index"] in best:
                    stopper.best_weights = best[saved["index"]]
            ui.info(
                f"{description}: resuming after epoch {self.resumed_epochs}/{epochs} from the "
                f"checkpoint in {directory}"
            )

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            for k, v in (logs or {}).items():
                if np.ndim(v) == 0:
                    self.history.setdefault(k, []).append(float(v))
            if not is_chief():
                return
            saved = []
            weights = {}
            for i, stopper in enumerate(stoppers):
                saved.append(
                    {
                        "index": i,
                        "best": float(stopper.best),
                        "best_epoch": int(stopper.best_epoch),
                        "wait": int(stopper.wait),
                    }
                )
                if stopper.best_weights is not None:
                    weights[i] = stopper.best_weights
            if weights:
                _write_best_weights(directory, weights)
            write_json_atomic(
                directory / STATE,
                {"epochs": epoch + 1, "history": self.history, "stoppers": saved},
            )

    return [backup, EpochState()]


def _read_state(directory: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((directory / STATE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not {"epochs", "history", "stoppers"} <= set(state):
        return None
    return state


def _write_best_weights(directory: Path, weights: dict[int, list[np.ndarray]]) -> None:
    arrays = {f"s{i}_w{j}": w for i, ws in weights.items() for j, w in enumerate(ws)}
    with atomic_path(directory / BEST_WEIGHTS) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _read_best_weights(directory: Path) -> dict[int, list[np.ndarray]]:
    path = directory / BEST_WEIGHTS
    if not path.is_file():
        return {}
    out: dict[int, list[np.ndarray]] = {}
    with np.load(path) as data:
        keys = sorted(data.files, key=lambda k: tuple(int(p[1:]) for p in k.split("_")))
        for k in keys:
            i = int(k.split("_")[0][1:])
            out.setdefault(i, []).append(data[k])
    return out


def remove(directory: Path) -> None:
    """Delete a finished training's checkpoints (nothing to resume any more)."""
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(Path(directory).parent)  # OUT/cache/checkpoints, once it is empty
