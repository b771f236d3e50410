"""MobileNetV2 (Sandler et al., 2018), with identity shortcuts, and a small CIFAR variant."""

import keras

from keras_split.models import common

L = keras.layers

# (expansion t, output channels c, repeats n, first stride s)
V2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1)]


def _blocks(stages):
    """``[(expansion, channels, stride, residual)]`` for every inverted-residual block."""
    out = []
    for t, c, n, s in stages:
        for i in range(n):
            out.append((t, c, s if i == 0 else 1, i > 0))
    return out


def _n_widths(blocks):
    return 1 + sum(2 if t != 1 else 1 for t, _, _, _ in blocks) + 1


def _default_widths(blocks, stem, last, width_fn):
    widths, in_ch = [stem], stem
    for t, c, _, _ in blocks:
        if t != 1:
            widths.append(in_ch * t)
        in_ch = width_fn(c)
        widths.append(in_ch)
    widths.append(last)
    return widths


def _build(blocks, widths, input_shape, stem_stride, num_classes, activation, dropout,
           classifier_activation, name, builder, bn_momentum=0.99):
    widths = common.check_channels(widths, _n_widths(blocks), builder)
    inputs = keras.Input(input_shape, name="image")
    m = bn_momentum
    x = common.conv_bn_act(inputs, widths[0], 3, stem_stride, activation, "conv1", bn_momentum=m)
    it = iter(widths[1:])
    in_ch = widths[0]
    for b, (t, _, stride, residual) in enumerate(blocks):
        shortcut = x
        prefix = f"block_{b}"
        if t != 1:
            x = common.conv_bn_act(x, next(it), 1, 1, activation, f"{prefix}_expand",
                                   bn_momentum=m)
        x = common.depthwise_bn_act(x, stride, activation, f"{prefix}_depthwise", m)
        out_ch = next(it)
        x = common.conv_bn_act(x, out_ch, 1, 1, activation, f"{prefix}_project", act=False,
                               bn_momentum=m)
        if residual:
            if out_ch != in_ch:
                raise ValueError(
                    f"{builder}: block {b} has an identity shortcut, so its width "
                    f"{out_ch} must equal its input width {in_ch}."
                )
            x = L.Add(name=f"{prefix}_add")([shortcut, x])
        in_ch = out_ch
    x = common.conv_bn_act(x, next(it), 1, 1, activation, "conv_last", bn_momentum=m)
    outputs = common.classifier(x, num_classes, dropout, classifier_activation)
    return keras.Model(inputs, outputs, name=name)


def mobilenet_v2(width_multiplier=1.0, channels=None, input_shape=(224, 224, 3),
                 num_classes=1000, activation="relu6", dropout=1e-3,
                 classifier_activation=None, name=None):
    """MobileNetV2 with standard identity shortcuts, as a functional Keras model.

    Widths follow the paper's rounding: every block's output width is
    ``make_divisible(int(c * alpha), 8)``, the stem ``make_divisible(32 * alpha, 8)``,
    the last convolution 1280 (``make_divisible(1280 * alpha, 8)`` for alpha > 1);
    expansion layers are ``t`` times their input width.

    Args:
        width_multiplier: alpha.
        channels: 35 explicit widths: the stem, then per block its expansion
            (blocks 1-16) and projection widths, then the last convolution
            (``channels_of(grown_model)``). Blocks with an identity shortcut
            must keep their input width.
        input_shape, num_classes, activation, dropout, classifier_activation, name:
            the builders' common arguments (:mod:`keras_split.models.common`).

    Returns:
        A ``keras.Model``; parameter counts equal ``keras.applications.MobileNetV2``.

    Raises:
        ValueError: for a bad argument or shortcut widths that differ.

    Example:
        >>> seed = mobilenet_v2(0.3)
    """
    common.check_common(input_shape, num_classes, activation, dropout, width_multiplier)
    blocks = _blocks(V2_STAGES)
    if channels is None:
        alpha = width_multiplier
        last = common.make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
        channels = _default_widths(blocks, common.make_divisible(32 * alpha, 8), last,
                                   lambda c: common.make_divisible(int(c * alpha), 8))
    return _build(blocks, channels, input_shape, 2, num_classes, activation, dropout,
                  classifier_activation, name or "mobilenet_v2", "mobilenet_v2")


def mobilenet_v2_cifar(stages=((1, 1, 1), (6, 2, 2), (6, 2, 2), (6, 2, 2), (6, 1, 1)), width=8,
                       channels=None, input_shape=(32, 32, 3), num_classes=10,
                       activation="swish", dropout=0.0, classifier_activation=None, name=None):
    """A small CIFAR MobileNetV2: stride-1 stem, inverted-residual stages, every width ``width``.

    Args:
        stages: ``(expansion, repeats, first stride)`` per stage; the default has
            three down-samplings and identity shortcuts on every repeat.
        width: the output width of every block, the stem and the last conv
            (expansions are ``t * width``) when ``channels`` is None.
        channels: explicit widths, in the order of :func:`mobilenet_v2`'s.
        input_shape, num_classes, activation, dropout, classifier_activation, name:
            the builders' common arguments (:mod:`keras_split.models.common`).

    Returns:
        A ``keras.Model`` with the layers of :func:`mobilenet_v2`'s.

    Raises:
        ValueError: for a bad argument or shortcut widths that differ.

    Example:
        >>> seed = mobilenet_v2_cifar(width=8)
    """
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}.")
    common.check_common(input_shape, num_classes, activation, dropout, 1.0)
    blocks = _blocks([(t, width, n, s) for t, n, s in stages])
    if channels is None:
        channels = _default_widths(blocks, width, width, lambda c: c)
    return _build(blocks, channels, input_shape, 1, num_classes, activation, dropout,
                  classifier_activation, name or "mobilenet_v2_cifar", "mobilenet_v2_cifar",
                  bn_momentum=0.9)
