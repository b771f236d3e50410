"""Eigenpairs (the default LOBPCG) split across 2 logical CPU replicas vs the exact ones, and
a fast-method stage across them (run by test_examples)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import json  # noqa: E402
import sys  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_split as ks  # noqa: E402
from tests import zoo  # noqa: E402

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
keras.utils.set_random_seed(0)
with strategy.scope():
    model = ks.GrowingModel(zoo.cnn_bn_swish())
    model.compile(optimizer="sgd", loss="mse")
x, y = zoo.data_for(model.network, n=32)
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
estimate = model.splitting_eigenpairs(ds, eigen_epochs=40, eigen_tol=1e-4)
exact = model.splitting_eigenpairs(ds, method="exact")
worst = {"rel": 0.0, "cos": 1.0}
top = max(np.abs(e.values).max() for e in exact.values())
for name in exact:
    for k in np.flatnonzero(np.abs(exact[name].values) >= 0.01 * top):
        worst["rel"] = max(worst["rel"], abs(estimate[name].values[k] / exact[name].values[k] - 1))
        worst["cos"] = min(worst["cos"], abs(estimate[name].vectors[k] @ exact[name].vectors[k]))
stage = model.grow(ds, growth_ratio=0.5, method="fast", eigen_epochs=2)
worst["replicas"] = strategy.num_replicas_in_sync
worst["n_selected"] = stage.n_selected
worst["mirrored"] = type(model.network.get_layer("c1").kernel.value).__name__
json.dump(worst, sys.stdout)
