"""Producer handlers: the layers whose output units are neurons that can be split.

Everything keras_split needs to know about a producing layer type lives in its
class: how its channels flow and its kernel widens (``trace``, ``propagate``,
``widen``), its MACs and what a split adds to them (``macs``, ``added_cost``),
the linear algebra of the splitting estimators (``linear``, ``filter_gradient``,
``patches``) and its units' incoming weights (``unit_kernels``). A new producer
type is one subclass registered with
:func:`~keras_split.graph.handler_registry.register_handler`.

A producer computes ``z = K . p + b`` for every input patch ``p`` (the input
itself for Dense, the depthwise stage's output for a separable convolution), with its
kernel ``K`` laid out ``[..., fan_in_channels, units]``.

Supported: Dense, Conv1D (``groups=1``; a grouped Conv1D is a sink), Conv2D (with
``groups=g``, unit ``u`` of every group is split together, and a Conv2D with one input
channel per group, ConvNeXt's depthwise convolution, is per-channel), SeparableConv1D and
SeparableConv2D (a unit is a pointwise output channel), and the per-channel
DepthwiseConv1D and DepthwiseConv2D.

Example:
    >>> handler = Conv2DHandler()
    >>> handler.macs(conv, conv.output)    # positions x kernel size
    110592
"""

import keras
import numpy as np
import tensorflow as tf

from keras_split.graph.channel_map import ChannelMap, WeightEdit
from keras_split.graph.handlers import SINK, LayerHandler


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


def _weight_macs(output_tensor, *weights):
    """One MAC per weight per output position."""
    return spatial_positions(output_tensor) * sum(int(np.prod(w.shape)) for w in weights)


def _with_bias(layer, total, b, mode):
    """``total``, plus the ``b`` new bias entries when counting parameters."""
    return total + b if mode == "params" and layer.use_bias else total


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
    kernel_name = "kernel"          # the weight whose last axis is the units
    initializer_key = "kernel_initializer"

    def kernel(self, layer):
        """The kernel variable ``[..., fan_in, units]`` of the layer's neurons."""
        return getattr(layer, self.kernel_name)

    def kernel_initializer(self, layer):
        """The initializer of :meth:`kernel` (fresh children may be drawn from it)."""
        return getattr(layer, self.initializer_key)

    def fan_in_map(self, layer, in_map):
        """The ChannelMap of the kernel's fan-in channels, given the input's."""
        return in_map

    def trace(self, layer, in_classes, out_shapes, graph):
        return [graph.new_classes(layer.name, out_shapes[0][-1])]

    def propagate(self, layer, in_maps, out_masks):
        return [ChannelMap.from_split_mask(out_masks[0])]

    def widen(self, layer, in_maps, out_maps):
        in_map, out_map = in_maps[0], out_maps[0]
        rank = len(self.kernel(layer).shape)
        edits = {self.kernel_name: WeightEdit(
            [(rank - 2, self.fan_in_map(layer, in_map), True), (rank - 1, out_map, False)])}
        edits.update(self._input_side_edits(layer, in_map))
        if layer.use_bias:
            edits["bias"] = WeightEdit([(0, out_map, False)])
        updates = {self.units_key: out_map.size} if out_map.changed else {}
        return updates, edits

    def _input_side_edits(self, layer, in_map):
        """Edits of weights other than the kernel and bias (none for Dense and Conv)."""
        return {}

    def rescale_output(self, layer, scale, edits):
        """Plans the layer's output multiplied by ``scale`` (``edits`` as ``widen``'s): the
        units' kernel and the bias are scaled, not the weights before them (a separable
        convolution's depthwise kernel), so that the output is exactly ``scale`` times."""
        for name in [self.kernel_name] + (["bias"] if layer.use_bias else []):
            edits.setdefault(name, WeightEdit()).scale = scale

    # ------------------------------------------------------------------ costs
    def macs(self, layer, output_tensor):
        # Kernel [..., fan_in / groups, units]: one MAC per weight per position.
        return _weight_macs(output_tensor, self.kernel(layer))

    def added_cost(self, layer, inputs, outputs, a, b, mode):
        # P * k * (a * cout + cin * b + a * b): the child filters, the new input
        # channels, and their product.
        shape = self.kernel(layer).shape
        k = int(np.prod(shape[:-2]))
        cin, cout = shape[-2], shape[-1]
        total = _positions(outputs, mode) * k * (a * cout + cin * b + a * b)
        return _with_bias(layer, total, b, mode)

    def unit_kernels(self, layer):
        kernel = keras.ops.convert_to_numpy(self.kernel(layer))
        return kernel.reshape(-1, kernel.shape[-1])

    def for_layer(self, layer):
        # A grouped layer this class does not widen: a sink (its channels never split).
        return SINK if getattr(layer, "groups", 1) != 1 else self

    def spread(self, layer, g):
        """The exact method's coefficients ``g[positions, units]`` laid out like
        :meth:`patches`' rows (unchanged unless units see different patches)."""
        return g

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


def _causal(layer, x):
    """``(x, padding)``: a causal Conv1D's input padded on the left, and "valid"."""
    if layer.padding != "causal":
        return x, layer.padding
    left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
    return tf.pad(x, [[0, 0], [left, 0], [0, 0]]), "valid"


def _patches_2d(x, kernel_size, strides, dilations, padding):
    """``extract_patches`` of a 4-D input: ``[positions, kh * kw * channels]``."""
    kh, kw = kernel_size
    p = tf.image.extract_patches(x, sizes=[1, kh, kw, 1], strides=[1, *strides, 1],
                                 rates=[1, *dilations, 1], padding=padding.upper())
    return tf.reshape(p, [-1, kh * kw * x.shape[-1]])


class ConvHandler(ProducerHandler):
    """A convolution of any rank (Conv1D; Conv2D overrides with faster ops): a unit is
    a filter over ``k x cin`` input patches. The filter gradient is the autodiff of
    :meth:`linear` (linear in the kernel)."""

    units_key = "filters"

    def linear(self, layer, x, kernel):
        x, padding = _causal(layer, x)
        return keras.ops.conv(x, kernel, strides=layer.strides, padding=padding,
                              dilation_rate=layer.dilation_rate)

    def filter_gradient(self, layer, x, dout, kernel_shape):
        zero = tf.zeros(kernel_shape, dout.dtype)
        with tf.GradientTape() as tape:
            tape.watch(zero)
            z = self.linear(layer, x, zero)
        return tape.gradient(z, zero, output_gradients=dout)

    def patches(self, layer, x):
        # A 1-D convolution is a 2-D one of height 1.
        x, padding = _causal(layer, x)
        return _patches_2d(x[:, None], (1, layer.kernel_size[0]), (1, layer.strides[0]),
                           (1, layer.dilation_rate[0]), padding)


class Conv2DHandler(ConvHandler):
    """Conv2D: a unit is a filter over ``kh x kw x cin`` input patches.

    With ``groups=g`` (``n`` input and ``m`` output channels per group), a unit reads
    the patches of its group's inputs only; unit ``u`` of every group is split together
    (their channels are tied as by a merge, so that every group keeps its size), and so
    are input channel ``c`` of every group. With one input channel per group it is a
    depthwise convolution: per-channel (:class:`GroupedDepthwiseHandler`).
    """

    def for_layer(self, layer):
        groups = layer.groups
        if groups != 1 and layer.input.shape[-1] == groups:
            return GROUPED_DEPTHWISE
        return self

    def trace(self, layer, in_classes, out_shapes, graph):
        out = super().trace(layer, in_classes, out_shapes, graph)
        groups = layer.groups
        if groups > 1:
            n, m = in_classes[0].size // groups, out[0].size // groups
            for k in range(1, groups):
                graph.union(in_classes[0][:n], in_classes[0][k * n:(k + 1) * n])
                graph.union(out[0][:m], out[0][k * m:(k + 1) * m])
        return out

    def fan_in_map(self, layer, in_map):
        # Every group's inputs split alike (tied): the map of the first group's.
        n = in_map.old_size // layer.groups
        return ChannelMap(in_map.src[in_map.src < n], n)

    def added_cost(self, layer, inputs, outputs, a, b, mode):
        # Each group's filters see a / groups of the new input channels.
        return super().added_cost(layer, inputs, outputs, a / layer.groups, b, mode)

    def linear(self, layer, x, kernel):
        return layer.convolution_op(x, kernel)

    def filter_gradient(self, layer, x, dout, kernel_shape):
        if any(d != 1 for d in layer.dilation_rate) or layer.groups != 1:
            # TensorFlow's CPU Conv2DBackpropFilter has no dilation in float64 and no
            # groups: autodiff.
            return super().filter_gradient(layer, x, dout, kernel_shape)
        return tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=tf.constant(kernel_shape, tf.int32), out_backprop=dout,
            strides=[1, *layer.strides, 1], padding=layer.padding.upper(),
            dilations=[1, *layer.dilation_rate, 1])

    def patches(self, layer, x):
        # With groups, every group's patches in turn (rows group by group, see spread).
        n = x.shape[-1] // layer.groups
        return tf.concat([_patches_2d(x[..., k * n:(k + 1) * n], layer.kernel_size,
                                      layer.strides, layer.dilation_rate, layer.padding)
                          for k in range(layer.groups)], axis=0)

    def spread(self, layer, g):
        if layer.groups == 1:
            return g
        # Group k's block of rows keeps the coefficients of group k's units only.
        m = g.shape[-1] // layer.groups
        group_of = np.arange(g.shape[-1]) // m
        return tf.concat([g * tf.constant(group_of == k, g.dtype)
                          for k in range(layer.groups)], axis=0)


def _depthwise(layer, x):
    """The depthwise stage of a separable convolution."""
    return keras.ops.depthwise_conv(x, layer.depthwise_kernel, strides=layer.strides,
                                    padding=layer.padding, dilation_rate=layer.dilation_rate)


class SeparableConvHandler(ConvHandler):
    """SeparableConv1D / SeparableConv2D: a depthwise filter per input channel, then a
    pointwise mix. A unit is a pointwise output channel; its patches are the depthwise
    stage's outputs (``cin * depth_multiplier`` of them per position). An input channel
    split duplicates its depthwise filters and halves their pointwise rows."""

    kernel_name = "pointwise_kernel"
    initializer_key = "pointwise_initializer"

    def fan_in_map(self, layer, in_map):
        # Depthwise output c * m + j comes from input channel c.
        return in_map.repeat(layer.depth_multiplier)

    def _input_side_edits(self, layer, in_map):
        axis = len(layer.depthwise_kernel.shape) - 2
        return {"depthwise_kernel": WeightEdit([(axis, in_map, False)])}

    def macs(self, layer, output_tensor):
        return _weight_macs(output_tensor, layer.depthwise_kernel, layer.pointwise_kernel)

    def added_cost(self, layer, inputs, outputs, a, b, mode):
        shape = layer.depthwise_kernel.shape
        k, cin, m = int(np.prod(shape[:-2])), shape[-2], layer.depth_multiplier
        cout = layer.pointwise_kernel.shape[-1]
        # The new depthwise filters, their pointwise rows, the new units' rows, and both.
        total = _positions(outputs, mode) * (k * m * a + a * m * cout + cin * m * b
                                             + a * m * b)
        return _with_bias(layer, total, b, mode)

    def linear(self, layer, x, kernel):
        return keras.ops.conv(_depthwise(layer, x), kernel, strides=1, padding="valid")

    def filter_gradient(self, layer, x, dout, kernel_shape):
        d = tf.reshape(_depthwise(layer, x), [-1, kernel_shape[-2]])
        g = tf.matmul(d, tf.reshape(dout, [-1, kernel_shape[-1]]), transpose_a=True)
        return tf.reshape(g, kernel_shape)

    def patches(self, layer, x):
        d = _depthwise(layer, x)
        return tf.reshape(d, [-1, d.shape[-1]])


class DepthwiseConvHandler(LayerHandler):
    """DepthwiseConv1D / DepthwiseConv2D: channel ``c`` yields outputs ``c*m ..
    c*m+m-1``; its filters are duplicated with it (a per-channel layer with weights)."""

    def multiplier(self, layer):
        """Outputs per input channel."""
        return layer.depth_multiplier

    def trace(self, layer, in_classes, out_shapes, graph):
        return [np.repeat(in_classes[0], self.multiplier(layer))]

    def propagate(self, layer, in_maps, out_masks):
        # Output channel c * m + j comes from input channel c.
        return [in_maps[0].repeat(self.multiplier(layer))]

    def widen(self, layer, in_maps, out_maps):
        axis = len(layer.kernel.shape) - 2
        edits = {"kernel": WeightEdit([(axis, in_maps[0], False)])}
        if layer.use_bias:
            edits["bias"] = WeightEdit([(0, out_maps[0], False)])
        return {}, edits

    def macs(self, layer, output_tensor):
        return _weight_macs(output_tensor, layer.kernel)

    def added_cost(self, layer, inputs, outputs, a, b, mode):
        # The duplicated filters: P * k * m per new input channel.
        k = int(np.prod(layer.kernel.shape[:-2])) * self.multiplier(layer)
        return _with_bias(layer, _positions(outputs, mode) * k * a, b, mode)


class GroupedDepthwiseHandler(DepthwiseConvHandler):
    """A Conv2D with one input channel per group (``groups`` = input channels, ConvNeXt's
    depthwise convolution): per-channel like DepthwiseConv2D, with the Conv2D kernel
    layout ``[kh, kw, 1, filters]`` (output ``c * m + j`` from input ``c``)."""

    def multiplier(self, layer):
        return layer.filters // layer.groups

    def widen(self, layer, in_maps, out_maps):
        # The filters follow their input channel; groups and filters grow with it.
        edits = {"kernel": WeightEdit([(3, out_maps[0], False)])}
        if layer.use_bias:
            edits["bias"] = WeightEdit([(0, out_maps[0], False)])
        updates = ({"filters": out_maps[0].size, "groups": in_maps[0].size}
                   if out_maps[0].changed else {})
        return updates, edits


PRODUCER = ProducerHandler()
GROUPED_DEPTHWISE = GroupedDepthwiseHandler()
