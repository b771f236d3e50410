"""Per-group budgets, the square-root cost and the per-stage growth cap (the seed code's)."""

import keras
import numpy as np
import pytest

import keras_split as ks
from keras_split.growing import growth_settings
from keras_split.select import budget, costs, noise, reach
from tests import zoo

L = keras.layers


def _two_resolutions():
    """8 channels at 16x16, then 8 at 4x4: the high-resolution layer's units cost 16x."""
    x = keras.Input((16, 16, 3))
    h = L.Conv2D(8, 3, padding="same", activation="swish", name="hi")(x)
    h = L.Conv2D(8, 3, strides=4, padding="same", activation="swish", name="lo")(h)
    h = L.GlobalAveragePooling2D()(h)
    return ks.GrowingModel(keras.Model(x, L.Dense(4, name="out")(h)))


def _all_negative(model):
    """Equal eigenvalues: any selection is then decided by the costs alone."""
    return {n: ks.Eigenpairs(-np.ones(model.get_layer(n).kernel.shape[-1]),
                             np.eye(model.get_layer(n).kernel.shape[-1],
                                    int(np.prod(model.get_layer(n).kernel.shape[:-1]))))
            for n in model.splittable_layers}


def _chosen_per_layer(graph, groups, chosen):
    out = {n: 0 for n in graph.splittable_layers}
    for i in chosen:
        for name, _ in graph.group_members(groups[i]):
            out[name] += 1
    return out


def test_sqrt_flops_is_the_square_root_of_the_macs_each_group_adds():
    graph = _two_resolutions().channel_graph
    groups = sorted(graph.groups)
    flops = costs.group_costs(graph, groups, "flops")
    np.testing.assert_allclose(costs.group_costs(graph, groups, "sqrt_flops"), np.sqrt(flops))
    assert costs.network_cost(graph, "sqrt_flops") == pytest.approx(np.sqrt(flops).sum())
    assert costs.widened_cost(graph, groups[:3], "sqrt_flops") == pytest.approx(
        np.sqrt(flops).sum() + np.sqrt(flops[:3]).sum())
    # A unit of "hi": its 3x3x3 filter at 16x16 and one more input channel of lo's eight
    # 3x3 filters at 4x4; a unit of "lo": its 3x3x8 filter at 4x4 and one Dense input.
    per_layer = {graph.group_members(g)[0][0]: c for g, c in zip(groups, flops)}
    assert per_layer == {"hi": 16 * 16 * 27 + 4 * 4 * 9 * 8, "lo": 4 * 4 * 72 + 4}


def test_one_budget_favours_the_cheap_layer_a_budget_per_resolution_grows_both_alike():
    model = _two_resolutions()
    graph, eig = model.channel_graph, _all_negative(model)
    sel = budget.select_groups(graph, eig, 0.5, cost="flops")
    # One budget: the cheap low-resolution units first (all 8), then 2 of the others.
    assert _chosen_per_layer(graph, sel.groups, sel.chosen) == {"hi": 2, "lo": 8}
    sel = budget.select_groups(graph, eig, 0.5, cost="flops", budget_groups="resolution")
    groups, chosen = sel.groups, sel.chosen
    # A budget each: both grow by the same share (their costs are 87.5 % and 12.5 %).
    assert _chosen_per_layer(graph, sel.groups, sel.chosen) == {"hi": 3, "lo": 3}
    # Each resolution keeps its own budget: ratio x its share of the summed group costs.
    group_cost = costs.group_costs(graph, groups, "flops")
    total = costs.network_cost(graph, "flops")
    for name in ("hi", "lo"):
        mine = np.array([graph.group_members(g)[0][0] == name for g in groups])
        spent = group_cost[[i for i in chosen if mine[i]]].sum()
        assert spent <= 0.5 * total * group_cost[mine].sum() / group_cost.sum() + 1e-6
    labels = budget.budget_labels(graph, "resolution")
    assert labels == {"hi": (16, 16), "lo": (4, 4)}
    with pytest.raises(ValueError, match="missing \\['lo'\\]"):
        budget.budget_labels(graph, {"hi": 0})
    with pytest.raises(ValueError, match="'layer' or a dict .*Received: budget_groups='depth'"):
        ks.GrowthSettings(budget_groups="depth")


def _three_layers():
    """Two layers of 8 channels at 16x16 ("a" with 3 inputs, "b" with 8), then 8 at 4x4."""
    x = keras.Input((16, 16, 3))
    h = L.Conv2D(8, 3, padding="same", activation="swish", name="a")(x)
    h = L.Conv2D(8, 3, padding="same", activation="swish", name="b")(h)
    h = L.Conv2D(8, 3, strides=4, padding="same", activation="swish", name="lo")(h)
    h = L.GlobalAveragePooling2D()(h)
    return ks.GrowingModel(keras.Model(x, L.Dense(4, name="out")(h)))


def test_a_budget_per_layer_grows_every_layer_by_its_share():
    model = _three_layers()
    graph, eig = model.channel_graph, _all_negative(model)
    assert budget.budget_labels(graph, "layer") == {"a": "a", "b": "b", "lo": "lo"}
    # "b" is worth nothing to one budget per resolution: "a" (cheaper per unit, and
    # worth as much) takes what the 16x16 budget buys.
    eig["b"] = ks.Eigenpairs(eig["b"].values * 1e-3, eig["b"].vectors)
    sel = budget.select_groups(graph, eig, 0.5, budget_groups="resolution")
    assert _chosen_per_layer(graph, sel.groups, sel.chosen)["b"] == 0
    # A budget per layer and nothing shared: every layer grows by about half its width
    # whatever its eigenvalues, each within half of its own share of the summed costs
    # (a unit of "a" costs its filter and one more input channel of "b": 25 344 MACs).
    sel = budget.select_groups(graph, eig, 0.5, budget_groups="layer", group_share=1.0)
    per_layer = _chosen_per_layer(graph, sel.groups, sel.chosen)
    assert per_layer == {"a": 2, "b": 2, "lo": 2}
    group_cost = costs.group_costs(graph, sel.groups, "flops")
    total = costs.network_cost(graph, "flops")
    for name in ("a", "b", "lo"):
        mine = np.array([graph.group_members(g)[0][0] == name for g in sel.groups])
        spent = group_cost[[i for i in sel.chosen if mine[i]]].sum()
        assert spent <= 0.5 * total * group_cost[mine].sum() / group_cost.sum() + 1e-6
    # Half kept per layer: a quarter of each layer's share buys one unit of each ("b"
    # keeps this floor); the shared half goes to the valuable units, first the cheap "lo"
    # (all 8 of them), then one more "a" within the exact cost.
    sel = budget.select_groups(graph, eig, 0.5, budget_groups="layer", group_share=0.5)
    assert _chosen_per_layer(graph, sel.groups, sel.chosen) == {"a": 2, "b": 1, "lo": 8}
    sel = budget.select_groups(graph, eig, 0.5, budget_groups="layer", group_share=0.0)
    assert _chosen_per_layer(graph, sel.groups, sel.chosen)["b"] == 0
    assert ks.GrowthSettings(budget_groups="layer").budget_groups == "layer"


def test_a_filled_budget_widens_a_layer_without_negative_eigenvalues():
    model = _three_layers()
    graph, eig = model.channel_graph, _all_negative(model)
    # "b" has no negative eigenvalue: its units' values from 0.1 (unit 1), 0.2 (unit 4) up.
    eig["b"] = ks.Eigenpairs(np.array([0.5, 0.1, 0.3, 0.9, 0.2, 0.7, 0.4, 0.6]),
                             eig["b"].vectors)

    def b_units(sel):
        return [u for i in sel.chosen for n, u in graph.group_members(sel.groups[i])
                if n == "b"]

    for share, grown in ((0.5, {"a": 2, "b": 1, "lo": 8}), (1.0, {"a": 2, "b": 2, "lo": 2})):
        plain = budget.select_groups(graph, eig, 0.5, budget_groups="layer", group_share=share)
        assert b_units(plain) == []
        sel = budget.select_groups(graph, eig, 0.5, budget_groups="layer", group_share=share,
                                   fill=True)
        # The counts that "b" with negative eigenvalues would get, its least valuable first.
        assert _chosen_per_layer(graph, sel.groups, sel.chosen) == grown
        assert b_units(sel) == [1, 4][:grown["b"]]
        # A filled unit sets no bar: the other units of "b" stay out of the estimate's reach.
        assert reach.within_reach(graph, eig, sel)["b"].tolist() == [
            u in b_units(sel) for u in range(8)]
    # One budget for the network: nothing kept apart, nothing filled.
    sel = budget.select_groups(graph, eig, 0.5, budget_groups=None, fill=True)
    assert b_units(sel) == []
    with pytest.raises(ValueError, match="Received: fill_budgets='yes'"):
        ks.GrowthSettings(fill_budgets="yes")


def test_max_growth_caps_every_layer_per_stage():
    model = _two_resolutions()
    graph, eig = model.channel_graph, _all_negative(model)
    sel = budget.select_groups(graph, eig, 5.0, cost="uniform", max_growth=1.5)
    assert _chosen_per_layer(graph, sel.groups, sel.chosen) == {"hi": 4, "lo": 4}
    assert budget.growth_caps(graph, 2.0) == {"hi": 8, "lo": 8}
    with pytest.raises(ValueError, match="Received: max_growth=1"):
        ks.GrowthSettings(max_growth=1)


def test_the_papers_settings_grow_a_model():
    model = _two_resolutions()
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 16, 16, 3)).astype("float32"), rng.integers(0, 4, 64)
    settings = ks.GrowthSettings.papers(growth_ratio=0.5)
    assert (settings.cost, settings.budget_groups, settings.max_growth, settings.solver,
            settings.split_rule) == ("sqrt_flops", "resolution", 2.0, "lp", "copy")
    before = ks.count_flops(model)
    stage = model.grow(x, y, settings, batch_size=16)
    assert stage.n_selected > 0 and before < stage.macs_after <= 1.5 * before
    for name in model.splittable_layers:
        assert stage.layers[name]["units_after"] <= 2 * stage.layers[name]["units_before"]


def test_every_stage_records_the_selections_stability():
    model = _two_resolutions()
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(80, 16, 16, 3)).astype("float32"), rng.integers(0, 4, 80)
    stage = model.grow(x, y, batch_size=16, growth_ratio=0.3, dry_run=True)
    s = stage.stability
    assert s["n_held_out"] == stage.n_selected > 0 and s["n_estimation"] > 0
    # By hand: the same estimate (the last of 5 batches held out), one knapsack on the
    # held-out eigenvalues and one on the estimation data's.
    eig = model.splitting_eigenpairs((x[:64], y[:64]), batch_size=16,
                                     eval_data=(x[64:], y[64:]))
    chosen = []
    for values in ("values", "fit_values"):
        pairs = {n: ks.Eigenpairs(getattr(e, values), e.vectors) for n, e in eig.items()}
        pairs = noise.without_noise(model.channel_graph, pairs, eig.loss)[0]
        chosen.append(set(budget.select_groups(
            model.channel_graph, pairs, 0.3, budget_groups=growth_settings.DEFAULT_BUDGET_GROUPS,
            group_share=growth_settings.DEFAULT_GROUP_SHARE).chosen
            .tolist()))
    a, b = chosen
    assert (s["n_held_out"], s["n_estimation"]) == (len(a), len(b))
    assert s["jaccard"] == pytest.approx(len(a & b) / len(a | b))
    assert ks.GrowthStage.from_json(stage.to_json()).stability == s
    assert f"stability (Jaccard) {s['jaccard']:.2f}" in stage.summary()
    exact = model.grow(x, y, batch_size=16, growth_ratio=0.3, dry_run=True, method="exact")
    assert exact.stability is None


def test_group_share_keeps_part_of_each_budget_and_shares_the_rest():
    model = _two_resolutions()
    graph, eig = model.channel_graph, _all_negative(model)
    # The cheap low-resolution units are worth almost nothing: one budget spends it all on
    # "hi" (4 x 8 064 MACs of the 32 272 budget).
    eig["lo"] = ks.Eigenpairs(eig["lo"].values * 1e-3, eig["lo"].vectors)
    chosen_by = {}
    for share in (0.0, 0.5, 1.0):
        sel = budget.select_groups(graph, eig, 0.5, budget_groups="resolution",
                                   group_share=share)
        chosen_by[share] = _chosen_per_layer(graph, sel.groups, sel.chosen)
    assert chosen_by[0.0] == {"hi": 4, "lo": 0}
    assert chosen_by[1.0] == {"hi": 3, "lo": 3}
    # Half of each own budget: 1 "hi" (14 113) and 1 "lo" (2 023); the 23 052 left buys 2
    # more "hi", then "lo" units while the exact cost of the shared part (with the input
    # channels the new "hi" units add to "lo") stays within it: 3 more.
    assert chosen_by[0.5] == {"hi": 3, "lo": 4}
    with pytest.raises(ValueError, match="Received: group_share=1.5"):
        ks.GrowthSettings(group_share=1.5)


def test_relative_values_are_unchanged_when_a_unit_is_rescaled_ahead_of_batchnorm(float64):
    base = zoo.cnn_bn_swish()
    zoo.randomize_batchnorm(base, np.random.default_rng(5))
    model = ks.GrowingModel(base)
    model.compile(optimizer="sgd", loss="mse")
    data = zoo.data_for(base, n=24)
    before = model.splitting_eigenpairs(data, method="exact")
    graph = model.channel_graph

    def group_values(eig, value):
        sel = budget.select_groups(graph, eig, 0.5, value=value)
        return {graph.group_members(g)[0]: v for g, v in zip(sel.groups, sel.values)}

    lam_before, rel_before = group_values(before, "lambda"), group_values(before, "relative")
    norms = noise.unit_sq_norms(graph, "c2")
    assert rel_before[("c2", 2)] == pytest.approx(before["c2"].values[2] * norms[2], rel=1e-12)
    # Unit 0 of c1 three times larger, its frozen BatchNorm statistics rescaled with it:
    # the network computes the same function.
    out = model.predict(data[0], verbose=0)
    conv, bn = model.get_layer("c1"), model.get_layer("bn1")
    kernel, mean, var = (keras.ops.convert_to_numpy(v) for v in
                         (conv.kernel, bn.moving_mean, bn.moving_variance))
    kernel[..., 0] *= 3.0
    mean[0] *= 3.0
    var[0] = 9.0 * (var[0] + bn.epsilon) - bn.epsilon
    conv.kernel.assign(kernel)
    bn.moving_mean.assign(mean)
    bn.moving_variance.assign(var)
    np.testing.assert_allclose(model.predict(data[0], verbose=0), out, rtol=1e-9, atol=1e-12)
    after = model.splitting_eigenpairs(data, method="exact")
    # Its eigenvalue shrinks by 9 (the frozen scale c enters S as c^2), the others stay.
    assert before["c1"].values[0] < -1e-6
    np.testing.assert_allclose(after["c1"].values[0], before["c1"].values[0] / 9.0, rtol=1e-8)
    np.testing.assert_allclose(after["c1"].values[1:], before["c1"].values[1:], rtol=1e-8)
    lam_after = group_values(after, "lambda")
    assert lam_after[("c1", 0)] == pytest.approx(lam_before[("c1", 0)] / 9.0, rel=1e-8)
    assert group_values(after, "relative") == pytest.approx(rel_before, rel=1e-8)
    with pytest.raises(ValueError, match="Received: value='norm'"):
        ks.GrowthSettings(value="norm")


def _mlp_estimates(residual):
    """Hand-made eigenpairs of zoo.mlp's two layers (d1: 5 units of cost 10, d2: 4 of 8)."""
    def pairs(values, residuals):
        return ks.Eigenpairs(values, np.eye(len(values), 11 - len(values)), residuals)
    return {"d1": pairs([-4.0, -3.0, -0.1, -0.1, 0.0], [0.0, 0.0, 0.2, residual, 0.0]),
            "d2": pairs([-2.0, -0.2, -0.05, 0.0], [0.0, 0.0, 0.6, 0.0])}


def test_within_reach_keeps_the_chosen_and_those_their_residuals_could_make_compete():
    graph = ks.GrowingModel(zoo.mlp()).channel_graph
    eig = _mlp_estimates(residual=2.0)
    sel = budget.select_groups(graph, eig, 0.2, cost="flops")
    np.testing.assert_array_equal(sel.costs, [10.0] * 5 + [8.0] * 4)
    assert [sel.groups[i] for i in sel.chosen] == [sel.groups[0]]   # d1's unit 0, 4 per 10
    # Half of 0.4 per MAC: d1's unit 1 (0.3), d2's unit 0 (0.25) and d1's unit 3, whose
    # residual could take it from -0.1 to -2.1 (0.21); not d2's unit 2 (-0.65: 0.08).
    marked = reach.within_reach(graph, eig, sel)
    assert {n: m.tolist() for n, m in marked.items()} == {
        "d1": [True, True, False, True, False], "d2": [True, False, False, False]}
    # A smaller residual (at most -1.0: 0.1 per MAC) leaves d1's unit 3 out of reach.
    marked = reach.within_reach(graph, _mlp_estimates(residual=0.9), sel)
    assert marked["d1"].tolist() == [True, True, False, False, False]
    # A margin of 0.22 (0.088 per MAC): unit 3 (0.1) back in, d2's unit 2 (0.081) still out.
    marked = reach.within_reach(graph, _mlp_estimates(residual=0.9), sel, margin=0.22)
    assert marked["d1"].tolist() == [True, True, False, True, False]
    assert marked["d2"].tolist() == [True, False, False, False]
    # Nothing chosen: every unit may matter.
    assert reach.within_reach(graph, eig, budget.select_groups(graph, eig, 0.05)) is None
