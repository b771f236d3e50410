"""Pieces shared by the MobileNet builders.

Every builder takes these arguments, checked by :func:`check_common`:

    input_shape: ``(height, width, channels)``.
    num_classes: size of the classifier.
    activation: one of ``ACTIVATIONS``: ``"relu6"`` (the papers), ``"relu"``,
        ``"swish"``, ...
    dropout: dropout rate before the classifier, in [0, 1).
    classifier_activation: None (logits) or e.g. ``"softmax"``.
    name: model name (default: the builder's name).
"""

import keras

L = keras.layers

ACTIVATIONS = ("relu6", "relu", "swish", "silu", "tanh", "gelu")


def make_divisible(value, divisor=8, min_value=None):
    """Rounds a width to a multiple of ``divisor`` (MobileNetV2's rule), never below 90 %."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def check_common(input_shape, num_classes, activation, dropout, width_multiplier):
    """Raises ValueError for a bad common builder argument, naming it."""
    if (not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3
            or any(not isinstance(d, int) or d < 1 for d in input_shape)):
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}.")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}.")
    if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
    if not (isinstance(width_multiplier, (int, float)) and width_multiplier > 0):
        raise ValueError(f"width_multiplier must be positive, got {width_multiplier!r}.")


def check_channels(channels, expected, builder):
    """Validates a ``channels`` list against the number of widths the architecture has."""
    if not isinstance(channels, (list, tuple)) or len(channels) != expected:
        raise ValueError(
            f"{builder}: channels must be a list of {expected} widths, got "
            f"{channels if not isinstance(channels, (list, tuple)) else len(channels)}."
        )
    for i, c in enumerate(channels):
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"{builder}: channels[{i}] must be a positive integer, got {c!r}.")
    return list(channels)


def activation_layer(activation, name):
    if activation == "relu6":
        return L.ReLU(6.0, name=name)
    if activation == "relu":
        return L.ReLU(name=name)
    return L.Activation(activation, name=name)


def conv_bn_act(x, filters, kernel, strides, activation, name, act=True, bn_momentum=0.99):
    """Conv2D (no bias) -> BatchNormalization -> activation."""
    x = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=name)(x)
    x = L.BatchNormalization(epsilon=1e-3, momentum=bn_momentum, name=f"{name}_bn")(x)
    return activation_layer(activation, f"{name}_act")(x) if act else x


def depthwise_bn_act(x, strides, activation, name, bn_momentum=0.99):
    """DepthwiseConv2D 3x3 (no bias) -> BatchNormalization -> activation."""
    x = L.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=name)(x)
    x = L.BatchNormalization(epsilon=1e-3, momentum=bn_momentum, name=f"{name}_bn")(x)
    return activation_layer(activation, f"{name}_act")(x)


def classifier(x, num_classes, dropout, classifier_activation):
    x = L.GlobalAveragePooling2D(name="global_pool")(x)
    if dropout:
        x = L.Dropout(dropout, name="dropout")(x)
    return L.Dense(num_classes, activation=classifier_activation, name="predictions")(x)


def channels_of(model):
    """The widths of a (grown) MobileNet, in the order the builders' ``channels`` take.

    Args:
        model: a model made by a builder of this package, or a GrowingModel of one.

    Returns:
        A list of ints: every Conv2D's filters (depthwise excluded), in graph order.

    Example:
        >>> mobilenet_v2(channels=channels_of(grown))  # the grown architecture, fresh
    """
    network = getattr(model, "network", model)
    return [
        int(layer.filters) for layer in network.layers
        if isinstance(layer, L.Conv2D) and not isinstance(layer, L.DepthwiseConv2D)
    ]
