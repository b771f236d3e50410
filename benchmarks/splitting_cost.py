"""Cost of splitting vs training, in the same run on the same model and batch.

For a MobileNetV1-style CIFAR network (one conv, three depthwise-separable
blocks, 32x32x3 input) at several widths, times per step:

* ``train_plain``: a Keras training step (``Model.train_step``, what ``fit`` runs,
  compiled with ``tf.function``) of the plain functional model;
* ``train_growing``: the same through :class:`keras_split.GrowingModel`;
* ``fast``: one fast-splitting step (auxiliary-activation backward pass,
  RMSprop on the Rayleigh quotients of every neuron);
* ``exact``: building every splitting matrix on the batch and ``eigh`` (widths <= 64).

Peak memory: how far one training step, one fast step and one exact step (after
warm-up) raise the peak of TensorFlow's allocator above what was allocated before
(``tf.config.experimental.get_memory_info``); the exact matrices' own size is
reported too.

Cost per neuron-eigenpair at equal accuracy (widths <= ``--exact-max-width``): on
``--eigen-examples`` examples, the exact path builds every matrix (all batches) and
takes ``eigh``; the auxiliary-activation paths run over the same batches (a fresh
solver for every trial length) until the Rayleigh quotient of every neuron that
matters (``|lambda| >= 1 %`` of the largest) is within ``--tolerance`` (2 %) of the
exact smallest eigenvalue: LOBPCG (the default estimator) with 2, 3, 4, ...
passes, and the paper's RMSprop with 1, 2, 4, ... passes. Cost = passes times
batches times the fast step time; all costs are divided by the number of neurons.

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
from keras_split.estimate import lobpcg  # noqa: E402
from keras_split.estimate.exact import ExactMatrices  # noqa: E402
from keras_split.estimate.rmsprop import FastEigenSolver  # noqa: E402
from keras_split.apps.demo import seed_network  # noqa: E402

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


def peak_memory(fn, device="CPU:0"):
    """Bytes by which ``fn()`` raises TensorFlow's allocator peak on ``device`` above
    what is allocated before it (tensors of the step: activations, gradients, matrices)."""
    base = tf.config.experimental.get_memory_info(device)["current"]
    tf.config.experimental.reset_memory_stats(device)
    fn()
    return int(tf.config.experimental.get_memory_info(device)["peak"] - base)


def smallest_exact(exact, x, y, batch_size):
    """Every layer's splitting matrices averaged over the batches of ``(x, y)``, and
    the smallest eigenvalue of each neuron (what the exact path computes)."""
    sums = {}
    for start in range(0, len(x), batch_size):
        for name, s in exact(tf.constant(x[start:start + batch_size]),
                             tf.constant(y[start:start + batch_size]), None).items():
            sums[name] = sums.get(name, 0) + s.numpy().astype(np.float64)
    mats = {name: s / (len(x) // batch_size) for name, s in sums.items()}
    return mats, {name: np.linalg.eigh(m)[0][:, 0] for name, m in mats.items()}


def _errors(vectors, mats, lam, top):
    """Relative errors of the Rayleigh quotients of ``vectors`` w.r.t. the smallest
    eigenvalues, for every neuron with ``|lambda| >= 1 %`` of the largest."""
    errors = []
    for name, m in mats.items():
        v = vectors[name] / np.linalg.norm(vectors[name], axis=1, keepdims=True)
        rayleigh = np.einsum("kd,kde,ke->k", v, m, v)
        keep = np.abs(lam[name]) >= 0.01 * top
        errors.extend(np.abs(rayleigh - lam[name])[keep] / np.abs(lam[name][keep]))
    return np.array(errors)


def equal_accuracy(growing, x, y, batch_size, tolerance, max_passes):
    """Exact seconds on ``(x, y)``, and the passes over it that LOBPCG and RMSprop
    need until every neuron that matters is within ``tolerance`` of the exact
    smallest eigenvalue (a fresh solver for every trial length)."""
    graph, loss_fn = growing.channel_graph, growing.splitting_loss()
    exact = ExactMatrices(graph, loss_fn)
    smallest_exact(exact, x[:batch_size], y[:batch_size], batch_size)  # tracing
    t0 = time.perf_counter()
    mats, lam = smallest_exact(exact, x, y, batch_size)
    exact_seconds = time.perf_counter() - t0
    top = max(np.abs(v).max() for v in lam.values())
    steps_per_pass = len(x) // batch_size
    result = {"exact_seconds": exact_seconds, "steps_per_pass": steps_per_pass}

    def lobpcg_vectors(passes):
        return lobpcg.LobpcgEigenSolver(graph, loss_fn, seed=0).fit(
            (x, y), epochs=passes, batch_size=batch_size).vectors

    def rmsprop_vectors(passes):
        solver = FastEigenSolver(graph, loss_fn, seed=0)
        return solver.fit((x, y), epochs=passes, batch_size=batch_size).get_vectors()

    for method, solve, trials in (
            ("lobpcg", lobpcg_vectors, range(2, max_passes + 1)),
            ("rmsprop", rmsprop_vectors, [2 ** i for i in range(int(np.log2(max_passes)) + 1)])):
        for passes in trials:
            errors = _errors(solve(passes), mats, lam, top)
            row = {"passes": passes, "neurons_checked": len(errors),
                   "fraction_within": float(np.mean(errors <= tolerance)),
                   "median_relative_error": float(np.median(errors)),
                   "worst_relative_error": float(errors.max())}
            if row["fraction_within"] == 1.0:
                break
        row["reached"] = row["fraction_within"] == 1.0
        result[method] = row
    return result


def compile_model(model):
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def setup(width, x, y, exact_max_width):
    """The plain and growing models at ``width`` and step runners ``n -> None`` on ``(x, y)``."""
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

    solver = FastEigenSolver(growing.channel_graph, growing.splitting_loss())

    def fast_steps(n):
        for _ in range(n):
            solver.step(xt, yt)

    runners = {"fit_steps": fit_steps, "train": fit_steps(plain), "fast": fast_steps}
    if width <= exact_max_width:
        exact = ExactMatrices(growing.channel_graph, growing.splitting_loss())

        def exact_steps(n):
            for _ in range(n):
                for s in exact(xt, yt, None).values():
                    np.linalg.eigh(s.numpy())

        runners["exact"] = exact_steps
    return plain, growing, runners


def memory_probe(widths, x, y, exact_max_width, device):
    """``{width: {"train"|"fast"|"exact": peak bytes of one step}}``, after warm-up."""
    out = {}
    for width in widths:
        _, _, runners = setup(width, x, y, exact_max_width)
        out[width] = {}
        for name in ("train", "fast", "exact"):
            if name in runners:
                runners[name](1)  # tracing and first-call allocations
                out[width][name] = peak_memory(lambda: runners[name](1), device)
    return out


def load_batches(data_dir, batch_size, eigen_examples):
    """``(x_all, y_all)``: ``eigen_examples`` real (or random) examples, a multiple of the batch."""
    eigen_examples = max(eigen_examples // batch_size, 1) * batch_size
    batch = cifar_batch(data_dir, eigen_examples)
    if batch is None:
        rng = np.random.default_rng(0)
        batch = (rng.uniform(size=(eigen_examples, 32, 32, 3)).astype("float32"),
                 rng.integers(0, 10, eigen_examples))
    return batch


def run(widths, batch_size, steps, repeats, data_dir, exact_max_width, eigen_examples,
        tolerance, memory, max_passes):
    x_all, y_all = load_batches(data_dir, batch_size, eigen_examples)
    x, y = x_all[:batch_size], y_all[:batch_size]
    rows = []
    for width in widths:
        plain, growing, runners = setup(width, x, y, exact_max_width)
        fit_steps, fast_steps = runners["fit_steps"], runners["fast"]
        # Interleave the measurements so that drift hits all of them alike.
        t = {"train_plain": [], "train_growing": [], "fast": []}
        for _ in range(repeats):
            t["train_plain"].append(timed(fit_steps(plain), steps, 1))
            t["train_growing"].append(timed(fit_steps(growing), steps, 1))
            t["fast"].append(timed(fast_steps, steps, 1))
        row = {"width": width, "macs": ks.count_flops(plain), "params": plain.count_params()}
        # The minimum over interleaved repeats: the least disturbed by other load.
        row.update({k: float(np.min(v)) for k, v in t.items()})
        if "exact" in runners:
            row["exact"] = timed(runners["exact"], 1, 2)
        for name, peak in memory[width].items():
            row[f"peak_bytes_{name}"] = peak
        units = sum(growing.channel_graph.units(n) for n in growing.splittable_layers)
        row["neurons"] = units
        row["exact_matrix_bytes"] = int(sum(
            growing.channel_graph.units(n) * int(np.prod(growing.network.get_layer(n).kernel.shape[:-1])) ** 2 * 8
            for n in growing.splittable_layers))
        row["growing_over_plain"] = row["train_growing"] / row["train_plain"]
        row["fast_over_train"] = row["fast"] / row["train_plain"]
        if "exact" in row:
            row["exact_over_fast"] = row["exact"] / row["fast"]
            acc = equal_accuracy(growing, x_all, y_all, batch_size, tolerance, max_passes)
            acc["exact_per_neuron"] = acc["exact_seconds"] / units
            for method in ("lobpcg", "rmsprop"):
                m = acc[method]
                # A product pass costs one fast step per batch (RMSprop adds its update).
                m["seconds_per_neuron"] = m["passes"] * acc["steps_per_pass"] * row["fast"] / units
                m["exact_over_this_per_neuron"] = acc["exact_per_neuron"] / m["seconds_per_neuron"]
            row["equal_accuracy"] = acc
        rows.append(row)
        print_row(row)
    return rows


HEADER = (f"{'width':>5} {'MACs':>11} {'train ms':>9} {'growing/plain':>13} "
          f"{'fast/train':>10} {'exact/fast':>10} {'mem train':>9} {'mem fast':>9} "
          f"{'mem exact':>9} {'lobpcg passes':>13} {'exact/lobpcg per neuron':>23} "
          f"{'rmsprop passes':>14}")


def _mib(value):
    return f"{value / 2**20:>8.1f}M" if value is not None else f"{'-':>9}"


def print_row(row):
    exact = f"{row['exact_over_fast']:>10.1f}" if "exact_over_fast" in row else f"{'-':>10}"
    acc = row.get("equal_accuracy")
    if acc:
        lob, rms = acc["lobpcg"], acc["rmsprop"]
        steps = f"{lob['passes'] if lob['reached'] else '>' + str(lob['passes']):>13}"
        per = (f"{lob['exact_over_this_per_neuron']:>23.2f}" if lob["reached"] else
               f"{'not reached':>23}")
        per += f" {rms['passes'] if rms['reached'] else '>' + str(rms['passes']):>14}"
    else:
        steps, per = f"{'-':>13}", f"{'-':>23} {'-':>14}"
    print(f"{row['width']:>5} {row['macs']:>11,} {row['train_plain'] * 1e3:>9.2f} "
          f"{row['growing_over_plain']:>13.3f} {row['fast_over_train']:>10.3f} {exact} "
          f"{_mib(row['peak_bytes_train'])} {_mib(row['peak_bytes_fast'])} "
          f"{_mib(row.get('peak_bytes_exact'))} {steps} {per}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None,
                        help="CIFAR-10 folder layout (train/<class>/*.jpg); random data if absent")
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--exact-max-width", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--eigen-examples", type=int, default=1024,
                        help="examples of the equal-accuracy comparison")
    parser.add_argument("--max-passes", type=int, default=32,
                        help="most passes over the examples tried per estimator")
    parser.add_argument("--tolerance", type=float, default=0.02,
                        help="relative eigenvalue error that counts as equal accuracy")
    parser.add_argument("--out", default=os.path.join(RESULTS, "splitting_cost.json"))
    args = parser.parse_args(argv)
    device = "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"
    x, y = load_batches(args.data_dir, args.batch_size, args.batch_size)
    memory = memory_probe(args.widths, x, y, args.exact_max_width, device)
    print(HEADER)
    rows = run(args.widths, args.batch_size, args.steps, args.repeats, args.data_dir,
               args.exact_max_width, args.eigen_examples, args.tolerance, memory,
               args.max_passes)
    result = {
        "command": "python benchmarks/splitting_cost.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "tensorflow": tf.__version__, "keras": keras.__version__,
                    "gpu": bool(tf.config.list_physical_devices("GPU"))},
        "batch_size": args.batch_size, "eigen_examples": args.eigen_examples,
        "tolerance": args.tolerance, "max_passes": args.max_passes, "data": "cifar10" if args.data_dir else "random",
        "rows": rows,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
