"""Framework internals that no public API serves, wrapped in one place.

Every function here reads a private Keras or TensorFlow structure, or works
around framework behaviour no public switch controls; each says why no public
API does the job, so that a framework upgrade breaks only this module.
"""

import contextlib
import os
import sys
import tempfile

import numpy as np


@contextlib.contextmanager
def native_output_held(fd=2, replay=True):
    """Holds back what native code writes to file descriptor ``fd`` meanwhile.

    Why: TensorFlow's shared libraries log through absl at import, before
    ``TF_CPP_MIN_LOG_LEVEL`` is read, and HiGHS (under ``scipy.optimize.milp``)
    prints solver notes to stdout even with ``disp=False``; neither has a
    switch, so the descriptor is pointed at a temporary file for the duration.
    What was held is written out if the block raises (``replay``).

    Example:
        >>> with native_output_held(1):
        ...     res = scipy.optimize.milp(...)
    """
    stream = sys.stdout if fd == 1 else sys.stderr
    stream.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), fd)
        try:
            yield
        except BaseException:
            os.dup2(saved, fd)
            if replay:
                held.seek(0)
                stream.write(held.read().decode(errors="replace"))
                stream.flush()
            raise
        finally:
            os.dup2(saved, fd)
            os.close(saved)


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


def keras_applications_channelwise_layers():
    """Per-channel custom layers of ``keras.applications`` (ConvNeXt's ``LayerScale``).

    Why private: keras.applications defines them inside its model modules and
    does not export them, and a handler is looked up by the layer's exact class.
    """
    found = []
    try:
        from keras.src.applications import convnext

        found.append(convnext.LayerScale)
    except (ImportError, AttributeError):   # pragma: no cover - another Keras version
        pass
    return found


def graph_nodes(model):
    """The operation nodes of a functional model in execution order (inputs left out).

    Why private: Keras keeps a functional graph's nodes in ``_nodes_by_depth``;
    no public API walks the graph node by node (``model.layers`` loses the
    calls, their arguments and op nodes).
    """
    nodes = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.operation is not None and not node.is_input:
                nodes.append(node)
    return nodes
