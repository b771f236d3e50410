"""What the CIFAR-10 benchmarks share: the data, the training protocol, and timers.

``cifar10_growth.py``, ``growth_stage_cost.py`` and ``keras_applications.py`` read
the same uint8 CIFAR-10 arrays (:func:`load`), train on one seeded stateless
pipeline (:func:`training_data`) with one optimizer (:func:`compile_model`), time
epochs with :class:`Timer` (:func:`train`) and record the same command and machine in their JSON
(:func:`command_line`, :func:`machine`).
"""

import argparse
import glob
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
from keras_split import models  # noqa: E402
from keras_split.data import preprocessing  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def load(data_dir, n_train, n_val, cache="/tmp/cifar10_uint8.npz"):
    """uint8 arrays: ``n_train`` training and ``n_val`` validation images (disjoint, both
    from the training folder, fixed by data seed 0) and the 10 000 test images."""
    if not os.path.exists(cache):
        def read(split):
            classes = sorted(os.listdir(os.path.join(data_dir, split)))
            files = [(f, i) for i, c in enumerate(classes)
                     for f in sorted(glob.glob(os.path.join(data_dir, split, c, "*.jpg")))]
            ds = tf.data.Dataset.from_tensor_slices([f for f, _ in files]).map(
                lambda f: tf.io.decode_jpeg(tf.io.read_file(f), channels=3),
                num_parallel_calls=tf.data.AUTOTUNE).batch(1000)
            return (np.concatenate([b.numpy() for b in ds]),
                    np.array([i for _, i in files], dtype=np.int64))
        (x, y), (xt, yt) = read("train"), read("test")
        np.savez(cache, x=x, y=y, xt=xt, yt=yt)
    d = np.load(cache)
    order = np.random.default_rng(0).permutation(len(d["x"]))
    val, train = order[:n_val], order[n_val:n_val + n_train]
    return (d["x"][train], d["y"][train]), (d["x"][val], d["y"][val]), (d["xt"], d["yt"])


def training_data(x, y, batch_size, epochs, seed):
    """All epochs' batches: a stateless shuffle and augmentation per (seed, epoch)."""
    n = len(x) // batch_size * batch_size
    images, labels = tf.constant(x), tf.constant(y)

    def epoch(e):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(x)), seed=tf.stack([tf.cast(seed, tf.int64), e]))[:n]
        ds = tf.data.Dataset.from_tensor_slices(order)
        return ds.map(lambda i: (preprocessing.cifar_train(
            tf.gather(images, i), tf.stack([e * 1_000_003 + tf.cast(seed, tf.int64),
                                            tf.cast(i, tf.int64)])), tf.gather(labels, i)),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return (tf.data.Dataset.range(epochs).flat_map(epoch).batch(batch_size)
            .prefetch(tf.data.AUTOTUNE)), n // batch_size


def width_macs(width):
    """MACs of the uniform MobileNetV1-CIFAR of ``width``."""
    return ks.count_flops(models.mobilenet_v1_cifar(blocks=6, width=width, activation="swish"))


def normalised(x):
    return preprocessing.cifar_eval(tf.constant(x)).numpy()


def compile_model(model, args, steps):
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, steps, alpha=0.01)
    # Decoupled decay (the variables shrink by lr * weight_decay per step, on every
    # trainable variable): 5e-3 here is about an L2 coefficient of 5e-4 with momentum 0.9.
    decay = getattr(args, "weight_decay", None)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                                 weight_decay=decay),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


class Timer(keras.callbacks.Callback):
    """Epoch wall times and MACs (MAC-epochs), and the stages' growth seconds."""

    def __init__(self):
        super().__init__()
        self.epochs, self.macs = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()
        self.macs.append(ks.count_flops(self.model))

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(time.perf_counter() - self.t0)


def train(model, args, seed, x, y, callbacks=()):
    """Compiles ``model`` and fits it ``args.epochs`` epochs on the seeded pipeline;
    returns its :class:`Timer`."""
    data, steps = training_data(x, y, args.batch_size, args.epochs, seed)
    compile_model(model, args, steps * args.epochs)
    timer = Timer()
    model.fit(data, epochs=args.epochs, steps_per_epoch=steps, verbose=0,
              callbacks=[timer, *callbacks])
    return timer


def evaluate(model, sets):
    """``{name: accuracy}`` of ``model`` on each ``(x, y)`` of ``sets``."""
    return {k: float(model.evaluate(x, y, batch_size=500, verbose=0)[1]) for k, (x, y) in sets.items()}


def protocol_parser(description, seeds=3):
    """An argument parser with the options the timing benchmarks share: ``--data-dir``,
    ``--seeds``, ``--stages``, ``--eigen-examples``, ``--batch-size`` and ``--lr``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", required=True, help="CIFAR-10 folder layout")
    parser.add_argument("--seeds", type=int, default=seeds)
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--eigen-examples", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    return parser


def family_protocol_arguments(parser):
    """Adds the options of the family benchmarks' training protocol: ``--seeds``,
    ``--epochs``, ``--train-examples``, ``--val-examples``, ``--eigen-examples``,
    ``--batch-size``, ``--lr`` and ``--weight-decay``."""
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--train-examples", type=int, default=10_000)
    parser.add_argument("--val-examples", type=int, default=5_000)
    parser.add_argument("--eigen-examples", type=int, default=1_024)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--weight-decay", type=float, default=None,
                        help="the SGD's decoupled weight decay (none by default)")
    return parser


def command_line(script, argv):
    """The command that ran ``benchmarks/<script>`` with ``argv`` (None: this process's)."""
    return f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:])


def machine():
    """The platform, CPU (family, model and widest vector ISA: oneDNN picks its kernels,
    and so its rounding, by it), CPU count and framework versions, for a results file."""
    return {"platform": platform.platform(), "cpu": cpu_model(), "cpus": os.cpu_count(),
            "tensorflow": tf.__version__, "keras": keras.__version__}


def cpu_model():
    """``"family F model M, avx512f"`` from /proc/cpuinfo (``"unknown"`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines()
                        if ":" in line)
    except OSError:
        return "unknown"
    info = {k.strip(): v.strip() for k, v in info.items()}
    flags = info.get("flags", "").split()
    isa = next((i for i in ("avx512f", "avx2", "avx", "sse4_2") if i in flags), "none")
    return f"family {info.get('cpu family', '?')} model {info.get('model', '?')}, {isa}"
