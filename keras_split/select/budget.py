"""Which coupled groups to split: candidates above noise, costs, the budgeted knapsack."""

import logging
import math

import numpy as np

from keras_split.select import cost_library
from keras_split.select import costs as cost_lib
from keras_split.select import knapsack
from keras_split.select.limits import limits_of
from keras_split.select.noise import unit_sq_norms
from keras_split.select.selection import Selection

logger = logging.getLogger(__name__)

# At most this many knapsack solves per selection: each one lowers the budget by how far
# the last solve's selection overshot the exact cost or MACs bound.
MAX_BUDGET_ROUNDS = 50


def _costs(graph, groups, model):
    """Per-group costs, the network total, and the exact-total function, in one unit."""
    return (np.asarray(model.group_costs(graph, groups), dtype=np.float64),
            model.network_cost(graph),
            lambda chosen: model.widened_cost(graph, [groups[i] for i in chosen]))


def _layer_membership(graph, groups):
    names = list(graph.splittable_layers)
    row = {n: i for i, n in enumerate(names)}
    m = np.zeros((len(names), len(groups)))
    for j, g in enumerate(groups):
        for name, _ in graph.group_members(g):
            m[row[name], j] += 1
    return names, m


def check_max_widths(names, widths, max_widths):
    """Raises ValueError for a ``max_widths`` entry below its layer's current width.

    Args:
        names: the splittable layers; widths: their current widths.
        max_widths: None or ``{layer: int}``.
    """
    if not isinstance(max_widths, dict):
        return   # None, or a type _caps refuses
    for name, width in zip(names, widths):
        cap = max_widths.get(name)
        if isinstance(cap, (int, float, np.integer, np.floating)) and cap < width:
            raise ValueError(
                f"max_widths of layer '{name}' ({cap!r}) is below its current width of "
                f"{width} units; a layer cannot narrow. Received: max_widths={max_widths!r}")


def _caps(names, widths, max_units, max_widths):
    """Per-layer caps on new units from ``max_units`` (int or dict) and ``max_widths`` (dict)."""
    check_max_widths(names, widths, max_widths)
    caps = np.full(len(names), np.inf)
    for arg, label in ((max_units, "max_units"), (max_widths, "max_widths")):
        if arg is None:
            continue
        if isinstance(arg, dict):
            unknown = set(arg) - set(names)
            if unknown:
                raise ValueError(f"{label} names unknown or unsplittable layers {sorted(unknown)}.")
            limit = np.array([arg.get(n, np.inf) for n in names], dtype=np.float64)
        elif label == "max_units" and isinstance(arg, (int, np.integer)) and arg >= 0:
            limit = np.full(len(names), float(arg))
        else:
            raise ValueError(f"{label} must be {'an int or ' if label == 'max_units' else ''}"
                             f"a dict {{layer: int}}, got {arg!r}.")
        if label == "max_widths":
            limit = np.maximum(limit - np.asarray(widths, dtype=np.float64), 0.0)
        caps = np.minimum(caps, limit)
    return None if np.all(np.isinf(caps)) else caps


BUDGET_GROUPS = (None, "resolution", "layer")
# What a coupled group is worth to the knapsack: the sum of its members' eigenvalues
# ("lambda"), or of each eigenvalue times the squared norm of the unit's incoming weights
# ("relative": the loss change of a split step measured relative to the unit's own weights,
# unchanged when the weights are rescaled ahead of a BatchNormalization).
VALUES = ("lambda", "relative")


def budget_labels(graph, budget_groups):
    """``{layer: label}``: which budget each splittable layer draws on.

    Args:
        graph: the ChannelGraph.
        budget_groups: None (one budget), ``"resolution"`` (one budget per
            output resolution: the seed papers' code splits MobileNet into its
            high- and low-resolution layers, each growing by the ratio of its own
            cost), ``"layer"`` (one budget per splittable layer) or a dict
            ``{layer: label}`` naming every splittable layer.

    Raises:
        ValueError: for another value, or a dict that misses or adds layers.
    """
    check_budget_groups(budget_groups)
    names = list(graph.splittable_layers)
    if budget_groups is None:
        return {n: 0 for n in names}
    if budget_groups == "resolution":
        return {n: tuple(int(d) for d in graph.producers[n].outputs[0].shape[1:-1])
                for n in names}
    if budget_groups == "layer":
        return {n: n for n in names}
    if isinstance(budget_groups, dict):
        if set(budget_groups) != set(names):
            raise ValueError("budget_groups must name every splittable layer once: missing "
                             f"{sorted(set(names) - set(budget_groups))}, unknown "
                             f"{sorted(set(budget_groups) - set(names))}.")
        return dict(budget_groups)


def check_budget_groups(budget_groups):
    """Raises ValueError unless ``budget_groups`` is one of ``BUDGET_GROUPS`` or a dict.

    Example: ``check_budget_groups("layer")`` returns None.
    """
    if not (isinstance(budget_groups, dict) or budget_groups in BUDGET_GROUPS):
        raise ValueError("budget_groups must be None, 'resolution', 'layer' or a dict "
                         f"{{layer: label}}. Received: budget_groups={budget_groups!r}")


def growth_caps(graph, max_growth):
    """``{layer: most new units this stage}`` for a per-stage width factor ``max_growth``
    (2.0: a layer at most doubles, as in the seed papers' code), or None."""
    if max_growth is None:
        return None
    return {n: int(math.floor((max_growth - 1.0) * graph.units(n) + 1e-9))
            for n in graph.splittable_layers}


def select_groups(graph, eigenpairs, growth_ratio, cost="flops", solver="milp",
                  threshold=0.0, max_units=None, round_to=None, max_widths=None,
                  budget_groups=None, max_growth=None, group_share=1.0, value="lambda",
                  budgets=None, fill=False):
    """Chooses the coupled groups to split under ``growth_ratio`` times the network's cost.

    The knapsack is solved with per-group marginal costs. The exact cost of the
    whole selection (with the cross terms of splitting a layer and its consumer
    together) is then measured, and, whatever the cost mode, so are the MACs:
    while either exceeds its bound (``(1 + growth_ratio)`` times the current
    value) the knapsack is solved again with a budget lowered by the overshoot
    (``round_to`` keeps holding). An empty selection is logged with its reason. With ``budget_groups`` each group of layers has a
    budget of ``growth_ratio`` times its own layers' cost and is solved apart
    (a coupled group counts in the budget of its first member); ``max_growth``
    caps every layer's new units at ``(max_growth - 1)`` times its width. The
    MACs bound holds over all budget groups together, which are solved in graph
    order (a later group gets what an earlier one left of it). With
    ``group_share`` below 1 a budget group keeps that fraction of its budget and
    the rest of the network's goes to any candidate not chosen yet. Groups are
    worth :func:`group_values` (``threshold`` applies to it); ``budgets``,
    ``[(CostModel, limit)]``, limit other totals after the stage. With ``fill`` a
    budget group whose candidates leave part of its kept budget spends the rest on
    its other units, the least valuable first (as a width multiplier would widen
    it: those units are split although their value is not negative).

    Returns:
        A :class:`~keras_split.select.selection.Selection`; ``cost="uniform"``
        (vanilla splitting) always uses the ``"greedy_value"`` rule under the
        MACs budget.

    Example:
        >>> select_groups(graph, eig, 0.5).chosen_groups
        [0, 3]
    """
    groups = sorted(graph.groups)
    values = group_values(graph, groups, eigenpairs, value)
    model = cost_library.get(cost)
    solver_used = "greedy_value" if model.by_value_alone else solver
    group_cost, total, exact_total = _costs(graph, groups, model)
    budget = growth_ratio * total
    options = dict(_knapsack_options(graph, groups, solver_used, max_units, max_widths,
                                     max_growth, round_to),
                   limits=limits_of(graph, groups, budgets or []))
    masked = np.where(values < threshold, values, 0.0)
    labels = budget_labels(graph, budget_groups)
    of_group = [labels[graph.group_members(g)[0][0]] for g in groups]
    separate = len(set(labels.values())) > 1
    chosen = _by_budget_group(graph, groups, (values, masked), group_cost, of_group,
                              dict.fromkeys(labels.values()), (total, budget, exact_total),
                              growth_ratio, options, group_share if separate else None, fill)
    if separate and group_share < 1.0:
        chosen.extend(_share_the_rest(graph, groups, masked, group_cost, chosen,
                                      (total, budget, exact_total), growth_ratio, options))
    chosen = np.array(sorted(chosen), dtype=np.int64)
    return Selection(groups, values, group_cost, chosen, float(budget), solver_used)


def _by_budget_group(graph, groups, values_masked, group_cost, of_group, labels, totals,
                     growth_ratio, options, share, fill):
    """The groups each budget group buys, in the order of ``labels`` (a later one gets
    what an earlier one left of the MACs bound). ``share`` is the fraction of its own
    budget each keeps, or None for one budget (``totals[1]``) for the network; with
    ``fill`` each spends what its candidates leave on its other units."""
    values, masked = values_masked
    total, budget, exact_total = totals
    chosen = []
    for label in labels:
        mine = np.array([lab == label for lab in of_group])
        if not mine.any():
            continue
        # Separate budgets: this group's own cost, its layers' units each at its cost now.
        part_budget = (share * growth_ratio * _part_cost(group_cost, mine, total)
                       if share is not None else budget)
        new = list(_within_bounds(graph, groups, np.where(mine, masked, 0.0), group_cost,
                                  (total, part_budget, exact_total), growth_ratio, options,
                                  fixed=chosen))
        if fill and share is not None:
            new.extend(_fill(graph, groups, np.where(mine & (masked == 0), values, np.nan),
                             group_cost, chosen + new,
                             (total, part_budget - float(group_cost[new].sum()), exact_total),
                             growth_ratio, options))
        chosen.extend(new)
    return chosen


def group_values(graph, groups, eigenpairs, value="lambda"):
    """What each coupled group is worth to the knapsack: ``float64[len(groups)]``, the
    sum over its members of ``lambda`` (``value="lambda"``) or of ``lambda ||theta||^2``
    (``"relative"``).

    Raises:
        ValueError: for an unknown ``value``.

    Example:
        >>> group_values(graph, sorted(graph.groups), eig, "relative")
        array([-0.41, -0.07])
    """
    if value not in VALUES:
        raise ValueError(f"value must be one of {VALUES}. Received: value={value!r}")
    weights = {n: unit_sq_norms(graph, n) if value == "relative" else np.ones(graph.units(n))
               for n in eigenpairs}
    return np.array([
        sum(eigenpairs[n].values[u] * weights[n][u] for n, u in graph.group_members(g))
        for g in groups
    ], dtype=np.float64)


def _knapsack_options(graph, groups, solver, max_units, max_widths, max_growth, round_to):
    """The knapsack's keyword arguments: layer membership, per-layer caps (``max_units``,
    ``max_widths``, ``max_growth``), rounding and the current widths."""
    names, membership = _layer_membership(graph, groups)
    widths = [graph.units(n) for n in names]
    caps = _caps(names, widths, max_units, max_widths)
    stage_caps = growth_caps(graph, max_growth)
    if stage_caps is not None:
        caps = np.minimum(np.inf if caps is None else caps,
                          np.array([stage_caps[n] for n in names], dtype=np.float64))
    return dict(solver=solver, layer_of=membership, max_units=caps, round_to=round_to,
                widths=widths)


def _after(options, chosen):
    """The knapsack's options once the groups ``chosen`` are split: every layer's cap
    and width count their units."""
    taken = options["layer_of"][:, chosen].sum(axis=1)
    after = dict(options, widths=[w + int(t) for w, t in zip(options["widths"], taken)])
    if options["max_units"] is not None:
        after["max_units"] = np.maximum(options["max_units"] - taken, 0.0)
    return after


def _share_the_rest(graph, groups, masked, group_cost, chosen, budget_terms, growth_ratio,
                    options):
    """The shared pass: what the network's budget has left after the separate budgets'
    ``chosen``, over every candidate not chosen yet, with every layer's cap and width
    counting the units chosen already."""
    total, budget, exact_total = budget_terms
    left = budget - float(group_cost[chosen].sum())
    if left <= 0:
        return []
    rest = masked.copy()
    rest[chosen] = 0.0
    return list(_within_bounds(graph, groups, rest, group_cost, (total, left, exact_total),
                               growth_ratio, _after(options, chosen), fixed=chosen))


def _fill(graph, groups, values, group_cost, chosen, budget_terms, growth_ratio, options):
    """A budget group's remainder (``budget_terms``' budget) spent on its groups whose
    ``values`` are not NaN, the least valuable first: each is given a stand-in worth
    from 1 (the most valuable) to 2 (the least), solved like the candidates."""
    total, left, exact_total = budget_terms
    eligible = ~np.isnan(values)
    eligible[chosen] = False
    if left <= 0 or not eligible.any():
        return []
    low, high = np.min(values[eligible]), np.max(values[eligible])
    worth = np.where(eligible, -1.0 - (high - np.where(eligible, values, high))
                     / max(high - low, np.finfo(np.float64).tiny), 0.0)
    return list(_within_bounds(graph, groups, worth, group_cost, (total, left, exact_total),
                               growth_ratio, _after(options, chosen), fixed=chosen))


def _part_cost(group_cost, mine, total):
    """The share of the network's ``total`` cost of one budget group: its coupled
    groups' share of the summed per-group costs (for ``"sqrt_flops"``, whose total is
    that sum, exactly the seed code's ``sum(channels x cost per channel)``)."""
    every = float(group_cost.sum()) or 1.0
    return total * float(group_cost[mine].sum()) / every


def _within_bounds(graph, groups, masked, group_cost, budget_terms, growth_ratio, options,
                   fixed=()):
    """The knapsack's choice, solved again with a lower budget until the exact cost and
    the MACs keep their bounds; empty (and logged) when no candidate fits. ``fixed``:
    groups chosen already (by earlier budget groups), counted in the MACs bound."""
    total, budget, exact_total = budget_terms
    macs = cost_lib.network_cost(graph, "flops")
    fixed = [int(i) for i in fixed]

    def macs_after(chosen):
        return cost_lib.widened_cost(graph, [groups[i] for i in fixed + list(chosen)],
                                     "flops")

    base = macs_after([])
    target = budget
    options = dict(options)
    limits = options.pop("limits", [])
    # What each further budget's constraints leave once the groups chosen already are split.
    rooms = [lim.rooms_after(fixed) for lim in limits]
    for _ in range(MAX_BUDGET_ROUNDS):
        rows = (np.vstack([lim.rows for lim in limits]),
                np.maximum(np.concatenate(rooms), 0.0)) if limits else None
        chosen = np.asarray(knapsack.select_neurons(masked, group_cost, target, limits=rows,
                                                    **options), dtype=np.int64)
        if len(chosen) == 0:
            _log_nothing(masked, target, limits, rooms)
            return chosen
        over = exact_total(chosen) - total - budget
        macs_over = macs_after(chosen) - macs * (1 + growth_ratio)
        limits_over = [lim.total(graph, groups, fixed + list(chosen)) - lim.limit
                       for lim in limits]
        if over <= budget * 1e-9 and macs_over <= 0 and max(limits_over, default=0) <= 0:
            return chosen
        # An overshot limit (the cross terms of splitting groups together): its
        # constraints lowered below what this selection spent of them, and solved again.
        for k, lim in enumerate(limits):
            if limits_over[k] > 0:
                spent_k = lim.rows[:, chosen].sum(axis=1)
                rooms[k] = np.minimum(rooms[k], spent_k - limits_over[k]) * (1 - 1e-9)
        if over <= budget * 1e-9 and macs_over <= 0:
            continue
        # Lower the budget by the overshoot (in the cost unit) and solve again; a MACs
        # overshoot is converted with the selection's cost per MAC (macs_after > base).
        spent = float(group_cost[chosen].sum())
        shrink = max(over, 0.0)
        if macs_over > 0:
            shrink = max(shrink, spent * macs_over / max(macs_after(chosen) - base, 1e-12))
        target = max(spent - shrink, 0.0) * (1 - 1e-9)
    logger.warning("No selection kept the cost and MACs bounds after %d knapsack solves: "
                   "nothing is split this stage.", MAX_BUDGET_ROUNDS)
    return np.zeros(0, dtype=np.int64)


def _log_nothing(masked, target, limits, rooms):
    """Logs why a knapsack chose nothing, naming the further budgets that bind."""
    binding = [lim.model.name for lim, room in zip(limits, rooms)
               if np.any(room < lim.rows[:, masked < 0].min(axis=1, initial=np.inf))]
    logger.info("Nothing to split: %d candidates (lambda below the threshold), none fits the "
                "budget %.4g%s.", int((masked < 0).sum()), target,
                f" and the limits of {binding}" if binding else "")
