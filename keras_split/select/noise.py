"""Which negative eigenvalues are rounding noise, measured against the loss."""

import dataclasses

import keras
import numpy as np

# A negative eigenvalue is noise when a step as large as the neuron's own incoming
# weights would change the loss by less than this fraction of it:
# |lambda| * ||theta||^2 / 2 < NOISE_RTOL * |loss| (float32 resolves ~6e-8 of a loss).
NOISE_RTOL = 1e-6


def noise_floor(kernel, loss, rtol=NOISE_RTOL):
    """Per unit of a producer, the ``|lambda|`` below which a negative eigenvalue is noise.

    Args:
        kernel: the producer's kernel (``[..., units]``).
        loss: the loss the changes are measured against.
        rtol: the relative resolution.

    Returns:
        ``float64[units]``: ``2 * rtol * |loss| / ||theta_i||^2``.

    Example:
        >>> noise_floor(np.ones((2, 3)), loss=1.0).tolist()
        [1e-06, 1e-06, 1e-06]
    """
    norms = _sq_norms(kernel)
    floor = rtol * max(abs(float(loss)), np.finfo(np.float32).tiny)
    return 2.0 * floor / np.maximum(norms, np.finfo(np.float64).tiny)


def _sq_norms(kernel):
    kernel = np.asarray(kernel, dtype=np.float64)
    return np.sum(kernel.reshape(-1, kernel.shape[-1]) ** 2, axis=0)


def unit_sq_norms(graph, name):
    """``||theta_i||^2`` of every unit of producer ``name`` (its kernel's columns):
    ``float64[units]``.

    Example:
        >>> unit_sq_norms(model.channel_graph, "conv").shape
        (8,)
    """
    return _sq_norms(keras.ops.convert_to_numpy(graph.kernel(name)))


def layer_noise_floor(graph, name, loss, rtol=NOISE_RTOL):
    """:func:`noise_floor` of producer ``name`` of ``graph``: ``float64[units]``."""
    return noise_floor(keras.ops.convert_to_numpy(graph.kernel(name)), loss, rtol)


def without_noise(graph, eigenpairs, loss, rtol=NOISE_RTOL):
    """``(eigenpairs, count)``: ``eigenpairs`` with noise-level negative eigenvalues set to 0.

    On an uncalibrated network (say every output 0.1) the splitting matrices are
    rounding noise, and eigenvalues of -1e-21 would otherwise be split like real
    ones. A neuron's eigenvalue counts when a step of the size of its own
    incoming weights, ``||theta||``, predicts a loss change of at least ``rtol``
    times the loss: ``|lambda| ||theta||^2 / 2 >= rtol |loss|``.

    Args:
        graph: the model's ChannelGraph.
        eigenpairs: ``{layer: Eigenpairs}``.
        loss: the loss the changes are measured against (the held-out loss).
        rtol: the relative resolution.

    Returns:
        New ``{layer: Eigenpairs}`` (vectors and residuals shared) and the number
        of neurons whose negative eigenvalue was set to 0.

    Example:
        >>> eig, n_noise = without_noise(model.channel_graph, eig, loss=2.3)
    """
    kept, count = {}, 0
    for name, e in eigenpairs.items():
        noise = (e.values < 0) & (np.abs(e.values) < layer_noise_floor(graph, name, loss, rtol))
        count += int(noise.sum())
        kept[name] = dataclasses.replace(e, values=np.where(noise, 0.0, e.values))
    return kept, count
