"""The offline demo: grow a small MobileNet-style network on scikit-learn's digits.

scikit-learn ships the UCI handwritten digits (1 797 real 8x8 grey images, 10
classes) inside its package, so the demo needs no download. The seed network
is a MobileNetV1-style stack with 8 channels everywhere (the papers' CIFAR seed,
scaled to 8x8 inputs), with swish activations; it is grown by energy-aware
splitting with :func:`keras_split.grow_schedule`, so that an interrupted demo
resumes where it stopped.
"""

import json
import logging
import os

import keras
import numpy as np
import tensorflow as tf

from keras_split.flops import count_flops
from keras_split.growing_model import GrowingModel
from keras_split.schedule import grow_schedule, load_stage_model

logger = logging.getLogger(__name__)
L = keras.layers


def load_digits(test_fraction=0.25, seed=0):
    """``((x_train, y_train), (x_test, y_test))``: digits as float32 ``[n, 8, 8, 1]`` in [0, 1]."""
    from sklearn.datasets import load_digits as sk_load_digits

    digits = sk_load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def seed_network(width=8, blocks=3, num_classes=10, activation="swish", input_shape=(8, 8, 1)):
    """A tiny MobileNetV1-style network: conv, depthwise-separable blocks, a classifier.

    Blocks 1 and 2 downsample by 2; every layer has ``width`` channels.
    """
    x = keras.Input(input_shape, name="image")
    h = L.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(x)
    h = L.BatchNormalization(name="stem_bn")(h)
    h = L.Activation(activation, name="stem_act")(h)
    for i in range(blocks):
        stride = 2 if i in (1, 2) else 1
        h = L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                              name=f"block{i}_dw")(h)
        h = L.BatchNormalization(name=f"block{i}_dw_bn")(h)
        h = L.Activation(activation, name=f"block{i}_dw_act")(h)
        h = L.Conv2D(width, 1, use_bias=False, name=f"block{i}_pw")(h)
        h = L.BatchNormalization(name=f"block{i}_pw_bn")(h)
        h = L.Activation(activation, name=f"block{i}_pw_act")(h)
    h = L.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(x, L.Dense(num_classes, name="logits")(h), name="digits_mobilenet")


def _optimizer(learning_rate, total_steps):
    """SGD with momentum and one cosine decay over the whole run (kept across splits)."""
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, total_steps, alpha=0.01)
    return keras.optimizers.SGD(learning_rate=schedule, momentum=0.9)


def _compiled(learning_rate, total_steps):
    model = GrowingModel(seed_network())
    model.compile(
        optimizer=_optimizer(learning_rate, total_steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _train_from_scratch(network, label, epochs, data, learning_rate, batch_size, seed):
    """Trains ``network`` from its initial weights with the demo's schedule; returns a record."""
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    steps = epochs * -(-len(x_train) // batch_size)
    network.compile(optimizer=_optimizer(learning_rate, steps),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"])
    network.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0)
    _, acc = network.evaluate(x_test, y_test, batch_size=256, verbose=0)
    return {"label": label, "macs": count_flops(network), "params": int(network.count_params()),
            "epochs": epochs, "accuracy": float(acc)}


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


def retrain(run_dir):
    """Trains the demo run's found architecture from scratch with the run's recipe.

    The final stage's widths, freshly initialised, are trained for as many
    epochs as the grown network received in all, with the same optimizer and
    schedule. Writes ``retrained.json`` and, when ``baselines.json`` exists,
    ``comparison.json`` with the verdict.

    Args:
        run_dir: a demo run directory (``keras-split demo --out RUN_DIR``).

    Returns:
        The ``retrained.json`` record.

    Raises:
        ValueError: for a directory that is not a complete demo run.
    """
    from keras_split.schedule import read_run

    run = read_run(run_dir)
    if run is None or "demo" not in run["config"]["user"]:
        raise ValueError(f"'{run_dir}' is not a keras-split demo run directory.")
    config, user = run["config"], run["config"]["user"]
    if run["completed"] != config["stages"]:
        raise ValueError(f"The demo run in '{run_dir}' is not complete: rerun the demo first.")
    epochs = config["epochs_per_stage"]
    epochs = sum(epochs) if isinstance(epochs, list) else epochs * (config["stages"] + 1)
    seed = config["seed"]
    model = load_stage_model(os.path.join(run_dir, f"stage_{run['completed']}",
                                          "model.keras"))
    data = load_digits(seed=seed)
    retrained = _train_from_scratch(model.found_architecture(seed=seed),
                                    "found architecture, retrained", epochs, data,
                                    user["learning_rate"], user["batch_size"], seed)
    _write_json(os.path.join(run_dir, "retrained.json"), retrained)
    results = os.path.join(run_dir, "results.json")
    baselines = os.path.join(run_dir, "baselines.json")
    if os.path.exists(results) and os.path.exists(baselines):
        with open(results) as f:
            final = json.load(f)[-1]
        with open(baselines) as f:
            base = json.load(f)[-1]
        grown = {"label": "grown in place", "macs": final["macs"], "params": final["params"],
                 "epochs": epochs, "accuracy": final["test_accuracy"]}
        _write_json(os.path.join(run_dir, "comparison.json"),
                    {"grown": grown, "width": base, "retrained": retrained,
                     "verdict": verdict(grown, base, retrained)})
    return retrained


def verdict(grown, width, retrained=None):
    """One plain sentence comparing the grown network with the width multiplier (and retrained)."""
    diff = 100 * (grown["accuracy"] - width["accuracy"])
    text = (f"Grown in place: {grown['accuracy']:.4f} at {grown['macs']:,} MACs; "
            f"{width['label']} from scratch: {width['accuracy']:.4f} at {width['macs']:,} MACs "
            f"(same epochs and schedule): growth is {abs(diff):.1f} points "
            f"{'ahead of' if diff >= 0 else 'behind'} the width multiplier.")
    if retrained is not None:
        diff = 100 * (retrained["accuracy"] - width["accuracy"])
        text += (f" The found architecture retrained from scratch: {retrained['accuracy']:.4f} "
                 f"({abs(diff):.1f} points {'ahead of' if diff >= 0 else 'behind'} the "
                 "width multiplier).")
    return text


def run_demo(out_dir, stages=3, epochs=60, epochs_per_stage=None, growth_ratio=0.5,
             batch_size=64, learning_rate=0.05, seed=0, verbose=0, baselines=True, report=True):
    """Grows the digits network and writes ``results.json``; returns the per-stage rows.

    The protocol is the one measured best on CIFAR-10 (README): one cosine
    learning-rate schedule over the whole run, growth early (``stages`` short
    stages, see :func:`keras_split.schedule.growth_epochs`), then the final width
    trains for at least half of the run.

    Args:
        out_dir: the run directory (resumable; see :func:`keras_split.grow_schedule`).
        stages: growth stages after the seed's training.
        epochs: total training epochs of the grown network (and of every baseline).
        epochs_per_stage: instead of ``epochs``: the same number of epochs per stage.
        growth_ratio: MACs budget of every stage, as a fraction.
        batch_size: training batch size.
        learning_rate: peak SGD learning rate (momentum 0.9), cosine-decayed over the
            whole run; the baselines get the same schedule over their (equal) epochs.
        seed: seed of everything.
        verbose: passed to fit and grow.
        baselines: also train, from scratch and for as many epochs, the uniform
            width whose MACs are nearest the grown network's (``baselines.json``)
            and the grown architecture freshly initialised (``retrained.json``);
            ``comparison.json`` holds the verdict.
        report: write ``OUT_DIR/report`` (plots, GradCAM and saliency maps).

    Returns:
        A list of dicts ``{stage, macs, params, test_accuracy, widths, twin_fraction}``.
    """
    from keras_split.schedule import growth_epochs, save_calibration
    from keras_split.twins import twin_statistics

    schedule = (growth_epochs(epochs, stages) if epochs_per_stage is None
                else [int(epochs_per_stage)] * (stages + 1))
    (x_train, y_train), (x_test, y_test) = load_digits(seed=seed)

    def train_data(stage):
        return (tf.data.Dataset.from_tensor_slices((x_train, y_train))
                .shuffle(len(x_train), seed=seed + stage).batch(batch_size))

    total_steps = sum(schedule) * -(-len(x_train) // batch_size)
    grow_schedule(
        lambda: _compiled(learning_rate, total_steps), train_data, out_dir, stages=stages,
        epochs_per_stage=schedule, growth_ratio=growth_ratio, seed=seed,
        grow_kwargs={"eigen_epochs": 4, "cost": "flops"},
        config={"demo": "digits", "batch_size": batch_size, "learning_rate": learning_rate},
        verbose=verbose,
    )
    rows = []
    for stage in range(stages + 1):
        model = load_stage_model(os.path.join(out_dir, f"stage_{stage}", "model.keras"))
        _, acc = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
        rows.append({
            "stage": stage,
            "epochs": sum(schedule[:stage + 1]),
            "macs": count_flops(model),
            "params": int(model.count_params()),
            "test_accuracy": float(acc),
            "twin_fraction": twin_statistics(model)["twin_fraction"],
            "widths": {n: int(model.network.get_layer(n).kernel.shape[-1])
                       for n in model.splittable_layers},
        })
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(rows, f, indent=1)
    save_calibration(out_dir, x_test)
    if baselines:
        data = ((x_train, y_train), (x_test, y_test))
        macs_of = {w: count_flops(seed_network(width=w)) for w in range(8, 65)}
        width = min(macs_of, key=lambda w: abs(macs_of[w] - rows[-1]["macs"]))
        logger.info("Training the width-%d baseline from scratch", width)
        base = _train_from_scratch(seed_network(width=width), f"width {width}", sum(schedule),
                                   data, learning_rate, batch_size, seed)
        _write_json(os.path.join(out_dir, "baselines.json"), [base])
        retrain(out_dir)
    if report:
        from keras_split.report import write_report

        pick = np.concatenate([np.flatnonzero(y_test == c)[:1] for c in range(10)])
        write_report(out_dir, x_test[pick], y_test[pick])
    return rows
