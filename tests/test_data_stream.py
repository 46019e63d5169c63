"""Streamed data (edgekit.data.stream): image folders and TFRecords read batch by batch give the
same pixels, splits, batches, training and evaluation as the same data decoded into memory; the
fingerprint follows the files; bad input is one line. Real PIL, TensorFlow, tf_keras and LiteRT;
tiny 16x16 images."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.data import Preprocessing, load_dataset
from edgekit.data.stream import (
    StreamedImages,
    attach_decode_caches,
    choose,
    parse_example,
    require_free_space,
)
from edgekit.errors import DataError, DiskFull

CLASSES = ("apple", "kiwi", "plum")


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 16x16 RGB squares whose colour tells the class."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(CLASSES)
    base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]], np.float32)[y]
    x = base[:, None, None, :] + rng.normal(0, 30, size=(n, 16, 16, 3))
    return np.clip(x, 0, 255).astype(np.uint8), y


def write_folder(root: Path, n: int = 48, seed: int = 0) -> Path:
    from PIL import Image

    x, y = _images(n, seed)
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        d = root / CLASSES[label]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"img{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("stream") / "fruit")


def test_streamed_and_cached_hold_the_same_images_splits_and_batches(folder):
    cached = load_dataset(folder, stream="off")
    streamed = load_dataset(folder, stream="on")
    assert not cached.streamed and streamed.streamed
    assert isinstance(streamed.x, StreamedImages)
    assert streamed.labels == cached.labels == list(CLASSES)
    np.testing.assert_array_equal(streamed.y, cached.y)
    assert streamed.image_shape == cached.image_shape == (16, 16, 3)
    np.testing.assert_array_equal(streamed.x[:], cached.x)
    a, b = cached.split(seed=3), streamed.split(seed=3)  # splits from the file list and labels
    for name in a:
        assert b[name].streamed
        np.testing.assert_array_equal(np.asarray(b[name].x), a[name].x)
        np.testing.assert_array_equal(b[name].y, a[name].y)
    pre = Preprocessing(mean=10.0, std=50.0)
    for (xa, ya), (xb, yb) in zip(
        a["train"].batches(7, pre), b["train"].batches(7, pre), strict=True
    ):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_auto_streams_by_estimated_size_and_says_why():
    small = choose(1000, (32, 32, 3), 10, "auto")
    big = choose(50_000, (224, 224, 3), 10, "auto")
    assert not small.streamed and big.streamed
    assert "in memory it would take 37.6 GB" in big.line() and "data.stream=off" in big.line()
    assert choose(1000, (32, 32, 3), 10, "on").streamed
    assert not choose(50_000, (224, 224, 3), 10, "off").streamed
    with pytest.raises(DataError, match=r"data\.stream"):
        choose(10, (8, 8, 3), 2, "maybe")


def test_spec_option_chooses_streaming(folder):
    assert load_dataset(f"{folder}:stream=on").streamed
    assert not load_dataset(f"{folder}:stream=off").streamed
    with pytest.raises(DataError, match="stream in auto, on, off"):
        load_dataset(f"{folder}:stream=sometimes")


def test_fingerprint_follows_the_files_not_the_folder(folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    fp = load_dataset(folder, stream="on").fingerprint()
    assert load_dataset(copy, stream="on").fingerprint() == fp
    img = copy / "kiwi" / "img001.png"
    from PIL import Image

    a = np.asarray(Image.open(img)).copy()
    a[0, 0] ^= 1
    Image.fromarray(a).save(img)
    assert load_dataset(copy, stream="on").fingerprint()["sha256"] != fp["sha256"]


def test_fingerprint_is_the_same_streamed_or_in_memory(folder, tmp_path):
    """The same files give the same fingerprint whether they stream or were decoded into
    memory, for the whole set, its splits and a resized copy (a resume may switch data.stream);
    arrays without files still hash their pixels."""
    from edgekit.pipeline import check_data_unchanged

    on, off = load_dataset(folder, stream="on"), load_dataset(folder, stream="off")
    assert off.fingerprint() == on.fingerprint()
    split_on, split_off = on.split(seed=3), off.split(seed=3)
    for name in split_on:
        assert split_off[name].fingerprint() == split_on[name].fingerprint(), name
    assert off.resized(8).fingerprint() == on.resized(8).fingerprint()
    assert off.resized(8).fingerprint() != off.fingerprint()
    out = tmp_path / "run"
    out.mkdir()
    check_data_unchanged(out, str(folder), on)
    check_data_unchanged(out, str(folder), off)  # the same files: no complaint
    from edgekit.data import Dataset

    pixels = Dataset(np.asarray(off.x), off.y, off.labels)
    assert pixels.origin is None and pixels.fingerprint() != off.fingerprint()


def _truncated_copy(folder: Path, tmp_path: Path) -> tuple[Path, Path]:
    bad_root = tmp_path / "bad"
    shutil.copytree(folder, bad_root)
    victim = bad_root / "plum" / "img020.png"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # a valid header, the pixels cut off
    return bad_root, victim


def test_corrupt_image_mid_stream_stops_naming_it_or_is_skipped(folder, tmp_path):
    bad_root, victim = _truncated_copy(folder, tmp_path)
    ds = load_dataset(bad_root, stream="on")  # the scan reads headers only: it passes
    with pytest.raises(DataError) as e:
        list(ds.batches(8))
    assert str(victim) in str(e.value) and "data.on_corrupt=skip" in str(e.value)
    assert "\n" not in str(e.value)
    skipping = load_dataset(bad_root, stream="on", on_corrupt="skip")
    got = [(xb, yb) for xb, yb in skipping.batches(8)]
    assert sum(len(xb) for xb, _ in got) == len(skipping) - 1
    assert skipping.x.skipped == [str(victim)]


def test_tfrecord_streams_without_tensorflow_and_matches_tf(tmp_path):
    import io

    import tensorflow as tf
    from PIL import Image

    x, y = _images(20, 1)
    path = tmp_path / "fruit.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        for img, label in zip(x, y, strict=True):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            ex = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "img": tf.train.Feature(
                            bytes_list=tf.train.BytesList(value=[buf.getvalue()])
                        ),
                        "cls": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
                        "w": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5, -2.0])),
                    }
                )
            )
            w.write(ex.SerializeToString())
    rec = next(iter(tf.data.TFRecordDataset(str(path)))).numpy()
    feats = parse_example(rec)
    assert feats["cls"] == [int(y[0])] and feats["w"] == [0.5, -2.0]
    spec = f"{path}:image_key=img,label_key=cls"
    streamed = load_dataset(spec + ",stream=on")
    cached = load_dataset(spec + ",stream=off")
    assert streamed.streamed and not cached.streamed
    np.testing.assert_array_equal(cached.x, x)
    np.testing.assert_array_equal(streamed.x[:], x)
    np.testing.assert_array_equal(streamed.y, y)
    with pytest.raises(DataError) as e:
        load_dataset(f"{path}:image_key=image")
    assert "no bytes feature 'image'" in str(e.value) and "['cls', 'img', 'w']" in str(e.value)


def test_disk_too_small_says_how_much_is_needed(tmp_path):
    with pytest.raises(DiskFull) as e:
        require_free_space(tmp_path, 10**18, "the teacher's cached outputs")
    assert str(e.value).startswith(f"No space left in {tmp_path} for the teacher's cached")
    assert "1000000.0 TB needed" in str(e.value) and " free, " in str(e.value)
    require_free_space(tmp_path / "not" / "yet", 1, "x")  # the nearest existing folder's disk


def _tiny_model(seed: int = 0):
    from edgekit.keras_compat import tf_keras

    tfk = tf_keras()
    tfk.utils.set_random_seed(seed)
    inp = tfk.Input((16, 16, 3))
    h = tfk.layers.Conv2D(4, 3, activation="relu")(inp)
    h = tfk.layers.GlobalAveragePooling2D()(h)
    return tfk.Model(inp, tfk.layers.Dense(3)(h))


def test_training_streamed_equals_training_in_memory(folder):
    """tf.data over the files (parallel decode, prefetch) sees the same batches in the same
    order as the in-memory pipeline, so the same seed trains the same weights."""
    from edgekit.stages import training

    pre = Preprocessing()
    histories, weights, caches = [], [], []
    for stream in ("off", "on", "on+decode_cache"):
        ds = load_dataset(folder, stream=stream.split("+")[0])
        if stream.endswith("decode_cache"):
            caches = attach_decode_caches(folder.parent / "cache", [ds.x], "on")
        x = ds.x.with_preprocessing(pre) if ds.streamed else pre.apply(ds.x)
        model = _tiny_model()
        h = training.fit(model, x, ds.y, x_val=x, y_val=ds.y, epochs=2, batch_size=16, seed=1)
        histories.append(h)
        weights.append(model.get_weights())
    # the second epoch (and both validations after the first) read the cache back, not the files
    assert caches[0].filled.all() and caches[0].hits >= 3 * len(ds)
    caches[0].close()
    assert not caches[0].path.exists()
    assert histories[0] == histories[1] == histories[2]
    for a, b, c in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_a_stream_without_preprocessing_trains_on_its_raw_pixels(folder):
    """A stream without preprocessing attached trains on its pixels as they are (0-255), like
    the same pixels in memory as float32."""
    from edgekit.stages import training

    on, off = load_dataset(folder, stream="on"), load_dataset(folder, stream="off")
    streamed = training.fit(_tiny_model(), on.x, on.y, epochs=1, batch_size=16, seed=1)
    memory = np.asarray(off.x, np.float32)
    in_memory = training.fit(_tiny_model(), memory, off.y, epochs=1, batch_size=16, seed=1)
    assert streamed == in_memory


def test_decode_cache_is_shared_by_subsets_and_views_and_skips_corrupt_images(folder, tmp_path):
    """One cache per stream, shared by its splits and views (raw pixels, before the view and
    the preprocessing), none for a resized copy; a corrupt image is never cached; off and a
    bad mode."""
    bad_root, victim = _truncated_copy(folder, tmp_path)
    ds = load_dataset(bad_root, stream="on", on_corrupt="skip")
    parts = ds.split({"train": 0.75, "eval": 0.25}, seed=0)
    assert attach_decode_caches(tmp_path / "c", [p.x for p in parts.values()], "off") == []
    with pytest.raises(DataError, match=r"data\.decode_cache"):
        attach_decode_caches(tmp_path / "c", [ds.x], "sometimes")
    caches = attach_decode_caches(tmp_path / "c", [ds.x, *(p.x for p in parts.values())], "on")
    assert len(caches) == 1 and caches[0].shape == (48, 16, 16, 3)
    cache = caches[0]
    mirrored = parts["train"].x.with_view((True, 1))
    first, ok1 = mirrored.decode_positions(np.arange(len(mirrored)))
    again, ok2 = mirrored.decode_positions(np.arange(len(mirrored)))
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(ok1, ok2)
    assert cache.hits == int(ok1.sum()) and int(cache.filled.sum()) == int(ok1.sum())
    assert ds.x.skipped == [str(victim)]  # decoded twice, counted once, never cached
    plain = parts["train"].x.decode_positions(np.arange(len(mirrored)))[0]
    np.testing.assert_array_equal(np.rot90(plain[:, :, ::-1], 1, axes=(1, 2)), first)
    assert ds.x.resized((8, 8)).decoded.cache is None
    assert attach_decode_caches(tmp_path / "c", [ds.x], "on") == []  # already has one
    cache.close()
    cache.close()
    assert not cache.path.exists()


def test_training_stops_on_a_corrupt_image_with_one_line(folder, tmp_path):
    from edgekit.stages import training

    bad_root, victim = _truncated_copy(folder, tmp_path)
    ds = load_dataset(bad_root, stream="on")
    x = ds.x.with_preprocessing(Preprocessing())
    with pytest.raises(DataError) as e:
        training.fit(_tiny_model(), x, ds.y, epochs=1, batch_size=16)
    assert str(victim) in str(e.value)
    skipping = load_dataset(bad_root, stream="on", on_corrupt="skip")
    x = skipping.x.with_preprocessing(Preprocessing())
    h = training.fit(_tiny_model(), x, skipping.y, epochs=1, batch_size=16)
    assert np.isfinite(h["loss"][0]) and skipping.x.skipped == [str(victim)]


def test_teacher_cache_is_a_memory_map_written_once(folder, tmp_path):
    from edgekit.artifacts import ModelArtifact
    from edgekit.keras_compat import save_model, wrap
    from edgekit.stages.context import RunContext

    path = save_model(_tiny_model(), tmp_path / "teacher.keras")
    loaded = wrap(_tiny_model())
    ds = load_dataset(folder, stream="on")
    ctx = RunContext(
        recipe=None,
        out=tmp_path / "run",
        splits={"train": ds},
        preprocessing=Preprocessing(),
        labels=ds.labels,
        teacher=ModelArtifact.from_path(path),
        predict_teacher=lambda xb: loaded.predict(xb),
    )
    logits = ctx.teacher_logits("train")
    assert isinstance(logits, np.memmap) and logits.shape == (48, 3)
    np.testing.assert_allclose(logits, loaded.predict(ds.x[:] / np.float32(255)), atol=1e-5)
    files = list((tmp_path / "run" / "cache").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy"  # no temporary left
    stamp = files[0].stat().st_mtime_ns
    again = ctx.teacher_logits("train")  # reused, not recomputed
    assert files[0].stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again, logits)
    view = ctx.teacher_logits("train", (True, 0))  # a mirrored view: its own file
    mirrored = loaded.predict(np.ascontiguousarray(ds.x[:][:, :, ::-1]) / np.float32(255))
    np.testing.assert_allclose(view, mirrored, atol=1e-5)


@pytest.fixture(scope="module")
def tflite_model(tmp_path_factory) -> Path:
    import tensorflow as tf

    model = _tiny_model(2)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    path = tmp_path_factory.mktemp("tflite") / "tiny.tflite"
    path.write_bytes(conv.convert())
    return path


def test_eval_of_a_tflite_streams_without_tensorflow(folder, tflite_model):
    """`edgekit eval` on a streamed folder: the same figures as in memory, in a process that
    never imports TensorFlow."""
    code = (
        "import json, sys\n"
        "from edgekit.api import evaluate\n"
        "out = {}\n"
        "for s in ('on', 'off'):\n"
        f"    r = evaluate({str(tflite_model)!r}, {str(folder)!r} + ':stream=' + s)\n"
        "    out[s] = {k: v for k, v in r.items() if k not in ('data', 'seconds')}\n"
        "out['tf'] = 'tensorflow' in sys.modules\n"
        "print(json.dumps(out))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "EDGEKIT_QUIET": "1",
    }
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["tf"] is False
    assert out["on"] == out["off"]
    assert out["on"]["count"] == 48 and out["on"]["top1"] is not None


def test_compress_refuses_files_changed_since_the_run_started(folder, tmp_path):
    """A resumed run whose image folder changed stops before any stage, one line, exit 2; the
    data plan comes first."""
    from click.testing import CliRunner

    from edgekit.cli import cli
    from edgekit.keras_compat import save_model
    from edgekit.pipeline import check_data_unchanged

    data = tmp_path / "fruit"
    shutil.copytree(folder, data)
    out = tmp_path / "run"
    out.mkdir()
    check_data_unchanged(out, str(data), load_dataset(data, stream="on"))  # the first run's record
    check_data_unchanged(out, str(data), load_dataset(data, stream="on"))  # same files: fine
    (data / "kiwi" / "img004.png").unlink()
    teacher = save_model(_tiny_model(), tmp_path / "teacher.keras")
    args = ["compress", str(teacher), "--recipe", "distill", "--data", f"{data}:stream=on"]
    r = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert r.exit_code == 2, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith(f"error: The data at {data} changed since the run in {out} started")
    assert "48 images" in last and "47 with" in last and "Traceback" not in r.output
    assert "16x16x3; streamed (data.stream=on)" in r.output


def test_prune_and_qat_train_on_a_stream(folder):
    """prune and QAT read a streamed folder through tf.data (that the streamed pipeline gives
    the in-memory batches is test_training_streamed_equals_training_in_memory)."""
    from edgekit.stages.prune import prune
    from edgekit.stages.qat import qat

    pre = Preprocessing()
    ds = load_dataset(folder, stream="on")
    xs = ds.x.with_preprocessing(pre)
    kw = {"epochs": 1, "batch_size": 16, "target_sparsity": 0.5}
    pruned = prune(_tiny_model(), xs, ds.y, x_val=xs, y_val=ds.y, **kw)
    assert 0.4 <= pruned.overall_sparsity <= 0.6 and len(pruned.history["loss"]) == 1
    q = qat(_tiny_model(), xs, ds.y, x_val=xs, y_val=ds.y, epochs=1, batch_size=16)
    assert len(q.history["loss"]) == 1 and q.annotated_layers
    assert np.isfinite(q.history["val_loss"]).all()


def test_baseline_and_check_leave_out_the_same_corrupt_image(folder, tflite_model, tmp_path):
    """With on_corrupt=skip a baseline records the image it left out and a check on the same
    files leaves out the same one, so the two still pair image by image (47 of 48); a baseline
    that left out other images is refused in one line."""
    from edgekit import api
    from edgekit.errors import BaselineError

    bad_root, victim = _truncated_copy(folder, tmp_path)
    spec = f"{bad_root}:stream=on,on_corrupt=skip"
    base = tmp_path / "baseline.json"
    api.create_baseline(tflite_model, spec, base, latency=False)
    doc = json.loads(base.read_text())
    assert doc["data"]["count"] == 48 and doc["data"]["skipped"] == [str(victim)]
    report = api.check(tflite_model, base, data=spec, latency=False)
    assert report["verdict"] == "pass"
    acc = next(c for c in report["criteria"] if c["name"] == "accuracy")
    assert "of 47" in acc["message"]
    doc["data"]["skipped"] = []
    # the same 47 predictions now claim to cover all 48 images
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    with pytest.raises(BaselineError, match="damaged"):
        api.check(tflite_model, tampered, data=spec, latency=False)
