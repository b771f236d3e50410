"""MobileNet builders: reference MACs and parameters, growability, rebuilding from widths."""

import keras
import numpy as np
import pytest

import keras_split as ks
from keras_split import models


@pytest.mark.parametrize("version, alpha, macs", [
    ("v1", 1.0, 569e6), ("v1", 0.75, 325e6), ("v1", 0.5, 149e6),
    ("v2", 1.0, 300e6), ("v2", 0.75, 209e6), ("v2", 0.5, 97e6)])
def test_mobilenet_macs_and_params(version, alpha, macs):
    """The papers' MACs, and keras.applications' parameter counts."""
    model = getattr(models, f"mobilenet_{version}")(alpha)
    assert ks.count_flops(model) == pytest.approx(macs, rel=0.02)
    reference = {"v1": keras.applications.MobileNet, "v2": keras.applications.MobileNetV2}
    assert model.count_params() == reference[version](alpha=alpha, weights=None).count_params()


def test_v2_has_identity_shortcuts_that_couple_channels():
    model = ks.GrowingModel(models.mobilenet_v2(0.35, input_shape=(32, 32, 3), num_classes=5))
    adds = [l for l in model.network.layers if isinstance(l, keras.layers.Add)]
    assert len(adds) == 10
    assert not any(isinstance(l, keras.layers.Conv2D) and "shortcut" in l.name
                   for l in model.network.layers)
    groups = model.coupled_groups()
    # The 32-wide stage (blocks 3-5) ties three projections per channel.
    sizes = sorted({len(g) for g in groups})
    assert sizes == [2, 3, 4]


BUILDERS = {
    "v1": lambda: models.mobilenet_v1(0.25, input_shape=(32, 32, 3), num_classes=4),
    "v2": lambda: models.mobilenet_v2(0.35, input_shape=(32, 32, 3), num_classes=4),
    "v1_cifar": lambda: models.mobilenet_v1_cifar(blocks=6, width=8),
    "v2_cifar": lambda: models.mobilenet_v2_cifar(width=8),
    "v2_swish": lambda: models.mobilenet_v2(0.35, input_shape=(32, 32, 3), num_classes=4,
                                            activation="swish"),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_builder_is_growable(name):
    base = BUILDERS[name]()
    rng = np.random.default_rng(0)
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.2, n))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n))
    model = ks.GrowingModel(base)
    x = rng.normal(size=(4, 32, 32, 3)).astype("float32")
    before = model.predict(x, verbose=0)
    widths = models.channels_of(model)
    plan = {n: [0] for n in model.splittable_layers}
    model.split(plan, epsilon=0.0)
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-5)
    grown = models.channels_of(model)
    assert all(g == w + 1 for g, w in zip(grown, widths))
    assert model.network.get_layer("predictions").kernel.shape[-1] == base.outputs[0].shape[-1]


def test_grown_architecture_rebuilds_from_its_widths():
    model = ks.GrowingModel(models.mobilenet_v2_cifar(width=8))
    model.split({"block_1_project": [0, 3], "conv1": [2], "block_4_expand": [5]}, epsilon=0.0)
    widths = models.channels_of(model)
    fresh = models.mobilenet_v2_cifar(channels=widths)
    assert models.channels_of(fresh) == widths
    assert fresh.count_params() == model.count_params()
    assert ks.count_flops(fresh) == ks.count_flops(model)
    assert [w.shape for w in fresh.weights] == [w.shape for w in model.network.weights]


def test_builder_arguments_are_validated():
    with pytest.raises(ValueError, match="channels must be a list of 14"):
        models.mobilenet_v1(channels=[8] * 3)
    with pytest.raises(ValueError, match="identity shortcut"):
        widths = models.channels_of(models.mobilenet_v2_cifar(width=8))
        widths[3] += 1  # a block with a shortcut may not change its width alone
        models.mobilenet_v2_cifar(channels=widths)
    with pytest.raises(ValueError, match="activation"):
        models.mobilenet_v2(activation="sigmoidal")
    with pytest.raises(ValueError, match="width_multiplier"):
        models.mobilenet_v1(width_multiplier=0)
    with pytest.raises(ValueError, match="blocks"):
        models.mobilenet_v1_cifar(blocks=2)
    assert models.make_divisible(32 * 0.35) == 16
