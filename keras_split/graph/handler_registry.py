"""The table from layer class to :class:`~keras_split.graph.handlers.LayerHandler`.

Every layer type keras_split knows is registered here once; a user's custom layer is
registered the same way with :func:`register_handler`.

Example:
    >>> get_handler(keras.layers.MaxPooling2D()) is CHANNELWISE
    True
"""

import keras

from keras_split import compat
from keras_split.graph.handlers import (
    ActivationHandler,
    ActivationLayerHandler,
    BatchNormalizationHandler,
    CHANNELWISE,
    INFERENCE_IDENTITY,
    ConcatenateHandler,
    FlattenHandler,
    LayerHandler,
    MERGE,
    OP,
    RecurrentHandler,
    ReshapeHandler,
    SINK,
    TransposedConvHandler,
)
from keras_split.graph.producers import (PRODUCER, Conv2DHandler, ConvHandler,
                                         DepthwiseConvHandler,
                                         SeparableConvHandler)

_REGISTRY = {}


def register_handler(layer_class, handler):
    """Registers the handler used for layers of exactly ``layer_class``.

    Args:
        layer_class: a ``keras.layers.Layer`` subclass.
        handler: a :class:`LayerHandler` instance (e.g. ``handlers.CHANNELWISE``
            for a custom per-channel activation, ``handlers.SINK`` for a layer
            that mixes channels).

    Raises:
        ValueError: if the arguments have the wrong types.

    Example:
        >>> register_handler(MyScaleLayer, CHANNELWISE)
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise ValueError(f"layer_class must be a keras Layer subclass, got {layer_class!r}.")
    if not isinstance(handler, LayerHandler):
        raise ValueError(f"handler must be a LayerHandler, got {handler!r}.")
    _REGISTRY[layer_class] = handler


def unregister_handler(layer_class):
    """Removes the handler registered for ``layer_class``.

    Args:
        layer_class: a class given to :func:`register_handler`.

    Returns:
        The handler it had.

    Raises:
        ValueError: when no handler is registered for ``layer_class``.

    Example:
        >>> register_handler(MyScaleLayer, CHANNELWISE)
        >>> unregister_handler(MyScaleLayer) is CHANNELWISE
        True
    """
    if layer_class not in _REGISTRY:
        raise ValueError(f"No handler is registered for {layer_class!r}.")
    return _REGISTRY.pop(layer_class)


# Element-wise keras ops (by class name in keras.ops.numpy / keras.ops.nn) that op nodes
# of functional models may use; OP handles them.
ELEMENTWISE_OPS = frozenset((
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum", "Power",
    "Negative", "Abs", "Square", "Sqrt", "Exp", "Clip", "Tanh", "Relu", "Relu6", "Sigmoid",
    "HardSigmoid", "HardSilu", "Silu", "Gelu", "Elu", "Selu", "LeakyRelu", "Softplus",
    "Softsign"))


def registered_handler(layer):
    """The handler registered for ``layer``'s exact class, as registered (a grouped
    convolution keeps its producer class here), or None.

    Example:
        >>> registered_handler(keras.layers.Dense(4)).role
        'producer'
    """
    return _REGISTRY.get(type(layer))


def get_handler(layer):
    """The handler for ``layer``'s exact class (or, for an op node, for what it computes).

    Raises:
        ValueError: naming the layer and its type when none is registered.
    """
    handler = registered_handler(layer)
    kind = type(layer).__name__
    if isinstance(layer, keras.Model):
        raise ValueError(
            f"Layer '{layer.name}' is a nested model ({kind}); keras_split cannot see into "
            "sub-models. Build the model flat (call the sub-model's layers directly).")
    if handler is None and not isinstance(layer, keras.layers.Layer) and kind in ELEMENTWISE_OPS:
        return OP
    if handler is None and not isinstance(layer, keras.layers.Layer):
        raise ValueError(
            f"'{layer.name}' is an op node ({type(layer).__module__.split('.')[-1]}."
            f"{kind}: a keras.ops call in the functional graph, e.g. `x + 3.0` or "
            f"`keras.ops.multiply(x, gate)`), not a keras.layers.{kind} layer; of op "
            f"nodes, the element-wise ones are supported ({', '.join(sorted(ELEMENTWISE_OPS))}): "
            "use the equivalent layer (keras.layers.Reshape, ...) for this one."
        )
    if handler is None:
        raise ValueError(
            f"Layer '{layer.name}' of type {kind} is not supported by keras_split (no "
            f"handler registered): if it computes channel by channel, "
            f"ks.register_handler({kind}, ks.handlers.CHANNELWISE); if it mixes channels "
            f"or cannot be widened, ks.handlers.SINK (its channels are then never split)."
        )
    handler = handler.for_layer(layer)
    handler.validate(layer)
    return handler


L = keras.layers
for _cls in (
    L.MaxPooling1D, L.AveragePooling1D, L.GlobalAveragePooling1D, L.GlobalMaxPooling1D,
    L.ZeroPadding1D, L.Cropping1D, L.UpSampling1D,
    L.MaxPooling2D, L.AveragePooling2D, L.GlobalAveragePooling2D,
    L.GlobalMaxPooling2D, L.ZeroPadding2D, L.Cropping2D, L.UpSampling2D,
):
    register_handler(_cls, CHANNELWISE)
for _cls in (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.GaussianNoise,
             L.GaussianDropout, L.AlphaDropout, L.Identity, L.ActivityRegularization,
             L.RandomFlip, L.RandomRotation, L.RandomZoom, L.RandomTranslation, L.RandomCrop,
             L.RandomContrast, L.RandomBrightness):
    register_handler(_cls, INFERENCE_IDENTITY)
register_handler(L.Activation, ActivationHandler())
for _cls, _name in ((L.ReLU, "relu"), (L.LeakyReLU, "leaky_relu"), (L.PReLU, "leaky_relu"),
                    (L.ELU, "elu")):
    register_handler(_cls, ActivationLayerHandler(_name))
register_handler(L.BatchNormalization, BatchNormalizationHandler())
register_handler(L.Dense, PRODUCER)
register_handler(L.Conv1D, ConvHandler())
register_handler(L.Conv2D, Conv2DHandler())
for _cls in (L.SeparableConv1D, L.SeparableConv2D):
    register_handler(_cls, SeparableConvHandler())
for _cls in (L.DepthwiseConv1D, L.DepthwiseConv2D):
    register_handler(_cls, DepthwiseConvHandler())
for _cls in (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum):
    register_handler(_cls, MERGE)
register_handler(L.Concatenate, ConcatenateHandler())
register_handler(L.Flatten, FlattenHandler())
# Sinks: layers that mix channels, and preprocessing layers keras_split does not widen
# (they sit before the first splittable layer, where channels are fixed anyway).
register_handler(L.Reshape, ReshapeHandler())
for _cls in (L.Softmax, L.LayerNormalization, L.Permute, L.Rescaling,
             L.Normalization, L.Resizing, L.CenterCrop, L.Embedding, L.GroupNormalization,
             L.UnitNormalization):
    register_handler(_cls, SINK)
# Layers with weights that are not widened, but whose MACs count.
for _cls in (L.LSTM, L.GRU, L.SimpleRNN, L.Bidirectional):
    register_handler(_cls, RecurrentHandler())
for _cls in (L.Conv1DTranspose, L.Conv2DTranspose):
    register_handler(_cls, TransposedConvHandler())
for _cls in compat.keras_applications_channelwise_layers():
    register_handler(_cls, CHANNELWISE)
for _cls in compat.keras_applications_merge_layers():
    register_handler(_cls, MERGE)
del L, _cls, _name
