"""A functional model from a Sequential or nested functional one, with the same layers."""

import logging

import keras

from keras_split import compat
from keras_split.graph.walk import functional_nodes

logger = logging.getLogger(__name__)


def as_functional(model):
    """A functional model computing ``model`` with the same layer objects.

    Args:
        model: a functional or Sequential ``keras.Model``.

    Returns:
        A functional ``keras.Model`` (``model`` itself when already functional).

    Raises:
        ValueError: for a subclassed model, or a Sequential model without an
            input shape.
    """
    if isinstance(model, keras.Sequential):
        if not model.built or model.inputs is None:
            raise ValueError(
                f"Sequential model '{model.name}' has no input shape; start it "
                "with keras.Input(shape) so that it can be grown."
            )
        inputs = keras.Input(batch_shape=tuple(model.inputs[0].shape),
                             dtype=model.inputs[0].dtype, name=f"{model.name}_input")
        x = inputs
        for layer in model.layers:
            x = layer(x)
        return keras.Model(inputs, x, name=model.name)
    if not isinstance(model, keras.Model) or compat.functional_graph(model) is None:
        raise ValueError(
            f"GrowingModel needs a functional or Sequential keras.Model, got "
            f"{type(model).__name__}: subclassed models have no graph to split."
        )
    nested = [n.layer.name for n in functional_nodes(model) if isinstance(n.layer, keras.Model)]
    if not nested:
        return model
    inputs = [keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=t.name.split(":")[0])
              for t in model.inputs]
    outputs = _inline(model, inputs)
    logger.info("Flattened the nested models %s of '%s' into one graph (same layers): the "
                "grown model is flat.", nested, model.name)
    return keras.Model(inputs, outputs[0] if len(outputs) == 1 else outputs, name=model.name)


def _inline(model, inputs):
    """``model``'s outputs on ``inputs``, calling its layers one by one, and those of any
    nested functional or Sequential model in its place."""
    model = as_functional(model) if isinstance(model, keras.Sequential) else model
    tensors = {id(ref): value for ref, value in zip(model.inputs, inputs)}
    for n in functional_nodes(model):
        args, kwargs = compat.call_arguments(n.node, tensors)
        if isinstance(n.layer, keras.Model):
            outs = _inline(n.layer, keras.tree.flatten(args))
        else:
            outs = n.layer(*args, **kwargs)
        for ref, value in zip(n.outputs, keras.tree.flatten(outs)):
            tensors[id(ref)] = value
    return [tensors[id(t)] for t in model.outputs]
