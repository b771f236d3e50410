"""count_flops against TensorFlow's profiler, and per-group split costs against real splits."""

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

import keras_split as ks
from keras_split.select import costs
from tests import zoo

L = keras.layers
MAC_OPS = ("Conv2D", "DepthwiseConv2dNative", "MatMul", "BatchMatMulV2")


def profiler_float_ops(model):
    """Float ops per op type of one inference example, from tf.compat.v1.profiler."""
    fn = tf.function(lambda x: model(x, training=False))
    spec = tf.TensorSpec((1,) + tuple(model.inputs[0].shape[1:]), tf.float32)
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function(spec))
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts.update(output="none", max_depth=100000)
    prof = tf.compat.v1.profiler.profile(graph=frozen.graph, cmd="scope", options=opts)
    types = {op.name: op.type for op in frozen.graph.get_operations()}
    counts, stack = collections.Counter(), [prof]
    while stack:
        node = stack.pop()
        if node.name in types:
            counts[types[node.name]] += node.float_ops
        stack.extend(node.children)
    return counts


# cnn_bn_swish has a dilated convolution, which TensorFlow runs as SpaceToBatchND + Conv2D
# on a padded grid: the profiler then counts the padding positions too. It is checked
# against the closed form in test_count_flops_dilated_and_strided instead.
@pytest.mark.parametrize("topology", ["separable", "flatten_dense", "residual", "concatenate", "mlp"])
def test_count_flops_matches_profiler(topology):
    model = zoo.TOPOLOGIES[topology]()
    ops = profiler_float_ops(model)
    profiler_macs = sum(ops[t] for t in MAC_OPS) / 2  # one MAC = a multiply and an add
    assert profiler_macs > 0
    assert ks.count_flops(model) == pytest.approx(profiler_macs, rel=0.01)


def test_count_flops_dilated_and_strided():
    model = zoo.cnn_bn_swish()
    # c1: 9x9 -> 5x5 (stride 2, same), c2: dilated 3x3 same on 5x5, c3: 2x2 valid -> 4x4
    expected = 5 * 5 * 27 * 4 + 5 * 5 * 9 * 4 * 5 + 4 * 4 * 4 * 5 * 3 + 3 * 2
    assert ks.count_flops(model) == expected


def test_count_flops_of_recurrent_and_transposed_layers():
    """One MAC per kernel and recurrent-kernel weight per step (both directions of a
    Bidirectional layer); one per transposed-convolution weight per input position."""
    x = keras.Input((10, 3))
    h = L.LSTM(4, return_sequences=True)(x)               # 10 steps * (3 + 4) * 16
    h = L.Bidirectional(L.GRU(5))(h)                       # 10 * 2 * (4 + 5) * 15
    recurrent = keras.Model(x, L.Dense(2)(h))
    assert ks.count_flops(recurrent) == 10 * 7 * 16 + 10 * 2 * 9 * 15 + 10 * 2
    x = keras.Input((5, 5, 3))
    h = L.Conv2DTranspose(4, 3, strides=2, padding="same")(x)   # 25 positions * 3*3*4*3
    y = keras.Input((7, 2))
    z = L.Conv1DTranspose(3, 4, strides=1)(L.SimpleRNN(2, return_sequences=True)(y))
    assert ks.count_flops(keras.Model(x, h)) == 25 * 108
    assert ks.count_flops(keras.Model(y, z)) == 7 * (2 * 2 + 2 * 2) + 7 * 4 * 3 * 2


@pytest.mark.parametrize("topology", sorted(zoo.TOPOLOGIES))
def test_group_costs_equal_measured_increase(topology):
    base = zoo.TOPOLOGIES[topology]()
    graph = ks.GrowingModel(base).channel_graph
    groups = sorted(graph.groups)
    flops = costs.group_costs(graph, groups, "flops")
    params = costs.group_costs(graph, groups, "params")
    macs0, params0 = ks.count_flops(base), base.count_params()
    for i in (0, len(groups) // 2, len(groups) - 1):
        model = ks.GrowingModel(zoo.TOPOLOGIES[topology]())
        name, unit = graph.group_members(groups[i])[0]
        model.split({name: [unit]}, epsilon=0.0)
        assert ks.count_flops(model) - macs0 == flops[i]
        assert model.count_params() - params0 == params[i]
    # The whole selection together, cross terms included.
    chosen = groups[::2]
    model = ks.GrowingModel(zoo.TOPOLOGIES[topology]())
    plan = {}
    for g in chosen:
        name, unit = graph.group_members(g)[0]
        plan.setdefault(name, []).append(unit)
    model.split(plan, epsilon=0.0)
    assert ks.count_flops(model) == costs.widened_cost(graph, chosen, "flops")
    assert model.count_params() == costs.widened_cost(graph, chosen, "params")
    assert np.all(flops > 0)
