"""GrowingModel as a Keras model: training, saving, optimizer state, and bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_split as ks
from tests import zoo

L = keras.layers


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def _assert_unchanged(model, weights, config):
    after = _weights(model)
    assert len(after) == len(weights)
    for a, b in zip(after, weights):
        np.testing.assert_array_equal(a, b)
    assert model.network.get_config() == config


def test_fit_after_split_keeps_optimizer_config_and_slots():
    model = ks.GrowingModel(zoo.cnn_bn_swish())
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9), loss="mse")
    x, y = zoo.data_for(model.network, n=32)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    old_opt = model.optimizer
    old_momentum = {v.name: np.array(v) for v in old_opt.variables}
    eig = model.splitting_eigenpairs((x, y), method="exact")
    model.split({"c1": [1], "c2": [0, 4]}, eigenpairs=eig, epsilon=1e-2)
    opt = model.optimizer
    assert type(opt) is keras.optimizers.SGD and opt is not old_opt
    assert float(opt.learning_rate) == pytest.approx(0.05)
    assert opt.momentum == 0.9
    assert int(opt.iterations) == 4
    # Unchanged weights keep their momentum; widened ones copy it per child.
    new_momentum = {v.name: np.array(v) for v in opt.variables}
    np.testing.assert_array_equal(new_momentum["c3_bias_momentum"], old_momentum["c3_bias_momentum"])
    np.testing.assert_array_equal(new_momentum["c1_kernel_momentum"],
                                  old_momentum["c1_kernel_momentum"][..., [0, 1, 1, 2, 3]])
    np.testing.assert_array_equal(new_momentum["bn1_gamma_momentum"],
                                  old_momentum["bn1_gamma_momentum"][[0, 1, 1, 2, 3]])
    assert new_momentum["c2_kernel_momentum"].shape == (3, 3, 5, 7)
    # c2's input channel 1 (c1's split unit) is duplicated and halved, weights and momentum.
    old_c2 = old_momentum["c2_kernel_momentum"][..., [0, 0, 1, 2, 3, 4, 4]]
    np.testing.assert_allclose(new_momentum["c2_kernel_momentum"][:, :, [0, 3, 4]],
                               old_c2[:, :, [0, 2, 3]])
    np.testing.assert_allclose(new_momentum["c2_kernel_momentum"][:, :, 1],
                               old_c2[:, :, 1] / 2)
    np.testing.assert_allclose(new_momentum["c2_kernel_momentum"][:, :, 2],
                               old_c2[:, :, 1] / 2)
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert int(model.optimizer.iterations) == 8


def _sequential_and_nested():
    """The same three-layer net as a Sequential model and nested in a functional one:
    their layers' weight paths carry the inner model's name, a widened clone's do not."""
    def layers():
        return [L.Conv2D(4, 3, padding="same", name="c1"), L.BatchNormalization(name="bn1"),
                L.Activation("swish", name="a1"), L.GlobalAveragePooling2D(name="gap"),
                L.Dense(3, name="head")]
    sequential = keras.Sequential([keras.Input((6, 6, 2)), *layers()], name="seq")
    inner = keras.Sequential([keras.Input((6, 6, 2)), *layers()], name="inner")
    x = keras.Input((6, 6, 2))
    return {"sequential": sequential, "nested": keras.Model(x, inner(x), name="outer")}


@pytest.mark.parametrize("kind", ["sequential", "nested"])
def test_split_of_sequential_or_nested_model_keeps_adam_state(kind, caplog):
    model = ks.GrowingModel(_sequential_and_nested()[kind])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    x = np.random.default_rng(0).normal(size=(16, 6, 6, 2)).astype("float32")
    y = np.random.default_rng(1).normal(size=(16, 3)).astype("float32")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    # The old slots are named after the inner model's paths: "seq_c1_kernel_velocity".
    old = {v.name.removeprefix("seq_").removeprefix("inner_"): np.array(v)
           for v in model.optimizer.variables}
    assert "c1_kernel_velocity" in old and float(np.abs(old["c1_kernel_velocity"]).max()) > 0
    with caplog.at_level("WARNING", logger="keras_split.surgery.optimizer_state"):
        model.split({"c1": [2]}, epsilon=0.0)
    assert "start at zero" not in caplog.text
    new = {v.name: np.array(v) for v in model.optimizer.variables}
    assert int(model.optimizer.iterations) == 4
    for name in ("head_bias_momentum", "head_bias_velocity"):
        np.testing.assert_array_equal(new[name], old[name])
    # The split unit's children both start with its second moments; the first moments of
    # the consumer's duplicated input rows are halved like the rows.
    np.testing.assert_array_equal(new["c1_kernel_velocity"],
                                  old["c1_kernel_velocity"][..., [0, 1, 2, 2, 3]])
    np.testing.assert_array_equal(new["bn1_beta_velocity"], old["bn1_beta_velocity"][[0, 1, 2, 2, 3]])
    np.testing.assert_allclose(new["head_kernel_momentum"][[2, 3]],
                               np.stack([old["head_kernel_momentum"][2] / 2] * 2), rtol=1e-6)
    np.testing.assert_array_equal(new["head_kernel_velocity"][[0, 1, 4]],
                                  old["head_kernel_velocity"][[0, 1, 3]])


def test_keras_round_trip_after_split(tmp_path):
    model = ks.GrowingModel(zoo.residual())
    model.compile(optimizer="adam", loss="mse")
    x, y = zoo.data_for(model.network, n=16)
    model.fit(x, y, epochs=1, verbose=0)
    model.split({"stem": [0, 3], "head": [1]}, epsilon=0.0)
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "grown.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ks.GrowingModel)
    assert loaded.network.get_layer("stem").kernel.shape[-1] == 6
    assert loaded.network.get_layer("res_conv").kernel.shape[-1] == 6
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert loaded.splittable_layers == model.splittable_layers
    loaded.fit(x, y, epochs=1, verbose=0)
    # In a fresh process, `import keras` then `import keras_split` is all keras.saving needs.
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    probe = ("import keras, keras_split, sys; m = keras.saving.load_model(sys.argv[1]); "
             "print(type(m).__name__, m.network.get_layer('stem').kernel.shape[-1])")
    out = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True,
                         text=True, timeout=300, cwd=root,
                         env=dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.stdout.split() == ["GrowingModel", "6"], out.stderr[-2000:]


def test_summary_and_evaluate_behave_like_keras():
    model = ks.GrowingModel(zoo.mlp())
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    x, y = zoo.data_for(model.network, n=8)
    plain = zoo.mlp()
    plain.set_weights(model.get_weights())
    plain.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    np.testing.assert_allclose(model.evaluate(x, y, verbose=0), plain.evaluate(x, y, verbose=0), rtol=1e-6)
    lines = []
    model.summary(print_fn=lambda s, **k: lines.append(s))
    assert any("mlp" in line for line in lines)
    assert ks.count_flops(model) == 6 * 5 + 5 * 4 + 4 * 3


def test_count_flops_conv_and_depthwise():
    model = zoo.separable_block()
    expected = (
        8 * 8 * 3 * 4  # expand 1x1
        + 8 * 8 * 9 * 4  # dw
        + 8 * 8 * 4 * 5  # pw
        + 4 * 4 * 9 * 5 * 2  # dw2, stride 2, multiplier 2
        + 4 * 4 * 10 * 3  # pw2
        + 3 * 2  # out
    )
    assert ks.count_flops(model) == expected


# ---------------------------------------------------------------------------- bad input
class Custom(L.Layer):
    def call(self, x):
        return x * 2


@pytest.mark.parametrize(
    "build, pattern",
    [
        (lambda: keras.Sequential([keras.Input((4, 4, 4, 2)), L.Conv3D(3, 2, name="c3d"),
                                   L.Flatten(), L.Dense(2)]),
         "'c3d' of type Conv3D"),
        (lambda: keras.Sequential([keras.Input((3,)), L.Dense(4), Custom(name="mine"), L.Dense(2)]),
         "'mine' of type Custom"),
    ],
)
def test_unsupported_layers_are_named(build, pattern):
    with pytest.raises(ValueError, match=pattern):
        ks.GrowingModel(build())


def test_shared_layer_is_refused():
    x = keras.Input((4,))
    shared = L.Dense(4, activation="tanh", name="shared")
    out = L.Dense(1)(L.Add()([shared(x), shared(shared(x))]))
    with pytest.raises(ValueError, match="'shared'.*shared"):
        ks.GrowingModel(keras.Model(x, out))


def test_nested_models_are_flattened(caplog):
    inner = keras.Sequential([keras.Input((3,)), L.Dense(4, activation="tanh", name="hidden")],
                             name="inner")
    x = keras.Input((3,))
    h = inner(x)
    y = keras.Input((4,))
    block = keras.Model(y, L.Dense(4, activation="tanh", name="deep")(y), name="block")
    net = keras.Model(x, L.Dense(1, name="out")(block(h)), name="outer")
    data = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    with caplog.at_level("INFO", logger="keras_split.graph.functional_model"):
        model = ks.GrowingModel(net)
    assert "Flattened the nested models ['inner', 'block'] of 'outer'" in caplog.text
    assert model.splittable_layers == ["hidden", "deep"]
    assert model.get_layer("hidden") is inner.get_layer("hidden")     # the same layers
    before = net.predict(data, verbose=0)
    np.testing.assert_array_equal(model.predict(data, verbose=0), before)
    model.split({"hidden": [0], "deep": [3]}, epsilon=0.0)
    np.testing.assert_allclose(model.predict(data, verbose=0), before, atol=1e-6)


def test_subclassed_model_is_refused():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="Sub"):
        ks.GrowingModel(Sub())


@pytest.mark.parametrize(
    "plan, pattern",
    [
        ({"nope": [0]}, "Unknown layer name 'nope'"),
        ({"bn1": [0]}, "'bn1' \\(BatchNormalization\\) is not a splittable layer"),
        ({"out": [0]}, "Unit 0 of layer 'out' \\(Dense\\) cannot be split: .* model output"),
        ({"c1": [4]}, "Unit index 4 is out of range for layer 'c1' \\(Conv2D\\) with 4 units"),
        ({"c2": [-1]}, "Unit index -1 is out of range for layer 'c2'"),
        ({"c2": ["a"]}, "Unit index 'a' of layer 'c2'"),
        ({"c2": [0, 7]}, "out of range"),
        ({"c2": [1, 1]}, "Unit 1 of layer .c2. is named more than once"),
        (["c2"], "must be a dict"),
    ],
)
def test_bad_split_plans_leave_model_unchanged(plan, pattern):
    model = ks.GrowingModel(zoo.cnn_bn_swish())
    weights, config = _weights(model), model.network.get_config()
    with pytest.raises(ValueError, match=pattern):
        model.split(plan, epsilon=0.0)
    _assert_unchanged(model, weights, config)


def test_missing_or_stale_eigenpairs_leave_model_unchanged():
    model = ks.GrowingModel(zoo.mlp())
    weights, config = _weights(model), model.network.get_config()
    with pytest.raises(ValueError, match="No eigenpairs for layer 'd1'"):
        model.split({"d1": [0]}, epsilon=0.1)
    stale = {"d1": ks.Eigenpairs(np.zeros(4), np.zeros((4, 6)))}
    with pytest.raises(ValueError, match="'d1' have shape \\(4, 6\\), expected \\(5, 6\\)"):
        model.split({"d1": [0]}, eigenpairs=stale, epsilon=0.1)
    with pytest.raises(ValueError, match="epsilon"):
        model.split({"d1": [0]}, epsilon=float("nan"))
    _assert_unchanged(model, weights, config)


def test_eigen_estimation_input_errors():
    model = ks.GrowingModel(zoo.mlp())
    x, y = zoo.data_for(model.network, n=8)
    with pytest.raises(ValueError, match="compiled"):
        model.splitting_eigenpairs((x, y))
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="method must be one of"):
        model.splitting_eigenpairs((x, y), method="lanczos")
    with pytest.raises(ValueError, match="'bogus' is not a splittable layer"):
        model.splitting_eigenpairs((x, y), layers=["bogus"])
    bad = x.copy()
    bad[0, 0] = np.nan
    for method in ("fast", "exact"):
        with pytest.raises(ValueError, match="Non-finite .* layer 'd"):
            model.splitting_eigenpairs((bad, y), method=method, eigen_epochs=1)
    with pytest.raises(ValueError, match="empty"):
        model.splitting_eigenpairs(tf.data.Dataset.from_tensor_slices((x, y)).batch(4).take(0))
    with pytest.raises(ValueError, match="would need .* GiB"):
        model.splitting_eigenpairs((x, y), method="exact", max_bytes=100)


def test_fast_path_adds_nothing_to_training():
    """The plain layers are the model: same trainable variables, no splitting variables."""
    base = zoo.cnn_bn_swish()
    model = ks.GrowingModel(base)
    assert [v.path for v in model.trainable_variables] == [v.path for v in base.trainable_variables]
    model.compile(optimizer="sgd", loss="mse")
    x, y = zoo.data_for(base, n=8)
    model.splitting_eigenpairs((x, y), eigen_epochs=1)
    assert [v.path for v in model.variables] == [v.path for v in base.variables]


def test_package_namespaces_and_inner_layers():
    import importlib

    # The namespaces hold the defining modules' functions (keras_split.models.mobilenet_v1
    # is also the name of a function there, hence import_module).
    defining = importlib.import_module("keras_split.models.mobilenet_v1")
    assert ks.models.mobilenet_v1_cifar is defining.mobilenet_v1_cifar
    assert ks.data.cifar_dataset is importlib.import_module("keras_split.data.cifar").cifar_dataset
    model = ks.GrowingModel(zoo.mlp())
    assert model.get_layer("d1") is model.network.get_layer("d1")
    assert model.get_layer(index=1).name == "d1"
    with pytest.raises(ValueError, match="nope"):
        model.get_layer("nope")
