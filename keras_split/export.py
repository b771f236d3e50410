"""Deployment: strip a GrowingModel to plain Keras, export SavedModel and TFLite with parity checks.

The exported graphs contain only the network's own layers: eigen estimation
keeps its variables outside the model, so nothing of splitting is left to strip.
"""

import dataclasses
import logging
import os
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

QUANTIZATIONS = (None, "float16", "dynamic", "int8")


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
    """

    path: str
    format: str
    quantization: str = None
    size_bytes: int = 0
    max_abs_diff: float = None
    relative_max_diff: float = None
    top1_agreement: float = None
    n_samples: int = 0


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


def _sample_inputs(model, data, n=64, seed=0):
    if data is not None:
        xs = []
        for batch in data:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            xs.append(np.asarray(x))
            if sum(len(a) for a in xs) >= n:
                break
        if not xs:
            raise ValueError("The sample data is empty.")
        return np.concatenate(xs)[:n].astype("float32")
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(size=(min(n, 16),) + shape).astype("float32")


def _parity(reference, got):
    diff = float(np.max(np.abs(got - reference)))
    scale = float(np.max(np.abs(reference))) or 1.0
    agree = float(np.mean(np.argmax(got, -1) == np.argmax(reference, -1))) if reference.ndim > 1 else None
    return diff, diff / scale, agree


def saved_model(model, path, sample_data=None):
    """Exports a SavedModel with a ``serve`` signature and checks it against Keras.

    Args:
        model: a GrowingModel or a Keras model.
        path: the directory to write (must not exist).
        sample_data: inputs (or ``(x, y)`` batches) for the parity check; random
            inputs by default.

    Returns:
        An :class:`ExportResult`.

    Raises:
        ValueError: if ``path`` exists.

    Example:
        >>> saved_model(grown, "export/grown").max_abs_diff
    """
    if os.path.exists(path):
        raise ValueError(f"'{path}' already exists; nothing was overwritten.")
    plain = strip(model)
    plain.export(path, format="tf_saved_model", verbose=False)
    x = _sample_inputs(plain, sample_data)
    reference = np.asarray(plain.predict(x, verbose=0))
    loaded = tf.saved_model.load(path)
    got = np.asarray(loaded.serve(tf.constant(x)))
    diff, rel, agree = _parity(reference, got)
    return ExportResult(path, "saved_model", None, _size(path), diff, rel, agree, len(x))


def _interpreter(content):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Interpreter(model_content=content)


def run_tflite(content, x):
    """Runs a TFLite flatbuffer on ``x`` one example at a time; float32 outputs."""
    interp = _interpreter(content)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    results = []
    for example in x:
        value = example[None]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            value = np.round(value / scale + zero).astype(inp["dtype"])
        interp.set_tensor(inp["index"], value)
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        results.append(y[0])
    return np.stack(results)


def tflite(model, path, quantization=None, representative_data=None, sample_data=None,
           num_calibration_examples=2000):
    """Converts to a TFLite file, runs it with the TFLite interpreter and reports parity.

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
        to the Keras outputs, and the top-1 agreement.

    Raises:
        ValueError: for an unknown quantization, int8 without data, or an existing path.

    Example:
        >>> r = tflite(grown, "grown_int8.tflite", "int8", representative_data=test_ds)
        >>> r.top1_agreement
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}.")
    if quantization == "int8" and representative_data is None:
        raise ValueError("int8 quantization needs representative_data for calibration.")
    if os.path.exists(path):
        raise ValueError(f"'{path}' already exists; nothing was overwritten.")
    plain = strip(model)
    with tempfile.TemporaryDirectory() as tmp:
        plain.export(os.path.join(tmp, "sm"), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(os.path.join(tmp, "sm"))
        if quantization is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            calib = _sample_inputs(plain, representative_data, n=num_calibration_examples)

            def representative():
                for example in calib:
                    yield [example[None]]

            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        content = converter.convert()
    with open(path, "wb") as f:
        f.write(content)
    x = _sample_inputs(plain, sample_data if sample_data is not None else representative_data)
    reference = np.asarray(plain.predict(x, verbose=0))
    diff, rel, agree = _parity(reference, run_tflite(content, x))
    return ExportResult(path, "tflite", quantization, len(content), diff, rel, agree, len(x))
