"""Further budgets of a selection: limits on the network's totals under other costs."""

import dataclasses
import math

import numpy as np

from keras_split.select import cost_library, cost_models


@dataclasses.dataclass
class Limit:
    """A further budget of a selection: its cost model, the largest total it allows, and
    its knapsack constraints over the candidate groups.

    Attributes:
        model: the :class:`~keras_split.select.cost_models.CostModel`.
        limit: the largest total after the stage.
        rows: ``float64[k, groups]``, the constraints' coefficients
            (:meth:`~keras_split.select.cost_models.CostModel.limit_rows`).
        rooms: ``float64[k]``, their right-hand sides on the network now.
    """

    model: cost_models.CostModel
    limit: float
    rows: np.ndarray
    rooms: np.ndarray

    def total(self, graph, groups, chosen):
        """The exact total after splitting ``groups[i]`` for every ``i`` of ``chosen``."""
        return self.model.widened_cost(graph, [groups[int(i)] for i in chosen])

    def rooms_after(self, fixed):
        """The constraints' right-hand sides once the groups ``fixed`` (indices) are split."""
        return self.rooms - self.rows[:, list(fixed)].sum(axis=1)


def limits_of(graph, groups, budgets):
    """The :class:`Limit` of every ``(CostModel, limit)`` of ``budgets`` over ``groups``.

    Raises:
        ValueError: naming the budget, when the network exceeds its limit already.
    """
    check_budgets(graph, budgets)
    out = []
    for model, limit in budgets:
        rows, rooms = model.limit_rows(graph, groups, limit)
        out.append(Limit(model, limit, np.asarray(rows, dtype=np.float64),
                         np.asarray(rooms, dtype=np.float64)))
    return out


def resolve_budgets(budgets):
    """``[(CostModel, limit)]`` of a ``{cost model or name: limit}`` mapping (None: none).

    Raises:
        ValueError: for a key that is not a cost model or for a limit that is not a
            finite positive number.

    Example:
        >>> resolve_budgets({"params": 20_000})
        [(Params(), 20000.0)]
    """
    if budgets is None:
        return []
    if not isinstance(budgets, dict):
        raise ValueError("budgets must be None or a dict {cost model or name: limit}. "
                         f"Received: budgets={budgets!r}")
    out = []
    for key, limit in budgets.items():
        model = cost_library.get(key)
        if isinstance(limit, bool) or not isinstance(limit, (int, float, np.integer,
                                                             np.floating)) \
                or not (math.isfinite(limit) and limit > 0):
            raise ValueError(f"The limit of budget {model.name!r} must be a finite positive "
                             f"number. Received: {limit!r}")
        out.append((model, float(limit)))
    return out


@dataclasses.dataclass
class Exceeded:
    """A budget the network exceeds already.

    Attributes:
        name: the cost model's name.
        cost: the network's total under it now.
        limit: the budget's limit.
    """

    name: str
    cost: float
    limit: float

    def describe(self):
        """What is exceeded, and by how much."""
        return (f"the network costs {self.cost:.6g} under budget {self.name!r}, above its "
                f"limit {self.limit:.6g}")

    def message(self):
        """What is exceeded, by how much, and what to do (a refusal's message)."""
        return (f"The network already costs {self.cost:.6g} under budget {self.name!r}, "
                f"above its limit {self.limit:.6g}: no growth can respect it. Raise the "
                "limit or drop it.")


def exceeded_budget(graph, budgets):
    """The first budget the network exceeds already, or None.

    Args:
        graph: the network's ChannelGraph.
        budgets: ``[(CostModel, limit)]`` (:func:`resolve_budgets`).

    Returns:
        An :class:`Exceeded`, or None when every total is within its limit.

    Example:
        >>> exceeded_budget(model.channel_graph, [(Params(), 10.0)]).name
        'params'
    """
    for model, limit in budgets:
        now = model.network_cost(graph)
        if now > limit:
            return Exceeded(model.name, float(now), float(limit))
    return None


def check_budgets(graph, budgets):
    """Raises ValueError naming the budget when the network already exceeds a limit
    (no growth can respect it).

    Args:
        graph: the network's ChannelGraph.
        budgets: ``[(CostModel, limit)]`` (:func:`resolve_budgets`).

    Raises:
        ValueError: naming the first budget exceeded.

    Example:
        >>> check_budgets(model.channel_graph, [(Params(), 10.0)])
        Traceback (most recent call last):
        ValueError: The network already costs ...
    """
    over = exceeded_budget(graph, budgets)
    if over is not None:
        raise ValueError(over.message())
