"""keras.applications CNNs (issue 11, in part): op nodes, preprocessing layers, one refusal
listing every unsupported node."""

import keras
import numpy as np
import pytest

import keras_split as ks
from tests import zoo

A = keras.applications


def _check_family(build, tmp_path, n=32, size=32):
    """One family's checks: eps=0 splits keep the outputs, grow grows without raising the
    held-out loss, a fit step runs, the .keras round trip gives the same outputs and float
    TFLite matches Keras to 1e-4 relative on data-like inputs."""
    from keras_split.apps import export

    rng = np.random.default_rng(0)
    base = build()
    zoo.randomize_batchnorm(base, rng)
    model = ks.GrowingModel(base)
    np.testing.assert_array_equal(model.predict(x := rng.uniform(
        0, 255, size=(n, size, size, 3)).astype("float32"), verbose=0), base.predict(x, verbose=0))
    x = rng.uniform(0, 255, size=(n, size, size, 3)).astype("float32")
    y = rng.integers(0, 10, n)
    before = model.predict(x, verbose=0)
    layers = model.splittable_layers
    plan = {name: [0, model.channel_graph.units(name) - 1]
            for name in (layers[len(layers) // 3], layers[2 * len(layers) // 3])}
    for rule in ("copy", "fresh"):
        # A clone keeps the layer names (a second build() of a model with automatic
        # names, InceptionV3's conv2d_N, would not).
        probe = ks.GrowingModel(keras.models.clone_model(base))
        probe.set_weights(model.get_weights())
        probe.split(plan, epsilon=0.0, split_rule=rule)
        assert ks.count_flops(probe) > ks.count_flops(model)
        # Logits (no softmax, which would hide differences), to 1e-5 of their scale.
        np.testing.assert_allclose(probe.predict(x, verbose=0), before, rtol=0,
                                   atol=1e-5 * np.abs(before).max())
    # SGD at 1e-3: at Keras' default 1e-2, one step on these 0-255 inputs with randomised
    # BatchNorm statistics throws EfficientNetV2B0's logits from 5 to 5 000 (grown or not),
    # where float32 rounding alone parts TFLite from Keras by 6e-3 (measured).
    model.compile(optimizer=keras.optimizers.SGD(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    stage = model.grow(x, y, growth_ratio=0.2, batch_size=8, eval_data=(x[:16], y[:16]))
    assert stage.loss_after <= stage.loss_before * (1 + 1e-5)
    assert stage.macs_before < stage.macs_after <= 1.2 * stage.macs_before
    model.fit(x[:8], y[:8], epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "m.keras")
    np.testing.assert_array_equal(keras.saving.load_model(tmp_path / "m.keras").predict(
        x, verbose=0), model.predict(x, verbose=0))
    result = export.tflite(model, str(tmp_path / "m.tflite"), sample_data=x[:8])
    assert result.relative_max_diff <= 1e-4, result
    return model, x


def test_mobilenet_v3_small_with_op_nodes(tmp_path):
    # hard-sigmoid and hard-swish are op nodes (x + 3.0, x * gate) in keras.applications.
    build = lambda: A.MobileNetV3Small(input_shape=(32, 32, 3), weights=None,  # noqa: E731
                                       classes=10, classifier_activation=None)
    ops = [n for n in ks.GrowingModel(build()).channel_graph.nodes
           if not isinstance(n.layer, keras.layers.Layer)]
    assert {type(n.layer).__name__ for n in ops} >= {"Add", "Multiply"}
    model, x = _check_family(build, tmp_path)
    assert model.growth_history[0]["macs_after"] > model.growth_history[0]["macs_before"]


@pytest.mark.slow
@pytest.mark.parametrize("family", [
    "MobileNet", "MobileNetV2", "MobileNetV3Large", "ResNet50", "ResNet50V2", "DenseNet121",
    "EfficientNetV2B0"])
def test_keras_applications_family(family, tmp_path):
    """Issue 11's acceptance per family (see _check_family)."""
    _check_family(lambda: getattr(A, family)(
        input_shape=(32, 32, 3), weights=None, classes=10, classifier_activation=None), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["InceptionV3", "InceptionResNetV2"])
def test_inception_families_at_their_smallest_input(family, tmp_path):
    """75x75, the smallest input they take; InceptionResNetV2's scaled residual sums
    (CustomScaleLayer) tie their channels like an Add."""
    model, _ = _check_family(lambda: getattr(A, family)(
        input_shape=(75, 75, 3), weights=None, classes=10, classifier_activation=None),
        tmp_path, n=16, size=75)
    assert model.growth_history[0]["macs_after"] > model.growth_history[0]["macs_before"]


def test_custom_scale_layer_is_a_merge():
    """InceptionResNetV2's ``inputs[0] + inputs[1] * scale``: the two inputs' channels form
    coupled groups, and an eps=0 split keeps the outputs."""
    from keras_split import compat

    (scale_layer,) = compat.keras_applications_merge_layers()
    x = keras.Input((6, 6, 3))
    a = keras.layers.Conv2D(4, 1, name="a")(x)
    b = keras.layers.Conv2D(4, 3, padding="same", name="b")(x)
    h = scale_layer(0.2, name="scaled_sum")([a, b])
    h = keras.layers.Activation("swish")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = ks.GrowingModel(keras.Model(x, keras.layers.Dense(3, name="out")(h)))
    assert sorted(sorted(g) for g in model.coupled_groups()) == [
        [("a", k), ("b", k)] for k in range(4)]
    data = np.random.default_rng(0).normal(size=(4, 6, 6, 3)).astype("float32")
    before = model.predict(data, verbose=0)
    model.split({"a": [1], "b": [1]}, epsilon=0.0, split_rule="copy")
    assert model.network.get_layer("b").kernel.shape[-1] == 5
    np.testing.assert_allclose(model.predict(data, verbose=0), before, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_efficientnet_b0_with_preprocessing_layers_and_se_blocks(tmp_path):
    model, _ = _check_family(lambda: A.EfficientNetB0(
        input_shape=(32, 32, 3), weights=None, classes=10, classifier_activation=None), tmp_path)
    # Squeeze-and-excitation: every expanded channel is coupled with its gate unit.
    groups = model.coupled_groups()
    assert any({n for n, _ in g} == {"block3a_expand_conv", "block3a_se_expand"}
               for g in groups)
    assert sum("se_expand" in n for n in model.splittable_layers) == 16


@pytest.mark.slow
def test_convnext_tiny_nested_stem_layer_scale_and_grouped_convs(tmp_path):
    """A nested Sequential stem (flattened), LayerScale (registered as per-channel), grouped
    depthwise convolutions and LayerNormalization (channels never split): the 4x MLP hidden
    units grow."""
    def build():
        # LayerScale starts at 1e-6: every hidden unit's eigenvalue is then noise-level and
        # grow rightly splits nothing. At 0.1, the order of trained ones, the units count.
        network = A.ConvNeXtTiny(input_shape=(32, 32, 3), weights=None, classes=10,
                                 classifier_activation=None)
        scales = [layer for layer in network.layers if type(layer).__name__ == "LayerScale"]
        assert len(scales) == 18
        for layer in scales:
            layer.set_weights([np.full_like(w, 0.1) for w in layer.get_weights()])
        return network

    model, _ = _check_family(build, tmp_path)
    assert all(name.endswith("pointwise_conv_1") for name in model.splittable_layers)
    assert len(model.splittable_layers) == 18


class Opaque(keras.layers.Layer):
    def call(self, x):
        return x


def test_one_refusal_lists_every_unsupported_node():
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, name="c1")(x)
    h = Opaque(name="opaque_1")(h)
    shared = keras.layers.Conv2D(4, 1, name="shared")
    h = shared(shared(h))
    h = keras.layers.Conv2D(4, 1, data_format="channels_first", name="cf")(h)
    h = Opaque(name="opaque_2")(h)
    h = keras.ops.reshape(h, (-1, 6 * 6 * 4))
    net = keras.Model(x, keras.layers.Dense(2, name="out")(h), name="messy")
    with pytest.raises(ValueError) as info:
        ks.GrowingModel(net)
    lines = str(info.value).splitlines()
    assert lines[0] == "keras_split cannot grow 'messy': 5 nodes are not supported:"
    text = str(info.value)
    assert text.count("of type Opaque is not supported") == 2
    assert "ks.register_handler(Opaque, ks.handlers.CHANNELWISE)" in text
    assert "'shared' (Conv2D) is shared" in text
    assert "'cf' (Conv2D) uses data_format='channels_first'" in text
    assert "' is an op node (numpy.Reshape: a keras.ops call" in text


def test_op_nodes_say_they_are_op_nodes():
    x = keras.Input((8,))
    h = keras.layers.Dense(4, name="d")(x)
    wide = keras.Model(x, keras.layers.Dense(2)(keras.ops.reshape(h, (-1, 4))))
    with pytest.raises(ValueError, match=r"'reshape(_\d+)?' is an op node \(numpy.Reshape: a "
                                         r"keras.ops call .*not a keras.layers.Reshape layer"):
        ks.GrowingModel(wide)
    scaled = keras.Model(x, keras.layers.Dense(2)(h * np.arange(4.0, dtype="float32")))
    with pytest.raises(ValueError, match=r"constant operand of shape \(4,\)"):
        ks.GrowingModel(scaled)
    shifted = ks.GrowingModel(keras.Model(x, keras.layers.Dense(2)(keras.ops.relu6(h + 3.0))))
    assert shifted.splittable_layers == ["d"]
    data = np.random.default_rng(0).normal(size=(6, 8)).astype("float32")
    before = shifted.predict(data, verbose=0)
    shifted.split({"d": [1]}, epsilon=0.0)
    np.testing.assert_allclose(shifted.predict(data, verbose=0), before, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("family, size", [("Xception", 71), ("NASNetMobile", 32)])
def test_separable_conv_families(family, size, tmp_path):
    """Xception (34 SeparableConv2D) and NASNetMobile (160) grow: the family checks, then
    the two most negative units of two SeparableConv2D layers split at epsilon 0 with
    BatchNorm statistics estimated on the inputs keep the softmax outputs within 1e-4."""
    def build():
        return getattr(A, family)(input_shape=(size, size, 3), weights=None, classes=10,
                                  classifier_activation=None)

    model, x = _check_family(build, tmp_path, n=16, size=size)
    ks.recalibrate_batchnorm(model, x, batch_size=8)
    separable = [n for n in model.splittable_layers
                 if type(model.get_layer(n)).__name__ == "SeparableConv2D"]
    assert len(separable) >= 2
    layers = [separable[len(separable) // 3], separable[2 * len(separable) // 3]]
    y = np.random.default_rng(1).integers(0, 10, len(x))
    eig = model.splitting_eigenpairs((x, y), layers=layers, batch_size=8)
    plan = {n: [int(u) for u in np.argsort(eig[n].values)[:2]] for n in layers}
    before = keras.ops.softmax(model.predict(x, verbose=0)).numpy()
    widths = {n: model.channel_graph.units(n) for n in layers}
    model.split(plan, eigenpairs=eig, epsilon=0.0, split_rule="fresh")
    after = keras.ops.softmax(model.predict(x, verbose=0)).numpy()
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-4)
    assert all(model.channel_graph.units(n) >= widths[n] + 2 for n in layers)
