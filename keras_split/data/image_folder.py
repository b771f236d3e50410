"""Listing and validating an image-folder dataset (``SPLIT/<class>/<image>``)."""

import logging
import os

import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


class ImageFolder:
    """The files and labels of one split of a folder-layout dataset.

    Classes are the sub-folder names, sorted; label ``i`` is the ``i``-th class
    of ``class_names`` (pass the training split's names to a test split so that
    the labels agree).

    Args:
        root: the split directory, e.g. ``DATA/train``.
        class_names: the expected classes (default: this split's sub-folders).

    Attributes:
        files: ``np.ndarray`` of paths.
        labels: ``np.ndarray`` of int64 labels.
        class_names: the sorted class names.
        skipped: paths of files whose extension is not an image's (not listed).

    Raises:
        ValueError: for a missing directory, a directory without class folders,
            an empty class folder, or class folders that differ from ``class_names``.

    Example:
        >>> train = ImageFolder("cifar10/train")
        >>> test = ImageFolder("cifar10/test", class_names=train.class_names)
    """

    def __init__(self, root, class_names=None):
        if not os.path.isdir(root):
            raise ValueError(f"Data directory '{root}' does not exist.")
        found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        if not found:
            raise ValueError(f"'{root}' has no class folders (expected {root}/<class>/<image>).")
        if class_names is not None and list(class_names) != found:
            missing = sorted(set(class_names) - set(found))
            extra = sorted(set(found) - set(class_names))
            raise ValueError(
                f"The class folders of '{root}' differ from the training split's: "
                f"missing {missing[:5]}, unexpected {extra[:5]}."
            )
        self.root = root
        self.class_names = found
        files, labels, skipped = [], [], []
        for label, name in enumerate(found):
            folder = os.path.join(root, name)
            entries = sorted(os.listdir(folder))
            images = [e for e in entries if e.lower().endswith(IMAGE_EXTENSIONS)]
            skipped += [os.path.join(folder, e) for e in entries if e not in images]
            if not images:
                raise ValueError(f"Class folder '{folder}' holds no images.")
            files += [os.path.join(folder, e) for e in images]
            labels += [label] * len(images)
        if skipped:
            logger.warning("Skipped %d non-image files in '%s' (e.g. %s).",
                           len(skipped), root, skipped[0])
        self.files = np.array(files)
        self.labels = np.array(labels, dtype=np.int64)
        self.skipped = skipped

    def __len__(self):
        return len(self.files)

    def find_corrupt(self):
        """Paths whose bytes do not decode as an image (one parallel decode pass).

        Returns:
            A list of paths.
        """
        index = tf.data.Dataset.from_tensor_slices((self.files, np.arange(len(self.files))))

        def decode(path, i):
            image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
            return tf.shape(image)[0], i

        ok = index.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
        good = np.zeros(len(self.files), dtype=bool)
        for _, i in ok.as_numpy_iterator():
            good[i] = True
        return self.files[~good].tolist()

    def drop(self, paths):
        """Removes ``paths`` from the listing (e.g. the result of :meth:`find_corrupt`)."""
        keep = ~np.isin(self.files, np.array(paths, dtype=self.files.dtype))
        self.files, self.labels = self.files[keep], self.labels[keep]
