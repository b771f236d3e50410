"""Framework internals that no public API serves, wrapped in one place.

Every function here reads a private Keras or TensorFlow structure, or works
around framework behaviour no public switch controls; each says why no public
API does the job, so that a framework upgrade breaks only this module.
"""

import contextlib
import os
import sys
import tempfile

import numpy as np


@contextlib.contextmanager
def native_output_held(fd=2, replay=True):
    """Holds back what native code writes to file descriptor ``fd`` meanwhile.

    Why: TensorFlow's shared libraries log through absl at import, before
    ``TF_CPP_MIN_LOG_LEVEL`` is read, and HiGHS (under ``scipy.optimize.milp``)
    prints solver notes to stdout even with ``disp=False``; neither has a
    switch, so the descriptor is pointed at a temporary file for the duration.
    What was held is written out if the block raises (``replay``).

    Example:
        >>> with native_output_held(1):
        ...     res = scipy.optimize.milp(...)
    """
    stream = sys.stdout if fd == 1 else sys.stderr
    stream.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), fd)
        try:
            yield
        except BaseException:
            os.dup2(saved, fd)
            if replay:
                held.seek(0)
                stream.write(held.read().decode(errors="replace"))
                stream.flush()
            raise
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def tflite_constant_elements(content):
    """``{type name: elements}`` of the constant tensors (weights, biases) of a TFLite model.

    Why private: the TFLite ``Interpreter`` lists tensors and their types but not
    which of them are constants, so what a quantization stored as int8 or float16
    can only be read from the flatbuffer, with the schema module TensorFlow
    generates (``tensorflow.lite.python.schema_py_generated``).

    Example:
        >>> tflite_constant_elements(converter.convert())
        {'INT8': 9120, 'INT32': 120}
    """
    from tensorflow.lite.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(bytearray(content), 0)
    counts = {}
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            buffer = model.Buffers(tensor.Buffer())
            if buffer is None or (buffer.DataLength() == 0 and not buffer.Size()):
                continue
            shape = tensor.ShapeAsNumpy() if tensor.ShapeLength() else np.zeros(0, np.int32)
            name = names.get(tensor.Type(), str(tensor.Type()))
            counts[name] = counts.get(name, 0) + int(np.prod(shape))
    return counts


def keras_applications_channelwise_layers():
    """Per-channel custom layers of ``keras.applications`` (ConvNeXt's ``LayerScale``).

    Why private: keras.applications defines them inside its model modules and
    does not export them, and a handler is looked up by the layer's exact class.
    """
    return _applications_layers(("convnext", "LayerScale"))


def keras_applications_merge_layers():
    """Element-wise merge layers of ``keras.applications`` (InceptionResNetV2's
    ``CustomScaleLayer``: ``inputs[0] + inputs[1] * scale``).

    Why private: as for :func:`keras_applications_channelwise_layers`.
    """
    return _applications_layers(("inception_resnet_v2", "CustomScaleLayer"))


def _applications_layers(*names):
    """The classes ``keras.src.applications.<module>.<name>`` this Keras has."""
    import importlib

    found = []
    for module, name in names:
        try:
            found.append(getattr(importlib.import_module(f"keras.src.applications.{module}"),
                                 name))
        except (ImportError, AttributeError):   # pragma: no cover - another Keras version
            pass
    return found


def graph_nodes(model):
    """The operation nodes of a functional model in execution order (inputs left out).

    Why private: Keras keeps a functional graph's nodes in ``_nodes_by_depth``;
    no public API walks the graph node by node (``model.layers`` loses the
    calls, their arguments and op nodes).
    """
    nodes = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.operation is not None and not node.is_input:
                nodes.append(node)
    return nodes


def functional_graph(model):
    """The functional model that holds ``model``'s graph, or None (a subclassed model).

    Why private: a ``Sequential`` model builds a functional model inside it
    (``_functional``) and keeps the nodes there; whether a model has a graph of
    nodes at all is only told by ``_nodes_by_depth`` (``keras.Model`` is also
    the base of subclassed models, which have none).
    """
    import keras  # here: ``import keras_split`` loads no TensorFlow

    if isinstance(model, keras.Sequential) and getattr(model, "_functional", None) is not None:
        model = model._functional
    return model if hasattr(model, "_nodes_by_depth") else None


def has_compiled_loss(model):
    """Whether ``model.compile`` was given a loss.

    Why private: ``compile(loss=None)`` is legal (a model may add its own
    losses), and only ``_compile_loss`` tells the two cases apart.
    """
    return bool(model.compiled) and getattr(model, "_compile_loss", None) is not None


def untrack(model, layer):
    """Stops ``model`` from tracking ``layer`` as one of its sub-layers.

    Why private: Keras tracks every layer assigned to an attribute and locks
    the tracker once the model is built; no public API replaces a built
    model's sub-network, which growing must do (``GrowingModel.network``).
    """
    model._tracker.unlock()
    model._tracker.untrack(layer)


def slot_prefix(variable_path):
    """The name prefix of the optimizer slots of the variable at ``variable_path``.

    Why private: Keras optimizers name a slot ``<path with '/' as '_'>_<kind>``
    (``"conv1_kernel_momentum"``) and keep no public map from a slot to its
    variable, so a rebuilt optimizer finds the old slots by name.
    """
    return variable_path.replace("/", "_") + "_"


def is_first_moment(slot):
    """Whether optimizer slot ``slot`` is a first moment (SGD velocity, Adam's ``m``):
    Keras names those ``*_momentum`` (see :func:`slot_prefix`)."""
    return slot.name.endswith("_momentum")


def call_arguments(node, tensors):
    """``(args, kwargs)`` of the call recorded by graph node ``node``, with each
    symbolic input replaced by ``tensors[id(symbolic tensor)]``.

    Why private: a functional graph's nodes (``keras.src.ops.node.Node``, see
    :func:`graph_nodes`) keep their call's arguments in ``node.arguments``
    (a ``SymbolicArguments``), which no public API exposes; re-running a graph
    with hooks (the S·v interpreter, inlining nested models) needs them.
    """
    return node.arguments.fill_in(tensors)


def call_constants(node):
    """The non-tensor values among the arguments of ``node``'s call (see
    :func:`call_arguments`), e.g. the ``3.0`` of an op node for ``x + 3.0``."""
    import keras  # here: ``import keras_split`` loads no TensorFlow

    values = keras.tree.flatten((node.arguments.args, node.arguments.kwargs))
    return [v for v in values if not isinstance(v, keras.KerasTensor)]


@contextlib.contextmanager
def gradient_transform(optimizer, transform):
    """While active, ``optimizer.apply_gradients`` passes every ``(gradient, variable)``
    pair through ``transform(gradient, variable)`` first.

    Why: Keras 3 optimizers have no public per-variable gradient hook, and the
    TensorFlow trainer's ``train_step`` ends with
    ``self.optimizer.apply_gradients(zip(gradients, trainable_weights))``; an
    instance attribute shadows that method while the step is traced, so that a
    growing model scales the gradients of new weight entries
    (:class:`keras_split.surgery.catch_up.CatchUp`) without re-implementing
    ``train_step`` and its private loss tracking. ``tests/test_catch_up.py``
    fails if the trainer stops calling ``apply_gradients``.

    Example:
        >>> with gradient_transform(model.optimizer, lambda g, v: 2.0 * g):
        ...     logs = keras.Model.train_step(model, batch)
    """
    original = optimizer.apply_gradients

    def apply_gradients(grads_and_vars, *args, **kwargs):
        pairs = [(transform(g, v), v) for g, v in grads_and_vars]
        return original(pairs, *args, **kwargs)

    object.__setattr__(optimizer, "apply_gradients", apply_gradients)
    try:
        yield
    finally:
        object.__delattr__(optimizer, "apply_gradients")


def multi_worker(strategy):
    """Whether ``strategy`` runs collectives across several worker processes
    (``tf.distribute.MultiWorkerMirroredStrategy`` with more than one worker).

    Why private: the strategy says whether it is in multi-worker mode only through
    ``strategy.extended._in_multi_worker_mode()``; the cluster resolver's worker count
    is the public equivalent and is what this reads.

    Example:
        >>> multi_worker(tf.distribute.get_strategy())
        False
    """
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    return sum(len(tasks) for kind, tasks in spec.items() if kind in ("chief", "worker")) > 1


def multi_worker_logs(strategy, logs):
    """A train or test step's ``logs`` shaped so that Keras can reduce them across workers.

    Why: under a multi-worker strategy the TensorFlow trainer reduces every log with
    ``strategy.reduce("MEAN", value, axis=0)``, which TensorFlow rejects for the
    scalars a step returns (tensorflow/tensorflow#72388, keras-team/keras#20585).
    Each scalar becomes a vector of one element: the reduction over axis 0 is
    then the mean over the replicas, a scalar again. Elsewhere ``logs`` are
    returned as they are. ``tests/test_multi_worker.py`` fails if Keras stops
    rejecting the scalars (the workaround can then go).

    Example:
        >>> logs = multi_worker_logs(model.distribute_strategy, super().train_step(data))
    """
    import tensorflow as tf

    if not multi_worker(strategy):
        return logs
    return tf.nest.map_structure(
        lambda v: tf.reshape(v, [1]) if tf.is_tensor(v) and v.shape.rank == 0 else v, logs)


def first_replica_batch(strategy, batch):
    """One replica's part of a distributed ``batch`` (the batch itself when it is not
    distributed).

    Why: before the first step, the TensorFlow trainer builds the model's metrics and
    optimizer on one batch (``Trainer._maybe_symbolic_build``), which it makes by
    reducing the distributed batch with ``strategy.reduce("MEAN", ...)``; across
    workers that reduction fails on the batch's per-replica tensors. Building needs
    shapes and dtypes only, which one replica's part has.

    Example:
        >>> first_replica_batch(strategy, next(iter(distributed_dataset)))
    """
    import tensorflow as tf

    def local(v):
        if isinstance(v, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(v)[0]
        return v

    return tf.nest.map_structure(local, batch)


def symbolic_build(model, iterator=None, data_batch=None):
    """``Trainer._maybe_symbolic_build`` of ``model`` that also works across workers.

    Why: see :func:`first_replica_batch`; the trainer's own method is called unless
    the strategy is multi-worker. The iterator yields ``(step, steps, iterator)``
    tuples (Keras' epoch iterator); the first batch of the first one is built on.

    Example:
        >>> symbolic_build(model, iterator)   # inside the model's override
    """
    import keras

    strategy = model.distribute_strategy
    if not multi_worker(strategy):
        return keras.Model._maybe_symbolic_build(model, iterator=iterator,
                                                 data_batch=data_batch)
    if iterator is not None:
        for _, _, it in iterator:
            data_batch = first_replica_batch(strategy, next(it))
            break
    with strategy.scope():
        model._symbolic_build(data_batch=data_batch)
