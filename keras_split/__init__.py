"""keras_split: grow Keras models by (energy-aware) splitting steepest descent.

The public names are imported on first use (PEP 562), so that ``import
keras_split`` and ``keras-split --help`` do not load TensorFlow; the first
attribute that needs it does, with the usual errors.
"""

import importlib
import sys

__version__ = "0.1.0"

# Public name -> the module that defines it (a module itself where the name is a module).
_PUBLIC = {
    "costs": "keras_split.select.cost_library",
    "data": "keras_split.data",
    "export": "keras_split.apps.export",
    "handlers": "keras_split.graph.handlers",
    "models": "keras_split.models",
    "twins": "keras_split.growing.twins",
    "Eigenpairs": "keras_split.estimate.eigenpairs",
    "count_flops": "keras_split.select.flops",
    "GrowingModel": "keras_split.growing.growing_model",
    "GrowthCallback": "keras_split.growing.growth_callback",
    "GrowthSettings": "keras_split.growing.growth_settings",
    "GrowthStage": "keras_split.growing.growth_stage",
    "grow_schedule": "keras_split.growing.schedule",
    "growth_epochs": "keras_split.growing.schedule",
    "select_neurons": "keras_split.select.knapsack",
    "SplitRule": "keras_split.surgery.split_rule",
    "twin_statistics": "keras_split.growing.twins",
    "register_handler": "keras_split.graph.handler_registry",
    "unregister_handler": "keras_split.graph.handler_registry",
    "recalibrate_batchnorm": "keras_split.growing.batchnorm_statistics",
}

# Public names that are modules under another name.
_MODULES = {"costs"}

__all__ = sorted(_PUBLIC)


def _import_tensorflow():
    try:
        import tensorflow  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "keras_split needs TensorFlow: pip install 'keras-split[cpu]' (CPU wheel) or "
            "'keras-split[gpu]', or install tensorflow yourself."
        ) from err


def __getattr__(name):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'keras_split' has no attribute {name!r}")
    _import_tensorflow()
    value = importlib.import_module(module)
    if not (module.endswith("." + name) or name in _MODULES):
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))


if "keras" in sys.modules:
    # Keras (and so TensorFlow) is loaded already: register GrowingModel now, so that
    # keras.saving.load_model finds it in a .keras file with no ks.* attribute used first.
    # Imported before Keras, `ks.GrowingModel` (or any use of it) registers it.
    importlib.import_module("keras_split.growing.growing_model")
