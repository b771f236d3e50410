"""How far LOBPCG should converge: the knapsack's choice against the estimation sample's noise.

On the protocol of ``benchmarks/cifar10_growth.py`` (MobileNetV1-CIFAR width-8 seed,
swish, 10 000 training images, SGD Nesterov, batch 128, seeded stateless
augmentation), the network is trained 3 epochs before each of 3 stages. At every
stage, ``grow(..., dry_run=True)`` plans the split from 1 024 estimation images
(set A) with LOBPCG stopped at each ``--tols`` value, and from another 1 024 images
(set B) at the tightest one. Reported per stage: the LOBPCG passes, the seconds of the
estimate and its residual ratio on the 256 held-out images, and the Jaccard index of
the chosen units (``|A & B| / |A | B|``)

* between each tolerance and the tightest, on the same images (the solver's error);
* between set A and set B at the tightest tolerance (the sample's error).

The stage itself is then grown from set A with ``grow()``'s defaults.

    python benchmarks/eigen_tol.py --data-dir /tmp/cifar

Prints a table and writes ``benchmarks/results/eigen_tol.json``.
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras_split as ks  # noqa: E402
from keras_split import models  # noqa: E402

from cifar10_common import (RESULTS, command_line, compile_model, load, machine,  # noqa: E402
                            normalised, protocol_parser, training_data)


def chosen_units(stage):
    return {(name, u) for name, layer in stage.layers.items() for u in layer["split_indices"]}


def jaccard(a, b):
    return len(a & b) / max(1, len(a | b))


def run(seed, args, x, y):
    keras.utils.set_random_seed(seed)
    n = args.eigen_examples
    sets = [(normalised(x[k * n:(k + 1) * n]), y[k * n:(k + 1) * n]) for k in range(2)]
    model = ks.GrowingModel(models.mobilenet_v1_cifar(blocks=6, width=8, activation="swish"))
    data, steps = training_data(x, y, args.batch_size, 3 * args.stages, seed)
    compile_model(model, args, steps * 3 * args.stages)
    rows = []
    for stage in range(args.stages):
        model.fit(data, epochs=1, steps_per_epoch=3 * steps, verbose=0)
        plans = {}
        for k, tol in [(0, t) for t in args.tols] + [(1, min(args.tols))]:
            t0 = time.perf_counter()
            plan = model.grow(*sets[k], growth_ratio=0.5, batch_size=args.batch_size, seed=seed,
                              eigen_tol=tol, dry_run=True)
            plans[k, tol] = {"units": chosen_units(plan), "passes": plan.eigen["passes"],
                             "seconds": time.perf_counter() - t0,
                             "held_out_residual_ratio": plan.eigen["residual_ratio"]}
        tight = plans[0, min(args.tols)]["units"]
        rows.append({
            "seed": seed, "stage": stage,
            "tols": {str(t): {"passes": plans[0, t]["passes"],
                              "seconds": plans[0, t]["seconds"],
                              "held_out_residual_ratio": plans[0, t]["held_out_residual_ratio"],
                              "jaccard_vs_tightest": jaccard(plans[0, t]["units"], tight)}
                     for t in args.tols},
            "jaccard_set_a_vs_b": jaccard(tight, plans[1, min(args.tols)]["units"])})
        model.grow(*sets[0], growth_ratio=0.5, batch_size=args.batch_size, seed=seed)
    return rows


def table(rows, tols):
    out = []
    for stage in sorted({r["stage"] for r in rows}):
        rs = [r for r in rows if r["stage"] == stage]
        row = {"stage": stage, "seeds": len(rs),
               "jaccard_set_a_vs_b": [r["jaccard_set_a_vs_b"] for r in rs]}
        for t in map(str, tols):
            row[t] = {k: [r["tols"][t][k] for r in rs] for k in (
                "passes", "seconds", "held_out_residual_ratio", "jaccard_vs_tightest")}
        out.append(row)
    return out


def print_table(rows, tols):
    tight = str(min(tols))
    print(f"{'stage':<6}" + "".join(f"{f'tol {t}: passes / s / J':>30}" for t in tols)
          + f"{'J(set A, set B) at ' + tight:>26}")
    for r in rows:
        cells = "".join(
            f"{np.mean(r[str(t)]['passes']):>12.1f} / {np.mean(r[str(t)]['seconds']):4.1f}"
            f" / {np.mean(r[str(t)]['jaccard_vs_tightest']):.2f}" for t in tols)
        print(f"{r['stage']:<6}{cells}{np.mean(r['jaccard_set_a_vs_b']):>26.2f}")
    print("J: Jaccard index of the units the knapsack chose, against the tightest tolerance "
          "on the same images (mean over seeds)")


def main(argv=None):
    parser = protocol_parser(__doc__.split("\n")[0])
    parser.add_argument("--tols", type=float, nargs="+", default=[0.01, 0.05, 0.2])
    args = parser.parse_args(argv)
    tf.config.experimental.enable_op_determinism()
    started = time.perf_counter()
    (x, y), _, _ = load(args.data_dir, 45_000, 5_000)
    x, y = x[:10_000], y[:10_000]
    rows = []
    for seed in range(args.seeds):
        rows += run(seed, args, x, y)
        result = {"command": command_line("eigen_tol.py", argv),
                  "settings": {k: v for k, v in vars(args).items() if k != "data_dir"},
                  "machine": machine(), "wall_seconds": time.perf_counter() - started,
                  "complete": seed == args.seeds - 1, "rows": rows,
                  "table": table(rows, args.tols)}
        with open(os.path.join(RESULTS, "eigen_tol.json"), "w") as f:
            json.dump(result, f, indent=1)
    print_table(table(rows, args.tols), args.tols)


if __name__ == "__main__":
    main()
