"""Grow the paper's small CIFAR-10 MobileNetV1 (8 channels everywhere) on CPU.

    tar xzf cifar10-jpeg.tar.gz -C /tmp/cifar
    python examples/cifar10_mobilenet.py --data-dir /tmp/cifar --out runs/cifar10

``--data-dir`` takes the folder layout (train/<class>/*.jpg, test/<class>/*.jpg) or
the original python/binary CIFAR-10 archives. Rerunning resumes.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", default="runs/cifar10_mobilenet")
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20,
                        help="epochs in all, one cosine schedule, growth in the first half")
    parser.add_argument("--epochs-per-stage", type=int, default=None,
                        help="instead of --epochs: this many epochs for every stage")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--blocks", type=int, default=6, help="separable blocks of the seed")
    parser.add_argument("--width", type=int, default=8, help="seed width of every layer")
    parser.add_argument("--growth-ratio", type=float, default=0.5)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--eigen-batches", type=int, default=50)
    parser.add_argument("--cost", default="flops", choices=("flops", "params", "uniform"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from keras_split import data, models
    from keras_split.apps import recipes
    from keras_split.growing.schedule import growth_epochs

    train_fn = lambda stage: recipes.one_hot(  # noqa: E731
        data.cifar_dataset(args.data_dir, "train", batch_size=args.batch_size,
                           seed=args.seed + stage, validate=False), 10)
    test = recipes.one_hot(data.cifar_dataset(args.data_dir, "test", batch_size=500,
                                              validate=False), 10)
    n_train = len(data.ImageFolder(os.path.join(args.data_dir, "train"))) \
        if os.path.isdir(os.path.join(args.data_dir, "train")) else 50_000
    rows = recipes.run_growth(
        lambda: models.mobilenet_v1_cifar(blocks=args.blocks, width=args.width),
        train_fn, test, args.out, stages=args.stages,
        epochs_per_stage=([args.epochs_per_stage] * (args.stages + 1) if args.epochs_per_stage
                          else growth_epochs(args.epochs, args.stages)),
        steps_per_epoch=max(n_train // args.batch_size, 1), learning_rate=args.learning_rate,
        growth_ratio=args.growth_ratio, eigen_batches=args.eigen_batches, seed=args.seed,
        cost=args.cost, label_smoothing=0.0, verbose=args.verbose,
        config={"model": "mobilenet_v1_cifar", "blocks": args.blocks, "width": args.width,
                "data_dir": os.path.abspath(args.data_dir), "batch_size": args.batch_size},
    )
    print(recipes.format_table(rows))
    print(f"results: {os.path.join(args.out, 'results.json')}")
    return rows


if __name__ == "__main__":
    main()
