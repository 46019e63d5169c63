"""Data sets for edgekit: built-in examples, image folders, .npz, TFRecord and tf.data sources.

numpy only at import time; PIL, scikit-learn and TensorFlow are imported by the loaders that
need them. See docs/data.md.
"""

from edgekit.data.dataset import DEFAULT_SPLIT, Dataset, Preprocessing, from_arrays, resize_images
from edgekit.data.loaders import (
    BUILTIN_DATASETS,
    from_tf_data,
    load_dataset,
    load_image_folder,
    load_npz,
    load_tfrecord,
)
from edgekit.data.shapes import SHAPE_CLASSES

__all__ = [
    "BUILTIN_DATASETS",
    "DEFAULT_SPLIT",
    "SHAPE_CLASSES",
    "Dataset",
    "Preprocessing",
    "from_arrays",
    "from_tf_data",
    "load_dataset",
    "load_image_folder",
    "load_npz",
    "load_tfrecord",
    "resize_images",
]
