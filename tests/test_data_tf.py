"""edgekit.data readers that need TensorFlow: .tfrecord files and tf.data sources."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from edgekit.data import from_tf_data, load_dataset, load_tfrecord
from edgekit.errors import DataError

tf = pytest.importorskip("tensorflow")


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _write(path, images, labels=None, image_key="image", label_key="label"):
    with tf.io.TFRecordWriter(str(path)) as w:
        for i, img in enumerate(images):
            feats = {image_key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[_png(img)]))}
            if labels is not None:
                feats[label_key] = tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[int(labels[i])])
                )
            ex = tf.train.Example(features=tf.train.Features(feature=feats))
            w.write(ex.SerializeToString())


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (6, 8, 10, 3), dtype=np.uint8)


def test_tfrecord_roundtrip(tmp_path, images):
    _write(tmp_path / "d.tfrecord", images, np.arange(6) % 3)
    ds = load_dataset(tmp_path / "d.tfrecord")
    assert np.array_equal(ds.x, images) and ds.y.tolist() == [0, 1, 2, 0, 1, 2]
    assert ds.labels == ["0", "1", "2"] and ds.name == "d"
    assert load_dataset(tmp_path / "d.tfrecord", image_size=4).image_shape == (4, 4, 3)


def test_tfrecord_custom_keys_and_unlabeled(tmp_path, images):
    _write(tmp_path / "k.tfrecord", images, np.arange(6) % 2, image_key="img", label_key="cls")
    ds = load_dataset(f"{tmp_path / 'k.tfrecord'}:image_key=img,label_key=cls")
    assert ds.y.tolist() == [0, 1, 0, 1, 0, 1]
    with pytest.raises(DataError, match="image_key=NAME"):
        load_dataset(tmp_path / "k.tfrecord")
    with pytest.raises(DataError, match="Unknown option 'shuffle'"):
        load_dataset(f"{tmp_path / 'k.tfrecord'}:shuffle=1")
    _write(tmp_path / "u.tfrecord", images)
    assert not load_dataset(tmp_path / "u.tfrecord").labeled


def test_tfrecord_bad_files(tmp_path, images):
    (tmp_path / "bad.tfrecord").write_bytes(b"\x00" * 40)
    with pytest.raises(DataError, match="TFRecord"):
        load_dataset(tmp_path / "bad.tfrecord")
    _write(tmp_path / "range.tfrecord", images[:2], [0, 5])
    # Label 5 is outside the two class names given ...
    with pytest.raises(DataError, match="outside the class range"):
        load_tfrecord(tmp_path / "range.tfrecord", labels=["a", "b"])
    # ... and without names the classes are 0..5.
    assert load_dataset(tmp_path / "range.tfrecord").num_classes == 6


def test_from_tf_data_batched_unbatched_dict_and_limit(images):
    y = np.arange(6) % 2
    flat = tf.data.Dataset.from_tensor_slices((images, y))
    a = from_tf_data(flat)
    b = from_tf_data(flat.batch(4), labels=["even", "odd"])
    assert np.array_equal(a.x, images) and np.array_equal(b.x, images)
    assert b.labels == ["even", "odd"] and np.array_equal(b.y, y)
    c = from_tf_data(tf.data.Dataset.from_tensor_slices({"image": images}).batch(4), limit=5)
    assert len(c) == 5 and not c.labeled
    d = from_tf_data(tf.data.Dataset.from_tensor_slices(images.astype(np.float32)), limit=2)
    assert len(d) == 2 and d.x.dtype == np.float32
    with pytest.raises(DataError, match="no examples"):
        from_tf_data(flat.take(0))
    with pytest.raises(DataError, match=r"\[0, 255\]"):
        from_tf_data(tf.data.Dataset.from_tensor_slices(images.astype(np.float32) - 300))
    with pytest.raises(DataError, match=r"tf\.data\.Dataset"):
        from_tf_data(images)


def test_from_tf_data_streams_through_a_spilled_tfrecord(images, tmp_path, monkeypatch):
    """stream="on" writes the pipeline once to a TFRecord of PNGs and streams from it: the same
    pixels and labels (one-hot too), grey images, a limit; "auto" spills once the in-memory limit
    is passed, keeping what it held; fractional pixels cannot spill."""
    import edgekit.data.stream as stream_mod

    y = np.arange(6) % 2
    flat = tf.data.Dataset.from_tensor_slices((images, y))
    on = from_tf_data(flat.batch(4), labels=["even", "odd"], stream="on", spill_dir=tmp_path)
    assert on.streamed and (tmp_path / "tf.data.tfrecord").is_file()
    np.testing.assert_array_equal(on.x[:], images)
    assert np.array_equal(on.y, y) and on.labels == ["even", "odd"] and on.name == "tf.data"
    again = from_tf_data(flat.batch(4), stream="on", spill_dir=tmp_path / "2", name="tf.data")
    assert again.fingerprint() == on.fingerprint()  # the same examples, the same fingerprint
    one_hot = tf.data.Dataset.from_tensor_slices((images, np.eye(2)[y]))
    assert np.array_equal(from_tf_data(one_hot, stream="on", spill_dir=tmp_path / "h").y, y)
    grey = images[..., :1].copy()
    g = from_tf_data(tf.data.Dataset.from_tensor_slices(grey), limit=4, stream="on",
                     spill_dir=tmp_path / "g")  # fmt: skip
    assert g.streamed and not g.labeled and g.image_shape[-1] == 1
    np.testing.assert_array_equal(g.x[:], grey[:4])
    monkeypatch.setattr(stream_mod, "CACHE_LIMIT_BYTES", images[0].size * 5 * 3)
    auto = from_tf_data(flat.batch(2), stream="auto", spill_dir=tmp_path / "a")
    assert auto.streamed and np.array_equal(auto.y, y)
    np.testing.assert_array_equal(auto.x[:], images)
    with pytest.raises(DataError, match="stream='off'"):
        frac = tf.data.Dataset.from_tensor_slices(images.astype(np.float32) + 0.5)
        from_tf_data(frac, stream="on", spill_dir=tmp_path / "f")
