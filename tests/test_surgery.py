"""Function-preserving splits of every supported topology (acceptance 1), and weight-level checks."""

import keras
import numpy as np
import pytest

import keras_split as ks
from tests import zoo


def _units(model, name):
    """The layer's output units, read from the widened network itself."""
    return int(model.network.get_layer(name).output.shape[-1])


@pytest.mark.parametrize("topology", sorted(zoo.TOPOLOGIES))
def test_split_at_epsilon_zero_preserves_outputs(topology):
    rng = np.random.default_rng(0)
    base = zoo.TOPOLOGIES[topology]()
    zoo.randomize_batchnorm(base, rng)
    model = ks.GrowingModel(base)
    x, _ = zoo.data_for(base, n=16)
    before = model.predict(x, verbose=0)
    widths = {name: _units(model, name) for name in model.splittable_layers}
    plan = {name: [0, widths[name] - 1] for name in model.splittable_layers}
    # Every producer that shares a coupled group with a planned unit grows by one per group.
    groups = {model.channel_graph.group_of(n, u) for n, us in plan.items() for u in us}
    expected = dict(widths)
    for g in groups:
        for name, _ in model.channel_graph.group_members(g):
            expected[name] += 1
    summary = model.split(plan, epsilon=0.0)
    after = model.predict(x, verbose=0)
    np.testing.assert_allclose(after, before, atol=1e-5, rtol=0)
    for name, width in expected.items():
        assert _units(model, name) == width, name
        if width != widths[name]:
            assert summary[name] == (widths[name], width)
    assert model.network.get_layer("out").kernel.shape[-1] == base.outputs[0].shape[-1]


def test_splittable_layers_exclude_outputs_and_inputs():
    model = ks.GrowingModel(zoo.residual())
    assert model.splittable_layers == ["stem", "res_conv", "head"]
    groups = sorted(sorted(g) for g in model.coupled_groups())
    assert groups == [[("res_conv", k), ("stem", k)] for k in range(4)]


def test_concatenate_offsets_couple_with_add():
    model = ks.GrowingModel(zoo.concatenate())
    x, _ = zoo.data_for(model.network, n=8)
    before = model.predict(x, verbose=0)
    # Channel 3 of the Add is cb's channel 0 (after ca's 3 channels) and cd's channel 3.
    model.split({"cd": [3]}, epsilon=0.0)
    assert _units(model, "cb") == 3 and _units(model, "cd") == 6 and _units(model, "ca") == 3
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-5)


def test_children_and_consumer_weights(float64):
    model = ks.GrowingModel(zoo.mlp())
    d1 = model.network.get_layer("d1")
    d2 = model.network.get_layer("d2")
    k1, b1 = (keras.ops.convert_to_numpy(w) for w in (d1.kernel, d1.bias))
    k2 = keras.ops.convert_to_numpy(d2.kernel)
    vectors = np.eye(5, 6)  # unit k's direction is input k
    eig = {"d1": ks.Eigenpairs(values=-np.ones(5), vectors=vectors)}
    model.split({"d1": [2]}, eigenpairs=eig, epsilon=0.1)
    new_k1 = keras.ops.convert_to_numpy(model.network.get_layer("d1").kernel)
    new_b1 = keras.ops.convert_to_numpy(model.network.get_layer("d1").bias)
    new_k2 = keras.ops.convert_to_numpy(model.network.get_layer("d2").kernel)
    assert new_k1.shape == (6, 6) and new_k2.shape == (6, 4)
    np.testing.assert_allclose(new_k1[:, 2], k1[:, 2] + 0.1 * vectors[2])
    np.testing.assert_allclose(new_k1[:, 3], k1[:, 2] - 0.1 * vectors[2])
    np.testing.assert_allclose(new_k1[:, [0, 1, 4, 5]], k1[:, [0, 1, 3, 4]])
    np.testing.assert_allclose(new_b1, b1[[0, 1, 2, 2, 3, 4]])
    np.testing.assert_allclose(new_k2[2], k2[2] / 2)
    np.testing.assert_allclose(new_k2[3], k2[2] / 2)
    np.testing.assert_allclose(new_k2[[0, 1, 4, 5]], k2[[0, 1, 3, 4]])


def test_perturbation_maps_through_widened_inputs(float64):
    """Splitting d1 and d2 together: d2's eigenvector (over old inputs) is halved on duplicated rows."""
    model = ks.GrowingModel(zoo.mlp())
    k2 = keras.ops.convert_to_numpy(model.network.get_layer("d2").kernel)
    v = np.arange(1.0, 6.0)
    v /= np.linalg.norm(v)
    eig = {
        "d1": ks.Eigenpairs(-np.ones(5), np.eye(5, 6)),
        "d2": ks.Eigenpairs(-np.ones(4), np.tile(v, (4, 1))),
    }
    model.split({"d1": [1], "d2": [0]}, eigenpairs=eig, epsilon=0.5)
    new_k2 = keras.ops.convert_to_numpy(model.network.get_layer("d2").kernel)
    rows = [0, 1, 1, 2, 3, 4]
    base = k2[rows] * np.array([1, 0.5, 0.5, 1, 1, 1])[:, None]
    v_new = v[rows] * np.array([1, 0.5, 0.5, 1, 1, 1])
    np.testing.assert_allclose(new_k2[:, 0], base[:, 0] + 0.5 * v_new)
    np.testing.assert_allclose(new_k2[:, 1], base[:, 0] - 0.5 * v_new)
    np.testing.assert_allclose(new_k2[:, 2:], base[:, 1:])


def test_depthwise_filters_are_duplicated_not_halved():
    model = ks.GrowingModel(zoo.separable_block())
    dw = keras.ops.convert_to_numpy(model.network.get_layer("dw").kernel)
    gamma = keras.ops.convert_to_numpy(model.network.get_layer("bn_dw").gamma)
    model.split({"expand": [1]}, epsilon=0.0)
    new_dw = keras.ops.convert_to_numpy(model.network.get_layer("dw").kernel)
    assert new_dw.shape == (3, 3, 5, 1)
    np.testing.assert_array_equal(new_dw[:, :, 1], dw[:, :, 1])
    np.testing.assert_array_equal(new_dw[:, :, 2], dw[:, :, 1])
    new_gamma = keras.ops.convert_to_numpy(model.network.get_layer("bn_dw").gamma)
    np.testing.assert_array_equal(new_gamma, gamma[[0, 1, 1, 2, 3]])


def test_flatten_dense_rows_duplicated_at_every_position():
    model = ks.GrowingModel(zoo.flatten_dense())
    kernel = keras.ops.convert_to_numpy(model.network.get_layer("d1").kernel)  # [2*2*3, 4]
    model.split({"c1": [0]}, epsilon=0.0)
    new = keras.ops.convert_to_numpy(model.network.get_layer("d1").kernel)
    assert new.shape == (2 * 2 * 4, 4)
    old = kernel.reshape(4, 3, 4)
    expect = np.concatenate([old[:, :1] / 2, old[:, :1] / 2, old[:, 1:]], axis=1).reshape(16, 4)
    np.testing.assert_allclose(new, expect, rtol=1e-6)


def test_naming_two_members_of_a_group_is_one_split():
    model = ks.GrowingModel(zoo.residual())
    summary = model.split({"stem": [2], "res_conv": [2]}, epsilon=0.0)
    assert summary == {"stem": (4, 5), "res_conv": (4, 5)}


def test_sequential_model_is_accepted():
    seq = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(3, activation="tanh", name="h"),
        keras.layers.Dense(2, name="o"),
    ])
    model = ks.GrowingModel(seq)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    before = seq.predict(x, verbose=0)
    model.split({"h": [0]}, epsilon=0.0)
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-6)
    assert ks.count_flops(model) == 4 * 4 + 4 * 2
