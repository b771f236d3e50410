"""Cost of splitting vs training, in the same run on the same model and batch.

For a MobileNetV1-style CIFAR network (one conv, three depthwise-separable
blocks, 32x32x3 input) at several widths, times per step:

* ``train_plain``: a Keras training step (``Model.train_step``, what ``fit`` runs,
  compiled with ``tf.function``) of the plain functional model;
* ``train_growing``: the same through :class:`keras_split.GrowingModel`;
* ``fast``: one fast-splitting step (auxiliary-activation backward pass,
  RMSprop on the Rayleigh quotients of every neuron);
* ``exact``: building every splitting matrix on the batch and ``eigh`` (widths <= 64).

Ratios are what to read; absolute times depend on the machine. Each time is
the minimum, over interleaved repeats, of the mean step time of ``--steps`` steps. Writes
``benchmarks/results/splitting_cost.json``.

    python benchmarks/splitting_cost.py [--data-dir DIR] [--widths 8 16 32 64 128]
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import keras_split as ks  # noqa: E402
from keras_split import splitting  # noqa: E402
from keras_split.demo import seed_network  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def cifar_batch(data_dir, batch_size):
    """A real CIFAR-10 batch from the folder layout, or None."""
    if not data_dir:
        return None
    files, labels = [], []
    classes = sorted(os.listdir(os.path.join(data_dir, "train")))
    for label, name in enumerate(classes):
        folder = os.path.join(data_dir, "train", name)
        for f in sorted(os.listdir(folder))[: batch_size // len(classes) + 1]:
            files.append(os.path.join(folder, f))
            labels.append(label)
    images = [tf.io.decode_jpeg(tf.io.read_file(f), channels=3) for f in files[:batch_size]]
    x = tf.cast(tf.stack(images), tf.float32) / 255.0
    return x.numpy(), np.array(labels[:batch_size])


def timed(fn, steps, repeats):
    fn(1)  # warm-up, tracing
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(steps)
        best.append((time.perf_counter() - t0) / steps)
    return float(np.median(best))


def compile_model(model):
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def run(widths, batch_size, steps, repeats, data_dir, exact_max_width):
    batch = cifar_batch(data_dir, batch_size)
    if batch is None:
        rng = np.random.default_rng(0)
        batch = (rng.uniform(size=(batch_size, 32, 32, 3)).astype("float32"),
                 rng.integers(0, 10, batch_size))
    x, y = batch
    rows = []
    for width in widths:
        keras.utils.set_random_seed(0)
        plain = compile_model(seed_network(width=width, input_shape=(32, 32, 3)))
        growing = compile_model(ks.GrowingModel(seed_network(width=width, input_shape=(32, 32, 3))))
        growing.set_weights(plain.get_weights())
        xt, yt = tf.constant(x), tf.constant(y)

        def fit_steps(model):
            # The step `fit` runs (Model.train_step), compiled, without fit's per-call set-up.
            model.optimizer.build(model.trainable_variables)
            step = tf.function(lambda: model.train_step((xt, yt)))

            def run_steps(n):
                for _ in range(n):
                    logs = step()
                float(logs["loss"])

            return run_steps

        solver = splitting.FastEigenSolver(growing._graph, growing._loss_fn())

        def fast_steps(n):
            for _ in range(n):
                solver._step_fn(xt, yt, None).numpy()

        # Interleave the measurements so that drift hits all of them alike.
        t = {"train_plain": [], "train_growing": [], "fast": []}
        for _ in range(repeats):
            t["train_plain"].append(timed(fit_steps(plain), steps, 1))
            t["train_growing"].append(timed(fit_steps(growing), steps, 1))
            t["fast"].append(timed(fast_steps, steps, 1))
        row = {"width": width, "macs": ks.count_flops(plain), "params": plain.count_params()}
        # The minimum over interleaved repeats: the least disturbed by other load.
        row.update({k: float(np.min(v)) for k, v in t.items()})
        if width <= exact_max_width:
            exact = splitting.ExactMatrices(growing._graph, growing._loss_fn())

            def exact_steps(n):
                for _ in range(n):
                    for s in exact(xt, yt, None).values():
                        np.linalg.eigh(s.numpy())

            row["exact"] = timed(exact_steps, 1, 2)
        units = sum(growing._graph.units(n) for n in growing.splittable_layers)
        row["neurons"] = units
        row["exact_matrix_bytes"] = int(sum(
            growing._graph.units(n) * int(np.prod(growing.network.get_layer(n).kernel.shape[:-1])) ** 2 * 8
            for n in growing.splittable_layers))
        row["growing_over_plain"] = row["train_growing"] / row["train_plain"]
        row["fast_over_train"] = row["fast"] / row["train_plain"]
        if "exact" in row:
            row["exact_over_fast"] = row["exact"] / row["fast"]
        rows.append(row)
        print_row(row)
    return rows


HEADER = (f"{'width':>5} {'MACs':>11} {'train ms':>9} {'growing/plain':>13} "
          f"{'fast/train':>10} {'exact/fast':>10}")


def print_row(row):
    exact = f"{row['exact_over_fast']:>10.1f}" if "exact_over_fast" in row else f"{'-':>10}"
    print(f"{row['width']:>5} {row['macs']:>11,} {row['train_plain'] * 1e3:>9.2f} "
          f"{row['growing_over_plain']:>13.3f} {row['fast_over_train']:>10.3f} {exact}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None,
                        help="CIFAR-10 folder layout (train/<class>/*.jpg); random data if absent")
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--exact-max-width", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(RESULTS, "splitting_cost.json"))
    args = parser.parse_args(argv)
    print(HEADER)
    rows = run(args.widths, args.batch_size, args.steps, args.repeats, args.data_dir,
               args.exact_max_width)
    result = {
        "command": "python benchmarks/splitting_cost.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "tensorflow": tf.__version__, "keras": keras.__version__,
                    "gpu": bool(tf.config.list_physical_devices("GPU"))},
        "batch_size": args.batch_size, "data": "cifar10" if args.data_dir else "random",
        "rows": rows,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
