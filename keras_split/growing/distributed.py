"""Which process of a multi-worker run this is, and what only one of them may do.

Under ``tf.distribute.MultiWorkerMirroredStrategy`` every worker runs the same
program: the same training steps, the same growth stages and the same collectives
in the same order. Files are the exception: the run directory, TensorBoard logs and
saved models are written by the chief alone (the worker of task ``chief``, or
worker 0 when the cluster has no chief), as Keras' own callbacks do not arrange.
"""

import json
import socket

import numpy as np
import tensorflow as tf

from keras_split import compat


def _task(strategy):
    """``(task_type, task_id)`` of this process in ``strategy``'s cluster, or None."""
    if not compat.multi_worker(strategy):
        return None
    resolver = strategy.cluster_resolver
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy=None):
    """Whether this process writes the run's files: always outside a multi-worker
    strategy; under one, only the chief (task ``chief``, else worker 0).

    Args:
        strategy: a ``tf.distribute.Strategy`` (default: the current one).

    Returns:
        A bool.

    Example:
        >>> if is_chief(model.distribute_strategy):
        ...     model.save("grown.keras")
    """
    strategy = strategy or tf.distribute.get_strategy()
    task = _task(strategy)
    if task is None:
        return True
    kind, index = task
    if kind == "chief":
        return True
    has_chief = "chief" in strategy.cluster_resolver.cluster_spec().as_dict()
    return kind == "worker" and index == 0 and not has_chief


def task_name(strategy=None):
    """``"single"`` outside a multi-worker strategy, else the task and its index
    (``"worker1"``, ``"chief0"``): a name for this process's own files.

    Example:
        >>> task_name()
        'single'
    """
    task = _task(strategy or tf.distribute.get_strategy())
    return "single" if task is None else f"{task[0]}{task[1]}"


def worker_mean(value, strategy=None):
    """``value`` (a float this process computed) averaged over the workers of a
    multi-worker strategy, the same on every worker; ``value`` itself elsewhere.

    Every worker must call it at the same point (it is a collective).

    Example:
        >>> loss = worker_mean(local_loss, model.distribute_strategy)
    """
    strategy = strategy or tf.distribute.get_strategy()
    if not compat.multi_worker(strategy):
        return value
    local = tf.constant(float(value), tf.float64)
    per_replica = strategy.run(lambda: tf.identity(local))
    return float(strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None))


def average_non_trainable(model, strategy=None):
    """Sets every non-trainable variable of ``model`` (BatchNormalization's moving
    statistics) to its mean over the workers of a multi-worker strategy; nothing
    elsewhere.

    Why: trainable weights are kept identical on every worker by the all-reduced
    gradients, but each worker updates the moving statistics of an unsynchronised
    BatchNormalization from its own batches, so they drift apart. A growth stage
    measures eigenvalues and losses in inference mode, with those statistics, and
    every worker must take the same decision from the same numbers.

    Example:
        >>> average_non_trainable(model, model.distribute_strategy)
    """
    strategy = strategy or tf.distribute.get_strategy()
    if not compat.multi_worker(strategy):
        return
    variables = [v for v in model.non_trainable_variables
                 if getattr(v, "dtype", None) is not None and "float" in str(v.dtype)]
    if not variables:
        return
    # One collective for all of them: the values flattened into one vector.
    per_replica = strategy.run(lambda: tf.concat(
        [tf.reshape(tf.cast(v.value, tf.float32), [-1]) for v in variables], axis=0))
    means = strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)
    start = 0
    for variable in variables:
        size = int(np.prod(variable.shape))
        variable.assign(tf.cast(tf.reshape(means[start:start + size], variable.shape),
                                variable.dtype))
        start += size


# The eigen-estimation methods that combine every worker's data (their products are
# all-reduced); "exact" builds each neuron's matrix on one device.
MULTI_WORKER_METHODS = ("lobpcg", "fast")


def check_method(method, strategy=None):
    """Raises ValueError for an eigen-estimation ``method`` that cannot run across the
    workers of a multi-worker strategy (before any work).

    Example:
        >>> check_method("lobpcg", strategy)
    """
    strategy = strategy or tf.distribute.get_strategy()
    if compat.multi_worker(strategy) and method not in MULTI_WORKER_METHODS:
        raise ValueError(
            f"method={method!r} builds every splitting matrix on one device and cannot "
            f"combine the workers' data under MultiWorkerMirroredStrategy; use one of "
            f"{MULTI_WORKER_METHODS}. Received: method={method!r}")


def barrier(strategy=None):
    """Waits until every worker of a multi-worker strategy has reached this call (for
    instance until the chief has written what the others read next); nothing elsewhere.

    Example:
        >>> if is_chief(strategy):
        ...     save_stage(out_dir, stage, model, history)
        >>> barrier(strategy)
    """
    worker_mean(0.0, strategy)


def local_cluster(workers):
    """``TF_CONFIG`` values for ``workers`` processes on this machine, one per worker, on
    ports free now: a cluster for trying a multi-worker run (or testing one) on one host.

    Args:
        workers: the number of workers (>= 1).

    Returns:
        A list of JSON strings; give the ``i``-th to worker ``i`` as ``TF_CONFIG``.

    Raises:
        ValueError: for a bad ``workers``.

    Example:
        >>> env = dict(os.environ, TF_CONFIG=local_cluster(2)[0])
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer. Received: workers={workers!r}")
    sockets = [socket.socket() for _ in range(workers)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        ports = [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            for i in range(workers)]


class MultiWorkerSteps:
    """Keras trainer hooks that let a model fit and evaluate across the workers of a
    ``MultiWorkerMirroredStrategy`` (mixed into :class:`keras_split.GrowingModel`):
    its step logs are shaped for the reduction across workers and it builds on one
    replica's part of the first batch (see :func:`keras_split.compat.multi_worker_logs`
    and :func:`keras_split.compat.symbolic_build`). Elsewhere they change nothing.

    Example:
        >>> class MyModel(MultiWorkerSteps, keras.Model): ...
    """

    def train_step(self, data):
        return compat.multi_worker_logs(self.distribute_strategy, super().train_step(data))

    def test_step(self, data):
        return compat.multi_worker_logs(self.distribute_strategy, super().test_step(data))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        compat.symbolic_build(self, iterator=iterator, data_batch=data_batch)
