"""A resumable growth run (``grow_schedule``) of one worker of a MultiWorkerMirroredStrategy,
or of one process.

``python -m tests.multi_worker_schedule_job OUT_DIR MODE [KILL]``: ``MODE`` ``multi``
(``TF_CONFIG`` set by the caller) or ``single``; with ``KILL`` set to ``1``, worker 1
exits at the end of stage 1's first epoch (stage 0 is checkpointed by then). The
process writes its final weights to ``OUT_DIR/<task>.npz`` (run by
``tests/test_multi_worker.py``).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["CUDA_VISIBLE_DEVICES"] = "-1"

import tensorflow as tf  # noqa: E402

OUT, MODE = sys.argv[1], sys.argv[2]
KILL = len(sys.argv) > 3 and sys.argv[3] == "1"
if MODE == "multi":
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING,
        timeout_seconds=60)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
else:
    strategy = tf.distribute.get_strategy()

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_split as ks  # noqa: E402
from keras_split.growing import distributed  # noqa: E402
from tests import zoo  # noqa: E402

task = distributed.task_name(strategy)


def build():
    model = ks.GrowingModel(zoo.cnn_bn_swish(synchronized=True))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse")
    return model


class KillWorker1(keras.callbacks.Callback):
    """Worker 1 dies at the end of the second epoch of the run, the first of stage 1's two."""

    epochs = 0

    def on_epoch_end(self, epoch, logs=None):
        KillWorker1.epochs += 1
        if KILL and task == "worker1" and KillWorker1.epochs == 2:
            os._exit(3)


x, y = zoo.data_for(build().network, n=128, seed=1)
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).with_options(options)
model, history = ks.grow_schedule(build, train, os.path.join(OUT, "run"), stages=2,
                                  epochs_per_stage=[1, 2, 1], growth_ratio=0.5, seed=0,
                                  strategy=strategy, fit_kwargs={"callbacks": [KillWorker1()]})
np.savez(os.path.join(OUT, f"{task}.npz"), *model.network.get_weights())
