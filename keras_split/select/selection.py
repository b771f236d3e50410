"""`Selection`: what the knapsack chose in one growth stage."""

import dataclasses

import numpy as np


@dataclasses.dataclass
class Selection:
    """The coupled groups of a stage, their values and the ones chosen.

    Attributes:
        groups: the coupled group ids, sorted (``ChannelGraph.groups``' keys).
        values: per group, what it is worth to the knapsack (float64; see
            :func:`~keras_split.select.budget.group_values`).
        costs: per group, what one more unit of it costs now, in the cost model's
            unit (float64).
        chosen: indices into ``groups`` of the groups to split, sorted (int64).
        budget: the stage's budget, in the cost's unit.
        solver: the rule that chose (``"milp"``, ``"lp"``, ``"greedy"`` or
            ``"greedy_value"``).

    Example:
        >>> selection = select_groups(graph, eig, 0.5)
        >>> [selection.groups[i] for i in selection.chosen]
        [0, 3]
    """

    groups: list
    values: np.ndarray
    costs: np.ndarray
    chosen: np.ndarray
    budget: float
    solver: str

    @property
    def chosen_groups(self):
        """The group ids chosen, in order."""
        return [self.groups[i] for i in self.chosen]

    @property
    def chosen_value(self):
        """The chosen groups' total value (0 when none)."""
        return float(self.values[self.chosen].sum()) if len(self.chosen) else 0.0
