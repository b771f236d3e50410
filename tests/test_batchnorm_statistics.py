"""BatchNormalization moving statistics re-estimated from data."""

import keras
import numpy as np
import pytest

import keras_split as ks

L = keras.layers


def test_moving_statistics_become_the_mean_of_the_batch_statistics():
    keras.utils.set_random_seed(0)
    x_in = keras.Input((4, 4, 2))
    h = L.Conv2D(3, 1, use_bias=False, name="c")(x_in)
    h = L.BatchNormalization(momentum=0.99, name="bn")(h)
    model = ks.GrowingModel(keras.Model(x_in, L.Dense(2)(L.GlobalAveragePooling2D()(h))))
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(96, 4, 4, 2)) * [1.0, 3.0] + [2.0, -1.0]).astype("float32")
    kernel = keras.ops.convert_to_numpy(model.get_layer("c").kernel)[0, 0]
    assert ks.recalibrate_batchnorm(model, x, batch_size=32) == 1
    bn = model.get_layer("bn")
    z = (x @ kernel).reshape(3, 32 * 16, 3)            # three batches of 32 images
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean),
                               z.mean(axis=1).mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance),
                               z.var(axis=1).mean(axis=0), rtol=1e-3)
    assert bn.momentum == 0.99
    # With the data's own statistics, inference matches training mode on one big batch.
    one = ks.recalibrate_batchnorm(model, x, batch_size=96)
    assert one == 1
    np.testing.assert_allclose(model(x, training=False), model(x, training=True), atol=1e-4)
    with pytest.raises(ValueError, match="holds no batch"):
        ks.recalibrate_batchnorm(model, x[:0])
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        ks.recalibrate_batchnorm(model, x, batch_size=0)
