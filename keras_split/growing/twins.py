"""How distinct the neurons of a network are: twins and distinct filters per layer.

A split whose children stay copies of each other buys MACs without capacity.
:func:`twin_statistics` measures it on any model: for every unit of a producer
(a Dense unit, a Conv2D filter: the layers whose handler gives ``unit_kernels``),
the best cosine similarity of its incoming kernel with another unit of the same
layer ("a twin" above ``twin_cosine``), and the number of distinct
filters left when units closer than ``distinct_cosine`` are grouped together.
"""

import numpy as np

from keras_split.graph.handler_registry import registered_handler


def _unit_kernels(layer):
    """``[units, fan_in]`` (float64), from the producer handler of the layer's class."""
    return registered_handler(layer).unit_kernels(layer).astype(np.float64).T


def cosine_matrix(layer):
    """``[units, units]`` cosine similarities of a Dense/Conv2D layer's incoming kernels."""
    return _cosines(_unit_kernels(layer))


def _cosines(k):
    """``[units, units]`` cosine similarities of the rows of ``k`` (``[units, fan_in]``)."""
    k = k / np.maximum(np.linalg.norm(k, axis=1, keepdims=True), 1e-12)
    return k @ k.T


def _distinct(cos, threshold):
    """Connected components of the graph ``cos > threshold``."""
    n = len(cos)
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(cos > threshold, 1))):
        parent[find(i)] = find(j)
    return len({find(i) for i in range(n)})


def twin_statistics(model, twin_cosine=0.99, distinct_cosine=0.9, layers=None):
    """Twins and distinct filters of every Dense and Conv2D layer with >= 2 units.

    Args:
        model: a ``keras.Model`` or ``keras_split.GrowingModel``.
        twin_cosine: a unit has a twin when another unit of its layer has an
            incoming kernel with a cosine above this.
        distinct_cosine: units joined by cosines above this count as one filter.
        layers: restrict to these layer names.

    Returns:
        ``{"layers": {name: {"units", "twins", "distinct", "median_best_cosine"}},
        "units", "twins", "twin_fraction", "distinct"}`` (totals over the layers).

    Example:
        >>> twin_statistics(model)["twin_fraction"]
        0.02
    """
    if not 0 < distinct_cosine <= 1 or not 0 < twin_cosine <= 1:
        raise ValueError("twin_cosine and distinct_cosine must be in (0, 1]. Received: "
                         f"twin_cosine={twin_cosine!r}, distinct_cosine={distinct_cosine!r}")
    network = getattr(model, "network", model)
    out = {}
    for layer in network.layers:
        handler = registered_handler(layer)
        if handler is None or (layers is not None and layer.name not in layers):
            continue
        kernels = handler.unit_kernels(layer)
        if kernels is None:
            continue
        cos = _cosines(kernels.astype(np.float64).T)
        if len(cos) < 2:
            continue
        best = np.max(cos - 3 * np.eye(len(cos)), axis=1)
        out[layer.name] = {
            "units": int(len(cos)),
            "twins": int((best > twin_cosine).sum()),
            "distinct": int(_distinct(cos, distinct_cosine)),
            "median_best_cosine": float(np.median(best)),
        }
    units = sum(v["units"] for v in out.values())
    twins = sum(v["twins"] for v in out.values())
    return {"layers": out, "units": units, "twins": twins,
            "twin_fraction": twins / units if units else 0.0,
            "distinct": sum(v["distinct"] for v in out.values())}


def pair_cosines(model, pairs):
    """Cosine of the incoming kernels of each ``(layer, first, second)`` children pair.

    Args:
        model: the grown model.
        pairs: ``{layer_name: [[first, second], ...]}`` (as recorded by ``grow``).

    Returns:
        ``{layer_name: [cosine, ...]}``.
    """
    network = getattr(model, "network", model)
    out = {}
    for name, idx in pairs.items():
        if not idx:
            continue
        cos = cosine_matrix(network.get_layer(name))
        out[name] = [float(cos[a, b]) for a, b in idx]
    return out
