"""Small models of every supported topology, shared by the engine tests."""

import keras
import numpy as np

L = keras.layers


def mlp(act="tanh"):
    x = keras.Input((6,), name="x")
    h = L.Dense(5, activation=act, name="d1")(x)
    h = L.Dense(4, name="d2")(h)
    h = L.Activation("swish", name="a2")(h)
    return keras.Model(x, L.Dense(3, name="out")(h), name="mlp")


def cnn_bn_swish():
    x = keras.Input((9, 9, 3), name="x")
    h = L.Conv2D(4, 3, strides=2, padding="same", use_bias=False, name="c1")(x)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.Activation("swish", name="a1")(h)
    h = L.Conv2D(5, 3, dilation_rate=2, padding="same", name="c2")(h)
    h = L.BatchNormalization(name="bn2")(h)
    h = L.Activation("swish", name="a2")(h)
    h = L.Conv2D(3, 2, padding="valid", activation="tanh", name="c3")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(x, L.Dense(2, name="out")(h), name="cnn")


def separable_block(act="swish"):
    x = keras.Input((8, 8, 3), name="x")
    h = L.Conv2D(4, 1, name="expand")(x)
    h = L.BatchNormalization(name="bn_e")(h)
    h = L.Activation(act, name="act_e")(h)
    h = L.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = L.BatchNormalization(name="bn_dw")(h)
    h = L.Activation(act, name="act_dw")(h)
    h = L.Conv2D(5, 1, name="pw")(h)
    h = L.BatchNormalization(name="bn_pw")(h)
    h = L.Activation(act, name="act_pw")(h)
    h = L.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same", name="dw2")(h)
    h = L.Activation(act, name="act_dw2")(h)
    h = L.Conv2D(3, 1, activation=act, name="pw2")(h)
    h = L.ZeroPadding2D(1, name="pad")(h)
    h = L.MaxPooling2D(2, name="pool")(h)
    h = L.Dropout(0.2, name="drop")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(x, L.Dense(2, name="out")(h), name="separable")


def flatten_dense():
    x = keras.Input((6, 6, 2), name="x")
    h = L.Conv2D(3, 3, activation="tanh", name="c1")(x)
    h = L.AveragePooling2D(2, name="pool")(h)
    h = L.Flatten(name="flat")(h)
    h = L.Dense(4, activation="swish", name="d1")(h)
    return keras.Model(x, L.Dense(2, name="out")(h), name="flatten")


def residual(act="swish"):
    x = keras.Input((6, 6, 3), name="x")
    a = L.Conv2D(4, 3, padding="same", name="stem")(x)
    a = L.BatchNormalization(name="bn_stem")(a)
    a = L.Activation(act, name="act_stem")(a)
    b = L.Conv2D(4, 3, padding="same", name="res_conv")(a)
    b = L.BatchNormalization(name="bn_res")(b)
    b = L.Activation(act, name="act_res")(b)
    s = L.Add(name="add")([a, b])
    c = L.Conv2D(3, 1, activation=act, name="head")(s)
    c = L.GlobalAveragePooling2D(name="gap")(c)
    return keras.Model(x, L.Dense(2, name="out")(c), name="residual")


def concatenate():
    x = keras.Input((5, 5, 2), name="x")
    a = L.Conv2D(3, 3, padding="same", activation="tanh", name="ca")(x)
    b = L.Conv2D(2, 1, activation="swish", name="cb")(x)
    c = L.Concatenate(name="cat")([a, b])
    d = L.Conv2D(5, 1, activation="tanh", name="cd")(x)
    s = L.Add(name="add")([c, d])
    h = L.Conv2D(3, 3, activation="swish", name="ce")(s)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(x, L.Dense(2, name="out")(h), name="concat")


TOPOLOGIES = {
    "mlp": mlp,
    "cnn_bn_swish": cnn_bn_swish,
    "separable": separable_block,
    "flatten_dense": flatten_dense,
    "residual": residual,
    "concatenate": concatenate,
}


def randomize_batchnorm(model, rng):
    """Non-trivial BatchNorm statistics, so that the frozen scale matters."""
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.3, n))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.2, n))


def data_for(model, n=32, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n,) + tuple(model.inputs[0].shape[1:])
    x = rng.normal(size=shape).astype(keras.config.floatx())
    y = rng.normal(size=(n,) + tuple(model.outputs[0].shape[1:])).astype(keras.config.floatx())
    return x, y
