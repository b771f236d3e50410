"""What one growth stage costs, in epochs of training of the model it grows (CIFAR-10).

The protocol of ``benchmarks/cifar10_growth.py`` (MobileNetV1-CIFAR width-8 seed,
swish, SGD Nesterov, batch 128, seeded stateless augmentation, op determinism,
``GrowthCallback(growth_ratio=0.5, max_stages=3, max_macs=<width 19>)``, eigenpairs
on 1 024 training images), timed rather than trained to convergence: ``fit`` runs
segments of ``--segment-steps`` steps, two per width (the first retraces the training
step of the widened model, the second is steady), and grows after every second one.

A stage's cost is fixed in seconds (LOBPCG on the estimation images, tracing the
products and the widened model's functions, the guard's held-out losses), while an
epoch grows with the training set, so it is reported against an epoch of several
training-set sizes: the 10 000 images of ``cifar10_growth.py`` (a subset chosen to
fit 2 cores) and the 45 000 of the full CIFAR-10 training split less the validation
images. An epoch's seconds are the steady step time of the model before the split
times the steps of an epoch of that size (the pipeline is the same one).

    python benchmarks/growth_stage_cost.py --data-dir /tmp/cifar

Prints a table (mean ± std over seeds) and writes
``benchmarks/results/growth_stage_cost.json``.
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

from cifar10_common import (RESULTS, Timer, command_line, compile_model, load,  # noqa: E402
                            machine, normalised, protocol_parser, training_data,
                            width_macs)


class TimedGrowth(ks.GrowthCallback):
    """A GrowthCallback that records the wall seconds of every ``grow`` call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.wall = []

    def _grow(self):
        t0 = time.perf_counter()
        super()._grow()
        self.wall.append(time.perf_counter() - t0)


def run(seed, args, train_xy):
    keras.utils.set_random_seed(seed)
    x, y = train_xy
    segments = 2 * (args.stages + 1)
    model = ks.GrowingModel(models.mobilenet_v1_cifar(blocks=6, width=8, activation="swish"))
    eig_data = (normalised(x[:args.eigen_examples]), y[:args.eigen_examples])
    grower = TimedGrowth(eig_data, every_n_epochs=2, max_stages=args.stages,
                         max_macs=width_macs(args.target_width), growth_ratio=0.5,
                         batch_size=args.batch_size, seed=seed)
    epochs = -(-segments * args.segment_steps * args.batch_size // len(x))
    data, _ = training_data(x, y, args.batch_size, epochs, seed)
    compile_model(model, args, segments * args.segment_steps)
    timer = Timer()
    model.fit(data, epochs=segments, steps_per_epoch=args.segment_steps, verbose=0,
              callbacks=[timer, grower])
    stages = []
    for k, (stage, wall) in enumerate(zip(grower.stages, grower.wall)):
        steady = timer.epochs[2 * k + 1] / args.segment_steps
        retrace = max(timer.epochs[2 * k + 2] - timer.epochs[2 * k + 3], 0.0)
        row = {"stage": k, "macs_before": stage.macs_before, "macs_after": stage.macs_after,
               "grow_seconds": wall, "parts": stage.seconds.to_dict(),
               "guard": stage.guard["action"], "passes": stage.eigen["passes"],
               "retrace_seconds": retrace,
               "step_seconds": steady}
        for n in args.train_sizes:
            epoch = steady * (n // args.batch_size)
            row[f"epochs_{n}"] = wall / epoch
            row[f"epochs_with_retrace_{n}"] = (wall + retrace) / epoch
        stages.append(row)
    return {"seed": seed, "stages": stages, "segment_seconds": timer.epochs}


def table(runs, sizes):
    rows = []
    for k in range(len(runs[0]["stages"])):
        per = [r["stages"][k] for r in runs if len(r["stages"]) > k]
        row = {"stage": k, "seeds": len(per)}
        keys = ["macs_before", "grow_seconds", "passes", "retrace_seconds"] + [
            f"{p}_{n}" for n in sizes for p in ("epochs", "epochs_with_retrace")]
        for key in keys:
            row[key + "_mean"] = float(np.mean([s[key] for s in per]))
            row[key + "_std"] = float(np.std([s[key] for s in per]))
        for part in per[0]["parts"]:
            row[part + "_mean"] = float(np.mean([s["parts"][part] for s in per]))
        rows.append(row)
    return rows


def print_table(rows, sizes):
    head = (f"{'stage':<6}{'MACs before':>12}{'grow s':>14}{'eigen s':>8}{'passes':>7}"
            f"{'split s':>8}"
            f"{'retrace s':>14}" + "".join(f"{f'epochs@{n}':>24}" for n in sizes))
    print(head)
    for r in rows:
        cells = "".join(
            f"{r[f'epochs_{n}_mean']:>8.2f}±{r[f'epochs_{n}_std']:.2f} "
            f"({r[f'epochs_with_retrace_{n}_mean']:.2f}±{r[f'epochs_with_retrace_{n}_std']:.2f})"
            for n in sizes)
        print(f"{r['stage']:<6}{r['macs_before_mean']:>12,.0f}"
              f"{r['grow_seconds_mean']:>8.2f}±{r['grow_seconds_std']:.2f}"
              f"{r['eigen_mean']:>8.2f}{r['passes_mean']:>7.1f}{r['split_mean']:>8.2f}"
              f"{r['retrace_seconds_mean']:>8.2f}±{r['retrace_seconds_std']:.2f}{cells}")
    print("epochs@N: grow seconds / seconds of one epoch of N images "
          "(in brackets: with the retrace of the training step after the split)")


def main(argv=None):
    parser = protocol_parser(__doc__.split("\n")[0])
    parser.add_argument("--segment-steps", type=int, default=40)
    parser.add_argument("--train-sizes", type=int, nargs="+", default=[10_000, 45_000])
    parser.add_argument("--target-width", type=int, default=19)
    args = parser.parse_args(argv)
    tf.config.experimental.enable_op_determinism()
    started = time.perf_counter()
    train_xy, _, _ = load(args.data_dir, 45_000, 5_000)
    runs = []
    os.makedirs(RESULTS, exist_ok=True)
    for seed in range(args.seeds):
        runs.append(run(seed, args, train_xy))
        print(f"seed {seed}: " + ", ".join(
            f"stage {s['stage']} {s['grow_seconds']:.1f} s" for s in runs[-1]["stages"]),
            flush=True)
        result = {"command": command_line("growth_stage_cost.py", argv),
                  "settings": {k: v for k, v in vars(args).items() if k != "data_dir"},
                  "machine": machine(),
                  "wall_seconds": time.perf_counter() - started,
                  "complete": seed == args.seeds - 1, "runs": runs,
                  "table": table(runs, args.train_sizes)}
        with open(os.path.join(RESULTS, "growth_stage_cost.json"), "w") as f:
            json.dump(result, f, indent=1)
    print_table(result["table"], args.train_sizes)


if __name__ == "__main__":
    main()
