"""Telling which dataset a data directory holds."""

import os

from keras_split.data import imagenet


def detect_dataset(data_dir):
    """``"imagenet"`` or ``"cifar10"``: the dataset ``data_dir`` holds, from its layout.

    ImageNet: ``train-*-of-*`` TFRecord shards or a ``val/`` folder. CIFAR: a
    ``train/`` and ``test/`` folder layout, or the original archives
    (``cifar-10-batches-py``, ``cifar-10-batches-bin``, a ``.tar.gz``).

    Args:
        data_dir: the data directory (or archive) of ``keras-split grow``.

    Returns:
        ``"imagenet"`` or ``"cifar10"``.

    Raises:
        ValueError: for a layout that is neither.

    Example:
        >>> detect_dataset("/data/imagenet")
        'imagenet'
    """
    if imagenet.shard_files(data_dir, "train") or os.path.isdir(os.path.join(data_dir, "val")):
        return "imagenet"
    if os.path.isdir(os.path.join(data_dir, "train")) and os.path.isdir(os.path.join(data_dir, "test")):
        return "cifar10"
    if os.path.isdir(os.path.join(data_dir, "cifar-10-batches-py")) or data_dir.endswith(
            ("cifar-10-batches-py", "cifar-10-batches-bin", ".tar.gz")):
        return "cifar10"
    raise ValueError(
        f"Cannot tell the dataset of '{data_dir}': expected ImageNet shards or train/ and "
        "val/ folders, or a CIFAR train/ and test/ folder layout (or pass --dataset).")
