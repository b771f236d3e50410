"""Turns the ``data`` argument of the splitting API into batches."""

import numpy as np
import tensorflow as tf


def as_dataset(data, batch_size=32, name="data"):
    """A batched ``tf.data.Dataset`` of ``(x, y)`` or ``(x, y, sample_weight)``.

    Args:
        data: a batched ``tf.data.Dataset``, or a tuple ``(x, y)`` /
            ``(x, y, sample_weight)`` of arrays.
        batch_size: batch size for array input.
        name: the argument name, for error messages.

    Returns:
        A ``tf.data.Dataset``.

    Raises:
        ValueError: for another type, mismatched lengths or empty data.
    """
    if isinstance(data, tf.data.Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        lengths = {len(a) for a in tf.nest.flatten(data)}
        if len(lengths) != 1:
            raise ValueError(f"{name}'s arrays must have the same length (one entry per "
                             f"example). Received: {name} with lengths "
                             f"{[len(a) for a in tf.nest.flatten(data)]}")
        if lengths == {0}:
            raise ValueError(f"{name} is empty.")
        return tf.data.Dataset.from_tensor_slices(tuple(data)).batch(int(batch_size))
    raise ValueError(
        f"{name} must be a tf.data.Dataset of (x, y) batches or an (x, y) tuple "
        f"of arrays, got {type(data).__name__}."
    )


def unpack(batch):
    """``(x, y, sample_weight)`` from a batch element (sample_weight may be None)."""
    if isinstance(batch, (tuple, list)):
        if len(batch) == 2:
            return batch[0], batch[1], None
        if len(batch) == 3:
            return tuple(batch)
    raise ValueError(
        "Each batch must be (x, y) or (x, y, sample_weight); got "
        f"{type(batch).__name__}."
    )


def fits_input(expected, shape):
    """Whether a batch of ``shape`` fits a model input of ``expected`` shape (batch first;
    None dimensions of ``expected`` take any size).

    Example:
        >>> fits_input((None, 32, 32, 3), (8, 32, 32, 3))
        True
    """
    expected, shape = tuple(expected), tuple(shape)
    return len(shape) == len(expected) and all(
        e is None or e == g for e, g in zip(expected[1:], shape[1:]))


def batch_size_of(x):
    return tf.shape(tf.nest.flatten(x)[0])[0]


def nbytes(structure):
    """The bytes of every tensor in a (nested) batch."""
    return sum(int(np.prod(t.shape)) * t.dtype.size for t in tf.nest.flatten(structure))
