"""The papers' growth recipe, shared by the examples and the CLI.

Stages of train -> grow(growth_ratio) -> train with SGD + momentum, a cosine
learning rate over the whole run, label smoothing, a checkpoint per stage
(:func:`keras_split.grow_schedule`), and a final table of MACs, parameters,
top-1 and top-5 accuracy per stage. Training and splitting run under a
``tf.distribute`` strategy.
"""

import logging

import keras
import tensorflow as tf

from keras_split.apps.results import evaluate_stages, format_table
from keras_split.growing.growing_model import GrowingModel
from keras_split.growing.schedule import epoch_schedule, grow_schedule
from keras_split.select.flops import count_flops

logger = logging.getLogger(__name__)

__all__ = ["compiled_model", "format_table", "one_hot", "retrain_found", "run_growth"]

def one_hot(dataset, num_classes):
    """Maps integer labels to one-hot (label smoothing needs them), keeping the order."""
    return dataset.map(lambda x, y: (x, tf.one_hot(y, num_classes)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def compiled_model(network, learning_rate, total_steps, label_smoothing=0.1, momentum=0.9,
                   weight_decay=4e-5):
    """A GrowingModel with SGD + momentum, cosine decay and label smoothing, top-1/top-5 metrics."""
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, max(int(total_steps), 1))
    model = GrowingModel(network)
    model.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=momentum, nesterov=True,
                                       weight_decay=weight_decay or None),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                  label_smoothing=label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="top1"),
                 keras.metrics.TopKCategoricalAccuracy(k=5, name="top5")],
    )
    return model


def run_growth(build_network, train_fn, eval_data, out_dir, stages, epochs_per_stage,
               steps_per_epoch, learning_rate, growth_ratio=0.5, eigen_batches=100,
               seed=0, strategy=None, cost="flops", label_smoothing=0.1, verbose=1,
               config=None, deterministic=True, budgets=None):
    """Runs (or resumes) the recipe and returns one row per stage.

    Args:
        build_network: ``() -> keras.Model``, the seed network.
        train_fn: ``stage -> dataset`` of ``(images, one-hot labels)``.
        eval_data: evaluation dataset of ``(images, one-hot labels)``.
        out_dir: run directory.
        stages, epochs_per_stage, growth_ratio, seed: as in ``grow_schedule``
            (``epochs_per_stage`` may be a list, e.g. from ``growth_epochs``).
        steps_per_epoch: for the cosine schedule's length.
        learning_rate: peak learning rate.
        eigen_batches: training batches used for eigen estimation per stage.
        strategy: a ``tf.distribute.Strategy`` (default: the current one).
        cost: ``grow``'s cost mode.
        budgets: ``grow``'s further limits, ``{cost name: limit}`` (None: none).
        label_smoothing: of the loss.
        verbose: Keras verbosity.
        config: extra settings that identify the run.
        deterministic: TensorFlow op determinism (see ``grow_schedule``); ``train_fn``
            must then also be seeded and ordered (``deterministic=True`` pipelines).

    Returns:
        A list of ``{stage, macs, params, top1, top5}``; also written to
        ``out_dir/results.json``.
    """
    epochs = epoch_schedule(None, stages, epochs_per_stage)
    total_steps = sum(epochs) * steps_per_epoch
    grow_schedule(
        lambda: compiled_model(build_network(), learning_rate, total_steps, label_smoothing),
        train_fn, out_dir, stages=stages, epochs_per_stage=epochs,
        growth_ratio=growth_ratio, seed=seed, strategy=strategy, deterministic=deterministic,
        grow_data=lambda stage: train_fn(stage).take(eigen_batches),
        # The growth defaults otherwise.
        grow_kwargs={"cost": cost, **({"budgets": budgets} if budgets else {})},
        config=dict(config or {}, learning_rate=learning_rate,
                    label_smoothing=label_smoothing, eigen_batches=eigen_batches),
        verbose=verbose,
    )

    def measure(stage, model):
        metrics = model.evaluate(eval_data, verbose=0, return_dict=True)
        return {"stage": stage, "macs": count_flops(model), "params": int(model.count_params()),
                "top1": float(metrics["top1"]), "top5": float(metrics["top5"])}

    return evaluate_stages(out_dir, stages, measure,
                           scope=(strategy or tf.distribute.get_strategy()).scope)


def retrain_found(model, train_data, eval_data, epochs, steps_per_epoch, learning_rate,
                  label_smoothing=0.1, seed=0, verbose=1, strategy=None):
    """Trains the architecture ``model`` found, freshly initialised, with this recipe.

    Args:
        model: the grown ``GrowingModel`` (its widths are kept, its weights not).
        train_data: dataset of ``(images, one-hot labels)``, repeated for ``epochs``.
        eval_data: evaluation dataset of ``(images, one-hot labels)``.
        epochs: training epochs (the grown run's total, for a fair comparison).
        steps_per_epoch: batches per epoch.
        learning_rate, label_smoothing: as in :func:`run_growth`.
        seed: seed of the fresh weights.
        verbose: Keras verbosity.
        strategy: a ``tf.distribute.Strategy`` (default: the current one).

    Returns:
        ``(network, {macs, params, epochs, top1, top5})``.
    """
    scope = (strategy or tf.distribute.get_strategy()).scope
    with scope():
        fresh = compiled_model(model.found_architecture(seed=seed), learning_rate,
                               epochs * steps_per_epoch, label_smoothing)
    fresh.fit(train_data, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=verbose)
    metrics = fresh.evaluate(eval_data, verbose=0, return_dict=True)
    return fresh, {"label": "found architecture, retrained", "macs": count_flops(fresh),
                   "params": int(fresh.count_params()), "epochs": int(epochs),
                   "top1": float(metrics["top1"]), "top5": float(metrics["top5"])}

