"""Multiply-accumulate counts of a model, from layer configs and static shapes.

Convention: one multiply-accumulate (MAC) per weight use of Dense, Conv2D and
DepthwiseConv2D (the figure MobileNet papers quote); bias additions,
BatchNormalization (folded into the preceding convolution at inference),
activations, pooling and element-wise merges count zero.
"""

import keras

from keras_split import compat
from keras_split.graph.handler_registry import registered_handler
from keras_split.graph.walk import functional_nodes


def layer_macs(layer, output_tensor):
    """MACs of one call of ``layer`` for one example (0 for layers without matmuls).

    Args:
        layer: a Keras layer.
        output_tensor: its symbolic output in the model.

    Returns:
        int: what the handler registered for the layer's class counts
        (``LayerHandler.macs``; 0 for a class without one).
    """
    handler = registered_handler(layer)
    return 0 if handler is None else int(handler.macs(layer, output_tensor))


def count_flops(model):
    """Multiply-accumulates of one forward pass for one example.

    Args:
        model: a ``keras.Model`` (functional, Sequential or
            :class:`keras_split.GrowingModel`).

    Returns:
        int, the number of MACs.

    Raises:
        ValueError: for a model with unknown static shapes.

    Example:
        >>> count_flops(keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)]))
        32
    """
    network = compat.functional_graph(getattr(model, "network", model))
    if network is None:
        raise ValueError(f"count_flops needs a functional or Sequential model, got {type(model).__name__}.")
    total = 0
    for n in functional_nodes(network):
        if isinstance(n.layer, keras.Model):
            total += count_flops(n.layer)
            continue
        for out in n.outputs:
            total += layer_macs(n.layer, out)
    return int(total)
