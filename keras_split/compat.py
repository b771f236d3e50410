"""Framework internals that no public API serves, wrapped in one place.

Every function here reads a private Keras or TensorFlow structure; each says
why no public API does the job, so that a framework upgrade breaks only this
module.
"""

import numpy as np


def tflite_constant_elements(content):
    """``{type name: elements}`` of the constant tensors (weights, biases) of a TFLite model.

    Why private: the TFLite ``Interpreter`` lists tensors and their types but not
    which of them are constants, so what a quantization stored as int8 or float16
    can only be read from the flatbuffer, with the schema module TensorFlow
    generates (``tensorflow.lite.python.schema_py_generated``).

    Example:
        >>> tflite_constant_elements(converter.convert())
        {'INT8': 9120, 'INT32': 120}
    """
    from tensorflow.lite.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(bytearray(content), 0)
    counts = {}
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            buffer = model.Buffers(tensor.Buffer())
            if buffer is None or (buffer.DataLength() == 0 and not buffer.Size()):
                continue
            shape = tensor.ShapeAsNumpy() if tensor.ShapeLength() else np.zeros(0, np.int32)
            name = names.get(tensor.Type(), str(tensor.Type()))
            counts[name] = counts.get(name, 0) + int(np.prod(shape))
    return counts
