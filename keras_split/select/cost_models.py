"""Cost models: what splitting coupled groups costs under one measure.

A cost model answers three questions about a network's
:class:`~keras_split.graph.channel_graph.ChannelGraph`: what splitting each coupled
group alone adds (the knapsack's per-item costs), the network's total now, and the
exact total after splitting several groups together (with the cross terms of
widening a layer and its consumer at once). The selection keeps a stage's growth
within ``growth_ratio`` times the total of the main cost model and within every
further budget's limit.

A new measure is one subclass of :class:`CostModel`; the ones counted from the layer
handlers are :class:`MACs` (``"flops"``), :class:`Params` (``"params"``),
:class:`SqrtMACs` (``"sqrt_flops"``, the seed papers' code) and :class:`Uniform`
(``"uniform"``: by eigenvalue alone under the MACs budget); :class:`PerLayerCost` adapts a
callable ``layer -> cost of one of its neurons``. ``ks.costs``
(:mod:`keras_split.select.cost_library`) gathers every cost model.
"""

import math

import numpy as np

from keras_split.select import costs as cost_lib


class CostModel:
    """Base class of the cost models (subclass it for a measure of your own).

    Subclasses implement :meth:`group_costs` and :meth:`network_cost`;
    :meth:`widened_cost` defaults to their sum (exact for an additive cost).

    Example:
        >>> class Filters(CostModel):
        ...     name = "filters"
        ...     def group_costs(self, graph, groups):
        ...         return np.array([len(graph.group_members(g)) for g in groups], float)
        ...     def network_cost(self, graph):
        ...         return float(sum(graph.units(n) for n in graph.splittable_layers))
        >>> model.grow(data, cost=Filters())
    """

    #: The name records and messages use.
    name = "cost"
    #: True for vanilla splitting: candidates by eigenvalue alone, costs only bound.
    by_value_alone = False

    def group_costs(self, graph, groups):
        """What splitting each of ``groups`` alone adds, on the current network.

        Args:
            graph: the network's ChannelGraph.
            groups: a list of coupled-group ids.

        Returns:
            ``float64[len(groups)]``, each finite and >= 0.
        """
        raise NotImplementedError

    def network_cost(self, graph):
        """The network's total now, in the unit of :meth:`group_costs`."""
        raise NotImplementedError

    def widened_cost(self, graph, groups):
        """The exact total after splitting all ``groups`` together (by default the
        total now plus their costs: exact when the cost is additive)."""
        return self.network_cost(graph) + float(np.sum(self.group_costs(graph, list(groups))))

    def limit_rows(self, graph, groups, limit):
        """A limit on this cost as knapsack constraints ``rows @ beta <= rooms``.

        By default one row, the groups' costs, against what the limit leaves of the
        total now; a cost that is a maximum over parts (a peak over the ops) gives
        one row per part, which keeps the limit exactly.

        Returns:
            ``(rows [k, len(groups)], rooms [k])``.
        """
        return (np.asarray(self.group_costs(graph, groups), dtype=np.float64)[None, :],
                np.array([limit - self.network_cost(graph)], dtype=np.float64))

    def __repr__(self):
        return f"{type(self).__name__}()"


class _HandlerCost(CostModel):
    """A cost that the layer handlers count (``added_cost``): MACs or parameters."""

    mode = None

    def group_costs(self, graph, groups):
        return cost_lib.group_costs(graph, groups, self.mode)

    def network_cost(self, graph):
        return cost_lib.network_cost(graph, self.mode)

    def widened_cost(self, graph, groups):
        return cost_lib.widened_cost(graph, groups, self.mode)


class MACs(_HandlerCost):
    """Multiply-accumulates per example (``cost="flops"``, energy-aware splitting).

    Example:
        >>> MACs().network_cost(model.channel_graph) == ks.count_flops(model)
        True
    """

    name = "flops"
    mode = "flops"


class Params(_HandlerCost):
    """Parameters, BatchNormalization statistics included (``cost="params"``).

    Example:
        >>> Params().network_cost(model.channel_graph) == model.count_params()
        True
    """

    name = "params"
    mode = "params"


class SqrtMACs(_HandlerCost):
    """The seed papers' code's cost (``cost="sqrt_flops"``): each group costs the
    square root of the MACs it adds, and the total is the sum over the groups.

    Example:
        >>> model.grow(data, cost=SqrtMACs(), budget_groups="resolution")
    """

    name = "sqrt_flops"
    mode = "sqrt_flops"


class Uniform(MACs):
    """Vanilla splitting (``cost="uniform"``): the candidates with the most negative
    eigenvalues first, until the next one does not fit the MACs budget.

    Example:
        >>> model.grow(data, cost=Uniform())
    """

    name = "uniform"
    by_value_alone = True


class PerLayerCost(CostModel):
    """A cost given per layer by a callable ``layer -> cost of one of its neurons``;
    additive (a group costs the sum of its members' layers' costs).

    Args:
        fn: the callable; it must return a finite number >= 0.

    Raises:
        ValueError: when ``fn`` is not callable (here) or returns a bad cost (when
            the costs are read).

    Example:
        >>> model.grow(data, cost=PerLayerCost(lambda layer: layer.kernel.shape[0]))
    """

    def __init__(self, fn):
        if not callable(fn):
            raise ValueError(f"fn must be callable. Received: fn={fn!r}")
        self.fn = fn
        self.name = getattr(fn, "__name__", "callable")

    def _per_layer(self, graph):
        per_layer = {}
        for name in graph.splittable_layers:
            value = float(self.fn(graph.producers[name].layer))
            if not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"The cost callable returned {value!r} for layer '{name}'; it "
                    "must return a finite non-negative cost per neuron."
                )
            per_layer[name] = value
        return per_layer

    def group_costs(self, graph, groups):
        per_layer = self._per_layer(graph)
        return np.array([sum(per_layer.get(n, 0.0) for n, _ in graph.group_members(g))
                         for g in groups], dtype=np.float64)

    def network_cost(self, graph):
        per_layer = self._per_layer(graph)
        return float(sum(per_layer[n] * graph.units(n) for n in per_layer))

    def __repr__(self):
        return f"PerLayerCost({self.name})"
