"""Per-epoch training checkpoints: a training killed mid-run resumes after its last finished
epoch (model, optimizer, schedule, history, early stopping), in-process and as a killed
`edgekit compress` run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

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


@pytest.mark.slow
def test_a_compress_run_killed_mid_distillation_resumes_there(tmp_path, teacher_keras3, digits_npz):  # noqa: F811
    """SIGKILL during epoch 3 of 4, then the same command again: the distill stage resumes
    after epoch 2 (its log says so), runs 3 and 4 only, and the report is complete."""
    out = tmp_path / "run"
    recipe = _distill_export_recipe(tmp_path)
    args = [sys.executable, "-m", "edgekit", "compress", str(teacher_keras3), "--recipe", recipe,
            "--data", str(digits_npz), "--out", str(out), "--json"]  # fmt: skip
    for s in ("distill.epochs=4", "distill.batch_size=32", "distill.student.input_size=32",
              "distill.augment.flip=none", "distill.augment.rot90=false",
              "export.formats=[tflite]", "latency_runs=3", "verify.samples=64"):  # fmt: skip
        args += ["--set", s]
    env = {**os.environ, "EDGEKIT_QUIET": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "run.log"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and "distill: epoch 2/4" in log.read_text():
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before epoch 2 was logged"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads(
        next((out / "cache" / "checkpoints").glob("00-distill-*/state.json")).read_text()
    )
    assert state["epochs"] >= 2

    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    text = log.read_text()
    assert f"distill: resuming after epoch {state['epochs']}/4 from the checkpoint" in text
    second_run = text[text.rindex("Recipe 'distill'") :]  # the log of the second attempt
    assert "distill: epoch 1/4" not in second_run and "distill: epoch 4/4" in second_run
    stage = json.loads(r.stdout)["stages"][0]
    assert stage["epochs_run"] == 4 and len(stage["history"]["loss"]) == 4
    assert not (out / "cache" / "checkpoints").exists()  # removed once the stage finished


def _distill_export_recipe(tmp_path):
    from tests.test_distill_online import _distill_export_recipe as recipe

    return recipe(tmp_path)


from tests.test_compress import digits_npz, teacher_keras3  # noqa: E402, F401 - fixtures
