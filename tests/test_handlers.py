"""The handler registry and the README's surgery claims: custom layers, sinks, refusals,
and the optimizer's first moments after a split."""

import keras
import numpy as np
import pytest
from keras import layers as L

import keras_split as ks
from keras_split.graph import handlers


class Gain(keras.layers.Layer):
    """A custom element-wise layer: ``x * 2``, channel by channel."""

    def call(self, x):
        return x * 2.0


def _with(middle, input_shape=(6,)):
    x = keras.Input(input_shape)
    h = L.Dense(5, activation="tanh", name="d1")(x)
    return keras.Model(x, L.Dense(3, name="out")(middle(h)))


def test_register_handler_makes_a_custom_layer_splittable():
    with pytest.raises(ValueError, match="Gain"):
        ks.GrowingModel(_with(Gain(name="gain")))
    ks.register_handler(Gain, handlers.CHANNELWISE)
    try:
        model = ks.GrowingModel(_with(Gain(name="gain")))
        assert model.splittable_layers == ["d1"]
        x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
        before = model.predict(x, verbose=0)
        assert model.split({"d1": [1, 4]}, epsilon=0.0) == {"d1": (5, 7)}
        np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-6)
    finally:
        assert ks.unregister_handler(Gain) is handlers.CHANNELWISE
    with pytest.raises(ValueError, match="No handler is registered"):
        ks.unregister_handler(Gain)
    with pytest.raises(ValueError, match="must be a keras Layer subclass"):
        ks.register_handler(int, handlers.CHANNELWISE)
    with pytest.raises(ValueError, match="must be a LayerHandler"):
        ks.register_handler(Gain, "channelwise")


@pytest.mark.parametrize("sink", [lambda: L.LayerNormalization(name="sink"),
                                  lambda: L.Softmax(name="sink"),
                                  lambda: L.Reshape((4, 1), name="sink")])
def test_channels_that_reach_a_channel_mixing_layer_are_not_split(sink):
    x = keras.Input((6,))
    h = L.Dense(5, activation="tanh", name="d1")(x)
    h = L.Dense(4, activation="tanh", name="d2")(h)
    s = sink()(h)
    model = ks.GrowingModel(keras.Model(x, L.Dense(3, name="out")(L.Flatten()(s))))
    assert model.splittable_layers == ["d1"]      # d2 feeds the sink, out is the output
    with pytest.raises(ValueError, match="d2"):
        model.split({"d2": [0]})


def _text_gru():
    x = keras.Input((12,), dtype="int32")
    h = L.Embedding(30, 6, name="embed")(x)
    h = L.Conv1D(5, 3, activation="relu", name="conv")(h)
    h = L.Conv1D(4, 3, activation="relu", name="to_rnn")(h)
    h = L.Bidirectional(L.GRU(4), name="rnn")(h)
    h = L.Dense(6, activation="relu", name="dense")(h)
    data = np.random.default_rng(0).integers(0, 30, size=(16, 12)).astype("int32")
    return keras.Model(x, L.Dense(3, name="out")(h)), data


def _augmented_decoder():
    x = keras.Input((8, 8, 3))
    h = L.RandomFlip("horizontal", name="flip")(x)
    h = L.RandomRotation(0.1, name="rotate")(h)
    h = L.Conv2D(6, 3, padding="same", activation="relu", name="conv")(h)
    h = L.Conv2D(4, 3, padding="same", name="to_gn")(h)
    h = L.GroupNormalization(2, name="gn")(h)
    h = L.Conv2D(5, 3, strides=2, padding="same", activation="relu", name="to_up")(h)
    h = L.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu", name="up")(h)
    h = L.Conv2D(6, 3, padding="same", activation="relu", name="head_conv")(h)
    h = L.GlobalAveragePooling2D()(h)
    data = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    return keras.Model(x, L.Dense(3, name="out")(h)), data


@pytest.mark.parametrize("build, splittable, fixed", [
    (_text_gru, ["conv", "dense"], "to_rnn"),
    (_augmented_decoder, ["conv", "head_conv"], "to_gn"),
])
def test_layers_that_are_not_widened_fix_their_channels_and_the_rest_grows(build, splittable,
                                                                           fixed):
    """Embedding, recurrent layers, GroupNormalization, transposed convolutions and
    augmentation layers are built in as fixed layers: what feeds them is never split,
    the other producers split and keep the function."""
    net, x = build()
    model = ks.GrowingModel(net)
    assert model.splittable_layers == splittable
    with pytest.raises(ValueError, match=fixed):
        model.split({fixed: [0]})
    before = model.predict(x, verbose=0)
    model.split({name: [0, 1] for name in splittable}, epsilon=0.0)
    for name in splittable:
        assert model.network.get_layer(name).kernel.shape[-1] == net.get_layer(name).kernel.shape[-1] + 2
    np.testing.assert_allclose(model.predict(x, verbose=0), before, rtol=1e-5, atol=1e-6)


def test_grouped_convolutions_tie_units_across_groups_and_channels_first_is_refused():
    x = keras.Input((8, 8, 4))
    h = L.Conv2D(4, 1, activation="tanh", name="before")(x)
    h = L.Conv2D(4, 3, groups=2, activation="tanh", name="grouped")(h)
    h = L.Conv2D(4, 1, activation="tanh", name="after")(h)
    model = ks.GrowingModel(keras.Model(x, L.Dense(2, name="out")(L.Flatten()(h))))
    graph = model.channel_graph
    assert model.splittable_layers == ["before", "grouped", "after"]
    # Unit u of each group, and input channel c of each group, split together.
    assert graph.group_members(graph.group_of("grouped", 1)) == [("grouped", 1), ("grouped", 3)]
    assert graph.group_members(graph.group_of("before", 0)) == [("before", 0), ("before", 2)]
    assert model.split({"grouped": [1]}, epsilon=0.0) == {"grouped": (4, 6)}
    assert model.get_layer("grouped").kernel.shape == (3, 3, 2, 6)
    # A grouped Conv1D is not widened: neither its input nor its output channels split.
    x = keras.Input((8, 4))
    h = L.Conv1D(4, 1, activation="tanh", name="before")(x)
    h = L.Conv1D(4, 3, groups=2, activation="tanh", name="grouped")(h)
    h = L.Conv1D(4, 1, activation="tanh", name="after")(h)
    model = ks.GrowingModel(keras.Model(x, L.Dense(2, name="out")(L.Flatten()(h))))
    assert model.splittable_layers == ["after"]
    x = keras.Input((4, 8, 8))
    h = L.Conv2D(4, 3, data_format="channels_first", name="cf")(x)
    with pytest.raises(ValueError, match="'cf' \\(Conv2D\\) uses data_format='channels_first'"):
        ks.GrowingModel(keras.Model(x, L.Dense(2)(L.Flatten()(h))))


def test_adam_first_moments_are_halved_with_the_rows_and_second_moments_copied():
    keras.utils.set_random_seed(0)
    x = keras.Input((6,))
    net = keras.Model(x, L.Dense(3, name="out")(L.Dense(5, activation="tanh", name="d1")(x)))
    model = ks.GrowingModel(net)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    data = np.random.default_rng(1).normal(size=(32, 6)).astype("float32")
    model.fit(data, data[:, :3], epochs=2, batch_size=8, verbose=0)

    def slots(name):
        by_name = {v.name: v.numpy() for v in model.optimizer.variables}
        path = model.network.get_layer(name).kernel.path.replace("/", "_")
        return by_name[f"{path}_momentum"], by_name[f"{path}_velocity"]

    m_out, v_out = slots("out")
    m_d1, v_d1 = slots("d1")
    iterations = int(model.optimizer.iterations)
    model.split({"d1": [2]}, epsilon=0.0, split_rule="copy")
    new_m_out, new_v_out = slots("out")
    new_m_d1, new_v_d1 = slots("d1")
    assert int(model.optimizer.iterations) == iterations
    # The child comes right after its parent: new units [0, 1, 2, 2', 3, 4].
    # Consumer rows: unit 2 and its child share the parent's first moment ...
    np.testing.assert_allclose(new_m_out[[2, 3]], np.stack([m_out[2] / 2] * 2), rtol=1e-6)
    np.testing.assert_allclose(new_m_out[[0, 1, 4, 5]], m_out[[0, 1, 3, 4]], rtol=1e-6)
    # ... while second moments are copied as they are.
    np.testing.assert_allclose(new_v_out[[2, 3]], np.stack([v_out[2]] * 2), rtol=1e-6)
    np.testing.assert_allclose(new_v_out[[0, 1, 4, 5]], v_out[[0, 1, 3, 4]], rtol=1e-6)
    # The split unit's own incoming slots are copied for both children ("copy" keeps them).
    np.testing.assert_allclose(new_m_d1[:, [2, 3]], np.stack([m_d1[:, 2]] * 2, axis=1))
    np.testing.assert_allclose(new_v_d1[:, [2, 3]], np.stack([v_d1[:, 2]] * 2, axis=1))


def test_squeeze_and_excitation_gates_split_with_their_channels():
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 6, 3))
    h = L.Conv2D(5, 3, padding="same", activation="swish", name="main")(x)
    s = L.GlobalAveragePooling2D(name="gap")(h)
    s = L.Reshape((1, 1, 5), name="se_reshape")(s)
    s = L.Conv2D(2, 1, activation="swish", name="se_reduce")(s)
    s = L.Conv2D(5, 1, activation="sigmoid", name="se_expand")(s)
    h = L.Multiply(name="excite")([h, s])
    h = L.Conv2D(4, 1, name="project")(h)
    model = ks.GrowingModel(keras.Model(x, L.Dense(2, name="out")(L.Flatten()(h))))
    # Channel j of the main path and unit j of the gate are one coupled group.
    assert sorted(sorted(g) for g in model.coupled_groups()) == [
        [("main", j), ("se_expand", j)] for j in range(5)]
    assert model.splittable_layers == ["main", "se_reduce", "se_expand", "project"]
    data = np.random.default_rng(0).normal(size=(4, 6, 6, 3)).astype("float32")
    before = model.predict(data, verbose=0)
    for rule in ("copy", "fresh"):
        probe = ks.GrowingModel.from_config(model.get_config())
        probe.set_weights(model.get_weights())
        assert probe.split({"main": [1, 4]}, epsilon=0.0, split_rule=rule) == {
            "main": (5, 7), "se_expand": (5, 7)}
        assert probe.network.get_layer("se_reshape").target_shape == (1, 1, 7)
        np.testing.assert_allclose(probe.predict(data, verbose=0), before, atol=1e-6)


@keras.saving.register_keras_serializable(package="keras_split_tests")
class ScaledDense(keras.layers.Layer):
    """A user's dense layer with its own weight names (docs/method.md's example)."""

    def __init__(self, units, use_bias=True, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units, self.use_bias = units, use_bias
        self.activation = keras.activations.get(activation)
        self.w_initializer = keras.initializers.GlorotUniform()

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), name="w",
                                 initializer=self.w_initializer)
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.units,), name="bias", initializer="zeros")

    def call(self, x):
        z = keras.ops.matmul(x, self.w)
        return self.activation(z + self.bias if self.use_bias else z)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation)}


def test_a_custom_producer_is_one_handler_subclass(float64):
    from keras_split.graph.producers import ProducerHandler

    class ScaledDenseHandler(ProducerHandler):
        kernel_name = "w"
        initializer_key = "w_initializer"
        units_key = "units"

    x = keras.Input((5,))
    h = ScaledDense(4, activation="tanh", name="mine")(x)
    net = keras.Model(x, keras.layers.Dense(2, name="out")(h))
    ks.register_handler(ScaledDense, ScaledDenseHandler())
    try:
        model = ks.GrowingModel(net)
        model.compile(optimizer="sgd", loss="mse")
        assert model.splittable_layers == ["mine"] and ks.count_flops(model) == 5 * 4 + 4 * 2
        data = np.random.default_rng(0).normal(size=(24, 5)), np.zeros((24, 2))
        exact = model.splitting_eigenpairs(data, method="exact")
        fast = model.splitting_eigenpairs(data, eigen_epochs=30, eigen_tol=None)
        np.testing.assert_allclose(fast["mine"].values, exact["mine"].values, rtol=1e-6,
                                   atol=1e-9)
        before = model.predict(data[0], verbose=0)
        assert model.split({"mine": [1, 3]}, epsilon=0.0, split_rule="fresh") == {
            "mine": (4, 6)}
        np.testing.assert_allclose(model.predict(data[0], verbose=0), before, atol=1e-12)
        assert model.get_layer("mine").w.shape == (5, 6)
    finally:
        ks.unregister_handler(ScaledDense)
