"""Per-epoch training checkpoints: a training killed mid-run resumes after its last finished
epoch (model, optimizer, schedule, history, early stopping). A killed `edgekit compress` run
resuming inside distill: tests/test_reliability.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.stages import training


class _Killed(Exception):
    pass


def _model():
    from edgekit.keras_compat import tf_keras

    tfk = tf_keras()
    tfk.utils.set_random_seed(0)
    inp = tfk.Input((6,))
    return tfk.Model(inp, tfk.layers.Dense(3)(tfk.layers.Dense(8, activation="relu")(inp)))


def _fit(model, directory, callbacks=()):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    return training.fit(
        model,
        x,
        y,
        x_val=x[:32],
        y_val=y[:32],
        epochs=5,
        batch_size=16,
        optimizer="adam",
        schedule="cosine",
        learning_rate=1e-2,
        callbacks=list(callbacks),
        checkpoint_dir=directory,
    )


def test_a_killed_training_resumes_after_its_last_finished_epoch(tmp_path):
    from edgekit.keras_compat import tf_keras

    tfk = tf_keras()

    class KillInEpoch3(tfk.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise _Killed

    directory = tmp_path / "ckpt"
    stop = tfk.callbacks.EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True)
    model = _model()
    with pytest.raises(_Killed):
        _fit(model, directory, [stop, KillInEpoch3()])
    first = json.loads((directory / "state.json").read_text())
    assert first["epochs"] == 2 and len(first["history"]["loss"]) == 2
    assert (directory / "best-weights.npz").is_file()
    after_two = [w.copy() for w in model.get_weights()]

    # started again (a fresh model object, as a new process would build): it resumes at epoch 3
    resumed = _model()
    stop2 = tfk.callbacks.EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True)
    seen = []

    class Epochs(tfk.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if not seen:  # the weights it starts epoch 3 from are those after epoch 2
                for a, b in zip(after_two, self.model.get_weights(), strict=True):
                    np.testing.assert_allclose(a, b, rtol=1e-6)
            seen.append(epoch)

    history = _fit(resumed, directory, [stop2, Epochs()])
    assert seen == [2, 3, 4]  # epochs 3-5 ran, not 1-5
    assert len(history["loss"]) == 5 and history["loss"][:2] == first["history"]["loss"]
    # the optimizer (and so the cosine schedule) went on: 6 steps per epoch, 5 epochs in all
    assert int(resumed.optimizer.iterations.numpy()) == 5 * 6
    # early stopping judged the whole run: its best is the lowest val_loss of all five epochs
    assert stop2.best == pytest.approx(min(history["val_loss"]), rel=1e-6)


def test_without_a_checkpoint_folder_nothing_is_written(tmp_path):
    model = _model()
    history = _fit(model, None)
    assert len(history["loss"]) == 5 and not list(tmp_path.iterdir())
