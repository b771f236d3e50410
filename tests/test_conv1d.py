"""A keyword-spotting-style 1-D network (Conv1D, SeparableConv1D, DepthwiseConv1D) grows
inside fit, keeps its function at every split, and exports to float and int8 TFLite."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_split as ks
from keras_split.apps import export

L = keras.layers


def _signals(n, length=64, classes=4, seed=0):
    """Noisy tones: class k is a sine of frequency 2 + 3 k cycles per window, random phase."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    t = np.arange(length) / length
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    x = np.sin(2 * np.pi * (2 + 3 * y[:, None]) * t + phase) + 0.3 * rng.normal(size=(n, length))
    return x[..., None].astype("float32"), y


def _kws(width=4):
    x = keras.Input((64, 1), name="audio")
    h = L.Conv1D(width, 5, strides=2, padding="same", use_bias=False, name="conv")(x)
    h = L.BatchNormalization(name="bn")(h)
    h = L.ReLU(name="relu")(h)
    h = L.SeparableConv1D(width, 5, padding="same", use_bias=False, name="sep")(h)
    h = L.BatchNormalization(name="bn_sep")(h)
    h = L.ReLU(name="relu_sep")(h)
    h = L.DepthwiseConv1D(3, padding="same", name="dw")(h)
    h = L.ReLU(name="relu_dw")(h)
    h = L.Conv1D(width, 1, use_bias=False, name="pw")(h)
    h = L.BatchNormalization(name="bn_pw")(h)
    h = L.ReLU(name="relu_pw")(h)
    h = L.GlobalAveragePooling1D(name="gap")(h)
    return keras.Model(x, L.Dense(4, name="logits")(h), name="kws")


@pytest.fixture(scope="module")
def grown_kws():
    keras.utils.set_random_seed(0)
    x, y = _signals(768)
    x_test, y_test = _signals(256, seed=1)
    model = ks.GrowingModel(_kws())
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    grower = ks.GrowthCallback((x[:256], y[:256]), every_n_epochs=2, max_stages=2)
    model.fit(x, y, epochs=12, batch_size=64, callbacks=[grower], verbose=0)
    # 144 steps leave BatchNorm's moving statistics (momentum 0.99) behind the weights.
    ks.recalibrate_batchnorm(model, x)
    return model, grower, (x_test, y_test)


def test_a_1d_network_grows_inside_fit_and_learns(grown_kws):
    model, grower, (x_test, y_test) = grown_kws
    assert len(grower.stages) == 2
    widths = {n: model.channel_graph.units(n) for n in model.splittable_layers}
    assert set(widths) == {"conv", "sep", "pw"}
    assert sum(widths.values()) > 3 * 4, widths
    assert all(st.macs_after > st.macs_before for st in grower.stages)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy >= 0.9, accuracy


def test_the_grown_1d_network_exports_to_float_and_int8_tflite(grown_kws, tmp_path):
    model, _, (x_test, _) = grown_kws
    data = tf.data.Dataset.from_tensor_slices(x_test).batch(64)
    float_result = export.tflite(model, str(tmp_path / "f.tflite"), sample_data=[x_test])
    assert float_result.relative_max_diff <= 1e-4, float_result
    int8 = export.tflite(model, str(tmp_path / "q.tflite"), quantization="int8",
                         representative_data=data, sample_data=[x_test])
    assert int8.quantized_fraction == 1.0 and int8.weight_dtypes.get("FLOAT32", 0) == 0
    assert int8.top1_agreement >= 0.95, int8
