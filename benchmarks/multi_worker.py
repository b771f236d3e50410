"""Training steps and a growth stage in one process against two local workers
(``MultiWorkerMirroredStrategy``), MobileNetV2-CIFAR on generated CIFAR-shaped data.

Each configuration runs in its own processes with the same global batch: ``single``
(one process, no strategy) and ``2 workers`` (two processes on this machine, RING
collectives over localhost, each computing half of every batch). Every process fits
the seed for a warm-up epoch and a timed one (seconds per step, the second epoch),
then grows once on the same estimation images with a fixed number of LOBPCG passes
(seconds of the stage). On one
machine the workers share its cores, so the ratio shows the collectives' overhead,
not a speed-up; on separate hosts each worker brings its own.

    python benchmarks/multi_worker.py

Prints a table and writes ``benchmarks/results/multi_worker.json``; each finished
configuration is written as it ends and a rerun skips it (``--fresh`` starts again).
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
OUT = os.path.join(RESULTS, "multi_worker.json")
CONFIGS = {"single": 1, "2 workers": 2}


def _worker(args):
    """One process of a configuration: writes its timings to ``args.worker_out``."""
    import tensorflow as tf

    if "TF_CONFIG" in os.environ:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=tf.distribute.experimental.CommunicationImplementation.RING,
                timeout_seconds=300))
    else:
        strategy = tf.distribute.get_strategy()
    import keras
    import numpy as np

    sys.path.insert(0, ROOT)
    import keras_split as ks
    from keras_split import models
    from keras_split.growing import distributed

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.examples, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, args.examples)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = \
        tf.data.experimental.AutoShardPolicy.DATA
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size) \
        .with_options(options)
    with strategy.scope():
        model = ks.GrowingModel(models.mobilenet_v2_cifar(
            stages=((1, 1, 1), (4, 1, 2), (4, 2, 2), (4, 1, 2)), width=8,
            activation="relu6"))
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train, epochs=1, verbose=0)
    t0 = time.perf_counter()
    model.fit(train, epochs=1, verbose=0)
    step = (time.perf_counter() - t0) / (args.examples // args.batch_size)
    eigen = train.take(args.eigen_examples // args.batch_size)
    t0 = time.perf_counter()
    # A fixed number of passes: unsynchronised BatchNormalization leaves the workers'
    # network a little different from one process's, and so the stop's pass count.
    stage = model.grow(eigen, growth_ratio=0.5, seed=0, eigen_tol=None,
                       eigen_epochs=args.passes)
    grow = time.perf_counter() - t0
    with open(args.worker_out, "w") as f:
        json.dump({"task": distributed.task_name(strategy), "step_seconds": step,
                   "grow_seconds": grow, "parts": dataclasses.asdict(stage.seconds),
                   "passes": stage.eigen.passes, "n_selected": stage.n_selected,
                   "macs_after": stage.macs_after}, f)


def _run(workers, args, tmp):
    """Launches a configuration's processes; returns their records."""
    sys.path.insert(0, ROOT)
    from keras_split.growing.distributed import local_cluster

    configs = local_cluster(workers)
    procs, outs = [], []
    for index in range(workers):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="3")
        env.pop("TF_CONFIG", None)
        if workers > 1:
            env["TF_CONFIG"] = configs[index]
        out = os.path.join(tmp, f"w{workers}_{index}.json")
        outs.append(out)
        procs.append(subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker-out", out,
             "--examples", str(args.examples), "--batch-size", str(args.batch_size),
             "--eigen-examples", str(args.eigen_examples), "--passes", str(args.passes)],
            env=env))
    for p in procs:
        if p.wait(timeout=1800) != 0:
            raise RuntimeError(f"a process of the {workers}-process run failed")
    records = []
    for out in outs:
        with open(out) as f:
            records.append(json.load(f))
    return records


def table(result):
    """The Markdown table of ``result`` (also in ``benchmarks/table_sources.py``)."""
    sys.path.insert(0, ROOT)
    from benchmarks import table_sources
    return table_sources.multi_worker_table(result)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch size")
    parser.add_argument("--eigen-examples", type=int, default=1024)
    parser.add_argument("--passes", type=int, default=6, help="LOBPCG passes of the stage")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_out:
        return _worker(args)
    result = {"command": "python benchmarks/multi_worker.py", "settings": {
        "model": "mobilenet_v2_cifar width 8, relu6", "examples": args.examples,
        "batch_size": args.batch_size, "eigen_examples": args.eigen_examples,
        "passes": args.passes,
        "cpus": os.cpu_count()}, "runs": {}}
    if os.path.exists(OUT) and not args.fresh:
        with open(OUT) as f:
            old = json.load(f)
        if old.get("settings") == result["settings"]:
            result = old
    with tempfile.TemporaryDirectory() as tmp:
        for name, workers in CONFIGS.items():
            if name in result["runs"]:
                continue
            result["runs"][name] = _run(workers, args, tmp)
            os.makedirs(RESULTS, exist_ok=True)
            with open(OUT, "w") as f:
                json.dump(result, f, indent=1)
    print(table(result))


if __name__ == "__main__":
    main()
