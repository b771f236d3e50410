"""Knapsack selection against brute force."""

import itertools

import numpy as np
import pytest
from scipy import optimize

from keras_split import select_neurons


def _brute(values, costs, budget, membership=None, caps=None, round_to=None, widths=None):
    candidates = np.flatnonzero(values < 0)  # only lambda < 0 can be chosen
    best, best_set = 0.0, ()
    for r in range(len(candidates) + 1):
        for subset in itertools.combinations(candidates, r):
            s = list(subset)
            if costs[s].sum() > budget + 1e-9:
                continue
            if membership is not None:
                counts = membership[:, s].sum(axis=1)
                if caps is not None and np.any(counts > caps):
                    continue
                if round_to is not None and np.any(
                        (counts > 0) & ((np.asarray(widths) + counts) % round_to != 0)):
                    continue
            value = values[s].sum()
            if value < best - 1e-12:
                best, best_set = value, subset
    return best, best_set


def _instance(rng, n_max, max_cost):
    n = int(rng.integers(1, n_max + 1))
    values = rng.normal(-0.5, 1.0, n)
    costs = rng.integers(1, max_cost, n).astype(float)
    return n, values, costs, float(rng.uniform(0, costs.sum()))


def _lp_solution(values, costs, budget):
    """The LP relaxation's value and solution, by HiGHS (independent of keras_split)."""
    neg = values < 0
    res = optimize.linprog(np.where(neg, values, 0), A_ub=[costs], b_ub=[budget],
                           bounds=[(0, 1)] * len(values), method="highs")
    return res.fun, np.where(neg, res.x, 0.0)


@pytest.mark.parametrize("n, ties", [(300, False), (2000, False), (3000, True), (6000, True)])
def test_exact_knapsack_matches_a_full_milp_on_large_instances(n, ties):
    """Past 256 candidates the exact solver fixes items by reduced cost and solves a core;
    its objective must equal HiGHS on the whole problem (near-identical items included)."""
    rng = np.random.default_rng(n)
    if ties:   # (lambda, cost) pairs of a few layers, with tiny jitter: many near-ties
        layer = rng.integers(0, 8, n)
        values = -np.abs(rng.normal(1.0, 0.3, 8))[layer] * (1 + 1e-6 * rng.normal(size=n))
        costs = rng.integers(100, 2000, 8).astype(float)[layer]
    else:
        values = rng.normal(-0.5, 1.0, n)
        costs = rng.integers(1, 500, n).astype(float)
    budget = 0.3 * costs.sum()
    got = select_neurons(values, costs, budget, solver="milp")
    assert costs[got].sum() <= budget + 1e-9
    neg = values < 0
    full = optimize.milp(np.where(neg, values, 0.0), integrality=np.ones(n),
                         bounds=optimize.Bounds(0, neg.astype(float)),
                         constraints=optimize.LinearConstraint(costs[None], -np.inf, budget),
                         options={"time_limit": 120, "mip_rel_gap": 0.0})
    assert full.status == 0
    # Past 256 candidates: within 0.1 % of the optimum (selection.GREEDY_REL_GAP).
    assert full.fun - 1e-9 * abs(full.fun) <= values[got].sum() <= full.fun * (1 - 1e-3)
    # The LP rounding is feasible and close, but not better than the optimum.
    lp = select_neurons(values, costs, budget, solver="lp")
    assert costs[lp].sum() <= budget + 1e-9
    tol = 1e-9 * abs(full.fun)   # HiGHS's own tolerances, relative
    assert full.fun - tol <= values[lp].sum() <= full.fun + np.abs(values).max() + tol


def test_milp_optimal_and_lp_feasible_on_200_random_instances():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n, values, costs, budget = _instance(rng, 16, 50)
        best, _ = _brute(values, costs, budget)
        milp = select_neurons(values, costs, budget, solver="milp")
        assert costs[milp].sum() <= budget + 1e-9
        assert values[milp].sum() == pytest.approx(best, abs=1e-9), trial
        lp = select_neurons(values, costs, budget, solver="lp")
        assert costs[lp].sum() <= budget + 1e-9
        assert np.all(values[lp] < 0)
        # The paper's rounding keeps every item the LP relaxation takes whole, and so loses
        # at most the one fractional item's value to the relaxation (hence to the optimum).
        bound, x_lp = _lp_solution(values, costs, budget)
        assert set(np.flatnonzero(x_lp >= 1 - 1e-9)) <= set(lp.tolist()), trial
        fractional = np.flatnonzero((x_lp > 1e-9) & (x_lp < 1 - 1e-9))
        assert values[lp].sum() <= bound - values[fractional].sum() + 1e-9, trial
        assert values[lp].sum() >= best - 1e-9


def test_milp_with_layer_caps_and_rounding_matches_brute_force():
    rng = np.random.default_rng(1)
    for trial in range(40):
        n, values, costs, budget = _instance(rng, 10, 20)
        labels = rng.integers(0, 3, n)
        membership = np.zeros((3, n))
        membership[labels, np.arange(n)] = 1
        caps = rng.integers(0, 4, 3).astype(float)
        best, _ = _brute(values, costs, budget, membership, caps)
        got = select_neurons(values, costs, budget, layer_of=membership, max_units=caps)
        assert values[got].sum() == pytest.approx(best, abs=1e-9), trial
        widths = rng.integers(1, 9, 3)
        best, _ = _brute(values, costs, budget, membership, None, 4, widths)
        got = select_neurons(values, costs, budget, layer_of=membership, round_to=4, widths=widths)
        counts = membership[:, got].sum(axis=1)
        assert np.all((counts == 0) | ((widths + counts) % 4 == 0))
        assert values[got].sum() == pytest.approx(best, abs=1e-9), trial


def test_vanilla_rule_takes_lambda_order():
    values = np.array([-5.0, -4.0, -3.0, -0.1])
    costs = np.array([10.0, 1.0, 1.0, 1.0])
    assert select_neurons(values, costs, 11, solver="greedy_value").tolist() == [0, 1]
    assert select_neurons(values, costs, 10.5, solver="greedy_value").tolist() == [0]
    assert select_neurons(values, costs, 3, solver="milp").tolist() == [1, 2, 3]


def test_bad_arguments():
    with pytest.raises(ValueError, match="solver"):
        select_neurons([-1.0], [1.0], 1.0, solver="bnb")
    with pytest.raises(ValueError, match="budget"):
        select_neurons([-1.0], [1.0], -1.0)
    with pytest.raises(ValueError, match="differ in length"):
        select_neurons([-1.0, -2.0], [1.0], 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        select_neurons([np.nan], [1.0], 1.0)
    with pytest.raises(ValueError, match="round_to needs solver='milp'"):
        select_neurons([-1.0], [1.0], 1.0, solver="lp", layer_of=[0], round_to=8, widths=[3])
    assert select_neurons([1.0, 2.0], [1.0, 1.0], 5.0).size == 0
