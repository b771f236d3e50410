"""Per-layer-type handlers: how channels flow through a layer and how it widens.

Every layer of a model that :class:`keras_split.GrowingModel` grows needs a
handler, looked up by the layer's exact class in a registry. A handler answers
two questions:

* ``trace``: which *channel classes* the layer's output channels carry, given
  those of its inputs. Producers (Dense, Conv2D) start new classes; per-channel
  layers (BatchNormalization, activations, pooling, DepthwiseConv2D, ...) pass
  them on; element-wise merges (Add, Multiply, ...) tie the channels of their
  inputs into one coupled group; Concatenate stacks them; Flatten repeats them
  for every spatial position; *sinks* (Softmax, LayerNormalization, Reshape,
  recurrent layers, transposed convolutions, Embedding) mix channels or cannot
  be widened, so whatever reaches them can never be split.
* ``widen``: given how each input and output tensor was widened (a
  :class:`~keras_split.graph.channel_map.ChannelMap`), the new layer config and how
  every weight is rebuilt. Consumers halve the incoming weights of a duplicated
  channel, per-channel layers duplicate their entries unchanged.

Register a handler for your own layer with
:func:`keras_split.graph.handler_registry.register_handler`.
"""

import numpy as np
import keras

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

    # What the cost model, the estimators and the report ask of a layer; the defaults
    # are a layer without matmuls that is not an activation.
    normalizes = False   # a per-channel normalisation that folds into the producer before it
    identity_at_inference = False   # dropout, noise, augmentation: left out of exports

    def macs(self, layer, output_tensor):
        """Multiply-accumulates of one call for one example (0: no matmul)."""
        return 0

    def added_cost(self, layer, inputs, outputs, a, b, mode):
        """What splitting adds to one call of this layer, per column of split groups.

        Args:
            layer: the layer.
            inputs, outputs: the call's symbolic input and output tensors.
            a, b: ``float[n_cols]``, how many channels of its first input (``a``)
                and of its first output (``b``) each column of groups adds.
            mode: ``"flops"`` (MACs per example) or ``"params"``.

        Returns:
            ``float[n_cols]``.
        """
        if mode != "params" or not layer.weights:
            return np.zeros_like(a)
        # Per-channel weights (BatchNormalization, PReLU): one entry per channel.
        channels = inputs[0].shape[-1]
        per = sum(int(np.prod(w.shape[:-1])) for w in layer.weights if w.shape[-1] == channels)
        return per * a

    def export_config(self, layer):
        """The config the layer is rebuilt with for a TFLite export (default: its own)."""
        return layer.get_config()

    def exported_tensors(self, layer):
        """How many tensors of its output's shape the layer's ops materialise in an
        exported (TFLite) graph: 1 by default; 0 for a layer folded or fused into the op
        before it (BatchNormalization, ReLU and ReLU6, Dropout at inference); 2 for
        swish (a logistic, then a product)."""
        return 1

    def activation(self, layer):
        """``(fn, name)`` when the layer is an element-wise activation that can close a
        neuron (``name`` as :func:`~keras_split.graph.activations.activation_name`
        reports it), else None."""
        return None

    def unit_kernels(self, layer):
        """``[fan_in, units]``: every output unit's incoming weights, for a producer
        whose units are filters over its input; None otherwise."""
        return None

    def for_layer(self, layer):
        """The handler that treats this particular layer (its configuration may call for
        another, e.g. a grouped convolution); ``self`` by default."""
        return self

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


class InferenceIdentityHandler(ChannelwiseHandler):
    """Per-channel layers that are the identity at inference (Dropout, GaussianNoise,
    Identity, ActivityRegularization, the Random* augmentation layers, which transform
    every channel of an example alike): nothing of them is exported."""

    identity_at_inference = True

    def exported_tensors(self, layer):
        return 0


class BatchNormalizationHandler(ChannelwiseHandler):
    """BatchNormalization over the last axis."""

    normalizes = True

    def exported_tensors(self, layer):
        return 0   # folded into the producer before it

    def rescale_input(self, layer, scale, updates, edits):
        """Plans the statistics of an input multiplied by ``scale``: the moving mean by
        ``scale``, the moving variance and ``epsilon`` by ``scale**2``, so that the
        normalised output is exactly the same (``updates``/``edits`` as ``widen``'s)."""
        updates["epsilon"] = layer.epsilon * scale ** 2
        edits.setdefault("moving_mean", WeightEdit()).scale = scale
        edits.setdefault("moving_variance", WeightEdit()).scale = scale ** 2

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
        if self.activation(layer) is None:   # softmax and the like mix channels
            return SINK.trace(layer, in_classes, out_shapes, graph)
        return [in_classes[0]]

    def activation(self, layer):
        from keras_split.graph.activations import NON_ELEMENTWISE, activation_name

        name = activation_name(layer.activation)
        return None if name in NON_ELEMENTWISE else (layer.activation, name)

    def exported_tensors(self, layer):
        from keras_split.graph.activations import activation_name

        return EXPORTED_TENSORS.get(activation_name(layer.activation), 1)


class ActivationLayerHandler(ChannelwiseHandler):
    """An activation layer (ReLU, LeakyReLU, PReLU, ELU) that closes a neuron as the
    activation ``name`` (PReLU as ``"leaky_relu"``: piecewise linear)."""

    def __init__(self, name):
        self.name = name

    def activation(self, layer):
        return layer, self.name

    def exported_tensors(self, layer):
        # ReLU and ReLU6 fuse into the op before them; a threshold, a slope or another
        # cap is an op of its own.
        config = layer.get_config()
        plain = (self.name == "relu" and not config.get("negative_slope")
                 and not config.get("threshold") and config.get("max_value") in (None, 6.0))
        return 0 if plain else 1


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


def _input_positions(layer):
    """Positions (time steps, pixels) per example of ``layer``'s first call's input."""
    shape = tuple(layer.input.shape)[1:-1]
    if any(d is None for d in shape):
        raise ValueError(f"Layer '{layer.name}' ({type(layer).__name__}) has the unknown "
                         f"input shape {tuple(layer.input.shape)}; give the model static shapes.")
    return int(np.prod(shape)) if shape else 1


class RecurrentHandler(SinkHandler):
    """Recurrent layers (LSTM, GRU, SimpleRNN, Bidirectional): fixed like a sink (their
    gates mix every channel), their multiply-accumulates counted.

    One step multiplies the input by ``kernel`` and the state by ``recurrent_kernel``;
    a Bidirectional layer runs both of its layers.
    """

    def macs(self, layer, output_tensor):
        directions = [getattr(layer, "forward_layer", None), getattr(layer, "backward_layer", None)]
        cells = [d.cell for d in directions if d is not None] or [layer.cell]
        per_step = sum(int(np.prod(c.kernel.shape)) + int(np.prod(c.recurrent_kernel.shape))
                       for c in cells)
        return _input_positions(layer) * per_step

    def export_config(self, layer):
        """Unrolled over a static number of steps: TFLite's converter cannot lower the
        loop of a recurrent layer whose batch size is not fixed."""
        config = layer.get_config()
        if layer.input.shape[1] is None:
            return config
        inner = [config[k]["config"] for k in ("layer", "backward_layer")
                 if isinstance(config.get(k), dict)] or [config]
        for c in inner:
            c["unroll"] = True
        return config


class TransposedConvHandler(SinkHandler):
    """Conv1DTranspose and Conv2DTranspose: not widened (fixed like a sink), their
    multiply-accumulates counted: one per kernel weight per input position."""

    def macs(self, layer, output_tensor):
        return _input_positions(layer) * int(np.prod(layer.kernel.shape))


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


# Tensors an activation's ops materialise in a TFLite graph (1 for any other): fused into
# the op before it, or a logistic and a product.
EXPORTED_TENSORS = {"linear": 0, "relu": 0, "relu6": 0, "swish": 2, "silu": 2}

SINK = SinkHandler()
CHANNELWISE = ChannelwiseHandler()
INFERENCE_IDENTITY = InferenceIdentityHandler()
MERGE = MergeHandler()
OP = OpHandler()
