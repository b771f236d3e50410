"""A tiny resumable growth run, started as a subprocess by test_schedule.py."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_split as ks  # noqa: E402

L = keras.layers


def build():
    x = keras.Input((8, 8, 2))
    h = L.Conv2D(4, 3, padding="same", use_bias=False, name="c1")(x)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.Activation("swish", name="a1")(h)
    h = L.Conv2D(4, 3, padding="same", activation="swish", name="c2")(h)
    h = L.GlobalAveragePooling2D()(h)
    model = ks.GrowingModel(keras.Model(x, L.Dense(3, name="logits")(h)))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def data(stage):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8, 8, 2)).astype("float32")
    y = (x[:, :4].mean(axis=(1, 2, 3)) > 0).astype("int64") + (x[..., 1].mean(axis=(1, 2)) > 0)
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(96, seed=stage).batch(16)


if __name__ == "__main__":
    ks.grow_schedule(build, data, sys.argv[1], stages=int(sys.argv[2]), epochs_per_stage=3,
                     growth_ratio=0.5, seed=3, grow_kwargs={"eigen_epochs": 2})
