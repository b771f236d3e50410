"""Splitting math: exact matrices vs autodiff Hessians, fast vs exact, steepest descent."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_split as ks
from keras_split.estimate.exact import splitting_matrices
from keras_split.graph import activations
from tests import zoo

# point layer (where the neuron's activation output lives) of every producer
POINTS = {
    "mlp": {"d1": "d1", "d2": "a2"},
    "cnn_bn_swish": {"c1": "a1", "c2": "a2", "c3": "c3"},
    "residual": {"stem": "act_stem", "res_conv": "act_res", "head": "head"},
    "flatten_dense": {"c1": "c1", "d1": "d1"},
    "separable": {"expand": "act_e", "pw": "act_pw", "pw2": "pw2"},
    "conv1d": {"c1": "a1", "sep1": "a2", "c3": "c3"},
    "separable_conv": {"stem": "a_stem", "sep1": "a1", "sep2": "sep2"},
    "grouped_conv": {"stem": "a_stem", "grouped": "a_g", "grouped_pw": "grouped_pw"},
}


def reference_matrices(model, x, y, layer_name, point_name):
    """S_i from the autodiff Hessian of sum_n dL/da_n * a_n w.r.t. the layer's kernel.

    Shares no code with keras_split: plain Keras sub-models and nested tapes.
    """
    net = model.network
    layer = net.get_layer(layer_name)
    kernel = layer.pointwise_kernel if hasattr(layer, "pointwise_kernel") else layer.kernel
    sub = keras.Model(net.inputs, [net.get_layer(point_name).output, net.outputs[0]])
    with tf.GradientTape() as tape:
        a, out = sub(x, training=False)
        loss = tf.reduce_mean(keras.losses.mean_squared_error(y, out))
    dlda = tf.stop_gradient(tape.gradient(loss, a))
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            a, _ = sub(x, training=False)
            f = tf.reduce_sum(dlda * a)
        g = inner.gradient(f, kernel)
    # pfor has no second derivative of a grouped convolution's filter gradient: a loop.
    h = outer.jacobian(g, kernel, experimental_use_pfor=getattr(layer, "groups", 1) == 1)
    h = h.numpy()
    units = kernel.shape[-1]
    d = int(np.prod(kernel.shape[:-1]))
    h = h.reshape(d, units, d, units)
    return np.stack([h[:, i, :, i] for i in range(units)])


@pytest.mark.parametrize("topology", ["mlp", "cnn_bn_swish", "residual", "flatten_dense",
                                      "conv1d", "separable_conv", "grouped_conv"])
def test_exact_matrices_match_autodiff_hessian(float64, topology):
    model = zoo.compiled_topology(topology)
    x, y = zoo.data_for(model.network, n=12)
    mats = splitting_matrices(model.channel_graph, model.splitting_loss(), (x, y), batch_size=12)
    assert set(mats) == set(POINTS[topology])
    for layer, point in POINTS[topology].items():
        ref = reference_matrices(model, x, y, layer, point)
        scale = np.abs(ref).max()
        assert scale > 1e-8, layer
        np.testing.assert_allclose(mats[layer], ref, atol=1e-6 * scale, rtol=1e-6)


def test_exact_matrices_average_over_batches(float64):
    model = zoo.compiled_topology("mlp")
    x, y = zoo.data_for(model.network, n=24)
    whole = splitting_matrices(model.channel_graph, model.splitting_loss(), (x, y), batch_size=24)
    parts = splitting_matrices(model.channel_graph, model.splitting_loss(), (x, y), batch_size=8)
    for name in whole:
        np.testing.assert_allclose(parts[name], whole[name], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("topology", ["mlp", "cnn_bn_swish", "residual", "separable", "flatten_dense"])
def test_fast_matches_exact(topology):
    fast, exact = zoo.estimate_and_exact(topology, 32, 32, method="fast", eigen_epochs=400,
                                     learning_rate=0.01)
    zoo.assert_matches_exact(fast, exact, rtol=0.02, min_cos=0.99, norm_rtol=1e-5)


def _loss(model, x, y):
    return float(model.evaluate(x, y, batch_size=len(x), verbose=0))


# The producers whose output reaches a channel-mixing layer through per-channel linear
# (or piecewise-linear) layers only: the identity needs it. conv1d's c1 feeds a
# DepthwiseConv1D and a second activation first, whose curvature S leaves out (as a
# MobileNet block's expansion layer).
IDENTITY_LAYERS = {"conv1d": ("sep1", "c3"), "grouped_conv": ("stem", "grouped_pw")}


@pytest.mark.parametrize("topology", ["mlp", "cnn_bn_swish", "residual", "conv1d",
                                      "separable_conv", "grouped_conv"])
def test_steepest_descent_identity(float64, topology):
    """Loss change of splitting negative-lambda neurons = eps^2 / 2 * sum(lambda) within 1 %."""
    model = zoo.compiled_topology(topology)
    x, y = zoo.data_for(model.network, n=40)
    eig = model.splitting_eigenpairs((x, y), method="exact", batch_size=40)
    plan, total = {}, 0.0
    groups = {}
    for name, e in eig.items():
        if name not in IDENTITY_LAYERS.get(topology, (name,)):
            continue
        for k in np.argsort(e.values)[:2]:
            groups.setdefault(model.channel_graph.group_of(name, int(k)), []).append((name, int(k)))
    for members in groups.values():
        # The group's value is the sum over all its producers.
        all_members = model.channel_graph.group_members(model.channel_graph.group_of(*members[0]))
        value = sum(eig[n].values[u] for n, u in all_members)
        if value < 0:
            name, unit = members[0]
            plan.setdefault(name, []).append(unit)
            total += value
    assert total < 0 and len(plan) >= 1
    eps = 1e-3
    before = _loss(model, x, y)
    model.split(plan, eigenpairs=eig, epsilon=eps)
    after = _loss(model, x, y)
    predicted = eps**2 / 2 * total
    assert abs((after - before) - predicted) <= 0.01 * abs(predicted), (after - before, predicted)


def test_surrogate_gives_relu_nets_a_signal():
    model = zoo.compiled_topology("mlp")  # tanh/swish: surrogate irrelevant
    x, y = zoo.data_for(model.network)
    relu = ks.GrowingModel(zoo.mlp(act="relu"), surrogate=None)
    relu.compile(optimizer="sgd", loss="mse")
    eig = relu.splitting_eigenpairs((x, y), method="exact")
    np.testing.assert_array_equal(eig["d1"].values, 0.0)
    assert np.any(eig["d2"].values != 0)  # swish after d2
    soft = ks.GrowingModel(zoo.mlp(act="relu"), surrogate="softplus")
    soft.set_weights(relu.get_weights())
    soft.compile(optimizer="sgd", loss="mse")
    eig2 = soft.splitting_eigenpairs((x, y), method="exact")
    # Every ReLU unit now has a splitting signal, and some of them a negative eigenvalue.
    assert np.all(eig2["d1"].values != 0) and eig2["d1"].values.min() < 0
    np.testing.assert_allclose(eig2["d2"].values, eig["d2"].values)
    assert model.splittable_layers == ["d1", "d2"]


@pytest.mark.parametrize(
    "name, closed_form",
    [
        ("tanh", lambda z: -2 * np.tanh(z) * (1 - np.tanh(z) ** 2)),
        ("sigmoid", lambda z: (s := 1 / (1 + np.exp(-z))) * (1 - s) * (1 - 2 * s)),
        ("softplus", lambda z: (s := 1 / (1 + np.exp(-z))) * (1 - s)),
        ("swish", lambda z: (s := 1 / (1 + np.exp(-z))) * (1 - s) * (2 + z * (1 - 2 * s))),
        ("gelu", lambda z: np.exp(-z * z / 2) / np.sqrt(2 * np.pi) * (2 - z * z)),
    ],
)
def test_true_second_derivatives(name, closed_form):
    z = np.linspace(-3, 3, 13)
    fn = keras.activations.get(name)
    act = activations.NeuronActivation(fn, activations.activation_name(fn), "softplus")
    assert not act.uses_surrogate
    got = act.second_derivative(tf.constant(z, tf.float64)).numpy()
    np.testing.assert_allclose(got, closed_form(z), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 2e-6)])
def test_closed_forms_match_autodiff(dtype, rtol):
    z = tf.constant(np.linspace(-8, 8, 161), dtype)
    assert set(activations.CLOSED_FORMS) == {keras.activations.get(n) for n in (
        "swish", "sigmoid", "tanh", "softplus")}
    for fn, closed_form in activations.CLOSED_FORMS.items():
        auto = activations.autodiff_second_derivative(fn, z).numpy()
        np.testing.assert_allclose(closed_form(z).numpy(), auto, rtol=rtol, atol=rtol * 1e-2)
    # Another function of the same name is differentiated, not looked up by name.
    act = activations.NeuronActivation(lambda t: t * tf.sigmoid(2.0 * t), "silu", None)
    want = activations.autodiff_second_derivative(lambda t: t * tf.sigmoid(2.0 * t), z)
    np.testing.assert_array_equal(act.second_derivative(z).numpy(), want.numpy())


def test_relu_surrogate_is_softplus_beta3():
    z = np.linspace(-2, 2, 9)
    act = activations.NeuronActivation(keras.activations.relu, "relu", "softplus")
    s = 1 / (1 + np.exp(-3 * z))
    np.testing.assert_allclose(act.second_derivative(tf.constant(z)).numpy(), 3 * s * (1 - s))
    act = activations.NeuronActivation(keras.activations.relu, "relu", None)
    np.testing.assert_array_equal(act.second_derivative(tf.constant(z)).numpy(), 0.0)


@pytest.mark.parametrize("beta", [1.0, 3.0, 10.0])
def test_surrogate_beta_sets_the_softplus_sharpness_of_the_exact_matrices(float64, beta):
    """A ReLU unit's matrix is sum_n dL/da_n * beta s_n (1 - s_n) x_n x_n^T, s_n =
    sigmoid(beta z_n), computed here with numpy from the network's own tensors."""
    model = ks.GrowingModel(zoo.mlp(act="relu"), surrogate_beta=beta)
    model.compile(optimizer="sgd", loss="mse")
    x, y = zoo.data_for(model.network, n=16)
    net = model.network
    sub = keras.Model(net.inputs, [net.get_layer("d1").output, net.outputs[0]])
    with tf.GradientTape() as tape:
        a, out = sub(x, training=False)
        loss = tf.reduce_mean(keras.losses.mean_squared_error(y, out))
    g = tape.gradient(loss, a).numpy()
    kernel, bias = (w.numpy() for w in net.get_layer("d1").weights)
    s = 1 / (1 + np.exp(-beta * (x @ kernel + bias)))
    want = np.einsum("ni,nj,nk->ijk", g * beta * s * (1 - s), x, x)
    got = splitting_matrices(model.channel_graph, model.splitting_loss(), (x, y),
                             batch_size=16)["d1"]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
    config = model.get_config()
    assert config["surrogate_beta"] == beta
    assert ks.GrowingModel.from_config(config).channel_graph.surrogate_beta == beta


@pytest.mark.parametrize("beta", [0, -1.0, float("nan"), float("inf"), "3", True])
def test_surrogate_beta_refuses_what_is_not_a_positive_number(beta):
    with pytest.raises(ValueError, match="Received: surrogate_beta="):
        ks.GrowingModel(zoo.mlp(act="relu"), surrogate_beta=beta)


@pytest.mark.parametrize("topology", ["mlp", "cnn_bn_swish", "separable", "conv1d",
                                      "separable_conv", "grouped_conv"])
def test_fast_products_equal_the_exact_matrices_times_v(float64, topology):
    """The auxiliary-activation products ``S v`` (one backward pass, no matrix) equal the
    exact matrices times ``v`` for every neuron of every producer type, in float64."""
    from keras_split.estimate.products import SvProducts

    model = zoo.compiled_topology(topology, surrogate="softplus")
    x, y = zoo.data_for(model.network, n=20)
    graph, loss_fn = model.channel_graph, model.splitting_loss()
    mats = splitting_matrices(graph, loss_fn, (x, y), batch_size=10)
    engine = SvProducts(graph, loss_fn, seed=3)
    svs, count = engine.products((x, y), batch_size=10)
    vectors = engine.get_vectors()
    assert count == 20 and set(svs) == set(mats)
    for name, sv in svs.items():
        expected = np.einsum("kij,kj->ki", mats[name], vectors[name])
        scale = np.abs(expected).max()
        assert scale > 1e-8, name
        np.testing.assert_allclose(sv, expected, rtol=0, atol=1e-9 * scale, err_msg=name)
