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

from keras_split.apps.demo_protocol import CURVE, GROW_EVERY, TARGET_WIDTH
from keras_split.apps.results import evaluate_stages, write_json
from keras_split.growing.growing_model import GrowingModel
from keras_split.growing.schedule import (epoch_schedule, grow_schedule, load_stage_model,
                                          read_run, save_calibration)
from keras_split.select.flops import count_flops

logger = logging.getLogger(__name__)
L = keras.layers


def load_digits(test_fraction=0.25, seed=0, validation=False):
    """``((x_train, y_train), (x_test, y_test))``: digits as float32 ``[n, 8, 8, 1]`` in [0, 1].

    With ``validation``, the second pair is a validation split carved from the
    training images (a quarter of them) instead of the test images, and the
    first pair is the rest: for choosing settings without the test set.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    digits = sk_load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    if validation:
        train = train[np.random.default_rng(1000 + seed).permutation(len(train))]
        test, train = train[:len(train) // 4], train[len(train) // 4:]
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
    run = read_run(run_dir)
    if run is None or "demo" not in run["config"]["user"]:
        raise ValueError(f"'{run_dir}' is not a keras-split demo run directory.")
    config, user = run["config"], run["config"]["user"]
    if run["completed"] != config["stages"]:
        raise ValueError(f"The demo run in '{run_dir}' is not complete: rerun the demo first.")
    epochs = sum(epoch_schedule(None, config["stages"], config["epochs_per_stage"]))
    seed = config["seed"]
    model = load_stage_model(os.path.join(run_dir, f"stage_{run['completed']}",
                                          "model.keras"))
    data = load_digits(seed=seed, validation=user.get("validation", False))
    retrained = _train_from_scratch(model.found_architecture(seed=seed),
                                    "found architecture, retrained", epochs, data,
                                    user["learning_rate"], user["batch_size"], seed)
    write_json(os.path.join(run_dir, "retrained.json"), retrained)
    results = os.path.join(run_dir, "results.json")
    baselines = os.path.join(run_dir, "baselines.json")
    if os.path.exists(results) and os.path.exists(baselines):
        with open(results) as f:
            final = json.load(f)[-1]
        with open(baselines) as f:
            widths = json.load(f)
        # The matched width (older runs hold it alone).
        base = next((b for b in widths if b.get("matched")), widths[-1])
        grown = {"label": "grown in place", "macs": final["macs"], "params": final["params"],
                 "epochs": epochs, "accuracy": final["test_accuracy"]}
        write_json(os.path.join(run_dir, "comparison.json"),
                    {"grown": grown, "width": base, "retrained": retrained,
                     "verdict": verdict(grown, base, retrained)})
    return retrained


def _points(diff):
    """``"1.2 points ahead of"`` or ``"0.4 points behind"`` for a difference in points."""
    return f"{abs(diff):.1f} points {'ahead of' if diff >= 0 else 'behind'}"


def verdict(grown, width, retrained=None):
    """One plain sentence comparing the grown network with the width multiplier (and retrained)."""
    diff = 100 * (grown["accuracy"] - width["accuracy"])
    text = (f"Grown in place: {grown['accuracy']:.4f} at {grown['macs']:,} MACs; "
            f"{width['label']} from scratch: {width['accuracy']:.4f} at {width['macs']:,} MACs "
            f"(same epochs and schedule): growth is {_points(diff)} the width multiplier.")
    if retrained is not None:
        diff = 100 * (retrained["accuracy"] - width["accuracy"])
        text += (f" The found architecture retrained from scratch: {retrained['accuracy']:.4f} "
                 f"({_points(diff)} the "
                 "width multiplier).")
    return text


def verdict_over_seeds(runs):
    """One plain sentence comparing the means over seeds (``runs``: comparison dicts).

    Example:
        >>> verdict_over_seeds([json.load(open("runs/demo/comparison.json"))])
    """
    def stats(key):
        acc = np.array([r[key]["accuracy"] for r in runs])
        std = acc.std(ddof=1) if len(acc) > 1 else 0.0   # the sample std, as every table
        return acc.mean(), std, int(round(np.mean([r[key]["macs"] for r in runs])))

    (g, gs, gm), (w, ws, wm) = stats("grown"), stats("width")
    labels = sorted({r["width"]["label"] for r in runs})
    ahead = sum(r["grown"]["accuracy"] >= r["width"]["accuracy"] for r in runs)
    diff = 100 * (g - w)
    text = (f"Over {len(runs)} seeds (test accuracy, mean ± sample std): grown in place "
            f"{g:.4f} ± {gs:.4f} at {gm:,} MACs; {' / '.join(labels)} from scratch "
            f"{w:.4f} ± {ws:.4f} at {wm:,} MACs (same epochs and schedule): growth is "
            f"{_points(diff)} the width "
            f"multiplier (at least level on {ahead} of {len(runs)} seeds).")
    if all("retrained" in r for r in runs):
        r_mean, r_std, _ = stats("retrained")
        diff = 100 * (r_mean - w)
        text += (f" The found architecture retrained from scratch: {r_mean:.4f} ± {r_std:.4f} "
                 f"({_points(diff)} the width "
                 "multiplier).")
    return text


def seed_dirs(out_dir, seed=0, seeds=1):
    """``{seed: run directory}``: the first seed's run is ``out_dir``, the others'
    ``out_dir/seeds/seed_<s>``."""
    return {s: out_dir if s == seed else os.path.join(out_dir, "seeds", f"seed_{s}")
            for s in range(seed, seed + seeds)}


def run_demo(out_dir, stages=3, epochs=60, epochs_per_stage=None, growth_ratio=0.5,
             batch_size=64, learning_rate=0.05, seed=0, verbose=0, baselines=True, report=True,
             seeds=3, grow_every=GROW_EVERY, target_width=TARGET_WIDTH, curve=CURVE):
    """Grows the digits network on ``seeds`` seeds and compares it with the width multiplier.

    Every seed is a whole run (its own train/test split of the 1 797 images,
    initialisation and shuffling; see :func:`run_seed`): the first in
    ``out_dir``, the others in ``out_dir/seeds/seed_<s>``. On 449 test images one
    seed's difference is noise (a point is 4-5 images, and the seed alone moves the
    width multiplier's accuracy by points), so the verdict compares the means:
    ``OUT_DIR/seeds.json`` holds every seed's three accuracies, the means and
    the sentence, which the report shows.

    Args:
        out_dir: the run directory (resumable; see :func:`keras_split.grow_schedule`).
        stages, epochs, epochs_per_stage, growth_ratio, batch_size, learning_rate,
            verbose, baselines, grow_every, target_width: as :func:`run_seed`, for
            every seed.
        seed: the first seed.
        report: write ``OUT_DIR/report`` (plots, GradCAM and saliency maps of the
            first seed's run, the table over seeds).
        seeds: how many seeds (``seed``, ``seed + 1``, ...).
        curve: the first seed also trains these widths (offsets from the matched one)
            from scratch, for the width multiplier's curve in the report.

    Returns:
        The first seed's rows (see :func:`run_seed`).

    Raises:
        ValueError: for ``seeds < 1``.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer. Received: seeds={seeds!r}")
    first = None
    comparisons = []
    for s, run_dir in seed_dirs(out_dir, seed, seeds).items():
        if s != seed:
            logger.info("Seed %d of %d: %s", s - seed + 1, seeds, run_dir)
        rows = run_seed(run_dir, stages=stages, epochs=epochs, epochs_per_stage=epochs_per_stage,
                        growth_ratio=growth_ratio, batch_size=batch_size,
                        learning_rate=learning_rate, seed=s, verbose=verbose,
                        baselines=baselines, grow_every=grow_every, target_width=target_width,
                        curve=curve if s == seed else ())
        first = rows if first is None else first
        comparison = os.path.join(run_dir, "comparison.json")
        if baselines and os.path.exists(comparison):
            with open(comparison) as f:
                comparisons.append(dict(json.load(f), seed=s))
    if comparisons:
        write_json(os.path.join(out_dir, "seeds.json"),
                    {"seeds": [c["seed"] for c in comparisons], "runs": comparisons,
                     "verdict": verdict_over_seeds(comparisons)})
    if report:
        from keras_split.apps.report import write_report

        _, (x_test, y_test) = load_digits(seed=seed)
        pick = np.concatenate([np.flatnonzero(y_test == c)[:1] for c in range(10)])
        write_report(out_dir, x_test[pick], y_test[pick])
    return first


def run_seed(out_dir, stages=3, epochs=60, epochs_per_stage=None, growth_ratio=0.5,
             batch_size=64, learning_rate=0.05, seed=0, verbose=0, baselines=True,
             split_rule=None, validation=False, grow_every=GROW_EVERY,
             target_width=TARGET_WIDTH, curve=()):
    """Grows the digits network with one seed and writes ``results.json``; returns its rows.

    The protocol (chosen on a validation split, ``benchmarks/digits_protocols.py``):
    one cosine learning-rate schedule over the whole run, ``stages`` growth stages
    of ``grow_every`` epochs, then the final width, never past the MACs of the
    uniform ``target_width``, trains for the rest.

    Args:
        out_dir: the run directory (resumable; see :func:`keras_split.grow_schedule`).
        stages: growth stages after the seed's training.
        epochs: total training epochs of the grown network (and of every baseline).
        epochs_per_stage: instead of ``epochs`` and ``grow_every``: epochs of every
            stage (one number, or a list).
        growth_ratio, batch_size: the MACs budget of every stage (a fraction), the batch.
        learning_rate: peak SGD learning rate (momentum 0.9), cosine-decayed (baselines too).
        seed: seed of everything (the train/test split included).
        verbose: passed to fit and grow.
        baselines: also train, from scratch for as many epochs, the narrowest uniform
            width with at least the grown network's MACs (``baselines.json``) and the
            grown architecture afresh (``retrained.json``); ``comparison.json`` says.
        split_rule: ``grow``'s split rule (default: its default).
        validation: measure on a validation split of the training images instead
            (:func:`load_digits`), under the same ``test_accuracy`` keys.
        grow_every: epochs of every growth stage (with ``epochs``).
        target_width: growth stops at the MACs of this uniform width (None: no cap).
        curve: with ``baselines``, also these widths (offsets from the matched one) from
            scratch; ``baselines.json`` lists all by MACs, the matched one ``"matched"``.

    Returns:
        A list of dicts ``{stage, macs, params, test_accuracy, widths, twin_fraction}``.
    """
    schedule = epoch_schedule(epochs, stages, epochs_per_stage, grow_every)
    max_macs = None if target_width is None else count_flops(seed_network(width=target_width))
    (x_train, y_train), (x_test, y_test) = load_digits(seed=seed, validation=validation)
    # The growth defaults, as a user's grow() gets them.
    grow_kwargs = {"split_rule": split_rule} if split_rule else {}

    def train_data(stage):
        return (tf.data.Dataset.from_tensor_slices((x_train, y_train))
                .shuffle(len(x_train), seed=seed + stage).batch(batch_size))

    total_steps = sum(schedule) * -(-len(x_train) // batch_size)
    grow_schedule(
        lambda: _compiled(learning_rate, total_steps), train_data, out_dir, stages=stages,
        epochs_per_stage=schedule, growth_ratio=growth_ratio, seed=seed,
        grow_kwargs=grow_kwargs, max_macs=max_macs,
        config={"demo": "digits", "batch_size": batch_size, "learning_rate": learning_rate,
                **({"validation": True} if validation else {})}, verbose=verbose)
    rows = evaluate_stages(out_dir, stages, lambda stage, model: _stage_row(
        stage, model, sum(schedule[:stage + 1]), x_test, y_test, x_train))
    save_calibration(out_dir, x_test)
    if baselines:
        _train_baselines(out_dir, rows[-1]["macs"], sum(schedule),
                         ((x_train, y_train), (x_test, y_test)), learning_rate, batch_size, seed,
                         curve)
    return rows


def _stage_row(stage, model, epochs, x_test, y_test, x_train):
    """The ``results.json`` row of one stage's model, trained ``epochs`` epochs in all:
    ``test_accuracy`` with its BatchNorm moving statistics, ``test_accuracy_bn`` with
    statistics re-estimated on the training images (early stages' moving statistics
    still describe the weights of many steps ago)."""
    from keras_split.growing.batchnorm_statistics import recalibrate_batchnorm
    from keras_split.growing.twins import twin_statistics

    _, acc = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    recalibrate_batchnorm(model, x_train, batch_size=256)
    _, acc_bn = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    return {
        "stage": stage,
        "epochs": epochs,
        "macs": count_flops(model),
        "params": int(model.count_params()),
        "test_accuracy": float(acc),
        "test_accuracy_bn": float(acc_bn),
        "twin_fraction": twin_statistics(model)["twin_fraction"],
        "widths": {n: model.channel_graph.units(n) for n in model.splittable_layers},
    }


def _train_baselines(out_dir, macs, epochs, data, learning_rate, batch_size, seed, curve=()):
    """Trains the narrowest uniform width with at least ``macs`` MACs from scratch, and
    the ``curve`` widths around it (``baselines.json``), then the found architecture
    (:func:`retrain`)."""
    widths = range(8, 65)
    width = next((w for w in widths if count_flops(seed_network(width=w)) >= macs), widths[-1])
    others = sorted({width + int(d) for d in curve} - {width})
    bases = []
    for w in [width] + [w for w in others if w >= 2]:
        logger.info("Training the width-%d baseline from scratch", w)
        # Initialised from the seed alone, whatever the growth run before it drew.
        keras.utils.set_random_seed(seed)
        base = _train_from_scratch(seed_network(width=w), f"width {w}", epochs,
                                   data, learning_rate, batch_size, seed)
        bases.append(dict(base, matched=True) if w == width else base)
    write_json(os.path.join(out_dir, "baselines.json"), sorted(bases, key=lambda b: b["macs"]))
    retrain(out_dir)
