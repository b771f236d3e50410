"""Parameter bytes of the exported model: its weights at the export dtype.

A converter folds each BatchNormalization into the kernel before it and gives every
layer with a kernel (Dense, convolutions) a bias of one entry per output channel; the
kernels are stored at the export dtype and the biases at float32, float16 or, in an
int8 model, int32. Splitting a group adds kernel entries (the child filters and the
consumers' new inputs, as the layer handlers count them) and one bias entry per new
output channel of each layer with a kernel.
"""

import numpy as np

from keras_split.select import costs as cost_lib
from keras_split.select.cost_models import CostModel

# Bytes of one kernel entry and of one bias entry at each export dtype.
WEIGHT_BYTES = {"float32": (4, 4), "float16": (2, 2), "int8": (1, 4)}


def _has_kernel(layer):
    return any(len(w.shape) >= 2 for w in getattr(layer, "weights", ()))


class ParamBytes(CostModel):
    """Bytes of the exported weights (flash on a microcontroller; a cost model).

    Args:
        dtype: the export type of the kernels: ``"float32"``, ``"float16"`` or
            ``"int8"`` (int32 biases).

    Raises:
        ValueError: for an unknown ``dtype``.

    Example:
        >>> model.grow(data, budgets={ParamBytes("int8"): 250_000})
    """

    def __init__(self, dtype="float32"):
        if dtype not in WEIGHT_BYTES:
            raise ValueError(f"dtype must be one of {tuple(WEIGHT_BYTES)}. "
                             f"Received: dtype={dtype!r}")
        self.dtype = dtype
        self.name = f"param_bytes_{dtype}"

    def group_costs(self, graph, groups):
        return self._added(graph, {int(g): i for i, g in enumerate(groups)}, len(groups))

    def _added(self, graph, index, n_cols):
        """Bytes each column of ``index`` (group id -> column) adds when split together."""
        w_bytes, b_bytes = WEIGHT_BYTES[self.dtype]
        total = np.zeros(n_cols)
        for node in graph.nodes:
            layer = node.layer
            if not node.inputs or not _has_kernel(layer):
                continue
            a = cost_lib.column_counts(graph, node.inputs[0], index, n_cols)
            b = cost_lib.column_counts(graph, node.outputs[0], index, n_cols)
            params = graph.handlers[layer.name].added_cost(layer, node.inputs, node.outputs,
                                                           a, b, "params")
            kernel = params - (b if getattr(layer, "use_bias", False) else 0.0)
            total += w_bytes * kernel + b_bytes * b
        return total

    def network_cost(self, graph):
        w_bytes, b_bytes = WEIGHT_BYTES[self.dtype]
        total = 0.0
        for node in graph.nodes:
            layer = node.layer
            if node.inputs and _has_kernel(layer):
                kernel = sum(int(np.prod(w.shape)) for w in layer.weights if len(w.shape) >= 2)
                total += w_bytes * kernel + b_bytes * int(node.outputs[0].shape[-1])
        return float(total)

    def widened_cost(self, graph, groups):
        # All groups in one column: the cross terms (a split layer's new units reading a
        # split input) counted once.
        return self.network_cost(graph) + float(
            self._added(graph, {int(g): 0 for g in groups}, 1)[0])

    def __repr__(self):
        return f"ParamBytes(dtype={self.dtype!r})"
