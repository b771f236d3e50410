"""keras_split: grow Keras models by (energy-aware) splitting steepest descent."""

try:
    import tensorflow  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "keras_split needs TensorFlow: pip install 'keras-split[cpu]' (CPU wheel) or "
        "'keras-split[gpu]', or install tensorflow yourself."
    ) from err

from keras_split import data, export, handlers, models, twins
from keras_split.eigenpairs import Eigenpairs
from keras_split.flops import count_flops
from keras_split.growing_model import GrowingModel
from keras_split.growth_callback import GrowthCallback
from keras_split.growth_stage import GrowthStage
from keras_split.schedule import grow_schedule, growth_epochs
from keras_split.selection import select_neurons
from keras_split.split_rule import SplitRule
from keras_split.twins import twin_statistics
from keras_split.handlers import register_handler

__version__ = "0.1.0"

__all__ = [
    "data", "models", "Eigenpairs", "GrowingModel", "export", "GrowthCallback", "GrowthStage", "count_flops",
    "grow_schedule", "growth_epochs", "handlers", "register_handler", "select_neurons", "SplitRule",
    "twin_statistics",
]
