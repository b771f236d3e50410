"""Channel coupling analysis of a functional Keras model.

:class:`ChannelGraph` walks a functional model once, layer by layer, and
assigns every channel of every tensor a *class*. A producer (Dense, Conv2D)
starts one class per output unit; classes flow through per-channel layers;
element-wise merges (a residual ``Add``) union the classes of their inputs
channel by channel (a union-find), so that all producers whose channels are
tied end up in one *coupled group*. Channels that reach a model output, a model
input or a channel-mixing layer are *fixed*: they can never be split.

The graph also finds, for every producer, the *neuron chain* that closes it:
an optional BatchNormalization (whose frozen scale ``c = gamma / sqrt(var + eps)``
enters the splitting matrix as ``c**2``) and the element-wise activation.
"""

import collections

import keras
import numpy as np

from keras_split.graph import activations as act_lib
from keras_split import compat
from keras_split.graph.channel_map import ChannelMap
from keras_split.graph.handler_registry import get_handler
from keras_split.graph.handlers import SINK
from keras_split.graph.walk import functional_nodes

FIXED = 0


class NeuronChain:
    """The layers that close the neurons of one producer.

    Attributes:
        producer: the Dense/Conv2D layer.
        batch_norm: the BatchNormalization that directly follows it, or None.
        point: the layer at whose output the auxiliary activation is added
            (the activation layer, the BatchNormalization, or the producer).
        fused: True when the activation is the producer's own ``activation``.
        activation: a :class:`keras_split.graph.activations.NeuronActivation`.
    """

    def __init__(self, producer, batch_norm, point, fused, activation):
        self.producer = producer
        self.batch_norm = batch_norm
        self.point = point
        self.fused = fused
        self.activation = activation

    def scale(self):
        """The frozen BatchNorm scale ``c`` per unit (ones without BatchNorm), numpy."""
        units = self.producer.output.shape[-1]
        bn = self.batch_norm
        if bn is None:
            return np.ones(units)
        var = keras.ops.convert_to_numpy(bn.moving_variance).astype(np.float64)
        gamma = (
            keras.ops.convert_to_numpy(bn.gamma).astype(np.float64)
            if bn.scale else np.ones(units)
        )
        return gamma / np.sqrt(var + bn.epsilon)

    def __repr__(self):
        return (
            f"NeuronChain({self.producer.name} -> "
            f"{self.batch_norm.name if self.batch_norm else '-'} -> "
            f"{self.point.name}, {self.activation!r})"
        )


def _shape_tuple(tensor):
    return tuple(tensor.shape)


class ChannelGraph:
    """Channel classes, coupled groups and neuron chains of a functional model.

    Args:
        model: a built functional ``keras.Model``.
        surrogate: None or ``"softplus"``, for the neuron activations.
        surrogate_beta: the softplus surrogate's sharpness.

    Raises:
        ValueError: for a nested model, a layer called more than once, an
            unsupported layer type or configuration, or a layer whose static
            shape is unknown where it matters; the message names the layer.

    Example:
        >>> graph = ChannelGraph(model)
        >>> graph.splittable_layers
        ['conv1', 'conv2']
    """

    def __init__(self, model, surrogate="softplus", surrogate_beta=act_lib.SOFTPLUS_BETA):
        self.model = model
        self.surrogate = act_lib.validate_surrogate(surrogate)
        self.surrogate_beta = act_lib.validate_surrogate_beta(surrogate_beta)
        self.nodes = self._ordered_nodes(model)
        self._parent = [FIXED]
        self._owner = [None]
        self.tensor_classes = {}
        self.consumers = collections.defaultdict(list)
        self.handlers = {}
        for inp in model.inputs:
            self.tensor_classes[id(inp)] = self.fixed(_shape_tuple(inp)[-1] or 1)
        for n in self.nodes:
            for t in n.inputs:
                self.consumers[id(t)].append(n)
        problems = list(self._problems)
        for n in self.nodes:
            try:
                handler = get_handler(n.layer)
                if not isinstance(n.layer, keras.layers.Layer):
                    _check_op_constants(n)
            except ValueError as err:
                # Every unsupported node is listed in one error; tracing goes on past it.
                problems.append(str(err))
                handler = SINK
            self.handlers[n.layer.name] = handler
            in_classes = [self.tensor_classes[id(t)] for t in n.inputs]
            out_shapes = [_shape_tuple(t) for t in n.outputs]
            if any(shape and shape[-1] is None for shape in out_shapes):
                problems.append(
                    f"Layer '{n.layer.name}' ({type(n.layer).__name__}) has an unknown "
                    "channel dimension; give the model static shapes.")
                handler = SINK
                out_shapes = [shape[:-1] + (1,) if shape else shape for shape in out_shapes]
            outs = handler.trace(n.layer, in_classes, out_shapes, self)
            for t, classes in zip(n.outputs, outs):
                self.tensor_classes[id(t)] = np.asarray(classes, dtype=np.int64)
        if problems:
            raise ValueError(
                f"keras_split cannot grow '{model.name}': {len(problems)} "
                f"node{'s are' if len(problems) > 1 else ' is'} not supported:\n- "
                + "\n- ".join(problems))
        for out in model.outputs:
            self.fix(self.tensor_classes[id(out)])
        self._finalize()

    # ----------------------------------------------------------- construction
    def _ordered_nodes(self, model):
        """The model's nodes in execution order; a layer called at several places is
        recorded in ``self._problems`` (one of them per extra call)."""
        seen = set()
        nodes = []
        self._problems = []
        for n in functional_nodes(model):
            if n.layer.name in seen:
                self._problems.append(
                    f"Layer '{n.layer.name}' ({type(n.layer).__name__}) is shared: "
                    "it is called at more than one place in the model, so "
                    "its channels cannot be split consistently.")
            seen.add(n.layer.name)
            nodes.append(n)
        return nodes

    def new_classes(self, layer_name, n):
        start = len(self._parent)
        self._parent.extend(range(start, start + n))
        self._owner.extend((layer_name, k) for k in range(n))
        return np.arange(start, start + n, dtype=np.int64)

    def fixed(self, n):
        return np.full(int(n), FIXED, dtype=np.int64)

    def _find(self, i):
        parent = self._parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def union(self, a, b):
        for x, y in zip(np.asarray(a).tolist(), np.asarray(b).tolist()):
            rx, ry = self._find(x), self._find(y)
            if rx != ry:
                # FIXED stays a root, so that "is fixed" is "root == FIXED".
                if ry == FIXED:
                    rx, ry = ry, rx
                self._parent[ry] = rx

    def fix(self, classes):
        self.union(np.zeros_like(classes), classes)

    def _finalize(self):
        self.root = np.array([self._find(i) for i in range(len(self._parent))])
        self.groups = collections.defaultdict(list)
        for cid, owner in enumerate(self._owner):
            if owner is not None and self.root[cid] != FIXED:
                self.groups[int(self.root[cid])].append(owner)
        self.producers = {
            n.layer.name: n for n in self.nodes
            if self.handlers[n.layer.name].role == "producer"
        }
        self._producer_classes = {
            name: self.tensor_classes[id(n.outputs[0])]
            for name, n in self.producers.items()
        }
        self.splittable_layers = [
            name for name, classes in self._producer_classes.items()
            if np.any(self.root[classes] != FIXED)
        ]
        self.chains = {name: self._chain(name) for name in self.splittable_layers}

    def _single_consumer(self, tensor):
        users = self.consumers.get(id(tensor), [])
        if len(users) != 1 or any(id(o) == id(tensor) for o in self.model.outputs):
            return None
        return users[0]

    def _chain(self, name):
        node = self.producers[name]
        layer = node.layer
        fn = getattr(layer, "activation", None)
        act_name = act_lib.activation_name(fn)
        if act_name not in ("linear",):
            if act_name in act_lib.NON_ELEMENTWISE:
                fn, act_name = None, "linear"
            else:
                return NeuronChain(
                    layer, None, layer, True,
                    act_lib.NeuronActivation(fn, act_name, self.surrogate, self.surrogate_beta),
                )
        point, bn = layer, None
        tensor = node.outputs[0]
        nxt = self._single_consumer(tensor)
        if nxt is not None and self.handlers[nxt.layer.name].normalizes:
            bn = point = nxt.layer
            tensor = nxt.outputs[0]
            nxt = self._single_consumer(tensor)
        if nxt is not None:
            act = self.handlers[nxt.layer.name].activation(nxt.layer)
            if act is not None:
                return NeuronChain(
                    layer, bn, nxt.layer, False,
                    act_lib.NeuronActivation(act[0], act[1], self.surrogate, self.surrogate_beta),
                )
        return NeuronChain(
            layer, bn, point, False,
            act_lib.NeuronActivation(None, "linear", self.surrogate, self.surrogate_beta),
        )

    # ---------------------------------------------------------------- queries
    def group_of(self, layer_name, unit):
        """The coupled-group id of ``layer_name``'s output channel ``unit`` (FIXED if unsplittable)."""
        return int(self.root[self._producer_classes[layer_name][unit]])

    def units(self, layer_name):
        """The number of output units of producer ``layer_name``."""
        return int(self._producer_classes[layer_name].size)

    def kernel(self, layer_name):
        """The kernel variable of producer ``layer_name`` whose last axis is its units
        (``[..., fan_in, units]``, e.g. a SeparableConv2D's pointwise kernel)."""
        return self.handlers[layer_name].kernel(self.producers[layer_name].layer)

    def group_members(self, group):
        """``[(layer_name, unit), ...]`` of the producers tied in ``group``."""
        return list(self.groups[group])

    def channel_maps(self, groups):
        """The ChannelMap of every tensor when the coupled ``groups`` are split.

        Maps are propagated through the graph by each layer's handler, so that
        they follow the real channel order of every tensor (a producer puts the
        copy of a split unit right after it; a DepthwiseConv2D with depth
        multiplier ``m`` keeps its ``m`` outputs per input channel together).

        Returns:
            dict ``id(tensor) -> ChannelMap``.

        Raises:
            ValueError: when a merge would receive inputs widened in different orders.
        """
        selected = np.zeros(len(self.root), dtype=bool)
        selected[list(groups)] = True
        maps = {
            id(t): ChannelMap.identity(self.tensor_classes[id(t)].size)
            for t in self.model.inputs
        }
        for n in self.nodes:
            in_maps = [maps[id(t)] for t in n.inputs]
            masks = [selected[self.root[self.tensor_classes[id(t)]]] for t in n.outputs]
            for t, m in zip(n.outputs, self.handlers[n.layer.name].propagate(n.layer, in_maps, masks)):
                maps[id(t)] = m
        return maps


def _check_op_constants(n):
    """Raises ValueError for an op node with a constant operand of more than one element
    (it could not follow a widening of its channels)."""
    for value in compat.call_constants(n.node):
        if np.size(value) <= 1:
            continue
        raise ValueError(
            f"'{n.layer.name}' is an op node ({type(n.layer).__name__}) with a constant "
            f"operand of shape {np.shape(value)}, which could not be widened with the "
            "channels: make it a weight of a layer, or a scalar.")
