"""Layer linear algebra of the splitting estimators (Dense and convolutions).

A producer computes ``z = K . p + b`` for every input patch ``p``. The estimators
need its op without bias (:func:`linear`), the gradient of that op with respect
to the kernel (:func:`filter_gradient`), the patches themselves (:func:`patches`)
and the zero "slot" ``Y . p`` at ``Y = 0`` of the auxiliary activation
(:func:`zero_slot`).
"""

import keras
import tensorflow as tf


def linear(layer, x, kernel):
    """``kernel . p`` for every patch ``p`` of ``x``: the layer's op without bias.

    Args:
        layer: a Dense or convolution producer.
        x: the layer's input.
        kernel: a tensor of the layer's kernel shape.

    Returns:
        The layer's pre-bias output with ``kernel`` in place of its own.
    """
    if isinstance(layer, keras.layers.Dense):
        return tf.tensordot(x, kernel, axes=[[x.shape.rank - 1], [0]])
    return layer.convolution_op(x, kernel)


def _conv_args(layer):
    """``(strides, dilations, padding)`` of a convolution, in TensorFlow's NHWC form."""
    strides = [1, *layer.strides, 1]
    dilations = [1, *layer.dilation_rate, 1]
    return strides, dilations, layer.padding.upper()


def filter_gradient(layer, x, dout, kernel_shape):
    """d/dK of ``sum(dout * linear(layer, x, K))``: the gradient reaching the Y slot.

    Args:
        layer: a Dense or convolution producer.
        x: the layer's input.
        dout: the gradient with respect to the layer's output.
        kernel_shape: the kernel's shape (a list of ints).

    Returns:
        A tensor of ``kernel_shape``.
    """
    if isinstance(layer, keras.layers.Dense):
        fan_in = kernel_shape[0]
        xf = tf.reshape(x, [-1, fan_in])
        df = tf.reshape(dout, [-1, kernel_shape[-1]])
        return tf.matmul(xf, df, transpose_a=True)
    strides, dilations, padding = _conv_args(layer)
    return tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=tf.constant(kernel_shape, tf.int32),
        out_backprop=dout, strides=strides, padding=padding,
        dilations=dilations,
    )


def patches(layer, x):
    """The input patches of every output position, ``[positions, fan_in]``."""
    if isinstance(layer, keras.layers.Dense):
        return tf.reshape(x, [-1, x.shape[-1]])
    kh, kw = layer.kernel_size
    strides, dilations, padding = _conv_args(layer)
    p = tf.image.extract_patches(
        x, sizes=[1, kh, kw, 1], strides=strides, rates=dilations, padding=padding
    )
    return tf.reshape(p, [-1, kh * kw * x.shape[-1]])


def zero_slot(layer, x, y, like):
    """``linear(layer, x, y)`` at ``y = 0`` without computing it: zeros with the right gradient.

    Args:
        layer: a Dense or convolution producer.
        x: the layer's input.
        y: the (zero) slot variable, of the kernel's shape.
        like: a tensor of the layer's output shape and dtype.

    Returns:
        ``zeros_like(like)``, whose gradient with respect to ``y`` is
        :func:`filter_gradient`.
    """
    kernel_shape = y.shape.as_list()

    @tf.custom_gradient
    def slot(y_):
        def grad(dout):
            return filter_gradient(layer, x, dout, kernel_shape)

        return tf.zeros_like(like), grad

    return slot(y)


def producer_forward(layer, x):
    """``(z, a)`` of a producer whose activation is fused: ``z = K . p + b``, ``a = sigma(z)``."""
    z = linear(layer, x, layer.kernel)
    if layer.use_bias:
        z = z + layer.bias
    return z, layer.activation(z)


def graph_dtype(graph, name):
    """The compute dtype of producer ``name`` of ChannelGraph ``graph``."""
    return graph.producers[name].layer.compute_dtype
