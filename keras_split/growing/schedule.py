"""Resumable growth: train -> grow -> train ..., checkpointed atomically after every stage.

Run directory layout::

    RUN_DIR/run.json          {"format", "config", "completed"}: the last complete stage
    RUN_DIR/stage_K/model.keras   the model (with its optimizer state) after stage K
    RUN_DIR/stage_K/history.json  growth records and fit histories up to stage K

Stage 0 trains the seed; stage K >= 1 grows, then trains. Every stage seeds
Keras, NumPy and TensorFlow with ``seed + K`` and (by default) turns on
TensorFlow op determinism, so a run killed at any moment and restarted with the
same call resumes from the last complete stage and ends with the same weights as
an uninterrupted run.
"""

import json
import logging
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from keras_split.growing.growing_model import GrowingModel
from keras_split.growing.growth_settings import capped_growth_ratio, validate_max_macs
from keras_split.select.flops import count_flops

logger = logging.getLogger(__name__)

FORMAT = "keras_split.run/1"


def _write_json_atomic(path, obj):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_run(out_dir):
    """The ``run.json`` of a run directory, or None for a missing or empty directory.

    Raises:
        ValueError: for a directory that is not a keras_split run directory,
            an unreadable ``run.json``, or a missing stage checkpoint.
    """
    if not os.path.exists(out_dir):
        return None
    if not os.path.isdir(out_dir):
        raise ValueError(f"'{out_dir}' exists and is not a directory.")
    path = os.path.join(out_dir, "run.json")
    if not os.path.exists(path):
        leftovers = [n for n in os.listdir(out_dir) if not n.startswith(".")]
        if leftovers:
            raise ValueError(
                f"'{out_dir}' is not empty and holds no run.json: not a keras_split "
                "run directory. Choose an empty or new directory; nothing was overwritten."
            )
        return None
    try:
        with open(path) as f:
            run = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"'{path}' is corrupt ({err}); nothing was overwritten.") from err
    if not isinstance(run, dict) or run.get("format") != FORMAT or "completed" not in run:
        raise ValueError(f"'{path}' is not a {FORMAT} file; nothing was overwritten.")
    stage_model = os.path.join(out_dir, f"stage_{run['completed']}", "model.keras")
    if run["completed"] >= 0 and not os.path.exists(stage_model):
        raise ValueError(f"'{stage_model}' is missing: the run directory is damaged.")
    return run


def _save_stage(out_dir, stage, model, history):
    final = os.path.join(out_dir, f"stage_{stage}")
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    model.save(os.path.join(tmp, "model.keras"))
    _write_json_atomic(os.path.join(tmp, "history.json"), history)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


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
        train_data: a dataset, or ``stage -> dataset`` (rebuilt every stage, e.g.
            with a seeded shuffle, so that resumed stages see the same data).
        out_dir: the run directory (created if missing).
        stages: number of growth stages after the seed's training.
        epochs_per_stage: training epochs of every stage, or a list of ``stages
            + 1`` of them (``[4, 4, 4, 12]``: grow early, train the final width
            longest, which did best on CIFAR-10).
        growth_ratio, seed: passed to ``grow``; stage K uses ``seed + K``.
        grow_kwargs, fit_kwargs: more arguments of ``grow`` (JSON-serialisable), of ``fit``.
        config: JSON-serialisable settings that identify the run (data path,
            model name...); a restart with other settings is refused.
        deterministic: turn on TensorFlow op determinism.
        verbose: passed to ``fit`` and ``grow``.
        grow_data: the batches for eigen estimation (a dataset or ``stage ->
            dataset``); default: the training data of the stage.
        strategy: a ``tf.distribute.Strategy`` in whose scope models are built
            and loaded, so that training and splitting run under it.
        max_macs: a MACs cap: the stage that reaches it grows only that far, later
            ones not at all (no ``history["stages"]`` record). None: no cap.

    Returns:
        ``(model, history)``: the final GrowingModel and the history dict.

    Raises:
        ValueError: for a bad argument, a directory that is not a run directory,
            a corrupt checkpoint, or a run started with another configuration;
            nothing in ``out_dir`` is overwritten then.

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
    scope = (strategy or tf.distribute.get_strategy()).scope
    os.makedirs(out_dir, exist_ok=True)
    completed, model, history = _resumed(out_dir, run, scope)
    for stage in range(completed + 1, stages + 1):
        keras.utils.set_random_seed(seed + stage)
        if model is None:
            model = _built(build_model, scope)
        _grow_and_fit(model, stage, history, (train_data, grow_data),
                      dict(growth_ratio=growth_ratio, seed=seed + stage, verbose=verbose,
                           **grow_kwargs),
                      dict(epochs=epochs[stage], verbose=verbose, **fit_kwargs), max_macs)
        _checkpoint(out_dir, stage, model, history, run_config, resumes)
    return (model if model is not None else _built(build_model, scope)), history


def _resumed(out_dir, run, scope):
    """``(completed stage, model, history)`` of the run so far (``-1, None, empty`` if new)."""
    if run is not None and run["completed"] >= 0:
        return (run["completed"], *_load_checkpoint(out_dir, run["completed"], scope))
    return -1, None, {"stages": [], "fit": []}


def _checkpoint(out_dir, stage, model, history, run_config, resumes):
    """Saves stage ``stage`` and then run.json, which names it the last completed one."""
    _save_stage(out_dir, stage, model, history)
    _write_json_atomic(os.path.join(out_dir, "run.json"),
                       {"format": FORMAT, "config": run_config, "completed": stage,
                        **({"resumes": resumes} if resumes else {})})
    logger.info("Stage %d of '%s' saved", stage, out_dir)


def _grow_and_fit(model, stage, history, data, grow_kwargs, fit_kwargs, max_macs=None):
    """Stage ``stage``: grow (after the seed's stage 0, up to ``max_macs``), then fit;
    both are recorded in ``history``. ``data`` is ``(train_data, grow_data)`` as
    :func:`grow_schedule` got them."""
    train_data, grow_data = data
    train = train_data(stage) if callable(train_data) else train_data
    ratio = None
    if stage > 0:
        ratio = grow_kwargs["growth_ratio"] if max_macs is None else capped_growth_ratio(
            count_flops(model), grow_kwargs["growth_ratio"], max_macs)
    if ratio is not None:
        eigen = train if grow_data is None else (
            grow_data(stage) if callable(grow_data) else grow_data)
        history["stages"].append(
            model.grow(eigen, **dict(grow_kwargs, growth_ratio=ratio)).to_dict())
    elif stage > 0:
        logger.info("Stage %d does not grow: the model has reached max_macs=%s.", stage, max_macs)
    fit = model.fit(train, **fit_kwargs)
    history["fit"].append({k: [float(v) for v in vals] for k, vals in fit.history.items()})


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


def _load_checkpoint(out_dir, completed, scope):
    """``(model, history)`` of stage ``completed``, loaded in ``scope``."""
    stage_dir = os.path.join(out_dir, f"stage_{completed}")
    try:
        with scope():
            model = load_stage_model(os.path.join(stage_dir, "model.keras"))
        with open(os.path.join(stage_dir, "history.json")) as f:
            history = json.load(f)
    except Exception as err:  # noqa: BLE001 - any failure means a bad checkpoint
        raise ValueError(f"Cannot load the checkpoint in '{stage_dir}': {err}") from err
    logger.info("Resuming '%s' after stage %d", out_dir, completed)
    return model, history


def _built(build_model, scope):
    """``build_model()`` in ``scope``; it must return a GrowingModel."""
    with scope():
        model = build_model()
    if not isinstance(model, GrowingModel):
        raise ValueError("build_model must return a compiled GrowingModel.")
    return model


# Calibration and parity inputs a run keeps for `keras-split export` (at most this many bytes).
CALIBRATION_BYTES = 64 << 20


def save_calibration(run_dir, x):
    """Writes ``RUN_DIR/calibration.npz``: model inputs ``keras-split export`` uses by default.

    They serve as the parity inputs of every export and as the int8 calibration
    set, so they must be what the model takes (preprocessed). At most
    ``CALIBRATION_BYTES`` of them are kept.

    Args:
        run_dir: the run directory.
        x: model inputs, ``[n, *input_shape]``.

    Returns:
        The path written.

    Example:
        >>> save_calibration("runs/demo", x_test[:256])
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2 or not len(x):
        raise ValueError(f"x must be a non-empty batch of inputs. Received: shape {x.shape}")
    keep = max(1, min(len(x), CALIBRATION_BYTES // x[0].nbytes))
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "calibration.npz")
    np.savez(path, x=x[:keep])
    return path


def load_stage_model(path):
    """Loads a ``.keras`` file of a run, with errors that say what is wrong with it.

    Args:
        path: the ``.keras`` file (e.g. ``RUN_DIR/stage_K/model.keras``).

    Returns:
        The loaded model (a :class:`keras_split.GrowingModel` for a run's stages).

    Raises:
        ValueError: for a missing file, or one that is not a complete ``.keras``
            archive (truncated or corrupt), naming the path.

    Example:
        >>> model = load_stage_model("runs/demo/stage_3/model.keras")
    """
    import zipfile

    if not os.path.isfile(path):
        raise ValueError(f"'{path}' does not exist.")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"'{path}' is not a complete .keras archive ({os.path.getsize(path):,} "
                         "bytes; truncated or corrupt): re-save the model, or resume the run "
                         "from an earlier stage.")
    return keras.saving.load_model(path)
