"""Producer handlers: the layers whose output units are neurons that can be split.

Everything keras_split needs to know about a producing layer type lives in its
class: how its channels flow and its kernel widens (``trace``, ``propagate``,
``widen``), its MACs and what a split adds to them (``macs``, ``added_cost``),
the linear algebra of the splitting estimators (``linear``, ``filter_gradient``,
``patches``) and its units' incoming weights (``unit_kernels``). A new producer
type is one subclass registered with
:func:`~keras_split.graph.handler_registry.register_handler`.

A producer computes ``z = K . p + b`` for every input patch ``p`` (the input
itself for Dense), with its kernel laid out ``[..., fan_in_channels, units]``.

Example:
    >>> handler = Conv2DHandler()
    >>> handler.macs(conv, conv.output)    # positions x kernel size
    110592
"""

import keras
import numpy as np
import tensorflow as tf

from keras_split.graph.channel_map import ChannelMap, WeightEdit
from keras_split.graph.handlers import LayerHandler


def spatial_positions(tensor):
    """Output positions per example: the product of the spatial dimensions (1 for Dense).

    Raises:
        ValueError: for an unknown spatial dimension.
    """
    shape = tuple(tensor.shape)[1:-1]
    if any(d is None for d in shape):
        raise ValueError(f"Unknown spatial shape {tensor.shape}; give the model static shapes.")
    return int(np.prod(shape)) if shape else 1


def _positions(outputs, mode):
    return spatial_positions(outputs[0]) if mode == "flops" else 1


class ProducerHandler(LayerHandler):
    """Dense: each output unit is a neuron that can be split.

    Kernel layout ``[..., fan_in_channels, units]``: the input channel axis is
    -2 (incoming weights of a duplicated channel are halved), the output axis
    -1 (a split unit's filter is duplicated, then perturbed along its
    eigenvector by the caller). Subclasses for convolutions override the
    estimators' linear algebra (``linear``, ``filter_gradient``, ``patches``).
    """

    role = "producer"
    units_key = "units"

    def trace(self, layer, in_classes, out_shapes, graph):
        return [graph.new_classes(layer.name, out_shapes[0][-1])]

    def propagate(self, layer, in_maps, out_masks):
        return [ChannelMap.from_split_mask(out_masks[0])]

    def widen(self, layer, in_maps, out_maps):
        in_map, out_map = in_maps[0], out_maps[0]
        edits = {
            "kernel": WeightEdit(
                [(len(layer.kernel.shape) - 2, in_map, True),
                 (len(layer.kernel.shape) - 1, out_map, False)]
            )
        }
        if layer.use_bias:
            edits["bias"] = WeightEdit([(0, out_map, False)])
        updates = {self.units_key: out_map.size} if out_map.changed else {}
        return updates, edits

    # ------------------------------------------------------------------ costs
    def macs(self, layer, output_tensor):
        # Kernel [..., fan_in / groups, units]: one MAC per weight per position.
        return spatial_positions(output_tensor) * int(np.prod(layer.kernel.shape))

    def added_cost(self, layer, inputs, outputs, a, b, mode):
        # P * k * (a * cout + cin * b + a * b): the child filters, the new input
        # channels, and their product.
        k = int(np.prod(layer.kernel.shape[:-2]))
        cin, cout = layer.kernel.shape[-2], layer.kernel.shape[-1]
        total = _positions(outputs, mode) * k * (a * cout + cin * b + a * b)
        return total + b if mode == "params" and layer.use_bias else total

    def unit_kernels(self, layer):
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        return kernel.reshape(-1, kernel.shape[-1])

    # ------------------------------------------------ the estimators' algebra
    def linear(self, layer, x, kernel):
        """``kernel . p`` for every patch ``p`` of ``x``: the layer's op without bias."""
        return tf.tensordot(x, kernel, axes=[[x.shape.rank - 1], [0]])

    def filter_gradient(self, layer, x, dout, kernel_shape):
        """d/dK of ``sum(dout * linear(layer, x, K))``, a tensor of ``kernel_shape``."""
        xf = tf.reshape(x, [-1, kernel_shape[0]])
        df = tf.reshape(dout, [-1, kernel_shape[-1]])
        return tf.matmul(xf, df, transpose_a=True)

    def patches(self, layer, x):
        """The input patches of every output position, ``[positions, fan_in]``."""
        return tf.reshape(x, [-1, x.shape[-1]])


def _conv_args(layer):
    """``(strides, dilations, padding)`` of a convolution, in TensorFlow's NHWC form."""
    strides = [1, *layer.strides, 1]
    dilations = [1, *layer.dilation_rate, 1]
    return strides, dilations, layer.padding.upper()


class Conv2DHandler(ProducerHandler):
    """Conv2D: a unit is a filter over ``kh x kw x cin`` input patches."""

    units_key = "filters"

    def linear(self, layer, x, kernel):
        return layer.convolution_op(x, kernel)

    def filter_gradient(self, layer, x, dout, kernel_shape):
        strides, dilations, padding = _conv_args(layer)
        return tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=tf.constant(kernel_shape, tf.int32), out_backprop=dout,
            strides=strides, padding=padding, dilations=dilations)

    def patches(self, layer, x):
        kh, kw = layer.kernel_size
        strides, dilations, padding = _conv_args(layer)
        p = tf.image.extract_patches(x, sizes=[1, kh, kw, 1], strides=strides,
                                     rates=dilations, padding=padding)
        return tf.reshape(p, [-1, kh * kw * x.shape[-1]])


class DepthwiseConv2DHandler(LayerHandler):
    """DepthwiseConv2D: channel ``c`` yields outputs ``c*m .. c*m+m-1``; filters are
    duplicated with their input channel (a per-channel layer with weights)."""

    def trace(self, layer, in_classes, out_shapes, graph):
        return [np.repeat(in_classes[0], layer.depth_multiplier)]

    def propagate(self, layer, in_maps, out_masks):
        # Output channel c * m + j comes from input channel c.
        return [in_maps[0].repeat(layer.depth_multiplier)]

    def widen(self, layer, in_maps, out_maps):
        edits = {"kernel": WeightEdit([(2, in_maps[0], False)])}
        if layer.use_bias:
            edits["bias"] = WeightEdit([(0, out_maps[0], False)])
        return {}, edits

    def macs(self, layer, output_tensor):
        return spatial_positions(output_tensor) * int(np.prod(layer.kernel.shape))

    def added_cost(self, layer, inputs, outputs, a, b, mode):
        # The duplicated filters: P * k * m per new input channel.
        k = int(np.prod(layer.kernel.shape[:2])) * layer.depth_multiplier
        total = _positions(outputs, mode) * k * a
        return total + b if mode == "params" and layer.use_bias else total


PRODUCER = ProducerHandler()
