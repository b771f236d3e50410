"""The exact method's peak memory on a Conv2D -> Conv2D -> Dense network (run by
test_exact_memory in a process of its own).

Usage: ``python -m tests.exact_memory_job WIDTH SIZE N MAX_BYTES``: Conv2D(WIDTH),
Conv2D(4 WIDTH), Dense(8 WIDTH) on N images of SIZE x SIZE, in one batch. Prints one
JSON line: the growth of the peak resident memory over the memory held once the model
and the data are built (``peak_bytes``), the seconds, and the plan's sub-batch.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_split as ks  # noqa: E402
from keras_split.estimate import exact, exact_memory  # noqa: E402

L = keras.layers


def network(width, size):
    x = keras.Input((size, size, 3), name="x")
    h = L.Conv2D(width, 3, padding="same", activation="relu", name="c1")(x)
    h = L.Conv2D(4 * width, 3, padding="same", activation="relu", name="c2")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    h = L.Dense(8 * width, activation="relu", name="d1")(h)
    return keras.Model(x, L.Dense(10, name="logits")(h))


def resident_bytes(field="VmRSS"):
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak) of this process, in bytes."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(f"{field}:"))
    return int(line.split()[1]) * 1024


def reset_peak():
    """Sets the resident peak (``VmHWM``) to the resident memory now, so that the peak
    read later is the method's alone, not an earlier one of imports or building."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main(width, size, n, max_bytes):
    keras.utils.set_random_seed(0)
    model = ks.GrowingModel(network(width, size))
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, size, size, 3)).astype("float32")
    y = rng.integers(0, 10, size=n)
    plans, contractions = [], []
    fit_examples, contract = exact_memory.MemoryPlan.fit_examples, exact.ExactMatrices.contract

    def spy_fit(plan, *args):
        plans.append(plan)
        return fit_examples(plan, *args)

    def spy_contract(self, *args):
        contractions.append(1)
        return contract(self, *args)

    exact_memory.MemoryPlan.fit_examples = spy_fit
    exact.ExactMatrices.contract = spy_contract
    reset_peak()
    baseline = resident_bytes()
    start = time.perf_counter()
    eig = model.splitting_eigenpairs((x, y), method="exact", batch_size=n, max_bytes=max_bytes)
    seconds = time.perf_counter() - start
    peak = resident_bytes("VmHWM")
    print(json.dumps({
        "peak_bytes": peak - baseline, "baseline_bytes": baseline, "seconds": seconds,
        "matrices_bytes": plans[0].matrices, "examples": plans[0].examples,
        "example_bytes": plans[0].example_bytes, "contractions": len(contractions),
        "finite": bool(all(np.isfinite(e.values).all() for e in eig.values()))}))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:5]))
