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


def check_labels(model, dataset):
    """Raises a clear ValueError when the first batch does not fit the model and loss.

    A growth schedule estimates on the same data at every stage, and widening
    changes neither the inputs, the outputs nor the loss: a check that passed
    for the same data spec, output shapes and loss is not run again (it costs
    an eager forward pass).
    """
    key = (repr(dataset.element_spec), tuple(str(t.shape) for t in model.network.outputs),
           id(getattr(model, "loss", None)))
    if getattr(model, "_labels_checked", None) == key:
        return
    for batch in dataset.take(1):
        x, y, sw = data_utils.unpack(batch)
        for got, ref in zip(keras.tree.flatten(x), model.network.inputs):
            if not data_utils.fits_input(ref.shape, got.shape):
                raise ValueError(
                    f"The inputs have shape {tuple(got.shape)}; the model expects inputs "
                    f"of shape {tuple(ref.shape)} (input '{ref.name}').")
        try:
            y_pred = model(x, training=False)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sw,
                                     training=False)
        except (ValueError, TypeError, tf.errors.InvalidArgumentError) as err:
            shapes = f"x {tuple(x.shape)}, y {tuple(y.shape)}"
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()
                     and not ln.startswith(("Exception encountered", "Arguments received"))]
            raise ValueError(
                f"The data does not match the model and its compiled loss "
                f"({shapes}): {lines[0] if lines else type(err).__name__}"
            ) from err
        del loss  # non-finite values are reported per layer by the estimators
    model._labels_checked = key
