"""A run directory on disk, written so that a run killed at any moment can resume.

Every file is written aside (``*.tmp``) and moved into place with ``os.replace``,
so that a reader finds the old or the new version of each file, never half of one;
``run.json`` is written last and names the last stage whose checkpoint is complete.

Run directory layout::

    RUN_DIR/run.json                  {"format", "config", "completed"}: the last
                                      complete stage (-1: none yet)
    RUN_DIR/stage_K/model.keras       the model with its optimizer state after stage K
    RUN_DIR/stage_K/history.json      growth records and fit histories up to stage K
    RUN_DIR/stage_K/training_state.npz  the catch-up record of the entries splits
                                      created (only when a split rule boosts them)
"""

import json
import logging
import os
import shutil

import keras
import numpy as np

from keras_split.surgery.catch_up import CatchUp

logger = logging.getLogger(__name__)

FORMAT = "keras_split.run/1"

# Calibration and parity inputs a run keeps for `keras-split export` (at most this many bytes).
CALIBRATION_BYTES = 64 << 20


def write_json_atomic(path, obj, sort_keys=True):
    """Writes ``obj`` as indented JSON to ``path`` through a temporary file and
    ``os.replace``: a reader (or a killed writer) leaves the old or the new file.

    Args:
        path: the file.
        obj: a JSON-serialisable object.
        sort_keys: sort the keys of every dict.
    """
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=sort_keys)
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


def write_run(out_dir, run_config, completed, resumes=()):
    """Writes ``run.json``: the run's configuration and its last complete stage."""
    write_json_atomic(os.path.join(out_dir, "run.json"),
                      {"format": FORMAT, "config": run_config, "completed": completed,
                       **({"resumes": list(resumes)} if resumes else {})})


def save_stage(out_dir, stage, model, history):
    """Writes ``RUN_DIR/stage_<stage>`` aside, then moves it into place."""
    final = os.path.join(out_dir, f"stage_{stage}")
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    model.save(os.path.join(tmp, "model.keras"))
    if model.catch_up.active:
        np.savez(os.path.join(tmp, "training_state.npz"), **model.catch_up.to_arrays())
    write_json_atomic(os.path.join(tmp, "history.json"), history)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def load_stage(out_dir, stage, scope):
    """``(model, history)`` of the checkpoint of ``stage``, the model loaded in ``scope``.

    Raises:
        ValueError: for a checkpoint that does not load, naming its directory.
    """
    stage_dir = os.path.join(out_dir, f"stage_{stage}")
    state = os.path.join(stage_dir, "training_state.npz")
    try:
        with scope():
            model = load_stage_model(os.path.join(stage_dir, "model.keras"))
        if os.path.exists(state):
            with np.load(state) as arrays:
                model.catch_up = CatchUp.from_arrays(arrays)
        with open(os.path.join(stage_dir, "history.json")) as f:
            history = json.load(f)
    except Exception as err:  # noqa: BLE001 - any failure means a bad checkpoint
        raise ValueError(f"Cannot load the checkpoint in '{stage_dir}': {err}") from err
    logger.info("Resuming '%s' after stage %d", out_dir, stage)
    return model, history


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

    Raises:
        ValueError: for ``x`` that is not a non-empty batch.

    Example:
        >>> save_calibration("runs/demo", x_test[:256])
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2 or not len(x):
        raise ValueError(f"x must be a non-empty batch of inputs. Received: shape {x.shape}")
    keep = max(1, min(len(x), CALIBRATION_BYTES // x[0].nbytes))
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "calibration.npz")
    with open(f"{path}.tmp", "wb") as f:
        np.savez(f, x=x[:keep])
    os.replace(f"{path}.tmp", path)
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
