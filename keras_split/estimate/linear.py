"""Layer linear algebra of the splitting estimators, from each producer's handler.

A producer computes ``z = K . p + b`` for every input patch ``p``. The estimators
need its op without bias (:func:`linear`), the gradient of that op with respect
to the kernel (:func:`filter_gradient`), the patches themselves (:func:`patches`)
and the zero "slot" ``Y . p`` at ``Y = 0`` of the auxiliary activation
(:func:`zero_slot`).
"""

import tensorflow as tf

from keras_split.graph.handler_registry import registered_handler


def linear(layer, x, kernel):
    """``kernel . p`` for every patch ``p`` of ``x``: the layer's op without bias.

    Args:
        layer: a producer (its registered handler's ``linear``).
        x: the layer's input.
        kernel: a tensor of the layer's kernel shape.

    Returns:
        The layer's pre-bias output with ``kernel`` in place of its own.
    """
    return registered_handler(layer).linear(layer, x, kernel)


def filter_gradient(layer, x, dout, kernel_shape):
    """d/dK of ``sum(dout * linear(layer, x, K))``: the gradient reaching the Y slot.

    Args:
        layer: a producer (its registered handler's ``filter_gradient``).
        x: the layer's input.
        dout: the gradient with respect to the layer's output.
        kernel_shape: the kernel's shape (a list of ints).

    Returns:
        A tensor of ``kernel_shape``.
    """
    return registered_handler(layer).filter_gradient(layer, x, dout, kernel_shape)


def patches(layer, x):
    """The input patches of every output position, ``[positions, fan_in]`` (a grouped
    convolution: every group's in turn, see :func:`spread`)."""
    return registered_handler(layer).patches(layer, x)


def spread(layer, g):
    """The exact method's coefficients ``g[positions, units]`` laid out like the rows of
    :func:`patches` (for a grouped convolution, one block of rows per group)."""
    return registered_handler(layer).spread(layer, g)


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
    z = linear(layer, x, registered_handler(layer).kernel(layer))
    if layer.use_bias:
        z = z + layer.bias
    return z, layer.activation(z)


def graph_dtype(graph, name):
    """The compute dtype of producer ``name`` of ChannelGraph ``graph``."""
    return graph.producers[name].layer.compute_dtype
