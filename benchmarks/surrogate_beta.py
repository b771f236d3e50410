"""How much a first stage's choice depends on the ReLU surrogate's sharpness (CIFAR-10).

A piecewise-linear activation has no second derivative, so the splitting matrices of
ReLU-family networks use that of ``softplus(beta z) / beta`` (``surrogate_beta``, 3 by
default). Each ReLU family's seed network (``benchmarks/families.py``) is trained
``--epochs`` epochs on ``--train-examples`` CIFAR-10 training images, as in
``eigen_exact.py``; then, for every ``beta`` of ``--betas``, the exact splitting matrices
on a stage's estimation batches (768 of 1 024 images) and on its held-out batches (the
other 256), and the default knapsack's choice (``GrowthSettings()``) on each. Reported
per run and ``beta``: the units chosen, the Jaccard index between the choices on the
estimation and held-out images (the choice's stability to the sample) and between the
choice and the default ``beta``'s (how much ``beta`` moves it).

    python benchmarks/surrogate_beta.py --data-dir /tmp/cifar

Each finished run is written to ``benchmarks/results/surrogate_beta.json`` as it ends and
a rerun skips it; prints a table.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras_split as ks  # noqa: E402
from keras_split.graph.activations import SOFTPLUS_BETA  # noqa: E402
from keras_split.growing import growth  # noqa: E402
from keras_split.growing.guard import mean_loss  # noqa: E402
from keras_split.select.noise import without_noise  # noqa: E402

from cifar10_common import RESULTS, compile_model  # noqa: E402
from eigen_exact import run_resumable, seed_network_parser, trained_seed  # noqa: E402

PATH = os.path.join(RESULTS, "surrogate_beta.json")
RELU_FAMILIES = ("vgg_relu", "resnet_relu", "mbv2_relu6")


def jaccard(a, b):
    return len(a & b) / max(1, len(a | b))


def choice(model, data, settings):
    """The default knapsack's choice (a set of unit indices) on ``data``'s exact values."""
    graph = model.channel_graph
    exact = model.splitting_eigenpairs(data, method="exact")
    values = without_noise(graph, exact, mean_loss(model, data))[0]
    return set(growth.stage_selection(graph, values, settings).chosen.tolist())


def run(family, seed, args, x, y):
    trained, est, held = trained_seed(family, seed, args.epochs, x, y)
    settings = ks.GrowthSettings(seed=seed)
    chosen, out = {}, {"family": family, "seed": seed, "betas": {}}
    for beta in (float(b) for b in args.betas.split(",")):
        model = ks.GrowingModel(trained.network, surrogate_beta=beta)
        compile_model(model, argparse.Namespace(lr=0.05), 1)
        chosen[beta] = choice(model, est, settings)
        out["betas"][str(beta)] = {"chosen": len(chosen[beta]),
                                   "est_vs_held": jaccard(chosen[beta],
                                                                  choice(model, held, settings))}
    for beta, units in chosen.items():
        out["betas"][str(beta)]["vs_default"] = jaccard(units, chosen.get(SOFTPLUS_BETA, units))
    return out


def print_table(runs):
    print(f"{'family':<12}{'seed':>5}{'beta':>7}{'chosen':>8}{'J est/held':>12}{'J vs 3':>8}")
    for r in runs:
        for beta, b in r["betas"].items():
            print(f"{r['family']:<12}{r['seed']:>5}{beta:>7}{b['chosen']:>8}"
                  f"{b['est_vs_held']:>12.2f}{b['vs_default']:>8.2f}")


def main(argv=None):
    parser = seed_network_parser(__doc__.split("\n")[0], RELU_FAMILIES)
    parser.add_argument("--betas", default="1,3,10")
    args = parser.parse_args(argv)
    run_resumable(PATH, "surrogate_beta.py", argv, args, run, print_table)


if __name__ == "__main__":
    main()
