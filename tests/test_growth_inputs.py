"""grow's inputs: arrays and datasets, estimation batches, argument checks, the held-out
loss, and a failure mid-stage."""

import numpy as np
import pytest
import tensorflow as tf

import keras_split as ks
from keras_split.growing import eigen_methods
from tests import zoo

compiled, data = zoo.compiled_cnn, zoo.cnn_data


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
    check = eigen_methods.check_labels

    def counting(*args):
        calls.append(1)
        return check(*args)

    monkeypatch.setattr(eigen_methods, "check_labels", counting)
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
