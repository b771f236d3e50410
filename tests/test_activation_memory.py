"""Peak activation memory against the exported TFLite graph, and as a budget."""

import numpy as np
import pytest
from tensorflow.lite.python import schema_py_generated as schema

import keras_split as ks
from keras_split import models
from keras_split.select.activation_memory import PeakActivationMemory
from tests import zoo

BYTES = {schema.TensorType.FLOAT32: 4, schema.TensorType.FLOAT16: 2,
         schema.TensorType.INT8: 1, schema.TensorType.INT32: 4}


def flatbuffer_peak(content):
    """The largest sum of live tensors over a TFLite flatbuffer's operators in their order
    (a tensor lives from the operator that writes it, or the start for an input, to the
    last that reads it, or the end for an output; constants are weights, not counted)."""
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    graph = model.subgraphs[0]

    def constant(t):
        data = model.buffers[graph.tensors[t].buffer].data
        return data is not None and len(data) > 0

    first, last = {t: 0 for t in graph.inputs}, {}
    for i, op in enumerate(graph.operators):
        last.update({t: i for t in op.inputs if t >= 0 and not constant(t)})
        first.update({t: i for t in op.outputs})
    last.update({t: len(graph.operators) - 1 for t in graph.outputs})

    def size(t):
        return int(np.prod(graph.tensors[t].shape)) * BYTES[graph.tensors[t].type]

    return max(sum(size(t) for t in first if first[t] <= i <= last.get(t, first[t]))
               for i in range(len(graph.operators)))


def _tflite_peak(model, tmp_path):
    path = tmp_path / f"{model.name}_{len(list(tmp_path.iterdir()))}.tflite"
    ks.export.tflite(model, str(path))
    return flatbuffer_peak(path.read_bytes())


BUILDERS = {
    "mobilenet_v1": lambda w: models.mobilenet_v1_cifar(blocks=6, width=w, activation="relu6"),
    "mobilenet_v2": lambda w: models.mobilenet_v2_cifar(width=w, activation="relu6"),
}


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_peak_matches_the_exported_graph_at_two_widths_and_after_a_split(family, tmp_path):
    peaks = {}
    for width in (8, 16):
        network = BUILDERS[family](width)
        predicted = PeakActivationMemory().network_cost(ks.GrowingModel(network).channel_graph)
        peaks[width] = _tflite_peak(network, tmp_path)
        assert predicted == pytest.approx(peaks[width], rel=0.01)
    assert peaks[16] > 1.8 * peaks[8]
    # Splitting groups: the predicted total of the widened network is its exported peak.
    model = ks.GrowingModel(BUILDERS[family](8))
    graph = model.channel_graph
    every = sorted(graph.groups)
    marginal = PeakActivationMemory().group_costs(graph, every)
    # The three groups that raise the peak most alone, and two of the last layers'.
    groups = sorted({every[i] for i in np.argsort(-marginal)[:3]} | set(every[-2:]))
    predicted = PeakActivationMemory().widened_cost(graph, groups)
    units = {}
    for g in groups:
        name, unit = graph.group_members(g)[0]
        units.setdefault(name, []).append(unit)
    model.split(units, epsilon=0.0)
    assert predicted == pytest.approx(_tflite_peak(model.network, tmp_path), rel=0.01)
    assert predicted > peaks[8]


def test_a_peak_memory_budget_is_kept_exactly(trained_weights):
    model = zoo.compiled_cnn()
    model.set_weights(trained_weights)
    memory = PeakActivationMemory("int8")
    graph = model.channel_graph
    before = memory.network_cost(graph)
    # The peak is at the swish after "wide" (12x12, int8): its input, the logistic's
    # output and the product, 864 bytes each; a unit of "wide" adds 3 x 144 bytes there.
    assert before == 3 * 12 * 12 * 6
    assert memory.group_costs(graph, sorted(graph.groups)).max() == pytest.approx(3 * 144.0)
    free = model.grow(zoo.cnn_data(), growth_ratio=1.0, method="exact", dry_run=True)
    assert len(free.layers["wide"]["split_indices"]) >= 2
    limit = before + 500      # room for one more unit of "wide"
    stage = model.grow(zoo.cnn_data(), growth_ratio=1.0, method="exact",
                       budgets={memory: limit})
    assert len(stage.layers["wide"]["split_indices"]) <= 1
    assert memory.network_cost(model.channel_graph) <= limit
    assert stage.n_selected > 0
    with pytest.raises(ValueError, match="Received: dtype='int4'"):
        PeakActivationMemory("int4")
