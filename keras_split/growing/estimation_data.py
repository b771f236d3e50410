"""The batches a growth stage estimates on and measures the loss on, fixed for the stage."""

import logging

import keras
import tensorflow as tf

from keras_split.data import data_utils

logger = logging.getLogger(__name__)

# Estimation batches grow reads and caches (at most; see fixed_batches).
MAX_CACHED_BATCHES = 200
MAX_CACHED_BYTES = 1 << 30
# The fewest examples a growth stage estimates on (see check_examples).
MIN_EXAMPLES = 2


def split_holdout(dataset, fraction=0.2, max_batches=20):
    """``(estimation, held_out)``: the last ``fraction`` of batches (at most ``max_batches``).

    The held-out batches are read once and cached, so that the eigenvalues and
    the loss before and after the split are measured on the same examples even
    when ``dataset`` reshuffles every epoch (with reshuffling, those examples
    may also appear in other epochs' estimation batches: pass ``eval_data`` to
    ``grow`` for a strict hold-out). With fewer than 5 batches (or an unknown
    length) both are the whole dataset.
    """
    n = int(dataset.cardinality())
    if n < 5:
        return dataset, dataset
    k = min(max(1, int(round(n * fraction))), max_batches)
    held_out = dataset.skip(n - k).cache()
    for _ in held_out:
        pass
    return dataset.take(n - k), held_out


def fixed_batches(dataset, max_batches=MAX_CACHED_BATCHES, max_bytes=MAX_CACHED_BYTES):
    """The first batches of ``dataset``, read once and cached, so every pass sees them.

    Eigen estimation needs the same operator ``S_D`` on every pass (LOBPCG) and
    the same examples before and after a split (the loss guard), while a training
    pipeline reshuffles and augments on every pass and may be of unknown or
    ImageNet length. So ``grow`` takes the first ``max_batches`` batches, fewer
    when they would hold more than ``max_bytes`` (measured on the first batch),
    and caches them in memory; a log line says what was taken when that is
    less than the whole dataset.

    Args:
        dataset: a batched ``tf.data.Dataset``.
        max_batches: at most this many batches.
        max_bytes: at most about this many bytes of cached tensors.

    Returns:
        A dataset of known cardinality that yields the same batches on every pass.

    Raises:
        ValueError: if ``dataset`` yields no batch.

    Example:
        >>> estimate_on = fixed_batches(train_ds)   # a reshuffling pipeline
    """
    first = next(iter(dataset.take(1)), None)
    if first is None:
        raise ValueError("The data is empty: no batch to estimate eigenpairs from.")
    per_batch = data_utils.nbytes(first)
    limit = int(max(1, min(max_batches, max_bytes // max(per_batch, 1))))
    n = int(dataset.cardinality())
    cached = dataset.take(limit).cache()
    count = sum(1 for _ in cached)
    if n < 0 or n > count:
        logger.info("Eigen estimation takes the first %d batches of the data (%s in all; at "
                    "most %d batches and %.0f MiB are cached).", count,
                    n if n >= 0 else "an unknown number", max_batches, max_bytes / 2 ** 20)
    return cached.apply(tf.data.experimental.assert_cardinality(count))


def check_examples(dataset, name="x", minimum=MIN_EXAMPLES):
    """Refuses batches with fewer than ``minimum`` examples in all (reading only as many
    batches as it takes to count ``minimum``).

    The splitting matrices are averages over the examples, and with fewer than 5
    batches (see :func:`split_holdout`) the held-out loss and eigenvalues are
    measured on those same examples: from a single example, the stage would
    split for that example alone and check the split on it.

    Args:
        dataset: batches of ``(x, y)`` or ``(x, y, sample_weight)``.
        name: the argument the data came from, for the message.
        minimum: the fewest examples accepted.

    Raises:
        ValueError: naming ``name`` and its example count, below ``minimum``.
    """
    n = 0
    for batch in dataset:
        n += batch_examples(batch)
        if n >= minimum:
            return
    raise ValueError(
        f"{name} must hold at least {minimum} examples to estimate the splitting matrices "
        f"on (with fewer than 5 batches, the held-out loss is measured on the same "
        f"examples). Received: {name} with {n} example{'s' if n != 1 else ''}")


def batch_examples(batch):
    """The number of examples in ``batch``, an ``(x, y)`` or ``(x, y, sample_weight)``."""
    return int(tf.shape(keras.tree.flatten(data_utils.unpack(batch)[0])[0])[0])
