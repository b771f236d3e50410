"""TFLite conversion of a plain Keras model: the model as it is converted, and the converter.

Layers that are the identity at inference are left out and recurrent layers unrolled, as
their handlers say (``identity_at_inference``, ``export_config``); the converter runs on a
SavedModel of the result.
"""

import os
import tempfile

import keras
import tensorflow as tf

from keras_split.graph.handler_registry import registered_handler


def for_inference(plain, tflite=True):
    """``plain`` as it is exported.

    The layers that are the identity at inference (dropout, noise, augmentation: their
    handler's ``identity_at_inference``) are replaced by ``Identity``: an exported
    signature would otherwise run their training branch (Keras' augmentation layers
    default to ``training=True``), and TFLite cannot convert its random ops. For
    TFLite, every other layer is rebuilt from its handler's ``export_config``
    (recurrent layers unrolled).

    Args:
        plain: a plain functional Keras model.
        tflite: also apply the handlers' ``export_config``.

    Returns:
        The model to export: ``plain`` itself when nothing changes, else a clone with
        the same weights.

    Example:
        >>> exported = for_inference(plain, tflite=False)
    """
    def exported(layer):
        handler = registered_handler(layer)
        if handler is None:
            return None
        if handler.identity_at_inference and not layer.weights:
            return keras.layers.Identity(name=layer.name)
        if not tflite:
            return None
        config = handler.export_config(layer)
        return None if config == layer.get_config() else layer.__class__.from_config(config)

    replaced = {layer.name: exported(layer) for layer in plain.layers}
    if not any(replaced.values()):
        return plain
    # Op nodes (``x + 3.0``) reach the clone function too: cloned from their config.
    model = keras.models.clone_model(plain, clone_function=lambda op: replaced.get(op.name) or
                                     op.__class__.from_config(op.get_config()))
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(plain.get_layer(layer.name).get_weights())
    return model


def convert(plain, quantization, calib):
    """The TFLite flatbuffer of a plain Keras model (``calib``: int8 calibration inputs)."""
    plain = for_inference(plain)
    with tempfile.TemporaryDirectory() as tmp:
        plain.export(os.path.join(tmp, "sm"), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(os.path.join(tmp, "sm"))
        if quantization is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            def representative():
                for example in calib:
                    yield [example[None]]

            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return converter.convert()
