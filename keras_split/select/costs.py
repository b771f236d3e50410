"""Cost of splitting each coupled group: the MACs (or parameters) it adds to the network.

Splitting group ``g`` widens every tensor that carries one of its channels by
the number of such channels. A Dense/Conv2D layer with ``cin`` inputs and
``cout`` outputs, ``k`` kernel positions and ``P`` output positions costs
``P * k * cin * cout`` MACs; if the split adds ``a`` input and ``b`` output
channels it adds ``P * k * (a * cout + cin * b + a * b)``: the child filters,
the extra input channels of every consumer (at every position after a
Flatten), and the duplicated DepthwiseConv2D filters (``P * k * m * a``).
Costs are measured on the current network, so they change from stage to stage.

``"sqrt_flops"`` is the seed papers' code's cost: each group costs the square root
of the MACs it adds, and the network's total is the sum of its groups' costs, so
that a budget of ``growth_ratio`` times it is their "grow x channels x sqrt(MACs)".
"""

import numpy as np

from keras_split.select.flops import layer_macs

COST_MODES = ("flops", "params", "uniform", "sqrt_flops")


def column_counts(graph, tensor, index, n_cols):
    """Per column of ``index`` (group id -> column, several groups may share one), how many
    channels of ``tensor`` it has: ``float64[n_cols]``."""
    roots = graph.root[graph.tensor_classes[id(tensor)]]
    counts = np.zeros(n_cols)
    cols = np.array([index.get(int(r), -1) for r in roots], dtype=np.int64)
    np.add.at(counts, cols[cols >= 0], 1.0)
    return counts


def channel_counts(graph, tensor, groups):
    """How many channels of ``tensor`` each of ``groups`` has: ``float64[len(groups)]``.

    Example:
        >>> channel_counts(graph, model.get_layer("conv").output, [3, 4])
        array([1., 0.])
    """
    return column_counts(graph, tensor, {int(g): i for i, g in enumerate(groups)}, len(groups))


def _added_cost(graph, index, n_cols, mode):
    """The cost each column of groups adds when its groups are split together."""
    total = np.zeros(n_cols)
    for n in graph.nodes:
        layer = n.layer
        if not getattr(layer, "weights", None) or not n.inputs:   # op nodes have none
            continue
        a = column_counts(graph, n.inputs[0], index, n_cols)
        b = column_counts(graph, n.outputs[0], index, n_cols)
        total += graph.handlers[layer.name].added_cost(layer, n.inputs, n.outputs, a, b, mode)
    return total


def _check_mode(mode):
    if mode not in COST_MODES:
        raise ValueError(f"cost mode must be one of {COST_MODES} or a callable, got {mode!r}.")


def group_costs(graph, groups, mode="flops"):
    """Cost of splitting each group alone, on the current network.

    Args:
        graph: a :class:`~keras_split.graph.channel_graph.ChannelGraph`.
        groups: list of group ids.
        mode: ``"flops"`` (MACs), ``"params"`` (weights, BatchNorm statistics
            included) or ``"uniform"`` (1 per group).

    Returns:
        ``float64[len(groups)]``.

    Raises:
        ValueError: for an unknown mode.

    Example:
        >>> group_costs(graph, [g1, g2], "flops")
        array([1152., 864.])
    """
    _check_mode(mode)
    groups = [int(g) for g in groups]
    if mode == "uniform":
        return np.ones(len(groups))
    if mode == "sqrt_flops":
        return np.sqrt(group_costs(graph, groups, "flops"))
    return _added_cost(graph, {g: i for i, g in enumerate(groups)}, len(groups), mode)


def network_cost(graph, mode="flops"):
    """The current network's total cost in the same unit as :func:`group_costs`.

    Returns:
        MACs for ``"flops"``, the parameter count for ``"params"``, the number
        of splittable groups for ``"uniform"``, the sum of every group's cost for
        ``"sqrt_flops"``.
    """
    _check_mode(mode)
    if mode == "sqrt_flops":
        return float(group_costs(graph, sorted(graph.groups), mode).sum())
    if mode == "flops":
        return float(sum(layer_macs(n.layer, n.outputs[0]) for n in graph.nodes))
    if mode == "params":
        return float(graph.model.count_params())
    return float(len(graph.groups))


def widened_cost(graph, groups, mode="flops"):
    """The exact total cost after splitting all ``groups`` together (cross terms included)."""
    _check_mode(mode)
    groups = [int(g) for g in groups]
    if mode == "sqrt_flops":   # additive by definition
        return network_cost(graph, mode) + float(group_costs(graph, groups, mode).sum())
    if mode == "uniform" or not groups:
        return network_cost(graph, mode) + (len(groups) if mode == "uniform" else 0)
    return network_cost(graph, mode) + float(
        _added_cost(graph, {g: 0 for g in groups}, 1, mode)[0]
    )
