"""Block (LOBPCG) minimisation of every neuron's Rayleigh quotient on full-data products.

The fast method of :mod:`keras_split.estimate.rmsprop` takes one RMSprop step per
mini-batch. Splitting matrices are expectations of terms of both signs
(``dL/da`` changes sign between examples), so a mini-batch's ``S`` is a noisy
estimate of the average one, and stochastic steps converge slowly (see the
README's splitting-cost benchmark: 3-5 LOBPCG passes against more than 32
RMSprop epochs for every candidate neuron within 2 % of ``eigh``).

:class:`LobpcgEigenSolver` uses the same auxiliary-activation products ``S v``
(:class:`~keras_split.estimate.products.SvProducts`: never building ``S``, memory
``O(n d)``) but averages them over all of the estimation data: one pass gives
``S_D v`` for every neuron at once. Each further pass applies ``S_D`` to the
normalised residual ``r = S_D v - lambda v``, and the new ``v`` is the best vector
of ``span(v, r, p)`` (Rayleigh-Ritz, ``p`` the previous update), as in Knyazev's
LOBPCG with block size one per neuron. The smallest eigenvalue of a splitting
matrix is usually well separated, so a handful of passes reach the ``eigh`` answer
on the same data.
"""

import logging

import keras
import numpy as np

from keras_split.data import data_utils
from keras_split.estimate.eigenpairs import rayleigh_eigenpairs, residual_ratio
from keras_split.estimate.products import SvProducts

logger = logging.getLogger(__name__)

# Basis directions whose Gram eigenvalue is below this fraction of the largest are
# dropped from the Rayleigh-Ritz step (the products may be float32).
_GRAM_RTOL = 1e-6


def rayleigh_ritz(basis, products):
    """Per neuron, the combination of ``basis`` with the smallest Rayleigh quotient.

    Args:
        basis: ``[units, m, d]``, ``m`` basis vectors per neuron.
        products: ``[units, m, d]``, ``S`` applied to each basis vector.

    Returns:
        ``float64[units, m]`` coefficients ``c`` with ``c^T G c = 1`` (``G`` the
        basis' Gram matrix): ``v = c @ basis`` is a unit vector minimising
        ``v^T S v`` over the span. Directions that are numerically dependent on
        the others are left out.

    Example:
        >>> c = rayleigh_ritz(np.eye(2)[None], np.diag([1.0, -1.0])[None])
        >>> np.abs(c).round(6).tolist()
        [[0.0, 1.0]]
    """
    basis = np.asarray(basis, dtype=np.float64)
    products = np.asarray(products, dtype=np.float64)
    gram = np.einsum("kmd,kod->kmo", basis, basis)
    a = np.einsum("kmd,kod->kmo", basis, products)
    a = 0.5 * (a + np.swapaxes(a, 1, 2))
    w, u = np.linalg.eigh(gram)
    keep = w > _GRAM_RTOL * w[:, -1:]
    t = u * np.where(keep, 1.0 / np.sqrt(np.where(keep, w, 1.0)), 0.0)[:, None, :]
    h = np.einsum("kmi,kmo,koj->kij", t, a, t)
    # Dropped directions get an eigenvalue far above every kept one.
    big = 10.0 * (np.abs(h).max(axis=(1, 2), keepdims=True) + 1.0)
    h = h + np.where(keep, 0.0, 1.0)[:, :, None] * np.eye(h.shape[-1]) * big
    _, c = np.linalg.eigh(h)
    return np.einsum("kmi,ki->km", t, c[:, :, 0])


class LobpcgEigenSolver:
    """Smallest splitting eigenpairs of every neuron by LOBPCG on full-data ``S v`` products.

    Args:
        graph: the model's ChannelGraph.
        loss_fn: ``loss_fn(x, y, y_pred, sample_weight) -> scalar``.
        layers: producer names (default: all splittable layers).
        seed: seed of the random initial vectors.
        strategy: a ``tf.distribute.Strategy``; every batch is split across
            its replicas (see :class:`~keras_split.estimate.products.SvProducts`).

    Example:
        >>> solver = LobpcgEigenSolver(graph, loss_fn)
        >>> eig = solver.fit((x, y), epochs=5).eigenpairs()
    """

    def __init__(self, graph, loss_fn, layers=None, seed=0, strategy=None):
        self.products = SvProducts(graph, loss_fn, layers, seed=seed, strategy=strategy)
        self.graph = graph
        self.layers = self.products.layers
        self.seed = seed
        self.vectors = {n: _unit(v) for n, v in self.products.get_vectors().items()}
        self.svs = None
        self.passes = 0
        self.residual_ratio = None
        self.ratios = []

    def _apply(self, vectors, data, batch_size):
        """``S_D`` applied to ``{layer: [units, d]}`` (one pass over ``data``)."""
        self.products.set_vectors(vectors)
        return self.products.products(data, batch_size)[0]

    def fit(self, data, epochs=5, batch_size=32, verbose=0, tol=None):
        """At most ``epochs`` passes over ``data``: ``S v``, then LOBPCG iterations.

        With ``tol``, the iterations stop once the candidates have converged on
        ``data``: over the neurons with a negative eigenvalue, the residuals
        ``||S v - lambda v||`` add up to at most ``tol`` times their ``|lambda|``
        (checked after every iteration, from the second pass on). ``passes`` and
        ``residual_ratio`` record where it stopped, ``ratios`` the ratio after
        every pass.

        Returns ``self``.

        Raises:
            ValueError: for ``epochs < 1``, a bad ``tol``, empty data or non-finite
                products.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
        if tol is not None and not (isinstance(tol, (int, float)) and not isinstance(tol, bool)
                                    and 0 <= tol < np.inf):
            raise ValueError(f"tol must be None or a number >= 0. Received: tol={tol!r}")
        if not self.vectors:
            return self
        dataset = data_utils.as_dataset(data, batch_size)
        progbar = keras.utils.Progbar(int(epochs), verbose=verbose, unit_name="pass")
        svs = self._apply(self.vectors, dataset, batch_size)
        self._record(1, svs)
        progbar.update(1)
        directions, direction_svs = {}, {}
        for done in range(1, int(epochs)):
            if done > 1 and tol is not None and self.residual_ratio is not None \
                    and self.residual_ratio <= tol:
                logger.debug("LOBPCG stopped after %d passes: residual ratio %.2g <= %g",
                             done, self.residual_ratio, tol)
                break
            self._iterate(svs, directions, direction_svs, dataset, batch_size)
            self._record(done + 1, svs)
            progbar.update(done + 1)
            logger.debug("LOBPCG splitting eigenpairs: pass %d/%d done", done + 1, epochs)
        self.svs = svs
        return self

    def _iterate(self, svs, directions, direction_svs, dataset, batch_size):
        """One LOBPCG iteration (one pass over ``dataset``), in place: the new vectors
        (``self.vectors``) and their products ``svs``, and the next directions ``p``
        and their products (empty on the first iteration)."""
        # An orthonormal basis [v, p, r] per neuron keeps the Rayleigh-Ritz step
        # exact in float64 whatever the precision of the products.
        residuals = {}
        for name, v in self.vectors.items():
            basis = [v] + ([directions[name]] if name in directions else [])
            residuals[name] = _orthonormal_to(svs[name], basis)
        r_svs = self._apply(residuals, dataset, batch_size)
        for name, v in self.vectors.items():
            basis, prods = [v, residuals[name]], [svs[name], r_svs[name]]
            if name in directions:
                basis.append(directions[name])
                prods.append(direction_svs[name])
            basis, prods = np.stack(basis, axis=1), np.stack(prods, axis=1)
            c = rayleigh_ritz(basis, prods)
            self.vectors[name], svs[name] = _combine(c, basis, prods)
            # The next direction p: the update beyond the old v, made orthogonal to
            # the new v (its product follows by linearity).
            c[:, 0] = 0.0
            p, p_sv = _combine(c, basis, prods, normalise=False)
            v_new = self.vectors[name]
            along = np.sum(p * v_new, axis=1, keepdims=True)
            p, p_sv = p - along * v_new, p_sv - along * svs[name]
            norm = np.linalg.norm(p, axis=1, keepdims=True)
            ok = norm > 1e-12
            scale = np.where(ok, 1.0 / np.where(ok, norm, 1.0), 0.0)
            directions[name], direction_svs[name] = p * scale, p_sv * scale

    def _record(self, passes, svs):
        """Records the passes made and the residual ratio of the current vectors."""
        pairs = (rayleigh_eigenpairs(self.vectors[n], svs[n]) for n in self.vectors)
        self.passes = passes
        self.residual_ratio = residual_ratio((e.values, e.residuals) for e in pairs)
        self.ratios.append(self.residual_ratio)

    def eigenpairs(self, eval_data=None, batch_size=32):
        """``{layer: Eigenpairs}``; ``lambda = v^T S v`` and residuals on ``eval_data``
        (default: the data of the last :meth:`fit`, with no further pass).

        Returns:
            A :class:`~keras_split.estimate.eigenpairs.LayerEigenpairs`, whose ``loss`` is
            the model's mean loss on ``eval_data`` (on the fit data by default;
            None when no layer had a splitting signal and no pass ran).

        Raises:
            ValueError: when :meth:`fit` has not run and no ``eval_data`` is given.
        """
        if eval_data is not None:
            svs = self._apply(self.vectors, eval_data, batch_size) if self.vectors else {}
        elif self.svs is not None or not self.vectors:
            svs = self.svs or {}
        else:
            raise ValueError("call fit() first, or pass eval_data.")
        result = self.products.eigenpairs(self.vectors, svs)
        for name in self.vectors if self.svs is not None else ():
            fit = rayleigh_eigenpairs(self.vectors[name], self.svs[name])
            result[name].fit_residuals = fit.residuals
            result[name].fit_values = fit.values
            result[name].passes = self.passes
        return result


def lobpcg_eigenpairs(graph, loss_fn, data, layers=None, epochs=5, batch_size=32,
                      eval_data=None, seed=0, verbose=0, strategy=None, tol=None):
    """Splitting eigenpairs by LOBPCG on full-data auxiliary-activation products.

    Args:
        graph: the model's ChannelGraph.
        loss_fn: ``loss_fn(x, y, y_pred, sample_weight) -> scalar``.
        data: a batched dataset or an ``(x, y)`` tuple of arrays; iterate it
            deterministically (no random augmentation): every pass must see the
            same examples.
        layers: producer names (default: all splittable layers).
        epochs: at most this many passes over ``data`` (one for ``S v``, one per
            iteration).
        batch_size: for array data.
        eval_data: where the final eigenvalues are measured (one more pass);
            default: ``data``, with no extra pass.
        seed: seed of the initial vectors.
        verbose: 0 silent, 1 progress bar.
        strategy: split every batch across this strategy's replicas.
        tol: stop before ``epochs`` passes once the candidates have converged (see
            :meth:`LobpcgEigenSolver.fit`); None: always ``epochs`` passes.

    Returns:
        ``{layer_name: Eigenpairs}`` with residuals on ``eval_data``, and the
        residuals on ``data`` and the passes made (``fit_residuals``, ``passes``);
        its ``loss`` is the mean loss on ``eval_data`` (a LayerEigenpairs).

    Raises:
        ValueError: for ``epochs < 1``, a bad ``tol``, empty data or non-finite
            products.

    Example:
        >>> eig = lobpcg_eigenpairs(graph, loss_fn, (x, y), epochs=5)
    """
    solver = LobpcgEigenSolver(graph, loss_fn, layers, seed, strategy)
    solver.fit(data, epochs=epochs, batch_size=batch_size, verbose=verbose, tol=tol)
    return solver.eigenpairs(eval_data, batch_size)


def _combine(c, basis, products, normalise=True):
    """``c @ basis`` and ``c @ products`` per neuron, optionally scaled to unit vectors."""
    v = np.einsum("km,kmd->kd", c, basis)
    sv = np.einsum("km,kmd->kd", c, products)
    if normalise:
        norm = np.linalg.norm(v, axis=1, keepdims=True)
        v, sv = v / norm, sv / norm
    return v, sv


def _orthonormal_to(r, basis):
    """``r`` with its components along the orthonormal ``basis`` removed, unit rows
    (a random-looking unit row where nothing is left, which Rayleigh-Ritz may ignore)."""
    for b in basis:
        for _ in range(2):  # twice is enough (Kahan-Parlett)
            r = r - np.sum(r * b, axis=1, keepdims=True) * b
    return _unit(r)


def _unit(v):
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)
