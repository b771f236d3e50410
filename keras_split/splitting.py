"""Splitting eigenpairs: the exact reference and the fast auxiliary-activation method.

For a neuron ``a = sigma(z)``, ``z = c * (theta . p) + b`` (``p`` the input
patch, ``c`` the frozen BatchNorm scale), the splitting matrix is
``S = E[dL/da * sigma''(z) * c**2 * p p^T]``, summed over spatial positions and
averaged over examples (the compiled loss is a mean over the batch).

* :func:`exact_eigenpairs` builds every ``S`` from the per-position
  coefficient ``g = dL/da * sigma''(z) * c**2`` and the input patches
  (``tf.image.extract_patches``), then calls ``numpy.linalg.eigh``.
* :func:`fast_eigenpairs` never builds ``S``. An auxiliary activation
  ``sigma''(z) c**2 (Y . p)(V . p)`` is added to every neuron at ``Y = 0``; one
  backward pass gives ``dL/dY = S V`` for all neurons at once. ``Y . p`` is a
  zero tensor whose custom gradient is the filter gradient, so the forward
  pass costs one extra convolution (``V . p``) per layer, and the backward pass
  differentiates only with respect to the ``Y`` slots. The Rayleigh quotient
  ``v^T S v / v^T v`` is minimised with RMSprop over mini-batches (cosine
  learning-rate decay to 1 %), eigenvectors re-normalised after every step. The eigenvalue is then measured
  with the final ``v`` on evaluation batches: ``lambda = v^T (S v)``, with
  residual ``||S v - lambda v||``.

The model's own layers are untouched: the eigenvector variables live here and
exist only while eigenpairs are estimated, so ordinary training pays nothing.
"""

import logging

import keras
import numpy as np
import tensorflow as tf

from keras_split import compat, data_utils
from keras_split.eigenpairs import Eigenpairs, LayerEigenpairs

logger = logging.getLogger(__name__)

DEFAULT_MAX_EXACT_BYTES = 4 * 2**30


# --------------------------------------------------------------------- linear ops
def linear(layer, x, kernel):
    """``kernel . p`` for every patch ``p`` of ``x``: the layer's op without bias."""
    if isinstance(layer, keras.layers.Dense):
        return tf.tensordot(x, kernel, axes=[[x.shape.rank - 1], [0]])
    return layer.convolution_op(x, kernel)


def _conv_args(layer):
    strides = [1, *layer.strides, 1]
    dilations = [1, *layer.dilation_rate, 1]
    return strides, dilations, layer.padding.upper()


def filter_gradient(layer, x, dout, kernel_shape):
    """d/dK of ``sum(dout * linear(layer, x, K))``: the gradient reaching the Y slot."""
    if isinstance(layer, keras.layers.Dense):
        fan_in = kernel_shape[0]
        xf = tf.reshape(x, [-1, fan_in])
        df = tf.reshape(dout, [-1, kernel_shape[-1]])
        return tf.matmul(xf, df, transpose_a=True)
    strides, dilations, padding = _conv_args(layer)
    return tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=tf.constant(kernel_shape, tf.int32),
        out_backprop=dout, strides=strides, padding=padding,
        dilations=dilations,
    )


def patches(layer, x):
    """The input patches of every output position, ``[positions, fan_in]``."""
    if isinstance(layer, keras.layers.Dense):
        return tf.reshape(x, [-1, x.shape[-1]])
    kh, kw = layer.kernel_size
    strides, dilations, padding = _conv_args(layer)
    p = tf.image.extract_patches(
        x, sizes=[1, kh, kw, 1], strides=strides, rates=dilations, padding=padding
    )
    return tf.reshape(p, [-1, kh * kw * x.shape[-1]])


def _zero_slot(layer, x, y, like):
    """``linear(layer, x, y)`` at ``y = 0`` without computing it: zeros with the right gradient."""
    kernel_shape = y.shape.as_list()

    @tf.custom_gradient
    def slot(y_):
        def grad(dout):
            return filter_gradient(layer, x, dout, kernel_shape)

        return tf.zeros_like(like), grad

    return slot(y)


# -------------------------------------------------------------------- interpreter
class _Interpreter:
    """Runs a functional model layer by layer in inference mode, with splitting hooks."""

    def __init__(self, graph, layers):
        self.graph = graph
        self.chains = {name: graph.chains[name] for name in layers}
        self.point_of = {}
        for name, chain in self.chains.items():
            self.point_of.setdefault(chain.point.name, []).append(name)
        self.scale = {
            name: chain.scale() for name, chain in self.chains.items()
        }

    def coefficient(self, name, z, dtype):
        chain = self.chains[name]
        c2 = tf.constant(self.scale[name] ** 2, dtype=dtype)
        return chain.activation.second_derivative(z) * c2

    def run(self, inputs, on_producer, on_point):
        """Returns the model outputs.

        ``on_producer(name, layer, x)`` returns ``(z_or_None, out)``; a non-None
        ``z`` means the producer closes its own neuron (fused activation).
        ``on_point(name, z, a)`` returns the tensor that replaces ``a``.
        """
        model = self.graph.model
        tensors = {}
        for ref, value in zip(model.inputs, keras.tree.flatten(inputs)):
            tensors[id(ref)] = value
        for n in self.graph.nodes:
            layer = n.layer
            args, kwargs = compat.call_arguments(n.node, tensors)
            kwargs = dict(kwargs)
            if isinstance(layer, keras.layers.Layer):   # op nodes take no training flag
                kwargs["training"] = False
            if layer.name in self.chains:
                x = args[0]
                z, out = on_producer(layer.name, layer, x)
                if z is not None:
                    out = on_point(layer.name, z, out)
            else:
                out = layer(*args, **kwargs)
            for name in self.point_of.get(layer.name, []):
                chain = self.chains[name]
                if chain.fused:
                    continue
                linear_end = chain.point is chain.producer or chain.point is chain.batch_norm
                out = on_point(name, out if linear_end else args[0], out)
            for ref, value in zip(n.outputs, keras.tree.flatten(out)):
                tensors[id(ref)] = value
        outs = [tensors[id(t)] for t in model.outputs]
        return outs[0] if len(outs) == 1 else outs


def _producer_forward(layer, x):
    """``(z, a)`` of a producer whose activation is fused: ``z = K . p + b``, ``a = sigma(z)``."""
    z = linear(layer, x, layer.kernel)
    if layer.use_bias:
        z = z + layer.bias
    return z, layer.activation(z)


def _matrix_size(graph, name):
    """``(units, fan_in)`` of producer ``name``."""
    kernel = graph.producers[name].layer.kernel
    return int(kernel.shape[-1]), int(np.prod(kernel.shape[:-1]))


def graph_dtype(graph, name):
    """The compute dtype of producer ``name``."""
    return graph.producers[name].layer.compute_dtype


def _check_finite(name, tensor, what):
    if not np.all(np.isfinite(tensor)):
        raise ValueError(
            f"Non-finite values in the {what} of layer '{name}' during eigen "
            "estimation; check the data, the loss and the learning rate."
        )


def _layers_with_signal(graph, layers):
    active = [n for n in layers if not graph.chains[n].activation.is_zero]
    return active


def inactive_eigenpairs(layer, seed):
    """Eigenpairs of a layer without a splitting signal (``sigma'' = 0``): zero
    eigenvalues and seeded random unit vectors."""
    units, fan_in = int(layer.kernel.shape[-1]), int(np.prod(layer.kernel.shape[:-1]))
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((units, fan_in))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return Eigenpairs(np.zeros(units), v, np.zeros(units))


def rayleigh_eigenpairs(v, sv):
    """Eigenpairs from vectors ``v`` and their products ``S v`` (both ``[units, d]``).

    ``v`` is normalised; ``lambda = v^T S v`` and the residual ``||S v - lambda v||``.
    """
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    lam = np.sum(v * sv, axis=1)
    return Eigenpairs(lam, v, np.linalg.norm(sv - lam[:, None] * v, axis=1))


# ------------------------------------------------------------------------- exact
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
        self.layers = _layers_with_signal(graph, layers)
        self.sizes = {n: _matrix_size(graph, n) for n in self.layers}
        self.interp = _Interpreter(graph, self.layers)
        self._fn = tf.function(self._batch, reduce_retracing=True)

    def __call__(self, x, y, sw):
        return self._fn(x, y, sw)

    def _batch(self, x, y, sw):
        interp, graph = self.interp, self.graph
        recorded = {}

        def on_producer(name, layer, x_):
            recorded.setdefault(name, {})["x"] = x_
            if interp.chains[name].fused:
                return _producer_forward(layer, x_)
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


def splitting_matrices(graph, loss_fn, data, layers=None, batch_size=32,
                       max_bytes=DEFAULT_MAX_EXACT_BYTES, verbose=0):
    """Builds the splitting matrix of every neuron, averaged over ``data``.

    Args:
        graph: the model's :class:`~keras_split.channel_graph.ChannelGraph`.
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
    itemsize = 8  # matrices are accumulated in float64
    sizes = {name: _matrix_size(graph, name) for name in layers}
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
        _check_finite(name, s, "splitting matrices")
        result[name] = 0.5 * (s + np.transpose(s, (0, 2, 1)))
    return result


def exact_eigenpairs(graph, loss_fn, data, layers=None, batch_size=32,
                     max_bytes=DEFAULT_MAX_EXACT_BYTES, verbose=0):
    """Builds every splitting matrix and takes its smallest eigenpair with ``numpy.linalg.eigh``.

    Args: as :func:`splitting_matrices`.

    Returns:
        ``{layer_name: Eigenpairs}``; each vector's largest component is positive.

    Raises:
        ValueError: as :func:`splitting_matrices`.

    Example:
        >>> eig = exact_eigenpairs(graph, loss_fn, (x, y))
    """
    matrices = splitting_matrices(graph, loss_fn, data, layers, batch_size, max_bytes, verbose)
    result = {}
    for name, s in matrices.items():
        w, v = np.linalg.eigh(s)
        vec = v[:, :, 0]
        idx = np.argmax(np.abs(vec), axis=1)
        vec = vec * np.sign(vec[np.arange(vec.shape[0]), idx])[:, None]
        result[name] = Eigenpairs(w[:, 0], vec, np.zeros(w.shape[0]))
    return result


# -------------------------------------------------------------------------- fast
class FastEigenSolver:
    """Stochastic minimisation of the Rayleigh quotient of every neuron at once.

    Args:
        graph: the model's ChannelGraph.
        loss_fn: ``loss_fn(x, y, y_pred, sample_weight) -> scalar``.
        layers: producer names (default: all splittable layers).
        learning_rate: RMSprop step size on the unit eigenvectors.
        seed: seed of the random initial eigenvectors.
        strategy: a ``tf.distribute.Strategy`` with several replicas: every batch
            is split across them and their ``S v`` are averaged (weighted by
            their examples); the eigenvectors themselves live on the host.

    Example:
        >>> solver = FastEigenSolver(graph, loss_fn)
        >>> eig = solver.fit(dataset, epochs=3).evaluate(dataset)
    """

    def __init__(self, graph, loss_fn, layers=None, learning_rate=0.01, seed=0, strategy=None):
        if not (isinstance(learning_rate, (int, float)) and np.isfinite(learning_rate)
                and learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}.")
        self.graph = graph
        self.loss_fn = loss_fn
        self.layers = list(graph.splittable_layers if layers is None else layers)
        self.active = _layers_with_signal(graph, self.layers)
        self.seed = seed
        self.learning_rate = float(learning_rate)
        self.interp = _Interpreter(graph, self.active)
        rng = np.random.default_rng(seed)
        self.vectors = {}
        for name in self.active:
            shape = tuple(graph.producers[name].layer.kernel.shape)
            v = rng.standard_normal(shape)
            v /= np.sqrt(np.sum(v * v, axis=tuple(range(len(shape) - 1)), keepdims=True))
            dtype = graph.producers[name].layer.kernel.dtype
            self.vectors[name] = keras.Variable(v.astype(dtype), name=f"{name}_split_v",
                                                trainable=True)
        self.optimizer = keras.optimizers.RMSprop(learning_rate=learning_rate)
        self.loss = None  # the mean loss of the last products pass
        self.strategy = strategy if strategy and strategy.num_replicas_in_sync > 1 else None
        # The graph is static Python (no tensor-dependent control flow): autograph would
        # only add seconds of source conversion to every trace (one per architecture).
        self._sv_fn = tf.function(self._sv_global, reduce_retracing=True, autograph=False)
        self._step_fn = tf.function(self._step, reduce_retracing=True)

    def _sv_sum(self, x, y, sw):
        """``n * S v`` and ``n`` times the loss on one (per-replica) batch of ``n`` examples,
        and ``n``."""
        svs, loss = self._sv(x, y, sw)
        n = tf.shape(tf.nest.flatten(x)[0])[0]
        sums = {k: v * tf.cast(n, v.dtype) for k, v in svs.items()}
        return sums, tf.cast(loss, tf.float64) * tf.cast(n, tf.float64), n

    def _sv_global(self, x, y, sw):
        """``S v`` of every active layer and the loss on a (possibly distributed) batch,
        and its size."""
        if self.strategy is None:
            sums, loss_sum, n = self._sv_sum(x, y, sw)
        else:
            per_sums, per_loss, per_n = self.strategy.run(self._sv_sum, args=(x, y, sw))
            total = tf.distribute.ReduceOp.SUM
            sums = {k: self.strategy.reduce(total, v, axis=None) for k, v in per_sums.items()}
            loss_sum = self.strategy.reduce(total, per_loss, axis=None)
            n = self.strategy.reduce(total, per_n, axis=None)
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
                u = _zero_slot(layer, x_, slots[name], w)
                aux[name] = (u, w)
                if interp.chains[name].fused:
                    return _producer_forward(layer, x_)
                return None, layer(x_, training=False)

            def on_point(name, z, a):
                u, w = aux[name]
                return a + interp.coefficient(name, z, a.dtype) * u * w

            y_pred = interp.run(x, on_producer, on_point)
            loss = self.loss_fn(x, y, y_pred, sw)
        names = list(slots)
        grads = tape.gradient(loss, [slots[n] for n in names])
        svs = {
            n: (g if g is not None else tf.zeros_like(slots[n]))
            for n, g in zip(names, grads)
        }
        return svs, loss

    def _learning_rate(self, step, total):
        """Cosine decay from ``learning_rate`` to 1 % of it over the run."""
        progress = min(step / max(total - 1, 1), 1.0)
        return self.learning_rate * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * progress)))

    @staticmethod
    def _rayleigh(v, sv):
        """``lambda = v^T S v`` and the Rayleigh gradient ``S v - lambda v``, relative to ``||S v||``.

        Dividing by ``||S v||`` makes every neuron's step independent of the scale
        of its matrix (splitting matrices of different layers differ by orders of
        magnitude), so RMSprop's epsilon never stalls a neuron with a tiny ``S``.
        """
        axes = list(range(len(v.shape) - 1))
        lam = tf.reduce_sum(v * sv, axis=axes)
        norm = tf.sqrt(tf.reduce_sum(tf.square(sv), axis=axes))
        tiny = tf.constant(np.finfo(v.dtype.as_numpy_dtype).tiny, v.dtype)
        return lam, (sv - lam * v) / (norm + tiny)

    def _step(self, x, y, sw):
        svs, _, _ = self._sv_global(x, y, sw)
        grads, finite = [], []
        for name in self.active:
            v = self.vectors[name].value
            _, g = self._rayleigh(v, svs[name])
            grads.append(g)
            finite.append(tf.reduce_all(tf.math.is_finite(g)))
        self.optimizer.apply_gradients(zip(grads, [self.vectors[n] for n in self.active]))
        for name in self.active:
            var = self.vectors[name]
            axes = list(range(len(var.shape) - 1))
            var.assign(var.value / tf.sqrt(tf.reduce_sum(tf.square(var.value), axis=axes)))
        return tf.stack(finite) if finite else tf.constant([], tf.bool)

    def fit(self, data, epochs=5, batch_size=32, verbose=0):
        """Runs ``epochs`` passes of RMSprop over ``data``. Returns ``self``.

        Raises:
            ValueError: for empty data or a non-finite gradient (naming the layer).
        """
        if not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}.")
        if not self.active:
            return self
        dataset = data_utils.as_dataset(data, batch_size)
        steps_per_epoch = int(dataset.cardinality())
        if steps_per_epoch < 1:
            steps_per_epoch = None  # unknown until the first epoch ends
        step = 0
        for epoch in range(int(epochs)):
            progbar = keras.utils.Progbar(steps_per_epoch, verbose=verbose, unit_name="batch")
            steps = 0
            for batch in self._batches(dataset):
                if steps_per_epoch:
                    self.optimizer.learning_rate.assign(
                        self._learning_rate(step, epochs * steps_per_epoch))
                x, y, sw = data_utils.unpack(batch)
                finite = self._step_fn(x, y, sw).numpy()
                if not finite.all():
                    bad = self.active[int(np.argmin(finite))]
                    raise ValueError(
                        f"Non-finite splitting gradient in layer '{bad}' during "
                        "eigen estimation; check the data, the loss and the model."
                    )
                steps += 1
                step += 1
                progbar.update(steps)
            if steps == 0:
                raise ValueError("data is empty: no batch to estimate eigenpairs from.")
            steps_per_epoch = steps
            logger.debug("fast eigen estimation: epoch %d/%d done", epoch + 1, epochs)
        return self

    def products(self, data, batch_size=32,
                 empty="data is empty: no batch to estimate eigenpairs from."):
        """``S V`` of every active layer averaged over all of ``data``, as ``(units, d)``.

        Args:
            data: a batched dataset or an ``(x, y)`` tuple of arrays.
            batch_size: for array data.
            empty: the error message for data without a batch.

        Returns:
            ``({layer: float64[units, d]}, examples)``: row ``i`` is ``S_i v_i``.
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
            units = int(self.vectors[name].shape[-1])
            out[name] = (totals[name] / count).reshape(-1, units).T
            _check_finite(name, out[name], "splitting products S v")
        return out, count

    def get_vectors(self):
        """The current vectors, ``{layer: float64[units, d]}`` (rows not normalised)."""
        return {
            name: keras.ops.convert_to_numpy(var).astype(np.float64).reshape(
                -1, int(var.shape[-1])).T
            for name, var in self.vectors.items()
        }

    def set_vectors(self, vectors):
        """Sets the vectors from ``{layer: [units, d]}`` (for products with any ``V``)."""
        for name, v in vectors.items():
            var = self.vectors[name]
            var.assign(np.asarray(v).T.reshape(var.shape).astype(var.dtype))

    def evaluate(self, data, batch_size=32):
        """Eigenpairs from the current vectors, ``lambda = v^T S v`` measured on ``data``."""
        svs, _ = self.products(data, batch_size, empty="evaluation data is empty.")
        vectors = self.get_vectors()
        result = LayerEigenpairs(loss=self.loss)
        for name in self.layers:
            if name not in self.vectors:
                result[name] = inactive_eigenpairs(self.graph.producers[name].layer, self.seed)
                continue
            result[name] = rayleigh_eigenpairs(vectors[name], svs[name])
        return result


def fast_eigenpairs(graph, loss_fn, data, layers=None, epochs=5, batch_size=32,
                    learning_rate=0.01, eval_data=None, seed=0, verbose=0, strategy=None):
    """Fast splitting eigenpairs: RMSprop on the Rayleigh quotient, one backward pass a step.

    Args:
        graph: the model's ChannelGraph.
        loss_fn: ``loss_fn(x, y, y_pred, sample_weight) -> scalar``.
        data: a batched dataset or an ``(x, y)`` tuple of arrays.
        layers: producer names (default: all splittable layers).
        epochs: passes over ``data``.
        batch_size: for array data.
        learning_rate: RMSprop step size.
        eval_data: the batches on which the final eigenvalues are measured
            (default: ``data``).
        seed: seed of the initial vectors.
        verbose: 0 silent, 1 progress bar.
        strategy: split every batch across this strategy's replicas.

    Returns:
        ``{layer_name: Eigenpairs}`` with residuals.

    Example:
        >>> eig = fast_eigenpairs(graph, loss_fn, (x, y), epochs=10)
    """
    solver = FastEigenSolver(graph, loss_fn, layers, learning_rate, seed, strategy)
    solver.fit(data, epochs=epochs, batch_size=batch_size, verbose=verbose)
    return solver.evaluate(data if eval_data is None else eval_data, batch_size)
