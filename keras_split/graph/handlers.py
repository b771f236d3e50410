"""Per-layer-type handlers: how channels flow through a layer and how it widens.

Every layer of a model that :class:`keras_split.GrowingModel` grows needs a
handler, looked up by the layer's exact class in a registry. A handler answers
two questions:

* ``trace``: which *channel classes* the layer's output channels carry, given
  those of its inputs. Producers (Dense, Conv2D) start new classes; per-channel
  layers (BatchNormalization, activations, pooling, DepthwiseConv2D, ...) pass
  them on; element-wise merges (Add, Multiply, ...) tie the channels of their
  inputs into one coupled group; Concatenate stacks them; Flatten repeats them
  for every spatial position; *sinks* (Softmax, LayerNormalization, Reshape)
  mix channels, so whatever reaches them can never be split.
* ``widen``: given how each input and output tensor was widened (a
  :class:`~keras_split.graph.channel_map.ChannelMap`), the new layer config and how
  every weight is rebuilt. Consumers halve the incoming weights of a duplicated
  channel, per-channel layers duplicate their entries unchanged.

Register a handler for your own layer with :func:`register_handler`.
"""

import numpy as np
import keras

from keras_split import compat
from keras_split.graph.channel_map import ChannelMap, WeightEdit


class LayerHandler:
    """Base handler: a layer with one input and one output that passes channels through.

    Subclasses override ``validate``, ``trace`` and ``widen``.
    """

    role = "channelwise"

    def validate(self, layer):
        """Raises ValueError for configurations this handler cannot widen."""
        fmt = getattr(layer, "data_format", None)
        if fmt not in (None, "channels_last"):
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) uses "
                f"data_format={fmt!r}; only 'channels_last' is supported."
            )

    def trace(self, layer, in_classes, out_shapes, graph):
        """Returns the class array of each output tensor."""
        return [in_classes[0]]

    def propagate(self, layer, in_maps, out_masks):
        """The ChannelMap of each output, given the inputs' maps.

        ``out_masks`` says, per output tensor, which of its channels belong to a
        split group (producers use it; pass-through layers follow their input).
        """
        return [in_maps[0]]

    def widen(self, layer, in_maps, out_maps):
        """Returns ``(config_updates, {weight_name: WeightEdit})``."""
        cmap = in_maps[0]
        edits = {}
        channels = cmap.old_size
        for w in layer.weights:
            if len(w.shape) >= 1 and w.shape[-1] == channels:
                edits[w.name] = WeightEdit([(len(w.shape) - 1, cmap, False)])
        return {}, edits


class ChannelwiseHandler(LayerHandler):
    """Per-channel layers: activations, dropout, pooling, padding, BatchNormalization.

    Weights whose last axis is the channel axis (BatchNormalization's gamma,
    beta and moving statistics, PReLU's alpha) are duplicated with the channel.
    """


class BatchNormalizationHandler(ChannelwiseHandler):
    """BatchNormalization over the last axis."""

    def validate(self, layer):
        super().validate(layer)
        if layer.axis not in (-1, len(layer.input.shape) - 1):
            raise ValueError(
                f"Layer '{layer.name}' (BatchNormalization) normalises axis "
                f"{layer.axis}; only the last (channel) axis is supported."
            )


class ActivationHandler(ChannelwiseHandler):
    """An Activation layer: per-channel unless its function mixes channels (softmax)."""

    def trace(self, layer, in_classes, out_shapes, graph):
        from keras_split.graph.activations import NON_ELEMENTWISE, activation_name

        if activation_name(layer.activation) in NON_ELEMENTWISE:
            return SINK.trace(layer, in_classes, out_shapes, graph)
        return [in_classes[0]]


class ProducerHandler(LayerHandler):
    """Dense and Conv2D: each output unit is a neuron that can be split.

    Kernel layout ``[..., fan_in_channels, units]``: the input channel axis is
    -2 (incoming weights of a duplicated channel are halved), the output axis
    -1 (a split unit's filter is duplicated, then perturbed along its
    eigenvector by the caller).
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


class Conv2DHandler(ProducerHandler):
    units_key = "filters"


class DepthwiseConv2DHandler(LayerHandler):
    """DepthwiseConv2D: channel ``c`` yields outputs ``c*m .. c*m+m-1``; filters are duplicated."""

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


class MergeHandler(LayerHandler):
    """Element-wise merges (Add, Subtract, Multiply, Average, Maximum, Minimum).

    Channel ``j`` of every input is tied to channel ``j`` of the others: they
    form one coupled group, split together or not at all.
    """

    role = "merge"

    def trace(self, layer, in_classes, out_shapes, graph):
        sizes = {c.size for c in in_classes}
        if len(sizes) != 1:
            # Broadcasting over channels: the channels cannot be split.
            return SINK.trace(layer, in_classes, out_shapes, graph)
        for other in in_classes[1:]:
            graph.union(in_classes[0], other)
        return [in_classes[0]]

    def propagate(self, layer, in_maps, out_masks):
        first = in_maps[0].src
        for other in in_maps[1:]:
            if not np.array_equal(other.src, first):
                raise ValueError(
                    f"Cannot split through '{layer.name}' ({type(layer).__name__}): "
                    "its inputs would be widened in different channel orders "
                    "(a DepthwiseConv2D with depth_multiplier > 1 on one branch)."
                )
        return [in_maps[0]]

    def widen(self, layer, in_maps, out_maps):
        return {}, {}


class ConcatenateHandler(MergeHandler):
    """Concatenate: along the channel axis the classes are stacked (channel offsets)."""

    def trace(self, layer, in_classes, out_shapes, graph):
        rank = len(out_shapes[0])
        if layer.axis in (-1, rank - 1):
            return [np.concatenate(in_classes)]
        return super().trace(layer, in_classes, out_shapes, graph)

    def propagate(self, layer, in_maps, out_masks):
        if layer.axis in (-1, len(layer.output.shape) - 1):
            offsets = np.cumsum([0] + [m.old_size for m in in_maps[:-1]])
            src = np.concatenate([m.src + off for m, off in zip(in_maps, offsets)])
            return [ChannelMap(src, sum(m.old_size for m in in_maps))]
        return super().propagate(layer, in_maps, out_masks)


class FlattenHandler(LayerHandler):
    """Flatten (channels last): the channel classes repeat at every spatial position."""

    def trace(self, layer, in_classes, out_shapes, graph):
        positions = out_shapes[0][-1] // max(in_classes[0].size, 1)
        return [np.tile(in_classes[0], positions)]

    def propagate(self, layer, in_maps, out_masks):
        return [in_maps[0].tile(out_masks[0].size // max(in_maps[0].old_size, 1))]

    def widen(self, layer, in_maps, out_maps):
        return {}, {}


class SinkHandler(LayerHandler):
    """Layers that mix channels (Softmax, LayerNormalization, Reshape, Permute).

    Their input channels are fixed (never split) and their outputs start fixed
    classes, so the layer itself is never widened.
    """

    role = "sink"

    def trace(self, layer, in_classes, out_shapes, graph):
        for classes in in_classes:
            graph.fix(classes)
        return [graph.fixed(shape[-1] if shape else 1) for shape in out_shapes]

    def propagate(self, layer, in_maps, out_masks):
        return [ChannelMap.identity(m.size) for m in out_masks]

    def widen(self, layer, in_maps, out_maps):
        return {}, {}


class OpHandler(LayerHandler):
    """Keras op nodes that act element by element: ``x + 3.0``, ``ops.relu6(x)``, ``x * gate``.

    With one tensor operand (the others Python scalars) an op is per-channel;
    with several, their channels are tied like an element-wise merge layer's
    (a squeeze-and-excitation gate of shape ``(1, 1, C)`` against ``(H, W, C)``
    included). Op nodes have no weights, so nothing of them is widened.
    """

    role = "op"

    def validate(self, layer):
        pass

    def trace(self, layer, in_classes, out_shapes, graph):
        if len(in_classes) == 1:
            return [in_classes[0]]
        return MERGE.trace(layer, in_classes, out_shapes, graph)

    def propagate(self, layer, in_maps, out_masks):
        return MERGE.propagate(layer, in_maps, out_masks)

    def widen(self, layer, in_maps, out_maps):
        return {}, {}


class ReshapeHandler(SinkHandler):
    """Reshape: a sink, except ``(C,) -> (1, ..., 1, C)`` (squeeze-and-excitation), which
    keeps every channel where it is and widens with them."""

    @staticmethod
    def _keeps_channels(layer):
        """Whether ``layer`` turns ``(batch, C)`` into ``(batch, 1, ..., 1, C)``."""
        shape, target = tuple(layer.input.shape), tuple(layer.target_shape)
        return len(shape) == 2 and target[-1] == shape[-1] and all(d == 1 for d in target[:-1])

    def trace(self, layer, in_classes, out_shapes, graph):
        if self._keeps_channels(layer):
            return [in_classes[0]]
        return super().trace(layer, in_classes, out_shapes, graph)

    def propagate(self, layer, in_maps, out_masks):
        if self._keeps_channels(layer):
            return [in_maps[0]]
        return super().propagate(layer, in_maps, out_masks)

    def widen(self, layer, in_maps, out_maps):
        if self._keeps_channels(layer):
            return {"target_shape": tuple(layer.target_shape[:-1]) + (in_maps[0].size,)}, {}
        return {}, {}


SINK = SinkHandler()
CHANNELWISE = ChannelwiseHandler()
PRODUCER = ProducerHandler()
MERGE = MergeHandler()
OP = OpHandler()

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


# Element-wise keras ops (by class name in keras.ops.numpy / keras.ops.nn) that op nodes
# of functional models may use; OP handles them.
ELEMENTWISE_OPS = frozenset((
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum", "Power",
    "Negative", "Abs", "Square", "Sqrt", "Exp", "Clip", "Tanh", "Relu", "Relu6", "Sigmoid",
    "HardSigmoid", "HardSilu", "Silu", "Gelu", "Elu", "Selu", "LeakyRelu", "Softplus",
    "Softsign"))


def get_handler(layer):
    """The handler for ``layer``'s exact class (or, for an op node, for what it computes).

    Raises:
        ValueError: naming the layer and its type when none is registered.
    """
    handler = _REGISTRY.get(type(layer))
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
    if getattr(layer, "groups", 1) != 1 and isinstance(handler, ProducerHandler):
        # A grouped convolution (ConvNeXt's depthwise Conv2D(groups=C)) is not widened:
        # like a sink, its input and output channels are never split.
        handler = SINK
    handler.validate(layer)
    return handler


L = keras.layers
for _cls in (
    L.ReLU, L.LeakyReLU, L.PReLU, L.ELU, L.Dropout, L.SpatialDropout1D,
    L.SpatialDropout2D, L.GaussianNoise, L.GaussianDropout, L.AlphaDropout,
    L.MaxPooling2D, L.AveragePooling2D, L.GlobalAveragePooling2D,
    L.GlobalMaxPooling2D, L.ZeroPadding2D, L.Cropping2D, L.UpSampling2D,
    L.Identity, L.ActivityRegularization,
):
    register_handler(_cls, CHANNELWISE)
register_handler(L.Activation, ActivationHandler())
register_handler(L.BatchNormalization, BatchNormalizationHandler())
register_handler(L.Dense, PRODUCER)
register_handler(L.Conv2D, Conv2DHandler())
register_handler(L.DepthwiseConv2D, DepthwiseConv2DHandler())
for _cls in (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum):
    register_handler(_cls, MERGE)
register_handler(L.Concatenate, ConcatenateHandler())
register_handler(L.Flatten, FlattenHandler())
# Sinks: layers that mix channels, and preprocessing layers keras_split does not widen
# (they sit before the first splittable layer, where channels are fixed anyway).
register_handler(L.Reshape, ReshapeHandler())
for _cls in (L.Softmax, L.LayerNormalization, L.Permute, L.Rescaling,
             L.Normalization, L.Resizing, L.CenterCrop):
    register_handler(_cls, SINK)
for _cls in compat.keras_applications_channelwise_layers():
    register_handler(_cls, CHANNELWISE)
for _cls in compat.keras_applications_merge_layers():
    register_handler(_cls, MERGE)
del L, _cls
