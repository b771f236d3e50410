"""The data the command line's commands read: the datasets of ``grow`` and ``retrain``,
the parity and calibration inputs of ``export``."""

import math
import os

import numpy as np

from keras_split import data
from keras_split.apps import recipes
from keras_split.data.image_folder import ImageFolder
from keras_split.growing.growth_settings import GrowthSettings
from keras_split.growing.schedule import save_calibration


def check_grow_options(args):
    """Refuses a bad ``grow`` option before any file is written or any step trained.

    Args:
        args: the parsed options of ``grow``.

    Returns:
        The :class:`GrowthSettings` of the run's stages (the whole growth configuration).

    Raises:
        ValueError: naming the option and its value (the command exits 2).
    """
    _check_at_least_one(args, ("stages", "batch_size", "eigen_batches", "epochs_per_stage",
                               "image_size", "grow_every"))
    for name in ("learning_rate", "width"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a positive number. "
                             f"Received: --{name.replace('_', '-')} {value}")
    args.budgets = budgets_option(args.budget)
    for name in ("growth_ratio", "cost", "seed", "budgets"):
        try:
            GrowthSettings(**{name: getattr(args, name)})
        except ValueError as err:
            raise ValueError(f"--{name.replace('_', '-').rstrip('s')}: {err}") from err
    return GrowthSettings(growth_ratio=args.growth_ratio, cost=args.cost, seed=args.seed,
                          budgets=args.budgets)


def budgets_option(values):
    """``{cost name: limit}`` of the ``--budget NAME=LIMIT`` options (None: none given).

    Raises:
        ValueError: for an option that is not ``NAME=number``.

    Example:
        >>> budgets_option(["params=20000"])
        {'params': 20000.0}
    """
    if not values:
        return None
    out = {}
    for value in values:
        name, sep, limit = value.partition("=")
        try:
            if not sep:
                raise ValueError(value)
            out[name.strip()] = float(limit)
        except ValueError:
            raise ValueError(f"--budget takes NAME=LIMIT (say params=20000). "
                             f"Received: --budget {value}") from None
    return out


def check_demo_options(args):
    """Refuses a bad ``demo`` option before anything is printed, written or trained.

    Args:
        args: the parsed options of ``demo``.

    Raises:
        ValueError: naming the option and its value (the command exits 2).
    """
    _check_at_least_one(args, ("stages", "epochs_per_stage", "grow_every", "seeds"))
    if args.target_width is not None and args.target_width < 0:
        raise ValueError(f"--target-width must be 0 (no cap) or a positive width. "
                         f"Received: --target-width {args.target_width}")
    for name in ("growth_ratio", "seed"):
        try:
            GrowthSettings(**{name: getattr(args, name)})
        except ValueError as err:
            raise ValueError(f"--{name.replace('_', '-')}: {err}") from err
    if isinstance(args.curve, str):
        try:
            args.curve = tuple(int(t) for t in args.curve.split(",") if t.strip())
        except ValueError:
            raise ValueError("--curve must be comma-separated integers such as -6,6. "
                             f"Received: --curve {args.curve}") from None


def _check_at_least_one(args, names):
    """Refuses an option of ``names`` below 1 (and ``--epochs`` without
    ``--epochs-per-stage``); None (not given) passes.

    Raises:
        ValueError: naming the option and its value.
    """
    if args.epochs_per_stage is None:
        names = (*names, "epochs")
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1"
                             + (" (growth needs a stage to grow in; `retrain` trains a fixed "
                                "architecture)" if name == "stages" else "")
                             + f". Received: --{name.replace('_', '-')} {value}")


def run_datasets(args, dataset):
    """The training and test data of a ``grow`` or ``retrain`` run.

    Args:
        args: the parsed options (``data``, ``batch_size``, ``seed``, ``image_size`` and
            ``deterministic``: a seeded, ordered training pipeline, the default).
        dataset: ``"imagenet"`` or ``"cifar10"``.

    Returns:
        ``(train_fn, test, n_train, size, classes)``: ``stage -> training dataset``,
        the test dataset (one-hot labels both), the training examples (a folder
        split's real count), the image size and the class count.
    """
    ordered = getattr(args, "deterministic", True)
    if dataset == "imagenet":
        size, classes = args.image_size or 224, 1000
        train_fn = lambda stage: recipes.one_hot(data.imagenet_dataset(  # noqa: E731
            args.data, "train", batch_size=args.batch_size, image_size=size,
            seed=args.seed + stage, deterministic=ordered), classes)
        test = recipes.one_hot(data.imagenet_dataset(
            args.data, "validation", batch_size=args.batch_size, image_size=size), classes)
        n_train = 1_281_167
    else:
        size, classes = 32, 10
        train_fn = lambda stage: recipes.one_hot(data.cifar_dataset(  # noqa: E731
            args.data, "train", batch_size=args.batch_size, seed=args.seed + stage,
            validate=False, deterministic=ordered), classes)
        test = recipes.one_hot(data.cifar_dataset(args.data, "test", batch_size=500,
                                                  validate=False), classes)
        n_train = 50_000
    folder = os.path.join(args.data, "train")
    if os.path.isdir(folder):   # the schedule follows the real size of a folder's train split
        n_train = len(ImageFolder(folder))
    return train_fn, test, n_train, size, classes


def save_test_calibration(out_dir, test, n=256):
    """Saves the first ``n`` test inputs as the run's ``calibration.npz``."""
    inputs = []
    for x, _ in test:
        inputs.append(x.numpy())
        if sum(len(a) for a in inputs) >= n:
            break
    save_calibration(out_dir, np.concatenate(inputs)[:n])


def export_inputs(args, model):
    """The inputs of ``export``'s parity check and int8 calibration.

    Args:
        args: the parsed options (``data``: a data folder, an ``.npz`` or None for
            ``RUN_DIR/calibration.npz``; ``stage_dir``).
        model: the exported model (its input size picks the ImageNet image size).

    Returns:
        ``(inputs or None, where from)``.

    Raises:
        ValueError: for a missing or empty ``.npz``, or a path that is neither.
    """
    path = args.data
    if path is None:
        default = os.path.join(os.path.dirname(os.path.abspath(args.stage_dir)),
                               "calibration.npz")
        if not os.path.exists(default):
            return None, None
        path = default
    if path.endswith(".npz"):
        if not os.path.isfile(path):
            raise ValueError(f"'{path}' does not exist.")
        with np.load(path) as arrays:
            if not arrays.files:
                raise ValueError(f"'{path}' holds no array.")
            return arrays["x" if "x" in arrays.files else arrays.files[0]], path
    if not os.path.isdir(path):
        raise ValueError(f"--data '{path}' is neither a data folder nor an .npz file.")
    if data.detect_dataset(path) == "imagenet":
        size = int(model.inputs[0].shape[1])
        return data.imagenet_dataset(path, "validation", batch_size=50,
                                     image_size=size).take(10), path
    return data.cifar_dataset(path, "test", batch_size=100, validate=False).take(5), path
