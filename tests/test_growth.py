"""Growth stages: budget, record, training after growth, saving, cost modes, noise."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_split as ks
from keras_split.data import data_utils
from tests import zoo

compiled, data = zoo.compiled_cnn, zoo.cnn_data


def test_grow_respects_budget_and_records_everything(tmp_path, trained_weights):
    model = compiled()
    model.set_weights(trained_weights)
    x, y = data()
    macs = ks.count_flops(model)
    # 6 batches of 16: grow estimates on the first 5 and holds the last one out.
    eig = model.splitting_eigenpairs((x[:80], y[:80]), method="exact", batch_size=16)
    stage = model.grow((x, y), growth_ratio=0.3, method="exact", batch_size=16, epsilon=1e-2,
                       split_rule="copy")
    assert stage.macs_before == macs
    assert stage.macs_after == ks.count_flops(model)
    assert macs < stage.macs_after <= 1.3 * macs
    assert stage.n_selected >= 1
    assert stage.params_after == model.count_params()
    for name, rec in stage.layers.items():
        width = model.network.get_layer(name).kernel.shape[-1]
        assert rec["units_after"] == width
        assert rec["units_after"] - rec["units_before"] == len(rec["split_indices"])
        assert rec["lambda_min"] <= rec["lambda_mean"]
    # The prediction is epsilon^2 / 2 times the eigenvalues of exactly the units split
    # (the exact eigenpairs on the same estimation batches, computed separately above).
    split_lambdas = [eig[n].values[u] for n, r in stage.layers.items()
                     for u in r["split_indices"]]
    assert len(split_lambdas) == sum(r["units_after"] - r["units_before"]
                                     for r in stage.layers.values())
    assert all(v < 0 for v in split_lambdas)
    assert stage.predicted_loss_change == pytest.approx(1e-4 / 2 * sum(split_lambdas), rel=1e-4)
    assert stage.measured_loss_change == pytest.approx(stage.loss_after - stage.loss_before)
    assert abs(stage.measured_loss_change) < 1e-3
    again = ks.GrowthStage.from_json(json.dumps(json.loads(stage.to_json())))
    assert again == stage
    assert model.growth_history == [stage] and isinstance(model.growth_history[0], ks.GrowthStage)
    # Training continues with the same optimizer class and learning rate.
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert type(model.optimizer) is keras.optimizers.SGD
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.growth_history == model.growth_history
    np.testing.assert_allclose(loaded.predict(x[:8], verbose=0), model.predict(x[:8], verbose=0),
                               atol=1e-5)


def test_fast_grow_reports_residuals_on_held_out_batches(trained_weights):
    from keras_split.growing.guard import mean_loss

    model = compiled()
    model.set_weights(trained_weights)
    x, y = data()
    # 96 examples in 6 batches of 16: the last batch (20 %) is held out.
    held = data_utils.as_dataset((x[-16:], y[-16:]), 16)
    everything = data_utils.as_dataset((x, y), 16)
    held_loss, all_loss = mean_loss(model, held), mean_loss(model, everything)
    assert abs(held_loss - all_loss) > 1e-3
    # The same estimate by hand: fitted on the first 5 batches, measured on the last one.
    eig = model.splitting_eigenpairs((x[:80], y[:80]), method="fast", eigen_epochs=2,
                                     batch_size=16, eval_data=(x[-16:], y[-16:]), seed=0)
    stage = model.grow((x, y), growth_ratio=0.5, method="fast", eigen_epochs=2, batch_size=16)
    assert stage.method == "fast"
    assert stage.loss_before == pytest.approx(held_loss, rel=1e-6)
    for name, rec in stage.layers.items():
        assert rec["residual_max"] == pytest.approx(eig[name].residuals.max(), rel=1e-5)
        assert rec["residual_mean"] == pytest.approx(eig[name].residuals.mean(), rel=1e-5)
    # It grew, within its budget of (1 + growth_ratio) times its MACs.
    assert stage.macs_before < stage.macs_after <= 1.5 * stage.macs_before


def test_dry_run_leaves_model_alone(trained_weights):
    model = compiled()
    model.set_weights(trained_weights)
    x, y = data()
    stage = model.grow((x, y), growth_ratio=0.5, method="exact", dry_run=True)
    assert stage.dry_run and stage.n_selected > 0 and stage.measured_loss_change is None
    assert model.growth_history == []
    np.testing.assert_array_equal(model.get_weights()[0], trained_weights[0])
    real = model.grow((x, y), growth_ratio=0.5, method="exact")
    assert real.macs_after == stage.macs_after
    assert {n: r["split_indices"] for n, r in real.layers.items()} == {
        n: r["split_indices"] for n, r in stage.layers.items()}


def test_energy_aware_beats_vanilla_per_mac(trained_weights):
    model = compiled()
    model.set_weights(trained_weights)
    x, y = data()
    eig = model.splitting_eigenpairs((x, y), method="exact")
    from keras_split.select.budget import select_groups
    results = {}
    for cost in ("flops", "uniform"):
        sel = select_groups(model.channel_graph, eig, 0.3, cost=cost)
        groups, values, chosen, budget = sel.groups, sel.values, sel.chosen, sel.budget
        from keras_split.select import costs
        added = costs.widened_cost(model.channel_graph, [groups[i] for i in chosen]) - costs.network_cost(
            model.channel_graph)
        assert 0 < added <= budget
        results[cost] = (values[chosen].sum(), added, chosen)
    flops_value, flops_added, flops_chosen = results["flops"]
    uni_value, uni_added, uni_chosen = results["uniform"]
    assert flops_value <= uni_value  # the optimum under the same budget
    assert flops_value / flops_added <= uni_value / uni_added
    assert len(flops_chosen) > len(uni_chosen)  # cheap neurons first


def test_cost_modes_and_callable(trained_weights):
    x, y = data()
    for cost in ("params", "uniform", lambda layer: 1.0 if layer.name == "fc" else 100.0):
        model = compiled()
        model.set_weights(trained_weights)
        # callable: network cost 8 * 1 + 12 * 100 = 1208, budget 60 < one conv neuron (one
        # budget for the network: per resolution, fc's share, 0.4, buys no unit either).
        stage = model.grow((x, y), growth_ratio=0.05 if callable(cost) else 0.2,
                           method="exact", cost=cost, dry_run=True, budget_groups=None)
        assert stage.n_selected >= 1
        if callable(cost):
            grown = {n for n, r in stage.layers.items() if r["split_indices"]}
            assert grown == {"fc"}
        if cost == "params":
            assert stage.params_after <= 1.2 * stage.params_before
        assert stage.macs_after <= (1.05 if callable(cost) else 1.2) * stage.macs_before
        if cost == "uniform":
            assert stage.solver == "greedy_value"
            assert stage.macs_after <= 1.2 * stage.macs_before


def test_budget_too_small_splits_nothing(trained_weights):
    model = compiled()
    model.set_weights(trained_weights)
    x, y = data()
    stage = model.grow((x, y), growth_ratio=1e-6, method="exact")
    assert stage.n_selected == 0 and stage.macs_after == stage.macs_before
    assert stage.n_candidates > 0


def test_round_to_and_max_units(trained_weights):
    model = compiled()
    model.set_weights(trained_weights)
    x, y = data()
    stage = model.grow((x, y), growth_ratio=1.0, method="exact", round_to=4,
                       max_units={"wide": 0}, max_widths={"fc": 12}, dry_run=True)
    grown = 0
    for name, rec in stage.layers.items():
        if rec["units_after"] != rec["units_before"]:
            assert rec["units_after"] % 4 == 0
            grown += 1
    assert grown >= 1
    assert stage.layers["wide"]["units_after"] == 6
    assert stage.layers["fc"]["units_after"] <= 12
    assert stage.macs_after <= 2 * stage.macs_before
    with pytest.raises(ValueError, match="max_widths names unknown"):
        model.grow((x, y), method="exact", max_widths={"logits": 20})


def test_same_seed_same_decisions_and_tensorboard(tmp_path, trained_weights):
    x, y = data()
    decisions, stages = [], []
    for run in range(2):
        model = compiled()
        model.set_weights(trained_weights)
        stages.append(model.grow((x, y), growth_ratio=0.4, method="fast", eigen_epochs=2,
                                 seed=5, log_dir=str(tmp_path / f"tb{run}")))
        decisions.append({n: r["split_indices"] for n, r in stages[-1].layers.items()})
    assert decisions[0] == decisions[1]
    stage = stages[0]                      # the run whose TensorBoard log is read below
    assert any(decisions[0].values())
    tags, scalars = set(), {}
    for path in (tmp_path / "tb0").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags.add(value.tag)
                if value.tag.startswith("growth/"):
                    scalars[value.tag] = float(tf.make_ndarray(value.tensor))
    assert {"growth/macs", "lambda/wide", "width/fc", "growth/twin_fraction",
            "growth/distinct_filters"} <= tags
    assert scalars["growth/macs"] == stage.macs_after
    assert scalars["growth/n_selected"] == stage.n_selected
    assert scalars["growth/twin_fraction"] == pytest.approx(stage.twins["twin_fraction"])
    assert scalars["growth/distinct_filters"] == stage.twins["distinct"]


def test_noise_level_eigenvalues_are_not_split(trained_weights):
    from keras_split.select.noise import without_noise

    x, y = data()
    model = compiled()
    model.set_weights(trained_weights)
    graph = model.channel_graph
    eig = model.splitting_eigenpairs((x, y), method="exact", batch_size=16)
    # Per neuron: lambda * ||theta||^2 / 2 against 1e-6 of the loss.
    kernel = model.network.get_layer("wide").kernel.numpy()
    norms = np.sum(kernel.reshape(-1, kernel.shape[-1]) ** 2, axis=0)
    values = np.array([-3e-6, -1e-6, -1e-9, 0.5, -1e-2, -1e-7])[:len(norms)] / norms
    probe = {"wide": ks.Eigenpairs(values, eig["wide"].vectors)}
    kept, count = without_noise(graph, probe, loss=2.0)
    # 0.5 * |lambda| * ||theta||^2 = 1.5e-6, 5e-7, 5e-10, -, 5e-3, 5e-8 against 2e-6:
    # only the -1e-2 one is a candidate (the positive one is kept as it is).
    np.testing.assert_array_equal(kept["wide"].values, np.where(
        [False, False, False, True, True, False], values, 0.0))
    assert count == 4
    kept, count = without_noise(graph, probe, loss=1.0)      # floor 1e-6
    assert count == 3 and kept["wide"].values[0] == values[0]
    # A network whose outputs barely depend on its hidden units (an uncalibrated net):
    # every eigenvalue is rounding-level, and grow splits nothing.
    logits = model.network.get_layer("logits").kernel
    logits.assign(logits * 1e-9)
    stage = model.grow((x, y), growth_ratio=0.5, method="exact", batch_size=16)
    assert stage.n_selected == 0 and stage.n_candidates == 0 and stage.n_noise > 0
    assert stage.macs_after == stage.macs_before


