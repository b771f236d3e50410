"""Knapsack selection quality and speed: exact MILP vs the paper's LP relaxation.

    python benchmarks/selection.py

Instances are made from the eigenvalues and MAC costs of a real network: a
MobileNetV1 CIFAR variant (6 blocks, width 16) trained 5 epochs on the digits,
whose per-group (lambda, cost) pairs are resampled (lambda jittered by +/-20 %)
to 1 k, 10 k and 100 k candidates, with the budget ``grow`` would use
(growth_ratio 0.5 x the network's MACs, scaled with the number of candidates).
Reports sum(lambda) reached, budget used and solve time for both solvers, and the
LP relaxation's bound. Writes ``benchmarks/results/selection.json``.
"""

import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from scipy import optimize  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def real_pairs():
    """(lambda, MAC cost) of every coupled group of a trained, once-grown network."""
    import keras

    import keras_split as ks
    from keras_split import models
    from keras_split.select import costs
    from keras_split.apps.demo import load_digits

    keras.utils.set_random_seed(0)
    (x, y), _ = load_digits()
    model = ks.GrowingModel(models.mobilenet_v1_cifar(blocks=6, width=16, input_shape=(8, 8, 1)))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=5, batch_size=64, verbose=0)
    eig = model.splitting_eigenpairs((x, y), method="fast", eigen_epochs=3)
    groups = sorted(model.channel_graph.groups)
    values = np.array([sum(eig[n].values[u] for n, u in model.channel_graph.group_members(g))
                       for g in groups])
    cost = costs.group_costs(model.channel_graph, groups, "flops")
    return values, cost, ks.count_flops(model)


def main():
    values, cost, macs = real_pairs()
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'n':>7} {'solver':>6} {'sum(lambda)':>13} {'budget used':>11} {'seconds':>8} "
          f"{'LP bound':>13}")
    from keras_split import select_neurons

    for n in (1_000, 10_000, 100_000):
        idx = rng.integers(0, len(values), n)
        v = values[idx] * rng.uniform(0.8, 1.2, n)
        c = cost[idx]
        budget = 0.5 * macs * n / len(values)
        neg = v < 0
        bound = optimize.linprog(np.where(neg, v, 0), A_ub=[c], b_ub=[budget],
                                 bounds=[(0, 1)] * n, method="highs").fun
        for solver in ("milp", "lp"):
            t0 = time.perf_counter()
            chosen = select_neurons(v, c, budget, solver=solver)
            seconds = time.perf_counter() - t0
            row = {"n": n, "solver": solver, "value": float(v[chosen].sum()),
                   "budget_used": float(c[chosen].sum() / budget), "seconds": seconds,
                   "lp_bound": float(bound)}
            rows.append(row)
            print(f"{n:>7} {solver:>6} {row['value']:>13.6g} {row['budget_used']:>11.4f} "
                  f"{seconds:>8.3f} {bound:>13.6g}", flush=True)
    result = {"command": "python benchmarks/selection.py",
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
              "source": "digits MobileNetV1-CIFAR (blocks 6, width 16), 5 epochs, fast eigenpairs",
              "rows": rows}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "selection.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {os.path.join(RESULTS, 'selection.json')}")


if __name__ == "__main__":
    main()
