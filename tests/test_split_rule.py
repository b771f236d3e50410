"""Split rules (how children are made), the loss guard, twin statistics, found architectures."""

import keras
import numpy as np
import pytest

import keras_split as ks
from keras_split.data import data_utils
from keras_split.growing import growth, growth_settings
from keras_split.surgery import split_rule
from tests import zoo

L = keras.layers


def _compiled(network, lr=0.05):
    model = ks.GrowingModel(network)
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9), loss="mse")
    return model


def _unit_eigenpairs(model, seed=0):
    """Random unit vectors in place of eigenvectors: the rules only need unit directions."""
    rng = np.random.default_rng(seed)
    eig = {}
    for name in model.splittable_layers:
        kernel = model.channel_graph.kernel(name)
        v = rng.normal(size=(kernel.shape[-1], int(np.prod(kernel.shape[:-1]))))
        eig[name] = ks.Eigenpairs(-np.ones(len(v)), v / np.linalg.norm(v, axis=1, keepdims=True))
    return eig


@pytest.mark.parametrize("rule", ["copy", "antisymmetric", "fresh"])
@pytest.mark.parametrize("topology", sorted(zoo.TOPOLOGIES))
def test_every_rule_preserves_the_function_at_epsilon_zero(topology, rule, float64):
    network = zoo.TOPOLOGIES[topology]()
    zoo.randomize_batchnorm(network, np.random.default_rng(1))
    model = _compiled(network)
    x, _ = zoo.data_for(network)
    before = model.predict(x, verbose=0)
    plan = {name: [0] for name in model.splittable_layers}
    model.split(plan, eigenpairs=_unit_eigenpairs(model), epsilon=0.0, split_rule=rule)
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-10)


def test_antisymmetric_children_and_outgoing_shares(float64):
    model = _compiled(zoo.mlp())
    d1, d2 = (keras.ops.convert_to_numpy(model.network.get_layer(n).kernel).copy()
              for n in ("d1", "d2"))
    eig = _unit_eigenpairs(model)
    model.split({"d1": [2]}, eigenpairs=eig, split_rule="antisymmetric", seed=3)
    new1 = keras.ops.convert_to_numpy(model.network.get_layer("d1").kernel)
    new2 = keras.ops.convert_to_numpy(model.network.get_layer("d2").kernel)
    step = 0.1 * np.linalg.norm(d1[:, 2])
    np.testing.assert_allclose(new1[:, 2], d1[:, 2] + step * eig["d1"].vectors[2], atol=1e-12)
    np.testing.assert_allclose(new1[:, 3], d1[:, 2] - step * eig["d1"].vectors[2], atol=1e-12)
    np.testing.assert_array_equal(np.delete(new1, [2, 3], axis=1), np.delete(d1, 2, axis=1))
    # The children's outgoing rows sum to the parent's, and differ by 2 z, z normal with
    # noise (1.0) times the RMS of the consumer's kernel once the split row is halved:
    # the rule's draw from default_rng(seed), reproduced here.
    np.testing.assert_allclose(new2[2] + new2[3], d2[2], atol=1e-12)
    z = (new2[2] - new2[3]) / 2
    halved = np.insert(d2, 3, d2[2] / 2, axis=0)
    halved[2] /= 2
    rms = lambda a: np.sqrt(np.mean(a ** 2))  # noqa: E731
    draw = np.random.default_rng(3).normal(size=4)
    np.testing.assert_allclose(z, draw * rms(halved), rtol=1e-10)
    assert rms(z) / rms(halved) == pytest.approx(rms(draw), rel=1e-10)   # 1.673
    np.testing.assert_array_equal(np.delete(new2, [2, 3], axis=0), np.delete(d2, 2, axis=0))


def test_fresh_keeps_the_parent_and_silences_the_child(float64):
    model = _compiled(zoo.residual())
    old = {n: keras.ops.convert_to_numpy(model.network.get_layer(n).kernel).copy()
           for n in ("stem", "res_conv", "head")}
    model.split({"stem": [1]}, split_rule="fresh", seed=0)   # coupled with res_conv via Add
    new = {n: keras.ops.convert_to_numpy(model.network.get_layer(n).kernel)
           for n in ("stem", "res_conv", "head")}
    assert new["stem"].shape[-1] == new["res_conv"].shape[-1] == 5
    # A BatchNormalization follows stem: the rule's old_scale shrinks every kernel there.
    shrink = split_rule.OLD_SCALE
    np.testing.assert_allclose(new["stem"][..., 1], shrink * old["stem"][..., 1], rtol=1e-6)
    np.testing.assert_allclose(np.delete(new["stem"], 2, axis=-1), shrink * old["stem"],
                               rtol=1e-6)
    child = new["stem"][..., 2]
    assert not np.allclose(child, shrink * old["stem"][..., 1])
    rms = np.sqrt(np.mean(old["stem"] ** 2)) * split_rule.FRESH_SCALE * shrink
    assert 0.7 < np.sqrt(np.mean(child ** 2)) / rms < 1.4
    # The consumer takes the parent's whole row on the first child and 0 on the second.
    np.testing.assert_array_equal(new["head"][..., 1, :], old["head"][..., 1, :])
    np.testing.assert_array_equal(new["head"][..., 2, :], 0.0)


@pytest.mark.parametrize("fresh_init", ["kernel", "initializer"])
def test_fresh_scale_and_init_set_the_childs_weight_scale_and_keep_the_function(fresh_init,
                                                                                float64):
    network = zoo.cnn_bn_swish()
    zoo.randomize_batchnorm(network, np.random.default_rng(1))
    model = _compiled(network)
    # A trained-looking kernel, 3 times larger than its initializer's.
    c2 = model.network.get_layer("c2")
    old = 3.0 * keras.ops.convert_to_numpy(c2.kernel)
    c2.kernel.assign(old)
    x, _ = zoo.data_for(network)
    before = model.predict(x, verbose=0)
    rule = ks.SplitRule(epsilon=0.0, incoming="fresh", outgoing="parent", reset_slots=True,
                        fresh_init=fresh_init, fresh_scale=0.25)
    model.split({"c2": [0, 1, 2, 3]}, split_rule=rule, seed=0)
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-10)
    new = keras.ops.convert_to_numpy(model.network.get_layer("c2").kernel)
    # Each child follows its parent: parents at 0, 2, 4, 6 and the unsplit unit 4 at 8.
    children = new[..., [1, 3, 5, 7]]
    np.testing.assert_array_equal(new[..., [0, 2, 4, 6, 8]], old)
    # glorot_uniform at the widened (3, 3, 4, 9) kernel: variance 2 / (36 + 81).
    reference = np.sqrt(np.mean(old ** 2)) if fresh_init == "kernel" else np.sqrt(2 / 117)
    ratio = np.sqrt(np.mean(children ** 2)) / (0.25 * reference)
    assert 0.8 < ratio < 1.2, ratio
    with pytest.raises(ValueError, match="Received: fresh_scale=0"):
        ks.SplitRule(fresh_scale=0)
    with pytest.raises(ValueError, match="Received: fresh_init='he'"):
        ks.SplitRule(fresh_init="he")


def test_old_scale_shrinks_the_kernels_ahead_of_a_batchnorm_and_keeps_the_function(float64):
    network = zoo.cnn_bn_swish()   # c1 -> bn1, c2 (with a bias) -> bn2; c3 and out: no BN
    zoo.randomize_batchnorm(network, np.random.default_rng(1))
    for name in ("bn1", "bn2"):
        network.get_layer(name).momentum = 1.0   # a training-mode call keeps the statistics
    model = _compiled(network)
    x, _ = zoo.data_for(network)
    before = {mode: keras.ops.convert_to_numpy(model.network(x, training=mode))
              for mode in (False, True)}

    def weights(layer):
        return [keras.ops.convert_to_numpy(w).copy()
                for w in model.network.get_layer(layer).weights]

    old = {n: weights(n) for n in ("c1", "c2", "bn1", "bn2", "c3", "out")}
    eps = model.network.get_layer("bn2").epsilon
    rule = ks.SplitRule(epsilon=0.0, incoming="fresh", outgoing="parent", reset_slots=True,
                        fresh_scale=0.5, old_scale=0.5)
    model.split({"c2": [1]}, split_rule=rule, seed=0)
    # The same function in inference and training mode (batch statistics).
    for mode in (False, True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(model.network(x, training=mode)),
                                   before[mode], atol=1e-10)
    new = {n: weights(n) for n in old}
    np.testing.assert_allclose(new["c1"][0], 0.5 * old["c1"][0], rtol=1e-12)
    kernel, bias = new["c2"]
    np.testing.assert_allclose(kernel[..., [0, 1, 3, 4, 5]], 0.5 * old["c2"][0], rtol=1e-12)
    np.testing.assert_allclose(bias[[0, 1, 3, 4, 5]], 0.5 * old["c2"][1], rtol=1e-12)
    gamma, beta, mean, var = new["bn2"]
    np.testing.assert_allclose(mean[[0, 1, 3, 4, 5]], 0.5 * old["bn2"][2], rtol=1e-12)
    np.testing.assert_allclose(var[[0, 1, 3, 4, 5]], 0.25 * old["bn2"][3], rtol=1e-12)
    np.testing.assert_array_equal(gamma[[0, 1, 3, 4, 5]], old["bn2"][0])
    assert model.network.get_layer("bn2").epsilon == pytest.approx(0.25 * eps, rel=1e-12)
    # c3 (tanh, no BatchNormalization) keeps its scale; its rows of the new child are 0.
    np.testing.assert_array_equal(np.delete(new["c3"][0], 2, axis=2), old["c3"][0])
    np.testing.assert_array_equal(new["out"][0], old["out"][0])
    with pytest.raises(ValueError, match="Received: old_scale=1.5"):
        ks.SplitRule(old_scale=1.5)
    with pytest.raises(ValueError, match="Received: old_scale=0"):
        ks.SplitRule(old_scale=0)


def test_the_default_growth_rule_shrinks_the_kernels_ahead_of_a_batchnorm(float64):
    model = _compiled(zoo.cnn_bn_swish())   # c1 -> bn1, c2 -> bn2; c3: no BN
    x, _ = zoo.data_for(model.network)
    before = keras.ops.convert_to_numpy(model.network(x, training=False))
    old = {n: keras.ops.convert_to_numpy(model.network.get_layer(n).kernel).copy()
           for n in ("c1", "c3")}
    rule = ks.GrowthSettings().rule   # what grow() and GrowthCallback use by default
    model.split({"c2": [1]}, split_rule=rule, seed=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.network(x, training=False)),
                               before, atol=1e-10)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.network.get_layer("c1").kernel),
                               0.7 * old["c1"], rtol=1e-12)
    c3 = keras.ops.convert_to_numpy(model.network.get_layer("c3").kernel)
    np.testing.assert_array_equal(np.delete(c3, 2, axis=2), old["c3"])


def test_reset_slots_zero_the_second_childs_momentum():
    model = _compiled(zoo.mlp())
    x, y = zoo.data_for(model.network)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)

    def momentum(layer):
        path = model.network.get_layer(layer).kernel.path
        slot = next(v for v in model.optimizer.variables
                    if v.name.startswith(path.replace("/", "_")) and v.name.endswith("momentum"))
        return keras.ops.convert_to_numpy(slot).copy()

    before1, before2 = momentum("d1"), momentum("d2")
    assert np.abs(before1[:, 2]).max() > 0
    model.split({"d1": [2]}, eigenpairs=_unit_eigenpairs(model), split_rule="antisymmetric")
    after1, after2 = momentum("d1"), momentum("d2")
    np.testing.assert_allclose(after1[:, 2], before1[:, 2], rtol=1e-6)
    np.testing.assert_array_equal(after1[:, 3], 0.0)
    np.testing.assert_allclose(after2[2], before2[2] / 2, rtol=1e-6)   # first moment halved
    np.testing.assert_array_equal(after2[3], 0.0)


def test_split_rule_arguments_are_validated():
    with pytest.raises(ValueError, match="Received: epsilon=-1"):
        ks.SplitRule(epsilon=-1)
    with pytest.raises(ValueError, match="Received: outgoing='thirds'"):
        ks.SplitRule(outgoing="thirds")
    with pytest.raises(ValueError, match="Received: split_rule='nope'"):
        ks.SplitRule.get("nope")
    assert ks.SplitRule.get({"epsilon": 0.5}).epsilon == 0.5
    assert ks.SplitRule.get("antisymmetric").scaled(0.25).epsilon == pytest.approx(0.025)


def _trained_cnn():
    keras.utils.set_random_seed(7)
    model = zoo.compiled_cnn()
    x, y = zoo.cnn_data()
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    return model, x, y


def test_guard_shrinks_a_step_that_raises_the_held_out_loss():
    model, x, y = _trained_cnn()
    # Without the guard, this step raises the loss a lot (large eigenvalues, absolute step).
    probe = ks.GrowingModel.from_config(model.get_config())
    probe.set_weights(model.get_weights())
    probe.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    held = (x[-32:], y[-32:])
    eig = probe.splitting_eigenpairs((x[:64], y[:64]), method="exact")
    loss0 = probe.evaluate(*held, verbose=0)
    probe.split({"narrow": list(range(6))}, eigenpairs=eig, epsilon=3.0, split_rule="copy")
    assert probe.evaluate(*held, verbose=0) > loss0 + 0.05

    stage = model.grow((x[:64], y[:64]), growth_ratio=1.0, method="exact", split_rule="copy",
                       epsilon=3.0, eval_data=held, batch_size=16,
                       max_units={"wide": 0, "fc": 0})
    assert stage.layers["narrow"]["units_before"] == 6
    tries = stage.guard["tries"]
    assert stage.guard["action"] in ("shrunk", "rolled_back")
    assert tries[0]["epsilon"] == 3.0 and tries[0]["loss"] > stage.loss_before
    assert stage.loss_after <= stage.loss_before * (1 + 1e-5)
    assert stage.epsilon == tries[-1]["epsilon"] < 3.0
    # The recorded loss is the model's real held-out loss after the stage.
    assert growth.mean_loss(model, data_utils.as_dataset(held, 16)) == pytest.approx(
        stage.loss_after, rel=1e-5)


def test_guard_rolls_back_and_leaves_the_model_unchanged():
    model, x, y = _trained_cnn()
    weights, config = model.get_weights(), model.network.get_config()
    eig = model.splitting_eigenpairs((x[:64], y[:64]), method="exact")
    held = data_utils.as_dataset((x[-32:], y[-32:]), 16)
    groups = sorted(model.channel_graph.groups)[:4]
    rule = ks.SplitRule(epsilon=3.0)
    outcome = growth.guarded_split(model, groups, eig, rule, held, shrink=(1.0,))
    before, tries = outcome.loss_before, outcome.record.tries
    assert outcome.record.action == "rolled_back" and not outcome.committed
    assert outcome.loss_after == before and tries[0].loss > before and tries[0].epsilon == 3.0
    assert model.network.get_config() == config
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)


def test_twin_statistics_counts_twins_and_distinct_filters():
    x = keras.Input((3,))
    network = keras.Model(x, L.Dense(4, use_bias=False, name="d")(x))
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    c = np.array([0.0, 1.0, 0.4])            # cos(b, c) = 0.928: distinct group, no twin
    network.get_layer("d").kernel.assign(np.stack([a, 2 * a, b, c], axis=1))
    stats = ks.twin_statistics(network)
    assert stats["layers"]["d"] == {"units": 4, "twins": 2, "distinct": 2,
                                    "median_best_cosine": pytest.approx((1 + 0.9284767) / 2)}
    assert stats["twin_fraction"] == 0.5
    assert ks.twin_statistics(network, distinct_cosine=0.95)["distinct"] == 3


def test_grow_records_children_and_twins():
    model, x, y = _trained_cnn()
    # One budget for the network: this selection keeps its full step (the guard shrinks
    # the step of the per-resolution one to 0.025, whose children are closer).
    stage = model.grow((x, y), growth_ratio=0.5, method="exact", batch_size=16,
                       split_rule="antisymmetric", budget_groups=None)
    assert stage.guard["action"] == "split" and stage.epsilon == 0.1
    assert stage.split_rule["outgoing"] == "antisymmetric"
    assert stage.children and stage.twins["units"] == ks.twin_statistics(model)["units"]
    for name, pairs in stage.children.items():
        assert len(pairs) == len(stage.layers[name]["split_indices"])
        cos = ks.twins.pair_cosines(model, {name: pairs})[name]
        # relative step 0.1: children at cosine (1 - 0.01) / (1 + 0.01) ~ 0.98 or below
        assert max(cos) < 0.99


def test_found_architecture_is_fresh_with_the_grown_widths():
    model, x, y = _trained_cnn()
    stage = model.grow((x, y), growth_ratio=0.5, method="exact", batch_size=16)
    # grow's default rule is "fresh": a kept parent and a silent child at half the kernel's
    # RMS, the kernels ahead of a BatchNormalization shrunk by 0.7.
    assert growth_settings.DEFAULT_SPLIT_RULE == "fresh"
    assert stage.split_rule == ks.SplitRule(epsilon=0.0, incoming="fresh", outgoing="parent",
                                            reset_slots=True, fresh_scale=0.5,
                                            old_scale=0.7).get_config()
    fresh = model.found_architecture(seed=0)
    assert not isinstance(fresh, ks.GrowingModel)
    assert fresh.get_config()["layers"] == model.network.get_config()["layers"]
    assert ks.count_flops(fresh) == ks.count_flops(model)
    trained = dict(zip([w.path for w in model.network.weights], model.network.get_weights()))
    for w in fresh.weights:
        if "kernel" in w.path:
            assert not np.allclose(keras.ops.convert_to_numpy(w), trained[w.path])
    again = model.found_architecture(seed=0)
    for a, b in zip(fresh.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_rolled_back_stage_records_no_step_and_no_split(monkeypatch):
    model, x, y = _trained_cnn()
    weights = model.get_weights()
    original = growth.guarded_split
    monkeypatch.setattr(growth, "guarded_split",
                        lambda *a, **k: original(*a, **dict(k, shrink=(1.0,))))
    stage = model.grow((x[:64], y[:64]), growth_ratio=1.0, method="exact", split_rule="copy",
                       epsilon=3.0, eval_data=(x[-32:], y[-32:]), batch_size=16,
                       max_units={"wide": 0, "fc": 0})
    assert stage.guard["action"] == "rolled_back"
    assert stage.guard["tries"][0]["epsilon"] == 3.0
    assert stage.epsilon == 0.0 and stage.predicted_loss_change == 0.0
    assert stage.loss_after == stage.loss_before and stage.macs_after == stage.macs_before
    assert all(layer["units_after"] == layer["units_before"] for layer in stage.layers.values())
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
