"""The result type of splitting-eigenpair estimation."""

import dataclasses
import logging

import numpy as np

# An estimate "has not converged" above this residual / |lambda| (a warning says so).
logger = logging.getLogger(__name__)

UNCONVERGED_RESIDUAL = 0.25


@dataclasses.dataclass
class Eigenpairs:
    """Minimum eigenvalue and unit eigenvector of each neuron's splitting matrix.

    Attributes:
        values: ``float64[units]``, the smallest eigenvalue of each neuron.
        vectors: ``float64[units, fan_in]``, the matching unit eigenvectors,
            flattened in the kernel's own order (Dense: ``(in_features,)``,
            Conv2D: ``(kh, kw, cin)``).
        residuals: ``float64[units]`` or None, ``||S v - lambda v||`` of the fast
            estimate on the evaluation batches (0 for the exact method).
        fit_residuals: ``float64[units]`` or None: the lobpcg method's residuals on
            the estimation data, the operator it iterated (on held-out evaluation
            batches ``residuals`` also holds the difference between the two
            samples' matrices, which no number of passes removes).
        passes: the lobpcg method's passes over the estimation data (it stops
            early once the candidates have converged), or None.
        fit_values: ``float64[units]`` or None: the lobpcg eigenvalues on the
            estimation data, those ``fit_residuals`` belong to.

    Example:
        >>> eig = model.splitting_eigenpairs(data)["conv1"]
        >>> best = np.argsort(eig.values)[:4]  # the four most negative
    """

    values: np.ndarray
    vectors: np.ndarray
    residuals: np.ndarray = None
    fit_residuals: np.ndarray = None
    passes: int = None
    fit_values: np.ndarray = None

    def __post_init__(self):
        self.values = np.asarray(self.values, dtype=np.float64)
        self.vectors = np.asarray(self.vectors, dtype=np.float64)
        for name in ("residuals", "fit_residuals", "fit_values"):
            if getattr(self, name) is not None:
                setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        if self.vectors.ndim != 2 or self.vectors.shape[0] != self.values.shape[0]:
            raise ValueError(
                f"vectors must have shape (units, fan_in) with units="
                f"{self.values.shape[0]}, got {self.vectors.shape}."
            )

    def to_dict(self):
        """A JSON-serialisable dict."""
        return {
            "values": self.values.tolist(),
            "vectors": self.vectors.tolist(),
            "residuals": None if self.residuals is None else self.residuals.tolist(),
            "fit_residuals": (None if self.fit_residuals is None
                              else self.fit_residuals.tolist()),
            "passes": self.passes,
            "fit_values": None if self.fit_values is None else self.fit_values.tolist(),
        }

    @classmethod
    def from_dict(cls, d):
        return cls(d["values"], d["vectors"], d.get("residuals"), d.get("fit_residuals"),
                   d.get("passes"), d.get("fit_values"))


class LayerEigenpairs(dict):
    """``{layer_name: Eigenpairs}`` and the mean loss of the pass that measured them.

    Args:
        pairs: the ``{layer_name: Eigenpairs}`` items.
        loss: the model's mean loss on the data where the eigenvalues were
            measured (the products' forward pass computes it anyway), or None.

    Example:
        >>> eig = LayerEigenpairs({"fc": pairs}, loss=0.42)
        >>> eig.loss
        0.42
    """

    def __init__(self, pairs=(), loss=None):
        super().__init__(pairs)
        self.loss = loss


def relative_residual(eigenpairs, fit=False):
    """``sum(residual) / sum(|lambda|)`` over the neurons with ``lambda < 0``, all layers.

    For a symmetric matrix some eigenvalue lies within the residual
    ``||S v - lambda v||`` of the estimate ``lambda``, so this bounds the relative
    error of the candidates' eigenvalues, weighted towards the most negative
    ones (those a selection picks first; a median would be swayed by the many
    near-zero eigenvalues of a barely trained network). Converged estimates give
    ratios well below 1; the paper's RMSprop with a few epochs gives about 1.

    Args:
        eigenpairs: ``{layer: Eigenpairs}``.
        fit: use the residuals on the estimation data (``fit_residuals``, where
            an estimator has them) instead of those on the evaluation batches.

    Returns:
        The ratio, or None when no neuron has a negative eigenvalue and a residual.

    Example:
        >>> relative_residual(model.splitting_eigenpairs(data, method="fast"))
    """
    return residual_ratio([_measured(e, fit) for e in eigenpairs.values()])


def _measured(e, fit=True):
    """``(values, residuals)`` of one measurement: on the estimation data when ``fit``
    and the estimator has it (lobpcg), else on the evaluation batches."""
    if fit and e.fit_residuals is not None:
        return (e.values if e.fit_values is None else e.fit_values), e.fit_residuals
    return e.values, e.residuals


def residual_ratio(pairs):
    """``sum(residual) / sum(|lambda|)`` over the ``lambda < 0`` entries of
    ``[(values, residuals), ...]`` (pairs without residuals are skipped), or None.

    Example:
        >>> residual_ratio([(np.array([-2.0, 1.0]), np.array([0.5, 9.0]))])
        0.25
    """
    residual = magnitude = 0.0
    for values, residuals in pairs:
        if residuals is not None:
            negative = values < 0
            residual += float(residuals[negative].sum())
            magnitude += float(np.abs(values[negative]).sum())
    return residual / magnitude if magnitude > 0 else None


def unconverged_neurons(eigenpairs, rtol=UNCONVERGED_RESIDUAL):
    """``{layer: [unit, ...]}``: neurons with ``lambda < 0`` whose residual exceeds
    ``rtol * |lambda|`` (their eigenvalue may be that far off), on the estimation
    data where the estimator reports it (lobpcg), else on the evaluation batches.

    Example:
        >>> unconverged_neurons(model.splitting_eigenpairs(data))
        {}
    """
    out = {}
    for name, e in eigenpairs.items():
        values, res = _measured(e)
        if res is not None:
            bad = np.flatnonzero((values < 0) & (res > rtol * np.abs(values)))
            if len(bad):
                out[name] = [int(u) for u in bad]
    return out


def eigen_passes(eigenpairs):
    """The passes an estimator recorded (``Eigenpairs.passes``, lobpcg), or None."""
    return next((e.passes for e in eigenpairs.values() if e.passes), None)


def inactive_eigenpairs(kernel, seed):
    """Eigenpairs of a layer without a splitting signal (``sigma'' = 0``): zero
    eigenvalues and seeded random unit vectors.

    Args:
        kernel: the producer's kernel (``[..., fan_in, units]``).
        seed: seed of the random vectors.

    Returns:
        An :class:`Eigenpairs` with zero values and residuals.
    """
    units, fan_in = int(kernel.shape[-1]), int(np.prod(kernel.shape[:-1]))
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((units, fan_in))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return Eigenpairs(np.zeros(units), v, np.zeros(units))


def rayleigh_eigenpairs(v, sv):
    """Eigenpairs from vectors ``v`` and their products ``S v`` (both ``[units, d]``).

    ``v`` is normalised; ``lambda = v^T S v`` and the residual ``||S v - lambda v||``.

    Example:
        >>> rayleigh_eigenpairs(np.array([[2.0, 0.0]]), np.array([[-3.0, 0.0]])).values
        array([-3.])
    """
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    lam = np.sum(v * sv, axis=1)
    return Eigenpairs(lam, v, np.linalg.norm(sv - lam[:, None] * v, axis=1))


def check_finite(name, tensor, what):
    """Raises ValueError when ``tensor`` (the ``what`` of layer ``name``) is not finite."""
    if not np.all(np.isfinite(tensor)):
        raise ValueError(
            f"Non-finite values in the {what} of layer '{name}' during eigen "
            "estimation; check the data, the loss and the learning rate."
        )


def warn_unconverged(eig, method):
    """Logs a warning when ``eig`` (from ``method``) has not converged: its residual ratio
    on the data iterated is above ``UNCONVERGED_RESIDUAL``."""
    ratio = relative_residual(eig, fit=True)
    if ratio is None or ratio <= UNCONVERGED_RESIDUAL:
        return
    bad = unconverged_neurons(eig)
    passes = eigen_passes(eig)
    logger.warning(
        "The %s eigenpairs have not converged%s: over the neurons with a negative "
        "eigenvalue, the residuals ||S v - lambda v|| add up to %.0f%% of their |lambda| "
        "(an eigenvalue may be off by up to its residual); %d neurons are off by more than "
        "%.0f%% (%s). Use more eigen_epochs%s.",
        method, f" in {passes} passes" if passes else "", 100 * ratio,
        sum(map(len, bad.values())), 100 * UNCONVERGED_RESIDUAL,
        ", ".join(f"{n}: {len(u)}" for n, u in bad.items()),
        " or method='lobpcg' (the default)" if method == "fast" else "")
