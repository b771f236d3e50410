"""ImageNet input pipelines: TFRecord shards, the folder layout, or tensorflow_datasets."""

import glob
import logging
import os

import tensorflow as tf

from keras_split.data import pipeline, preprocessing
from keras_split.data.image_folder import ImageFolder

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation")
SOURCES = ("auto", "tfrecord", "folder", "tfds")


def shard_files(data_dir, split):
    """The sorted ``<split>-*-of-*`` TFRecord shard paths in ``data_dir`` (maybe none).

    Example:
        >>> shard_files("/data/imagenet", "train")[:1]
        ['/data/imagenet/train-00000-of-01024']
    """
    return sorted(glob.glob(os.path.join(data_dir, f"{split}-*-of-*")))


def _folder(data_dir, split):
    names = ("train",) if split == "train" else ("val", "validation")
    for name in names:
        path = os.path.join(data_dir, name)
        if os.path.isdir(path):
            return path
    return None


def parse_example(serialized):
    """``(encoded image, 1-based label)`` from an ImageNet ``tf.train.Example``."""
    features = tf.io.parse_single_example(serialized, {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    })
    return features["image/encoded"], features["image/class/label"]


def zero_based(label):
    """1-based TFRecord labels to 0-based; a label below 1 raises instead of becoming -1.

    Applied after corrupt images are dropped, so that a wrong label always fails.
    """
    check = tf.debugging.assert_greater_equal(
        label, tf.constant(1, tf.int64),
        message="ImageNet TFRecord labels must be 1-based (image/class/label >= 1)")
    with tf.control_dependencies([check]):
        return label - 1


def imagenet_dataset(data_dir, split="train", batch_size=256, image_size=224, source="auto",
                     shuffle_buffer=10_000, cache=False, deterministic=None, seed=None,
                     skip_corrupt=True, repeat=False, drop_remainder=None, manual_dir=None):
    """A batched ImageNet ``tf.data.Dataset`` of ``(float32 images, int64 labels)``.

    Training: random-resized crop (8-100 % of the area, aspect 3:4-4:3) and
    horizontal flip; evaluation: the central 87.5 % resized to ``image_size``.
    Both are normalised with the ImageNet mean and standard deviation. Decoding
    and augmentation run in parallel, shards are interleaved, and batches are
    prefetched.

    Args:
        data_dir: a directory with ``train-*-of-*`` / ``validation-*-of-*``
            TFRecord shards (``image/encoded``, 1-based ``image/class/label``), or
            with ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` folders, or the
            tensorflow_datasets data dir with ``source="tfds"``.
        split: ``"train"`` or ``"validation"``.
        batch_size: examples per batch.
        image_size: output height and width.
        source: ``"auto"`` (shards, then folders), ``"tfrecord"``, ``"folder"``, ``"tfds"``.
        shuffle_buffer: training shuffle buffer (0: no shuffle).
        cache: cache decoded examples (True: memory, a path: disk).
        deterministic: fixed element order (slower); with ``seed`` the run repeats.
            Default: True for evaluation, False for training.
        seed: shuffle and augmentation seed.
        skip_corrupt: drop images that do not decode (TensorFlow logs each) instead
            of failing.
        repeat: repeat forever.
        drop_remainder: default True for training, False for evaluation.
        manual_dir: ``source="tfds"``: where the ImageNet tar files are.

    Returns:
        A ``tf.data.Dataset``.

    Raises:
        ValueError: for a missing directory or no data of ``split``, bad arguments,
            or validation class folders that differ from the training ones.

    Example:
        >>> train = imagenet_dataset("/data/imagenet", "train", batch_size=128)
    """
    _check_arguments(data_dir, split, batch_size, image_size, source)
    training = split == "train"
    if deterministic is None:
        deterministic = not training
    ds, decode, to_label = _examples(data_dir, split, source, seed, deterministic, manual_dir)

    def augment(image, label, rng):
        if training:
            image = preprocessing.imagenet_train(image, image_size, rng)
        else:
            image = preprocessing.imagenet_eval(image, image_size)
        return image, to_label(label)

    return pipeline.finish(ds, (decode, augment), training, batch_size, shuffle_buffer, cache,
                           deterministic, seed, skip_corrupt, drop_remainder, repeat)


def _check_arguments(data_dir, split, batch_size, image_size, source):
    """Raises ValueError for a bad argument of :func:`imagenet_dataset`, naming it."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}.")
    pipeline.check_batch_size(batch_size)
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}.")
    if not os.path.isdir(data_dir):
        raise ValueError(f"Data directory '{data_dir}' does not exist.")


def _examples(data_dir, split, source, seed, deterministic, manual_dir):
    """``(undecoded examples, decode, to_label)`` of ``split`` from ``source``."""
    if source == "auto":
        source = _detect_source(data_dir, split)
    if source == "tfrecord":
        ds = _tfrecord_examples(data_dir, split, seed, deterministic)
        decode = lambda encoded, label: (preprocessing.decode(encoded), label)  # noqa: E731
        return ds, decode, zero_based
    if source == "folder":
        ds = _folder_examples(data_dir, split, seed)
        decode = lambda path, label: (  # noqa: E731
            preprocessing.decode(tf.io.read_file(path)), label)
        return ds, decode, tf.identity
    ds, decode = _tfds(data_dir, split, manual_dir)
    return ds, decode, tf.identity


def _detect_source(data_dir, split):
    """``"tfrecord"`` or ``"folder"``: what ``data_dir`` holds for ``split`` (shards first)."""
    if shard_files(data_dir, split):
        return "tfrecord"
    if _folder(data_dir, split):
        return "folder"
    raise ValueError(
        f"No ImageNet '{split}' data in '{data_dir}': expected {split}-*-of-* "
        f"TFRecord shards or a {'train' if split == 'train' else 'val'}/<wnid>/ folder."
    )


def _tfrecord_examples(data_dir, split, seed, deterministic):
    """The ``(encoded image, 1-based label)`` examples of the shards, interleaved
    (the shards shuffled for training)."""
    files = shard_files(data_dir, split)
    if not files:
        raise ValueError(f"No '{split}-*-of-*' TFRecord shards in '{data_dir}'.")
    ds = tf.data.Dataset.from_tensor_slices(files)
    if split == "train":
        ds = ds.shuffle(len(files), seed=seed)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(16, len(files)),
                       num_parallel_calls=pipeline.AUTOTUNE, deterministic=deterministic)
    return ds.map(parse_example, num_parallel_calls=pipeline.AUTOTUNE,
                  deterministic=deterministic)


def _folder_examples(data_dir, split, seed):
    """The ``(path, label)`` examples of a folder split (shuffled for training); the
    validation labels follow the training split's class folders."""
    root = _folder(data_dir, split)
    if root is None:
        raise ValueError(f"No ImageNet '{split}' folder in '{data_dir}'.")
    classes = None
    if split != "train" and _folder(data_dir, "train"):
        classes = ImageFolder(_folder(data_dir, "train")).class_names
    listing = ImageFolder(root, class_names=classes)
    ds = tf.data.Dataset.from_tensor_slices((listing.files, listing.labels))
    if split == "train":
        ds = ds.shuffle(len(listing), seed=seed)
    return ds

def _tfds(data_dir, split, manual_dir):
    """tensorflow_datasets' ``imagenet2012`` (prepared from the tar files in ``manual_dir``)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ValueError("source='tfds' needs tensorflow-datasets: pip install tensorflow-datasets") from err
    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.map(lambda ex: (ex["image"], ex["label"]))
    return ds, lambda encoded, label: (preprocessing.decode(encoded), label)
