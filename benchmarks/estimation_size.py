"""How stable a first stage's choice is to its estimation sample, by sample size (CIFAR-10).

Each family's seed network (``benchmarks/families.py``) is trained ``--epochs`` epochs on
the first ``--train-examples`` CIFAR-10 training images, as in ``eigen_exact.py``. Then,
for every size ``n`` of ``--sizes``, two disjoint samples of ``n`` further training
images (not trained on) give exact splitting matrices and the default knapsack's choice
(``GrowthSettings()``) on each. Reported per run and size: the units chosen on each
sample and the Jaccard index between the two choices (1.0: the sample does not matter).
A stage estimates on 768 images by default (1 024, less the held-out batches).

    python benchmarks/estimation_size.py --data-dir /tmp/cifar

Each finished run is written to ``benchmarks/results/estimation_size.json`` as it ends
and a rerun skips it; prints a table.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402

import keras_split as ks  # noqa: E402

from cifar10_common import RESULTS, load, normalised  # noqa: E402
from eigen_exact import run_resumable, seed_network_parser, trained_seed  # noqa: E402
from families import FAMILIES  # noqa: E402
from surrogate_beta import choice, jaccard  # noqa: E402

PATH = os.path.join(RESULTS, "estimation_size.json")


def run(family, seed, args, x, y):
    n_train = args.train_examples
    model = trained_seed(family, seed, args.epochs, x[:n_train], y[:n_train])[0]
    settings = ks.GrowthSettings(seed=seed)
    out = {"family": family, "seed": seed, "sizes": {}}
    for n in (int(s) for s in args.sizes.split(",")):
        picks = []
        for k in range(2):
            lo = n_train + k * n
            picks.append(choice(model, tf.data.Dataset.from_tensor_slices(
                (normalised(x[lo:lo + n]), y[lo:lo + n])).batch(128), settings))
        out["sizes"][str(n)] = {"chosen": [len(p) for p in picks],
                                "jaccard": jaccard(*picks)}
    return out


def print_table(runs):
    lines = [f"{'family':<12}{'seed':>5}{'images':>8}{'chosen':>10}{'Jaccard':>9}"]
    lines += [f"{r['family']:<12}{r['seed']:>5}{n:>8}{str(s['chosen']):>10}{s['jaccard']:>9.2f}"
              for r in runs for n, s in r["sizes"].items()]
    print("\n".join(lines))


def main(argv=None):
    parser = seed_network_parser(__doc__.split("\n")[0], FAMILIES)
    parser.add_argument("--sizes", default="768,3072")
    args = parser.parse_args(argv)
    need = args.train_examples + 2 * max(int(s) for s in args.sizes.split(","))
    run_resumable(PATH, "estimation_size.py", argv, args, run, print_table, n_load=need)


if __name__ == "__main__":
    main()
