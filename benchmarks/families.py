"""The network families of the growth benchmarks, each a builder ``width -> keras.Model``.

* ``mbv1_swish``: MobileNetV1-CIFAR, 6 separable blocks, swish (the family the
  CIFAR-10 growth benchmark was tuned on);
* ``vgg_relu``: 6 Conv2D-BatchNorm-ReLU layers of widths w, w, 2w, 2w, 4w, 4w,
  2x2 max pooling after the 2nd and 4th, global average pooling, Dense;
* ``mbv2_relu6``: MobileNetV2-CIFAR (inverted residuals with expansion 4, identity
  shortcuts, ReLU6; stages of 1, 1, 2 and 1 blocks, three down-samplings);
* ``resnet_relu``: a ResNet-10-style CIFAR net (basic blocks of two 3x3 convs, one per
  stage, widths w, 2w, 4w, projection shortcuts on the down-sampling blocks, ReLU after
  every Add).

``FAMILIES[name]`` is a :class:`Family`: the builder, the seed width the growing runs
start from, and the uniform width whose MACs they are capped at (the width multiplier
they are compared with).
"""

import dataclasses
import os
import sys

import keras

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import keras_split as ks  # noqa: E402
from keras_split import models  # noqa: E402

L = keras.layers


def vgg_cifar(width, num_classes=10, bn_momentum=0.9):
    """The plain ReLU VGG-style CNN of ``width`` (see the module docstring)."""
    x = inputs = keras.Input((32, 32, 3), name="image")
    for i, mult in enumerate((1, 1, 2, 2, 4, 4)):
        x = L.Conv2D(mult * width, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = L.BatchNormalization(momentum=bn_momentum, name=f"conv{i}_bn")(x)
        x = L.ReLU(name=f"conv{i}_relu")(x)
        if i in (1, 3):
            x = L.MaxPooling2D(2, name=f"pool{i}")(x)
    x = L.GlobalAveragePooling2D(name="global_pool")(x)
    return keras.Model(inputs, L.Dense(num_classes, name="predictions")(x), name="vgg_cifar")


def resnet_cifar(width, num_classes=10, bn_momentum=0.9):
    """A ResNet-10-style CIFAR net of ``width`` (see the module docstring)."""

    def conv_bn(x, filters, strides, name, kernel=3):
        x = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                     name=name)(x)
        return L.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)

    inputs = keras.Input((32, 32, 3), name="image")
    x = L.ReLU(name="stem_relu")(conv_bn(inputs, width, 1, "stem"))
    for s, mult in enumerate((1, 2, 4)):
        strides = 1 if s == 0 else 2
        h = L.ReLU(name=f"b{s}_relu1")(conv_bn(x, mult * width, strides, f"b{s}_conv1"))
        h = conv_bn(h, mult * width, 1, f"b{s}_conv2")
        shortcut = x if s == 0 else conv_bn(x, mult * width, strides, f"b{s}_proj", kernel=1)
        x = L.ReLU(name=f"b{s}_relu2")(L.Add(name=f"b{s}_add")([shortcut, h]))
    x = L.GlobalAveragePooling2D(name="global_pool")(x)
    return keras.Model(inputs, L.Dense(num_classes, name="predictions")(x), name="resnet_cifar")


@dataclasses.dataclass(frozen=True)
class Family:
    """A benchmark family: ``build(width)``, the growing runs' seed width, and the uniform
    width whose MACs caps them."""

    build: object
    seed_width: int
    target_width: int


FAMILIES = {
    "mbv1_swish": Family(lambda w: models.mobilenet_v1_cifar(blocks=6, width=w,
                                                             activation="swish"), 8, 19),
    "vgg_relu": Family(vgg_cifar, 6, 11),
    "mbv2_relu6": Family(lambda w: models.mobilenet_v2_cifar(
        stages=((1, 1, 1), (4, 1, 2), (4, 2, 2), (4, 1, 2)), width=w, activation="relu6"), 8, 14),
    "resnet_relu": Family(resnet_cifar, 6, 11),
}


def layer_widths(network):
    """``{producer: units}`` of a plain or growing network's splittable layers."""
    growing = network if isinstance(network, ks.GrowingModel) else ks.GrowingModel(network)
    return {n: int(growing.get_layer(n).kernel.shape[-1]) for n in growing.splittable_layers}


def widening_plan(model, widths):
    """One split's plan toward ``widths`` ({layer: units}) for a GrowingModel: for every
    layer below its width, its first units (at most its width: a split at most doubles
    a layer), the coupled layers of a residual ``Add`` once, by their first member."""
    tied = {}
    for members in model.coupled_groups():
        names = sorted({name for name, _ in members})
        tied.update({name: names[0] for name in names})
    plan = {}
    for name, units in widths.items():
        lead = tied.get(name, name)
        now = int(model.get_layer(name).kernel.shape[-1])
        if units > now and lead not in plan:
            plan[lead] = list(range(min(units - now, now)))
    return plan
