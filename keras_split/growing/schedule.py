"""Resumable growth: train -> grow -> train ..., checkpointed atomically after every stage.

The run directory is described in :mod:`keras_split.growing.checkpoint`. Stage 0
trains the seed; stage K >= 1 grows, then trains. Every stage seeds Python,
NumPy, Keras and TensorFlow with ``seed + K`` and gets its data from
``train_data(K)``, so that it depends only on the checkpoint of stage K - 1 and
the run's configuration; with TensorFlow op determinism (the default) and
seeded, ordered input pipelines, a run killed at any moment and restarted with
the same call resumes from the last complete stage and ends bit-identical to an
uninterrupted run (same widths, weights and optimizer state).
"""

import contextlib
import json
import logging
import os

import keras
import tensorflow as tf

from keras_split import compat
from keras_split.growing import distributed
from keras_split.growing.checkpoint import (  # noqa: F401 - re-exported
    CALIBRATION_BYTES, FORMAT, load_stage, load_stage_model, read_run, save_calibration,
    save_stage, write_run)
from keras_split.growing.growing_model import GrowingModel
from keras_split.growing.growth_settings import capped_growth_ratio, validate_max_macs
from keras_split.select.flops import count_flops
from keras_split.select.limits import check_budgets, exceeded_budget, resolve_budgets

logger = logging.getLogger(__name__)


def growth_epochs(epochs, stages, every=None):
    """Per-stage epochs that grow early: ``stages`` short stages, then the longest one.

    Each growth stage trains ``every`` epochs, by default ``epochs // (2 * stages)``
    (at least 1), and the final width gets the rest: by default at least half of
    the run, what did best on CIFAR-10 (docs/benchmarks.md), and 70-75 % of the MAC-epochs
    of training the final width for the whole run. The digits demo grows every 2
    epochs (chosen on its validation split).

    Args:
        epochs: total training epochs (> stages).
        stages: number of growth stages.
        every: epochs of every growth stage (a positive integer with
            ``every * stages < epochs``); None: ``epochs // (2 * stages)``.

    Returns:
        A list of ``stages + 1`` epoch counts summing to ``epochs``.

    Raises:
        ValueError: for a bad ``epochs`` or ``every``.

    Example:
        >>> growth_epochs(60, 3)
        [10, 10, 10, 30]
        >>> growth_epochs(60, 3, every=2)
        [2, 2, 2, 54]
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= stages:
        raise ValueError(f"epochs must be an integer > stages ({stages}). Received: epochs={epochs!r}")
    if every is None:
        every = max(1, epochs // (2 * stages)) if stages else 0
    elif isinstance(every, bool) or not isinstance(every, int) or every < 1 \
            or every * stages >= epochs:
        raise ValueError(f"every must be a positive integer with every * stages < epochs "
                         f"({epochs}). Received: every={every!r}")
    return [every] * stages + [epochs - every * stages]


def epoch_schedule(epochs, stages, epochs_per_stage=None, every=None):
    """The epochs of every stage from a run's options (the demo's and the CLI's).

    Args:
        epochs: total epochs, split by :func:`growth_epochs` (with ``every``).
        stages: number of growth stages.
        epochs_per_stage: instead of ``epochs`` and ``every``: one number for every
            stage, or a list of ``stages + 1`` of them.
        every: epochs of every growth stage (see :func:`growth_epochs`).

    Returns:
        A list of ``stages + 1`` epoch counts.

    Example:
        >>> epoch_schedule(60, 3, every=2)
        [2, 2, 2, 54]
    """
    if epochs_per_stage is None:
        return growth_epochs(epochs, stages, every)
    if isinstance(epochs_per_stage, (list, tuple)):
        return [int(e) for e in epochs_per_stage]
    return [int(epochs_per_stage)] * (stages + 1)


def grow_schedule(build_model, train_data, out_dir, stages=3, epochs_per_stage=1,
                  growth_ratio=0.5, seed=0, grow_kwargs=None, fit_kwargs=None,
                  config=None, deterministic=True, verbose=0, grow_data=None, strategy=None,
                  max_macs=None):
    """Runs (or resumes) train -> grow -> train ... and checkpoints every stage.

    Args:
        build_model: ``() -> GrowingModel``, compiled; called only for a new run.
        train_data: a dataset, or ``stage -> dataset`` (rebuilt every stage, e.g. with
            a seeded shuffle, so that resumed stages see the same data).
        out_dir: the run directory (created if missing).
        stages: number of growth stages after the seed's training.
        epochs_per_stage: training epochs of every stage, or a list of ``stages + 1``
            of them (``[4, 4, 4, 12]``: grow early, the final width longest).
        growth_ratio, seed, verbose: for ``grow`` (verbose: ``fit`` too); stage K: ``seed + K``.
        grow_kwargs, fit_kwargs: more arguments of ``grow`` (JSON-serialisable), of ``fit``;
            a stage above one of the ``budgets`` trains without growing (warned).
        config: JSON-serialisable settings of the run; a restart with others is refused.
        deterministic: TensorFlow op determinism (for the whole process): seeded,
            ordered data make runs and resumptions bit-identical on one machine.
        grow_data: the batches for eigen estimation (a dataset or ``stage -> dataset``;
            default: the stage's training data).
        strategy: a ``tf.distribute.Strategy`` to build, load, train and split under
            (across workers, each runs the same call; the chief alone writes ``out_dir``).
        max_macs: a MACs cap: the stage that reaches it grows only that far, later
            ones not at all (no ``history["stages"]`` record). None: no cap.

    Returns:
        ``(model, history)``: the final GrowingModel and the history dict.

    Raises:
        ValueError: for a bad argument, a directory that is not a run directory,
            a corrupt checkpoint, or a run started with another configuration;
            nothing in ``out_dir`` is overwritten then.
        RuntimeError: across workers, when another one died or stopped responding;
            the message names the last complete stage, from which a rerun resumes.

    Example:
        >>> model, history = grow_schedule(make_seed, train_ds, "runs/a", stages=3)
    """
    epochs = _stage_epochs(stages, epochs_per_stage)
    grow_kwargs, fit_kwargs = dict(grow_kwargs or {}), dict(fit_kwargs or {})
    run_config = _run_config(stages, epochs_per_stage, growth_ratio, seed, grow_kwargs, config,
                             max_macs)
    run = read_run(out_dir)
    resumes = _resumes(out_dir, run, run_config)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = strategy or tf.distribute.get_strategy()
    completed, model, history = _resumed(out_dir, run, run_config, strategy)
    for stage in range(completed + 1, stages + 1):
        keras.utils.set_random_seed(seed + stage)
        model = model if model is not None else _built(build_model, strategy.scope)
        with _lost_workers(strategy, out_dir, stage - 1):
            _grow_and_fit(model, stage, history, (train_data, grow_data),
                          dict(growth_ratio=growth_ratio, seed=seed + stage, verbose=verbose,
                               **grow_kwargs),
                          dict(epochs=epochs[stage], verbose=verbose, **fit_kwargs), max_macs)
        _checkpoint(out_dir, stage, model, history, run_config, resumes, strategy)
    return (model if model is not None else _built(build_model, strategy.scope)), history


# What TensorFlow raises in a collective when another worker has died, stopped sending
# heartbeats or passed the strategy's timeout_seconds.
_WORKER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                  tf.errors.AbortedError, tf.errors.CancelledError)


@contextlib.contextmanager
def _lost_workers(strategy, out_dir, completed):
    """Turns a collective's failure across workers into an error that says what happened
    and how to resume."""
    try:
        yield
    except _WORKER_ERRORS as err:
        if not compat.multi_worker(strategy):
            raise
        raise RuntimeError(
            f"Another worker of the MultiWorkerMirroredStrategy failed or stopped "
            f"responding ({type(err).__name__}); the last complete stage of '{out_dir}' is "
            f"{completed}. Run the same command on every worker again to resume after it."
        ) from err


def _resumed(out_dir, run, run_config, strategy):
    """``(completed stage, model, history)`` of the run so far; ``(-1, None, empty)`` for
    a new run, whose run.json is written now (so that a run killed before its first
    checkpoint is still a run directory). Across workers the chief alone writes the
    run directory; every worker reads it."""
    if distributed.is_chief(strategy):
        os.makedirs(out_dir, exist_ok=True)
        if run is None:
            write_run(out_dir, run_config, -1)
    if run is not None and run["completed"] >= 0:
        return (run["completed"], *load_stage(out_dir, run["completed"], strategy.scope))
    return -1, None, {"stages": [], "fit": []}


def _checkpoint(out_dir, stage, model, history, run_config, resumes, strategy):
    """Saves stage ``stage`` and then run.json, which names it the last completed one (the
    chief alone across workers; the others go on once it is on disk, as they may read it
    next)."""
    if distributed.is_chief(strategy):
        save_stage(out_dir, stage, model, history)
        write_run(out_dir, run_config, stage, resumes)
        logger.info("Stage %d of '%s' saved", stage, out_dir)
    distributed.barrier(strategy)


def _grow_and_fit(model, stage, history, data, grow_kwargs, fit_kwargs, max_macs=None):
    """Stage ``stage``: grow (after the seed's stage 0, up to ``max_macs``), then fit;
    both are recorded in ``history``. ``data`` is ``(train_data, grow_data)`` as
    :func:`grow_schedule` got them."""
    budgets = resolve_budgets(grow_kwargs.get("budgets"))
    if stage == 0:   # a limit the seed exceeds already is refused before any training
        check_budgets(model.channel_graph, budgets)
    train_data, grow_data = data
    train = train_data(stage) if callable(train_data) else train_data
    ratio = _stage_ratio(model, stage, grow_kwargs["growth_ratio"], max_macs, budgets)
    if ratio is not None:
        eigen = train if grow_data is None else (
            grow_data(stage) if callable(grow_data) else grow_data)
        history["stages"].append(
            model.grow(eigen, **dict(grow_kwargs, growth_ratio=ratio)).to_dict())
    fit = model.fit(train, **fit_kwargs)
    history["fit"].append({k: [float(v) for v in vals] for k, vals in fit.history.items()})


def _stage_ratio(model, stage, growth_ratio, max_macs, budgets):
    """The growth ratio of stage ``stage``, or None (logged why) when it does not grow:
    the seed's stage 0, the model at ``max_macs``, or the network above one of
    ``budgets`` (a measured cost such as a latency can move between stages)."""
    if stage == 0:
        return None
    ratio = growth_ratio if max_macs is None else capped_growth_ratio(
        count_flops(model), growth_ratio, max_macs)
    if ratio is None:
        logger.info("Stage %d does not grow: the model has reached max_macs=%s.", stage, max_macs)
        return None
    over = exceeded_budget(model.channel_graph, budgets)
    if over is not None:
        logger.warning("Stage %d does not grow: %s.", stage, over.describe())
        return None
    return ratio


def _stage_epochs(stages, epochs_per_stage):
    """The training epochs of every stage, ``stages + 1`` of them (validated)."""
    if not isinstance(stages, int) or stages < 0:
        raise ValueError(f"stages must be a non-negative integer, got {stages!r}.")
    epochs = epochs_per_stage if isinstance(epochs_per_stage, (list, tuple)) else (
        [epochs_per_stage] * (stages + 1))
    if len(epochs) != stages + 1 or any(
            isinstance(e, bool) or not isinstance(e, int) or e < 0 for e in epochs):
        raise ValueError("epochs_per_stage must be a non-negative integer or a list of "
                         f"stages + 1 = {stages + 1} of them. "
                         f"Received: epochs_per_stage={epochs_per_stage!r}")
    return epochs


def _run_config(stages, epochs_per_stage, growth_ratio, seed, grow_kwargs, config,
                max_macs=None):
    """The settings that identify a run, as they read back from run.json (``max_macs``
    only when set, so that runs made before it resume)."""
    validate_max_macs(max_macs)
    run_config = {
        "stages": stages, "epochs_per_stage": epochs_per_stage,
        "growth_ratio": growth_ratio, "seed": seed, "grow_kwargs": grow_kwargs,
        "user": config or {},
        **({"max_macs": max_macs} if max_macs is not None else {}),
    }
    try:
        return json.loads(json.dumps(run_config, sort_keys=True))
    except TypeError as err:
        raise ValueError(f"grow_kwargs and config must be JSON-serialisable: {err}") from err


def _resumes(out_dir, run, run_config):
    """The run's record of resumptions with another number of stages, this one included;
    refuses a run directory started with other settings."""
    if run is None:
        return []
    old = {k: v for k, v in run["config"].items() if k != "stages"}
    new = {k: v for k, v in run_config.items() if k != "stages"}
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ValueError(
            f"'{out_dir}' holds a run with a different configuration "
            f"(differs in {diff}); use another directory. Nothing was overwritten."
        )
    resumes = list(run.get("resumes", []))
    stages = run_config["stages"]
    if run["config"]["stages"] != stages:
        logger.warning("Resuming '%s' with stages=%d (it was started with stages=%d).",
                       out_dir, stages, run["config"]["stages"])
        # Recorded in run.json, so that the run says it was extended (or cut short).
        resumes.append({"after_stage": run["completed"], "stages_before": run["config"]["stages"],
                        "stages_after": stages})
    return resumes


def _built(build_model, scope):
    """``build_model()`` in ``scope``; it must return a GrowingModel."""
    with scope():
        model = build_model()
    if not isinstance(model, GrowingModel):
        raise ValueError("build_model must return a compiled GrowingModel.")
    return model
