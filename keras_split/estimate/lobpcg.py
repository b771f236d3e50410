"""Block (LOBPCG) minimisation of every neuron's Rayleigh quotient on full-data products.

The fast method of :mod:`keras_split.estimate.rmsprop` takes one RMSprop step per
mini-batch. Splitting matrices are expectations of terms of both signs
(``dL/da`` changes sign between examples), so a mini-batch's ``S`` is a noisy
estimate of the average one, and stochastic steps converge slowly (the
splitting-cost benchmark compares the two: see docs/benchmarks.md).

:class:`LobpcgEigenSolver` uses the same auxiliary-activation products ``S v``
(:class:`~keras_split.estimate.products.SvProducts`: never building ``S``, memory
``O(n d)``) but averages them over all of the estimation data: one pass gives
``S_D v`` for every neuron at once. Each neuron carries a block ``X`` of two
vectors (its two smallest Ritz pairs; one pass gives the products of both). Each
further pass applies ``S_D`` to the normalised residuals ``R = S_D X - X Lambda``,
and the new block is the best pair of ``span(X, R, P)`` (Rayleigh-Ritz, ``P`` the
last update), as in Knyazev's LOBPCG with a block of two per neuron: the second
vector speeds the first up (the rate depends on the gap to the third eigenvalue)
and keeps a start nearly orthogonal to the smallest eigenvector from stalling on
the second. The iterations stop once every candidate neuron's residual is within
``tol`` of its eigenvalue (see :meth:`LobpcgEigenSolver.fit`).
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
# A residual below this fraction of ||S v|| is rounding (the products may be float32).
_RESIDUAL_RTOL = 1e-6
# The stop waits for the neurons that may reach below this fraction of their layer's
# most negative eigenvalue.
RELATIVE_FLOOR = 0.1
# Vectors per neuron: the two smallest Ritz pairs.
BLOCK = 2


def rayleigh_ritz(basis, products, count=1):
    """Per neuron, the ``count`` combinations of ``basis`` with the smallest Rayleigh quotients.

    Args:
        basis: ``[units, m, d]``, ``m`` basis vectors per neuron.
        products: ``[units, m, d]``, ``S`` applied to each basis vector.
        count: how many Ritz vectors (the smallest first).

    Returns:
        ``float64[units, m]`` coefficients ``c`` with ``c^T G c = 1`` (``G`` the
        basis' Gram matrix): ``v = c @ basis`` is a unit vector minimising
        ``v^T S v`` over the span; ``[units, m, count]`` (G-orthonormal columns,
        ascending Ritz values) when ``count > 1``. Directions that are
        numerically dependent on the others are left out.

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
    if count == 1:
        return np.einsum("kmi,ki->km", t, c[:, :, 0])
    return np.einsum("kmi,kic->kmc", t, c[:, :, :count])


class LobpcgEigenSolver:
    """Smallest splitting eigenpairs of every neuron by LOBPCG on full-data ``S v`` products.

    Every neuron carries a block of ``block`` vectors (its smallest Ritz pairs):
    one pass gives the products of all of them at once (see
    :class:`~keras_split.estimate.products.SvProducts`), and the block converges
    faster than one vector and does not stall on the second-smallest
    eigenvector when the start vector is nearly orthogonal to the smallest.
    Only the smallest pair is returned.

    Args:
        graph: the model's ChannelGraph.
        loss_fn: ``loss_fn(x, y, y_pred, sample_weight) -> scalar``.
        layers: producer names (default: all splittable layers).
        seed: seed of the random initial vectors.
        strategy: a ``tf.distribute.Strategy``; every batch is split across
            its replicas (see :class:`~keras_split.estimate.products.SvProducts`).
        block: vectors per neuron (>= 1; at most the fan-in is used).

    Example:
        >>> solver = LobpcgEigenSolver(graph, loss_fn)
        >>> eig = solver.fit((x, y), epochs=5).eigenpairs()
    """

    def __init__(self, graph, loss_fn, layers=None, seed=0, strategy=None, block=BLOCK):
        self.products = SvProducts(graph, loss_fn, layers, seed=seed, strategy=strategy,
                                   block=block)
        self.graph = graph
        self.block = block
        self.layers = self.products.layers
        self.seed = seed
        self.vectors = {n: _orthonormal_block(_as_block(v))
                        for n, v in self.products.get_vectors().items()}
        self.svs = None
        self.passes = 0
        self.residual_ratio = None
        self.ratios = []
        self.converged = None

    def _apply(self, vectors, data, batch_size):
        """``S_D`` applied to ``{layer: [units, block, d]}`` (one pass over ``data``)."""
        self.products.set_vectors({n: v if self.block > 1 else v[:, 0]
                                   for n, v in vectors.items()})
        svs = self.products.products(data, batch_size)[0]
        return {n: _as_block(v) for n, v in svs.items()}

    def fit(self, data, epochs=5, batch_size=32, verbose=0, tol=None, floor=None,
            relative_floor=RELATIVE_FLOOR, reach=None):
        """At most ``epochs`` passes over ``data``: ``S v``, then LOBPCG iterations.

        With ``tol``, the iterations stop once every candidate has converged on
        ``data``: each neuron that may have a negative eigenvalue (some
        eigenvalue lies within the residual ``r = ||S v - lambda v||`` of the
        Ritz value ``lambda``: ``lambda - r < 0``) has ``r <= tol * |lambda|``
        (checked after every iteration, from the second pass on). With
        ``floor(layer)`` (per-unit thresholds, e.g. the selection's noise level)
        neurons that cannot reach below ``-floor`` are not waited for, nor those
        that cannot reach below ``relative_floor`` times their layer's most
        negative Ritz value (tiny eigenvalues converge slowest and weigh least
        in a selection). With ``reach(pairs, loss)`` (the current ``{layer:
        Eigenpairs}`` with residuals and the mean loss of the last pass, returning
        ``{layer: bool[units]}`` or None for every unit) only the neurons it marks
        are waited for: those a selection could pick. ``passes`` and
        ``residual_ratio`` (``sum(residual) / sum(|lambda|)`` over the negative
        ones) record where it stopped, ``ratios`` the ratio after every pass and
        ``converged`` whether every candidate met ``tol``.

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
        self._ritz(svs)
        self._record(1, svs, tol, floor, relative_floor, reach)
        progbar.update(1)
        directions, direction_svs = {}, {}
        for done in range(1, int(epochs)):
            if done > 1 and self.converged:
                logger.debug("LOBPCG stopped after %d passes: every candidate within %g",
                             done, tol)
                break
            self._iterate(svs, directions, direction_svs, dataset, batch_size)
            self._record(done + 1, svs, tol, floor, relative_floor, reach)
            progbar.update(done + 1)
            logger.debug("LOBPCG splitting eigenpairs: pass %d/%d done", done + 1, epochs)
        self.svs = svs
        return self

    def _ritz(self, svs):
        """Rayleigh-Ritz within each neuron's block (its vectors sorted, in place)."""
        for name, v in self.vectors.items():
            if v.shape[1] > 1:
                c = _ritz_block(v, svs[name], v.shape[1])
                self.vectors[name], svs[name] = _combine(c, v, svs[name])

    def _iterate(self, svs, directions, direction_svs, dataset, batch_size):
        """One LOBPCG iteration (one pass over ``dataset``), in place: the new vectors
        (``self.vectors``) and their products ``svs``, and the next directions ``p``
        and their products (empty on the first iteration)."""
        # An orthonormal basis [X, P, R] per neuron keeps the Rayleigh-Ritz step
        # exact in float64 whatever the precision of the products.
        residuals = {}
        for name, v in self.vectors.items():
            lam = np.einsum("kbd,kbd->kb", v, svs[name])
            r = svs[name] - lam[:, :, None] * v
            basis = [v] + ([directions[name]] if name in directions else [])
            # A residual at the products' rounding level is no direction: dropped.
            scale = np.linalg.norm(svs[name], axis=2, keepdims=True)
            r = np.where(np.linalg.norm(r, axis=2, keepdims=True) > _RESIDUAL_RTOL * scale,
                         r, 0.0)
            residuals[name] = _orthonormal_block(r, np.concatenate(basis, axis=1))
        r_svs = self._apply(residuals, dataset, batch_size)
        for name, v in self.vectors.items():
            b = v.shape[1]
            basis, prods = [v, residuals[name]], [svs[name], r_svs[name]]
            if name in directions:
                basis.append(directions[name])
                prods.append(direction_svs[name])
            basis, prods = np.concatenate(basis, axis=1), np.concatenate(prods, axis=1)
            c = _ritz_block(basis, prods, b)
            self.vectors[name], svs[name] = _combine(c, basis, prods)
            # The next directions P: the update beyond the old X, made orthogonal to
            # the new X (their products follow by linearity).
            c[:, :b, :] = 0.0
            p, p_sv = _combine(c, basis, prods, normalise=False)
            x_new = self.vectors[name]
            along = np.einsum("kpd,kbd->kpb", p, x_new)
            p = p - np.einsum("kpb,kbd->kpd", along, x_new)
            p_sv = p_sv - np.einsum("kpb,kbd->kpd", along, svs[name])
            norm = np.linalg.norm(p, axis=2, keepdims=True)
            ok = norm > 1e-12
            scale = np.where(ok, 1.0 / np.where(ok, norm, 1.0), 0.0)
            directions[name], direction_svs[name] = p * scale, p_sv * scale

    def _record(self, passes, svs, tol=None, floor=None, relative_floor=0.0, reach=None):
        """Records the passes made, the residual ratio of the current smallest vectors
        and whether every candidate is within ``tol`` (``reach`` is asked from the
        second pass on: the first one never stops the iterations)."""
        pairs = {n: rayleigh_eigenpairs(self.vectors[n][:, 0], svs[n][:, 0])
                 for n in self.vectors}
        self.passes = passes
        self.residual_ratio = residual_ratio((e.values, e.residuals) for e in pairs.values())
        self.ratios.append(self.residual_ratio)
        if tol is None:
            return
        marked = None if reach is None or passes < 2 else reach(pairs, self.products.loss)
        self.converged = all(
            not np.any(_waiting(e, None if floor is None else floor(n), relative_floor)
                       & (True if marked is None else marked[n])
                       & (e.residuals > tol * np.abs(e.values)))
            for n, e in pairs.items())

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
        smallest = {n: v[:, 0] for n, v in self.vectors.items()}
        result = self.products.eigenpairs(smallest, {n: v[:, 0] for n, v in svs.items()})
        for name in self.vectors if self.svs is not None else ():
            fit = rayleigh_eigenpairs(smallest[name], self.svs[name][:, 0])
            result[name].fit_residuals = fit.residuals
            result[name].fit_values = fit.values
            result[name].passes = self.passes
        return result


def lobpcg_eigenpairs(graph, loss_fn, data, layers=None, epochs=5, batch_size=32,
                      eval_data=None, seed=0, verbose=0, strategy=None, tol=None,
                      floor=None, reach=None):
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
        tol: stop before ``epochs`` passes once every candidate has converged
            (its residual at most ``tol`` times its ``|lambda|``; eigenvalues at
            the selection's noise level are not waited for; see
            :meth:`LobpcgEigenSolver.fit`); None: always ``epochs`` passes.
        floor: ``(layer, loss) -> float64[units]``, the ``|lambda|`` below which a
            neuron's eigenvalue does not count (the selection's noise level, from
            the mean loss of the last pass); None: 0.
        reach: ``(pairs, loss) -> {layer: bool[units]}`` or None: with ``tol``, wait
            only for the neurons it marks (see :meth:`LobpcgEigenSolver.fit`).

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
    per_layer = None if floor is None else (lambda name: floor(name, solver.products.loss))
    solver.fit(data, epochs=epochs, batch_size=batch_size, verbose=verbose, tol=tol,
               floor=per_layer, reach=reach)
    return solver.eigenpairs(eval_data, batch_size)


def _combine(c, basis, products, normalise=True):
    """``c^T basis`` and ``c^T products`` per neuron (``c`` ``[units, m, b]``), optionally
    scaled to unit vectors: ``[units, b, d]`` each."""
    v = np.einsum("kmb,kmd->kbd", c, basis)
    sv = np.einsum("kmb,kmd->kbd", c, products)
    if normalise:
        norm = np.linalg.norm(v, axis=2, keepdims=True)
        norm = np.where(norm > 0, norm, 1.0)
        v, sv = v / norm, sv / norm
    return v, sv


def _ritz_block(basis, products, count):
    """:func:`rayleigh_ritz`'s coefficients as ``[units, m, count]`` for any ``count``."""
    c = rayleigh_ritz(basis, products, count=count)
    return c[:, :, None] if count == 1 else c


def _as_block(v):
    """``[units, d]`` as a block of one, ``[units, 1, d]``; blocks unchanged."""
    v = np.asarray(v, dtype=np.float64)
    return v[:, None, :] if v.ndim == 2 else v


def _orthonormal_block(r, basis=None):
    """The rows of every neuron's block ``r`` ``[units, b, d]`` made orthonormal to each
    other and to the orthonormal ``basis`` ``[units, m, d]`` (Gram-Schmidt, twice); a
    row with nothing left stays (near) zero, which Rayleigh-Ritz ignores."""
    r = np.array(r, dtype=np.float64)
    done = [] if basis is None else [basis[:, i] for i in range(basis.shape[1])]
    for j in range(r.shape[1]):
        row = r[:, j]
        before = np.linalg.norm(row, axis=1, keepdims=True)
        for _ in range(2):  # twice is enough (Kahan-Parlett)
            for q in done:
                row = row - np.sum(row * q, axis=1, keepdims=True) * q
        # Nothing left beyond the basis (rounding): a zero row, which Rayleigh-Ritz drops.
        row = np.where(np.linalg.norm(row, axis=1, keepdims=True) > 1e-10 * before, row, 0.0)
        row = _unit(row)
        r[:, j] = row
        done.append(row)
    return r


def _unit(v):
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


def _waiting(e, floor, relative_floor=0.0):
    """The neurons a converged estimate must have converged: those with an eigenvalue
    within their residual of the Ritz value that may be below ``-floor`` (per unit,
    the noise level; 0 without one) and below ``relative_floor`` times the layer's
    most negative Ritz value."""
    level = np.maximum(0.0 if floor is None else floor,
                       relative_floor * max(-float(e.values.min()), 0.0))
    return e.values - e.residuals < -level
