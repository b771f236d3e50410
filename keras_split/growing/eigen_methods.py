"""Runs one eigen-estimation method (exact, lobpcg or fast) on a GrowingModel."""

import functools

import tensorflow as tf

from keras_split.data import data_utils
from keras_split.estimate import exact, lobpcg, rmsprop
from keras_split.estimate.eigenpairs import warn_unconverged
from keras_split.growing.compiled_loss import check_labels
from keras_split.select.noise import layer_noise_floor


def run_method(model, method, data, eval_data, *, layers, batch_size, eigen_epochs,
               eigen_tol, learning_rate, seed, max_bytes, verbose, reach=None):
    """Minimum eigenpairs of ``model``'s splittable neurons by ``method``.

    Args:
        model: a compiled :class:`~keras_split.GrowingModel`.
        method: ``"exact"``, ``"lobpcg"`` or ``"fast"`` (already validated).
        data, eval_data: batched datasets (``eval_data`` may be None).
        layers, batch_size, eigen_epochs, eigen_tol, learning_rate, seed,
        max_bytes, verbose, reach: as in
            :meth:`keras_split.GrowingModel.splitting_eigenpairs`.

    Returns:
        ``{layer_name: Eigenpairs}`` (a LayerEigenpairs).

    Raises:
        ValueError: for data that does not fit the model or its loss (the first
            batch is then checked eagerly, so that the message says where).

    Example:
        >>> eig = run_method(model, "exact", data, None, layers=None, batch_size=32,
        ...                  eigen_epochs=3, eigen_tol=0.1, learning_rate=0.01, seed=0,
        ...                  max_bytes=2 ** 30, verbose=0)
    """
    graph, loss_fn = model.channel_graph, model.splitting_loss()
    try:
        if method == "exact":
            return exact.exact_eigenpairs(graph, loss_fn, data, layers=layers,
                                          batch_size=batch_size, max_bytes=max_bytes,
                                          verbose=verbose)
        options = dict(layers=layers, epochs=eigen_epochs, batch_size=batch_size,
                       eval_data=eval_data, seed=seed, verbose=verbose,
                       strategy=model.distribute_strategy)
        if method == "lobpcg":
            eig = lobpcg.lobpcg_eigenpairs(graph, loss_fn, data, tol=eigen_tol,
                                           floor=functools.partial(layer_noise_floor, graph),
                                           reach=reach,
                                           **options)
        else:
            eig = rmsprop.fast_eigenpairs(graph, loss_fn, data, learning_rate=learning_rate,
                                          **options)
    except (ValueError, TypeError, tf.errors.InvalidArgumentError):
        # Data that does not fit the model or its loss fails somewhere in the traced
        # products; an eager forward pass on the first batch says where, clearly. It
        # runs only on failure: it costs a tenth of a growth stage.
        check_labels(model, data_utils.as_dataset(data, batch_size))
        raise
    warn_unconverged(eig, method)
    return eig
