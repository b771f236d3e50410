"""Catch-up learning rates: the gradients of the entries a split creates are boosted."""

import keras
import numpy as np
import pytest

import keras_split as ks
from keras_split.surgery.catch_up import CatchUp
from tests import zoo


def _weights(model, name):
    layer = model.network.get_layer(name)
    return [keras.ops.convert_to_numpy(w).copy() for w in (layer.kernel, layer.bias)]


def _gradients(model, x, y):
    import tensorflow as tf

    variables = model.network.trainable_variables
    with tf.GradientTape() as tape:
        loss = keras.losses.mean_squared_error(y, model(x, training=True))
        loss = keras.ops.mean(loss)
    return {v.path: keras.ops.convert_to_numpy(g)
            for v, g in zip(variables, tape.gradient(loss, variables))}


def test_second_children_learn_catch_up_times_faster_then_as_fast(float64):
    lr, gain, t0 = 0.1, 3.0, 4
    model = ks.GrowingModel(zoo.mlp())
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    x, y = zoo.data_for(model.network, n=32)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)   # 4 steps
    # Copies (epsilon 0, halved outgoing): both children have non-zero gradients.
    model.split({"d1": [1]}, epsilon=0.0, split_rule=ks.SplitRule(epsilon=0.0, catch_up=gain))
    d1, d2 = _weights(model, "d1"), _weights(model, "d2")
    grads = _gradients(model, x, y)
    model.train_on_batch(x, y)
    new1, new2 = _weights(model, "d1"), _weights(model, "d2")
    g1, g2 = grads["d1/kernel"], grads["d2/kernel"]
    assert np.abs(g1[:, 2]).max() > 1e-4 and np.abs(g2[2]).max() > 1e-4
    # Step t0 = 4: the second child (unit 2 of d1, row 2 of d2) moves 3x, the rest 1x.
    np.testing.assert_allclose(new1[0][:, 2] - d1[0][:, 2], -lr * gain * g1[:, 2], atol=1e-10)
    np.testing.assert_allclose(new1[0][:, 1] - d1[0][:, 1], -lr * g1[:, 1], atol=1e-10)
    np.testing.assert_allclose(new1[1][2] - d1[1][2], -lr * gain * grads["d1/bias"][2],
                               atol=1e-10)
    np.testing.assert_allclose(new2[0][2] - d2[0][2], -lr * gain * g2[2], atol=1e-10)
    np.testing.assert_allclose(np.delete(new2[0] - d2[0], 2, axis=0),
                               -lr * np.delete(g2, 2, axis=0), atol=1e-10)
    # The boost decays linearly to 1 over t0 steps: 2 at step 6, 1 from step 8 on.
    record = model.catch_up
    assert np.asarray(record.multiplier("d2/kernel", 6, "float64"))[2].tolist() == [2.0] * 4
    np.testing.assert_array_equal(record.multiplier("d2/kernel", 8, "float64"), 1.0)
    np.testing.assert_array_equal(record.multiplier("d1/kernel", 4, "float64")[:, :2], 1.0)


def test_children_inherit_and_a_rule_without_catch_up_adds_nothing(float64):
    model = ks.GrowingModel(zoo.mlp())
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = zoo.data_for(model.network, n=16)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)               # 2 steps
    model.split({"d1": [0]}, epsilon=0.0, split_rule="fresh")
    assert not model.catch_up.active
    model.split({"d1": [0]}, epsilon=0.0, split_rule=ks.SplitRule(
        epsilon=0.0, incoming="fresh", outgoing="parent", catch_up=2.0))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)               # steps 3, 4
    # Splitting the boosted unit 1 again at step 4: its first child keeps its record
    # (born at 2, boost 2), the second is born at 4 with boost 4; d1 has 8 units now.
    model.split({"d1": [1]}, epsilon=0.0, split_rule=ks.SplitRule(
        epsilon=0.0, incoming="fresh", outgoing="parent", catch_up=4.0))
    record = model.catch_up.records["d1/kernel"]
    assert record.birth[0].tolist() == [0, 2, 4, 0, 0, 0, 0, 0]
    assert record.gain[0].tolist() == [1.0, 2.0, 4.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert model.catch_up.records["d2/kernel"].birth[:, 0].tolist() == [0, 2, 4, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("topology", sorted(zoo.TOPOLOGIES))
def test_catch_up_keeps_the_function_and_is_validated(topology, float64):
    network = zoo.TOPOLOGIES[topology]()
    zoo.randomize_batchnorm(network, np.random.default_rng(1))
    model = ks.GrowingModel(network)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    x, y = zoo.data_for(network)
    model.fit(x, y, epochs=1, verbose=0)
    before = model.predict(x, verbose=0)
    rule = ks.SplitRule(epsilon=0.0, incoming="fresh", outgoing="parent", reset_slots=True,
                        fresh_scale=0.5, catch_up=3.0)
    model.split({name: [0] for name in model.splittable_layers}, epsilon=0.0, split_rule=rule)
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-10)
    assert model.catch_up.active
    model.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(model.predict(x, verbose=0)).all()
    with pytest.raises(ValueError, match="catch_up=0.5"):
        ks.SplitRule(catch_up=0.5)
    with pytest.raises(ValueError, match="gain=0.5"):
        CatchUp().after_split({}, [], 3, 0.5)
