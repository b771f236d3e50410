"""One walk over a functional Keras graph, shared by every reader of the graph.

:func:`functional_nodes` lists the operation nodes of a functional model in
execution order, as :class:`Node` tuples: the channel graph
(:class:`~keras_split.graph.channel_graph.ChannelGraph`), the flattening of
nested models (:func:`~keras_split.graph.functional_model.as_functional`) and
the MAC count (:func:`keras_split.select.flops.count_flops`) all read a model
through it.
"""

import collections

from keras_split import compat

Node = collections.namedtuple("Node", ["layer", "node", "inputs", "outputs"])
Node.__doc__ = """One call in a functional graph.

Attributes:
    layer: the layer (or op, for an op node such as ``x + 3.0``) called.
    node: the Keras graph node of the call.
    inputs: list of its symbolic input tensors.
    outputs: list of its symbolic output tensors.
"""


def functional_nodes(model):
    """The nodes of a functional model in execution order (model inputs left out).

    A nested model appears as one node whose ``layer`` is that model; callers
    that need its inside walk it in turn.

    Args:
        model: a functional ``keras.Model`` (for a Sequential one, pass
            ``compat.functional_graph(model)``).

    Returns:
        A list of :class:`Node`.

    Example:
        >>> [n.layer.name for n in functional_nodes(model)]
        ['conv1', 'bn1', 'relu1', 'flatten', 'dense']
    """
    return [Node(node.operation, node, list(node.input_tensors), list(node.outputs))
            for node in compat.graph_nodes(model)]
