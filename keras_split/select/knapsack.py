"""Energy-aware selection: which neurons to split under a cost budget (a knapsack).

Minimise ``sum_i beta_i * lambda_i`` subject to ``sum_i beta_i * cost_i <= budget``
and ``beta_i in {0, 1}``, optionally with per-layer caps on the number of new
units and with every grown layer's width rounded to a multiple (e.g. 8).

* ``solver="milp"`` solves it exactly with ``scipy.optimize.milp`` (HiGHS); a
  plain budget (no caps, no rounding) first fixes every item whose reduced cost
  at the LP optimum exceeds the gap to a greedy incumbent (exact), so that only
  a small core goes to the MILP solver.
* ``solver="lp"`` solves the LP relaxation ``0 <= beta <= 1`` with
  ``scipy.optimize.linprog(method="highs")`` as the energy-aware splitting paper
  does (in closed form, Dantzig's bound, when the budget is the only constraint),
  then rounds: items with ``beta >= 1 - 1e-9`` are kept, fractional ones
  dropped, and the remaining candidates are added greedily by ``lambda / cost``
  while the budget and the caps allow (a knapsack LP has at most one fractional
  item per constraint, so this loses little).
* ``solver="greedy_value"``: the original ("vanilla") splitting, by ``lambda``
  alone: candidates in order of increasing ``lambda`` until the next does not fit.

Further budgets (``limits``: rows ``sum_i beta_i * cost_ki <= budget_k``, say a latency
and a size next to the MACs) are constraints of the same kind as the per-layer caps:
every solver keeps all of them (the MILP exactly, a multi-constraint knapsack).

This module knows nothing of models: it works on arrays.
"""

import logging

import numpy as np
from scipy import optimize

from keras_split.compat import native_output_held

logger = logging.getLogger(__name__)

SOLVERS = ("milp", "lp", "greedy_value")


def _validate_limits(limits, n):
    """``(rows [k, n], budgets [k])`` of the further budgets (``k = 0`` for None)."""
    if limits is None:
        return np.zeros((0, n)), np.zeros(0)
    rows, budgets = limits
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, n) if n else np.zeros((0, 0))
    budgets = np.asarray(budgets, dtype=np.float64).reshape(-1)
    if rows.shape[0] != budgets.size:
        raise ValueError(f"limits have {rows.shape[0]} cost rows and {budgets.size} budgets.")
    if not np.all(np.isfinite(rows)) or np.any(rows < 0):
        raise ValueError("the limits' costs must be finite and non-negative.")
    if not np.all(np.isfinite(budgets)) or np.any(budgets < 0):
        raise ValueError(f"the limits' budgets must be finite and non-negative. "
                         f"Received: {budgets.tolist()}")
    return rows, budgets


def _validate(values, costs, budget, layer_of, max_units, round_to, widths):
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    costs = np.asarray(costs, dtype=np.float64).reshape(-1)
    if values.shape != costs.shape:
        raise ValueError(f"values and costs differ in length: {values.size} vs {costs.size}.")
    if not np.all(np.isfinite(values)):
        raise ValueError("values contain non-finite entries.")
    if not np.all(np.isfinite(costs)) or np.any(costs < 0):
        raise ValueError("costs must be finite and non-negative.")
    if not (np.isscalar(budget) and np.isfinite(budget) and budget >= 0):
        raise ValueError(f"budget must be a finite non-negative number, got {budget!r}.")
    n = values.size
    if layer_of is None:
        membership = np.zeros((0, n))
    else:
        membership = np.asarray(layer_of, dtype=np.float64)
        if membership.ndim == 1:
            labels = membership.astype(np.int64)
            membership = np.zeros((labels.max() + 1 if n else 0, n))
            membership[labels, np.arange(n)] = 1
        if membership.shape[1] != n:
            raise ValueError(f"layer_of must have {n} columns, got {membership.shape}.")
    n_layers = membership.shape[0]
    caps = None
    if max_units is not None:
        caps = np.broadcast_to(np.asarray(max_units, dtype=np.float64), (n_layers,))
        if np.any(caps < 0):
            raise ValueError(f"max_units must be non-negative, got {max_units!r}.")
    if round_to is not None:
        if not isinstance(round_to, (int, np.integer)) or round_to < 1:
            raise ValueError(f"round_to must be a positive integer, got {round_to!r}.")
        if widths is None or len(widths) != n_layers:
            raise ValueError("round_to needs layer_of and the current widths of every layer.")
    return values, costs, membership, caps


def select_neurons(values, costs, budget, solver="milp", layer_of=None, max_units=None,
                   round_to=None, widths=None, time_limit=60.0, limits=None):
    """Chooses the neurons (or coupled groups) to split.

    Args:
        values: ``lambda_i``, the splitting value of each candidate (negative is useful).
        costs: ``cost_i >= 0`` of splitting each candidate.
        budget: the largest total cost.
        solver: ``"milp"`` (exact), ``"lp"`` (paper's relaxation + rounding) or
            ``"greedy_value"`` (vanilla: by ``lambda`` alone).
        layer_of: optional layer membership, either an int label per candidate
            or a ``[layers, candidates]`` count matrix (a coupled group counts
            once in each of its layers). Needed for ``max_units`` and ``round_to``.
        max_units: optional cap (scalar or per layer) on the new units of a layer.
        round_to: ``milp`` only: every layer that grows ends at a width that is a
            multiple of this.
        widths: current width of every layer (with ``round_to``).
        time_limit: seconds for the MILP solver.
        limits: optional further budgets ``(costs [k, candidates], budgets [k])``:
            the selection keeps ``costs[k] . beta <= budgets[k]`` for every ``k``.

    Returns:
        A sorted ``int64`` array of selected candidate indices. Candidates with
        ``lambda >= 0`` are never selected (they cannot lower the loss).

    Raises:
        ValueError: for inconsistent arguments, an unknown solver, or a MILP the
            solver could not solve.

    Example:
        >>> select_neurons([-3.0, -2.0, -1.0], [2.0, 1.0, 1.0], budget=2.0)
        array([1, 2])
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}.")
    values, costs, membership, caps = _validate(
        values, costs, budget, layer_of, max_units, round_to, widths
    )
    if round_to is not None and solver != "milp":
        raise ValueError("round_to needs solver='milp'.")
    rows, row_budgets = _validate_limits(limits, values.size)
    cand = np.flatnonzero(values < 0)
    if cand.size == 0:
        return np.zeros(0, dtype=np.int64)
    v, c, m = values[cand], costs[cand], membership[:, cand]
    m_round = m
    if row_budgets.size:   # further budgets: constraints like the per-layer caps
        caps = np.concatenate([np.full(m.shape[0], np.inf) if caps is None else caps,
                               row_budgets])
        m = np.vstack([m, rows[:, cand]])
    if solver == "milp" and caps is None and round_to is None:
        chosen = _knapsack_exact(v, c, budget, time_limit)
    elif solver == "milp":
        chosen = _milp(v, c, budget, m, caps, round_to, widths, time_limit, m_round)
    elif solver == "lp":
        chosen = _lp(v, c, budget, m, caps)
    else:
        chosen = _greedy_by_value(v, c, budget, m, caps)
    return np.sort(cand[chosen]).astype(np.int64)


def _dantzig(v, c, budget):
    """The LP relaxation of the knapsack in closed form: items by ``v / c``, one fractional.

    Returns ``(x_lp, mu, bound)``: the LP solution, the critical ratio (dual
    price of the budget, <= 0) and the LP value, a lower bound of the optimum.
    """
    order = np.argsort(v / np.maximum(c, 1e-300), kind="stable")
    x = np.zeros(v.size)
    left = float(budget)
    mu = 0.0
    for i in order:
        if c[i] <= left:
            x[i], left = 1.0, left - c[i]
        else:
            x[i] = left / c[i]
            mu = v[i] / c[i]
            break
    return x, mu, float(v @ x)


def _knapsack_exact(v, c, budget, time_limit):
    """Exact 0/1 knapsack: reduced-cost fixing around the LP solution, MILP on the core.

    With the LP's critical ratio ``mu``, an item's reduced cost is
    ``r = v - mu * c``, and flipping it away from its LP value costs at least
    ``|r|`` above the LP bound. Items with ``|r|`` larger than the gap between
    a greedy incumbent and the LP bound are fixed, which is exact, and HiGHS
    solves the few remaining ones.
    """
    if c.sum() <= budget:
        return np.arange(v.size)
    x_lp, mu, bound = _dantzig(v, c, budget)
    reduced = v - mu * c
    greedy = _greedy_fill(v, c, budget, x_lp >= 1.0)
    if _close_enough(v[greedy].sum(), bound, v.size):
        return np.sort(greedy)
    # A tighter incumbent: the items nearest the critical ratio re-optimised, the rest
    # kept at their LP values (a smaller gap fixes more items below).
    near = np.argsort(np.abs(reduced), kind="stable")[:CORE_SIZE]
    keep = (x_lp >= 1.0)
    keep[near] = False
    left = float(budget) - float(c[keep].sum())
    if left >= 0:
        sub = _milp(v[near], c[near], left, np.zeros((0, near.size)), None, None, None,
                    time_limit)
        candidate = np.sort(np.concatenate([np.flatnonzero(keep), near[sub]]))
        if v[candidate].sum() < v[greedy].sum():
            greedy = candidate
        if _close_enough(v[greedy].sum(), bound, v.size):
            return np.sort(greedy)
    gap = float(v[greedy].sum()) - bound
    tol = 1e-9 * max(1.0, abs(bound))
    fixed_in = (x_lp >= 1.0) & (-reduced > gap + tol)
    fixed_out = (x_lp <= 0.0) & (reduced > gap + tol)
    free = ~(fixed_in | fixed_out)
    rest = float(budget) - float(c[fixed_in].sum())
    core = np.flatnonzero(free)
    chosen = np.flatnonzero(fixed_in)
    if core.size:
        sub = _milp(v[core], c[core], rest, np.zeros((0, core.size)), None, None, None,
                    time_limit)
        chosen = np.concatenate([chosen, core[sub]])
    if v[chosen].sum() > v[greedy].sum():  # never worse than the incumbent
        chosen = greedy
    return np.sort(chosen)


# Past CORE_SIZE candidates, a selection within GREEDY_REL_GAP of the LP bound is taken as it
# is: far below the eigenvalues' own estimation error (about 1 %), while HiGHS can spend its
# whole time limit on the last digits of thousands of near-tied candidates (a wide layer's
# units); smaller instances are always solved by the MILP.
CORE_SIZE = 256
GREEDY_REL_GAP = 1e-3


def _close_enough(value, bound, n):
    """Whether ``value`` of ``n`` candidates is within ``GREEDY_REL_GAP`` of the LP ``bound``."""
    return n > CORE_SIZE and value - bound <= GREEDY_REL_GAP * max(abs(bound), 1e-300)


def _greedy_fill(v, c, budget, start, m=None, caps=None):
    """``start`` plus the remaining items by ``v / c`` that still fit the budget (and caps)."""
    m = np.zeros((0, v.size)) if m is None else m
    chosen = start.copy()
    spent = float(c[chosen].sum())
    counts = m[:, chosen].sum(axis=1)
    for i in np.argsort(v / np.maximum(c, 1e-300), kind="stable"):
        if not chosen[i] and _feasible_add(i, c, budget, m, caps, spent, counts):
            chosen[i] = True
            spent += c[i]
            counts = counts + m[:, i]
    return np.flatnonzero(chosen)


def _milp(v, c, budget, m, caps, round_to, widths, time_limit, m_round=None):
    """The knapsack as a MILP: ``m @ beta <= caps`` (layer caps, further budgets) and,
    with ``round_to``, every layer of ``m_round`` (default ``m``) rounded."""
    m_round = m if m_round is None else m_round
    n, n_layers = v.size, m_round.shape[0]
    rows, lows, highs = [c], [-np.inf], [float(budget)]
    integrality = [np.ones(n)]
    objective = [v]
    upper = [np.ones(n)]
    extra = 0
    if caps is not None:
        for row, cap in zip(m, caps):
            rows.append(row)
            lows.append(-np.inf)
            highs.append(cap)
    if round_to is not None:
        # Per layer l: k_l >= 0 integer, z_l binary.
        #   sum_i m_li beta_i - round_to * k_l - r_l * z_l == 0
        #   sum_i m_li beta_i - n_l * z_l <= 0
        extra = 2 * n_layers
        big = m_round.sum(axis=1)
        rem = (-np.asarray(widths, dtype=np.int64)) % round_to
        objective.append(np.zeros(extra))
        integrality.append(np.ones(extra))
        upper.append(np.concatenate([np.full(n_layers, np.inf), np.ones(n_layers)]))
    total = n + extra
    a = []
    for row in rows:
        full = np.zeros(total)
        full[: row.size] = row
        a.append(full)
    if round_to is not None:
        for l in range(n_layers):
            eq = np.zeros(total)
            eq[:n] = m_round[l]
            eq[n + l] = -round_to
            eq[n + n_layers + l] = -rem[l]
            a.append(eq)
            lows.append(0.0)
            highs.append(0.0)
            le = np.zeros(total)
            le[:n] = m_round[l]
            le[n + n_layers + l] = -big[l]
            a.append(le)
            lows.append(-np.inf)
            highs.append(0.0)
    with native_output_held(1):   # HiGHS prints solver notes to stdout even with disp=False
        res = optimize.milp(
            c=np.concatenate(objective),
            constraints=optimize.LinearConstraint(np.array(a), lows, highs),
            integrality=np.concatenate(integrality),
            bounds=optimize.Bounds(np.zeros(total), np.concatenate(upper)),
            options={"time_limit": time_limit, "disp": False},
        )
    if res.x is None:
        raise ValueError(f"The knapsack MILP failed: {res.message}")
    if res.status != 0:
        logger.warning("The knapsack MILP stopped early (%s): the selection is feasible "
                       "but not proven optimal.", res.message)
    return np.flatnonzero(res.x[:n] > 0.5)


def _feasible_add(i, c, budget, m, caps, spent, counts):
    if spent + c[i] > budget * (1 + 1e-12) + 1e-12:
        return False
    if caps is not None and np.any(counts + m[:, i] > caps + 1e-9):
        return False
    return True


def _lp(v, c, budget, m, caps):
    if caps is None:
        x = _dantzig(v, c, budget)[0]  # the LP optimum of a single budget, in closed form
    else:
        finite = np.isfinite(caps)   # linprog takes finite bounds only
        res = optimize.linprog(v, A_ub=np.vstack([c, m[finite]]),
                               b_ub=np.concatenate([[budget], caps[finite]]),
                               bounds=(0, 1), method="highs")
        if res.x is None:
            raise ValueError(f"The knapsack LP failed: {res.message}")
        x = res.x
    return _greedy_fill(v, c, budget, x >= 1 - 1e-9, m, caps)


def _greedy_by_value(v, c, budget, m, caps):
    chosen = np.zeros(v.size, dtype=bool)
    spent, counts = 0.0, np.zeros(m.shape[0])
    for i in np.argsort(v, kind="stable"):
        if not _feasible_add(i, c, budget, m, caps, spent, counts):
            if caps is not None and np.any(counts + m[:, i] > caps + 1e-9):
                continue  # this layer is full; others may still grow
            break
        chosen[i] = True
        spent += c[i]
        counts = counts + m[:, i]
    return np.flatnonzero(chosen)
