"""The exact splitting eigenpairs: every matrix built, then ``numpy.linalg.eigh`` (small nets).

For a neuron ``a = sigma(z)``, ``z = c * (theta . p) + b`` (``p`` the input
patch, ``c`` the frozen BatchNorm scale), the splitting matrix is
``S = E[dL/da * sigma''(z) * c**2 * p p^T]``, summed over spatial positions and
averaged over examples (the compiled loss is a mean over the batch).
:func:`exact_eigenpairs` builds every ``S`` from the per-position coefficient
``g = dL/da * sigma''(z) * c**2`` and the input patches
(``tf.image.extract_patches``), then calls ``numpy.linalg.eigh``.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_split.data import data_utils
from keras_split.estimate.eigenpairs import Eigenpairs, LayerEigenpairs, check_finite
from keras_split.estimate.interpreter import Interpreter, layers_with_signal
from keras_split.estimate.linear import patches, producer_forward

DEFAULT_MAX_EXACT_BYTES = 4 * 2**30


def _matrix_size(graph, name):
    """``(units, fan_in)`` of producer ``name``."""
    kernel = graph.producers[name].layer.kernel
    return int(kernel.shape[-1]), int(np.prod(kernel.shape[:-1]))


class ExactMatrices:
    """The splitting matrices of one batch, ``{layer: [units, d, d]}``, as a compiled function.

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
        self._fn = tf.function(self._batch, reduce_retracing=True)

    def __call__(self, x, y, sw):
        return self._fn(x, y, sw)

    def _batch(self, x, y, sw):
        """``{layer: [units, d, d]}`` on one batch: ``sum_n g_n p_n p_n^T`` per neuron."""
        interp, graph = self.interp, self.graph
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
            layer = graph.producers[name].layer
            rec = recorded[name]
            units = self.sizes[name][0]
            if da is None:
                da = tf.zeros_like(rec["a"])
            g = da * interp.coefficient(name, rec["z"], da.dtype)
            g = tf.reshape(g, [-1, units])
            p = patches(layer, rec["x"])
            out[name] = tf.einsum("nk,nd,ne->kde", g, p, p)
        return out


def _check_memory(sizes, max_bytes):
    """Raises ValueError when the float64 matrices of ``{layer: (units, fan_in)}`` would
    need more than ``max_bytes`` (the message says how much they need)."""
    itemsize = 8  # matrices are accumulated in float64
    need = sum(u * d * d * itemsize for u, d in sizes.values())
    if need > max_bytes:
        detail = ", ".join(
            f"{n}: {u}x{d}x{d}" for n, (u, d) in sizes.items()
        )
        raise ValueError(
            f"The exact splitting matrices would need {need / 2**30:.2f} GiB "
            f"({detail}), more than max_bytes={max_bytes / 2**30:.2f} GiB. Use "
            "method='fast', fewer layers, or a larger max_bytes."
        )


def splitting_matrices(graph, loss_fn, data, layers=None, batch_size=32,
                       max_bytes=DEFAULT_MAX_EXACT_BYTES, verbose=0):
    """Builds the splitting matrix of every neuron, averaged over ``data``.

    Args:
        graph: the model's :class:`~keras_split.graph.channel_graph.ChannelGraph`.
        loss_fn: ``loss_fn(x, y, y_pred, sample_weight) -> scalar`` (a mean over the batch).
        data: a batched dataset or an ``(x, y)`` tuple of arrays.
        layers: producer names (default: all splittable layers).
        batch_size: for array data.
        max_bytes: refuse when the matrices would need more memory than this.
        verbose: 0 silent, 1 progress bar.

    Returns:
        ``{layer_name: float64[units, fan_in, fan_in]}`` (symmetric).

    Raises:
        ValueError: when the matrices would not fit in ``max_bytes`` (the
            message says how much they need), for empty or non-finite data.

    Example:
        >>> s = splitting_matrices(graph, loss_fn, (x, y))["dense"]
    """
    layers = list(graph.splittable_layers if layers is None else layers)
    sizes = {name: _matrix_size(graph, name) for name in layers}
    _check_memory(sizes, max_bytes)
    batch_matrices = ExactMatrices(graph, loss_fn, layers)
    dataset = data_utils.as_dataset(data, batch_size)

    totals = {}
    for name in batch_matrices.layers:
        units, fan_in = sizes[name]
        totals[name] = np.zeros((units, fan_in, fan_in))
    n_batches = n_examples = 0
    progbar = keras.utils.Progbar(None, verbose=verbose, unit_name="batch")
    for batch in dataset:
        x, y, sw = data_utils.unpack(batch)
        n = int(data_utils.batch_size_of(x))
        for name, s in batch_matrices(x, y, sw).items():
            totals[name] += n * s.numpy()  # the loss is a mean over the batch
        n_batches += 1
        n_examples += n
        progbar.update(n_batches)
    if n_batches == 0:
        raise ValueError("data is empty: no batch to estimate splitting matrices from.")
    result = {}
    for name in layers:
        units, fan_in = sizes[name]
        if name not in totals:
            result[name] = np.zeros((units, fan_in, fan_in))
            continue
        s = totals[name] / n_examples
        check_finite(name, s, "splitting matrices")
        result[name] = 0.5 * (s + np.transpose(s, (0, 2, 1)))
    return result


def exact_eigenpairs(graph, loss_fn, data, layers=None, batch_size=32,
                     max_bytes=DEFAULT_MAX_EXACT_BYTES, verbose=0):
    """Builds every splitting matrix and takes its smallest eigenpair with ``numpy.linalg.eigh``.

    Args: as :func:`splitting_matrices`.

    Returns:
        ``{layer_name: Eigenpairs}`` (a LayerEigenpairs whose ``loss`` is None); each
        vector's largest component is positive.

    Raises:
        ValueError: as :func:`splitting_matrices`.

    Example:
        >>> eig = exact_eigenpairs(graph, loss_fn, (x, y))
    """
    matrices = splitting_matrices(graph, loss_fn, data, layers, batch_size, max_bytes, verbose)
    result = LayerEigenpairs()
    for name, s in matrices.items():
        w, v = np.linalg.eigh(s)
        vec = v[:, :, 0]
        idx = np.argmax(np.abs(vec), axis=1)
        vec = vec * np.sign(vec[np.arange(vec.shape[0]), idx])[:, None]
        result[name] = Eigenpairs(w[:, 0], vec, np.zeros(w.shape[0]))
    return result
