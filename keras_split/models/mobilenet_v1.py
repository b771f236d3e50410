"""MobileNetV1 (Howard et al., 2017) and the splitting paper's small CIFAR variant."""

import keras

from keras_split.models import common

# (pointwise filters, depthwise stride) of the 13 depthwise-separable blocks.
V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
             (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


def _separable_stack(x, widths, strides, activation, bn_momentum=0.99):
    for i, (filters, stride) in enumerate(zip(widths, strides), start=1):
        x = common.depthwise_bn_act(x, stride, activation, f"conv_dw_{i}", bn_momentum)
        x = common.conv_bn_act(x, filters, 1, 1, activation, f"conv_pw_{i}",
                               bn_momentum=bn_momentum)
    return x


def mobilenet_v1(width_multiplier=1.0, channels=None, input_shape=(224, 224, 3),
                 num_classes=1000, activation="relu6", dropout=1e-3,
                 classifier_activation=None, name=None):
    """MobileNetV1 as a functional Keras model.

    Args:
        width_multiplier: alpha; every width is ``int(width * alpha)`` as in the paper.
        channels: 14 explicit widths (stem, then the 13 pointwise convolutions),
            e.g. ``channels_of(grown_model)``; overrides ``width_multiplier``.
        input_shape, num_classes, activation, dropout, classifier_activation, name:
            the builders' common arguments (:mod:`keras_split.models.common`).

    Returns:
        A ``keras.Model`` with layers ``conv1``, ``conv_dw_i``, ``conv_pw_i``,
        ``predictions``; parameter counts equal ``keras.applications.MobileNet``.

    Raises:
        ValueError: for a bad argument.

    Example:
        >>> model = mobilenet_v1(0.5, input_shape=(224, 224, 3))  # 149 M MACs
    """
    common.check_common(input_shape, num_classes, activation, dropout, width_multiplier)
    if channels is None:
        channels = [int(32 * width_multiplier)] + [
            int(f * width_multiplier) for f, _ in V1_BLOCKS]
    channels = common.check_channels(channels, 1 + len(V1_BLOCKS), "mobilenet_v1")
    inputs = keras.Input(input_shape, name="image")
    x = common.conv_bn_act(inputs, channels[0], 3, 2, activation, "conv1")
    x = _separable_stack(x, channels[1:], [s for _, s in V1_BLOCKS], activation)
    outputs = common.classifier(x, num_classes, dropout, classifier_activation)
    return keras.Model(inputs, outputs, name=name or "mobilenet_v1")


def mobilenet_v1_cifar(blocks=12, width=8, channels=None, input_shape=(32, 32, 3),
                       num_classes=10, activation="swish", dropout=0.0,
                       classifier_activation=None, name=None):
    """The splitting paper's CIFAR MobileNetV1: one conv, ``blocks`` separable blocks, one more, FC.

    The ``blocks`` depthwise-separable blocks downsample by 2 three times, evenly
    spaced (at blocks ``blocks//4``, ``blocks//2`` and ``3*blocks//4``), and one
    extra stride-1 block follows; every layer has ``width`` channels in the seed.

    Args:
        blocks: the number of separable blocks before the extra one (>= 3).
        width: the width of every layer when ``channels`` is None.
        channels: ``blocks + 2`` explicit widths (stem, blocks, extra block).
        input_shape, num_classes, activation, dropout, classifier_activation, name:
            the builders' common arguments (:mod:`keras_split.models.common`).

    Returns:
        A ``keras.Model`` with the layers of :func:`mobilenet_v1`'s.

    Raises:
        ValueError: for a bad argument.

    Example:
        >>> seed = mobilenet_v1_cifar(blocks=6, width=8)
    """
    if not isinstance(blocks, int) or blocks < 3:
        raise ValueError(f"blocks must be an integer >= 3, got {blocks!r}.")
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}.")
    common.check_common(input_shape, num_classes, activation, dropout, 1.0)
    channels = common.check_channels(
        [width] * (blocks + 2) if channels is None else channels, blocks + 2,
        "mobilenet_v1_cifar")
    down = {blocks // 4, blocks // 2, (3 * blocks) // 4}
    strides = [2 if i in down else 1 for i in range(blocks)] + [1]
    inputs = keras.Input(input_shape, name="image")
    # Short CIFAR runs: BatchNorm statistics follow the weights faster (momentum 0.9).
    x = common.conv_bn_act(inputs, channels[0], 3, 1, activation, "conv1", bn_momentum=0.9)
    x = _separable_stack(x, channels[1:], strides, activation, bn_momentum=0.9)
    outputs = common.classifier(x, num_classes, dropout, classifier_activation)
    return keras.Model(inputs, outputs, name=name or "mobilenet_v1_cifar")
