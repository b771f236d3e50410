"""Growth stages: budget, record, training after growth, saving, cost modes, bad input."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_split as ks
from keras_split.data import data_utils
from keras_split.growing import growing_model
from tests import zoo

L = keras.layers


def small_cnn():
    """Layers with very different per-neuron costs: a full-resolution conv, a pooled one, a dense."""
    x = keras.Input((12, 12, 3), name="x")
    h = L.Conv2D(6, 3, padding="same", use_bias=False, name="wide")(x)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.Activation("swish", name="a1")(h)
    h = L.MaxPooling2D(4, name="pool")(h)
    h = L.Conv2D(6, 1, activation="swish", name="narrow")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    h = L.Dense(8, activation="tanh", name="fc")(h)
    return keras.Model(x, L.Dense(3, name="logits")(h), name="small_cnn")


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12, 12, 3)).astype("float32")
    w = rng.normal(size=(3, 3))
    y = np.argmax(x.mean(axis=(1, 2)) @ w + 0.1 * rng.normal(size=(n, 3)), axis=1)
    return x, y


def compiled(model=None):
    m = ks.GrowingModel(model or small_cnn())
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
    return m


@pytest.fixture(scope="module")
def trained_weights():
    keras.utils.set_random_seed(7)
    m = compiled()
    x, y = data()
    m.fit(x, y, epochs=3, batch_size=16, verbose=0)
    return m.get_weights()


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
    assert model.growth_history == [stage.to_dict()]
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
    stage = model.grow((x, y), growth_ratio=0.5, method="fast", eigen_epochs=2, batch_size=16)
    assert stage.method == "fast"
    assert stage.loss_before == pytest.approx(held_loss, rel=1e-6)
    assert all(rec["residual_max"] > 0 for rec in stage.layers.values())
    assert stage.macs_after <= 1.5 * stage.macs_before


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
        groups, values, chosen, budget, _ = select_groups(model._graph, eig, 0.3, cost=cost)
        from keras_split.select import costs
        added = costs.widened_cost(model._graph, [groups[i] for i in chosen]) - costs.network_cost(
            model._graph)
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


@pytest.mark.parametrize("ratio", [0, -0.5, float("nan"), float("inf"), 1e9, "half", True])
def test_bad_growth_ratio(ratio):
    model = compiled()
    x, y = data(16)
    with pytest.raises(ValueError, match="growth_ratio"):
        model.grow((x, y), growth_ratio=ratio)


def test_bad_data():
    model = compiled()
    x, y = data(16)
    with pytest.raises(ValueError, match="empty"):
        model.grow(tf.data.Dataset.from_tensor_slices((x, y)).batch(4).take(0), method="exact")
    with pytest.raises(ValueError, match="cost"):
        model.grow((x, y), cost="latency")
    with pytest.raises(ValueError, match="solver"):
        model.grow((x, y), solver="cplex")
    with pytest.raises(ValueError, match="does not match the model and its compiled loss"):
        model.grow((x, np.zeros((16, 7, 2))), method="exact")
    weights = model.get_weights()
    with pytest.raises(ValueError, match=r"The inputs have shape \(16, 10, 10, 3\); the model "
                                         r"expects inputs of shape \(None, 12, 12, 3\)"):
        model.grow((np.zeros((16, 10, 10, 3), "float32"), y), batch_size=32)
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", ["exact", "lobpcg"])
def test_the_label_check_runs_only_when_estimation_fails(monkeypatch, method):
    model = compiled()
    x, y = data(16)
    calls = []
    check = growing_model.check_labels

    def counting(*args):
        calls.append(1)
        return check(*args)

    monkeypatch.setattr(growing_model, "check_labels", counting)
    eig = model.splitting_eigenpairs((x, y), method=method, eigen_epochs=2)
    assert calls == []  # data that fits: no eager forward pass
    assert all(np.isfinite(e.values).all() for e in eig.values())
    with pytest.raises(ValueError, match="The inputs have shape"):  # checked without one
        model.splitting_eigenpairs((x[:, :, :, :2], y), method=method, eigen_epochs=2)
    assert calls == []
    # Labels that do not fit the loss fail clearly, whatever the estimator's own error.
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    with pytest.raises(ValueError, match="does not match the model and its compiled loss"):
        model.splitting_eigenpairs((x, y), method=method, eigen_epochs=2)
    assert calls == [1]


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


def test_estimation_batches_are_fixed_and_bounded(caplog):
    from keras_split.growing.estimation_data import fixed_batches

    # a pipeline that reshuffles on every pass
    noisy = tf.data.Dataset.range(6).shuffle(6, seed=1, reshuffle_each_iteration=True).batch(1)
    assert not np.array_equal(np.stack(list(noisy.as_numpy_iterator())),
                              np.stack(list(noisy.as_numpy_iterator())))
    fixed = fixed_batches(noisy)
    first, second = [b.numpy() for b in fixed], [b.numpy() for b in fixed]
    np.testing.assert_array_equal(np.stack(first), np.stack(second))
    assert len(first) == 6 and int(fixed.cardinality()) == 6
    # too long: the first 5 batches, fixed as well, and a log line says so
    with caplog.at_level("INFO", logger="keras_split.growing.estimation_data"):
        long = fixed_batches(noisy, max_batches=5)
    a, b = [x.numpy() for x in long], [x.numpy() for x in long]
    assert len(a) == 5 and int(long.cardinality()) == 5
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert "takes the first 5 batches of the data (6 in all" in caplog.text
    # an endless pipeline of 8-byte batches under a 24-byte bound: 3 batches
    endless = tf.data.Dataset.range(10**9).repeat().batch(1)
    assert [x.numpy()[0] for x in fixed_batches(endless, max_bytes=24)] == [0, 1, 2]
    with pytest.raises(ValueError, match="empty"):
        fixed_batches(noisy.take(0))


def test_grow_takes_arrays_like_fit_and_checks_verbose(trained_weights, capsys):
    x, y = data()
    stages = []
    for call in (lambda m: m.grow(x, y, batch_size=16, seed=1, verbose="auto"),
                 lambda m: m.grow((x, y), batch_size=16, seed=1, verbose=2),
                 lambda m: m.grow(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), seed=1)):
        model = compiled()
        model.set_weights(trained_weights)
        stages.append(call(model))
    assert stages[0].layers == stages[1].layers == stages[2].layers
    assert stages[0].n_selected > 0
    out = capsys.readouterr().out
    assert out.count(f"stage 0: MACs {stages[0].macs_before:,} -> {stages[0].macs_after:,}") == 2
    model = compiled()
    for bad in (3, True, "loud"):
        with pytest.raises(ValueError, match="verbose must be 0, 1, 2 or 'auto'"):
            model.grow(x, y, verbose=bad)
    with pytest.raises(ValueError, match=r"grow\(x, y\)"):
        model.grow()

@pytest.mark.parametrize("where", ["twin_statistics", "_write_tensorboard"])
def test_a_failure_after_the_split_leaves_the_model_as_it_was(trained_weights, tmp_path,
                                                               monkeypatch, where):
    from keras_split.growing import growth

    x, y = data()
    model = compiled()
    model.set_weights(trained_weights)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)      # builds the optimizer's slots
    config, weights = model.network.get_config(), model.get_weights()
    slots = [v.numpy() for v in model.optimizer.variables]

    def fail(*args, **kwargs):
        raise KeyboardInterrupt if where == "_write_tensorboard" else RuntimeError(where)

    monkeypatch.setattr(growth, where, fail)
    with pytest.raises(KeyboardInterrupt if where == "_write_tensorboard" else RuntimeError):
        model.grow(x, y, growth_ratio=0.5, batch_size=16, log_dir=str(tmp_path), verbose=1)
    assert model.network.get_config() == config and model.growth_history == []
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    assert len(model.optimizer.variables) == len(slots)
    for a, b in zip(model.optimizer.variables, slots):
        np.testing.assert_array_equal(a.numpy(), b)
    monkeypatch.undo()
    # ... and it still trains and grows.
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert model.grow(x, y, growth_ratio=0.5, batch_size=16, verbose=1).macs_after > \
        ks.count_flops(compiled())


def test_noise_level_eigenvalues_are_not_split(trained_weights):
    from keras_split.select.budget import without_noise

    x, y = data()
    model = compiled()
    model.set_weights(trained_weights)
    graph = model._graph
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


def test_mean_loss_joins_batches_and_weighs_every_example_once(monkeypatch, trained_weights):
    from keras_split.growing import guard

    model = compiled()
    model.set_weights(trained_weights)
    x, y = data()
    x, y = x[:40], y[:40]
    sw = np.linspace(0.5, 2.0, 40).astype("float32")
    batches = tf.data.Dataset.from_tensor_slices((x, y, sw)).batch(16)   # 16, 16, 8
    whole = float(model.compute_loss(x=x, y=y, y_pred=model(x, training=False),
                                     sample_weight=sw, training=False))
    calls = []

    def network(inputs, training=False):
        calls.append(int(inputs.shape[0]))
        return model(inputs, training=training)

    assert guard.mean_loss(model, batches, network=network) == pytest.approx(whole, rel=1e-6)
    assert calls == [40]                        # one eager call for the three batches
    calls.clear()
    monkeypatch.setattr(guard, "CHUNK_EXAMPLES", 32)
    assert guard.mean_loss(model, batches, network=network) == pytest.approx(whole, rel=1e-6)
    assert calls == [32, 8]
    with pytest.raises(ValueError, match="empty"):
        guard.mean_loss(model, batches.take(0))


def test_estimation_batch_size_defaults_by_method_and_does_not_change_lobpcg(float64):
    assert ks.GrowthSettings().estimation_batch_size == 128
    assert ks.GrowthSettings(method="fast").estimation_batch_size == 32
    assert ks.GrowthSettings(batch_size=64, method="fast").estimation_batch_size == 64
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"Received: batch_size={bad!r}"):
            ks.GrowthSettings(batch_size=bad)
    # Full-data products: the batch size changes how they are summed, not what they are.
    network = zoo.mlp()
    model = ks.GrowingModel(network)
    model.compile(optimizer="sgd", loss="mse")
    x, y = zoo.data_for(network, n=256)
    small, large = (model.splitting_eigenpairs((x, y), batch_size=b, eigen_epochs=4,
                                               eigen_tol=None) for b in (32, 128))
    for name in small:
        np.testing.assert_allclose(large[name].values, small[name].values, rtol=1e-7,
                                   atol=1e-12)
