"""Multiply-accumulate counts of a model, from layer configs and static shapes.

Convention: one multiply-accumulate (MAC) per weight use of Dense, Conv2D and
DepthwiseConv2D (the figure MobileNet papers quote); bias additions,
BatchNormalization (folded into the preceding convolution at inference),
activations, pooling and element-wise merges count zero.
"""

import keras
import numpy as np

from keras_split import compat
from keras_split.graph.walk import functional_nodes


def spatial_positions(tensor):
    """Output positions per example: the product of the spatial dimensions (1 for Dense)."""
    shape = tuple(tensor.shape)[1:-1]
    if any(d is None for d in shape):
        raise ValueError(f"Unknown spatial shape {tensor.shape}; give the model static shapes.")
    return int(np.prod(shape)) if shape else 1


def layer_macs(layer, output_tensor):
    """MACs of one call of ``layer`` for one example (0 for layers without matmuls).

    Args:
        layer: a Keras layer.
        output_tensor: its symbolic output in the model.

    Returns:
        int.
    """
    L = keras.layers
    if isinstance(layer, (L.Dense, L.Conv2D, L.DepthwiseConv2D)):
        # Kernel [..., fan_in / groups, units]: one MAC per weight per position.
        return spatial_positions(output_tensor) * int(np.prod(layer.kernel.shape))
    return 0


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
