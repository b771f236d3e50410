"""Memory costs (peak activation memory, parameter bytes) against the exported TFLite
flatbuffer, and as budgets."""

import numpy as np
import pytest
from tensorflow.lite.python import schema_py_generated as schema

import keras_split as ks
from keras_split import models
from keras_split.select.activation_memory import PeakActivationMemory
from keras_split.select.param_bytes import ParamBytes
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


def flatbuffer_weight_bytes(content):
    """Bytes of the constant buffers the flatbuffer's tensors hold (metadata left out)."""
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    used = {t.buffer for graph in model.subgraphs for t in graph.tensors}
    return sum(len(model.buffers[i].data) for i in used if model.buffers[i].data is not None)


def _exported(model, tmp_path, quantization=None):
    path = tmp_path / f"{model.name}_{len(list(tmp_path.iterdir()))}.tflite"
    data = np.random.default_rng(0).uniform(size=(8, 32, 32, 3)).astype("float32")
    ks.export.tflite(model, str(path), quantization=quantization,
                     representative_data=data if quantization == "int8" else None)
    return path.read_bytes()


def _tflite_peak(model, tmp_path):
    return flatbuffer_peak(_exported(model, tmp_path))


def _distinct_weights(network, seed=0):
    """Random BatchNorm statistics and biases: no two constant buffers alike (a converter
    stores identical constants once)."""
    rng = np.random.default_rng(seed)
    zoo.randomize_batchnorm(network, rng)
    for layer in network.layers:
        if getattr(layer, "use_bias", False):
            layer.bias.assign(rng.normal(size=layer.bias.shape))
    return network


BUILDERS = {
    "mobilenet_v1": lambda w: models.mobilenet_v1_cifar(blocks=6, width=w, activation="relu6"),
    "mobilenet_v2": lambda w: models.mobilenet_v2_cifar(width=w, activation="relu6"),
}


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_memory_costs_match_the_exported_graph_at_two_widths_and_after_a_split(family,
                                                                             tmp_path):
    peaks = {}
    for width in (8, 16):
        network = _distinct_weights(BUILDERS[family](width))
        graph = ks.GrowingModel(network).channel_graph
        content = _exported(network, tmp_path)
        peaks[width] = flatbuffer_peak(content)
        assert PeakActivationMemory().network_cost(graph) == pytest.approx(peaks[width],
                                                                             rel=0.01)
        assert ParamBytes().network_cost(graph) == pytest.approx(
            flatbuffer_weight_bytes(content), rel=0.01)
    assert peaks[16] > 1.8 * peaks[8]
    # Splitting groups: the predicted totals of the widened network are its exported ones.
    model = ks.GrowingModel(_distinct_weights(BUILDERS[family](8)))
    graph = model.channel_graph
    every = sorted(graph.groups)
    marginal = PeakActivationMemory().group_costs(graph, every)
    # The three groups that raise the peak most alone, and two of the last layers'.
    groups = sorted({every[i] for i in np.argsort(-marginal)[:3]} | set(every[-2:]))
    predicted = [PeakActivationMemory().widened_cost(graph, groups),
                 ParamBytes().widened_cost(graph, groups)]
    assert np.all(ParamBytes().group_costs(graph, groups) > 0)
    units = {}
    for g in groups:
        name, unit = graph.group_members(g)[0]
        units.setdefault(name, []).append(unit)
    model.split(units, epsilon=0.0)
    content = _exported(_distinct_weights(model.network, 1), tmp_path)
    assert predicted[0] == pytest.approx(flatbuffer_peak(content), rel=0.01)
    assert predicted[1] == pytest.approx(flatbuffer_weight_bytes(content), rel=0.01)
    assert predicted[0] > peaks[8]


def test_int8_param_bytes_match_the_exported_weights(tmp_path):
    network = _distinct_weights(BUILDERS["mobilenet_v1"](8))
    exported = flatbuffer_weight_bytes(_exported(network, tmp_path, "int8"))
    graph = ks.GrowingModel(network).channel_graph
    assert ParamBytes("int8").network_cost(graph) == pytest.approx(exported, rel=0.01)
    # int8 kernels, int32 biases: between a quarter and a third of the float32 bytes.
    assert 0.25 < ParamBytes("int8").network_cost(graph) / ParamBytes().network_cost(graph) \
        < 0.34
    with pytest.raises(ValueError, match="Received: dtype='int4'"):
        ParamBytes("int4")


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


def test_two_budgets_at_once_keep_both(trained_weights):
    model = zoo.compiled_cnn()
    model.set_weights(trained_weights)
    flash, ram = ParamBytes("int8"), PeakActivationMemory("int8")
    graph = model.channel_graph
    free = model.grow(zoo.cnn_data(), growth_ratio=1.0, method="exact", dry_run=True)
    limits = {flash: flash.network_cost(graph) + 400, ram: ram.network_cost(graph) + 500}
    stage = model.grow(zoo.cnn_data(), growth_ratio=1.0, method="exact", budgets=limits)
    assert 0 < stage.n_selected < free.n_selected
    for cost, limit in limits.items():
        assert cost.network_cost(model.channel_graph) <= limit
    assert ks.costs.get("param_bytes_int8").network_cost(model.channel_graph) \
        == flash.network_cost(model.channel_graph)
