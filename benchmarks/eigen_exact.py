"""The default estimate against exact eigenvalues on the CIFAR-10 families (one stage).

Each family's seed network (``benchmarks/families.py``) is trained ``--epochs`` epochs on
``--train-examples`` CIFAR-10 training images (SGD Nesterov 0.05, batch 128, the
family benchmark's seeded pipeline). At that point a first growth stage is planned on
1 024 estimation images, as ``grow()`` would:

* ``exact``: the splitting matrices on the estimation batches and their eigenvalues
  (the reference);
* ``default``: LOBPCG as a stage runs it (``eigen_tol=0.1``, the knapsack's reach,
  the noise level and the relative floor: a unit whose eigenvalue may not reach below 10 %
  of its layer's most negative one is not waited for);
* ``no_floor``: the same without the relative floor.

Reported per run: passes and seconds of each estimate; the units within reach of the
knapsack on the exact eigenvalues (``within_reach``), how many of them the estimate has
more than 5 % from exact, the largest relative error, and the Jaccard index between
the knapsack's choice on the estimate and on the exact eigenvalues.

    python benchmarks/eigen_exact.py --data-dir /tmp/cifar

Each finished run is written to ``benchmarks/results/eigen_exact.json`` as it ends and a
rerun skips it; prints a table.
"""

import argparse
import dataclasses
import functools
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
from keras_split.estimate import lobpcg  # noqa: E402
from keras_split.growing import estimation_data, growth, growth_settings  # noqa: E402
from keras_split.growing.guard import mean_loss  # noqa: E402
from keras_split.select.noise import layer_noise_floor, without_noise  # noqa: E402
from keras_split.select.reach import within_reach  # noqa: E402

from cifar10_common import (RESULTS, command_line, compile_model, load, machine,  # noqa: E402
                            normalised, training_data)
from families import FAMILIES  # noqa: E402

PATH = os.path.join(RESULTS, "eigen_exact.json")


def estimate(model, est, held, settings, relative_floor):
    """The stage's LOBPCG (``relative_floor`` as given); returns (eigenpairs, seconds)."""
    graph = model.channel_graph
    t0 = time.perf_counter()
    solver = lobpcg.LobpcgEigenSolver(graph, model.splitting_loss(), seed=settings.seed)
    noise = functools.partial(layer_noise_floor, graph)
    solver.fit(est, epochs=settings.eigen_epochs, batch_size=128, tol=settings.eigen_tol,
               floor=lambda name: noise(name, solver.products.loss),
               relative_floor=relative_floor, reach=growth.knapsack_reach(graph, settings))
    eig = solver.eigenpairs(held, 128)
    return eig, time.perf_counter() - t0


def compare(graph, exact, eig, loss, settings):
    """Errors of the units within reach on the exact values, and the choices' Jaccard."""
    on_exact = without_noise(graph, exact, loss)[0]
    selection = growth.stage_selection(graph, on_exact, settings)
    errors = []
    for name, mask in within_reach(graph, on_exact, selection, settings.value).items():
        pick = mask & (on_exact[name].values < 0)
        errors.extend(np.abs(eig[name].fit_values[pick] - exact[name].values[pick])
                      / np.abs(exact[name].values[pick]))
    fit = {n: dataclasses.replace(e, values=e.fit_values) for n, e in eig.items()}
    again = set(growth.stage_selection(graph, without_noise(graph, fit, loss)[0],
                                       settings).chosen.tolist())
    chosen = set(selection.chosen.tolist())
    errors = np.array(errors)
    return {"within_reach": int(len(errors)), "over_5pct": int((errors > 0.05).sum()),
            "max_error": float(errors.max()) if len(errors) else 0.0,
            "jaccard": len(chosen & again) / max(1, len(chosen | again))}


def trained_seed(family, seed, epochs, x, y):
    """The family's seed network trained ``epochs`` epochs on ``(x, y)`` (a compiled
    GrowingModel), and its first stage's estimation and held-out halves of 1 024 images."""
    fam = FAMILIES[family]
    keras.utils.set_random_seed(seed)
    model = ks.GrowingModel(fam.build(fam.seed_width))
    data, steps = training_data(x, y, 128, epochs, seed)
    compile_model(model, argparse.Namespace(lr=0.05), steps * 16)
    model.fit(data, epochs=epochs, steps_per_epoch=steps, verbose=0)
    est, held = estimation_data.split_holdout(tf.data.Dataset.from_tensor_slices(
        (normalised(x[:1024]), y[:1024])).batch(128))
    return model, est, held


def run(family, seed, args, x, y):
    model, est, held = trained_seed(family, seed, args.epochs, x, y)
    settings = ks.GrowthSettings(seed=seed)
    graph = model.channel_graph
    t0 = time.perf_counter()
    exact = model.splitting_eigenpairs(est, method="exact")
    out = {"family": family, "seed": seed, "exact_seconds": time.perf_counter() - t0}
    loss = mean_loss(model, est)
    for name, floor in (("default", lobpcg.RELATIVE_FLOOR), ("no_floor", 0.0)):
        eig, seconds = estimate(model, est, held, settings, floor)
        out[name] = {"passes": max(e.passes or 0 for e in eig.values()), "seconds": seconds,
                     **compare(graph, exact, eig, loss, settings)}
    return out


def print_table(runs):
    print(f"{'family':<12}{'seed':>5}{'reach':>7}" + "".join(
        f"{k + ': passes / >5% / max err / J':>38}" for k in ("default", "no_floor")))
    for r in runs:
        print(f"{r['family']:<12}{r['seed']:>5}{r['default']['within_reach']:>7}" + "".join(
            f"{r[k]['passes']:>20} / {r[k]['over_5pct']:>3} / {r[k]['max_error']:7.3f}"
            f" / {r[k]['jaccard']:.2f}" for k in ("default", "no_floor")))


def seed_network_parser(description, families):
    """The arguments of a benchmark on the families' trained seed networks."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--families", default=",".join(families))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-examples", type=int, default=4_000)
    return parser


def run_resumable(path, script, argv, args, run_one, show, n_load=None, **extra):
    """``run_one(family, seed, args, x, y)`` for every family and seed of ``args`` that
    ``path`` lacks, each written to it as it ends (with ``extra``) and shown by ``show``
    (a list of runs); then every run is shown. ``x, y``: the first ``n_load`` training
    images (``args.train_examples`` by default; a longer load starts with the same)."""
    tf.config.experimental.enable_op_determinism()
    (x, y), _, _ = load(args.data_dir, n_load or args.train_examples, 5_000)
    result = {"runs": []}
    if os.path.exists(path):
        with open(path) as f:
            result = json.load(f)
    done = {(r["family"], r["seed"]) for r in result["runs"]}
    for seed in (int(s) for s in args.seeds.split(",")):
        for family in args.families.split(","):
            if (family, seed) in done:
                continue
            result["runs"].append(run_one(family, seed, args, x, y))
            result.update(command=command_line(script, argv), machine=machine(),
                          settings={k: v for k, v in vars(args).items() if k != "data_dir"},
                          **extra)
            with open(path, "w") as f:
                json.dump(result, f, indent=1)
            show(result["runs"][-1:])
    show(result["runs"])


def main(argv=None):
    args = seed_network_parser(__doc__.split("\n")[0], FAMILIES).parse_args(argv)
    run_resumable(PATH, "eigen_exact.py", argv, args, run, print_table,
                  eigen_tol=growth_settings.EIGEN_TOL, relative_floor=lobpcg.RELATIVE_FLOOR)


if __name__ == "__main__":
    main()
