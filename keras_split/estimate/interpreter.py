"""Runs a functional model layer by layer, with hooks where the splitting estimators
read or replace a neuron's pre-activation ``z`` and activation ``a``."""

import keras
import tensorflow as tf

from keras_split import compat


def layers_with_signal(graph, layers):
    """The producers of ``layers`` whose activation has a non-zero second derivative.

    Args:
        graph: the model's ChannelGraph.
        layers: producer names.

    Returns:
        The names with a splitting signal, in the order of ``layers``.
    """
    active = [n for n in layers if not graph.chains[n].activation.is_zero]
    return active


class Interpreter:
    """Runs a functional model layer by layer in inference mode, with splitting hooks.

    Args:
        graph: the model's ChannelGraph.
        layers: the producer names whose neurons the hooks see.

    Example:
        >>> interp = Interpreter(graph, ["dense"])
        >>> y_pred = interp.run(x, on_producer, on_point)
    """

    def __init__(self, graph, layers):
        self.graph = graph
        self.chains = {name: graph.chains[name] for name in layers}
        self.point_of = {}
        for name, chain in self.chains.items():
            self.point_of.setdefault(chain.point.name, []).append(name)
        self.scale = {
            name: chain.scale() for name, chain in self.chains.items()
        }

    def coefficient(self, name, z, dtype):
        """``sigma''(z) * c**2`` of producer ``name``'s neurons (``c`` the frozen BN scale)."""
        chain = self.chains[name]
        c2 = tf.constant(self.scale[name] ** 2, dtype=dtype)
        return chain.activation.second_derivative(z) * c2

    def run(self, inputs, on_producer, on_point):
        """Returns the model outputs.

        ``on_producer(name, layer, x)`` returns ``(z_or_None, out)``; a non-None
        ``z`` means the producer closes its own neuron (fused activation).
        ``on_point(name, z, a)`` returns the tensor that replaces ``a``.
        """
        model = self.graph.model
        tensors = {}
        for ref, value in zip(model.inputs, keras.tree.flatten(inputs)):
            tensors[id(ref)] = value
        for n in self.graph.nodes:
            layer = n.layer
            args, kwargs = compat.call_arguments(n.node, tensors)
            kwargs = dict(kwargs)
            if isinstance(layer, keras.layers.Layer):   # op nodes take no training flag
                kwargs["training"] = False
            if layer.name in self.chains:
                x = args[0]
                z, out = on_producer(layer.name, layer, x)
                if z is not None:
                    out = on_point(layer.name, z, out)
            else:
                out = layer(*args, **kwargs)
            for name in self.point_of.get(layer.name, []):
                chain = self.chains[name]
                if chain.fused:
                    continue
                linear_end = chain.point is chain.producer or chain.point is chain.batch_norm
                out = on_point(name, out if linear_end else args[0], out)
            for ref, value in zip(n.outputs, keras.tree.flatten(out)):
                tensors[id(ref)] = value
        outs = [tensors[id(t)] for t in model.outputs]
        return outs[0] if len(outs) == 1 else outs
