"""The result type of splitting-eigenpair estimation."""

import dataclasses

import numpy as np

# An estimate "has not converged" above this residual / |lambda| (a warning says so).
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

    Example:
        >>> eig = model.splitting_eigenpairs(data)["conv1"]
        >>> best = np.argsort(eig.values)[:4]  # the four most negative
    """

    values: np.ndarray
    vectors: np.ndarray
    residuals: np.ndarray = None
    fit_residuals: np.ndarray = None
    passes: int = None

    def __post_init__(self):
        self.values = np.asarray(self.values, dtype=np.float64)
        self.vectors = np.asarray(self.vectors, dtype=np.float64)
        for name in ("residuals", "fit_residuals"):
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
        }

    @classmethod
    def from_dict(cls, d):
        return cls(d["values"], d["vectors"], d.get("residuals"), d.get("fit_residuals"),
                   d.get("passes"))


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
    near-zero eigenvalues of a barely trained network). Measured on the test
    zoo's MLP and CNN: 0.02-0.1 for LOBPCG's 5 passes, about 1 for the paper's
    RMSprop with 5 epochs.

    Args:
        eigenpairs: ``{layer: Eigenpairs}``.
        fit: use the residuals on the estimation data (``fit_residuals``, where
            an estimator has them) instead of those on the evaluation batches.

    Returns:
        The ratio, or None when no neuron has a negative eigenvalue and a residual.

    Example:
        >>> relative_residual(model.splitting_eigenpairs(data, method="fast"))
    """
    return residual_ratio(
        [(e.values, e.fit_residuals if fit and e.fit_residuals is not None else e.residuals)
         for e in eigenpairs.values()])


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
        res = e.fit_residuals if e.fit_residuals is not None else e.residuals
        if res is not None:
            bad = np.flatnonzero((e.values < 0) & (res > rtol * np.abs(e.values)))
            if len(bad):
                out[name] = [int(u) for u in bad]
    return out



def eigen_passes(eigenpairs):
    """The passes an estimator recorded (``Eigenpairs.passes``, lobpcg), or None."""
    return next((e.passes for e in eigenpairs.values() if e.passes), None)
