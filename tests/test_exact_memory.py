"""The exact method's memory cap: measured peaks, refusals, and chunks that change nothing."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras_split as ks
from keras_split.estimate import exact, exact_memory
from tests import exact_memory_job, zoo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 2 ** 20


def _peak(width, size, n, max_bytes):
    """The job's JSON line: the peak memory growth of one exact run in a fresh process."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    args = [sys.executable, "-m", "tests.exact_memory_job", str(width), str(size), str(n),
            str(max_bytes)]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_within_cap(result, cap, n):
    assert result["finite"]
    assert result["examples"] < n, result  # the cap splits the batch ...
    assert result["contractions"] > 3 * -(-n // result["examples"]), result  # ... and the layers
    assert result["peak_bytes"] <= 1.25 * cap, (result["peak_bytes"] / cap, result)


def test_exact_peak_stays_within_cap():
    """Conv2D(24) -> Conv2D(96) -> Dense(192) on 64 images of 16x16: 48 MiB of matrices,
    about 1.3 GiB for one unchunked contraction; the cap makes it chunk."""
    cap = 128 * MIB
    _assert_within_cap(_peak(24, 16, 64, cap), cap, 64)


@pytest.mark.slow
def test_exact_peak_stays_within_cap_full_size():
    """Conv2D(64) -> Conv2D(256) -> Dense(512) on 64 images of 32x32: 0.88 GiB of
    matrices, about 36 GiB for one unchunked contraction."""
    cap = 1280 * MIB
    _assert_within_cap(_peak(64, 32, 64, cap), cap, 64)


def test_cap_below_the_matrices_is_refused_before_any_work(monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the refusal came after the work had started")

    monkeypatch.setattr(exact, "ExactMatrices", no_work)
    model = ks.GrowingModel(exact_memory_job.network(64, 32))
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((4, 32, 32, 3), "float32")
    y = np.zeros((4, 10), "float32")
    with pytest.raises(ValueError) as err:
        model.splitting_eigenpairs((x, y), method="exact", max_bytes=512 * MIB)
    message = str(err.value)
    assert "would need 0.9" in message and "0.88 GiB for the float64 splitting matrices" in message
    assert "c2: 256x576x576" in message
    assert f"Received: max_bytes={512 * MIB}" in message


def test_plan_chunks_cover_every_neuron_and_position_within_the_room():
    sizes = {"conv": (96, 216), "dense": (192, 96)}
    plan = exact_memory.MemoryPlan(sizes, {"conv": 4, "dense": 4}, 160 * MIB)
    examples = plan.fit_examples(2 * MIB)
    assert 1 < examples < 64
    for name, positions in (("conv", 256), ("dense", 1)):
        for n in (examples, examples - 1):
            rows = n * positions
            seen = np.zeros((sizes[name][0], rows), int)
            for k0, k1, n0, n1 in plan.chunks(name, rows, n):
                seen[k0:k1, n0:n1] += 1
                assert plan.chunk_bytes(name, k1 - k0, n1 - n0) <= plan.chunk_room
            assert (seen == 1).all()
    assert plan.eigh_units("conv") < 96
    assert exact_memory.eigh_bytes(plan.eigh_units("conv"), 216) <= plan.eigh_room
    used = plan.max_bytes - plan.room + examples * plan.example_bytes + plan.chunk_room
    assert used + plan.eigh_room <= plan.max_bytes


def _smallest_cap(model, x, y):
    """A cap with room for the float64 matrices and three examples' tensors."""
    graph, loss_fn = model.channel_graph, model.splitting_loss()
    plan = exact.memory_plan(graph, graph.splittable_layers, 2 ** 40)
    example = exact.ExactMatrices(graph, loss_fn).example_bytes(x, y, None)
    return 2 ** 40 - plan.room + 3 * example + plan.smallest_chunk + plan.smallest_eigh


class _TinyChunks(exact_memory.MemoryPlan):
    """Sub-batches of 5 examples, chunks of 2 neurons over 7 positions, ``eigh`` of 2
    matrices at a time, whatever the cap."""

    def fit_examples(self, example_bytes, batch_size=None):
        self.examples = 5
        return 5

    def chunks(self, name, rows, examples):
        units = self.sizes[name][0]
        for k0 in range(0, units, 2):
            for n0 in range(0, rows, 7):
                yield k0, min(k0 + 2, units), n0, min(n0 + 7, rows)

    def eigh_units(self, name):
        return 2


def _assert_same(whole, parts, rtol=1e-10):
    for name, s in whole.items():
        a, b = (s, parts[name]) if isinstance(s, np.ndarray) else (s.values, parts[name].values)
        np.testing.assert_allclose(b, a, rtol=rtol, atol=1e-12 * np.abs(a).max())


def test_chunked_matrices_and_eigenpairs_equal_unchunked(float64, monkeypatch):
    model = zoo.compiled_topology("cnn_bn_swish")
    x, y = zoo.data_for(model.network, n=24)
    graph, loss_fn = model.channel_graph, model.splitting_loss()
    calls = []
    contract = exact.ExactMatrices.contract
    monkeypatch.setattr(exact.ExactMatrices, "contract",
                        lambda self, *a: calls.append(1) or contract(self, *a))
    whole = exact.splitting_matrices(graph, loss_fn, (x, y), batch_size=24)
    eig = exact.exact_eigenpairs(graph, loss_fn, (x, y), batch_size=24)
    assert len(calls) == 2 * len(whole)
    cap = _smallest_cap(model, x, y)
    capped = dict(batch_size=24, max_bytes=cap)
    _assert_same(whole, exact.splitting_matrices(graph, loss_fn, (x, y), **capped))
    assert len(calls) > 8 * len(whole)
    _assert_same(eig, exact.exact_eigenpairs(graph, loss_fn, (x, y), **capped), 1e-9)
    monkeypatch.setattr(exact_memory, "MemoryPlan", _TinyChunks)
    _assert_same(whole, exact.splitting_matrices(graph, loss_fn, (x, y), batch_size=24))
    _assert_same(eig, exact.exact_eigenpairs(graph, loss_fn, (x, y), batch_size=24), 1e-9)
