"""CIFAR-10/100 input pipelines: the folder layout or the original python/binary archives."""

import logging
import os
import pickle
import tarfile

import numpy as np
import tensorflow as tf

from keras_split.data import pipeline, preprocessing
from keras_split.data.image_folder import ImageFolder

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")


def _python_batches(path, num_classes, split):
    """``(images uint8 [n, 32, 32, 3], labels)`` from the python pickles (dir or .tar.gz)."""
    if num_classes == 10:
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        key = b"labels"
    else:
        names, key = [split], b"fine_labels"
    blobs = {}
    if os.path.isfile(path):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                base = os.path.basename(member.name)
                if base in names:
                    blobs[base] = pickle.load(tar.extractfile(member), encoding="bytes")
    else:
        for name in names:
            file = os.path.join(path, name)
            if os.path.exists(file):
                with open(file, "rb") as f:
                    blobs[name] = pickle.load(f, encoding="bytes")
    missing = [n for n in names if n not in blobs]
    if missing:
        raise ValueError(f"'{path}' lacks the CIFAR-{num_classes} python batches {missing}.")
    data = np.concatenate([blobs[n][b"data"] for n in names])
    labels = np.concatenate([np.asarray(blobs[n][key]) for n in names]).astype(np.int64)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _binary_batches(path, num_classes, split):
    """``(images, labels)`` from the binary version's ``*.bin`` files."""
    if num_classes == 10:
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
        label_bytes = 1
    else:
        names, label_bytes = [f"{split}.bin"], 2
    files = [os.path.join(path, n) for n in names]
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise ValueError(f"'{path}' lacks the CIFAR-{num_classes} binary files {missing}.")
    raw = np.concatenate([np.fromfile(f, dtype=np.uint8) for f in files])
    record = label_bytes + 3072
    if raw.size % record:
        raise ValueError(f"CIFAR binary files in '{path}' are truncated or corrupt.")
    raw = raw.reshape(-1, record)
    labels = raw[:, label_bytes - 1].astype(np.int64)  # CIFAR-100: the fine label
    return raw[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar_arrays(path, num_classes=10, split="train"):
    """The arrays of an original CIFAR archive (python dir/tar.gz or binary dir)."""
    if os.path.isdir(path) and any(f.endswith(".bin") for f in os.listdir(path)):
        images, labels = _binary_batches(path, num_classes, split)
    else:
        images, labels = _python_batches(path, num_classes, split)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"CIFAR labels in '{path}' fall outside 0..{num_classes - 1}.")
    return images, labels


def _folder_source(data_dir, training, num_classes, validate):
    """``(dataset of (path, label), decode, class names)`` of a CIFAR folder layout.

    With ``validate``, every file is decoded once first and the corrupt ones are
    dropped (and logged); the listing keeps them in its ``corrupt`` attribute.
    """
    train = ImageFolder(os.path.join(data_dir, "train"))
    listing = train if training else ImageFolder(os.path.join(data_dir, "test"),
                                                 class_names=train.class_names)
    if len(listing.class_names) != num_classes:
        raise ValueError(
            f"'{data_dir}' has {len(listing.class_names)} classes, not {num_classes}.")
    if validate:
        corrupt = listing.find_corrupt()
        if corrupt:
            logger.warning("Skipping %d corrupt images in '%s' (e.g. %s).",
                           len(corrupt), listing.root, corrupt[0])
            listing.drop(corrupt)
        listing.corrupt = corrupt
    ds = tf.data.Dataset.from_tensor_slices((listing.files, listing.labels))
    decode = lambda path, label: (  # noqa: E731
        tf.ensure_shape(preprocessing.decode(tf.io.read_file(path)), [32, 32, 3]), label)
    return ds, decode, listing.class_names


def cifar_dataset(data_dir, split="train", batch_size=128, num_classes=10, shuffle_buffer=50_000,
                  cache=True, deterministic=None, seed=None, validate=True, skip_corrupt=True,
                  repeat=False, drop_remainder=None):
    """A batched CIFAR ``tf.data.Dataset`` of ``(float32 [b, 32, 32, 3], int64 labels)``.

    Training: reflect-pad 4, random 32x32 crop and horizontal flip; both splits
    are normalised with the CIFAR-10 mean and standard deviation.

    Args:
        data_dir: a folder layout (``train/<class>/*.jpg``, ``test/<class>/*.jpg``;
            labels are the sorted class names of ``train``), or the original
            ``cifar-10-batches-py`` / ``cifar-100-python`` directory or ``.tar.gz``,
            or the binary ``cifar-10-batches-bin`` directory.
        split: ``"train"`` or ``"test"``.
        batch_size: examples per batch.
        num_classes: 10 or 100 (for the original archives; checked for folders).
        shuffle_buffer: training shuffle buffer.
        cache: keep decoded images in memory (True) or in a file (a path).
        deterministic, seed, repeat, drop_remainder: as in ``imagenet_dataset``.
        validate: folder layout: decode every file once first, drop the corrupt
            ones and log how many (otherwise ``skip_corrupt`` applies at run time).
        skip_corrupt: drop images that do not decode instead of failing.

    Returns:
        A ``tf.data.Dataset``; its ``class_names`` attribute lists the classes
        (folder layout).

    Raises:
        ValueError: for a missing directory, an empty class folder, class folders
            that differ between train and test, a class count other than
            ``num_classes``, or damaged archives.

    Example:
        >>> train = cifar_dataset("cifar10", "train", batch_size=128)
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    if num_classes not in (10, 100):
        raise ValueError(f"num_classes must be 10 or 100, got {num_classes!r}.")
    pipeline.check_batch_size(batch_size)
    if not os.path.exists(data_dir):
        raise ValueError(f"Data directory '{data_dir}' does not exist.")
    training = split == "train"
    if deterministic is None:
        deterministic = not training
    if os.path.isdir(os.path.join(data_dir, "train")):
        ds, decode, class_names = _folder_source(data_dir, training, num_classes, validate)
    else:
        images, labels = load_cifar_arrays(data_dir, num_classes, split)
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        decode = lambda image, label: (image, label)  # noqa: E731
        class_names = None
    if training:
        augment = lambda image, label, rng: (preprocessing.cifar_train(image, rng), label)  # noqa: E731
    else:
        augment = lambda image, label, rng: (preprocessing.cifar_eval(image), label)  # noqa: E731
    ds = pipeline.finish(ds, (decode, augment), training, batch_size, shuffle_buffer, cache,
                         deterministic, seed, skip_corrupt, drop_remainder, repeat)
    ds.class_names = class_names
    return ds
