"""Peak activation memory: the largest sum of live tensors over the execution order.

An interpreter that plans its tensors' memory ahead (TFLite's arena planner) needs at
least, at every op, the bytes of every tensor produced so far and still to be read:
the op's inputs and outputs and whatever a later op reads. The peak over the ops is
what a microcontroller's RAM must hold besides the weights. The graph is read as it
is exported: a BatchNormalization folds into the producer before it, ReLU and ReLU6
fuse into it, Dropout disappears (each layer's handler says how many tensors its ops
materialise), and a swish is a logistic then a product.

Splitting a group adds channels to the tensors that carry it, so the bytes live at
every op are linear in the groups split: one knapsack constraint per op keeps a limit
on the peak exactly.
"""

import numpy as np

from keras_split.select import costs as cost_lib
from keras_split.select.cost_models import CostModel

# Bytes of one element of an activation at each export dtype.
ACTIVATION_BYTES = {"float32": 4, "float16": 2, "int8": 1}


class PeakActivationMemory(CostModel):
    """Peak bytes of live activations of one inference (a cost model).

    Args:
        dtype: the activations' type once exported: ``"float32"``, ``"float16"``
            (TFLite keeps float32 activations in a float16 model; pass it to count
            half-precision kernels) or ``"int8"``.
        batch_size: examples per inference.

    Raises:
        ValueError: for an unknown ``dtype`` or a ``batch_size`` below 1.

    Example:
        >>> model.grow(data, budgets={PeakActivationMemory("int8"): 64 * 1024})
    """

    name = "peak_activation_bytes"

    def __init__(self, dtype="float32", batch_size=1):
        if dtype not in ACTIVATION_BYTES:
            raise ValueError(f"dtype must be one of {tuple(ACTIVATION_BYTES)}. "
                             f"Received: dtype={dtype!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer. "
                             f"Received: batch_size={batch_size!r}")
        self.dtype, self.batch_size = dtype, batch_size

    def profile(self, graph, groups=()):
        """Bytes live at every op and what splitting each group adds to them.

        Args:
            graph: the network's ChannelGraph.
            groups: coupled-group ids.

        Returns:
            ``(live [ops], added [ops, len(groups)])`` in bytes.
        """
        scale = ACTIVATION_BYTES[self.dtype] * self.batch_size
        records, transients, n_ops = _exported_tensors(graph)
        groups = [int(g) for g in groups]
        live = np.zeros(n_ops)
        added = np.zeros((n_ops, len(groups)))
        for tensor, first, last, copies in records + transients:
            per_channel = float(np.prod(tensor.shape[1:-1], dtype=np.int64))
            channels = float(tensor.shape[-1])
            live[first:last + 1] += copies * per_channel * channels * scale
            if groups:
                counts = cost_lib.channel_counts(graph, tensor, groups)
                added[first:last + 1] += copies * per_channel * scale * counts
        return live, added

    def group_costs(self, graph, groups):
        live, added = self.profile(graph, groups)
        return (live[:, None] + added).max(axis=0) - live.max()

    def network_cost(self, graph):
        return float(self.profile(graph)[0].max())

    def widened_cost(self, graph, groups):
        live, added = self.profile(graph, groups)
        return float((live + added.sum(axis=1)).max())

    def limit_rows(self, graph, groups, limit):
        live, added = self.profile(graph, groups)
        return added, limit - live

    def __repr__(self):
        return f"PeakActivationMemory(dtype={self.dtype!r}, batch_size={self.batch_size})"


def _exported_tensors(graph):
    """The tensors an exported graph materialises, each as ``(tensor, first op, last op,
    copies)``, the transients of multi-op layers (live at their op only), and the ops."""
    root = {}            # id(tensor) -> the tensor whose memory it is
    span = {}            # id(that tensor) -> [tensor, first op, last op]
    transients = []
    for t in graph.model.inputs:
        root[id(t)] = t
        span[id(t)] = [t, 0, 0]
    op = -1
    for node in graph.nodes:
        k = graph.handlers[node.layer.name].exported_tensors(node.layer)
        if (k == 0 and len(node.inputs) == 1 and len(node.outputs) == 1
                and len(graph.consumers[id(node.inputs[0])]) == 1):
            root[id(node.outputs[0])] = root[id(node.inputs[0])]   # folded, fused or gone
            continue
        op += 1
        for t in node.inputs:
            if id(t) in root:
                span[id(root[id(t)])][2] = op
        for t in node.outputs:
            root[id(t)] = t
            span[id(t)] = [t, op, op]
        if k > 1:
            transients += [(t, op, op, k - 1) for t in node.outputs]
    n_ops = max(op + 1, 1)
    for t in graph.model.outputs:
        span[id(root[id(t)])][2] = n_ops - 1
    return [(t, first, last, 1) for t, first, last in span.values()], transients, n_ops
