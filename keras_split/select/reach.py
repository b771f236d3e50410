"""Which units a knapsack could still pick while their eigenvalues are being estimated."""

import dataclasses

import numpy as np

from keras_split.select.budget import group_values

# A group is within reach of a selection when its most favourable value per cost is at
# least this fraction of the least valuable chosen group's (see within_reach).
REACH_MARGIN = 0.5


def within_reach(graph, eigenpairs, selection, value="lambda", margin=REACH_MARGIN):
    """The units that the knapsack could pick once their eigenvalues are known exactly.

    ``eigenpairs`` are estimates with residuals ``r``: some eigenvalue of each
    neuron lies within ``r`` of its estimate, and an iterative estimate of the
    smallest one only falls as it converges, so ``lambda - r`` is a unit's most
    favourable value. A coupled group is within reach when ``selection`` (the
    knapsack on the estimates) chose it, or when its most favourable value per
    unit of cost is at least ``margin`` times that of the least valuable group
    chosen. The others would need their value to grow by more than ``1 / margin``
    to compete, further than their residuals allow.

    Args:
        graph: the model's ChannelGraph.
        eigenpairs: ``{layer: Eigenpairs}`` with residuals (None counts as 0).
        selection: the :class:`Selection` made with these eigenpairs.
        value: how a group is valued, as in :func:`group_values`.
        margin: in ``(0, 1]``; smaller keeps more groups within reach.

    Returns:
        ``{layer: bool[units]}``, or None when nothing was chosen (every unit may
        then matter).

    Example:
        >>> selection = select_groups(graph, eig, 0.5, value="relative")
        >>> within_reach(graph, eig, selection, "relative")["conv1"]
        array([ True, False,  True])
    """
    if not len(selection.chosen):
        return None
    costs = np.asarray(selection.costs, dtype=np.float64)
    free = costs <= 0
    safe = np.where(free, 1.0, costs)
    # Groups chosen although not negative (a budget's fill) set no bar to compete with.
    paid = np.where(free | (selection.values >= 0), np.inf, -selection.values / safe)
    least = float(np.min(paid[selection.chosen]))
    favourable = {n: dataclasses.replace(
        e, values=e.values - (0.0 if e.residuals is None else e.residuals))
        for n, e in eigenpairs.items()}
    best = -group_values(graph, selection.groups, favourable, value)
    reach = free | (best / safe >= margin * least) if np.isfinite(least) else free | (best > 0)
    reach[selection.chosen] = True
    masks = {n: np.zeros(graph.units(n), dtype=bool) for n in eigenpairs}
    for g, group in enumerate(selection.groups):
        if reach[g]:
            for name, unit in graph.group_members(group):
                if name in masks:
                    masks[name][unit] = True
    return masks
