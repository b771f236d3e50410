"""MobileNet builders whose outputs `GrowingModel` grows with no extra code."""

from keras_split.models.common import channels_of, make_divisible
from keras_split.models.mobilenet_v1 import mobilenet_v1, mobilenet_v1_cifar
from keras_split.models.mobilenet_v2 import mobilenet_v2, mobilenet_v2_cifar

__all__ = ["channels_of", "make_divisible", "mobilenet_v1", "mobilenet_v1_cifar",
           "mobilenet_v2", "mobilenet_v2_cifar"]
