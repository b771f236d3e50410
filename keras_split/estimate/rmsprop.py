"""The paper's fast splitting eigenpairs: RMSprop on every neuron's Rayleigh quotient.

The products ``S v`` come from :class:`~keras_split.estimate.products.SvProducts`
(one backward pass a mini-batch, never building ``S``). The Rayleigh quotient
``v^T S v / v^T v`` is minimised with RMSprop over mini-batches (cosine
learning-rate decay to 1 %), eigenvectors re-normalised after every step. The
eigenvalue is then measured with the final ``v`` on evaluation batches:
``lambda = v^T (S v)``, with residual ``||S v - lambda v||``.
"""

import logging

import keras
import numpy as np
import tensorflow as tf

from keras_split.data import data_utils
from keras_split.estimate.products import SvProducts

logger = logging.getLogger(__name__)


class FastEigenSolver(SvProducts):
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
        super().__init__(graph, loss_fn, layers, seed=seed, strategy=strategy)
        self.learning_rate = float(learning_rate)
        self.optimizer = keras.optimizers.RMSprop(learning_rate=learning_rate)
        self._step_fn = tf.function(self._step, reduce_retracing=True)

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
        """One RMSprop step of every vector on one batch; per active layer, whether its
        gradient was finite."""
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

    def step(self, x, y, sample_weight=None):
        """One RMSprop step of every eigenvector on one batch.

        Returns:
            A boolean array: per active layer, whether its gradient was finite.
        """
        return self._step_fn(x, y, sample_weight).numpy()

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
                finite = self.step(x, y, sw)
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

    def evaluate(self, data, batch_size=32):
        """Eigenpairs from the current vectors, ``lambda = v^T S v`` measured on ``data``."""
        svs, _ = self.products(data, batch_size, empty="evaluation data is empty.")
        return self.eigenpairs(self.get_vectors(), svs)


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
