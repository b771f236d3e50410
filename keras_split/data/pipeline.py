"""The tail every input pipeline shares: shuffle, map, batch, cache, prefetch."""

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")


def finish(ds, preprocess, training, batch_size, shuffle_buffer, cache, deterministic, seed,
           skip_corrupt, drop_remainder=None, repeat=False):
    """Decodes/augments with ``preprocess`` in parallel, then batches and prefetches.

    ``ds`` yields ``(encoded_or_image, label)``; ``augment(image, label, rng)``
    gets a stateless seed ``rng`` (int64 ``[2]``) per element from a stream seeded
    by ``seed``, so that a seeded, deterministic pipeline repeats exactly. ``cache=True`` caches the decoded,
    un-augmented examples in memory (``cache="path"`` on disk) before augmentation.
    Corrupt images are dropped when ``skip_corrupt`` (TensorFlow logs each);
    otherwise they raise ``InvalidArgumentError`` when reached.
    """
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    ds = ds.with_options(options)
    decode, augment = preprocess
    ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if skip_corrupt:
        ds = ds.ignore_errors(log_warning=True)
    if cache:
        ds = ds.cache() if cache is True else ds.cache(str(cache))
    if training and shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    rngs = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)
    ds = tf.data.Dataset.zip((ds, rngs)).map(
        lambda example, rng: augment(*example, rng),
        num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    ds = ds.batch(batch_size, drop_remainder=training if drop_remainder is None else drop_remainder,
                  num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return ds.prefetch(AUTOTUNE)
