"""The data ``grow``, ``splitting_eigenpairs`` and ``GrowthCallback`` take, converted as
``fit`` converts it: lists and pandas-like arrays become arrays, inputs take the model's
input dtypes; what cannot be converted is refused with the argument's name."""

import keras
import numpy as np
import tensorflow as tf

from keras_split.data import data_utils
from keras_split.growing.compiled_loss import check_inputs
from keras_split.growing.estimation_data import batch_examples, check_examples

# The element names of an ``(x, y, sample_weight)`` tuple.
ELEMENTS = ("x", "y", "sample_weight")


def model_dataset(model, data, batch_size, name="data"):
    """``data`` as batches whose inputs have ``model``'s input dtypes.

    Args:
        model: the GrowingModel the data is for.
        data: a batched ``tf.data.Dataset`` or an ``(x, y)`` / ``(x, y,
            sample_weight)`` tuple of arrays, lists or pandas-like arrays.
        batch_size: batch size of array data.
        name: the argument's name, for error messages.

    Returns:
        A batched ``tf.data.Dataset`` (float64 or integer inputs cast to the
        model's input dtype, as Keras does in ``fit``).

    Raises:
        ValueError: naming the argument, for string or ragged arrays, arrays of
            different lengths, or class-index labels that are not whole numbers.

    Example:
        >>> ds = model_dataset(model, (np.random.rand(8, 4), y), batch_size=4)
    """
    if not isinstance(data, tf.data.Dataset) and isinstance(data, (tuple, list)) \
            and len(data) in (2, 3):
        data = tuple(_converted(model, value, _label(name, i), i)
                     for i, value in enumerate(data))
        check_class_labels(model, data[1], _label(name, 1))
    return cast_inputs(model, data_utils.as_dataset(data, batch_size, name))


def estimation_datasets(model, data, eval_data, batch_size):
    """``(data, eval_data)`` of ``splitting_eigenpairs`` as batches converted as ``fit``
    converts them (``eval_data`` None stays None); ``data``'s first batch is checked.

    Raises:
        ValueError: naming the argument, for data that cannot be converted or does
            not fit the model (see :func:`model_dataset` and :func:`check_batch`).
    """
    data = model_dataset(model, data, batch_size)
    check_batch(model, data)
    if eval_data is not None:
        eval_data = model_dataset(model, eval_data, batch_size, "eval_data")
    return data, eval_data


def _label(name, index):
    """How the error names element ``index`` of the tuple ``name``."""
    return ELEMENTS[index] if name == "data" else f"{name}[{index}]"


def _converted(model, value, label, index):
    """``value`` (an element of the data tuple) as arrays, as Keras converts it."""
    several = len(model.network.inputs if index == 0 else model.network.outputs) > 1
    if isinstance(value, dict) or (several and isinstance(value, (list, tuple))):
        return keras.tree.map_structure(lambda v: _as_array(v, label), value)
    return _as_array(value, label)


def _as_array(value, label):
    """One array: lists and pandas-like objects converted, strings refused."""
    if value is None:
        return value
    if hasattr(value, "to_numpy"):   # pandas DataFrame / Series
        value = value.to_numpy()
    if isinstance(value, (list, tuple)):
        try:
            value = np.asarray(value)
        except ValueError as err:
            raise ValueError(
                f"{label} must be an array or a list of equal-length lists of numbers; a "
                f"ragged list cannot be converted ({err}). Received: {label}=a list of "
                f"{len(value)} elements") from err
    kind = _kind(value)
    if kind is not None and kind not in "biuf":
        first = np.asarray(value).ravel()[:1]
        raise ValueError(
            f"{label} must hold numbers (encode string labels as class indices, e.g. with "
            f"keras.layers.StringLookup). Received: {label} of dtype {_dtype(value)}"
            + (f" (first value {_plain(first[0])!r})" if first.size else ""))
    return value


def _plain(value):
    """A numpy or bytes scalar as a plain Python value, for messages."""
    value = value.item() if hasattr(value, "item") else value
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _dtype(value):
    dtype = getattr(value, "dtype", None)
    return dtype.name if isinstance(dtype, tf.dtypes.DType) else str(dtype)


def _kind(value):
    """The numpy kind of ``value``'s dtype (``'f'``, ``'i'``, ``'U'``...), or None."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return None
    if isinstance(dtype, tf.dtypes.DType):
        return "O" if dtype == tf.string else np.dtype(dtype.as_numpy_dtype).kind
    return np.dtype(dtype).kind


def _is_sparse(model):
    """Whether the compiled loss reads class indices (a sparse categorical loss)."""
    loss = getattr(model, "loss", None)
    name = loss if isinstance(loss, str) else (
        getattr(loss, "name", None) or getattr(loss, "__name__", ""))
    return isinstance(name, str) and "sparse" in name


def check_class_labels(model, y, label="y"):
    """Raises ValueError, naming ``label``, when ``model``'s sparse categorical loss
    would truncate ``y``'s float labels that are not whole numbers (3.0 is fine)."""
    if y is None or not _is_sparse(model) or _kind(y) != "f":
        return
    values = np.asarray(y.numpy() if hasattr(y, "numpy") else y)
    fraction = np.isfinite(values) & (values != np.round(values))
    if fraction.any():
        raise ValueError(
            f"{label} holds class indices for the loss {getattr(model.loss, 'name', model.loss)},"
            f" but {int(fraction.sum())} of its values are not whole numbers, which Keras "
            f"would truncate. Received: {label} with value {values[fraction][0].item()!r}")


def cast_inputs(model, dataset):
    """``dataset`` with numeric inputs cast to the dtypes of ``model``'s inputs."""
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or not spec:
        return dataset
    specs = keras.tree.flatten(spec[0])
    targets = [tf.as_dtype(t.dtype) for t in model.network.inputs]
    if len(specs) != len(targets):
        return dataset
    casts = [_target(s.dtype, t) for s, t in zip(specs, targets)]
    if all(c is None for c in casts):
        return dataset

    def cast(x, *rest):
        flat = [v if c is None else tf.cast(v, c)
                for v, c in zip(keras.tree.flatten(x), casts)]
        return (keras.tree.pack_sequence_as(x, flat), *rest)

    return dataset.map(cast)


def _target(source, target):
    """The dtype to cast an input of ``source`` dtype to, or None to leave it."""
    if source == target:
        return None
    if target.is_floating and (source.is_floating or source.is_integer or source.is_bool):
        return target
    if target.is_integer and source.is_integer:
        return target
    return None


def check_batch(model, dataset, name="data", finite=False, min_examples=None):
    """Checks the first batch of ``dataset``: inputs that fit the model, numeric labels
    (whole numbers for a sparse loss), with ``finite`` no NaN or infinity, and with
    ``min_examples`` that many examples (later batches are read only when the first
    holds fewer).

    Raises:
        ValueError: naming ``name`` and what is wrong.
    """
    check_inputs(model, dataset)
    for batch in dataset.take(1):
        if min_examples is not None and batch_examples(batch) < min_examples:
            check_examples(dataset, name, min_examples)
        x, y, _ = data_utils.unpack(batch)
        for label, value in (("x", x), ("y", y)):
            for leaf in keras.tree.flatten(value):
                _as_array(leaf, f"{name}'s {label}" if name != "data" else label)
                if finite and _kind(leaf) == "f" and not np.all(np.isfinite(leaf)):
                    raise ValueError(
                        f"{name} holds NaN or infinite values in {label} (first batch); "
                        f"growth would fail on them. Received: {name} with non-finite {label}")
        check_class_labels(model, y, "y" if name == "data" else f"{name}'s y")
