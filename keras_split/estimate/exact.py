"""The exact splitting eigenpairs: every matrix built, then ``numpy.linalg.eigh`` (small nets).

For a neuron ``a = sigma(z)``, ``z = c * (theta . p) + b`` (``p`` the input
patch, ``c`` the frozen BatchNorm scale), the splitting matrix is
``S = E[dL/da * sigma''(z) * c**2 * p p^T]``, summed over spatial positions and
averaged over examples (the compiled loss is a mean over the batch).
:func:`exact_eigenpairs` builds every ``S`` from the per-position coefficient
``g = dL/da * sigma''(z) * c**2`` and the input patches
(``tf.image.extract_patches``), then calls ``numpy.linalg.eigh``.

Memory: the float64 matrices, plus one sub-batch, one contraction chunk and ``eigh``
on a few matrices at a time, stay within ``max_bytes`` (``DEFAULT_MAX_EXACT_BYTES``,
4 GiB); see :mod:`keras_split.estimate.exact_memory`.
"""

import logging

import keras
import numpy as np
import tensorflow as tf

from keras_split.data import data_utils
from keras_split.estimate import exact_memory
from keras_split.estimate.eigenpairs import Eigenpairs, LayerEigenpairs, check_finite
from keras_split.estimate.interpreter import Interpreter, layers_with_signal
from keras_split.estimate.linear import graph_dtype, patches, producer_forward, spread

logger = logging.getLogger(__name__)

DEFAULT_MAX_EXACT_BYTES = 4 * 2**30


def _matrix_size(graph, name):
    """``(units, fan_in)`` of producer ``name``."""
    kernel = graph.kernel(name)
    return int(kernel.shape[-1]), int(np.prod(kernel.shape[:-1]))


def _contract(g, p, bounds, scale):
    """``scale * sum_n g[n, k] p[n] p[n]^T`` for the neurons ``k0:k1`` over the
    positions ``n0:n1`` (``bounds = [k0, k1, n0, n1]``): ``[k1 - k0, d, d]``."""
    k0, k1, n0, n1 = tf.unstack(bounds)
    g = tf.transpose(g[n0:n1, k0:k1]) * tf.cast(scale, g.dtype)
    p = p[n0:n1]
    w = tf.transpose(p)[None] * g[:, None, :]
    return tf.matmul(w, p[None])


class ExactMatrices:
    """The splitting matrices of one batch, ``{layer: [units, d, d]}``, as compiled functions.

    :meth:`factors` gives the coefficients ``g`` and the patches ``p`` of a batch;
    :meth:`contract` builds a chunk of the matrices from them.

    Args:
        graph: the model's ChannelGraph.
        loss_fn: ``loss_fn(x, y, y_pred, sample_weight) -> scalar``.
        layers: producer names (default: all splittable layers); those whose
            activation has a zero second derivative are left out.

    Example:
        >>> mats = ExactMatrices(graph, loss_fn)(x, y, None)
    """

    def __init__(self, graph, loss_fn, layers=None):
        self.graph = graph
        self.loss_fn = loss_fn
        layers = graph.splittable_layers if layers is None else layers
        self.layers = layers_with_signal(graph, layers)
        self.sizes = {n: _matrix_size(graph, n) for n in self.layers}
        self.interp = Interpreter(graph, self.layers)
        self._factors_fn = tf.function(self._factors, reduce_retracing=True)
        self._contract_fns = {}

    def __call__(self, x, y, sw):
        """``{layer: [units, d, d]}`` of one batch, each in one contraction (no memory cap)."""
        out = {}
        for name, (g, p) in self.factors(x, y, sw).items():
            bounds = tf.constant([0, g.shape[1], 0, g.shape[0]])
            out[name] = self.contract(g, p, bounds, 1.0)
        return out

    def factors(self, x, y, sw):
        """``{layer: (g[positions, units], p[positions, fan_in])}`` of one batch."""
        return self._factors_fn(x, y, sw)

    def contract(self, g, p, bounds, scale):
        """``scale * sum_n g[n, k] p[n] p[n]^T`` over the chunk ``bounds = [k0, k1, n0, n1]``."""
        fn = self._contract_fns.get(g.dtype)
        if fn is None:  # one trace for every layer and chunk
            spec = tf.TensorSpec([None, None], g.dtype)
            signature = [spec, spec, tf.TensorSpec([4], tf.int32), tf.TensorSpec([], tf.float64)]
            fn = self._contract_fns[g.dtype] = tf.function(_contract, input_signature=signature)
        return fn(g, p, bounds, tf.constant(scale, tf.float64))

    def example_bytes(self, x, y, sw):
        """An upper bound of the bytes :meth:`factors` holds per example: every tensor it
        makes, traced on the batch's first example. Then traces it for any batch size."""
        batch = (x, y, sw)
        first = [_rows(t, 0, 1) for t in batch]
        traced = exact_memory.traced_bytes(self._factors_fn.get_concrete_function(*first))
        specs = [None if t is None else tf.nest.map_structure(
            lambda a: tf.TensorSpec([None, *a.shape[1:]], a.dtype), t) for t in batch]
        self._factors_fn.get_concrete_function(*specs)
        return traced

    def _factors(self, x, y, sw):
        """``{layer: (g, p)}`` on one batch: ``S_k = sum_n g[n, k] p[n] p[n]^T``."""
        interp = self.interp
        recorded = {}

        def on_producer(name, layer, x_):
            recorded.setdefault(name, {})["x"] = x_
            if interp.chains[name].fused:
                return producer_forward(layer, x_)
            return None, layer(x_, training=False)

        with tf.GradientTape(watch_accessed_variables=False) as tape:
            def on_point(name, z, a):
                tape.watch(a)
                recorded[name]["z"], recorded[name]["a"] = z, a
                return a

            y_pred = interp.run(x, on_producer, on_point)
            loss = self.loss_fn(x, y, y_pred, sw)
        names = list(recorded)
        grads = tape.gradient(loss, [recorded[n]["a"] for n in names])
        out = {}
        for name, da in zip(names, grads):
            rec = recorded[name]
            if da is None:
                da = tf.zeros_like(rec["a"])
            g = da * interp.coefficient(name, rec["z"], da.dtype)
            g = tf.reshape(g, [-1, self.sizes[name][0]])
            layer = self.graph.producers[name].layer
            out[name] = (spread(layer, g), patches(layer, rec["x"]))
        return out


def memory_plan(graph, layers, max_bytes):
    """How the exact matrices of ``layers`` are chunked within ``max_bytes``.

    Args:
        graph: the model's ChannelGraph.
        layers: producer names.
        max_bytes: the memory cap.

    Returns:
        The :class:`~keras_split.estimate.exact_memory.MemoryPlan` of ``layers``.

    Example:
        >>> memory_plan(graph, graph.splittable_layers, 2 ** 30).room > 0
        True
    """
    sizes = {name: _matrix_size(graph, name) for name in layers}
    itemsizes = {name: tf.as_dtype(graph_dtype(graph, name)).size
                 for name in layers_with_signal(graph, layers)}
    return exact_memory.MemoryPlan(sizes, itemsizes, max_bytes)


def _rows(structure, start, stop):
    """Examples ``start:stop`` of a (nested) batch tensor, or None."""
    return None if structure is None else tf.nest.map_structure(lambda t: t[start:stop], structure)


def _add_part(batch_matrices, plan, totals, part, n):
    """Adds ``n`` times the matrices of the sub-batch ``part`` (``(x, y, sw)``) to ``totals``."""
    for name, (g, p) in batch_matrices.factors(*part).items():
        for bounds in plan.chunks(name, int(g.shape[0]), n):
            s = batch_matrices.contract(g, p, tf.constant(bounds), float(n))
            totals[name][bounds[0]:bounds[1]] += s.numpy()  # the loss is a mean over the part


def _add_batch(batch_matrices, plan, totals, batch):
    """Adds a batch to ``totals``, a sub-batch of ``plan.examples`` at a time; returns its size."""
    x, y, sw = data_utils.unpack(batch)
    n = int(data_utils.batch_size_of(x))
    if plan.examples is None:
        plan.fit_examples(batch_matrices.example_bytes(x, y, sw), n)
        logger.debug("Exact splitting matrices: %.2f GiB in float64, sub-batches of at most "
                     "%d examples (%.1f MiB each), within max_bytes=%.2f GiB.",
                     plan.matrices / 2**30, plan.examples, plan.example_bytes / 2**20,
                     plan.max_bytes / 2**30)
    if n <= plan.examples:
        _add_part(batch_matrices, plan, totals, (x, y, sw), n)
        return n
    for start in range(0, n, plan.examples):
        stop = min(start + plan.examples, n)
        part = tuple(_rows(t, start, stop) for t in (x, y, sw))
        _add_part(batch_matrices, plan, totals, part, stop - start)
    return n


def _finish(totals, sizes, n_examples):
    """The mean matrices, checked and symmetrised in place, one neuron at a time."""
    result = {}
    for name, (units, fan_in) in sizes.items():
        s = totals.get(name)
        if s is None:
            result[name] = np.zeros((units, fan_in, fan_in))
            continue
        s /= n_examples
        for k in range(units):
            check_finite(name, s[k], "splitting matrices")
            s[k] = 0.5 * (s[k] + s[k].T)
        result[name] = s
    return result


def _build(graph, loss_fn, data, layers, batch_size, plan, verbose):
    """``{layer: float64[units, fan_in, fan_in]}`` averaged over ``data``, within ``plan``."""
    batch_matrices = ExactMatrices(graph, loss_fn, layers)
    dataset = data_utils.as_dataset(data, batch_size)
    totals = {name: np.zeros((plan.sizes[name][0],) + (plan.sizes[name][1],) * 2)
              for name in batch_matrices.layers}
    n_batches = n_examples = 0
    progbar = keras.utils.Progbar(None, verbose=verbose, unit_name="batch")
    for batch in dataset:
        n_examples += _add_batch(batch_matrices, plan, totals, batch)
        n_batches += 1
        progbar.update(n_batches)
    if n_batches == 0:
        raise ValueError("data is empty: no batch to estimate splitting matrices from.")
    return _finish(totals, plan.sizes, n_examples)


def splitting_matrices(graph, loss_fn, data, layers=None, batch_size=32,
                       max_bytes=DEFAULT_MAX_EXACT_BYTES, verbose=0):
    """Builds the splitting matrix of every neuron, averaged over ``data``.

    The float64 matrices stay in memory while they are built; the tensors of one
    sub-batch and of one contraction chunk (a few neurons over some positions) come on
    top of them. Sub-batches and chunks are as large as ``max_bytes`` allows, so
    the whole stays within it; the result does not depend on them.

    Args:
        graph: the model's :class:`~keras_split.graph.channel_graph.ChannelGraph`.
        loss_fn: ``loss_fn(x, y, y_pred, sample_weight) -> scalar`` (a mean over the batch).
        data: a batched dataset or an ``(x, y)`` tuple of arrays.
        layers: producer names (default: all splittable layers).
        batch_size: for array data.
        max_bytes: the cap on the method's memory (default ``DEFAULT_MAX_EXACT_BYTES``,
            4 GiB; ``GrowingModel.splitting_eigenpairs`` passes it on): the matrices,
            the tensors of one sub-batch, one contraction chunk, ``eigh``'s output and
            ``exact_memory.RUNTIME_BYTES`` (64 MiB) for TensorFlow's own memory. The
            data and the model are not in it.
        verbose: 0 silent, 1 progress bar.

    Returns:
        ``{layer_name: float64[units, fan_in, fan_in]}`` (symmetric).

    Raises:
        ValueError: when the matrices and the smallest working set (one example, one
            neuron at a time) need more than ``max_bytes`` (raised before any work;
            the message says how much they need), for empty or non-finite data.

    Example:
        >>> s = splitting_matrices(graph, loss_fn, (x, y))["dense"]
    """
    layers = list(graph.splittable_layers if layers is None else layers)
    plan = memory_plan(graph, layers, max_bytes)
    return _build(graph, loss_fn, data, layers, batch_size, plan, verbose)


def _smallest(s):
    """The smallest eigenvalues of the matrices ``s`` and their eigenvectors."""
    w, v = np.linalg.eigh(s)
    return w[:, 0], v[:, :, 0].copy()


def exact_eigenpairs(graph, loss_fn, data, layers=None, batch_size=32,
                     max_bytes=DEFAULT_MAX_EXACT_BYTES, verbose=0):
    """Builds every splitting matrix and takes its smallest eigenpair with ``numpy.linalg.eigh``.

    ``eigh`` takes as many matrices at a time as ``max_bytes`` allows.

    Args: as :func:`splitting_matrices`.

    Returns:
        ``{layer_name: Eigenpairs}`` (a LayerEigenpairs whose ``loss`` is None); each
        vector's largest component is positive.

    Raises:
        ValueError: as :func:`splitting_matrices`.

    Example:
        >>> eig = exact_eigenpairs(graph, loss_fn, (x, y))
    """
    layers = list(graph.splittable_layers if layers is None else layers)
    plan = memory_plan(graph, layers, max_bytes)
    matrices = _build(graph, loss_fn, data, layers, batch_size, plan, verbose)
    result = LayerEigenpairs()
    for name in list(matrices):
        s = matrices.pop(name)  # freed once its eigenpairs are taken
        step = plan.eigh_units(name)
        parts = [_smallest(s[k:k + step]) for k in range(0, len(s), step)]
        values = np.concatenate([w for w, _ in parts])
        vec = np.concatenate([v for _, v in parts])
        idx = np.argmax(np.abs(vec), axis=1)
        vec = vec * np.sign(vec[np.arange(vec.shape[0]), idx])[:, None]
        result[name] = Eigenpairs(values, vec, np.zeros(values.shape[0]))
    return result
