"""The compiled loss as eigen estimation uses it, and a clear check that data fits it."""

import keras
import tensorflow as tf

from keras_split import compat
from keras_split.data import data_utils


def loss_function(model):
    """``loss_fn(x, y, y_pred, sample_weight)``: ``model``'s compiled loss in inference mode.

    Raises:
        ValueError: when ``model`` is not compiled with a loss.
    """
    if not compat.has_compiled_loss(model):
        raise ValueError(
            "The model must be compiled with a loss before splitting "
            "eigenpairs can be estimated: call model.compile(optimizer, loss)."
        )

    def loss_fn(x, y, y_pred, sample_weight):
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred,
                                 sample_weight=sample_weight, training=False)
        # In a replica context Keras divides the loss by the number of replicas
        # (their gradients are summed); undo it: the splitting matrices are
        # defined with the mean loss of the (per-replica) batch.
        context = tf.distribute.get_replica_context()
        if tf.distribute.has_strategy() and context is not None:
            loss = loss * tf.cast(context.num_replicas_in_sync, loss.dtype)
        return loss

    return loss_fn


def check_inputs(model, dataset):
    """Raises a clear ValueError when the first batch's inputs do not fit the model.

    The estimators run the model layer by layer, so inputs of another spatial
    size would run without an error; this check reads one batch and runs nothing.

    Args:
        model: a GrowingModel.
        dataset: the estimation data, batched.

    Raises:
        ValueError: naming the inputs' shape and the model's.
    """
    for batch in dataset.take(1):
        x, _, _ = data_utils.unpack(batch)
        for got, ref in zip(keras.tree.flatten(x), model.network.inputs):
            if not data_utils.fits_input(ref.shape, got.shape):
                raise ValueError(
                    f"The inputs have shape {tuple(got.shape)}; the model expects inputs "
                    f"of shape {tuple(ref.shape)} (input '{ref.name}').")


def check_labels(model, dataset):
    """Raises a clear ValueError when the first batch does not fit the model and its loss.

    Estimation calls it only after it failed (it costs an eager forward pass):
    for data that fits it returns None, and the estimator's own error stands.

    Args:
        model: a compiled GrowingModel.
        dataset: the estimation data, batched, whose inputs passed
            :func:`check_inputs`.

    Raises:
        ValueError: naming the shapes of the inputs and labels.
    """
    for batch in dataset.take(1):
        x, y, sw = data_utils.unpack(batch)
        try:
            y_pred = model(x, training=False)
            model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sw, training=False)
        except (ValueError, TypeError, tf.errors.InvalidArgumentError) as err:
            shapes = f"x {tuple(x.shape)}, y {tuple(y.shape)}"
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()
                     and not ln.startswith(("Exception encountered", "Arguments received"))]
            raise ValueError(
                f"The data does not match the model and its compiled loss "
                f"({shapes}): {lines[0] if lines else type(err).__name__}"
            ) from err
