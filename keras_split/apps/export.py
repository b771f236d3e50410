"""Deployment: strip a GrowingModel to plain Keras, export SavedModel and TFLite with parity checks.

The exported graphs contain only the network's own layers: eigen estimation
keeps its variables outside the model, so nothing of splitting is left to strip.
"""

import dataclasses
import logging
import os
import secrets
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_split import compat
from keras_split.apps import conversion
from keras_split.data import data_utils
from keras_split.select.tflite_latency import tflite_interpreter

logger = logging.getLogger(__name__)

QUANTIZATIONS = (None, "float16", "dynamic", "int8")
# Weight types smaller than float32 (INT32 biases and shapes are not counted either way).
_SMALL_TYPES = ("FLOAT16", "BFLOAT16", "INT16", "INT8", "UINT8", "INT4", "UINT4", "INT2")


@dataclasses.dataclass
class ExportResult:
    """What an export wrote and how closely the exported model follows Keras.

    Attributes:
        path: the file or directory written.
        format: ``"saved_model"`` or ``"tflite"``.
        quantization: TFLite quantization (None for float).
        size_bytes: size of the file (or directory) on disk.
        max_abs_diff: max ``|exported - keras|`` over the sample inputs.
        relative_max_diff: ``max_abs_diff / max |keras|``.
        top1_agreement: fraction of samples whose arg-max class agrees with Keras.
        n_samples: how many inputs the parity figures come from.
        parity_inputs: which inputs those were (the given data, or random ones).
        weight_dtypes: TFLite: elements of the constant tensors (weights, biases)
            per type, e.g. ``{"INT8": 9120, "INT32": 120, "FLOAT32": 0}``.
        quantized_fraction: TFLite: the share of the floating-point weights'
            elements stored in a smaller type (int8, float16...), int32 constants
            (biases of int8 models, shapes) left out.
    """

    path: str
    format: str
    quantization: str = None
    size_bytes: int = 0
    max_abs_diff: float = None
    relative_max_diff: float = None
    top1_agreement: float = None
    n_samples: int = 0
    parity_inputs: str = None
    weight_dtypes: dict = None
    quantized_fraction: float = None


def strip(model):
    """A plain functional ``keras.Model`` with ``model``'s architecture and weights.

    Args:
        model: a :class:`keras_split.GrowingModel` (or a plain Keras model).

    Returns:
        A new ``keras.Model`` that needs no keras_split class to load.

    Example:
        >>> plain = strip(grown)
        >>> plain.save("plain.keras")  # loads without keras_split
    """
    network = getattr(model, "network", model)
    if not isinstance(network, keras.Model):
        raise ValueError(f"strip needs a keras.Model, got {type(model).__name__}.")
    plain = keras.models.clone_model(network)
    plain.set_weights(network.get_weights())
    return plain


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def _as_numpy(x):
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def sample_inputs(model, data, n=64, seed=0, name="sample_data"):
    """Up to ``n`` model inputs from ``data``, and where they came from.

    Args:
        model: the (plain) Keras model; its input shape is checked.
        data: None, an array (a batch, or one example), an ``(x, y)`` or
            ``(x, y, sample_weight)`` tuple of arrays, or an iterable of batches
            or of examples (a ``tf.data.Dataset``, batched or not; elements may
            be ``(x, y)``).
        n: at most this many inputs.
        seed: seed of the random inputs used when ``data`` is None.
        name: the argument ``data`` came from, for error messages.

    Returns:
        ``(array [m, *input_shape] of the model input's dtype, description)``.

    Raises:
        ValueError: for empty data or inputs whose shape is not the model's.

    Example:
        >>> x, source = sample_inputs(model, (x_test, y_test), n=32)
    """
    shape = tuple(model.inputs[0].shape[1:])
    dtype = np.dtype(str(model.inputs[0].dtype)) if "int" in str(model.inputs[0].dtype) \
        else np.dtype("float32")
    if data is None:
        rng = np.random.default_rng(seed)
        if np.issubdtype(dtype, np.integer):
            x = rng.integers(0, 2, size=(min(n, 16),) + shape).astype(dtype)
            return x, f"{len(x)} random inputs of 0 and 1 (no data given; integer inputs)"
        x = rng.normal(size=(min(n, 16),) + shape).astype(dtype)
        return x, f"{len(x)} random N(0, 1) inputs (no data given; they may saturate the model)"
    rank = len(shape) + 1
    if isinstance(data, tuple) and 2 <= len(data) <= 3 and hasattr(data[0], "shape") \
            and len(data[0].shape) in (rank, rank - 1):
        data = data[0]
    if hasattr(data, "shape") and not isinstance(data, tf.data.Dataset):
        xs = [_as_numpy(data)]
    else:
        xs, count = [], 0
        for element in data:
            x = element[0] if isinstance(element, (tuple, list)) else element
            xs.append(_as_numpy(x))
            count += len(xs[-1]) if xs[-1].ndim == rank else 1
            if count >= n:
                break
    xs = [a[None] if a.ndim == rank - 1 else a for a in xs]
    if sum(len(a) for a in xs) == 0:
        raise ValueError(f"The sample data is empty: {name} must hold at least one input. "
                         f"Received: {name} with 0 examples")
    for a in xs:
        if not data_utils.fits_input(model.inputs[0].shape, a.shape):
            raise ValueError(f"Sample inputs of shape {tuple(a.shape[1:])} do not fit the "
                             f"model, which expects inputs of shape {shape}.")
    x = np.concatenate(xs)[:n].astype(dtype)
    return x, f"{len(x)} inputs from the given data"


def _parity(reference, got):
    diff = float(np.max(np.abs(got - reference)))
    scale = float(np.max(np.abs(reference))) or 1.0
    agree = float(np.mean(np.argmax(got, -1) == np.argmax(reference, -1))) if reference.ndim > 1 else None
    return diff, diff / scale, agree


def _check_new(path):
    """The folder ``path`` will be written in, checked before any work.

    Raises:
        ValueError: if ``path`` exists, or its folder does not or is not a directory.
        PermissionError: if its folder cannot be written.
    """
    if os.path.exists(path):
        raise ValueError(f"'{path}' already exists; nothing was overwritten. "
                         f"Received: path={os.fspath(path)!r}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise ValueError(f"The folder of the export, '{parent}', {what}. "
                         f"Received: path={os.fspath(path)!r}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"The folder of the export, '{parent}', cannot be written. "
                              f"Received: path={os.fspath(path)!r}")
    return parent


def saved_model(model, path, sample_data=None):
    """Exports a SavedModel with a ``serve`` signature and checks it against Keras.

    The export is written next to ``path`` and moved there only once it has
    loaded and been compared with Keras, so that ``path`` never holds a partial
    export. Its signature computes the model as ``predict`` does: the layers that
    are the identity at inference (dropout, augmentation) are left out.

    Args:
        model: a GrowingModel or a Keras model.
        path: the directory to write (must not exist).
        sample_data: inputs for the parity check: an array, ``(x, y)`` arrays or
            batches (see :func:`sample_inputs`); random inputs by default.

    Returns:
        An :class:`ExportResult`.

    Raises:
        ValueError: if ``path`` exists or its folder does not, or for sample
            inputs that do not fit the model.
        PermissionError: if the folder of ``path`` cannot be written (checked first).

    Example:
        >>> saved_model(grown, "export/grown", sample_data=x_test[:64]).max_abs_diff
    """
    parent = _check_new(path)
    plain = strip(model)
    x, source = sample_inputs(plain, sample_data)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        staged = os.path.join(tmp, "saved_model")
        conversion.for_inference(plain, tflite=False).export(staged, format="tf_saved_model",
                                                             verbose=False)
        reference = np.asarray(plain.predict(x, verbose=0))
        loaded = tf.saved_model.load(staged)
        got = np.asarray(loaded.serve(tf.constant(x)))
        del loaded
        diff, rel, agree = _parity(reference, got)
        _check_new(path)
        os.rename(staged, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(path, "saved_model", None, _size(path), diff, rel, agree, len(x),
                        parity_inputs=source)


def _interpreter(content):
    return tflite_interpreter(content)


def run_tflite(content, x):
    """Runs a TFLite flatbuffer on ``x`` one example at a time; float32 outputs."""
    interp = _interpreter(content)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    results = []
    for example in x:
        value = example[None]
        if inp["dtype"] != np.float32:
            # Quantized inputs are scaled; integer inputs (token ids) are passed as they are.
            scale, zero = inp["quantization"]
            value = (np.round(value / scale + zero) if scale else value).astype(inp["dtype"])
        interp.set_tensor(inp["index"], value)
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale if scale else y.astype(np.float32)
        results.append(y[0])
    return np.stack(results)


def tflite(model, path, quantization=None, representative_data=None, sample_data=None,
           num_calibration_examples=2000):
    """Converts to a TFLite file, runs it with the TFLite interpreter and reports parity.

    The file appears at ``path`` only once the conversion, the check of what was
    quantized and the parity run have succeeded (it is written aside and moved).

    Args:
        model: a GrowingModel or a Keras model.
        path: the ``.tflite`` file to write (must not exist).
        quantization: None (float32), ``"float16"`` (float16 weights),
            ``"dynamic"`` (int8 weights, dynamic-range activations) or ``"int8"``
            (full integer ops, calibrated on ``representative_data``, float I/O).
        representative_data: batches of inputs or ``(x, y)`` (required for int8).
        sample_data: inputs for the parity figures (default: ``representative_data``,
            else random inputs).
        num_calibration_examples: int8 calibration examples taken from
            ``representative_data``.

    Returns:
        An :class:`ExportResult` with the file size, max and relative differences
        to the Keras outputs, the top-1 agreement, which inputs those come from,
        and the types the weights were stored in.

    Raises:
        ValueError: for an unknown quantization, int8 without data or with NaN or
            infinite calibration inputs, an existing path or a missing folder,
            sample inputs that do not fit the model, or a quantization
            that stored no weight in a smaller type (TFLite leaves small weight
            tensors in float32 under ``"dynamic"``). Nothing is written then.
        PermissionError: if the folder of ``path`` cannot be written (checked first).

    Example:
        >>> r = tflite(grown, "grown_int8.tflite", "int8", representative_data=test_ds)
        >>> r.top1_agreement
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}.")
    if quantization == "int8" and representative_data is None:
        raise ValueError("int8 quantization needs representative_data for calibration.")
    parent = _check_new(path)
    plain = strip(model)
    x, source = sample_inputs(plain, sample_data if sample_data is not None
                              else representative_data,
                              name="sample_data" if sample_data is not None
                              else "representative_data")
    if sample_data is None and representative_data is not None:
        source += " (representative_data)"
    calib = None if quantization != "int8" else _calibration_inputs(
        plain, representative_data, num_calibration_examples)
    content = conversion.convert(plain, quantization, calib)
    dtypes, quantized = _weight_types(content, quantization)
    reference = np.asarray(plain.predict(x, verbose=0))
    diff, rel, agree = _parity(reference, run_tflite(content, x))
    _write_aside(content, path, parent)
    return ExportResult(path, "tflite", quantization, len(content), diff, rel, agree, len(x),
                        parity_inputs=source, weight_dtypes=dtypes,
                        quantized_fraction=quantized)


def _calibration_inputs(plain, representative_data, n):
    """Up to ``n`` int8 calibration inputs from ``representative_data``.

    Raises:
        ValueError: naming ``representative_data``, for NaN or infinite inputs (TFLite's
            calibration fails on them, or records their range).
    """
    x, _ = sample_inputs(plain, representative_data, n=n, name="representative_data")
    bad = int(np.size(x) - np.isfinite(x).sum())
    if bad:
        raise ValueError(
            f"representative_data holds NaN or infinite values ({bad} of the {np.size(x)} "
            f"values of its first {len(x)} inputs); int8 calibration needs finite inputs. "
            "Nothing was written. Received: representative_data with non-finite values")
    return x


def _weight_types(content, quantization):
    """``(elements per type of the constant tensors, quantized fraction)`` of a flatbuffer.

    Raises:
        ValueError: when ``quantization`` stored no weight in a smaller type (a
            share below one half is logged as a warning).
    """
    dtypes = compat.tflite_constant_elements(content)
    small = sum(dtypes.get(t, 0) for t in _SMALL_TYPES)
    quantized = small / max(small + dtypes.get("FLOAT32", 0), 1)
    if quantization is not None and quantized == 0.0:
        raise ValueError(
            f"quantization={quantization!r} stored no weight in a smaller type (constants: "
            f"{dtypes}); TFLite's dynamic-range quantization leaves weight tensors of fewer "
            "than 1024 elements in float32. Use 'int8' (with representative_data) or "
            "'float16'. Nothing was written.")
    if quantization is not None and quantized < 0.5:
        logger.warning("quantization=%r stored only %.0f%% of the weights in a smaller type "
                       "(%s).", quantization, 100 * quantized, dtypes)
    return dtypes, quantized


def _write_aside(content, path, parent):
    """Writes ``content`` to a temporary file in ``parent``, then moves it to ``path``
    (which must still not exist): ``path`` never holds a partial file.

    The file gets the mode ``open`` gives every other output (``0o666`` less the
    umask), not the owner-only mode of ``tempfile.mkstemp``.

    Raises:
        ValueError: if ``path`` appeared meanwhile.
        OSError: naming ``path`` (of the type of the error), if the temporary file
            cannot be created.
    """
    tmp = os.path.join(parent, f".export-{secrets.token_hex(8)}.tflite")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)
    except OSError as err:
        raise type(err)(f"Cannot write the export next to '{path}' ({err.strerror}). "
                        f"Received: path={os.fspath(path)!r}") from err
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        _check_new(path)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
