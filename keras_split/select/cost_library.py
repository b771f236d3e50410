"""Every cost model, and the names ``cost=`` and ``budgets`` take (``ks.costs``).

Example:
    >>> model.grow(data, cost=ks.costs.MACs(),
    ...            budgets={ks.costs.PeakActivationMemory("int8"): 64 * 1024})
"""

from keras_split.select.activation_memory import PeakActivationMemory
from keras_split.select.cost_models import (CostModel, MACs, Params, PerLayerCost, SqrtMACs,
                                            Uniform)
from keras_split.select.param_bytes import ParamBytes
from keras_split.select.tflite_latency import TFLiteLatency

__all__ = ["CostModel", "MACs", "ParamBytes", "Params", "PeakActivationMemory", "PerLayerCost",
           "SqrtMACs", "TFLiteLatency", "Uniform", "get"]

# The cost models a name stands for (each with its default arguments).
BUILT_IN = {"flops": MACs, "params": Params, "uniform": Uniform, "sqrt_flops": SqrtMACs,
            "peak_activation_bytes": PeakActivationMemory,
            "param_bytes_float32": lambda: ParamBytes("float32"),
            "param_bytes_float16": lambda: ParamBytes("float16"),
            "param_bytes_int8": lambda: ParamBytes("int8"),
            "latency_ms": TFLiteLatency}


def get(cost):
    """The :class:`CostModel` of ``cost``: a name of ``BUILT_IN`` (``"flops"``,
    ``"params"``, ``"uniform"``, ``"sqrt_flops"``, ``"peak_activation_bytes"``,
    ``"param_bytes_int8"`` and the other dtypes, ``"latency_ms"``: one thread, batch 1), a
    callable ``layer -> cost per neuron`` or a CostModel.

    Raises:
        ValueError: for anything else.

    Example:
        >>> get("flops")
        MACs()
    """
    if isinstance(cost, CostModel):
        return cost
    if isinstance(cost, str) and cost in BUILT_IN:
        return BUILT_IN[cost]()
    if callable(cost) and not isinstance(cost, type):
        return PerLayerCost(cost)
    raise ValueError(f"cost must be one of {tuple(BUILT_IN)}, a CostModel or a callable "
                     f"layer -> cost per neuron. Received: cost={cost!r}")
