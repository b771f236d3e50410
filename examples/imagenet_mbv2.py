"""Grow MobileNetV2 from a 0.3x seed on ImageNet by energy-aware splitting (the paper's recipe).

    python examples/imagenet_mbv2.py --data-dir /data/imagenet --out runs/mbv2 \
        --stages 3 --epochs 120 --batch-size 256

Training, eigen estimation and splitting run under tf.distribute.MirroredStrategy
(all visible GPUs). Rerunning the same command resumes after the last complete
stage. ``--cpu-devices N`` splits the CPU into N logical devices (for testing
the distributed path without GPUs).

Across machines, ``--strategy multi_worker`` runs under
tf.distribute.MultiWorkerMirroredStrategy: start the same command on every host,
each with its own ``TF_CONFIG`` (the cluster's ``host:port`` list and this host's
index), and an ``--out`` folder that every host can read (a shared file system or
``gs://``); the chief (worker 0) alone writes it. ``--batch-size`` is the global
batch, split over every replica of every worker. A worker that dies stops the
others within ``--collective-timeout`` seconds (sooner when its heartbeats stop);
the same command on every host resumes after the last complete stage.

    TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]},
                "task": {"type": "worker", "index": 0}}' \
    python examples/imagenet_mbv2.py --strategy multi_worker --data-dir gs://b/imagenet \
        --out gs://b/runs/mbv2
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv, default_width=0.3, model="mobilenet_v2"):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True,
                        help="ImageNet TFRecord shards or train/ and val/ folders")
    parser.add_argument("--out", default=f"runs/imagenet_{model}", help="run directory")
    parser.add_argument("--stages", type=int, default=3, help="growth stages after the seed")
    parser.add_argument("--epochs", type=int, default=120,
                        help="epochs in all, one cosine schedule, growth in the first half")
    parser.add_argument("--epochs-per-stage", type=int, default=None,
                        help="instead of --epochs: this many epochs for every stage")
    parser.add_argument("--batch-size", type=int, default=256, help="global batch size")
    parser.add_argument("--width", type=float, default=default_width, help="seed width multiplier")
    parser.add_argument("--growth-ratio", type=float, default=0.5)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="peak learning rate (default 0.1 x batch/256)")
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--eigen-batches", type=int, default=100,
                        help="training batches for eigen estimation per stage")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--train-examples", type=int, default=1_281_167,
                        help="training set size (for the learning-rate schedule)")
    parser.add_argument("--cost", default="flops", choices=("flops", "params", "uniform"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu-devices", type=int, default=0,
                        help="split the CPU into this many logical devices (testing)")
    parser.add_argument("--strategy", default="mirrored", choices=("mirrored", "multi_worker"),
                        help="one host (MirroredStrategy) or several (MultiWorkerMirrored"
                             "Strategy, reading TF_CONFIG)")
    parser.add_argument("--collective-timeout", type=float, default=600.0,
                        help="multi_worker: seconds a collective waits for the other workers")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    return parser.parse_args(argv)


def main(argv=None, model="mobilenet_v2", default_width=0.3):
    args = parse_args(argv, default_width, model)
    import tensorflow as tf

    if args.strategy == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise SystemExit("--strategy multi_worker reads the cluster from TF_CONFIG, "
                             "which is not set.")
        # Created before any other TensorFlow call, as the strategy requires.
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                timeout_seconds=args.collective_timeout))
    elif args.cpu_devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_devices)
        strategy = tf.distribute.MirroredStrategy(
            [f"/cpu:{i}" for i in range(args.cpu_devices)])
    else:
        strategy = tf.distribute.MirroredStrategy()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from keras_split import data, models
    from keras_split.apps import recipes
    from keras_split.growing.schedule import growth_epochs

    builder = getattr(models, model)
    train_fn = lambda stage: recipes.one_hot(  # noqa: E731
        data.imagenet_dataset(args.data_dir, "train", batch_size=args.batch_size,
                              image_size=args.image_size, seed=args.seed + stage),
        args.num_classes)
    val = recipes.one_hot(
        data.imagenet_dataset(args.data_dir, "validation", batch_size=args.batch_size,
                              image_size=args.image_size), args.num_classes)
    rows = recipes.run_growth(
        lambda: builder(args.width, input_shape=(args.image_size, args.image_size, 3),
                        num_classes=args.num_classes, dropout=0.2),
        train_fn, val, args.out, stages=args.stages,
        epochs_per_stage=([args.epochs_per_stage] * (args.stages + 1) if args.epochs_per_stage
                          else growth_epochs(args.epochs, args.stages)),
        steps_per_epoch=max(args.train_examples // args.batch_size, 1),
        learning_rate=args.learning_rate or 0.1 * args.batch_size / 256,
        growth_ratio=args.growth_ratio, eigen_batches=args.eigen_batches, seed=args.seed,
        strategy=strategy, cost=args.cost, label_smoothing=args.label_smoothing,
        verbose=args.verbose,
        config={"model": model, "width": args.width, "data_dir": os.path.abspath(args.data_dir),
                "batch_size": args.batch_size, "image_size": args.image_size},
    )
    print(f"replicas: {strategy.num_replicas_in_sync}")
    print(recipes.format_table(rows))
    print(f"results: {os.path.join(args.out, 'results.json')}")
    return rows


if __name__ == "__main__":
    main()
