"""One worker of a MultiWorkerMirroredStrategy growth run, or the same run in one process.

``python -m tests.multi_worker_job OUT MODE RUN [KILL]``: ``MODE`` ``multi``
(``TF_CONFIG`` set by the caller, one process per worker) or ``single`` (no strategy,
the same global batches); ``RUN``:

* ``fit``: a small BatchNorm CNN fitted for 3 epochs with a ``GrowthCallback`` that grows
  after epochs 1 and 2; the chief saves the ``.keras`` file; every process writes what it
  chose and ended with to ``OUT/<task>.json`` and ``OUT/<task>.npz``;
* ``schedule``: the same network grown by ``grow_schedule`` in ``OUT/run`` (stages of 1,
  2 and 1 epochs); with ``KILL`` set to ``1`` worker 1 exits at the end of stage 1's
  first epoch (stage 0 is checkpointed by then); the final weights go to
  ``OUT/<task>.npz``.

Run by ``tests/test_multi_worker.py``.
"""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["CUDA_VISIBLE_DEVICES"] = "-1"

import tensorflow as tf  # noqa: E402

OUT, MODE, RUN = sys.argv[1], sys.argv[2], sys.argv[3]
KILL = len(sys.argv) > 4 and sys.argv[4] == "1"
if MODE == "multi":
    # Created before any other TensorFlow call, as the strategy requires.
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING,
        timeout_seconds=60)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
else:
    strategy = tf.distribute.get_strategy()

import json  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_split as ks  # noqa: E402
from keras_split import compat  # noqa: E402
from keras_split.growing import distributed  # noqa: E402
from tests import zoo  # noqa: E402

task = distributed.task_name(strategy)
tf.config.experimental.enable_op_determinism()


def build():
    """Synchronised BatchNormalization: batch statistics over the global batch, as in
    one process."""
    model = ks.GrowingModel(zoo.cnn_bn_swish(synchronized=True))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse")
    return model


def training_data():
    """The same global batches of 32 everywhere: each of 2 workers computes 16 of them."""
    x, y = zoo.data_for(build().network, n=128, seed=1)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = \
        tf.data.experimental.AutoShardPolicy.DATA
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(32).with_options(options)


class KillWorker1(keras.callbacks.Callback):
    """Worker 1 dies at the end of the second epoch of the run, the first of stage 1's two."""

    epochs = 0

    def on_epoch_end(self, epoch, logs=None):
        KillWorker1.epochs += 1
        if KILL and task == "worker1" and KillWorker1.epochs == 2:
            os.kill(os.getpid(), signal.SIGKILL)


def schedule():
    model, _ = ks.grow_schedule(build, training_data(), os.path.join(OUT, "run"), stages=2,
                                epochs_per_stage=[1, 2, 1], growth_ratio=0.5, seed=0,
                                strategy=strategy, fit_kwargs={"callbacks": [KillWorker1()]})
    np.savez(os.path.join(OUT, f"{task}.npz"), *model.network.get_weights())


def fit():
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build()
    train = training_data()
    # Every worker is given the same TensorBoard folder: the chief alone writes it.
    grower = ks.GrowthCallback(train, every_n_epochs=1, max_stages=2, growth_ratio=0.5, seed=0,
                               log_dir=os.path.join(OUT, "tensorboard"))
    history = model.fit(train, epochs=3, verbose=0, callbacks=[grower])
    if distributed.is_chief(strategy):
        model.save(os.path.join(OUT, "model.keras"))
    eig = model.splitting_eigenpairs(train, batch_size=32)

    result = {
        "task": task,
        "chief": distributed.is_chief(strategy),
        "multi_worker": compat.multi_worker(strategy),
        "stage_epochs": grower.stage_epochs,
        "chosen": [{n: rec.split_indices for n, rec in st.layers.items()}
                   for st in grower.stages],
        "stage_lambdas": [{n: rec.lambdas for n, rec in st.layers.items()}
                          for st in grower.stages],
        "loss": history.history["loss"],
        "lambdas": {n: e.values.tolist() for n, e in eig.items()},
    }
    if MODE == "multi":
        try:
            model.splitting_eigenpairs(train, method="exact")
            result["exact"] = "ok"
        except ValueError as err:
            result["exact"] = str(err)
        # The Keras behaviour tests/test_multi_worker.py checks is still there: a plain model
        # fails to build on a distributed batch, and TensorFlow rejects the reduction of
        # per-replica scalars over axis 0 that Keras' trainer asks for.
        with strategy.scope():
            plain = keras.Sequential([keras.Input((9, 9, 3)), keras.layers.Flatten(),
                                      keras.layers.Dense(2)])
            plain.compile(optimizer="sgd", loss="mse")
        try:
            plain.fit(train, epochs=1, verbose=0)
            result["keras_fit"] = "ok"
        except ValueError as err:
            result["keras_fit"] = str(err)[:200]
        scalars = strategy.run(lambda: tf.constant(1.0))
        try:
            strategy.reduce("MEAN", scalars, axis=0)
            result["scalar_reduce"] = "ok"
        except ValueError as err:
            result["scalar_reduce"] = str(err)[:200]
    np.savez(os.path.join(OUT, f"{task}.npz"), *model.network.get_weights())
    with open(os.path.join(OUT, f"{task}.json"), "w") as f:
        json.dump(result, f)


if RUN == "fit":
    fit()
else:
    keras.utils.set_random_seed(0)
    schedule()
