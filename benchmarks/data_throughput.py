"""Input-pipeline throughput against raw JPEG decoding and a training step, same machine.

    python benchmarks/data_throughput.py --data-dir /tmp/cifar [--batches 100]

Prints images/s of: raw JPEG decoding (parallel ``tf.io.decode_jpeg`` of the
files, nothing else), the CIFAR training pipeline (decode, pad-crop-flip,
normalise, batch) without and with the in-memory cache, and a training step
of the CIFAR MobileNetV1 (width 32, batch 128) on this machine. The pipeline is
not the bottleneck when its rate exceeds the training step's (ratio > 1).
Writes ``benchmarks/results/data_throughput.json``.
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from keras_split import data, models  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def rate(ds, batches, batch_size):
    it = iter(ds)
    next(it)  # warm-up
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        x = next(it)
        n += int((x[0] if isinstance(x, tuple) else x).shape[0])
    return n / (time.perf_counter() - t0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="CIFAR-10 folder layout")
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", default=os.path.join(RESULTS, "data_throughput.json"))
    args = parser.parse_args(argv)
    listing = data.ImageFolder(os.path.join(args.data_dir, "train"))
    raw = (tf.data.Dataset.from_tensor_slices(listing.files).shuffle(len(listing), seed=0)
           .map(lambda p: tf.io.decode_jpeg(tf.io.read_file(p)), num_parallel_calls=tf.data.AUTOTUNE)
           .batch(args.batch_size).prefetch(tf.data.AUTOTUNE).repeat())
    rows = {"raw_decode": rate(raw, args.batches, args.batch_size)}
    for cache in (False, True):
        ds = data.cifar_dataset(args.data_dir, "train", batch_size=args.batch_size, cache=cache,
                                validate=False, repeat=True, seed=0)
        if cache:  # fill the cache first: one pass over the data
            for _ in ds.take(50_000 // args.batch_size + 1):
                pass
        rows["pipeline_cached" if cache else "pipeline"] = rate(ds, args.batches, args.batch_size)
    model = models.mobilenet_v1_cifar(blocks=6, width=32)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = tf.random.normal((args.batch_size, 32, 32, 3))
    y = tf.zeros((args.batch_size,), tf.int64)
    model.optimizer.build(model.trainable_variables)
    step = tf.function(lambda: model.train_step((x, y)))
    float(step()["loss"])
    t0 = time.perf_counter()
    for _ in range(10):
        logs = step()
    float(logs["loss"])
    rows["train_step"] = 10 * args.batch_size / (time.perf_counter() - t0)
    rows["pipeline_over_raw"] = rows["pipeline"] / rows["raw_decode"]
    rows["pipeline_over_train"] = rows["pipeline"] / rows["train_step"]
    rows["cached_over_train"] = rows["pipeline_cached"] / rows["train_step"]
    print(f"{'what':<22} {'images/s':>10}")
    for key in ("raw_decode", "pipeline", "pipeline_cached", "train_step"):
        print(f"{key:<22} {rows[key]:>10,.0f}")
    print(f"pipeline / raw decode   {rows['pipeline_over_raw']:.2f}")
    print(f"pipeline / train step   {rows['pipeline_over_train']:.2f}")
    print(f"cached / train step     {rows['cached_over_train']:.2f}")
    result = {"command": "python benchmarks/data_throughput.py " + " ".join(argv or sys.argv[1:]),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "tensorflow": tf.__version__},
              "batch_size": args.batch_size, "rows": rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
