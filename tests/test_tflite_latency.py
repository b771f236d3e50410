"""Measured latency as a cost: the per-layer table, its cache per device, as a budget."""

import json

import numpy as np
import pytest

import keras_split as ks
from keras_split.select import tflite_latency
from keras_split.select.tflite_latency import TFLiteLatency
from tests import zoo


@pytest.fixture(autouse=True)
def _quick_timing(monkeypatch):
    """Timings only need to exist here: no pauses between blocks, two blocks."""
    monkeypatch.setattr(tflite_latency, "PAUSE", 0.0)
    monkeypatch.setattr(tflite_latency, "BLOCKS", 2)


def test_latency_table_is_measured_once_per_configuration_and_device(tmp_path):
    model = zoo.compiled_cnn()
    graph = model.channel_graph
    groups = sorted(graph.groups)
    latency = TFLiteLatency(repeats=5, cache_dir=str(tmp_path))
    total = latency.network_cost(graph)
    costs = latency.group_costs(graph, groups)
    assert total > 0 and np.all(np.isfinite(costs)) and np.all(costs >= 0)
    # Every timed layer at its widths, and with `step` more input or output channels.
    assert latency.measurements >= 8
    table = json.loads((tmp_path / f"{latency.device}_t1_b1.json").read_text())
    assert len(table) == latency.measurements
    # The same family again (a second stage at the widths the table has seen, another
    # process): nothing new is measured, the costs are the same numbers.
    again = TFLiteLatency(repeats=5, cache_dir=str(tmp_path))
    assert again.network_cost(graph) == total
    np.testing.assert_array_equal(again.group_costs(graph, groups), costs)
    assert again.widened_cost(graph, groups[:2]) == pytest.approx(total + costs[:2].sum())
    assert again.measurements == 0
    # Another device or thread count: a table of its own.
    other = TFLiteLatency(repeats=5, cache_dir=str(tmp_path), device="phone")
    other.network_cost(graph)
    assert other.measurements > 0 and (tmp_path / "phone_t1_b1.json").exists()
    assert latency.measure_model(model.network) > 0
    with pytest.raises(ValueError, match="Received: threads=0"):
        TFLiteLatency(threads=0)


def test_a_latency_budget_keeps_the_predicted_latency(trained_weights, tmp_path):
    model = zoo.compiled_cnn()
    model.set_weights(trained_weights)
    latency = TFLiteLatency(repeats=5, cache_dir=str(tmp_path))
    graph = model.channel_graph
    groups = sorted(graph.groups)
    costs = latency.group_costs(graph, groups)
    # A few typical groups fit (the median, not the smallest cost: one measured difference
    # can be near zero on a busy machine).
    limit = latency.network_cost(graph) + 2.5 * np.median(costs[costs > 0])
    free = model.grow(zoo.cnn_data(), growth_ratio=1.0, method="exact", dry_run=True)
    stage = model.grow(zoo.cnn_data(), growth_ratio=1.0, method="exact", dry_run=True,
                       budgets={latency: limit})
    chosen = [g for g in groups if any(
        unit in stage.layers[name]["split_indices"] for name, unit in graph.group_members(g))]
    assert 0 < stage.n_selected < free.n_selected
    assert latency.widened_cost(graph, chosen) <= limit
    assert isinstance(ks.costs.get("latency_ms"), TFLiteLatency)


def test_a_run_with_a_latency_budget_reports_predicted_and_measured(tmp_path, monkeypatch):
    import tensorflow as tf

    from keras_split.apps.report import write_report

    monkeypatch.setenv("HOME", str(tmp_path))   # the default latency table's folder
    x, y = zoo.cnn_data()
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    ks.grow_schedule(zoo.compiled_cnn, data, str(tmp_path / "run"), stages=1,
                     epochs_per_stage=1, grow_kwargs={"method": "exact",
                                                      "budgets": {"latency_ms": 100.0}})
    text = open(write_report(str(tmp_path / "run"))).read()
    assert "## Budgets" in text
    [row] = [line for line in text.splitlines() if line.startswith("| 1 | latency_ms |")]
    limit, before, after, measured = (float(c) for c in row.split("|")[3:7])
    assert limit == 100.0 and 0 < before <= after <= limit and measured > 0
    assert list((tmp_path / ".cache" / "keras_split" / "latency").glob("*_t1_b1.json"))


def test_latency_and_int8_weight_bytes_at_once(trained_weights, tmp_path):
    model = zoo.compiled_cnn()
    model.set_weights(trained_weights)
    graph = model.channel_graph
    latency = TFLiteLatency(repeats=5, cache_dir=str(tmp_path))
    flash = ks.costs.ParamBytes("int8")
    free = model.grow(zoo.cnn_data(), growth_ratio=1.0, method="exact", dry_run=True)
    limits = {latency: latency.network_cost(graph) * 1.3,
              flash: flash.network_cost(graph) + 400}
    stage = model.grow(zoo.cnn_data(), growth_ratio=1.0, method="exact", dry_run=True,
                       budgets=limits)
    assert 0 < stage.n_selected < free.n_selected
    for record in stage.limits:
        assert record.after <= record.limit
    assert {r.cost for r in stage.limits} == {"latency_ms", "param_bytes_int8"}
    # A limit below the network's latency: refused before any work, naming it.
    with pytest.raises(ValueError, match="budget 'latency_ms'"):
        model.grow(zoo.cnn_data(), budgets={latency: latency.network_cost(graph) / 2,
                                            flash: 1e9})
