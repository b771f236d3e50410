"""`recalibrate_batchnorm`: BatchNormalization moving statistics re-estimated from data.

Right after a split, or a few epochs into a run, the moving statistics of a
BatchNormalization layer (an exponential average with momentum 0.99 by default)
still describe the weights of many steps ago, and a model evaluated with them
can score near chance although its training-mode outputs are good. Estimating
them again as the plain average of the batch statistics over some training
images (what ``torch.optim.swa_utils.update_bn`` does) makes the accuracy of a
stage measure the weights it has.
"""

import keras
import numpy as np
import tensorflow as tf


def recalibrate_batchnorm(model, x, batch_size=256, max_batches=None):
    """Sets every BatchNormalization layer's moving mean and variance to the average of
    its batch statistics over ``x`` (in place).

    Every batch runs through the model in training mode, layer after layer, so that
    each layer's statistics are those of the inputs it gets from the layers before
    it with their own batch statistics. Nothing else changes: the trainable weights
    and the layers' momentum are as before (dropout does run, in training mode,
    without any effect on the weights).

    Args:
        model: a ``keras.Model`` (a GrowingModel included).
        x: input images (an array), or a batched ``tf.data.Dataset`` of inputs or
            of ``(x, y)`` pairs.
        batch_size: for array input.
        max_batches: use at most this many batches (None: all).

    Returns:
        The number of BatchNormalization layers recalibrated.

    Raises:
        ValueError: for empty data.

    Example:
        >>> recalibrate_batchnorm(stage_model, x_train[:2048])
        >>> stage_model.evaluate(x_test, y_test)
    """
    layers = [layer for layer in _all_layers(model)
              if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return 0
    if isinstance(x, tf.data.Dataset):
        dataset = x
    else:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError("batch_size must be a positive integer. "
                             f"Received: batch_size={batch_size!r}")
        dataset = tf.data.Dataset.from_tensor_slices(np.asarray(x)).batch(int(batch_size))
    momentum = [layer.momentum for layer in layers]
    seen = 0
    try:
        for batch in dataset:
            if max_batches is not None and seen >= max_batches:
                break
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            seen += 1
            # The k-th batch gets weight 1/k: the moving statistics become the mean.
            for layer in layers:
                layer.momentum = (seen - 1) / seen
            model(inputs, training=True)
    finally:
        for layer, m in zip(layers, momentum):
            layer.momentum = m
    if seen == 0:
        raise ValueError("recalibrate_batchnorm: x holds no batch.")
    return len(layers)


def _all_layers(model):
    """Every layer of ``model``, nested models included."""
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(_all_layers(layer))
    return out
