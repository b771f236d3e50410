"""Cost models (one class per measure) and several budgets at once."""

import itertools

import numpy as np
import pytest

import keras_split as ks
from keras_split.select import cost_library, cost_models, costs, knapsack, limits
from tests import zoo


def test_built_in_cost_models_count_the_network():
    model = zoo.compiled_cnn()
    graph = model.channel_graph
    groups = sorted(graph.groups)
    assert cost_library.get("flops").network_cost(graph) == ks.count_flops(model)
    assert cost_library.get("params").network_cost(graph) == model.count_params()
    assert cost_library.get("uniform").network_cost(graph) == ks.count_flops(model)
    assert repr(cost_library.get("sqrt_flops")) == "SqrtMACs()"
    np.testing.assert_allclose(cost_models.MACs().group_costs(graph, groups),
                               costs.group_costs(graph, groups, "flops"))
    # A split's exact totals: the MACs and parameters of the widened network.
    chosen = groups[:2] + groups[-1:]
    for model_cost, measure in ((cost_models.MACs(), ks.count_flops),
                                (cost_models.Params(), lambda m: m.count_params())):
        predicted = model_cost.widened_cost(graph, chosen)
        units = {}
        for g in chosen:
            for name, unit in graph.group_members(g):
                units.setdefault(name, []).append(unit)
        grown = zoo.compiled_cnn()   # the same architecture
        grown.split(units, epsilon=0.0)
        assert predicted == measure(grown)
    per_layer = cost_library.get(lambda layer: 2.0)
    assert isinstance(per_layer, cost_models.PerLayerCost)
    assert per_layer.network_cost(graph) == 2.0 * sum(graph.units(n)
                                                      for n in graph.splittable_layers)
    for bad in ("joules", 3, cost_models.MACs):
        with pytest.raises(ValueError, match="Received: cost="):
            cost_library.get(bad)
    with pytest.raises(ValueError, match="Received: fn=3"):
        cost_models.PerLayerCost(3)


class Filters(cost_models.CostModel):
    """One per filter of every producer: a user's cost model in a few lines."""

    name = "filters"

    def group_costs(self, graph, groups):
        return np.array([len(graph.group_members(g)) for g in groups], dtype=np.float64)

    def network_cost(self, graph):
        return float(sum(graph.units(n) for n in graph.splittable_layers))


def test_a_user_cost_model_is_the_main_cost_of_a_stage(trained_weights):
    model = zoo.compiled_cnn()
    model.set_weights(trained_weights)
    filters = Filters().network_cost(model.channel_graph)
    stage = model.grow(zoo.cnn_data(), growth_ratio=0.25, method="exact", cost=Filters(),
                       budget_groups=None)
    assert stage.cost == "filters"
    added = Filters().network_cost(model.channel_graph) - filters
    # The budget (a quarter of the filters) is spent whole: one filter per unit split.
    assert added == stage.n_selected == int(0.25 * filters)


def _brute(values, costs_, budget_, rows, row_budgets):
    best, best_set = 0.0, ()
    for r in range(len(values) + 1):
        for subset in itertools.combinations(np.flatnonzero(values < 0), r):
            s = list(subset)
            if costs_[s].sum() <= budget_ + 1e-9 and np.all(rows[:, s].sum(1) <= row_budgets + 1e-9):
                if values[s].sum() < best - 1e-12:
                    best, best_set = values[s].sum(), subset
    return best, best_set


def test_further_budgets_are_kept_by_every_solver():
    rng = np.random.default_rng(0)
    for trial in range(25):
        n = 9
        values = rng.normal(-0.6, 0.5, n)
        costs_ = rng.uniform(1, 3, n)
        rows = rng.uniform(0, 2, (2, n))
        budget_, row_budgets = rng.uniform(3, 9), rng.uniform(1.5, 6, 2)
        best, _ = _brute(values, costs_, budget_, rows, row_budgets)
        for solver in knapsack.SOLVERS:
            got = knapsack.select_neurons(values, costs_, budget_, solver=solver,
                                          limits=(rows, row_budgets))
            assert costs_[got].sum() <= budget_ + 1e-9
            assert np.all(rows[:, got].sum(1) <= row_budgets + 1e-9)
            if solver == "milp":
                assert values[got].sum() == pytest.approx(best, abs=1e-9)
    with pytest.raises(ValueError, match="2 cost rows and 1 budgets"):
        knapsack.select_neurons(values, costs_, 1.0, limits=(rows, [1.0]))


def test_a_two_budget_stage_keeps_both_and_refuses_an_infeasible_limit(trained_weights):
    model = zoo.compiled_cnn()
    model.set_weights(trained_weights)
    x, y = zoo.cnn_data()
    macs, params = ks.count_flops(model), model.count_params()
    free = model.grow((x, y), growth_ratio=1.0, method="exact", dry_run=True)
    assert free.params_after > params + 200          # the MACs budget alone buys this much
    limit = params + 200
    stage = model.grow((x, y), growth_ratio=1.0, method="exact", budgets={"params": limit})
    assert params < model.count_params() <= limit        # the binding budget, kept exactly
    assert ks.count_flops(model) <= 2 * macs
    assert stage.n_selected > 0
    # The stage records the budget with the totals around it, and says so in its summary.
    [record] = stage.limits
    assert (record.cost, record.limit, record.before, record.after) == (
        "params", limit, params, model.count_params())
    assert f"params {params:.4g} -> {model.count_params():.4g} (limit {limit:.4g})" \
        in stage.summary()
    assert ks.GrowthStage.from_json(stage.to_json()) == stage
    # A limit the network exceeds already: refused before any work, naming the budget.
    weights = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="budget 'params', above its limit 100"):
        model.grow((x, y), budgets={"params": 100})
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    for bad, match in (({"params": -1}, "must be a finite positive number"),
                       ({"joules": 5.0}, "Received: cost='joules'"),
                       ([("params", 5.0)], "budgets must be None or a dict")):
        with pytest.raises(ValueError, match=match):
            ks.GrowthSettings(budgets=bad)


def test_resolve_budgets_takes_names_and_instances():
    resolved = limits.resolve_budgets({"params": 10, cost_models.MACs(): 2.5e6})
    assert [(type(m).__name__, limit) for m, limit in resolved] == [("Params", 10.0),
                                                                   ("MACs", 2.5e6)]
    assert limits.resolve_budgets(None) == []


def test_growth_callback_keeps_a_further_budget_and_refuses_one_exceeded(trained_weights):
    x, y = zoo.cnn_data()
    model = zoo.compiled_cnn()
    model.set_weights(trained_weights)
    params = model.count_params()
    grower = ks.GrowthCallback((x, y), every_n_epochs=1, max_stages=2, method="exact",
                               growth_ratio=1.0, budgets={"params": params + 150})
    model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[grower])
    assert len(grower.stages) == 2 and grower.stages[0].n_selected > 0
    assert params < model.count_params() <= params + 150
    weights = [w.copy() for w in model.get_weights()]
    late = ks.GrowthCallback((x, y), budgets={"params": 100})
    with pytest.raises(ValueError, match="budget 'params'"):
        model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[late])
    for a, b in zip(model.get_weights(), weights):   # refused before the first step
        np.testing.assert_array_equal(a, b)
