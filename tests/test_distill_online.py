"""The online teacher (distill.teacher=online): the teacher runs in the training step on exactly
the augmented batch the student sees; crops and mixup; what is refused before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.artifacts import ModelArtifact
from edgekit.errors import UsageError
from edgekit.stages import training
from edgekit.stages.distill import (
    Distill,
    DistillConfig,
    distillation_loss,
    pack_labels,
    pack_targets,
)
from edgekit.stages.online import strong_augmenter, teacher_function
from tests.test_compress import compress, digits_npz, teacher_keras3  # noqa: F401 - fixtures


def _twins(seed: int = 0):
    """A Keras 3 teacher and a tf_keras student with the same architecture and weights (8x8x1
    images, 4 classes, no symmetry: a mirrored or cropped image gets other logits)."""
    from edgekit.keras_compat import LoadedModel, keras, tf_keras

    k, tfk = keras(), tf_keras()
    inp = k.Input((8, 8, 1))
    teacher = k.Model(inp, k.layers.Dense(4)(k.layers.Flatten()(inp)))
    w = np.random.default_rng(seed).normal(size=(64, 4)).astype(np.float32)
    teacher.layers[-1].set_weights([w, np.zeros(4, np.float32)])
    sinp = tfk.Input((8, 8, 1))
    student = tfk.Model(sinp, tfk.layers.Dense(4)(tfk.layers.Flatten()(sinp)))
    student.layers[-1].set_weights([w, np.zeros(4, np.float32)])
    return LoadedModel(teacher, "keras3"), student


def _train(student, x, targets, augment, teacher=None):
    return training.fit(
        student,
        x,
        targets,
        epochs=2,
        batch_size=16,
        optimizer="sgd",
        learning_rate=0.1,
        loss=distillation_loss(4, 0.0, 1.0),
        metrics=[],
        augment=augment,
        teacher=teacher,
    )


def test_the_online_teacher_sees_the_augmented_images_the_student_sees():
    """Student and teacher are the same function: if the teacher sees exactly the student's
    (mirrored, turned, cropped, mixed) images, the distillation loss is 0 at every step and the
    student never moves. Taught cached logits of the unaugmented images instead, the same
    student on the same augmentation has a loss far from 0."""
    x = np.random.default_rng(1).normal(size=(64, 8, 8, 1)).astype(np.float32)
    loaded, student = _twins()
    before = [w.copy() for w in student.get_weights()]
    base = training.augmenter("both", True, seed=3)
    online = strong_augmenter(base, crop=0.5, mixup=0.4, seed=3)
    history = _train(
        student, x, pack_labels(None, len(x), 4), online, teacher_function(loaded, 0, False)
    )
    assert max(history["loss"]) < 1e-8, history
    for a, b in zip(before, student.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)

    cached = np.asarray(loaded.predict(x))
    _, student = _twins()
    history = _train(student, x, pack_targets(None, cached), training.augmenter("both", True, 3))
    assert min(history["loss"]) > 0.5, history


def test_mixup_blends_each_image_and_its_labels_with_the_same_partner_and_weight():
    """Image i is constant (its class + 1): a mixed image's pixels must equal the class values
    weighted by its mixed label row, if image and labels were blended alike."""
    import tensorflow as tf

    y = np.arange(32) % 4
    x = np.broadcast_to((y + 1.0).reshape(-1, 1, 1, 1), (32, 6, 6, 3)).astype(np.float32)
    apply = strong_augmenter(None, mixup=0.5, seed=0)
    xm, ym = apply(tf.constant(x), tf.constant(0, tf.int64), tf.constant(pack_labels(y, 32, 4)))
    xm, ym = xm.numpy(), ym.numpy()
    np.testing.assert_allclose(ym.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(xm[:, 0, 0, 0], ym @ np.arange(1.0, 5.0), atol=1e-5)
    assert (ym.max(1) < 0.999).mean() > 0.5  # most images are really mixed
    again = apply(tf.constant(x), tf.constant(0, tf.int64), tf.constant(pack_labels(y, 32, 4)))
    np.testing.assert_array_equal(again[0].numpy(), xm)  # stateless: the same draws
    other = apply(tf.constant(x), tf.constant(1, tf.int64), tf.constant(pack_labels(y, 32, 4)))
    assert not np.array_equal(other[0].numpy(), xm)  # another batch index, other draws


def test_random_resized_crops_zoom_into_the_image_and_keep_its_size():
    import tensorflow as tf

    # a horizontal ramp 0..1: a crop that keeps less than the full width spans a shorter range
    ramp = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (8, 32, 1))[..., None]
    apply = strong_augmenter(None, crop=0.3, seed=5)
    xc, yc = apply(tf.constant(ramp), tf.constant(0, tf.int64), tf.zeros((8, 4)))
    xc = xc.numpy()
    assert xc.shape == ramp.shape and yc.shape == (8, 4)
    spans = xc[:, 16, -1, 0] - xc[:, 16, 0, 0]
    # a crop's width share is sqrt(area * aspect) >= sqrt(0.3 * 3/4) = 0.47, at most the image
    assert (spans <= 1 + 1e-6).all() and (spans > 0.45).all(), spans
    assert (spans < 0.98).mean() >= 0.5, spans  # most of them really zoom in
    assert len(np.unique(np.round(spans, 4))) > 1  # each image its own box
    assert strong_augmenter(None) is None  # nothing asked: no augmentation


@pytest.mark.parametrize("value", [0.0, 1.5])
def test_a_crop_outside_0_1_is_refused(value):
    with pytest.raises(UsageError, match="0 < crop <= 1"):
        strong_augmenter(None, crop=value)


def test_online_needs_a_tensorflow_teacher_and_crops_need_online(tmp_path):
    onnx = ModelArtifact(path=str(tmp_path / "teacher.onnx"), format="onnx")
    stage = Distill(DistillConfig(teacher="online"))
    with pytest.raises(UsageError, match=r"teacher.onnx is a \.onnx file.*distill.teacher=cached"):
        stage.preflight(onnx)
    keras_teacher = ModelArtifact(path=str(tmp_path / "t.keras"), format="keras3")
    stage.preflight(keras_teacher)  # a Keras teacher runs online
    assert stage.teacher_splits() == ("val",)  # the training split's outputs are not cached
    cached = Distill(DistillConfig(teacher="cached", augment={"mixup": 0.2, "crop": 0.5}))
    with pytest.raises(UsageError, match=r"augment.crop=0.5, augment.mixup=0.2 needs the online"):
        cached.preflight(keras_teacher)
    assert cached.teacher_splits() == ("train", "val")
    # auto: online only on a GPU; this machine's answer decides what is cached
    auto = Distill(DistillConfig())
    from edgekit.stages.distribute import has_gpu

    assert auto.teacher_mode("keras3") == ("online" if has_gpu() else "cached")
    assert auto.teacher_mode("onnx") == "cached"  # never online with an ONNX teacher


def _distill_export_recipe(tmp_path):
    import yaml

    from edgekit.resources import bundled

    recipe = yaml.safe_load(bundled("recipes")["distill"].read_text())
    recipe["stages"] = [s for s in recipe["stages"] if s["stage"] in ("distill", "export")]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_compress_distills_with_the_online_teacher(tmp_path, teacher_keras3, digits_npz):  # noqa: F811
    out = tmp_path / "online"
    r = compress(teacher_keras3, digits_npz, out, _distill_export_recipe(tmp_path),
                 "distill.teacher=online", "distill.epochs=3", "distill.batch_size=32",
                 "distill.student.input_size=32",
                 "distill.augment.mixup=0.2", "distill.augment.crop=0.7",
                 "export.formats=[tflite]")  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    stage = report["stages"][0]
    assert stage["teacher"] == "online" and stage["epochs_run"] == 3
    assert stage["augment"]["teacher_agreement"] == {}  # nothing to measure: it sees each view
    log = (out / "run.log").read_text()
    assert "online teacher: it runs in every training step" in log and "mixup 0.2" in log
    from edgekit.stages.distribute import has_gpu

    if not has_gpu():  # said in the run's first lines, before the data plan
        line = "distill trains on 1 device (the CPU; no GPU found), in float32, the teacher's "
        assert log.index(line + "targets online") < log.index("Data: ")
    cache = [p.name for p in (out / "cache").glob("teacher-*.npy")]
    assert not [n for n in cache if n.startswith("teacher-train-")], cache
    assert [n for n in cache if n.startswith("teacher-val-")], cache
    # it learns: the loss on the teacher's targets falls epoch after epoch (3 epochs of a
    # MobileNet on 420 images are too few for its validation accuracy to leave chance)
    loss = stage["history"]["loss"]
    assert loss[2] < loss[1] < loss[0], loss


def test_compress_refuses_an_online_onnx_teacher_before_any_work(tmp_path, digits_npz):  # noqa: F811
    onnx = tmp_path / "teacher.onnx"
    onnx.write_bytes(b"\x08\x07")  # refused on its suffix and the setting, before it is read
    r = compress(onnx, digits_npz, tmp_path / "o", "distill", "distill.teacher=online")
    assert r.exit_code == 2, r.output
    assert "distill.teacher=online runs the teacher inside every training step" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing written


def test_multi_worker_needs_tf_config(tmp_path, monkeypatch, teacher_keras3, digits_npz):  # noqa: F811
    """distribute=multi_worker without TF_CONFIG: one line, exit 2, before any work."""
    monkeypatch.delenv("TF_CONFIG", raising=False)
    r = compress(teacher_keras3, digits_npz, tmp_path / "mw", "distill",
                 "distill.distribute=multi_worker")  # fmt: skip
    assert r.exit_code == 2, r.output
    assert "TF_CONFIG" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "mw").exists()
