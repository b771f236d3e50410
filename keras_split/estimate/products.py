"""Splitting-matrix products ``S v`` of every neuron at once, without building ``S``.

For a neuron ``a = sigma(z)``, ``z = c * (theta . p) + b`` (``p`` the input
patch, ``c`` the frozen BatchNorm scale), the splitting matrix is
``S = E[dL/da * sigma''(z) * c**2 * p p^T]``, summed over spatial positions and
averaged over examples (the compiled loss is a mean over the batch).

An auxiliary activation ``sigma''(z) c**2 (Y . p)(V . p)`` is added to every
neuron at ``Y = 0``; one backward pass gives ``dL/dY = S V`` for all neurons at
once. ``Y . p`` is a zero tensor whose custom gradient is the filter gradient,
so the forward pass costs one extra convolution (``V . p``) per layer, and the
backward pass differentiates only with respect to the ``Y`` slots.

With ``block = k`` every neuron carries ``k`` vectors: the extra convolution has
``k`` times the layer's filters and the auxiliary activation is the sum of the ``k``
terms, so one pass gives ``S v_1 ... S v_k`` for every neuron, for one forward pass
and one backward pass through the network (block eigensolvers).

The model's own layers are untouched: the vector variables live here and exist
only while eigenpairs are estimated, so ordinary training pays nothing.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_split.data import data_utils
from keras_split.estimate.eigenpairs import (LayerEigenpairs, check_finite, inactive_eigenpairs,
                                             rayleigh_eigenpairs)
from keras_split.estimate.interpreter import Interpreter, layers_with_signal
from keras_split.estimate.linear import graph_dtype, linear, producer_forward, zero_slot


class SvProducts:
    """The products ``S V`` of every neuron's splitting matrix with its vector ``v``.

    Args:
        graph: the model's ChannelGraph.
        loss_fn: ``loss_fn(x, y, y_pred, sample_weight) -> scalar``.
        layers: producer names (default: all splittable layers); those whose
            activation has a zero second derivative get no vectors (``active``).
        seed: seed of the random initial unit vectors.
        strategy: a ``tf.distribute.Strategy`` with several replicas: every batch
            is split across them and their ``S v`` are averaged (weighted by
            their examples); the vectors themselves live on the host.
        block: vectors per neuron (>= 1); with ``block > 1`` vectors and
            products are ``[units, block, d]`` arrays instead of ``[units, d]``.

    Example:
        >>> products = SvProducts(graph, loss_fn)
        >>> svs, examples = products.products((x, y))
    """

    def __init__(self, graph, loss_fn, layers=None, seed=0, strategy=None, block=1):
        if isinstance(block, bool) or not isinstance(block, int) or block < 1:
            raise ValueError(f"block must be a positive integer. Received: block={block!r}")
        self.block = block
        self.graph = graph
        self.loss_fn = loss_fn
        self.layers = list(graph.splittable_layers if layers is None else layers)
        self.active = layers_with_signal(graph, self.layers)
        self.seed = seed
        self.interp = Interpreter(graph, self.active)
        rng = np.random.default_rng(seed)
        self.vectors = {}
        for name in self.active:
            shape = tuple(graph.kernel(name).shape)
            shape = shape[:-1] + (shape[-1] * block,)
            v = rng.standard_normal(shape)
            v /= np.sqrt(np.sum(v * v, axis=tuple(range(len(shape) - 1)), keepdims=True))
            dtype = graph.kernel(name).dtype
            self.vectors[name] = keras.Variable(v.astype(dtype), name=f"{name}_split_v",
                                                trainable=True)
        self.loss = None  # the mean loss of the last products pass
        self.strategy = strategy if strategy and strategy.num_replicas_in_sync > 1 else None
        # The graph is static Python (no tensor-dependent control flow): autograph would
        # only add seconds of source conversion to every trace (one per architecture).
        self._sv_fn = tf.function(self._sv_global, reduce_retracing=True, autograph=False)

    def _sv_sum(self, x, y, sw):
        """``n * S v`` and ``n`` times the loss on one (per-replica) batch of ``n`` examples,
        and ``n``."""
        svs, loss = self._sv(x, y, sw)
        n = tf.shape(tf.nest.flatten(x)[0])[0]
        sums = {k: v * tf.cast(n, v.dtype) for k, v in svs.items()}
        return sums, tf.cast(loss, tf.float64) * tf.cast(n, tf.float64), n

    def _sv_packed(self, x, y, sw, names):
        """:meth:`_sv_sum` of one replica as one float64 vector: the sums of ``names`` in
        order, flattened, then the loss sum and the count."""
        sums, loss_sum, n = self._sv_sum(x, y, sw)
        parts = [tf.reshape(tf.cast(sums[k], tf.float64), [-1]) for k in names]
        return tf.concat(parts + [tf.reshape(loss_sum, [1]),
                                  tf.reshape(tf.cast(n, tf.float64), [1])], axis=0)

    def _sv_global(self, x, y, sw):
        """``S v`` of every active layer and the loss on a (possibly distributed) batch,
        and its size."""
        if self.strategy is None:
            sums, loss_sum, n = self._sv_sum(x, y, sw)
        else:
            # One all-reduce per batch: every layer's sums, the loss and the count packed
            # into one float64 vector (across workers each collective has its latency).
            names = list(self.active)
            packed = self.strategy.run(self._sv_packed, args=(x, y, sw, names))
            total = self.strategy.reduce(tf.distribute.ReduceOp.SUM, packed, axis=None)
            sums, start = {}, 0
            for k in names:
                shape = self.vectors[k].shape
                size = int(np.prod(shape))
                sums[k] = tf.cast(tf.reshape(total[start:start + size], shape),
                                  self.vectors[k].dtype)
                start += size
            loss_sum, n = total[start], tf.cast(tf.round(total[start + 1]), tf.int32)
        means = {k: v / tf.cast(n, v.dtype) for k, v in sums.items()}
        return means, loss_sum / tf.cast(n, tf.float64), n

    def _batches(self, dataset):
        """``dataset``'s batches, split across the replicas of a multi-replica strategy."""
        if self.strategy is None:
            return dataset
        return self.strategy.experimental_distribute_dataset(dataset)

    def _sv(self, x, y, sw):
        """``S V`` of every active layer on one batch (the Y-slot gradients), and the loss
        (the slots are zero: the model's own loss)."""
        interp, vectors = self.interp, self.vectors
        slots = {
            name: tf.zeros(vectors[name].shape, dtype=graph_dtype(self.graph, name))
            for name in self.active
        }
        aux = {}
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(list(slots.values()))

            def on_producer(name, layer, x_):
                v = tf.cast(vectors[name].value, x_.dtype)
                w = tf.stop_gradient(linear(layer, x_, v))
                u = zero_slot(layer, x_, slots[name], w)
                aux[name] = (u, w)
                if interp.chains[name].fused:
                    return producer_forward(layer, x_)
                return None, layer(x_, training=False)

            def on_point(name, z, a):
                u, w = aux[name]
                term = u * w
                if self.block > 1:   # columns unit * block + j: sum the block's terms
                    term = tf.reduce_sum(tf.reshape(
                        term, tf.concat([tf.shape(a), [self.block]], axis=0)), axis=-1)
                return a + interp.coefficient(name, z, a.dtype) * term

            y_pred = interp.run(x, on_producer, on_point)
            loss = self.loss_fn(x, y, y_pred, sw)
        names = list(slots)
        grads = tape.gradient(loss, [slots[n] for n in names])
        svs = {
            n: (g if g is not None else tf.zeros_like(slots[n]))
            for n, g in zip(names, grads)
        }
        return svs, loss

    def products(self, data, batch_size=32,
                 empty="data is empty: no batch to estimate eigenpairs from."):
        """``S V`` of every active layer averaged over all of ``data``, as ``(units, d)``.

        Args:
            data: a batched dataset or an ``(x, y)`` tuple of arrays.
            batch_size: for array data.
            empty: the error message for data without a batch.

        Returns:
            ``({layer: float64[units, d]}, examples)``: row ``i`` is ``S_i v_i``
            (``[units, block, d]`` with ``block > 1``).
            The mean loss over ``data`` (the same forward pass) is left in
            :attr:`loss`.

        Raises:
            ValueError: for empty data or non-finite products (naming the layer).
        """
        dataset = data_utils.as_dataset(data, batch_size)
        totals = {n: 0.0 for n in self.active}
        count, loss_total = 0, 0.0
        for batch in self._batches(dataset):
            x, y, sw = data_utils.unpack(batch)
            svs, loss, n = self._sv_fn(x, y, sw)
            n = int(n)
            for name, sv in svs.items():
                totals[name] = totals[name] + n * sv.numpy().astype(np.float64)
            loss_total += n * float(loss)
            count += n
        if count == 0 and self.active:
            raise ValueError(empty)
        self.loss = loss_total / count if count else None
        out = {}
        for name in self.active:
            out[name] = self._rows(totals[name] / count)
            check_finite(name, out[name], "splitting products S v")
        return out, count

    def _rows(self, array):
        """A kernel-shaped array (``units * block`` columns) as ``[units, (block,) d]``."""
        columns = int(np.shape(array)[-1])
        rows = np.reshape(array, (-1, columns)).T
        if self.block == 1:
            return rows
        return rows.reshape(columns // self.block, self.block, -1)

    def get_vectors(self):
        """The current vectors, ``{layer: float64[units, d]}`` (rows not normalised;
        ``[units, block, d]`` with ``block > 1``)."""
        return {name: self._rows(keras.ops.convert_to_numpy(var).astype(np.float64))
                for name, var in self.vectors.items()}

    def eigenpairs(self, vectors, svs):
        """Every layer's eigenpairs from ``{layer: [units, d]}`` vectors and their products
        (``lambda = v^T S v``); layers without a splitting signal get zero eigenvalues.

        Returns:
            A :class:`LayerEigenpairs` whose ``loss`` is that of the last products pass.
        """
        result = LayerEigenpairs(loss=self.loss)
        for name in self.layers:
            if name in self.vectors:
                result[name] = rayleigh_eigenpairs(vectors[name], svs[name])
            else:
                result[name] = inactive_eigenpairs(self.graph.kernel(name), self.seed)
        return result

    def set_vectors(self, vectors):
        """Sets the vectors from ``{layer: [units, d]}`` (``[units, block, d]`` with
        ``block > 1``), for products with any ``V``."""
        for name, v in vectors.items():
            var = self.vectors[name]
            v = np.asarray(v)
            v = v.reshape(-1, v.shape[-1])   # rows unit * block + j
            var.assign(v.T.reshape(var.shape).astype(var.dtype))
