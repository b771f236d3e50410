"""Energy-aware vs vanilla vs random splitting vs width multipliers on real CIFAR-10.

The splitting paper's CIFAR experiment, scaled to 2 CPU cores:

* seed: the small MobileNetV1 CIFAR variant (``mobilenet_v1_cifar``), 8 channels
  everywhere, swish;
* grown over ``--stages`` stages with growth_ratio 0.5 and ``--epochs-per-stage``
  epochs per stage, three ways: ``cost="flops"`` (energy-aware), ``cost="uniform"``
  (vanilla: by lambda alone under the same MACs budget) and random selection of
  neurons (random directions) under the same budget;
* baselines: the same family with uniform widths matched to every energy-aware
  stage's MACs, trained from scratch for as many epochs as the grown model had
  received when it reached that stage.

Every stage trains with its own cosine learning-rate cycle (a warm restart after each
split), so every stage is evaluated at the end of a decay, like the baselines.

    python benchmarks/cifar10_growth.py --data-dir /tmp/cifar [--quick]

Prints a table (mean and spread over seeds), writes
``benchmarks/results/cifar10_growth[_quick].json`` and a PNG of accuracy against MACs.
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
from keras_split import costs, data, models  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def load(data_dir, n_train, n_test, seed=0):
    """Decoded, normalised CIFAR-10 arrays (a fixed random subset)."""
    def arrays(split, n):
        ds = data.cifar_dataset(data_dir, split, batch_size=1000, validate=False,
                                shuffle_buffer=0, drop_remainder=False)
        xs, ys = [], []
        for x, y in ds:
            xs.append(x.numpy())
            ys.append(y.numpy())
        x, y = np.concatenate(xs), np.concatenate(ys)
        pick = np.random.default_rng(seed).permutation(len(x))[:n]
        return x[pick], y[pick]

    return arrays("train", n_train), arrays("test", n_test)


def augmented(x, y, batch_size, seed):
    def aug(image, label):
        image = tf.image.random_flip_left_right(image)
        image = tf.image.random_crop(tf.pad(image, [[4, 4], [4, 4], [0, 0]], "REFLECT"), [32, 32, 3])
        return image, label

    return (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed)
            .map(aug, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
            .prefetch(tf.data.AUTOTUNE))


def compile_model(model, lr, total_steps):
    schedule = keras.optimizers.schedules.CosineDecay(lr, total_steps, alpha=0.01)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def random_split(model, growth_ratio, epsilon, rng):
    """Random groups (random unit directions) until the MACs budget is spent."""
    graph = model._graph
    groups = sorted(graph.groups)
    macs = costs.network_cost(graph, "flops")
    chosen = []
    for i in rng.permutation(len(groups)):
        trial = chosen + [i]
        if costs.widened_cost(graph, [groups[j] for j in trial], "flops") <= macs * (1 + growth_ratio):
            chosen = trial
    eig = {}
    for name in graph.splittable_layers:
        units, fan = model.network.get_layer(name).kernel.shape[-1], int(
            np.prod(model.network.get_layer(name).kernel.shape[:-1]))
        v = rng.normal(size=(units, fan))
        eig[name] = ks.Eigenpairs(np.zeros(units), v / np.linalg.norm(v, axis=1, keepdims=True))
    plan = {}
    for i in chosen:
        name, unit = graph.group_members(groups[i])[0]
        plan.setdefault(name, []).append(unit)
    if plan:
        model.split(plan, eigenpairs=eig, epsilon=epsilon)
    return len(chosen)


def grow_run(method, train, test, args, seed):
    keras.utils.set_random_seed(seed)
    (x, y), (xt, yt) = train, test
    steps = -(-len(x) // args.batch_size) * args.epochs_per_stage
    model = ks.GrowingModel(models.mobilenet_v1_cifar(
        blocks=args.blocks, width=8, activation="swish"))
    compile_model(model, args.lr, steps)
    rng = np.random.default_rng(seed)
    rows, t0 = [], time.perf_counter()
    for stage in range(args.stages + 1):
        if stage:
            eig_data = (x[:args.eigen_examples], y[:args.eigen_examples])
            if method == "random":
                random_split(model, 0.5, 1e-2, rng)
            else:
                model.grow(eig_data, growth_ratio=0.5, cost=method, eigen_epochs=5,
                           batch_size=args.batch_size, seed=seed + stage)
            compile_model(model, args.lr, steps)  # a new cosine cycle for the new stage
        model.fit(augmented(x, y, args.batch_size, seed + stage), epochs=args.epochs_per_stage,
                  verbose=0)
        _, acc = model.evaluate(xt, yt, batch_size=500, verbose=0)
        rows.append({"stage": stage, "macs": ks.count_flops(model),
                     "params": int(model.count_params()), "accuracy": float(acc),
                     "seconds": time.perf_counter() - t0})
    return rows


def baseline_run(width, epochs, train, test, args, seed):
    keras.utils.set_random_seed(seed)
    (x, y), (xt, yt) = train, test
    total = epochs * -(-len(x) // args.batch_size)
    model = compile_model(models.mobilenet_v1_cifar(blocks=args.blocks, width=width,
                                                    activation="swish"), args.lr, total)
    t0 = time.perf_counter()
    model.fit(augmented(x, y, args.batch_size, seed).repeat(epochs), epochs=1, verbose=0)
    _, acc = model.evaluate(xt, yt, batch_size=500, verbose=0)
    return {"width": width, "macs": ks.count_flops(model), "params": int(model.count_params()),
            "accuracy": float(acc), "seconds": time.perf_counter() - t0}


def summarize(values):
    return float(np.mean(values)), float(np.std(values))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="CIFAR-10 folder layout")
    parser.add_argument("--quick", action="store_true", help="a <= 10 minute smoke run")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--stages", type=int, default=None)
    parser.add_argument("--epochs-per-stage", type=int, default=None)
    parser.add_argument("--train-examples", type=int, default=None)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args(argv)
    quick = {"seeds": 1, "stages": 2, "epochs_per_stage": 3, "train_examples": 10000}
    full = {"seeds": 2, "stages": 3, "epochs_per_stage": 6, "train_examples": 15000}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.eigen_examples = min(2000, args.train_examples)
    started = time.perf_counter()
    train, test = load(args.data_dir, args.train_examples, 10_000 if not args.quick else 2000)
    methods = ("flops", "uniform", "random")
    runs = {m: [] for m in methods}
    os.makedirs(RESULTS, exist_ok=True)
    partial = os.path.join(RESULTS, ("cifar10_growth_quick" if args.quick else "cifar10_growth")
                           + ".partial.json")
    widths, baselines = None, []
    for seed in range(args.seeds):
        for m in methods:
            runs[m].append(grow_run(m, train, test, args, seed))
            print(f"seed {seed} {m}: " + ", ".join(
                f"{r['macs']:,} MACs {r['accuracy']:.4f}" for r in runs[m][-1]), flush=True)
        if widths is None:
            # One baseline per energy-aware stage: the width whose MACs are closest, trained
            # for as many epochs as the grown model had when it reached that stage.
            widths = [min(range(4, 65), key=lambda w: abs(ks.count_flops(
                models.mobilenet_v1_cifar(blocks=args.blocks, width=w)) - r["macs"]))
                for r in runs["flops"][0]]
        baselines.append([baseline_run(w, (stage + 1) * args.epochs_per_stage, train, test,
                                       args, seed) for stage, w in enumerate(widths)])
        print(f"seed {seed} width multipliers: " + ", ".join(
            f"{b['macs']:,} MACs {b['accuracy']:.4f}" for b in baselines[-1]), flush=True)
        with open(partial, "w") as f:  # what is done so far, should the run be cut short
            json.dump({"runs": runs, "baselines": baselines,
                       "wall_seconds": time.perf_counter() - started}, f, indent=1)
    table = []
    header = (f"\n{'method':<16} {'stage':>5} {'epochs':>6} {'MACs':>11} {'params':>9} "
              f"{'acc mean':>9} {'acc std':>8} {'train s':>8}")
    print(header)

    def add_row(row):
        table.append(row)
        print(f"{row['method']:<16} {row['stage']:>5} {row['epochs']:>6} {row['macs']:>11,} "
              f"{row['params']:>9,} {row['accuracy_mean']:>9.4f} {row['accuracy_std']:>8.4f} "
              f"{row['seconds_mean']:>8.0f}")

    for m in methods:
        for stage in range(args.stages + 1):
            mean, std = summarize([run[stage]["accuracy"] for run in runs[m]])
            add_row({"method": m, "stage": stage,
                     "epochs": (stage + 1) * args.epochs_per_stage,
                     "macs": int(np.mean([run[stage]["macs"] for run in runs[m]])),
                     "params": int(np.mean([run[stage]["params"] for run in runs[m]])),
                     "accuracy_mean": mean, "accuracy_std": std,
                     "seconds_mean": float(np.mean([run[stage]["seconds"] for run in runs[m]]))})
    for stage, w in enumerate(widths):
        mean, std = summarize([b[stage]["accuracy"] for b in baselines])
        add_row({"method": f"width {w}", "stage": stage,
                 "epochs": (stage + 1) * args.epochs_per_stage,
                 "macs": baselines[0][stage]["macs"], "params": baselines[0][stage]["params"],
                 "accuracy_mean": mean, "accuracy_std": std,
                 "seconds_mean": float(np.mean([b[stage]["seconds"] for b in baselines]))})
    print(f"total wall time {time.perf_counter() - started:.0f} s")
    name = "cifar10_growth_quick" if args.quick else "cifar10_growth"
    os.makedirs(RESULTS, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m, style in zip(methods + ("width",), ("o-", "s-", "^-", "D--")):
        rows = [r for r in table if r["method"].startswith(m)]
        ax.errorbar([r["macs"] / 1e6 for r in rows], [r["accuracy_mean"] for r in rows],
                    yerr=[r["accuracy_std"] for r in rows], fmt=style,
                    label={"flops": "energy-aware", "uniform": "vanilla splitting",
                           "random": "random splitting", "width": "width multiplier"}[m])
    ax.set_xlabel("MACs (millions)")
    ax.set_ylabel("CIFAR-10 test accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, name + ".png"), dpi=120)
    result = {"command": "python benchmarks/cifar10_growth.py " + " ".join(argv or sys.argv[1:]),
              "settings": {k: v for k, v in vars(args).items() if k != "data_dir"},
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "tensorflow": tf.__version__},
              "wall_seconds": time.perf_counter() - started,
              "table": table, "runs": runs, "baselines": baselines}
    with open(os.path.join(RESULTS, name + ".json"), "w") as f:
        json.dump(result, f, indent=1)
    os.remove(partial)
    print(f"wrote {os.path.join(RESULTS, name + '.json')}")


if __name__ == "__main__":
    main()
